//! The `[kinds.NAME.command]` table as the kinds file writes it, read by
//! serde with nothing checked beyond its shape. Whether it can work (argv,
//! pattern, env, workdir, bounds) is `load`'s business.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The `[kinds.NAME.command]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// The program and its arguments, one element per argument. Elements
    /// after the first may hold `{param}` placeholders; `{{` and `}}` are
    /// literal braces.
    pub argv: Vec<String>,
    /// The child's working directory; relative paths are relative to the
    /// kinds file's directory, which is also the default.
    pub workdir: Option<PathBuf>,
    /// Variables added to the server's environment for the child.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long the command may run before it is stopped and the job fails
    /// with `timeout`; no limit when absent.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub timeout: Option<Duration>,
    /// Where the child writes protocol lines.
    #[serde(default)]
    pub progress: ProgressSource,
    /// A regular expression that turns ordinary output lines into progress,
    /// with named groups among `current`, `total`, `percent`, `stage` and
    /// `message`.
    pub progress_pattern: Option<String>,
    /// How many lines of ordinary output a failed job's error quotes.
    #[serde(default = "default_tail_lines")]
    pub tail_lines: usize,
}

fn default_tail_lines() -> usize {
    20
}

/// Where protocol lines come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressSource {
    /// Protocol lines are mixed with ordinary output on stdout.
    #[default]
    Stdout,
    /// Protocol lines go to a pipe at fd 3 (`JOBCAST_PROGRESS_FD`); stdout
    /// is ordinary output.
    Fd,
    /// No protocol: every line is ordinary output (for programs whose output
    /// could look like protocol lines).
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> CommandSpec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn timeouts_read_as_people_write_them() {
        assert_eq!(
            spec(
                r#"argv = ["tool"]
timeout = "90s""#
            )
            .timeout,
            Some(Duration::from_secs(90))
        );
        assert_eq!(spec(r#"argv = ["tool"]"#).timeout, None);
        assert_eq!(spec(r#"argv = ["tool"]"#).tail_lines, 20);
    }

    #[test]
    fn unknown_fields_and_sources_are_refused() {
        assert!(toml::from_str::<CommandSpec>(
            r#"argv = ["tool"]
shell = true"#
        )
        .is_err());
        assert!(toml::from_str::<CommandSpec>(
            r#"argv = ["tool"]
progress = "stderr""#
        )
        .is_err());
    }
}
