//! Several jobcast instances on one Redis (`--store redis`, issue 13): the
//! tool starts a `redis-server` of its own ([`crate::redis`]) and jobcast
//! instances on it, all pinned to the servers' core, so that the whole
//! server side has the one core a single process has in the other runs.
//!
//! - *fan-out* and *many jobs*: the jobs run on instance A, their streams
//!   are spread evenly over A and B, with the scenarios' checks and latency
//!   ([`crate::scenarios`]); besides, Redis's commands and bytes per stored
//!   state, what connecting the streams cost Redis, and who is connected
//!   and subscribed once they are;
//! - *instance lost*: `jobs` jobs run on A, each watched by `watchers`
//!   streams on B; A is killed (`kill -9`), and each stream must end with
//!   its job `failed` with `instance_lost`: the time from the kill is the
//!   run's figure, against the contract's 1.5 × the lease.
//!
//! A job of an in-process kind waits in Redis for whichever instance takes
//! it, so to run the jobs on A the tool creates them while A is the only
//! instance, waits until A runs them, and only then starts B.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{self, Endpoint};
use crate::procfs;
use crate::redis::{PerState, RedisServer, RedisSettings};
use crate::report::{RunReport, Spread};
use crate::scenarios::{
    create_job, end_deadline, follow, streams_end, streams_ready, Common, Follow, Run, ServerProcess, StreamsScenario,
};
use crate::server::{Launch, Server, StoreAt, Target};

/// How long a job created on A may take to be running there.
const TAKEN_WITHIN: Duration = Duration::from_secs(10);
/// Extra wait before a fan-out job's first step, beyond what one server
/// needs: B's start, and the streams' connecting to two servers and Redis
/// on one core.
const SECOND_INSTANCE_START: Duration = Duration::from_secs(5);

/// The servers of a run: Redis, and the instances started so far.
struct Servers {
    redis: RedisServer,
    instances: Vec<Server>,
}

impl Servers {
    async fn start_redis(launch: &Launch, report: &mut RunReport, redis: &RedisSettings) -> Result<Servers, String> {
        report.redis_appendfsync = Some(redis.appendfsync);
        let redis = RedisServer::start(launch.core, launch.log.as_deref(), redis.appendfsync)
            .await
            .map_err(|error| format!("redis-server: {error}"))?;
        Ok(Servers {
            redis,
            instances: Vec::new(),
        })
    }

    /// Starts one more jobcast instance on this Redis.
    async fn start_instance(&mut self, launch: &Launch, source_ips: usize) -> Result<&Server, String> {
        let launch = Launch {
            store: StoreAt::Redis(self.redis.url()),
            ..launch.clone()
        };
        let server = Server::start(&launch, source_ips)
            .await
            .map_err(|error| format!("server {}: {error}", launch.binary.display()))?;
        self.instances.push(server);
        Ok(self.instances.last().expect("just pushed"))
    }

    /// Every process, named: the instances `A`, `B`, … and `redis`.
    fn processes(&self) -> Vec<ServerProcess> {
        self.instances
            .iter()
            .zip('A'..)
            .map(|(server, name)| ServerProcess {
                name: name.to_string(),
                pid: server.pid,
            })
            .chain([ServerProcess {
                name: "redis".to_owned(),
                pid: self.redis.pid,
            }])
            .collect()
    }

    async fn stop(self) {
        for server in self.instances {
            server.stop().await;
        }
        self.redis.stop().await;
    }
}

/// Waits until job `id` is running (the instance at `endpoint` took it).
async fn wait_running(endpoint: &Endpoint, id: &str) -> Result<(), String> {
    let deadline = Instant::now() + TAKEN_WITHIN;
    loop {
        let response = client::request(endpoint, "GET", &format!("/v1/jobs/{id}"), None)
            .await
            .map_err(|error| format!("get {id}: {error}"))?;
        if client::json_str(&response.body, "status") == Some(b"running") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "job {id} was not running within {TAKEN_WITHIN:?}: {}",
                response.text()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Fan-out or many jobs on two instances: the jobs on A, the streams
/// spread over A and B. Redis's counters are read before the streams
/// connect, once they all have, when they have all ended, and after a
/// quiet while with nothing published (the background taken out of the
/// figures per state).
pub(crate) async fn streams_on_two(
    launch: &Launch,
    source_ips: usize,
    spec: &impl StreamsScenario,
    common: &Common,
    redis: &RedisSettings,
) -> RunReport {
    let started = Instant::now();
    let mut report = spec.report(Target::Jobcast);
    if common.http2_connections.is_some() {
        report
            .failures
            .push("--store redis spreads HTTP/1.1 streams over two instances: no --http2-connections".to_owned());
        return report;
    }
    let mut servers = match Servers::start_redis(launch, &mut report, redis).await {
        Ok(servers) => servers,
        Err(error) => {
            report.failures.push(error);
            return report;
        }
    };
    let on_two = OnTwo {
        launch,
        source_ips,
        common,
        quiet: redis.quiet,
    };
    if let Err(error) = on_two.run(&mut servers, &mut report, spec, started).await {
        report.failures.push(error);
    }
    servers.stop().await;
    report
}

/// How a run on two instances starts them and reads Redis.
struct OnTwo<'a> {
    launch: &'a Launch,
    source_ips: usize,
    common: &'a Common,
    quiet: Duration,
}

impl OnTwo<'_> {
    async fn run(
        &self,
        servers: &mut Servers,
        report: &mut RunReport,
        spec: &impl StreamsScenario,
        started: Instant,
    ) -> Result<(), String> {
        let a = servers
            .start_instance(self.launch, self.source_ips)
            .await?
            .endpoint
            .clone();
        let created = spec.create(&a, SECOND_INSTANCE_START).await?;
        for id in &created.ids {
            wait_running(&a, id).await?;
        }
        let b = servers
            .start_instance(self.launch, self.source_ips)
            .await?
            .endpoint
            .clone();
        let counter = |error: std::io::Error| format!("Redis's counters: {error}");
        let before_connecting = servers.redis.counters().await.map_err(counter)?;
        let run = Run::spread(vec![a.clone(), b], self.common.clone());
        let handles = spec.watch(&run, &created.ids);
        let ready_at = streams_ready(report, &run, handles.len(), created.delay_ends).await;
        let ready = servers.redis.counters().await.map_err(counter)?;
        report.redis_while_connecting = Some(ready.since(&before_connecting));
        report.redis_connections = Some(servers.redis.connections().await.map_err(counter)?);
        let deadline = end_deadline(report, created.delay_ends);
        let seen = streams_end(report, &servers.processes(), &run, handles, deadline, ready_at).await;
        let ended = servers.redis.counters().await.map_err(counter)?;
        tokio::time::sleep(self.quiet).await;
        let after_quiet = servers.redis.counters().await.map_err(counter)?;
        report.redis_per_state = Some(PerState::of(ended.since(&ready), after_quiet.since(&ended)));
        let last = created
            .ids
            .last()
            .map(|id| format!("/v1/jobs/{id}"))
            .unwrap_or_default();
        if let Ok(job) = client::request(&a, "GET", &last, None).await {
            report.state_bytes = Some(job.body.len() as u64);
        }
        spec.finish(report, &run, &seen, started);
        Ok(())
    }
}

/// Instance lost: `jobs` jobs on A, `watchers` streams each on B, A killed.
#[derive(Clone, Debug)]
pub struct InstanceLost {
    pub jobs: usize,
    pub watchers: usize,
    /// The instances' `--lease`.
    pub lease_ms: u64,
    /// The jobs' step period: they publish progress until A dies.
    pub step_ms: u64,
    /// How long the streams follow the jobs before the kill; none: 1 s
    /// plus a random part of the lease, so that runs kill A at any point
    /// of its renewal period and of B's watch on it.
    pub before_kill_ms: Option<u64>,
}

pub async fn instance_lost(
    launch: &Launch,
    source_ips: usize,
    spec: &InstanceLost,
    common: &Common,
    redis: &RedisSettings,
) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport {
        scenario: "instance-lost".to_owned(),
        label: format!("lost-{}x{}-lease{}ms", spec.jobs, spec.watchers, spec.lease_ms),
        target: Target::Jobcast.name().to_owned(),
        subscribers: spec.jobs * spec.watchers,
        jobs: spec.jobs,
        step_ms: spec.step_ms,
        lease_ms: Some(spec.lease_ms),
        load_average: procfs::load_average(),
        ..RunReport::default()
    };
    let mut launch = launch.clone();
    launch.jobcast_args.extend([
        "--lease".to_owned(),
        format!("{}ms", spec.lease_ms),
        "--max-running".to_owned(),
        spec.jobs.max(64).to_string(),
        "--max-streams".to_owned(),
        (spec.jobs * spec.watchers + 1000).max(20_000).to_string(),
    ]);
    let mut servers = match Servers::start_redis(&launch, &mut report, redis).await {
        Ok(servers) => servers,
        Err(error) => {
            report.failures.push(error);
            return report;
        }
    };
    if let Err(error) = lose_instance(&mut servers, &mut report, &launch, source_ips, spec, common).await {
        report.failures.push(error);
    }
    servers.stop().await;
    report.wall_s = started.elapsed().as_secs_f64();
    report
}

async fn lose_instance(
    servers: &mut Servers,
    report: &mut RunReport,
    launch: &Launch,
    source_ips: usize,
    spec: &InstanceLost,
    common: &Common,
) -> Result<(), String> {
    let a = servers.start_instance(launch, source_ips).await?.endpoint.clone();
    let params = json!({
        "stages": [{ "name": "work", "weight": 1.0, "steps": 1_000_000 }],
        "step_ms": spec.step_ms,
    });
    let mut ids = Vec::with_capacity(spec.jobs);
    for _ in 0..spec.jobs {
        ids.push(create_job(&a, params.clone()).await?);
    }
    for id in &ids {
        wait_running(&a, id).await?;
    }
    let b = servers.start_instance(launch, source_ips).await?.endpoint.clone();
    let run = Run::spread(vec![b], common.clone());
    let handles: Vec<_> = ids
        .iter()
        .flat_map(|id| std::iter::repeat_n(id, spec.watchers))
        .map(|id| {
            let how = Follow::job_to_end(format!("/v1/jobs/{id}/events"));
            tokio::task::spawn_local(follow(run.clone(), how))
        })
        .collect();
    let streams = handles.len();
    let ready_at = streams_ready(report, &run, streams, Instant::now() + Duration::from_secs(30)).await;
    let before_kill_ms = spec.before_kill_ms.unwrap_or_else(|| {
        // Enough randomness for a phase: the clock's microseconds.
        1000 + client::now_micros().unsigned_abs() % spec.lease_ms.max(1)
    });
    tokio::time::sleep(Duration::from_millis(before_kill_ms)).await;
    let killed_at = client::now_micros();
    let a = servers.instances.first_mut().expect("A started first");
    a.kill();
    let lease = Duration::from_millis(spec.lease_ms);
    let deadline = Instant::now() + lease * 3 + Duration::from_secs(30);
    // A is gone: the server side is B and Redis.
    let seen = streams_end(report, &servers.processes()[1..], &run, handles, deadline, ready_at).await;
    let since_kill = |at: i64| (at - killed_at) as f64 / 1000.0;
    let lost: Vec<_> = seen
        .iter()
        .filter(|seen| seen.terminal_code.as_deref() == Some("instance_lost"))
        .collect();
    report.lost_after_ms = Spread::of(lost.iter().filter_map(|seen| seen.terminal_received_at.map(since_kill)));
    report.lost_published_after_ms = Spread::of(lost.iter().filter_map(|seen| seen.terminal_at.map(since_kill)));
    if lost.len() != streams {
        report.failures.push(format!(
            "{} of {streams} streams did not end with instance_lost",
            streams - lost.len()
        ));
    }
    let bound_ms = lease.as_secs_f64() * 1.5 * 1000.0;
    if let Some(late) = report.lost_after_ms.filter(|spread| spread.max > bound_ms) {
        report.failures.push(format!(
            "instance_lost reached a stream {:.0} ms after the kill: beyond 1.5 × the lease ({bound_ms:.0} ms)",
            late.max
        ));
    }
    report.check_invariants();
    Ok(())
}
