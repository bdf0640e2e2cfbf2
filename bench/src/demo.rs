//! What the two baselines share: the job resource with the same fields and
//! the same JSON shape as jobcast's (so every server under test sends
//! events of the same size), a runner of the `demo` kind's stages and
//! steps, and a registry of jobs with one bounded broadcast channel each.
//!
//! The baselines implement only what the load generator uses: creating a
//! demo job (`stages`, `step_ms`, `delay_ms`; other params are accepted and
//! ignored) and following its events. They publish every step as its own
//! state, with no merging: that is the behaviour they stand for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

/// `POST /v1/jobs` body.
#[derive(Debug, Deserialize)]
pub struct CreateBody {
    pub kind: String,
    #[serde(default)]
    pub params: Option<Value>,
}

/// The demo params the baselines act on.
#[derive(Clone, Debug, Deserialize)]
pub struct DemoParams {
    #[serde(default = "default_stages")]
    pub stages: Vec<StageParam>,
    #[serde(default = "default_step_ms")]
    pub step_ms: u64,
    #[serde(default)]
    pub delay_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct StageParam {
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: f64,
    #[serde(default = "default_steps")]
    pub steps: u64,
}

fn default_stages() -> Vec<StageParam> {
    vec![
        StageParam {
            name: "parsing".to_owned(),
            weight: 0.2,
            steps: 10,
        },
        StageParam {
            name: "analyzing".to_owned(),
            weight: 0.8,
            steps: 40,
        },
    ]
}

fn default_step_ms() -> u64 {
    100
}

fn default_weight() -> f64 {
    1.0
}

fn default_steps() -> u64 {
    10
}

/// The current stage and its counter.
#[derive(Clone, Debug, Serialize)]
pub struct StageView {
    pub name: String,
    pub index: usize,
    pub count: usize,
    pub current: u64,
    pub total: Option<u64>,
    pub unit: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StageEntry {
    pub name: String,
    pub weight: f64,
    pub status: &'static str,
}

/// The job resource, field for field as jobcast serialises it.
#[derive(Clone, Debug, Serialize)]
pub struct JobState {
    pub id: Arc<str>,
    pub kind: &'static str,
    pub status: &'static str,
    pub seq: u64,
    pub progress: f64,
    pub stage: Option<StageView>,
    pub stages: Vec<StageEntry>,
    pub message: Option<String>,
    pub rate: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub params: Arc<Value>,
    pub result: Value,
    pub error: Option<Value>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

/// RFC 3339 UTC with six fractional digits, as the contract writes times.
pub fn now_rfc3339() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl JobState {
    /// A new queued demo job, already at `seq` 1.
    pub fn queued(params: Arc<Value>) -> Self {
        let now = now_rfc3339();
        JobState {
            id: Arc::from(uuid::Uuid::now_v7().to_string()),
            kind: "demo",
            status: "queued",
            seq: 1,
            progress: 0.0,
            stage: None,
            stages: Vec::new(),
            message: None,
            rate: None,
            eta_seconds: None,
            params,
            result: Value::Null,
            error: None,
            created_at: now.clone(),
            started_at: None,
            updated_at: now,
            finished_at: None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.status, "completed" | "failed" | "cancelled")
    }

    /// The event name of this state on a live stream.
    pub fn event_name(&self) -> &'static str {
        if self.is_terminal() {
            self.status
        } else {
            "progress"
        }
    }

    /// Stamps the next state: next `seq`, update time and progress.
    fn next(&mut self) {
        self.seq += 1;
        self.updated_at = now_rfc3339();
        let total: f64 = self.stages.iter().map(|stage| stage.weight).sum();
        if total > 0.0 {
            let done: f64 = self
                .stages
                .iter()
                .enumerate()
                .map(|(index, stage)| {
                    let fraction = match stage.status {
                        "done" => 1.0,
                        "running" => self
                            .stage
                            .as_ref()
                            .filter(|current| current.index == index)
                            .and_then(|current| current.total.map(|total| current.current as f64 / total.max(1) as f64))
                            .unwrap_or(0.0),
                        _ => 0.0,
                    };
                    stage.weight * fraction.min(1.0)
                })
                .sum();
            self.progress = if self.status == "completed" {
                1.0
            } else {
                (((done / total) * 1e6).round() / 1e6).min(0.999)
            };
        }
    }
}

/// Runs a demo job, calling `publish` with each new state: running with
/// its stages declared, the delay, one state per stage start and per step,
/// then completed.
pub async fn run(mut job: JobState, params: DemoParams, publish: impl Fn(&JobState)) {
    job.status = "running";
    job.started_at = Some(now_rfc3339());
    job.stages = params
        .stages
        .iter()
        .map(|stage| StageEntry {
            name: stage.name.clone(),
            weight: stage.weight,
            status: "pending",
        })
        .collect();
    job.next();
    publish(&job);
    pause(params.delay_ms).await;
    let count = params.stages.len();
    for (index, stage) in params.stages.iter().enumerate() {
        if index > 0 {
            job.stages[index - 1].status = "done";
        }
        job.stages[index].status = "running";
        job.stage = Some(StageView {
            name: stage.name.clone(),
            index,
            count,
            current: 0,
            total: Some(stage.steps),
            unit: Some("steps"),
        });
        job.next();
        publish(&job);
        for step in 1..=stage.steps {
            pause(params.step_ms).await;
            if let Some(current) = &mut job.stage {
                current.current = step;
            }
            job.message = Some(format!("{} step {step}/{}", stage.name, stage.steps));
            job.next();
            publish(&job);
        }
    }
    for stage in &mut job.stages {
        stage.status = "done";
    }
    job.status = "completed";
    job.result = serde_json::json!({ "stages": count, "steps": params.stages.iter().map(|s| s.steps).sum::<u64>() });
    job.finished_at = Some(now_rfc3339());
    job.next();
    publish(&job);
}

async fn pause(ms: u64) {
    if ms == 0 {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Jobs by id, each with its latest state and a bounded broadcast sender,
/// behind one mutex held only to swap the latest state and send (never
/// across an await), so a subscriber's snapshot and live feed have no gap.
pub struct Hub<T> {
    jobs: Mutex<HashMap<Arc<str>, Entry<T>>>,
    capacity: usize,
}

struct Entry<T> {
    latest: T,
    /// None once the terminal state was sent: receivers then end.
    sender: Option<broadcast::Sender<T>>,
}

impl<T: Clone> Hub<T> {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Hub {
            jobs: Mutex::new(HashMap::new()),
            capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry<T>>> {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn insert(&self, id: Arc<str>, first: T) {
        let sender = broadcast::channel(self.capacity).0;
        self.lock().insert(
            id,
            Entry {
                latest: first,
                sender: Some(sender),
            },
        );
    }

    /// Makes `value` the job's latest state and sends it to every receiver.
    pub fn publish(&self, id: &str, value: T, terminal: bool) {
        let mut jobs = self.lock();
        if let Some(entry) = jobs.get_mut(id) {
            entry.latest = value.clone();
            if let Some(sender) = &entry.sender {
                // An error only means nobody is listening.
                let _ = sender.send(value);
            }
            if terminal {
                entry.sender = None;
            }
        }
    }

    /// The latest state and, unless the job has ended, a receiver of the rest.
    pub fn subscribe(&self, id: &str) -> Option<(T, Option<broadcast::Receiver<T>>)> {
        let jobs = self.lock();
        let entry = jobs.get(id)?;
        Some((
            entry.latest.clone(),
            entry.sender.as_ref().map(broadcast::Sender::subscribe),
        ))
    }
}

/// Reads the demo params of a create body; `None` for any other kind.
pub fn parse_create(body: &[u8]) -> Option<(Arc<Value>, DemoParams)> {
    let body: CreateBody = serde_json::from_slice(body).ok()?;
    if body.kind != "demo" {
        return None;
    }
    let params = body.params.unwrap_or_else(|| Value::Object(Default::default()));
    let demo: DemoParams = serde_json::from_value(params.clone()).ok()?;
    Some((Arc::new(params), demo))
}
