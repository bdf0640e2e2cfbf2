//! Labels: the string pairs a client attaches to a job when it creates it
//! (`"labels": {"project": "42"}`), to group jobs ("the exports of project
//! 42") and to choose them in listings and on the all-jobs stream
//! (`label=project=42`).
//!
//! Labels are checked once, when a job is created, and never change, so a
//! job's every published state shares one `Arc<Labels>` (see
//! [`crate::published`]), which the store and the streams filter on.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// The most labels a job may have.
pub const MAX_LABELS: usize = 16;
/// The longest label key, in bytes (a key is ASCII).
pub const MAX_KEY_LENGTH: usize = 63;
/// The longest label value, in characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// A job's labels, by key. Serialised as a JSON object, `{}` when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

/// What is wrong with the labels of a create request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("labels must be an object of string values")]
    NotAnObject,
    #[error("a job has at most {MAX_LABELS} labels, not {0}")]
    TooMany(usize),
    #[error(
        "label key {0:?} is not 1 to {MAX_KEY_LENGTH} characters of a-z, 0-9, '.', '_', '/' and '-' \
         starting with a letter or digit"
    )]
    BadKey(String),
    #[error("label {0:?}: the value must be a string")]
    NotAString(String),
    #[error("label {key:?}: the value must be at most {MAX_VALUE_CHARS} characters, not {chars}")]
    ValueTooLong { key: String, chars: usize },
}

/// One `label=KEY=VALUE` filter: the jobs whose label `key` is `value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: String,
}

impl Labels {
    /// Checks the `labels` member of a create request: an object of at
    /// most [`MAX_LABELS`] string values, each key spelled
    /// `[a-z0-9][a-z0-9._/-]{0,62}` and each value at most
    /// [`MAX_VALUE_CHARS`] characters. Null (or a missing member) is none.
    pub fn from_json(value: Value) -> Result<Self, LabelError> {
        let members = match value {
            Value::Null => return Ok(Labels::default()),
            Value::Object(members) => members,
            _ => return Err(LabelError::NotAnObject),
        };
        if members.len() > MAX_LABELS {
            return Err(LabelError::TooMany(members.len()));
        }
        let mut labels = BTreeMap::new();
        for (key, value) in members {
            if !is_label_key(&key) {
                return Err(LabelError::BadKey(key));
            }
            let Value::String(value) = value else {
                return Err(LabelError::NotAString(key));
            };
            let chars = value.chars().count();
            if chars > MAX_VALUE_CHARS {
                return Err(LabelError::ValueTooLong { key, chars });
            }
            labels.insert(key, value);
        }
        Ok(Labels(labels))
    }

    /// The value of label `key`, if the job has it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether every filter matches (true when there are none).
    pub fn matches_all(&self, filters: &[LabelFilter]) -> bool {
        filters
            .iter()
            .all(|filter| self.get(&filter.key) == Some(filter.value.as_str()))
    }
}

/// `[a-z0-9][a-z0-9._/-]{0,62}`.
fn is_label_key(key: &str) -> bool {
    key.len() <= MAX_KEY_LENGTH
        && key.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '/' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_are_an_object_of_short_strings_under_well_spelled_keys() {
        let labels =
            Labels::from_json(json!({"project": "42", "app.example/pipeline-x_1": "", "9": "é".repeat(256)})).unwrap();
        assert_eq!(labels.get("project"), Some("42"));
        assert_eq!(Labels::from_json(Value::Null).unwrap(), Labels::default());
        assert_eq!(Labels::from_json(json!({})).unwrap(), Labels::default());
        let many: serde_json::Map<String, Value> = (0..MAX_LABELS).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(Labels::from_json(Value::Object(many)).is_ok());
        assert!(Labels::from_json(json!({ "k": "v".repeat(MAX_VALUE_CHARS) })).is_ok());
        assert!(Labels::from_json(json!({ "a".repeat(MAX_KEY_LENGTH): "v" })).is_ok());
    }

    #[test]
    fn each_bad_label_is_named() {
        let too_many: serde_json::Map<String, Value> =
            (0..=MAX_LABELS).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases = [
            (json!(["a"]), LabelError::NotAnObject),
            (json!("a=b"), LabelError::NotAnObject),
            (Value::Object(too_many), LabelError::TooMany(MAX_LABELS + 1)),
            (json!({"Project": "1"}), LabelError::BadKey("Project".into())),
            (json!({"": "1"}), LabelError::BadKey(String::new())),
            (json!({"-a": "1"}), LabelError::BadKey("-a".into())),
            (json!({"a b": "1"}), LabelError::BadKey("a b".into())),
            (json!({ "a".repeat(64): "1" }), LabelError::BadKey("a".repeat(64))),
            (json!({"n": 1}), LabelError::NotAString("n".into())),
            (json!({"n": null}), LabelError::NotAString("n".into())),
            (
                json!({"long": "x".repeat(257)}),
                LabelError::ValueTooLong {
                    key: "long".into(),
                    chars: 257,
                },
            ),
        ];
        for (labels, expected) in cases {
            assert_eq!(Labels::from_json(labels.clone()), Err(expected), "{labels}");
        }
    }

    #[test]
    fn every_filter_must_match() {
        let labels = Labels::from_json(json!({"project": "42", "env": "prod"})).unwrap();
        let filter = |key: &str, value: &str| LabelFilter {
            key: key.into(),
            value: value.into(),
        };
        assert!(labels.matches_all(&[]));
        assert!(labels.matches_all(&[filter("project", "42")]));
        assert!(labels.matches_all(&[filter("project", "42"), filter("env", "prod")]));
        assert!(!labels.matches_all(&[filter("project", "42"), filter("env", "dev")]));
        assert!(!labels.matches_all(&[filter("team", "")]));
    }
}
