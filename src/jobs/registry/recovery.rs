//! Recovery at start: taking over what an earlier run of the server left in
//! a durable store (CONTRACT.md, "Durability and restarts").
//!
//! - A job that was `running` or `cancelling` ends `failed` with error code
//!   `interrupted`, retryable, its running stage `failed`. Its progress,
//!   counters and message are the last ones stored. Its `seq` jumps past
//!   any `seq` a client may have seen: progress states are written behind,
//!   so the store may hold an older one than clients saw, by fewer than
//!   [`INTERRUPTED_SEQ_GAP`] states.
//! - A `queued` job is queued again, in its original order (that of
//!   `created_at`), with its params checked again; a job whose kind this
//!   server no longer runs, or whose params it now refuses, ends `failed`.
//! - An ended job's retention goes on from when it ended.
//! - The idempotency key that created a job names it again, and a queued
//!   job of an external kind keeps its worker's token.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::idempotency::Asked;
use super::Registry;
use crate::jobs::abandoned::abandoned_end;
use crate::jobs::model::{JobModel, Outcome};
use crate::jobs::publish::Publisher;
use crate::jobs::worker::WorkerToken;
use crate::jobs::{JobError, JobStatus};
use crate::published::Published;
use crate::store::{JobSecrets, ListQuery, MAX_UNSTORED_STATES};

/// How far the `seq` of an interrupted job's terminal state jumps past the
/// stored one: past every `seq` a client may have seen, since a durable
/// store never publishes more than [`MAX_UNSTORED_STATES`] states of a job
/// ahead of the one it stored.
pub const INTERRUPTED_SEQ_GAP: u64 = 2 * MAX_UNSTORED_STATES;

impl Registry {
    /// Takes over every job the store holds from an earlier run. Call once,
    /// before serving.
    pub async fn recover(&self) {
        let everything = ListQuery {
            limit: usize::MAX - 1,
            ..ListQuery::default()
        };
        let mut jobs = self.jobs(&everything).await;
        // Queued jobs keep their order: that of their creation (ids are
        // ordered by time only to the millisecond).
        jobs.sort_by_cached_key(|job| (stored_time(job, "created_at"), job.job_id));
        let mut secrets = self.inner.store.take_restored_secrets();
        let mut ended = Vec::new();
        for job in jobs {
            let JobSecrets {
                idempotency_key,
                worker_token,
            } = secrets
                .remove(&job.job_id)
                .map(Arc::unwrap_or_clone)
                .unwrap_or_default();
            if let Some(key) = idempotency_key {
                self.restore_key(key, job.job_id, asked_of(&job));
            }
            match job.status {
                JobStatus::Queued => self.requeue(&job, worker_token.map(WorkerToken::restored)).await,
                JobStatus::Running | JobStatus::Cancelling => {
                    if self.interrupt(&job).await {
                        ended.push((Some(Utc::now()), job.job_id));
                    }
                }
                JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled => {
                    ended.push((stored_time(&job, "finished_at"), job.job_id))
                }
            }
        }
        ended.sort();
        let now = Utc::now();
        for (finished_at, id) in ended {
            let age = finished_at
                .and_then(|finished_at| (now - finished_at).to_std().ok())
                .unwrap_or(Duration::ZERO);
            self.retain_ended_since(id, Instant::now().checked_sub(age).unwrap_or_else(Instant::now));
        }
    }

    /// Queues a stored queued job again; a job of an external kind keeps
    /// its worker's token.
    async fn requeue(&self, job: &Arc<Published>, worker_token: Option<WorkerToken>) {
        self.run_stored(job, worker_token, None).await;
        tracing::info!(job_id = %job.job_id, "queued job taken over from an earlier run");
    }

    /// A publisher for a stored queued job, whose next state follows the
    /// stored one.
    pub(super) fn resumed_publisher(&self, job: &Published) -> Arc<Publisher> {
        let Asked { params, retry_of, .. } = asked_of(job);
        let created_at = stored_time(job, "created_at").unwrap_or_else(Utc::now);
        let model = JobModel::restored_queued(job.job_id, job.kind.clone(), params, created_at, job.seq)
            .with_labels(job.labels.clone())
            .with_retry_of(retry_of)
            .with_owner(
                job.owner.clone(),
                Arc::from(self.inner.settings.stream_urls.of(job.job_id)),
            );
        Publisher::resume(
            model,
            &self.inner.store,
            self.inner.settings.publish_interval,
            self.inner.metrics.clone(),
        )
    }

    /// Runs a stored queued job here: with `slot` if it holds a running slot
    /// already; a job of an external kind keeps its worker's token. A job
    /// whose kind this server does not run, or whose params it now refuses,
    /// ends `failed`.
    pub(super) async fn run_stored(
        &self,
        job: &Arc<Published>,
        worker_token: Option<WorkerToken>,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let Asked { params, .. } = asked_of(job);
        // Per-owner limits count it again; its owner's queue limit does not
        // refuse a job that was already accepted.
        let owner_place = self.inner.owners.admit(job.owner.as_ref()).ok().flatten();
        let control = self.control_for(self.resumed_publisher(job), owner_place);
        self.inner.queued.fetch_add(1, Ordering::AcqRel);
        self.controls().insert(job.job_id, control.clone());
        let prepared = match self.inner.kinds.get(&*job.kind) {
            None => Err(JobError::new(
                "unknown_kind",
                format!("this server no longer runs jobs of kind {:?}", job.kind),
            )),
            Some(kind) => kind
                .prepare(Value::clone(&params))
                .map(|prepared| (kind, prepared))
                .map_err(|detail| JobError::new("invalid_params", detail)),
        };
        match prepared {
            Ok((kind, prepared)) => self.launch_with(kind, prepared, control, worker_token, slot),
            Err(error) => {
                tracing::warn!(job_id = %job.job_id, %error, "a stored queued job cannot run");
                self.finish(&control, Outcome::Failed(error)).await;
            }
        }
    }

    /// Ends a job that was live when the earlier run stopped; answers
    /// whether it ended.
    async fn interrupt(&self, job: &Arc<Published>) -> bool {
        let seq = job.seq + INTERRUPTED_SEQ_GAP + 1;
        let message = "the server stopped while the job was live";
        let Some(state) = abandoned_end(job, "interrupted", message, seq) else {
            tracing::error!(job_id = %job.job_id, "a stored job is not a JSON object; left as it is");
            return false;
        };
        match self.inner.store.commit(state).await {
            Ok(_) => {
                tracing::info!(job_id = %job.job_id, "job interrupted by the restart ended failed");
                true
            }
            Err(error) => {
                tracing::error!(job_id = %job.job_id, %error, "could not end an interrupted job");
                false
            }
        }
    }
}

/// What a stored job was asked for: its kind, params, labels and the job it
/// retries.
pub(super) fn asked_of(job: &Published) -> Asked {
    let stored: Value = serde_json::from_slice(&job.json).unwrap_or(Value::Null);
    Asked {
        kind: job.kind.clone(),
        params: Arc::new(stored.get("params").cloned().unwrap_or_else(|| json!({}))),
        labels: job.labels.clone(),
        retry_of: stored
            .get("retry_of")
            .and_then(Value::as_str)
            .and_then(|id| id.parse().ok()),
    }
}

/// A time member of a stored job.
fn stored_time(job: &Published, member: &str) -> Option<DateTime<Utc>> {
    let stored: Value = serde_json::from_slice(&job.json).ok()?;
    let text = stored.get(member)?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}
