//! `jobcast-bench`: the load generator. Starts the server under test itself
//! (pinned to one core with `taskset`), pins itself to another, raises its
//! open-file limit, runs one scenario or the whole suite, and prints one
//! JSON line per run on stdout and a readable table on stderr. Exits 1 when
//! a stream invariant broke (a missing terminal event, a duplicate or
//! out-of-order `seq`), so CI can run a small scenario as a smoke test.
//! With `--store redis` it starts Redis and two jobcast instances instead
//! of one server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use jobcast_bench::creates::Creates;
use jobcast_bench::instances::InstanceLost;
use jobcast_bench::plot::DEFAULT_FONT;
use jobcast_bench::procfs;
use jobcast_bench::redis::{Appendfsync, RedisSettings};
use jobcast_bench::report::{self, RunReport};
use jobcast_bench::scenarios::{Churn, Common, Fanout, Idle, ManyJobs};
use jobcast_bench::server::{StoreKind, Target};
use jobcast_bench::suite::{self, Environment, Plan, SuiteConfig};

/// Load generator for jobcast and its baselines.
#[derive(Parser)]
#[command(name = "jobcast-bench", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// The server under test (single-scenario commands).
    #[arg(long, value_enum, default_value = "jobcast", global = true)]
    target: Target,
    /// The server binary; default: the target's binary in --bin-dir.
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// Where the servers' binaries are; default: this binary's directory.
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Core the server is pinned to (-1: not pinned).
    #[arg(long, default_value_t = 0, global = true, allow_negative_numbers = true)]
    server_core: i64,
    /// Core the load generator pins itself to (-1: not pinned).
    #[arg(long, default_value_t = 1, global = true, allow_negative_numbers = true)]
    client_core: i64,
    /// Loopback source addresses to spread connections over (127.0.0.1, .2, ...).
    #[arg(long, default_value_t = 4, global = true)]
    source_ips: usize,
    /// Connections set up at once.
    #[arg(long, default_value_t = 256, global = true)]
    connect_concurrency: usize,
    /// Open the streams over this many HTTP/2 connections with prior
    /// knowledge (h2c; jobcast only) instead of one HTTP/1.1 connection each.
    #[arg(long, global = true)]
    http2_connections: Option<usize>,
    /// Append every run's JSON line to this file too.
    #[arg(long, global = true)]
    json_out: Option<PathBuf>,
    /// Append the servers' output to this file (default: discarded).
    #[arg(long, global = true)]
    server_log: Option<PathBuf>,
    /// Where each jobcast server keeps its jobs: `memory`; `sqlite`, a
    /// fresh database file in a temporary directory, removed when the
    /// server stops; `redis`, a redis-server of the tool's own (AOF,
    /// appendfsync everysec) with two jobcast instances on it, for fanout
    /// and many-jobs (the jobs on the first, the streams spread over both)
    /// and instance-lost; `unset`, no --store flag (a jobcast from before it).
    #[arg(long, value_enum, default_value = "memory", global = true)]
    store: StoreKind,
    /// With --store redis: seconds of reading Redis's counters with nothing
    /// published after a fan-out, to take the instances' background
    /// (leases, looks at the shared queue) out of the figures per state.
    #[arg(long, default_value_t = 5.0, global = true)]
    redis_quiet_s: f64,
    /// With --store redis: when Redis syncs its append-only file.
    #[arg(long, value_enum, default_value = "everysec", global = true)]
    redis_appendfsync: Appendfsync,
    /// An extra flag for jobcast (repeat for several), e.g. --jobcast-arg=--keep-alive=0.
    #[arg(long = "jobcast-arg", global = true, allow_hyphen_values = true)]
    jobcast_args: Vec<String>,
    /// Send this credential as `Authorization: Bearer` with every request
    /// and stream, for a jobcast with authentication on (given with
    /// --jobcast-arg=--auth-keys=FILE and its --ticket-secret).
    #[arg(long, global = true)]
    bearer: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// N streams on one job, all connected before its first step.
    Fanout {
        #[arg(long, short = 'n', default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 200)]
        steps: u64,
        #[arg(long, default_value_t = 10)]
        step_ms: u64,
        /// The job's wait before its first step (default: 1 s + 0.5 ms per stream).
        #[arg(long)]
        delay_ms: Option<u64>,
        /// jobcast's --publish-interval, in milliseconds.
        #[arg(long)]
        publish_interval_ms: Option<u64>,
        /// Ask each stream for `?min_interval_ms=` pacing.
        #[arg(long)]
        min_interval_ms: Option<u64>,
    },
    /// J jobs with one stream each.
    ManyJobs {
        #[arg(long, short = 'j', default_value_t = 1000)]
        jobs: usize,
        #[arg(long, default_value_t = 50)]
        steps: u64,
        #[arg(long, default_value_t = 20)]
        step_ms: u64,
        #[arg(long)]
        delay_ms: Option<u64>,
    },
    /// N open streams on a job that publishes nothing: memory per stream.
    Idle {
        #[arg(long, short = 'n', default_value_t = 10_000)]
        streams: usize,
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
    },
    /// Streams and jobs coming and going; then everything must come back down.
    Churn {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 400)]
        max_streams: usize,
        #[arg(long, default_value_t = 100)]
        job_every_ms: u64,
        #[arg(long, default_value_t = 5)]
        stream_every_ms: u64,
        /// jobcast's --retention, in seconds.
        #[arg(long, default_value_t = 2)]
        retention_s: u64,
    },
    /// N creates of one-step demo jobs from C clients: creates/s and POST
    /// latency; with --retention-s and a long run, the churn of jobs
    /// (database file and memory sampled over time).
    Creates {
        #[arg(long, short = 'n', default_value_t = 20_000)]
        creates: usize,
        #[arg(long, short = 'c', default_value_t = 32)]
        concurrency: usize,
        /// Creates per second over all clients (default: as fast as answered).
        #[arg(long)]
        rate: Option<f64>,
        /// jobcast's --retention, in seconds (and no cap on finished jobs).
        #[arg(long)]
        retention_s: Option<u64>,
        /// How often to sample memory and the database file.
        #[arg(long, default_value_t = 1000)]
        sample_ms: u64,
        /// Go on sampling this long after the last create.
        #[arg(long, default_value_t = 0)]
        linger_s: u64,
    },
    /// With --store redis: JOBS jobs on instance A, WATCHERS streams on each
    /// on instance B; A is killed (kill -9), and every stream must end with
    /// its job failed with instance_lost, within 1.5 × the lease: the time
    /// from the kill to each stream's terminal event.
    InstanceLost {
        #[arg(long, short = 'j', default_value_t = 100)]
        jobs: usize,
        #[arg(long, short = 'w', default_value_t = 10)]
        watchers: usize,
        /// The instances' --lease, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        lease_ms: u64,
        /// The jobs' step period: they publish progress until A dies.
        #[arg(long, default_value_t = 100)]
        step_ms: u64,
        /// How long the streams follow the jobs before the kill (default:
        /// 1 s plus a random part of the lease, so that runs kill A at any
        /// point of its lease's renewal period).
        #[arg(long)]
        before_kill_ms: Option<u64>,
    },
    /// Every target scenario against every target, repeated; medians,
    /// ratios, targets and the latency plot.
    Suite(SuiteArgs),
}

#[derive(Args)]
struct SuiteArgs {
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Multiplies subscriber and job counts (e.g. 0.1 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    #[arg(long, default_value_t = 60)]
    churn_seconds: u64,
    /// Subscriber counts of the latency sweep, besides 10,000.
    #[arg(long, value_delimiter = ',', default_value = "100,300,1000,3000")]
    sweep: Vec<usize>,
    #[arg(long, default_value_t = 1)]
    sweep_repeats: usize,
    /// Only these groups: fanout, cpu, jobs, idle, churn, sweep.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Targets to compare.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "jobcast,baseline-broadcast,baseline-axum"
    )]
    targets: Vec<Target>,
    /// Where to draw the latency plot (PNG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// A TrueType font for the plot.
    #[arg(long, default_value = DEFAULT_FONT)]
    font: PathBuf,
    /// Where to write the Markdown summary.
    #[arg(long)]
    summary: Option<PathBuf>,
}

fn core(value: i64) -> Option<usize> {
    usize::try_from(value).ok()
}

/// Whether a run kept every stream invariant and made what it set out to:
/// streams opened (churn may open none), every create answered 202.
fn succeeded(run: &RunReport) -> bool {
    match run.scenario.as_str() {
        "creates" => run.failures.is_empty(),
        "churn" => run.invariants_hold(),
        _ => run.invariants_hold() && run.streams > 0,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = &cli.global;
    if let Some(client_core) = core(global.client_core) {
        if let Err(error) = procfs::pin_to_core(client_core) {
            eprintln!("cannot pin the load generator to core {client_core}: {error}");
        }
    }
    match procfs::raise_open_files() {
        Ok(limit) if limit < 25_000 => {
            eprintln!("note: open-file limit {limit}; streams beyond it will fail");
        }
        Ok(_) => {}
        Err(error) => eprintln!("cannot raise the open-file limit: {error}"),
    }
    let env = Environment {
        bin_dir: global.bin_dir.clone().unwrap_or_else(suite::own_dir),
        server_bin: global.server_bin.clone(),
        server_core: core(global.server_core),
        source_ips: global.source_ips,
        server_log: global.server_log.clone(),
        jobcast_args: global.jobcast_args.clone(),
        bearer: global.bearer.clone(),
        store: global.store,
        redis: RedisSettings {
            appendfsync: global.redis_appendfsync,
            quiet: Duration::from_secs_f64(global.redis_quiet_s.max(0.0)),
        },
        common: Common {
            connect_concurrency: global.connect_concurrency,
            http2_connections: global.http2_connections,
            ..Common::default()
        },
        json_out: global.json_out.clone(),
    };
    // One thread: the load generator's core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime can be built");
    let local = tokio::task::LocalSet::new();
    let runs: Vec<RunReport> = local.block_on(&runtime, async {
        let single = |plan: Plan| {
            let env = env.clone();
            let target = global.target;
            async move {
                eprintln!("{}", report::table_header());
                vec![suite::run_one(&env, target, &plan).await]
            }
        };
        match &cli.command {
            Command::Fanout {
                subscribers,
                steps,
                step_ms,
                delay_ms,
                publish_interval_ms,
                min_interval_ms,
            } => {
                single(Plan::Fanout(
                    Fanout {
                        subscribers: *subscribers,
                        steps: *steps,
                        step_ms: *step_ms,
                        delay_ms: *delay_ms,
                        min_interval_ms: *min_interval_ms,
                    },
                    *publish_interval_ms,
                ))
                .await
            }
            Command::ManyJobs {
                jobs,
                steps,
                step_ms,
                delay_ms,
            } => {
                single(Plan::ManyJobs(ManyJobs {
                    jobs: *jobs,
                    steps: *steps,
                    step_ms: *step_ms,
                    delay_ms: *delay_ms,
                }))
                .await
            }
            Command::Idle { streams, settle_ms } => {
                single(Plan::Idle(Idle {
                    streams: *streams,
                    settle_ms: *settle_ms,
                }))
                .await
            }
            Command::Churn {
                seconds,
                max_streams,
                job_every_ms,
                stream_every_ms,
                retention_s,
            } => {
                single(Plan::Churn(Churn {
                    seconds: *seconds,
                    max_streams: *max_streams,
                    job_every_ms: *job_every_ms,
                    stream_every_ms: *stream_every_ms,
                    retention_s: *retention_s,
                }))
                .await
            }
            Command::Creates {
                creates,
                concurrency,
                rate,
                retention_s,
                sample_ms,
                linger_s,
            } => {
                single(Plan::Creates(Creates {
                    creates: *creates,
                    concurrency: *concurrency,
                    rate: *rate,
                    retention_s: *retention_s,
                    sample_ms: *sample_ms,
                    linger_s: *linger_s,
                }))
                .await
            }
            Command::InstanceLost {
                jobs,
                watchers,
                lease_ms,
                step_ms,
                before_kill_ms,
            } => {
                single(Plan::InstanceLost(InstanceLost {
                    jobs: *jobs,
                    watchers: *watchers,
                    lease_ms: *lease_ms,
                    step_ms: *step_ms,
                    before_kill_ms: *before_kill_ms,
                }))
                .await
            }
            Command::Suite(args) => {
                let config = SuiteConfig {
                    targets: args.targets.clone(),
                    repeats: args.repeats,
                    scale: args.scale,
                    churn_seconds: args.churn_seconds,
                    sweep: args.sweep.clone(),
                    sweep_repeats: args.sweep_repeats,
                    only: args.only.clone(),
                    plot: args.plot.clone(),
                    font: args.font.clone(),
                    summary: args.summary.clone(),
                };
                let (runs, summary) = suite::run_suite(&env, &config).await;
                eprintln!("\n{summary}");
                runs
            }
        }
    });
    if runs.iter().all(succeeded) {
        ExitCode::SUCCESS
    } else {
        eprintln!("FAILED: a stream invariant broke or a run could not be made");
        ExitCode::FAILURE
    }
}
