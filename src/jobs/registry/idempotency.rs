//! Idempotent create: one owner's `Idempotency-Key` names at most one job,
//! for as long as that job is retained.
//!
//! The first request with a key claims it and creates the job; requests
//! with the same key that arrive meanwhile wait until that creation is
//! settled, then answer its job when they ask for the same thing (kind,
//! params and labels equal as JSON values, and the same job retried), or
//! are refused when they ask for something else. A creation that fails gives the key up, and the
//! next waiter claims it. Retention forgets a job's key with the job.
//!
//! The claim names its job before the job can end (before anyone can
//! cancel it), so that retention always finds the key of a job it forgets.
//!
//! On a store several instances share, the index here is each instance's
//! own; the store claims the key with the job's first state, and refuses
//! that state when another instance's job holds the key
//! ([`crate::store::AppendError::KeyTaken`]): the request then answers
//! that job, as a repeat, or is refused as one that asks for another.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::admission::JobRequest;
use super::{lock, Registry};
use crate::jobs::labels::Labels;
use crate::jobs::JobId;

/// The longest idempotency key, in characters.
pub const MAX_KEY_LENGTH: usize = 255;

/// An idempotency key, scoped to the owner that sent it (None while the
/// server has no authentication).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    owner: Option<String>,
    key: String,
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the Idempotency-Key is empty")]
    Empty,
    #[error("the Idempotency-Key is {0} characters long; at most {MAX_KEY_LENGTH} are allowed")]
    TooLong(usize),
}

impl IdempotencyKey {
    /// `key` as sent by `owner`: 1 to `MAX_KEY_LENGTH` characters.
    pub fn new(owner: Option<String>, key: &str) -> Result<Self, KeyError> {
        match key.chars().count() {
            0 => Err(KeyError::Empty),
            length if length > MAX_KEY_LENGTH => Err(KeyError::TooLong(length)),
            _ => Ok(IdempotencyKey {
                owner,
                key: key.to_owned(),
            }),
        }
    }
}

/// What a keyed create asked for, shared with the job it created: a later
/// request with the key is a repeat only if it asks for the same.
#[derive(Debug)]
pub(super) struct Asked {
    pub kind: Arc<str>,
    pub params: Arc<Value>,
    pub labels: Arc<Labels>,
    pub retry_of: Option<JobId>,
}

impl Asked {
    /// Whether `request` asks for the same job (its params null meaning `{}`).
    pub fn is_same(&self, request: &JobRequest) -> bool {
        let same_params = match (&request.params, &*self.params) {
            (Value::Null, Value::Object(asked)) => asked.is_empty(),
            (params, asked) => params == asked,
        };
        *self.kind == *request.kind
            && same_params
            && *self.labels == request.labels
            && self.retry_of == request.retry_of
    }
}

/// Every key in use, and the key of each job created with one.
#[derive(Default)]
pub(super) struct KeyIndex {
    keys: HashMap<IdempotencyKey, Claim>,
    of_job: HashMap<JobId, IdempotencyKey>,
    /// Tells claims apart, so that a failed creation gives up only its own.
    next_claim: u64,
}

struct Claim {
    id: u64,
    /// The job, once created, and what it was asked for.
    job: Option<(JobId, Arc<Asked>)>,
    /// Fires once the claiming request is done, whatever its outcome.
    settled: CancellationToken,
}

/// What a request found under its key.
pub(super) enum Lookup<'a> {
    /// The key was free: this request creates the job.
    Claimed(KeyClaim<'a>),
    /// Another request is creating the key's job: wait, then look again.
    Wait(CancellationToken),
    /// The key's job, and what it was asked for.
    Taken(JobId, Arc<Asked>),
}

/// A request's hold on a key while it creates the key's job. Dropped
/// before it names a job (the request was refused, or went away), it gives
/// the key up and wakes its waiters. Once it names a job, the job's
/// admission owns the outcome: it wakes the waiters when the job is stored,
/// or gives the key up if it could not be.
pub(super) struct KeyClaim<'a> {
    registry: &'a Registry,
    key: IdempotencyKey,
    id: u64,
    settled: CancellationToken,
    named: bool,
}

impl KeyClaim<'_> {
    /// Names the key's job, before anything can end that job; answers the
    /// token that wakes the key's waiters, for the admission to fire (None
    /// if the claim was given up meanwhile).
    pub fn name_job(&mut self, job_id: JobId, asked: Asked) -> Option<CancellationToken> {
        let mut index = lock(&self.registry.inner.keys);
        let claim = index.keys.get_mut(&self.key).filter(|claim| claim.id == self.id)?;
        claim.job = Some((job_id, Arc::new(asked)));
        index.of_job.insert(job_id, self.key.clone());
        self.named = true;
        Some(self.settled.clone())
    }

    /// The key's owner and text, for the store to keep with the job.
    pub fn parts(&self) -> (Option<String>, String) {
        (self.key.owner.clone(), self.key.key.clone())
    }
}

impl Drop for KeyClaim<'_> {
    fn drop(&mut self) {
        if self.named {
            return;
        }
        let mut index = lock(&self.registry.inner.keys);
        if index.keys.get(&self.key).is_some_and(|claim| claim.id == self.id) {
            index.keys.remove(&self.key);
        }
        drop(index);
        self.settled.cancel();
    }
}

impl Registry {
    /// Looks `key` up, claiming it when it is free.
    pub(super) fn look_up_key(&self, key: &IdempotencyKey) -> Lookup<'_> {
        let mut index = lock(&self.inner.keys);
        if let Some(claim) = index.keys.get(key) {
            match &claim.job {
                _ if !claim.settled.is_cancelled() => return Lookup::Wait(claim.settled.clone()),
                Some((job_id, asked)) => return Lookup::Taken(*job_id, asked.clone()),
                // A kept claim always names its job; a failed one is removed.
                None => {}
            }
        }
        index.next_claim += 1;
        let id = index.next_claim;
        let settled = CancellationToken::new();
        index.keys.insert(
            key.clone(),
            Claim {
                id,
                job: None,
                settled: settled.clone(),
            },
        );
        Lookup::Claimed(KeyClaim {
            registry: self,
            key: key.clone(),
            id,
            settled,
            named: false,
        })
    }

    /// Gives a key back to the job it created before a restart.
    pub(super) fn restore_key(&self, (owner, key): (Option<String>, String), job_id: JobId, asked: Asked) {
        let mut index = lock(&self.inner.keys);
        index.next_claim += 1;
        let key = IdempotencyKey { owner, key };
        let settled = CancellationToken::new();
        settled.cancel();
        let claim = Claim {
            id: index.next_claim,
            job: Some((job_id, Arc::new(asked))),
            settled,
        };
        index.keys.insert(key.clone(), claim);
        index.of_job.insert(job_id, key);
    }

    /// Forgets the key of a job that retention forgets (or that is gone).
    pub(super) fn forget_key(&self, job_id: JobId) {
        let mut index = lock(&self.inner.keys);
        let Some(key) = index.of_job.remove(&job_id) else {
            return;
        };
        let names_job = |claim: &Claim| claim.job.as_ref().is_some_and(|(id, _)| *id == job_id);
        if index.keys.get(&key).is_some_and(names_job) {
            index.keys.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_key_is_one_to_255_characters() {
        assert!(IdempotencyKey::new(None, "k").is_ok());
        assert!(IdempotencyKey::new(None, &"é".repeat(MAX_KEY_LENGTH)).is_ok());
        assert!(matches!(IdempotencyKey::new(None, ""), Err(KeyError::Empty)));
        assert!(matches!(
            IdempotencyKey::new(None, &"k".repeat(256)),
            Err(KeyError::TooLong(256))
        ));
        assert_ne!(
            IdempotencyKey::new(None, "k").unwrap(),
            IdempotencyKey::new(Some("alice".into()), "k").unwrap(),
            "keys are scoped to their owner"
        );
    }

    #[test]
    fn a_repeat_asks_for_the_same_kind_params_labels_and_retried_job() {
        let asked = Asked {
            kind: Arc::from("demo"),
            params: Arc::new(json!({})),
            labels: Arc::default(),
            retry_of: None,
        };
        let request = |kind: &str, params: Value| JobRequest {
            kind: kind.to_owned(),
            params,
            labels: Labels::default(),
            retry_of: None,
            owner: None,
        };
        assert!(asked.is_same(&request("demo", json!({}))));
        assert!(asked.is_same(&request("demo", Value::Null)), "null params are {{}}");
        assert!(!asked.is_same(&request("other", json!({}))));
        assert!(!asked.is_same(&request("demo", json!({"step_ms": 1}))));
        let labelled = JobRequest {
            labels: Labels::from_json(json!({"project": "42"})).unwrap(),
            ..request("demo", json!({}))
        };
        assert!(!asked.is_same(&labelled));
        let retry = JobRequest {
            retry_of: Some(JobId::generate()),
            ..request("demo", json!({}))
        };
        assert!(!asked.is_same(&retry));
    }
}
