//! Retry: a failed or cancelled job is run again as a new job, with the
//! same kind, params, labels and owner, whose `retry_of` names the old one. The
//! old job never changes.
//!
//! The new job's request is read from the old job's published state, not
//! from memory the engine keeps, so that any job the store still holds can
//! be retried. Its params are checked again, as for any create.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::admission::{CreateError, Created, JobRequest};
use super::idempotency::IdempotencyKey;
use super::Registry;
use crate::jobs::{JobId, JobStatus};
use crate::store::Published;

/// Why a job was not retried.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("the job is {}: only a failed or cancelled job can be retried", .0.status.as_str())]
    NotRetryable(Arc<Published>),
    #[error(transparent)]
    Create(#[from] CreateError),
}

/// The part of a published job that a retry repeats besides its kind and
/// labels, which the published state carries as they are.
#[derive(Deserialize)]
struct StoredParams {
    params: Value,
}

impl Registry {
    /// Creates a new job that runs job `id` again (see [`Registry::create`]
    /// for `key`).
    pub async fn retry(&self, id: JobId, key: Option<IdempotencyKey>) -> Result<Created, RetryError> {
        let old = self.job(id).await.ok_or(RetryError::NotFound(id))?;
        if !matches!(old.status, JobStatus::Failed | JobStatus::Cancelled) {
            return Err(RetryError::NotRetryable(old));
        }
        let StoredParams { params } =
            serde_json::from_slice(&old.json).expect("a published job is the JSON of a job view, with its params");
        let request = JobRequest {
            kind: old.kind.to_string(),
            params,
            labels: (*old.labels).clone(),
            retry_of: Some(id),
            owner: old.owner.clone(),
        };
        Ok(self.create(request, key).await?)
    }
}
