//! Admission: a create request becomes a queued job, or is refused before
//! anything exists. Checks the kind and its params, takes a place in the
//! bounded queue, commits the job's first state, and hands the job to its
//! task ([`super::runner`]). A request with an idempotency key goes through
//! the key's claim first ([`super::idempotency`]), and may answer the job
//! an earlier request with that key created.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::Utc;
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::idempotency::{Asked, IdempotencyKey, KeyClaim, Lookup};
use super::owners::OwnerPlace;
use super::recovery::asked_of;
use super::runner::Start;
use super::{lock, JobControl, Registry};
use crate::jobs::kind::{Kind, Prepared, PreparedJob};
use crate::jobs::labels::Labels;
use crate::jobs::model::JobModel;
use crate::jobs::publish::{FirstState, Publisher};
use crate::jobs::worker::{self, WorkerToken};
use crate::jobs::JobId;
use crate::store::{AppendError, JobSecrets, Published};

/// Why a job could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    #[error("invalid params: {0}")]
    InvalidParams(String),
    #[error("the queue holds {0} jobs, its limit")]
    QueueFull(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the job could not be stored: {0}")]
    Store(#[from] AppendError),
    #[error("the Idempotency-Key was already used for job {0}, with a different request")]
    KeyReused(JobId),
    #[error("the owner has {0} queued jobs, its limit")]
    OwnerQueueFull(usize),
}

/// What a create request asks for, its labels already checked.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    pub kind: String,
    /// As given; null means `{}`.
    pub params: Value,
    pub labels: Labels,
    /// The failed or cancelled job this one retries.
    pub retry_of: Option<JobId>,
    /// The job's owner; None without authentication.
    pub owner: Option<Arc<str>>,
}

/// A job just created, or the job an earlier request with the same
/// idempotency key created.
#[derive(Debug)]
pub struct Created {
    pub job: Arc<Published>,
    /// For a job of an external kind: its worker's token, shown only to its
    /// creator (and to repeats of its keyed request).
    pub worker_token: Option<WorkerToken>,
    /// Whether the job is an earlier request's, answered again.
    pub replayed: bool,
}

impl Registry {
    /// Creates the job `request` asks for and queues it to run; answers
    /// once its first state is committed. With a `key`, answers instead the
    /// job that the key already names, if it was asked for the same thing
    /// (else [`CreateError::KeyReused`]).
    pub async fn create(&self, request: JobRequest, key: Option<IdempotencyKey>) -> Result<Created, CreateError> {
        let Some(key) = key else {
            return self.admit(request, None).await;
        };
        loop {
            match self.look_up_key(&key) {
                Lookup::Claimed(mut claim) => match self.admit(request.clone(), Some(&mut claim)).await {
                    // Another instance of a shared store created the key's
                    // job first: its job is the key's here too.
                    Err(CreateError::Store(AppendError::KeyTaken(job_id))) => {
                        let parts = claim.parts();
                        drop(claim);
                        if let Some(job) = self.job(job_id).await {
                            self.restore_key(parts, job_id, asked_of(&job));
                        }
                    }
                    created => return created,
                },
                Lookup::Wait(settled) => settled.cancelled().await,
                Lookup::Taken(job_id, asked) => {
                    if !asked.is_same(&request) {
                        return Err(CreateError::KeyReused(job_id));
                    }
                    // Gone when retention forgot it meanwhile: then so is its
                    // key (forgotten here too, so that the next look claims it).
                    let Some(job) = self.job(job_id).await else {
                        self.forget_key(job_id);
                        continue;
                    };
                    let mailbox_token = lock(&self.inner.mailboxes)
                        .get(&job_id)
                        .map(|mailbox| mailbox.token.clone());
                    // Another instance of a shared store runs it: the store
                    // keeps its token.
                    let worker_token = match mailbox_token {
                        Some(token) => Some(token),
                        None => self
                            .inner
                            .store
                            .secrets(job_id)
                            .await
                            .and_then(|secrets| secrets.worker_token.clone())
                            .map(WorkerToken::restored),
                    };
                    return Ok(Created {
                        job,
                        worker_token,
                        replayed: true,
                    });
                }
            }
        }
    }

    /// Creates a job; a `claim` is told the job's id before the job can end.
    ///
    /// Once the job has an id, the rest (committing its first state, then
    /// handing it to its task) runs in a task of its own: a request that goes
    /// away meanwhile (the client disconnected) leaves either a job that runs
    /// or no job, never one that is stored but never started.
    async fn admit(&self, request: JobRequest, claim: Option<&mut KeyClaim<'_>>) -> Result<Created, CreateError> {
        if self.is_shutting_down() {
            return Err(CreateError::ShuttingDown);
        }
        if !self.is_store_available() {
            // Refused at once rather than queued behind the writes that
            // wait for the store to come back.
            let unavailable = AppendError::Unavailable("the store cannot be written".to_owned());
            return Err(CreateError::Store(unavailable));
        }
        let JobRequest {
            kind,
            params,
            labels,
            retry_of,
            owner,
        } = request;
        let kind = self.inner.kinds.get(&kind).ok_or(CreateError::UnknownKind(kind))?;
        let params = match params {
            Value::Null => Value::Object(Default::default()),
            Value::Object(params) => Value::Object(params),
            _ => return Err(CreateError::InvalidParams("params must be an object".to_owned())),
        };
        let prepared = kind.prepare(params.clone()).map_err(CreateError::InvalidParams)?;
        let owner_place = self
            .inner
            .owners
            .admit(owner.as_ref())
            .map_err(|full| CreateError::OwnerQueueFull(full.0))?;
        let max_queued = self.inner.settings.max_queued;
        if self.inner.queued.fetch_add(1, Ordering::AcqRel) >= max_queued {
            self.inner.queued.fetch_sub(1, Ordering::AcqRel);
            if let Some(place) = &owner_place {
                place.leave_queue();
            }
            return Err(CreateError::QueueFull(max_queued));
        }
        let id = JobId::generate();
        let (params, labels) = (Arc::new(params), Arc::new(labels));
        let key = claim.map(|claim| {
            let settled = claim.name_job(
                id,
                Asked {
                    kind: kind.shared_name(),
                    params: params.clone(),
                    labels: labels.clone(),
                    retry_of,
                },
            );
            (claim.parts(), settled)
        });
        let worker_token = matches!(prepared, Prepared::External(_)).then(WorkerToken::generate);
        let secrets = JobSecrets {
            idempotency_key: key.as_ref().map(|(parts, _)| parts.clone()),
            worker_token: worker_token.as_ref().map(|token| token.as_str().to_owned()),
        };
        let model = JobModel::new(id, kind.shared_name(), params, Utc::now())
            .with_labels(labels)
            .with_retry_of(retry_of)
            .with_owner(owner, Arc::from(self.inner.settings.stream_urls.of(id)));
        // On a shared store, a job that runs in-process waits in the store's
        // queue for whichever instance has a free slot first.
        let shared_queue = self.inner.store.queues_jobs() && matches!(prepared, Prepared::InProcess(_));
        let extra = FirstState {
            secrets: (secrets != JobSecrets::default()).then_some(secrets),
            shared_queue,
        };
        let registry = self.clone();
        let kind = kind.clone();
        let admitted = self.inner.tracker.spawn(async move {
            let store = registry.inner.store.clone();
            let (publisher, first) = Publisher::start(
                model,
                extra,
                &store,
                registry.inner.settings.publish_interval,
                registry.inner.metrics.clone(),
            );
            let control = registry.control_for(publisher, owner_place);
            // Tracked before its first state is visible, so that a cancel
            // arriving at once finds its control.
            registry.controls().insert(id, control.clone());
            let committed = first.await;
            match &committed {
                Ok(_) if shared_queue => {
                    registry.inner.metrics.jobs_created.inc();
                    // This instance may have taken the job from the queue
                    // meanwhile, with a control of its own: that one stays.
                    let mut controls = registry.controls();
                    if controls
                        .get(&id)
                        .is_some_and(|kept| Arc::ptr_eq(&kept.publisher, &control.publisher))
                    {
                        controls.remove(&id);
                    }
                    drop(controls);
                    control.leave_queue(&registry.inner.queued);
                    tracing::info!(job_id = %id, kind = %kind.name(), "job created, queued for any instance");
                }
                Ok(_) => {
                    registry.inner.metrics.jobs_created.inc();
                    registry.launch(&kind, prepared, control, worker_token.clone());
                    tracing::info!(job_id = %id, kind = %kind.name(), "job created");
                }
                Err(_) => {
                    registry.controls().remove(&id);
                    control.leave_queue(&registry.inner.queued);
                    registry.forget_key(id);
                }
            }
            // Requests waiting on the key look again: they find the job, or
            // a free key.
            if let Some((_, Some(settled))) = key {
                settled.cancel();
            }
            committed.map(|job| (job, worker_token))
        });
        let (job, worker_token) = admitted
            .await
            .expect("admission does not panic")
            .map_err(|refused| self.refusal(refused))?;
        Ok(Created {
            job,
            worker_token,
            replayed: false,
        })
    }

    /// Why the store refused a new job, as the create's error: a shared
    /// store counts the queue across instances.
    fn refusal(&self, refused: AppendError) -> CreateError {
        let settings = &self.inner.settings;
        match refused {
            AppendError::QueueFull => CreateError::QueueFull(settings.max_queued),
            AppendError::OwnerQueueFull => {
                CreateError::OwnerQueueFull(settings.max_queued_per_owner.unwrap_or_default())
            }
            other => CreateError::Store(other),
        }
    }

    /// A queued job's handles, around its publisher, with its owner's
    /// place when per-owner limits apply.
    pub(super) fn control_for(&self, publisher: Arc<Publisher>, owner_place: Option<OwnerPlace>) -> JobControl {
        JobControl {
            publisher,
            cancel: self.inner.shutdown.child_token(),
            ended: CancellationToken::new(),
            queued: Arc::new(AtomicBool::new(true)),
            stopped: CancellationToken::new(),
            owner: owner_place.map(Arc::new),
        }
    }

    /// Hands a queued job whose state is stored to its task; a job of an
    /// external kind waits for a worker with `worker_token` (a new one if
    /// it has none).
    pub(super) fn launch(
        &self,
        kind: &Kind,
        prepared: Prepared,
        control: JobControl,
        worker_token: Option<WorkerToken>,
    ) {
        self.launch_with(kind, prepared, control, worker_token, None);
    }

    /// [`Registry::launch`], for a job that may hold its running slot already.
    pub(super) fn launch_with(
        &self,
        kind: &Kind,
        prepared: Prepared,
        control: JobControl,
        worker_token: Option<WorkerToken>,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        let id = control.publisher.id();
        let (start, work) = match prepared {
            Prepared::InProcess(work) => {
                // A job whose owner has a running limit waits for its
                // owner's place first, holding no place in the server's queue.
                let start = match (slot, &control.owner) {
                    (Some(slot), _) => Start::holding(slot),
                    (None, Some(_)) if self.inner.settings.max_running_per_owner.is_some() => {
                        Start::after_owner_place()
                    }
                    (None, _) => Start::running_slot(&self.inner.running_slots),
                };
                (start, work)
            }
            Prepared::External(settings) => {
                let start_timeout = settings.start_timeout;
                let token = worker_token.unwrap_or_else(WorkerToken::generate);
                let (mailbox, inbox) = worker::mailbox(settings, token);
                let start = Start::WorkerArrived(mailbox.arrived.clone(), start_timeout);
                super::lock(&self.inner.mailboxes).insert(id, mailbox);
                let work: PreparedJob = Box::new(move |ctx| Box::pin(inbox.drive(ctx)));
                (start, work)
            }
        };
        // A root span: the job outlives the request that created it.
        let span = tracing::info_span!(parent: None, "job", job_id = %id, kind = %kind.name());
        self.inner
            .tracker
            .spawn(self.clone().run(start, work, control).instrument(span));
    }
}
