//! The progress protocol: a line that is a JSON object whose keys are all
//! protocol keys (a [`ProgressReport`]'s, plus `result` and `error`) is
//! taken apart here into a report, a result and an error. Applying them to
//! the job is `session`'s business, and what a report means is
//! [`Reporter`]'s.
//!
//! [`Reporter`]: crate::jobs::report::Reporter

use serde::Deserialize;
use serde_json::Value;

use crate::jobs::report::ProgressReport;
use crate::jobs::JobError;

/// The keys of a protocol line: a [`ProgressReport`]'s, plus `result` and `error`.
const PROTOCOL_KEYS: [&str; 9] = [
    "stage", "current", "total", "unit", "message", "stages", "fraction", "result", "error",
];

/// A protocol line, taken apart.
#[derive(Debug)]
pub(super) struct ProtocolLine {
    pub(super) report: Result<ProgressReport, String>,
    pub(super) result: Option<Value>,
    pub(super) error: Option<Result<JobError, String>>,
}

/// The `error` of a protocol line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportedError {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    retryable: bool,
}

/// The line as a protocol line, or None if it is ordinary output: a
/// protocol line is a JSON object with at least one key, every key a
/// protocol key.
pub(super) fn parse_protocol(text: &str) -> Option<ProtocolLine> {
    let text = text.trim();
    if !text.starts_with('{') {
        return None;
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    if fields.is_empty() || !fields.keys().all(|key| PROTOCOL_KEYS.contains(&key.as_str())) {
        return None;
    }
    let result = fields.remove("result");
    let error = fields.remove("error").map(|error| {
        let error: ReportedError = serde_json::from_value(error).map_err(|error| format!("error: {error}"))?;
        if error.code.is_empty() || error.code.len() > 64 {
            return Err("error: a code is 1 to 64 characters".to_owned());
        }
        if error.code == JobError::CANCELLED || error.code == "cancel_forced" {
            return Err(format!("error: code {:?} is reserved for cancellation", error.code));
        }
        Ok(JobError::new(error.code, error.message).retryable(error.retryable))
    });
    let report = serde_json::from_value(Value::Object(fields)).map_err(|error| error.to_string());
    Some(ProtocolLine { report, result, error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_objects_of_protocol_keys_are_protocol_lines() {
        for ordinary in [
            "hello",
            "{not json",
            "[1, 2]",
            "{}",
            r#"{"level": "info", "message": "structured log"}"#,
            "42",
        ] {
            assert!(parse_protocol(ordinary).is_none(), "{ordinary} counted as protocol");
        }
        let line = parse_protocol(r#" {"stage": "copy", "current": 3, "result": {"ok": true}} "#).unwrap();
        assert_eq!(line.report.unwrap().current, Some(3));
        assert_eq!(line.result, Some(json!({"ok": true})));
        let line = parse_protocol(r#"{"current": "three"}"#).unwrap();
        assert!(line.report.is_err());
        let line =
            parse_protocol(r#"{"error": {"code": "disk_full", "message": "no space", "retryable": true}}"#).unwrap();
        assert_eq!(
            line.error.unwrap().unwrap(),
            JobError::new("disk_full", "no space").retryable(true)
        );
        let line = parse_protocol(r#"{"error": {"code": "cancelled"}}"#).unwrap();
        assert!(line.error.unwrap().is_err());
    }
}
