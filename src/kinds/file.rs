//! The kinds file (`jobcast --config jobcast.toml`): job kinds declared
//! without writing Rust. Each `[kinds.NAME]` table has a description, its
//! stages, its params and an example, and says where its jobs run: a
//! `command` table (a program this server starts, see [`super::command`])
//! or an `external` table (a worker that drives the job over HTTP, see
//! [`crate::jobs::worker`]). docs/KINDS.md documents every field.
//!
//! Everything is checked when the file is read, so that a mistake stops the
//! server at startup with a message naming the kind and the field, rather
//! than failing jobs later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::command::{CommandKind, CommandSpec, CommandSpecError};
use super::params::{to_json, ParamDecl, ParamDeclError, Params};
use crate::jobs::model::check_stages;
use crate::jobs::names::{is_lowercase_name, MAX_NAME_LENGTH};
use crate::jobs::report::StageDecl;
use crate::jobs::worker::WorkerSettings;
use crate::Kind;

/// Settings of the server that kinds from a file need.
#[derive(Clone, Debug)]
pub struct FileSettings {
    /// How long a stopped command has between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

impl FileSettings {
    /// The settings for a server with this cancel grace period: a command
    /// gets SIGKILL after three quarters of it, so that one which ignores
    /// SIGTERM has still exited, and ends `cancelled`, within the grace
    /// period; `cancel_forced` is left for work that does not stop even then.
    pub fn for_cancel_grace(cancel_grace: Duration) -> Self {
        FileSettings {
            kill_grace: cancel_grace * 3 / 4,
        }
    }
}

/// Why a kinds file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KindsFileError {
    #[error("cannot read the kinds file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("the kinds file is not valid: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("kind {kind:?}: {detail}")]
    Kind { kind: String, detail: String },
    #[error("kind {kind:?}: {error}")]
    Params { kind: String, error: ParamDeclError },
    #[error("kind {kind:?}: {error}")]
    Command { kind: String, error: CommandSpecError },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KindsFile {
    #[serde(default)]
    kinds: BTreeMap<String, KindTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KindTable {
    #[serde(default)]
    description: String,
    #[serde(default)]
    stages: Vec<StageDecl>,
    #[serde(default)]
    params: BTreeMap<String, ParamDecl>,
    example: Option<toml::Table>,
    command: Option<CommandSpec>,
    external: Option<ExternalTable>,
}

/// The default silence after which a worker's job fails.
const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalTable {
    #[serde(default = "default_heartbeat_timeout", deserialize_with = "crate::config::duration")]
    heartbeat_timeout: Duration,
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    start_timeout: Option<Duration>,
}

fn default_heartbeat_timeout() -> Duration {
    DEFAULT_HEARTBEAT_TIMEOUT
}

/// Names the built-in kinds use, which a file may not take.
const BUILT_IN: [&str; 1] = ["demo"];

/// Reads the kinds file at `path`; relative paths in it are relative to
/// the file's own directory.
pub fn load(path: &Path, settings: &FileSettings) -> Result<Vec<Kind>, KindsFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| KindsFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, base_dir, settings)
}

/// Reads kinds from the text of a kinds file; relative paths in it are
/// relative to `base_dir`.
pub fn parse(text: &str, base_dir: &Path, settings: &FileSettings) -> Result<Vec<Kind>, KindsFileError> {
    let file: KindsFile = toml::from_str(text)?;
    file.kinds
        .into_iter()
        .map(|(name, table)| build(name, table, base_dir, settings))
        .collect()
}

fn build(name: String, table: KindTable, base_dir: &Path, settings: &FileSettings) -> Result<Kind, KindsFileError> {
    let invalid = |detail: String| KindsFileError::Kind {
        kind: name.clone(),
        detail,
    };
    if !is_lowercase_name(&name, &['_', '-', '.']) {
        return Err(invalid(format!(
            "a kind's name is lowercase letters, digits, `_`, `-` and `.`, starting with a letter, at most {MAX_NAME_LENGTH} long"
        )));
    }
    if BUILT_IN.contains(&name.as_str()) {
        return Err(invalid("the name is taken by a built-in kind".to_owned()));
    }
    check_stages(table.stages.iter().map(|stage| (stage.name.as_str(), stage.weight)))
        .map_err(|error| invalid(error.to_string()))?;
    let params = Params::new(table.params).map_err(|error| KindsFileError::Params {
        kind: name.clone(),
        error,
    })?;
    let example = match table.example {
        Some(example) => {
            let example = to_json(toml::Value::Table(example));
            params
                .check(example.clone())
                .map_err(|detail| invalid(format!("example: {detail}")))?;
            example
        }
        None => params
            .example()
            .ok_or_else(|| invalid("give an `example`: none made from the params passes their checks".to_owned()))?,
    };
    let schema = params.schema();
    let kind = match (table.command, table.external) {
        (Some(spec), None) => {
            let command =
                CommandKind::new(spec, &params, table.stages, base_dir, settings.kill_grace).map_err(|error| {
                    KindsFileError::Command {
                        kind: name.clone(),
                        error,
                    }
                })?;
            let command = Arc::new(command);
            Kind::with_check(
                &name,
                move |value: Value| params.check(value),
                move |ctx, checked| command.clone().run(ctx, checked),
            )
        }
        (None, Some(external)) => {
            if external.heartbeat_timeout.is_zero() {
                return Err(invalid("external.heartbeat_timeout must be more than 0".to_owned()));
            }
            Kind::external(
                &name,
                move |value| params.check(value).map(|_| ()),
                WorkerSettings {
                    heartbeat_timeout: external.heartbeat_timeout,
                    start_timeout: external.start_timeout,
                    stages: table.stages,
                },
            )
        }
        _ => return Err(invalid("declare exactly one of `command` and `external`".to_owned())),
    };
    Ok(kind
        .description(table.description)
        .params_schema(schema)
        .example(example))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FileSettings {
        FileSettings {
            kill_grace: Duration::from_secs(1),
        }
    }

    fn error_of(text: &str) -> String {
        match parse(text, Path::new("."), &settings()) {
            Ok(kinds) => panic!("accepted, with {} kinds:\n{text}", kinds.len()),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn an_external_kind_is_read_with_its_params_schema_and_example() {
        let kinds = parse(
            r#"
            [kinds.report]
            description = "Builds a report"
            stages = [{ name = "fetch" }, { name = "render", weight = 2 }]
            [kinds.report.params.rows]
            type = "integer"
            required = true
            min = 1
            [kinds.report.external]
            heartbeat_timeout = "5s"
            "#,
            Path::new("."),
            &settings(),
        )
        .unwrap();
        assert_eq!(kinds.len(), 1);
        let info = kinds[0].info();
        assert_eq!(info.name, "report");
        assert!(info.external);
        assert_eq!(info.example, &serde_json::json!({"rows": 1}));
        assert_eq!(info.params_schema["required"], serde_json::json!(["rows"]));
    }

    #[test]
    fn mistakes_are_refused_naming_the_kind_and_what_is_wrong() {
        let cases = [
            ("[kinds.x]\ndescription = 1\n[kinds.x.external]", "invalid type"),
            ("[kinds.x]\n", "exactly one of"),
            (
                "[kinds.x.external]\n[kinds.x.command]\nargv = [\"true\"]",
                "exactly one of",
            ),
            ("[kinds.Bad]\n[kinds.Bad.external]", "kind \"Bad\""),
            ("[kinds.demo]\n[kinds.demo.external]", "built-in"),
            ("[kinds.x.external]\nheartbeat_timeout = \"soon\"", "not a duration"),
            ("[kinds.x.external]\nheartbeat_timeout = \"0\"", "more than 0"),
            ("[kinds.x.external]\nretries = 3", "unknown field"),
            (
                "[kinds.x]\nstages = [{ name = \"a\" }, { name = \"a\" }]\n[kinds.x.external]",
                "twice",
            ),
            (
                "[kinds.x]\nstages = [{ name = \"a\", weight = -1 }]\n[kinds.x.external]",
                "weight",
            ),
            (
                "[kinds.x.params.p]\ntype = \"string\"\nrequired = true\npattern = \"^/\"\n[kinds.x.external]",
                "give an `example`",
            ),
            (
                "[kinds.x]\nexample = { p = 3 }\n[kinds.x.params.p]\ntype = \"string\"\n[kinds.x.external]",
                "example",
            ),
            (
                "[kinds.x.params.p]\ntype = \"text\"\n[kinds.x.external]",
                "unknown variant",
            ),
            ("[kind.x]", "unknown field"),
        ];
        for (text, expected) in cases {
            let error = error_of(text);
            assert!(error.contains(expected), "{text:?} gave {error:?}, not {expected:?}");
        }
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let Err(error) = load(Path::new("/no/such/jobcast.toml"), &settings()) else {
            panic!("a missing file was read");
        };
        assert!(error.to_string().contains("/no/such/jobcast.toml"), "{error}");
    }
}
