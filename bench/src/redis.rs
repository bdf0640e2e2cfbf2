//! A `redis-server` of the tool's own for `--store redis`, and what the
//! tool reads of it: the commands it ran and the bytes it received and sent
//! (`INFO stats` and `INFO commandstats`), the server-wide event id jobcast
//! keeps (`jc:v1:gid`, one per stored state), and who is connected and
//! subscribed.
//!
//! Redis runs on a free port in a fresh temporary directory (removed when it
//! stops), pinned to the servers' core, with the append-only file on and
//! RDB snapshots off. Its `appendfsync` is `everysec` unless asked: what a
//! deployment that must survive a Redis restart runs, where a crash of the
//! machine may lose the last second; `always` loses nothing acknowledged
//! but makes every write wait for the disk, which would measure the disk
//! rather than jobcast (the README's "Running several instances" weighs
//! them).
//!
//! Counters are taken net of the tool's own traffic to Redis (see
//! [`crate::resp`]), so that they are the jobcast instances' alone.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::resp::{Connection, Reply};
use crate::server::{free_port, Process};

/// The key holding jobcast's server-wide event id: one more per stored state
/// (and per removal), so its growth counts the states written.
const GID_KEY: &str = "jc:v1:gid";

/// When Redis syncs its append-only file to the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Appendfsync {
    /// After every write, before answering it.
    Always,
    /// Once a second.
    #[default]
    Everysec,
    /// When the system flushes.
    No,
}

impl Appendfsync {
    pub fn name(self) -> &'static str {
        match self {
            Appendfsync::Always => "always",
            Appendfsync::Everysec => "everysec",
            Appendfsync::No => "no",
        }
    }
}

/// How the tool runs and reads its Redis.
#[derive(Clone, Copy, Debug)]
pub struct RedisSettings {
    pub appendfsync: Appendfsync,
    /// How long the counters are read with nothing published after a run,
    /// to take the instances' background out of its figures per state.
    pub quiet: Duration,
}

pub struct RedisServer {
    process: Process,
    pub pid: u32,
    addr: SocketAddr,
    dir: PathBuf,
    /// The tool's one connection, whose own traffic is counted.
    connection: Connection,
}

impl RedisServer {
    /// Starts `redis-server` pinned to `core`, its log appended to `log`,
    /// and waits until it answers.
    pub async fn start(core: Option<usize>, log: Option<&Path>, appendfsync: Appendfsync) -> io::Result<RedisServer> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join(format!("jobcast-bench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--dir",
            &dir.display().to_string(),
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync.name(),
            "--save",
            "",
            "--daemonize",
            "no",
        ]
        .iter()
        .map(|arg| (*arg).to_owned())
        .collect();
        let removing = |error: io::Error| {
            remove_dir(&dir);
            error
        };
        let mut process = Process::spawn(Path::new("redis-server"), &args, core, log).map_err(removing)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let connection = loop {
            if let Some(status) = process.exited().map_err(removing)? {
                remove_dir(&dir);
                return Err(io::Error::other(format!("redis-server exited at start: {status}")));
            }
            if let Ok(mut connection) = Connection::open(addr).await {
                if connection.command(&["PING"]).await.is_ok() {
                    break connection;
                }
            }
            if Instant::now() > deadline {
                process.kill();
                remove_dir(&dir);
                return Err(io::Error::other("redis-server did not answer PING"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(RedisServer {
            pid: process.pid,
            process,
            addr,
            dir,
            connection,
        })
    }

    /// The URL jobcast's `--store` takes.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Redis's counters now, net of the tool's own traffic.
    pub async fn counters(&mut self) -> io::Result<Counters> {
        let before = self.connection.traffic().clone();
        let info = self.connection.command(&["INFO", "stats", "commandstats"]).await?;
        let info = info.text().unwrap_or_default();
        let at = Instant::now();
        // Redis counts a request's bytes when it reads them, before running
        // it, and a reply's when it writes them: INFO's own request is in
        // the input it reports, its reply not yet in the output. It counts
        // a command once it has run: INFO is not in its own commandstats.
        let own = self.connection.traffic();
        let field = |name: &str| info_field(&info, name).unwrap_or(0);
        let input_bytes = field("total_net_input_bytes").saturating_sub(own.bytes_sent);
        let output_bytes = field("total_net_output_bytes").saturating_sub(before.bytes_received);
        let mut commands = command_calls(&info);
        for (name, calls) in &before.commands {
            if let Some(total) = commands.get_mut(name) {
                *total = total.saturating_sub(*calls);
            }
        }
        commands.retain(|_, calls| *calls > 0);
        let gid = match self.connection.command(&["GET", GID_KEY]).await? {
            Reply::Bulk(Some(bytes)) => String::from_utf8_lossy(&bytes).parse().unwrap_or(0),
            _ => 0,
        };
        Ok(Counters {
            at,
            commands,
            input_bytes,
            output_bytes,
            gid,
        })
    }

    /// Who is connected and subscribed now, besides the tool.
    pub async fn connections(&mut self) -> io::Result<Connections> {
        let info = self.connection.command(&["INFO", "clients"]).await?;
        let info = info.text().unwrap_or_default();
        let channels = match self.connection.command(&["PUBSUB", "CHANNELS"]).await? {
            Reply::Array(Some(channels)) => channels.iter().filter_map(Reply::text).collect(),
            _ => Vec::new(),
        };
        let patterns = match self.connection.command(&["PUBSUB", "NUMPAT"]).await? {
            Reply::Integer(count) => count.max(0) as u64,
            _ => 0,
        };
        Ok(Connections {
            clients: info_field(&info, "connected_clients").unwrap_or(0).saturating_sub(1),
            blocked_clients: info_field(&info, "blocked_clients").unwrap_or(0),
            channels,
            patterns,
        })
    }

    /// Stops Redis and removes its directory.
    pub async fn stop(mut self) {
        self.process.stop().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Stopped before its files go.
        if let Ok(None) = self.process.exited() {
            self.process.kill();
        }
        remove_dir(&self.dir);
    }
}

fn remove_dir(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir) {
        eprintln!("cannot remove {}: {error}", dir.display());
    }
}

/// A numeric `name:value` line of an `INFO` text.
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// `cmdstat_NAME:calls=N,...` lines: calls by command name.
fn command_calls(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|stat| stat.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.trim().parse().ok()?))
        })
        .collect()
}

/// Redis's counters at one moment, net of the tool's own traffic.
#[derive(Clone, Debug)]
pub struct Counters {
    at: Instant,
    /// Calls by command, those run by scripts included.
    commands: BTreeMap<String, u64>,
    input_bytes: u64,
    output_bytes: u64,
    /// jobcast's server-wide event id.
    gid: u64,
}

impl Counters {
    /// What happened from `earlier` to these.
    pub fn since(&self, earlier: &Counters) -> Traffic {
        let commands = self
            .commands
            .iter()
            .map(|(name, calls)| {
                let before = earlier.commands.get(name).copied().unwrap_or(0);
                (name.clone(), calls.saturating_sub(before))
            })
            .filter(|(_, calls)| *calls > 0)
            .collect();
        Traffic {
            seconds: self.at.duration_since(earlier.at).as_secs_f64(),
            commands,
            input_bytes: self.input_bytes.saturating_sub(earlier.input_bytes),
            output_bytes: self.output_bytes.saturating_sub(earlier.output_bytes),
            states: self.gid.saturating_sub(earlier.gid),
        }
    }
}

/// What the instances did to Redis over a while.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Traffic {
    pub seconds: f64,
    /// Calls by command, those run by scripts included.
    pub commands: BTreeMap<String, u64>,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// States stored (and jobs removed): the growth of jobcast's event id.
    pub states: u64,
}

/// Who is connected to Redis at one moment, besides the tool.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Connections {
    pub clients: u64,
    /// Clients waiting in a blocking command (the instances' `XREAD BLOCK`).
    pub blocked_clients: u64,
    /// Pub/sub channels with at least one subscriber.
    pub channels: Vec<String>,
    pub patterns: u64,
}

/// Redis's work per stored state over a run: what the instances did while
/// the job ran, less what they do anyway when nothing is published (lease
/// renewals, the watch on the other leases, looks at the shared queue),
/// measured right after at the same rate.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerState {
    /// States stored while the job ran.
    pub states: u64,
    /// Calls per stored state by command (scripts' calls included), less
    /// the background.
    pub commands: BTreeMap<String, f64>,
    /// Every command per stored state, scripts' calls included.
    pub all_commands: f64,
    /// Commands the instances sent (round trips): every command but those
    /// run inside a script, per stored state.
    pub sent_commands: f64,
    pub input_bytes: f64,
    pub output_bytes: f64,
    /// The whole run, and the quiet time after it.
    pub run: Traffic,
    pub background: Traffic,
}

/// Commands only a client sends, never a script: what the instances send
/// (and each is a round trip, or part of a pipelined one); the rest of
/// `INFO commandstats` are calls made inside jobcast's scripts, or by both
/// (`SADD`, `EXISTS`, `SET`: lease renewals and the watch on leases, whose
/// background rate is subtracted).
const SENT_ONLY: [&str; 10] = [
    "evalsha",
    "eval",
    "xread",
    "get",
    "smembers",
    "publish",
    "subscribe",
    "ping",
    "client|setinfo",
    "hello",
];

impl PerState {
    pub fn of(run: Traffic, background: Traffic) -> PerState {
        let states = run.states.max(1) as f64;
        let scale = if background.seconds > 0.0 {
            run.seconds / background.seconds
        } else {
            0.0
        };
        let net = |during: u64, quiet: u64| (during as f64 - quiet as f64 * scale) / states;
        let commands: BTreeMap<String, f64> = run
            .commands
            .iter()
            .map(|(name, calls)| {
                let quiet = background.commands.get(name).copied().unwrap_or(0);
                (name.clone(), net(*calls, quiet))
            })
            .collect();
        PerState {
            states: run.states,
            all_commands: commands.values().sum(),
            sent_commands: commands
                .iter()
                .filter(|(name, _)| SENT_ONLY.contains(&name.as_str()))
                .map(|(_, calls)| calls)
                .sum(),
            commands,
            input_bytes: net(run.input_bytes, background.input_bytes),
            output_bytes: net(run.output_bytes, background.output_bytes),
            run,
            background,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_calls_are_read_from_commandstats() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=40,usec_per_call=3.33,rejected_calls=0,failed_calls=0\r\ncmdstat_client|setinfo:calls=2,usec=1\r\n";
        let calls = command_calls(info);
        assert_eq!(calls.get("evalsha"), Some(&12));
        assert_eq!(calls.get("client|setinfo"), Some(&2));
        assert_eq!(
            info_field("total_net_input_bytes:1234\r\n", "total_net_input_bytes"),
            Some(1234)
        );
    }

    #[test]
    fn per_state_takes_the_background_out_at_the_runs_length() {
        let run = Traffic {
            seconds: 2.0,
            commands: BTreeMap::from([("evalsha".to_owned(), 104), ("xadd".to_owned(), 100)]),
            input_bytes: 100_400,
            output_bytes: 200_000,
            states: 100,
        };
        let background = Traffic {
            seconds: 4.0,
            commands: BTreeMap::from([("evalsha".to_owned(), 8)]),
            input_bytes: 800,
            output_bytes: 0,
            states: 0,
        };
        let per_state = PerState::of(run, background);
        assert_eq!(per_state.commands["evalsha"], 1.0);
        assert_eq!(per_state.all_commands, 2.0);
        assert_eq!(per_state.sent_commands, 1.0);
        assert_eq!(per_state.input_bytes, 1000.0);
        assert_eq!(per_state.output_bytes, 2000.0);
    }
}
