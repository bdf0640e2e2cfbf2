//! `progress_pattern`: a regular expression that turns ordinary output
//! lines into progress, for programs that cannot print protocol lines. This
//! module checks the pattern's named groups and reads a line into a
//! [`PatternMatch`]; how a match becomes a progress report is `session`'s
//! business.

use regex::Regex;

use super::CommandSpecError;

/// The named groups a `progress_pattern` may use.
const PATTERN_GROUPS: [&str; 5] = ["current", "total", "percent", "stage", "message"];

/// A checked `progress_pattern`.
#[derive(Debug)]
pub(super) struct ProgressPattern {
    regex: Regex,
}

/// What one matching line says.
#[derive(Debug, Default, PartialEq)]
pub(super) struct PatternMatch {
    pub(super) stage: Option<String>,
    pub(super) current: Option<u64>,
    pub(super) total: Option<u64>,
    pub(super) percent: Option<f64>,
    pub(super) message: Option<String>,
}

impl ProgressPattern {
    pub(super) fn new(pattern: &str) -> Result<Self, CommandSpecError> {
        let invalid = |detail: String| CommandSpecError::Pattern {
            pattern: pattern.to_owned(),
            detail,
        };
        let regex = Regex::new(pattern).map_err(|error| invalid(error.to_string()))?;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        if let Some(unknown) = names.iter().find(|name| !PATTERN_GROUPS.contains(name)) {
            return Err(invalid(format!(
                "unknown group {unknown:?}; groups are named {}",
                PATTERN_GROUPS.join(", ")
            )));
        }
        if names.is_empty() {
            return Err(invalid(
                "it names no group; use (?<percent>…), (?<current>…), (?<total>…), (?<stage>…) or (?<message>…)"
                    .to_owned(),
            ));
        }
        let has = |name: &str| names.contains(&name);
        if has("percent") && (has("current") || has("total")) {
            return Err(invalid("percent and current/total cannot be used together".to_owned()));
        }
        if has("total") && !has("current") {
            return Err(invalid("total needs current".to_owned()));
        }
        Ok(ProgressPattern { regex })
    }

    /// What the line says, or None if it does not match or a number in it
    /// does not parse (then it is ordinary output).
    pub(super) fn read(&self, line: &str) -> Option<PatternMatch> {
        let captures = self.regex.captures(line)?;
        let text = |name: &str| captures.name(name).map(|group| group.as_str().trim());
        let whole = |name: &str| -> Option<Option<u64>> {
            match text(name) {
                None => Some(None),
                Some(number) => number.parse().ok().map(Some),
            }
        };
        let percent = match text("percent") {
            None => None,
            Some(number) => {
                let percent: f64 = number.parse().ok()?;
                if !percent.is_finite() {
                    return None;
                }
                Some(percent.clamp(0.0, 100.0))
            }
        };
        Some(PatternMatch {
            stage: text("stage").filter(|name| !name.is_empty()).map(str::to_owned),
            current: whole("current")?,
            total: whole("total")?,
            percent,
            message: text("message").filter(|message| !message.is_empty()).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_read_percentages_and_counts() {
        let percent = ProgressPattern::new(r"(?<percent>\d+(?:\.\d+)?)%").unwrap();
        assert_eq!(percent.read("downloading  45.5% done").unwrap().percent, Some(45.5));
        assert_eq!(percent.read("no number here"), None);
        let counts = ProgressPattern::new(r"^\[(?<current>\d+)/(?<total>\d+)\] (?<message>.*)$").unwrap();
        assert_eq!(
            counts.read("[12/100] building foo").unwrap(),
            PatternMatch {
                current: Some(12),
                total: Some(100),
                message: Some("building foo".to_owned()),
                ..PatternMatch::default()
            }
        );
        assert_eq!(counts.read("[99999999999999999999999/1] too big"), None);
    }
}
