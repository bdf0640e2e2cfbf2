//! Runs scenarios against fresh servers, and the whole suite of issue 6's
//! targets: every scenario against every target, interleaved (target by
//! target within each repetition, so that a busy moment of the machine hits
//! all of them alike), repeated; then the medians, jobcast's ratios to
//! both baselines, the targets met or missed, and the latency plot.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::creates::{self, Creates};
use crate::instances::{self, InstanceLost};
use crate::plot::{self, Series};
use crate::redis::RedisSettings;
use crate::report::{self, median_of, RunReport};
use crate::scenarios::{self, Churn, Common, Fanout, Idle, ManyJobs};
use crate::server::{Launch, Server, StoreAt, StoreKind, Target};

/// One scenario with its settings.
#[derive(Clone, Debug)]
pub enum Plan {
    /// With jobcast's `--publish-interval` in milliseconds, if set.
    Fanout(Fanout, Option<u64>),
    ManyJobs(ManyJobs),
    Idle(Idle),
    Churn(Churn),
    Creates(Creates),
    /// On Redis only.
    InstanceLost(InstanceLost),
}

impl Plan {
    /// The jobcast flags this scenario needs (limits above its load).
    fn jobcast_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut flag = |name: &str, value: String| {
            args.push(name.to_owned());
            args.push(value);
        };
        match self {
            Plan::Fanout(spec, interval) => {
                flag("--max-streams", (spec.subscribers + 1000).max(20_000).to_string());
                if let Some(ms) = interval {
                    flag(
                        "--publish-interval",
                        if *ms == 0 { "0".to_owned() } else { format!("{ms}ms") },
                    );
                }
            }
            Plan::ManyJobs(spec) => {
                flag("--max-running", spec.jobs.max(64).to_string());
                flag("--max-streams", (spec.jobs + 1000).max(20_000).to_string());
            }
            Plan::Idle(spec) => flag("--max-streams", (spec.streams + 1000).max(20_000).to_string()),
            Plan::Churn(spec) => {
                flag("--retention", format!("{}s", spec.retention_s));
                flag("--max-running", "256".to_owned());
            }
            // Its flags follow its lease and counts: set where it runs.
            Plan::InstanceLost(_) => {}
            Plan::Creates(spec) => {
                flag("--max-queued", spec.creates.max(10_000).to_string());
                if let Some(seconds) = spec.retention_s {
                    // Retention, not the count of finished jobs, decides
                    // when a job is forgotten.
                    flag("--retention", format!("{seconds}s"));
                    flag("--max-finished", "10000000".to_owned());
                }
            }
        }
        args
    }
}

/// Where and how servers are started.
#[derive(Clone, Debug)]
pub struct Environment {
    /// The directory holding the `jobcast`, `baseline-axum` and
    /// `baseline-broadcast` binaries, unless `server_bin` names one.
    pub bin_dir: PathBuf,
    pub server_bin: Option<PathBuf>,
    pub server_core: Option<usize>,
    pub source_ips: usize,
    pub server_log: Option<PathBuf>,
    /// Extra flags for jobcast, after the scenario's own.
    pub jobcast_args: Vec<String>,
    /// The credential every request and stream sends, if any.
    pub bearer: Option<String>,
    /// Where jobcast keeps its jobs.
    pub store: StoreKind,
    /// How the tool runs its Redis, with `--store redis`.
    pub redis: RedisSettings,
    pub common: Common,
    /// Every run's JSON line is appended here too.
    pub json_out: Option<PathBuf>,
}

/// Starts a fresh server, runs one scenario against it, stops it, and
/// prints the run's JSON line (stdout) and table row (stderr).
pub async fn run_one(env: &Environment, target: Target, plan: &Plan) -> RunReport {
    let mut jobcast_args = plan.jobcast_args();
    if env.common.http2_connections.is_some() {
        // The load generator spreads the streams evenly; let any number share one.
        jobcast_args.extend(["--http2-max-streams".to_owned(), u32::MAX.to_string()]);
    }
    jobcast_args.extend(env.jobcast_args.iter().cloned());
    let launch = Launch {
        target,
        binary: env
            .server_bin
            .clone()
            .unwrap_or_else(|| env.bin_dir.join(target.binary())),
        core: env.server_core,
        jobcast_args,
        store: match env.store {
            StoreKind::Memory => StoreAt::Memory,
            StoreKind::Sqlite => StoreAt::FreshSqlite,
            // Each instance is given its Redis's URL as it starts.
            StoreKind::Unset | StoreKind::Redis => StoreAt::Unset,
        },
        log: env.server_log.clone(),
        bearer: env.bearer.clone(),
    };
    let on_redis = env.store == StoreKind::Redis && target == Target::Jobcast;
    let mut report = match plan {
        Plan::Fanout(spec, _) if on_redis => {
            instances::streams_on_two(&launch, env.source_ips, spec, &env.common, &env.redis).await
        }
        Plan::ManyJobs(spec) if on_redis => {
            instances::streams_on_two(&launch, env.source_ips, spec, &env.common, &env.redis).await
        }
        Plan::InstanceLost(spec) if on_redis => {
            instances::instance_lost(&launch, env.source_ips, spec, &env.common, &env.redis).await
        }
        _ if on_redis || matches!(plan, Plan::InstanceLost(_)) => RunReport {
            target: target.name().to_owned(),
            failures: vec![
                "--store redis runs fanout, many-jobs and instance-lost, and instance-lost needs it".to_owned(),
            ],
            ..RunReport::default()
        },
        _ => run_single(&launch, env, target, plan).await,
    };
    if target == Target::Jobcast {
        report.store = Some(env.store.name().to_owned());
    }
    if let Plan::Fanout(_, Some(ms)) = plan {
        report.publish_interval_ms = Some(*ms);
    }
    if let Some(count) = env.common.http2_connections {
        report.http2_connections = Some(count);
        report.label.push_str(&format!("-h2c{count}"));
    }
    println!("{}", report.json_line());
    eprintln!("{}", report::table_row(&report));
    if let Some(path) = &env.json_out {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut file| writeln!(file, "{}", report.json_line()));
        if let Err(error) = appended {
            eprintln!("cannot append to {}: {error}", path.display());
        }
    }
    // Give the kernel a moment to tear down the last run's sockets.
    tokio::time::sleep(Duration::from_millis(500)).await;
    report
}

/// One scenario against one fresh server.
async fn run_single(launch: &Launch, env: &Environment, target: Target, plan: &Plan) -> RunReport {
    match Server::start(launch, env.source_ips).await {
        Ok(server) => {
            let report = match plan {
                Plan::Fanout(spec, _) => scenarios::streams_on_one_server(&server, target, spec, &env.common).await,
                Plan::ManyJobs(spec) => scenarios::streams_on_one_server(&server, target, spec, &env.common).await,
                Plan::Idle(spec) => scenarios::idle(&server, target, spec, &env.common).await,
                Plan::Churn(spec) => scenarios::churn(&server, target, spec, &env.common).await,
                Plan::Creates(spec) => creates::creates(&server, target, spec).await,
                Plan::InstanceLost(_) => unreachable!("run_one runs instance-lost on Redis only"),
            };
            server.stop().await;
            report
        }
        Err(error) => RunReport {
            target: target.name().to_owned(),
            failures: vec![format!("server {}: {error}", launch.binary.display())],
            ..RunReport::default()
        },
    }
}

/// The suite's shape.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    pub targets: Vec<Target>,
    pub repeats: usize,
    /// Multiplies every subscriber and job count (0.1 for a quick look).
    pub scale: f64,
    pub churn_seconds: u64,
    /// Subscriber counts of the latency sweep (fan-out, 200 steps at 10 ms),
    /// besides the 10,000 of the main fan-out scenario.
    pub sweep: Vec<usize>,
    pub sweep_repeats: usize,
    /// Scenario groups to run: fanout, cpu, jobs, idle, churn, sweep.
    pub only: Vec<String>,
    pub plot: Option<PathBuf>,
    pub font: PathBuf,
    pub summary: Option<PathBuf>,
}

fn scaled(count: usize, scale: f64) -> usize {
    ((count as f64 * scale).round() as usize).max(1)
}

/// Labels of the main scenarios, to find their runs again.
struct Labels {
    fanout: String,
    cpu: String,
    jobs: String,
    idle: String,
    churn: String,
}

/// Runs the suite; returns every run's report and the summary in Markdown.
pub async fn run_suite(env: &Environment, config: &SuiteConfig) -> (Vec<RunReport>, String) {
    let wants = |group: &str| config.only.is_empty() || config.only.iter().any(|only| only == group);
    let fanout_n = scaled(10_000, config.scale);
    let cpu_n = scaled(1_000, config.scale);
    let jobs_n = scaled(1_000, config.scale);
    let idle_n = scaled(10_000, config.scale);
    let main_plans: Vec<(&str, Plan)> = vec![
        (
            "fanout",
            Plan::Fanout(
                Fanout {
                    subscribers: fanout_n,
                    steps: 200,
                    step_ms: 10,
                    delay_ms: None,
                    min_interval_ms: None,
                },
                None,
            ),
        ),
        (
            "cpu",
            Plan::Fanout(
                Fanout {
                    subscribers: cpu_n,
                    steps: 2000,
                    step_ms: 0,
                    delay_ms: None,
                    min_interval_ms: None,
                },
                Some(0),
            ),
        ),
        (
            "jobs",
            Plan::ManyJobs(ManyJobs {
                jobs: jobs_n,
                steps: 50,
                step_ms: 20,
                delay_ms: None,
            }),
        ),
        (
            "idle",
            Plan::Idle(Idle {
                streams: idle_n,
                settle_ms: 1000,
            }),
        ),
        (
            "churn",
            Plan::Churn(Churn {
                seconds: config.churn_seconds,
                max_streams: 400,
                job_every_ms: 100,
                stream_every_ms: 5,
                retention_s: 2,
            }),
        ),
    ];
    let labels = Labels {
        fanout: format!("fanout-{fanout_n}x200@10ms"),
        cpu: format!("fanout-{cpu_n}x2000@0ms"),
        jobs: format!("jobs-{jobs_n}x50@20ms"),
        idle: format!("idle-{idle_n}"),
        churn: format!("churn-{}s", config.churn_seconds),
    };
    let mut runs = Vec::new();
    eprintln!("{}", report::table_header());
    for repeat in 0..config.repeats {
        eprintln!("-- repetition {} of {}", repeat + 1, config.repeats);
        for (group, plan) in &main_plans {
            if !wants(group) {
                continue;
            }
            for &target in &config.targets {
                if matches!(plan, Plan::Churn(_)) && target != Target::Jobcast {
                    continue;
                }
                runs.push(run_one(env, target, plan).await);
            }
        }
    }
    let sweep: Vec<usize> = config.sweep.iter().map(|&n| scaled(n, config.scale)).collect();
    if wants("sweep") {
        for repeat in 0..config.sweep_repeats {
            eprintln!(
                "-- latency sweep, repetition {} of {}",
                repeat + 1,
                config.sweep_repeats
            );
            for &n in &sweep {
                for &target in &config.targets {
                    let plan = Plan::Fanout(
                        Fanout {
                            subscribers: n,
                            steps: 200,
                            step_ms: 10,
                            delay_ms: None,
                            min_interval_ms: None,
                        },
                        None,
                    );
                    runs.push(run_one(env, target, &plan).await);
                }
            }
        }
    }
    let summary = summarise(&runs, config, &labels, fanout_n, &sweep);
    if let Some(path) = &config.plot {
        let series: Vec<Series> = config
            .targets
            .iter()
            .map(|&target| {
                let mut ns = sweep.clone();
                ns.push(fanout_n);
                ns.sort_unstable();
                ns.dedup();
                let points = ns
                    .iter()
                    .filter_map(|&n| {
                        let label = format!("fanout-{n}x200@10ms");
                        Some((
                            n as f64,
                            median_of(&runs, &label, target, |run| run.latency_p50_ms)?,
                            median_of(&runs, &label, target, |run| run.latency_p99_ms)?,
                        ))
                    })
                    .collect();
                Series {
                    name: target.name().to_owned(),
                    points,
                }
            })
            .filter(|series| !series.points.is_empty())
            .collect();
        let title = "Fan-out: one job, 200 steps at 10 ms, server on one core";
        match plot::latency_vs_subscribers(path, title, &series, &config.font) {
            Ok(()) => eprintln!("plot written to {}", path.display()),
            Err(error) => eprintln!("no plot: {error}"),
        }
    }
    if let Some(path) = &config.summary {
        if let Err(error) = std::fs::write(path, &summary) {
            eprintln!("cannot write {}: {error}", path.display());
        }
    }
    (runs, summary)
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "–".to_owned(), |value| format!("{value:.decimals$}"))
}

fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> Option<f64> {
    match (numerator, denominator) {
        (Some(numerator), Some(denominator)) if denominator > 0.0 => Some(numerator / denominator),
        _ => None,
    }
}

fn summarise(runs: &[RunReport], config: &SuiteConfig, labels: &Labels, fanout_n: usize, sweep: &[usize]) -> String {
    let mut out = String::new();
    let mut seen_labels: Vec<&str> = Vec::new();
    for run in runs {
        if !seen_labels.contains(&run.label.as_str()) {
            seen_labels.push(&run.label);
        }
    }
    let _ = writeln!(
        out,
        "Medians of {} runs (latency sweep: {} run(s) per point).\n",
        config.repeats, config.sweep_repeats
    );
    let _ = writeln!(
        out,
        "| scenario | target | runs | all terminal | dup/ooo | events | p50 ms | p95 ms | p99 ms | max ms | server CPU s | µs CPU/event | peak RSS MiB | bytes/idle stream | job s |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for label in &seen_labels {
        for &target in &config.targets {
            let these: Vec<&RunReport> = runs
                .iter()
                .filter(|run| run.label == *label && run.target == target.name())
                .collect();
            if these.is_empty() {
                continue;
            }
            let m = |metric: fn(&RunReport) -> Option<f64>| median_of(runs, label, target, metric);
            let all_terminal = these
                .iter()
                .filter(|run| run.terminal_received == run.terminal_expected && run.errors == 0)
                .count();
            let broken: u64 = these
                .iter()
                .map(|run| run.duplicates + run.out_of_order + run.after_terminal)
                .sum();
            let _ = writeln!(
                out,
                "| {label} | {target} | {} | {all_terminal}/{} | {broken} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                these.len(),
                these.len(),
                cell(m(|run| Some(run.events_delivered as f64)), 0),
                cell(m(|run| run.latency_p50_ms), 2),
                cell(m(|run| run.latency_p95_ms), 2),
                cell(m(|run| run.latency_p99_ms), 2),
                cell(m(|run| run.latency_max_ms), 1),
                cell(m(|run| Some(run.server_cpu_s)), 2),
                cell(m(|run| run.cpu_us_per_event), 2),
                cell(m(|run| Some(run.peak_rss_mib)), 1),
                cell(m(|run| run.bytes_per_idle_stream), 0),
                cell(m(|run| run.job_duration_s), 3),
            );
        }
    }
    // jobcast's ratios to each baseline, per scenario and metric.
    let _ = writeln!(
        out,
        "\njobcast ÷ baseline (medians; below 1 means jobcast uses less):\n"
    );
    let _ = writeln!(
        out,
        "| scenario | metric | ÷ baseline-broadcast | ÷ baseline-axum |\n|---|---|---|---|"
    );
    type Metric = fn(&RunReport) -> Option<f64>;
    let metrics: [(&str, Metric); 4] = [
        ("p99 latency", |run| run.latency_p99_ms),
        ("CPU per delivered event", |run| run.cpu_us_per_event),
        ("server CPU seconds", |run| Some(run.server_cpu_s)),
        ("bytes per idle stream", |run| run.bytes_per_idle_stream),
    ];
    for label in &seen_labels {
        if label.starts_with("churn") {
            continue;
        }
        for (name, metric) in metrics {
            let jobcast = median_of(runs, label, Target::Jobcast, metric);
            if jobcast.is_none() {
                continue;
            }
            let broadcast = ratio(jobcast, median_of(runs, label, Target::BaselineBroadcast, metric));
            let axum = ratio(jobcast, median_of(runs, label, Target::BaselineAxum, metric));
            if broadcast.is_none() && axum.is_none() {
                continue;
            }
            let _ = writeln!(out, "| {label} | {name} | {} | {} |", cell(broadcast, 2), cell(axum, 2));
        }
    }
    // The targets, judged on jobcast's medians (and on every run for the
    // invariants).
    let _ = writeln!(out, "\nTargets (jobcast):\n");
    let jobcast_runs = |label: &str| -> Vec<&RunReport> {
        runs.iter()
            .filter(|run| run.label == label && run.target == Target::Jobcast.name())
            .collect()
    };
    let verdict = |met: Option<bool>| match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not run",
    };
    let every_terminal = |label: &str| {
        let these = jobcast_runs(label);
        (!these.is_empty()).then(|| these.iter().all(|run| run.invariants_hold()))
    };
    let m = |label: &str, metric: fn(&RunReport) -> Option<f64>| median_of(runs, label, Target::Jobcast, metric);
    let duration = m(&labels.fanout, |run| run.job_duration_s);
    let p99 = m(&labels.fanout, |run| run.latency_p99_ms);
    let _ = writeln!(
        out,
        "- fan-out N={fanout_n}, 200 × 10 ms: every stream got its terminal event, no dup/ooo in any run: {}; job duration {} s (within 10 % of 2 s: {}); p99 {} ms (< 50 ms: {})",
        verdict(every_terminal(&labels.fanout)),
        cell(duration, 3),
        verdict(duration.map(|d| (d - 2.0).abs() <= 0.2)),
        cell(p99, 2),
        verdict(p99.map(|p| p < 50.0)),
    );
    let cpu = m(&labels.cpu, |run| run.cpu_us_per_event);
    let vs_broadcast = ratio(
        cpu,
        median_of(runs, &labels.cpu, Target::BaselineBroadcast, |run| run.cpu_us_per_event),
    );
    let vs_axum = ratio(
        cpu,
        median_of(runs, &labels.cpu, Target::BaselineAxum, |run| run.cpu_us_per_event),
    );
    let _ = writeln!(
        out,
        "- fan-out N={}, 2000 × 0 ms, --publish-interval 0: {} µs CPU per event; {}× the hand-rolled broadcaster (≤ 1.5: {}), {}× naive axum (≤ 0.5: {})",
        labels.cpu.trim_start_matches("fanout-").split('x').next().unwrap_or("?"),
        cell(cpu, 2),
        cell(vs_broadcast, 2),
        verdict(vs_broadcast.map(|r| r <= 1.5)),
        cell(vs_axum, 2),
        verdict(vs_axum.map(|r| r <= 0.5)),
    );
    let p99 = m(&labels.jobs, |run| run.latency_p99_ms);
    let _ = writeln!(
        out,
        "- many jobs ({}): p99 {} ms (< 5 ms: {}); every terminal: {}",
        labels.jobs,
        cell(p99, 2),
        verdict(p99.map(|p| p < 5.0)),
        verdict(every_terminal(&labels.jobs)),
    );
    let bytes = m(&labels.idle, |run| run.bytes_per_idle_stream);
    let _ = writeln!(
        out,
        "- idle ({}): {} bytes per open stream (≤ 12 KiB = 12288: {})",
        labels.idle,
        cell(bytes, 0),
        verdict(bytes.map(|b| b <= 12_288.0)),
    );
    let churn = jobcast_runs(&labels.churn);
    let churn_ok = (!churn.is_empty()).then(|| churn.iter().all(|run| run.failures.is_empty()));
    let _ = writeln!(
        out,
        "- churn ({}): tasks, streams and jobs back to their baseline and no memory growth in every run: {}{}",
        labels.churn,
        verdict(churn_ok),
        churn
            .iter()
            .map(|run| format!(
                "; tasks {}→{}, RSS at most {:.1} MiB in the first two thirds → {:.1} MiB after",
                run.tasks_before.unwrap_or(-1),
                run.tasks_after.unwrap_or(-1),
                run.rss_mid_mib.unwrap_or(0.0),
                run.rss_after_mib
            ))
            .collect::<String>(),
    );
    let _ = sweep;
    out
}

/// The directory of the running executable (where sibling binaries are).
pub fn own_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}
