//! Job handlers: create, list, get (with long poll), cancel, retry, and the
//! kinds.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::body::JsonBody;
use super::query::{JobPath, QueryParams};
use super::AppState;
use crate::auth::Access;
use crate::error::ApiError;
use crate::jobs::labels::Labels;
use crate::jobs::registry::{Created, IdempotencyKey, JobRequest};
use crate::jobs::{JobId, JobStatus};
use crate::published::Published;
use crate::store::ListQuery;

/// Longest long poll; longer requests wait this long.
const MAX_WAIT_SECONDS: u64 = 60;
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    kind: String,
    #[serde(default)]
    params: Value,
    #[serde(default)]
    labels: Value,
    /// The owner to create the job for (a service's or an admin's request).
    #[serde(default)]
    owner: Option<String>,
}

/// A job as the answer to a request: its published JSON, as every stream
/// sent it.
pub(crate) fn job_json(job: &Published) -> Response {
    ([(CONTENT_TYPE, "application/json")], job.json.clone()).into_response()
}

/// The request header that makes a create idempotent.
const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header that tells a repeat of a keyed create from the first.
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Starts a job, or with an `Idempotency-Key` answers the job an earlier
/// request with the same key and body started. For an external kind the
/// body also holds `worker_token`, which is shown only here.
pub async fn create(
    State(app): State<AppState>,
    access: Access,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateJob>,
) -> Result<Response, ApiError> {
    let owner = owner_of_new_job(&access, body.owner)?;
    let key = idempotency_key(&headers, owner.as_ref())?;
    let request = JobRequest {
        kind: body.kind,
        params: body.params,
        labels: Labels::from_json(body.labels)?,
        retry_of: None,
        owner,
    };
    let created = app.registry.create(request, key).await?;
    Ok(accepted(&created))
}

/// Runs a failed or cancelled job again as a new job, answered as a create
/// is (an `Idempotency-Key` works alike).
pub async fn retry(
    State(app): State<AppState>,
    access: Access,
    JobPath(id): JobPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let old = visible_job(&app, &access, id).await?;
    let key = idempotency_key(&headers, old.owner.as_ref())?;
    let created = app.registry.retry(id, key).await?;
    Ok(accepted(&created))
}

/// Who a new job belongs to: the requester, or the owner a service or an
/// admin names. Without authentication jobs have no owner, whatever the
/// body says.
fn owner_of_new_job(access: &Access, named: Option<String>) -> Result<Option<Arc<str>>, ApiError> {
    match (named, access) {
        (Some(owner), _) if owner.is_empty() => Err(ApiError::Unprocessable("owner must not be empty".to_owned())),
        (None, _) | (Some(_), Access::Open) => Ok(access.subject().cloned()),
        (Some(_), _) if !access.may_act_for_others() => Err(ApiError::Forbidden(
            "only a service or an admin may create a job for another owner".to_owned(),
        )),
        (Some(owner), _) => Ok(Some(Arc::from(owner))),
    }
}

/// The job, if it exists and the request may see it; else 404, the same
/// answer for both.
async fn visible_job(app: &AppState, access: &Access, id: JobId) -> Result<Arc<Published>, ApiError> {
    app.registry
        .job(id)
        .await
        .filter(|job| access.may_see(job))
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))
}

/// The 202 answer to a create (or a retry): the job, its `Location`, the
/// worker token of an external job, and whether it is a repeat.
fn accepted(created: &Created) -> Response {
    let job = &created.job;
    let location = format!("/v1/jobs/{}", job.job_id);
    let body = match &created.worker_token {
        None => job.json.clone(),
        Some(token) => {
            // The job's JSON is an object: its closing brace makes way for one more member.
            let mut body = BytesMut::with_capacity(job.json.len() + token.as_str().len() + 20);
            body.put_slice(&job.json[..job.json.len() - 1]);
            body.put_slice(format!(",\"worker_token\":\"{}\"}}", token.as_str()).as_bytes());
            body.freeze()
        }
    };
    let mut response = (
        StatusCode::ACCEPTED,
        [(LOCATION, location.as_str()), (CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if created.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// The request's `Idempotency-Key`, if it has one: sent once, visible
/// ASCII, 1 to 255 characters; anything else is a 400. A key is scoped to
/// the job's owner, so that no owner's key finds another's job.
fn idempotency_key(headers: &HeaderMap, owner: Option<&Arc<str>>) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest("send one Idempotency-Key, not several".to_owned()));
    }
    let key = value
        .to_str()
        .ok()
        .filter(|key| !key.contains(|c: char| c.is_ascii_control()))
        .ok_or_else(|| ApiError::BadRequest("the Idempotency-Key must be visible ASCII".to_owned()))?;
    Ok(Some(IdempotencyKey::new(owner.map(|owner| owner.to_string()), key)?))
}

pub async fn list(
    State(app): State<AppState>,
    access: Access,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(query.as_deref());
    let statuses: Vec<JobStatus> = query.parsed_all(
        "status",
        "one of queued, running, cancelling, completed, failed, cancelled",
    )?;
    let limit = query
        .parsed::<usize>("limit", "a whole number from 1 to 1000")?
        .unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    let before = query.parsed::<JobId>("cursor", "a next_cursor from an earlier page")?;
    let query = ListQuery {
        statuses,
        kinds: query.all("kind").map(str::to_owned).collect(),
        labels: query.label_filters()?,
        owner: access.only_owner().cloned(),
        before,
        limit,
    };
    let mut jobs = app.registry.jobs(&query).await;
    let next_cursor = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(|job| job.job_id)
    } else {
        None
    };
    let mut body = BytesMut::with_capacity(jobs.iter().map(|job| job.json.len() + 1).sum::<usize>() + 64);
    body.put_slice(b"{\"jobs\":[");
    for (index, job) in jobs.iter().enumerate() {
        if index > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&job.json);
    }
    body.put_slice(b"],\"next_cursor\":");
    match next_cursor {
        Some(cursor) => body.put_slice(format!("\"{cursor}\"").as_bytes()),
        None => body.put_slice(b"null"),
    }
    body.put_u8(b'}');
    Ok(([(CONTENT_TYPE, "application/json")], Bytes::from(body)).into_response())
}

/// The job now, or — with `wait_seconds` — as soon as its `seq` passes
/// `after_seq` (default: its current `seq`), else after the wait.
pub async fn get(
    State(app): State<AppState>,
    access: Access,
    JobPath(id): JobPath,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = QueryParams::parse(query.as_deref());
    let wait_seconds = query
        .parsed::<u64>("wait_seconds", "a whole number of seconds")?
        .unwrap_or(0)
        .min(MAX_WAIT_SECONDS);
    let after_seq = query.parsed::<u64>("after_seq", "a whole number")?;
    let feed = app
        .registry
        .watch(id)
        .await
        .filter(|feed| access.may_see(&feed.snapshot))
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    let after_seq = after_seq.unwrap_or(feed.snapshot.seq);
    if wait_seconds == 0 || feed.snapshot.seq > after_seq {
        return Ok(job_json(&feed.snapshot));
    }
    let deadline = tokio::time::sleep(Duration::from_secs(wait_seconds));
    tokio::pin!(deadline);
    // An ended job has no receiver: nothing will change, and the poll
    // answers after the wait, as the contract says.
    let mut receiver = feed.receiver;
    loop {
        let next = async {
            match &mut receiver {
                Some(receiver) => receiver.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut deadline => break,
            _ = app.closing.cancelled() => break,
            received = next => match received {
                Ok(job) if job.seq > after_seq => return Ok(job_json(&job)),
                Ok(_) => {}
                // Lagged: the latest state answers. Closed: the job ended and
                // everything sent was read; wait out the poll.
                Err(RecvError::Lagged(_)) => break,
                Err(RecvError::Closed) => receiver = None,
            },
        }
    }
    let job = app
        .registry
        .job(id)
        .await
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))?;
    Ok(job_json(&job))
}

/// Cancels and answers once the job's task has stopped.
pub async fn cancel(State(app): State<AppState>, access: Access, JobPath(id): JobPath) -> Result<Response, ApiError> {
    visible_job(&app, &access, id).await?;
    let job = app.registry.cancel(id, access.subject().cloned()).await?;
    Ok(job_json(&job))
}

pub async fn kinds(State(app): State<AppState>) -> Json<Value> {
    let kinds: Vec<_> = app.registry.kinds().map(|kind| kind.info()).collect();
    Json(json!({ "kinds": kinds }))
}
