//! Starts the server under test as a child process pinned to one core
//! (`taskset -c CORE`), waits until it answers, and stops it. Knows each
//! target's flags: jobcast takes its own settings; the baselines take only
//! `--listen`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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

/// How to start one server.
#[derive(Clone, Debug)]
pub struct Launch {
    pub target: Target,
    pub binary: PathBuf,
    /// The core to pin the server to; none: not pinned.
    pub core: Option<usize>,
    /// Flags for jobcast only (ignored for the baselines).
    pub jobcast_args: Vec<String>,
    /// Where the server's output goes; none: discarded.
    pub log: Option<PathBuf>,
    /// The credential to send as `Authorization: Bearer`, if any.
    pub bearer: Option<String>,
}

pub struct Server {
    child: Child,
    pub pid: u32,
    pub endpoint: Endpoint,
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Server {
    pub async fn start(launch: &Launch, source_ips: usize) -> io::Result<Server> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut args = vec!["--listen".to_owned(), addr.to_string()];
        if launch.target == Target::Jobcast {
            args.extend(["--log".to_owned(), "warn".to_owned()]);
            args.extend(launch.jobcast_args.iter().cloned());
        }
        let mut command = match launch.core {
            Some(core) if Path::new("/usr/bin/taskset").exists() || which("taskset") => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(core.to_string()).arg(&launch.binary);
                command
            }
            _ => Command::new(&launch.binary),
        };
        command.args(&args).stdin(Stdio::null());
        match &launch.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                command.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = command.spawn()?;
        // taskset execs the server, so the child's pid is the server's.
        let pid = child.id();
        let mut server = Server {
            child,
            pid,
            endpoint: Endpoint::new(addr, 1),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(io::Error::other(format!("{} exited at start: {status}", launch.target)));
            }
            if let Ok(response) = client::request(&server.endpoint, "GET", "/healthz", None).await {
                if response.status == 200 {
                    break;
                }
            }
            if Instant::now() > deadline {
                server.kill();
                return Err(io::Error::other(format!("{} did not answer /healthz", launch.target)));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.endpoint = Endpoint::new(addr, source_ips).with_bearer(launch.bearer.as_deref());
        Ok(server)
    }

    /// Stops the server: SIGTERM, then SIGKILL if it lingers.
    pub async fn stop(mut self) {
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

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
