//! The end of a job whose process is gone: a job left `running` or
//! `cancelling` by a server that crashed (found at the next start), or by
//! an instance that died (found by the others). Its last stored state
//! becomes `failed`, with the running stage `failed` and a retryable error
//! that says why; its progress, counters and message stay as stored.

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::JobStatus;
use crate::published::{NewState, Published};

/// The terminal state that ends the abandoned `job` with error `code`, as
/// `seq` (which may jump past the stored one: it follows it). None when the
/// stored JSON is not an object.
pub fn abandoned_end(job: &Published, code: &str, message: &str, seq: u64) -> Option<NewState> {
    let Ok(Value::Object(mut stored)) = serde_json::from_slice::<Value>(&job.json) else {
        return None;
    };
    let mut running_stage = Value::Null;
    if let Some(Value::Array(stages)) = stored.get_mut("stages") {
        for stage in stages.iter_mut().filter(|stage| stage["status"] == "running") {
            stage["status"] = json!("failed");
            running_stage = stage["name"].clone();
        }
    }
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    stored.insert("status".to_owned(), json!("failed"));
    stored.insert("seq".to_owned(), json!(seq));
    stored.insert(
        "error".to_owned(),
        json!({
            "code": code,
            "message": message,
            "stage": running_stage,
            "retryable": true,
        }),
    );
    stored.insert("rate".to_owned(), Value::Null);
    stored.insert("eta_seconds".to_owned(), Value::Null);
    stored.insert("updated_at".to_owned(), json!(now));
    stored.insert("finished_at".to_owned(), json!(now));
    let json = serde_json::to_vec(&stored).expect("a JSON object serialises");
    let state = NewState::new(
        job.job_id,
        job.kind.clone(),
        job.labels.clone(),
        JobStatus::Failed,
        seq,
        Bytes::from(json),
    );
    Some(state.with_owner(job.owner.clone()).following(job.seq))
}
