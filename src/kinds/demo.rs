//! The built-in `demo` kind: weighted stages of timed steps, for trying the
//! service out, for tests and for benchmarks. It can fail on purpose
//! (`fail_at`), repeat identical reports (`repeat`, which must publish
//! nothing new), and ignore cancellation (`ignore_cancel`, to show the grace
//! period and the forced abort).

use std::time::Duration;

use tokio::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::jobs::context::JobContext;
use crate::jobs::counts::whole_number;
use crate::jobs::kind::{JobResult, Kind};
use crate::jobs::model::{check_stages, StageSpec};
use crate::jobs::JobError;

const MAX_STEPS: u64 = 1_000_000;
/// A step, and the delay before the first, may each last up to a day, so
/// that a demo job can stand in for a long, quiet one.
const MAX_STEP_MS: u64 = 86_400_000;
const MAX_DELAY_MS: u64 = 86_400_000;
const MAX_REPEAT: u64 = 1_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoStage {
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
    #[serde(default = "default_steps", deserialize_with = "whole_number")]
    pub steps: u64,
}

fn default_weight() -> f64 {
    1.0
}

fn default_steps() -> u64 {
    10
}

fn default_stages() -> Vec<DemoStage> {
    vec![
        DemoStage {
            name: "parsing".to_owned(),
            weight: 0.2,
            steps: 10,
        },
        DemoStage {
            name: "analyzing".to_owned(),
            weight: 0.8,
            steps: 40,
        },
    ]
}

/// The demo's params, checked when the job is created.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "UncheckedParams")]
pub struct DemoParams {
    pub stages: Vec<DemoStage>,
    pub step_ms: u64,
    pub delay_ms: u64,
    pub fail_at: Option<String>,
    pub repeat: u64,
    pub ignore_cancel: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UncheckedParams {
    #[serde(default = "default_stages")]
    stages: Vec<DemoStage>,
    #[serde(default = "default_step_ms", deserialize_with = "whole_number")]
    step_ms: u64,
    #[serde(default, deserialize_with = "whole_number")]
    delay_ms: u64,
    #[serde(default)]
    fail_at: Option<String>,
    #[serde(default = "default_repeat", deserialize_with = "whole_number")]
    repeat: u64,
    #[serde(default)]
    ignore_cancel: bool,
}

fn default_step_ms() -> u64 {
    100
}

fn default_repeat() -> u64 {
    1
}

impl TryFrom<UncheckedParams> for DemoParams {
    type Error = String;

    fn try_from(params: UncheckedParams) -> Result<Self, Self::Error> {
        check_stages(params.stages.iter().map(|stage| (stage.name.as_str(), stage.weight)))
            .map_err(|error| error.to_string())?;
        for stage in &params.stages {
            if stage.steps > MAX_STEPS {
                return Err(format!("stage {:?}: steps must be at most {MAX_STEPS}", stage.name));
            }
        }
        if params.step_ms > MAX_STEP_MS {
            return Err(format!("step_ms must be at most {MAX_STEP_MS}"));
        }
        if params.delay_ms > MAX_DELAY_MS {
            return Err(format!("delay_ms must be at most {MAX_DELAY_MS}"));
        }
        if !(1..=MAX_REPEAT).contains(&params.repeat) {
            return Err(format!("repeat must be from 1 to {MAX_REPEAT}"));
        }
        if let Some(fail_at) = &params.fail_at {
            if !params.stages.iter().any(|stage| &stage.name == fail_at) {
                return Err(format!("fail_at names no stage: {fail_at:?}"));
            }
        }
        Ok(DemoParams {
            stages: params.stages,
            step_ms: params.step_ms,
            delay_ms: params.delay_ms,
            fail_at: params.fail_at,
            repeat: params.repeat,
            ignore_cancel: params.ignore_cancel,
        })
    }
}

/// The `demo` kind, ready to register.
pub fn kind() -> Kind {
    Kind::new("demo", run)
        .description(
            "A simulated job: weighted stages of timed steps. It can fail on purpose, \
             repeat identical reports, and ignore cancellation.",
        )
        .params_schema(params_schema())
        .example(json!({
            "stages": [
                { "name": "parsing", "weight": 0.2, "steps": 10 },
                { "name": "analyzing", "weight": 0.8, "steps": 40 }
            ],
            "step_ms": 100,
            "delay_ms": 0,
            "fail_at": null,
            "repeat": 1,
            "ignore_cancel": false
        }))
}

fn params_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "stages": {
                "type": "array",
                "description": "The stages, run in order; default: parsing (0.2, 10 steps), analyzing (0.8, 40 steps).",
                "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name"],
                    "properties": {
                        "name": { "type": "string", "minLength": 1 },
                        "weight": { "type": "number", "minimum": 0, "default": 1.0 },
                        "steps": { "type": "integer", "minimum": 0, "maximum": MAX_STEPS, "default": 10 }
                    }
                }
            },
            "step_ms": { "type": "integer", "minimum": 0, "maximum": MAX_STEP_MS, "default": 100,
                         "description": "Time per step; 0 runs as fast as possible." },
            "delay_ms": { "type": "integer", "minimum": 0, "maximum": MAX_DELAY_MS, "default": 0,
                          "description": "A wait, already running, before the first step." },
            "fail_at": { "type": ["string", "null"], "default": null,
                         "description": "A stage in which the job fails, halfway, with a retryable error." },
            "repeat": { "type": "integer", "minimum": 1, "maximum": MAX_REPEAT, "default": 1,
                        "description": "How many times each step's counter is reported (repeats publish nothing)." },
            "ignore_cancel": { "type": "boolean", "default": false,
                               "description": "Ignore cancellation, so the grace period and forced abort can be seen." }
        }
    })
}

async fn run(ctx: JobContext, params: DemoParams) -> JobResult {
    ctx.declare_stages(
        params
            .stages
            .iter()
            .map(|stage| StageSpec::new(stage.name.as_str(), stage.weight)),
    )?;
    let mut schedule = Instant::now();
    pause_until(&ctx, &mut schedule, params.delay_ms, params.ignore_cancel).await?;
    let mut total_steps = 0;
    for stage in &params.stages {
        ctx.start_stage(&stage.name, Some(stage.steps), Some("steps"))?;
        let fails_here = params.fail_at.as_deref() == Some(stage.name.as_str());
        for step in 1..=stage.steps {
            if fails_here && step > stage.steps / 2 {
                break;
            }
            pause_until(&ctx, &mut schedule, params.step_ms, params.ignore_cancel).await?;
            let message = format!("{} step {step}/{}", stage.name, stage.steps);
            for _ in 0..params.repeat {
                ctx.report(step, &message);
            }
            total_steps += 1;
        }
        if fails_here {
            ctx.flush();
            return Err(JobError::new(
                "demo_failure",
                format!("the demo failed in stage {:?}, as asked by fail_at", stage.name),
            )
            .retryable(true));
        }
    }
    // The last step's state (every counter full, progress below 1.0) is
    // published before the completed state.
    ctx.flush();
    Ok(json!({ "stages": params.stages.len(), "steps": total_steps }))
}

/// Moves `schedule` on by `ms` milliseconds and waits until then, or yields
/// when `ms` is 0; stops early with the cancelled error unless the job
/// ignores cancellation. Keeping to a schedule rather than sleeping `ms` each
/// time stops timer rounding from adding up: 200 steps of 10 ms take 2 s.
async fn pause_until(ctx: &JobContext, schedule: &mut Instant, ms: u64, ignore_cancel: bool) -> Result<(), JobError> {
    if !ignore_cancel {
        ctx.check_cancelled()?;
    }
    if ms == 0 {
        tokio::task::yield_now().await;
        return Ok(());
    }
    *schedule += Duration::from_millis(ms);
    let wait = tokio::time::sleep_until(*schedule);
    if ignore_cancel {
        wait.await;
        return Ok(());
    }
    tokio::select! {
        _ = ctx.cancelled() => Err(JobError::cancelled()),
        _ = wait => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::DemoParams;
    use serde_json::json;

    #[test]
    fn counts_may_be_written_as_whole_floats() {
        let params: DemoParams = serde_json::from_value(json!({
            "stages": [{ "name": "a", "steps": 2.0 }], "step_ms": 10.0, "delay_ms": 1.0, "repeat": 2.0
        }))
        .unwrap();
        assert_eq!(
            (params.stages[0].steps, params.step_ms, params.delay_ms, params.repeat),
            (2, 10, 1, 2)
        );
        for bad in [
            json!({ "repeat": 1.5 }),
            json!({ "step_ms": -1 }),
            json!({ "step_ms": "5" }),
        ] {
            assert!(serde_json::from_value::<DemoParams>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_count_past_the_largest_u64_is_not_a_whole_number() {
        let error = serde_json::from_str::<DemoParams>(r#"{"stages": [{"name": "a", "steps": 18446744073709551616}]}"#)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a whole number"), "{error}");
    }

    #[test]
    fn defaults_run_a_few_seconds() {
        let params: DemoParams = serde_json::from_value(json!({})).unwrap();
        let steps: u64 = params.stages.iter().map(|stage| stage.steps).sum();
        assert_eq!((steps, params.step_ms, params.repeat), (50, 100, 1));
    }
}
