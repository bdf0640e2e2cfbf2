//! Job kinds: a name, a description, a JSON Schema and an example of its
//! params, and the async function that runs a job of that kind.
//!
//! Params are checked when a job is created, by deserialising them into the
//! kind's params type: a type with `#[serde(deny_unknown_fields)]` rejects
//! unknown params, and `#[serde(try_from = "...")]` adds checks of its own.
//! A create request whose params fail that check is refused (422) and no job
//! exists. The schema is what `/v1/kinds` shows; the type is what is enforced.
//!
//! A kind's jobs run in this process, or, for an external kind, in a worker
//! that drives them over HTTP (see [`super::worker`]).

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::context::JobContext;
use super::worker::WorkerSettings;
use super::JobError;

/// What a job function returns: a result (any JSON) or an error.
pub type JobResult = Result<Value, JobError>;

/// A job's work with its params already checked, waiting for a context.
pub(crate) type PreparedJob = Box<dyn FnOnce(JobContext) -> BoxFuture<'static, JobResult> + Send>;

type Prepare = dyn Fn(Value) -> Result<PreparedJob, String> + Send + Sync;
type Check = dyn Fn(Value) -> Result<(), String> + Send + Sync;

/// Where a kind's jobs run.
#[derive(Clone)]
enum Runner {
    /// In this process: checks params and binds them to the job function.
    InProcess(Arc<Prepare>),
    /// In an external worker: params are only checked.
    External {
        check: Arc<Check>,
        settings: WorkerSettings,
    },
}

/// A job with its params checked, ready to be queued.
pub(crate) enum Prepared {
    InProcess(PreparedJob),
    External(WorkerSettings),
}

/// A kind of job the server can run.
#[derive(Clone)]
pub struct Kind {
    name: Arc<str>,
    description: String,
    params_schema: Value,
    example: Value,
    runner: Runner,
}

impl Kind {
    /// A kind named `name` whose jobs run `run(ctx, params)`.
    ///
    /// ```
    /// use jobcast::{JobContext, JobError, Kind};
    /// use serde::Deserialize;
    /// use serde_json::{json, Value};
    ///
    /// #[derive(Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct Resize { images: u64 }
    ///
    /// async fn resize(ctx: JobContext, params: Resize) -> Result<Value, JobError> {
    ///     ctx.declare_stages([("resize", 1.0)])?;
    ///     ctx.start_stage("resize", Some(params.images), Some("images"))?;
    ///     for done in 1..=params.images {
    ///         ctx.check_cancelled()?;
    ///         ctx.set_current(done);
    ///     }
    ///     Ok(json!({ "resized": params.images }))
    /// }
    ///
    /// let kind = Kind::new("resize", resize)
    ///     .description("Resizes images")
    ///     .params_schema(json!({"type": "object", "properties": {"images": {"type": "integer"}}}))
    ///     .example(json!({"images": 3}));
    /// assert_eq!(kind.name(), "resize");
    /// ```
    pub fn new<P, F, Fut>(name: &str, run: F) -> Self
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(JobContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        Self::with_check(
            name,
            |params| serde_json::from_value::<P>(params).map_err(|error| error.to_string()),
            run,
        )
    }

    /// A kind whose params are checked by `check`, which turns them into
    /// what `run` takes or says what is wrong with them.
    pub fn with_check<P, C, F, Fut>(name: &str, check: C, run: F) -> Self
    where
        P: Send + 'static,
        C: Fn(Value) -> Result<P, String> + Send + Sync + 'static,
        F: Fn(JobContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let run = Arc::new(run);
        let prepare = move |params: Value| -> Result<PreparedJob, String> {
            let params = check(params)?;
            let run = run.clone();
            Ok(Box::new(move |ctx: JobContext| -> BoxFuture<'static, JobResult> {
                Box::pin(run(ctx, params))
            }))
        };
        Self::with_runner(name, Runner::InProcess(Arc::new(prepare)))
    }

    /// A kind whose jobs an external worker runs and reports over HTTP;
    /// `check` checks their params.
    pub fn external<C>(name: &str, check: C, settings: WorkerSettings) -> Self
    where
        C: Fn(Value) -> Result<(), String> + Send + Sync + 'static,
    {
        Self::with_runner(
            name,
            Runner::External {
                check: Arc::new(check),
                settings,
            },
        )
    }

    fn with_runner(name: &str, runner: Runner) -> Self {
        Kind {
            name: Arc::from(name),
            description: String::new(),
            params_schema: serde_json::json!({ "type": "object" }),
            example: serde_json::json!({}),
            runner,
        }
    }

    /// A sentence for people choosing a kind.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The JSON Schema of the params, shown by `/v1/kinds`.
    pub fn params_schema(mut self, schema: Value) -> Self {
        self.params_schema = schema;
        self
    }

    /// Example params, shown by `/v1/kinds`.
    pub fn example(mut self, example: Value) -> Self {
        self.example = example;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn shared_name(&self) -> Arc<str> {
        self.name.clone()
    }

    /// Checks params and, for a kind that runs in this process, binds them
    /// to the kind's function.
    pub(crate) fn prepare(&self, params: Value) -> Result<Prepared, String> {
        match &self.runner {
            Runner::InProcess(prepare) => prepare(params).map(Prepared::InProcess),
            Runner::External { check, settings } => check(params).map(|()| Prepared::External(settings.clone())),
        }
    }

    /// Whether external workers run this kind's jobs.
    pub fn is_external(&self) -> bool {
        matches!(self.runner, Runner::External { .. })
    }

    /// The kind as `/v1/kinds` lists it.
    pub fn info(&self) -> KindInfo<'_> {
        KindInfo {
            name: &self.name,
            description: &self.description,
            params_schema: &self.params_schema,
            example: &self.example,
            external: self.is_external(),
        }
    }
}

/// One entry of `/v1/kinds`.
#[derive(Debug, Serialize)]
pub struct KindInfo<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub params_schema: &'a Value,
    pub example: &'a Value,
    /// Whether external workers run this kind's jobs: creating one answers
    /// a worker token.
    pub external: bool,
}
