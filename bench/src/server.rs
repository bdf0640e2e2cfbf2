//! Starts the server under test as a child process pinned to one core
//! (`taskset -c CORE`), waits until it answers, and stops it. Knows each
//! target's flags: jobcast takes its own settings; the baselines take only
//! `--listen`. Each jobcast server keeps its jobs where `--store` says: in
//! memory, in an SQLite file of its own in a fresh temporary directory
//! (removed, with its `-wal` and `-shm`, when the server stops), or in a
//! Redis server it shares with other instances ([`crate::redis`] starts
//! that one).

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::client::{self, Endpoint};

/// Which server is under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Jobcast,
    BaselineAxum,
    BaselineBroadcast,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Jobcast, Target::BaselineBroadcast, Target::BaselineAxum];

    pub fn name(self) -> &'static str {
        match self {
            Target::Jobcast => "jobcast",
            Target::BaselineAxum => "baseline-axum",
            Target::BaselineBroadcast => "baseline-broadcast",
        }
    }

    /// The binary's file name, for finding it in a build directory.
    pub fn binary(self) -> &'static str {
        self.name()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the jobcast servers under test keep their jobs (`--store`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// `--store memory`: the figures before the SQLite store stay comparable.
    #[default]
    Memory,
    /// `--store sqlite:FILE`, a fresh file per server.
    Sqlite,
    /// `--store redis://…`: a `redis-server` of the tool's own, and two
    /// jobcast instances on it (fan-out and instance-lost only).
    Redis,
    /// No `--store` flag: for a jobcast from before the flag existed, which
    /// kept its jobs in memory.
    Unset,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Sqlite => "sqlite",
            StoreKind::Redis => "redis",
            StoreKind::Unset => "unset",
        }
    }
}

/// Where one jobcast server keeps its jobs, as it is started.
#[derive(Clone, Debug)]
pub enum StoreAt {
    Memory,
    /// A fresh SQLite file in a temporary directory of its own.
    FreshSqlite,
    /// The Redis server at this URL, shared with the other instances.
    Redis(String),
    /// No `--store` flag.
    Unset,
}

/// How to start one server.
#[derive(Clone, Debug)]
pub struct Launch {
    pub target: Target,
    pub binary: PathBuf,
    /// The core to pin the server to; none: not pinned.
    pub core: Option<usize>,
    /// Flags for jobcast only (ignored for the baselines).
    pub jobcast_args: Vec<String>,
    /// jobcast's store (ignored for the baselines).
    pub store: StoreAt,
    /// Where the server's output goes; none: discarded.
    pub log: Option<PathBuf>,
    /// The credential to send as `Authorization: Bearer`, if any.
    pub bearer: Option<String>,
}

/// A child process the tool started: a server under test or Redis.
pub(crate) struct Process {
    child: Child,
    /// The process's id: taskset execs the program, so the child's pid is
    /// the program's.
    pub pid: u32,
}

impl Process {
    /// Starts `binary` with `args`, pinned to `core` when taskset is there,
    /// its output appended to `log` (default: discarded).
    pub(crate) fn spawn(
        binary: &Path,
        args: &[String],
        core: Option<usize>,
        log: Option<&Path>,
    ) -> io::Result<Process> {
        let mut command = match core {
            Some(core) if Path::new("/usr/bin/taskset").exists() || which("taskset") => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(core.to_string()).arg(binary);
                command
            }
            _ => Command::new(binary),
        };
        command.args(args).stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe, and only sets a flag of the
        // new process: it is killed if the tool dies first (a Ctrl-C, a
        // kill), rather than left running with its port and files.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                command.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = command.spawn()?;
        let pid = child.id();
        Ok(Process { child, pid })
    }

    /// The exit status, once the process has exited.
    pub(crate) fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Stops the process: SIGTERM, then SIGKILL if it lingers; nothing if
    /// it has ended already (its pid may be another process's by now).
    pub(crate) async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signals our own child by its pid, which it still holds
        // (not yet reaped).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
    }

    /// `kill -9`, and reaps it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

pub struct Server {
    process: Process,
    pub pid: u32,
    pub endpoint: Endpoint,
    /// The SQLite database's directory, when the server has one.
    database_dir: Option<PathBuf>,
}

/// The database file's name in its directory.
const DATABASE: &str = "jobs.db";

pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    pub async fn start(launch: &Launch, source_ips: usize) -> io::Result<Server> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut args = vec!["--listen".to_owned(), addr.to_string()];
        let mut database_dir = None;
        if launch.target == Target::Jobcast {
            args.extend(["--log".to_owned(), "warn".to_owned()]);
            let store = match &launch.store {
                StoreAt::Memory => Some("memory".to_owned()),
                StoreAt::FreshSqlite => {
                    let dir =
                        std::env::temp_dir().join(format!("jobcast-bench-{}-{}", std::process::id(), addr.port()));
                    std::fs::create_dir_all(&dir)?;
                    let store = format!("sqlite:{}", dir.join(DATABASE).display());
                    database_dir = Some(dir);
                    Some(store)
                }
                StoreAt::Redis(url) => Some(url.clone()),
                StoreAt::Unset => None,
            };
            if let Some(store) = store {
                args.extend(["--store".to_owned(), store]);
            }
            args.extend(launch.jobcast_args.iter().cloned());
        }
        let process = match Process::spawn(&launch.binary, &args, launch.core, launch.log.as_deref()) {
            Ok(process) => process,
            Err(error) => {
                remove_database(database_dir.as_deref());
                return Err(error);
            }
        };
        let mut server = Server {
            pid: process.pid,
            process,
            endpoint: Endpoint::new(addr, 1),
            database_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = server.process.exited()? {
                return Err(io::Error::other(format!("{} exited at start: {status}", launch.target)));
            }
            if let Ok(response) = client::request(&server.endpoint, "GET", "/healthz", None).await {
                if response.status == 200 {
                    break;
                }
            }
            if Instant::now() > deadline {
                server.process.kill();
                return Err(io::Error::other(format!("{} did not answer /healthz", launch.target)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.endpoint = Endpoint::new(addr, source_ips).with_bearer(launch.bearer.as_deref());
        Ok(server)
    }

    /// The database file's and its write-ahead log's sizes in bytes, when
    /// the server keeps its jobs in SQLite.
    pub fn database_bytes(&self) -> Option<(u64, u64)> {
        let dir = self.database_dir.as_ref()?;
        let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |meta| meta.len());
        Some((size(DATABASE), size(&format!("{DATABASE}-wal"))))
    }

    /// Stops the server: SIGTERM, then SIGKILL if it lingers.
    pub async fn stop(mut self) {
        self.process.stop().await;
    }

    /// `kill -9`: the server dies at once, as in a crash.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Stopped before its files go.
        if let Ok(None) = self.process.exited() {
            self.process.kill();
        }
        remove_database(self.database_dir.as_deref());
    }
}

/// Removes a stopped server's database directory (the file, its `-wal` and `-shm`).
fn remove_database(dir: Option<&Path>) {
    if let Some(dir) = dir {
        if let Err(error) = std::fs::remove_dir_all(dir) {
            eprintln!("cannot remove {}: {error}", dir.display());
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
