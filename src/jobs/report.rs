//! Progress reports from outside the server: a JSON object naming a stage,
//! its counter, a message, as a child process prints one per line or an
//! external worker sends one with each heartbeat. [`Reporter`] turns such
//! reports into calls on a job's [`JobContext`].
//!
//! What the fields mean is documented once, in docs/KINDS.md; the command
//! and worker kinds only say where reports come from.

use serde::{Deserialize, Serialize};

use super::context::JobContext;
use super::counts::optional_whole_number;
use super::model::StageSpec;
use super::JobError;

/// One stage in a report's `stages` list.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageDecl {
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

impl From<&StageDecl> for StageSpec {
    fn from(decl: &StageDecl) -> Self {
        StageSpec::new(decl.name.clone(), decl.weight)
    }
}

/// A progress report: every field optional (`null` counts as left out),
/// all of them applied together. Serialised only to be relayed to the
/// instance that runs the job.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    /// Declares the job's stages (once per job, and only if its kind did not).
    pub stages: Option<Vec<StageDecl>>,
    /// Starts this stage, unless it is already the running one.
    pub stage: Option<String>,
    /// The running stage's counter.
    #[serde(default, deserialize_with = "optional_whole_number")]
    pub current: Option<u64>,
    /// The running stage's total.
    #[serde(default, deserialize_with = "optional_whole_number")]
    pub total: Option<u64>,
    /// The running stage's unit, when the report starts a stage.
    pub unit: Option<String>,
    /// A short message for people watching.
    pub message: Option<String>,
    /// For a job without stages: the fraction done, 0 to 1.
    pub fraction: Option<f64>,
}

/// Applies reports to one job, remembering which stage is running so that a
/// report that repeats the stage's name only moves its counter.
pub struct Reporter {
    ctx: JobContext,
    stage: Option<RunningStage>,
}

/// The running stage as reports have set it.
struct RunningStage {
    name: String,
    total: Option<u64>,
    unit: Option<String>,
}

impl Reporter {
    pub fn new(ctx: JobContext) -> Self {
        Reporter { ctx, stage: None }
    }

    fn start(&mut self, name: &str, total: Option<u64>, unit: Option<&str>) -> Result<(), JobError> {
        self.ctx.start_stage(name, total, unit)?;
        self.stage = Some(RunningStage {
            name: name.to_owned(),
            total,
            unit: unit.map(str::to_owned),
        });
        Ok(())
    }

    /// Declares `stages` and starts the first, for kinds that declare their
    /// stages up front.
    pub fn declare_and_start(&mut self, stages: &[StageDecl]) -> Result<(), JobError> {
        let Some(first) = stages.first() else {
            return Ok(());
        };
        self.ctx.declare_stages(stages.iter().map(StageSpec::from))?;
        self.start(&first.name, None, None)
    }

    /// Applies one report. An invalid part (an unknown stage, a stage that
    /// comes before the running one, a fraction outside 0 to 1) is an error
    /// and the parts after it are not applied.
    pub fn apply(&mut self, report: &ProgressReport) -> Result<(), JobError> {
        if let Some(fraction) = report.fraction {
            if !(0.0..=1.0).contains(&fraction) {
                return Err(JobError::new(
                    "invalid_report",
                    format!("fraction {fraction} is not between 0 and 1"),
                ));
            }
        }
        if let Some(stages) = &report.stages {
            self.ctx.declare_stages(stages.iter().map(StageSpec::from))?;
        }
        let running = self.stage.as_ref().map(|stage| stage.name.as_str());
        match (&report.stage, running) {
            (Some(name), running) if running != Some(name.as_str()) => {
                self.start(name, report.total, report.unit.as_deref())?;
            }
            (_, Some(_)) if report.total.is_some() || report.unit.is_some() => {
                // The running stage keeps its counter; what the report leaves out stays.
                let stage = self.stage.take().expect("a stage is running");
                let total = report.total.or(stage.total);
                let unit = report.unit.clone().or(stage.unit);
                self.start(&stage.name, total, unit.as_deref())?;
            }
            (_, None) if report.total.is_some() => self.ctx.set_total(report.total),
            _ => {}
        }
        match (report.current, &report.message) {
            (Some(current), Some(message)) => self.ctx.report(current, message),
            (Some(current), None) => self.ctx.set_current(current),
            (None, Some(message)) => self.ctx.set_message(message),
            (None, None) => {}
        }
        if let Some(fraction) = report.fraction {
            self.ctx.set_fraction(fraction);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_may_be_written_as_whole_floats_and_null_means_left_out() {
        let report: ProgressReport =
            serde_json::from_str(r#"{"current": 2.0, "total": 1e3, "message": null, "stage": null}"#).unwrap();
        assert_eq!(report.current, Some(2));
        assert_eq!(report.total, Some(1000));
        assert_eq!(report.message, None);
        let max: ProgressReport = serde_json::from_str(r#"{"current": 18446744073709551615}"#).unwrap();
        assert_eq!(max.current, Some(u64::MAX));
        for bad in [
            r#"{"current": 2.5}"#,
            r#"{"current": -1}"#,
            r#"{"current": 18446744073709551616}"#,
            r#"{"total": "3"}"#,
            r#"{"other": 1}"#,
        ] {
            assert!(
                serde_json::from_str::<ProgressReport>(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
