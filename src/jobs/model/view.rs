//! The job resource as clients see it (CONTRACT.md's "The job resource"),
//! borrowed from the model and serialised once per published state.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::progress::Stage;
use super::JobModel;
use crate::jobs::labels::Labels;
use crate::jobs::{ErrorInfo, JobId, JobStatus};

impl JobModel {
    /// The public job resource, ready to serialise.
    pub fn view(&self) -> JobView<'_> {
        JobView {
            id: self.id,
            kind: &self.kind,
            status: self.status,
            seq: self.seq,
            progress: self.progress,
            stage: self.current_stage.map(|index| {
                let stage = &self.stages[index];
                StageView {
                    name: &stage.name,
                    index,
                    count: self.stages.len(),
                    current: stage.current,
                    total: stage.total,
                    unit: stage.unit.as_deref(),
                }
            }),
            stages: &self.stages,
            message: self.message.as_deref(),
            rate: self.rate,
            eta_seconds: self.eta_seconds,
            params: &self.params,
            params_json: &self.params_json,
            result: &self.result,
            error: self.error.as_ref(),
            created_at: self.created_at,
            started_at: self.started_at,
            updated_at: self.updated_at,
            finished_at: self.finished_at,
            labels: &self.labels,
            retry_of: self.retry_of,
            owner: self.owner.as_deref(),
            stream_url: &self.stream_url,
        }
    }
}

/// The current stage and its counter, as clients see it.
#[derive(Debug, Serialize)]
pub struct StageView<'a> {
    pub name: &'a str,
    pub index: usize,
    pub count: usize,
    pub current: u64,
    pub total: Option<u64>,
    pub unit: Option<&'a str>,
}

/// The job resource of CONTRACT.md, borrowed from the model.
#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    pub id: JobId,
    pub kind: &'a str,
    pub status: JobStatus,
    pub seq: u64,
    pub progress: f64,
    pub stage: Option<StageView<'a>>,
    #[serde(serialize_with = "serialize_stages")]
    stages: &'a [Stage],
    pub message: Option<&'a str>,
    pub rate: Option<f64>,
    pub eta_seconds: Option<f64>,
    #[serde(skip)]
    pub params: &'a Value,
    /// `params` as serialised when the job was created: written in their place.
    #[serde(rename = "params")]
    params_json: &'a RawValue,
    pub result: &'a Value,
    pub error: Option<&'a ErrorInfo>,
    #[serde(serialize_with = "crate::jobs::serialize_time")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::jobs::serialize_optional_time")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::jobs::serialize_time")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::jobs::serialize_optional_time")]
    pub finished_at: Option<DateTime<Utc>>,
    pub labels: &'a Labels,
    pub retry_of: Option<JobId>,
    pub owner: Option<&'a str>,
    pub stream_url: &'a str,
}

fn serialize_stages<S: serde::Serializer>(stages: &&[Stage], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(stages.iter())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{job, publish};
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn params_are_echoed_as_given() {
        let params = json!({"b": [1, 2.5, "x\n\u{e9}"], "a": {"nested": null}, "c": 1e300});
        let mut model = JobModel::new(
            JobId::generate(),
            Arc::from("test"),
            Arc::new(params.clone()),
            Utc::now(),
        );
        model.prepare_publish(Instant::now(), Utc::now());
        let json = serde_json::to_string(&model.view()).unwrap();
        let expected = format!(",\"params\":{},\"result\":", serde_json::to_string(&params).unwrap());
        assert!(json.contains(&expected), "{json}");
        assert_eq!(serde_json::to_value(model.view()).unwrap()["params"], params);
    }

    #[test]
    fn times_have_six_fractional_digits() {
        let mut model = job();
        let view = publish(&mut model, Instant::now());
        let created = view["created_at"].as_str().unwrap();
        assert_eq!(created.len(), "2026-11-22T18:00:03.250000Z".len(), "{created}");
        assert!(created.ends_with('Z'));
        assert_eq!(view["seq"], json!(1));
    }
}
