//! Loading a command kind: every check that can fail before a job runs,
//! made once when the kinds file is read, so that a mistake stops the
//! server at startup. It turns a [`CommandSpec`] into a [`CommandKind`]:
//! argv parsed into templates whose placeholders name declared params, the
//! program and workdir resolved against the kinds file's directory, env
//! and `tail_lines` checked, `progress_pattern` compiled. Running jobs is
//! `run`'s business.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Map;

use super::argv::Template;
use super::pattern::ProgressPattern;
use super::spec::CommandSpec;
use super::tail::MAX_TAIL_LINES;
use super::CommandKind;
use crate::jobs::report::StageDecl;
use crate::kinds::params::Params;

/// A command declaration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum CommandSpecError {
    #[error("argv is empty: it needs at least the program")]
    EmptyArgv,
    #[error("argv[0] is the program and cannot hold a placeholder: {0:?}")]
    ProgramFromParam(String),
    #[error("argv[{index}] {template:?}: {detail}")]
    Template {
        index: usize,
        template: String,
        detail: String,
    },
    #[error("argv[{index}] {template:?} uses {{{name}}}, which is not a declared param")]
    UnknownParam {
        index: usize,
        template: String,
        name: String,
    },
    #[error("progress_pattern {pattern:?}: {detail}")]
    Pattern { pattern: String, detail: String },
    #[error("env {name:?}: {detail}")]
    Env { name: String, detail: String },
    #[error("workdir {path:?}: {error}")]
    Workdir { path: PathBuf, error: io::Error },
    #[error("tail_lines is {0}; at most {MAX_TAIL_LINES}")]
    TailLines(usize),
}

impl CommandKind {
    /// Checks the spec at load time: every placeholder names a declared param
    /// (`params.contains`), the regex compiles and has usable groups, argv is
    /// non-empty, workdir resolved against base_dir.
    pub fn new(
        spec: CommandSpec,
        params: &Params,
        stages: Vec<StageDecl>,
        base_dir: &Path,
        kill_grace: Duration,
    ) -> Result<Self, CommandSpecError> {
        let base_dir = std::path::absolute(base_dir).map_err(|error| CommandSpecError::Workdir {
            path: base_dir.to_owned(),
            error,
        })?;
        let mut argv = spec.argv.into_iter();
        let program = argv.next().ok_or(CommandSpecError::EmptyArgv)?;
        let parsed = Template::parse(&program).map_err(|detail| CommandSpecError::Template {
            index: 0,
            template: program.clone(),
            detail,
        })?;
        if parsed.params().next().is_some() {
            return Err(CommandSpecError::ProgramFromParam(program));
        }
        let program = parsed.render(&Map::new()).unwrap_or_default();
        if program.is_empty() {
            return Err(CommandSpecError::EmptyArgv);
        }
        // A program named with a path is found relative to the kinds file,
        // not to the child's working directory (which std leaves ambiguous).
        let program = if program.contains('/') {
            base_dir.join(program)
        } else {
            PathBuf::from(program)
        };
        let mut args = Vec::new();
        for (index, template) in argv.enumerate() {
            let index = index + 1;
            let parsed = Template::parse(&template).map_err(|detail| CommandSpecError::Template {
                index,
                template: template.clone(),
                detail,
            })?;
            if let Some(name) = parsed.params().find(|name| !params.contains(name)) {
                return Err(CommandSpecError::UnknownParam {
                    index,
                    name: name.to_owned(),
                    template,
                });
            }
            args.push(parsed);
        }
        for (name, value) in &spec.env {
            let invalid = |detail: &str| CommandSpecError::Env {
                name: name.clone(),
                detail: detail.to_owned(),
            };
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(invalid("a variable name is non-empty, without `=` or NUL"));
            }
            if value.contains('\0') {
                return Err(invalid("a value cannot hold a NUL character"));
            }
            if name == "JOBCAST_PROGRESS_FD" || name == "JOBCAST_JOB_ID" {
                return Err(invalid("jobcast sets this variable itself"));
            }
        }
        if spec.tail_lines > MAX_TAIL_LINES {
            return Err(CommandSpecError::TailLines(spec.tail_lines));
        }
        let pattern = spec.progress_pattern.as_deref().map(ProgressPattern::new).transpose()?;
        let workdir = match spec.workdir {
            Some(workdir) => base_dir.join(workdir),
            None => base_dir,
        };
        Ok(CommandKind {
            program,
            args,
            workdir,
            env: spec.env,
            timeout: spec.timeout,
            progress: spec.progress,
            pattern,
            tail_lines: spec.tail_lines,
            stages,
            kill_grace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::command::argv::render_args;
    use serde_json::json;

    fn params(text: &str) -> Params {
        let decls = toml::from_str(text).unwrap();
        Params::new(decls).unwrap()
    }

    fn kind(spec_text: &str, params_text: &str) -> Result<CommandKind, CommandSpecError> {
        CommandKind::new(
            toml::from_str(spec_text).unwrap(),
            &params(params_text),
            Vec::new(),
            Path::new("/srv/kinds"),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn placeholders_are_filled_inside_one_argument_each() {
        let kind = kind(
            r#"argv = ["tool", "--level={level}", "{src}", "{{literal}}", "--dry-run={dry}", "--opt={opt}"]"#,
            r#"
            level = { type = "integer" }
            src = { type = "string" }
            dry = { type = "boolean" }
            opt = { type = "string" }
            "#,
        )
        .unwrap();
        let params = json!({"level": 3, "src": "a b; rm -rf /tmp/x", "dry": false});
        assert_eq!(
            render_args(&kind.args, params.as_object().unwrap()),
            ["--level=3", "a b; rm -rf /tmp/x", "{literal}", "--dry-run=false"]
        );
        assert_eq!(kind.program, PathBuf::from("tool"));
        assert_eq!(kind.workdir, PathBuf::from("/srv/kinds"));
    }

    #[test]
    fn relative_paths_are_relative_to_the_kinds_file() {
        let kind = kind(
            r#"argv = ["./bin/run.sh"]
workdir = "data""#,
            "",
        )
        .unwrap();
        assert_eq!(kind.program, PathBuf::from("/srv/kinds/./bin/run.sh"));
        assert_eq!(kind.workdir, PathBuf::from("/srv/kinds/data"));
    }

    #[test]
    fn declarations_that_cannot_work_are_refused() {
        let declared = r#"name = { type = "string" }"#;
        for text in [
            r#"argv = []"#,
            r#"argv = ["{name}"]"#,
            r#"argv = ["tool", "{other}"]"#,
            r#"argv = ["tool", "{name"]"#,
            r#"argv = ["tool", "name}"]"#,
            r#"argv = ["tool", "{}"]"#,
            r#"argv = ["tool", "{na me}"]"#,
            r#"argv = ["tool"]
progress_pattern = "(\\d+)%""#,
            r#"argv = ["tool"]
progress_pattern = "(?<pct>\\d+)%""#,
            r#"argv = ["tool"]
progress_pattern = "(?<percent>\\d+)% (?<current>\\d+)""#,
            r#"argv = ["tool"]
progress_pattern = "of (?<total>\\d+)""#,
            r#"argv = ["tool"]
progress_pattern = '(?<percent>\d+'"#,
            r#"argv = ["tool"]
env = { "A=B" = "x" }"#,
            r#"argv = ["tool"]
tail_lines = 100000"#,
        ] {
            assert!(kind(text, declared).is_err(), "{text} was accepted");
        }
    }
}
