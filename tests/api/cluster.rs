//! The suite's two deployments (`API_TEST_DEPLOYMENT`): one process, or
//! three instances on one Redis behind nginx; and the real programs the
//! second is made of, which the several-instances tests use too: a
//! `redis-server` of the test's own, and nginx configured exactly as the
//! README's section "Running several instances" says.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jobcast::config::StoreChoice;
use jobcast::Config;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::helpers::WAIT;

/// The variable that chooses the deployment the suite runs against.
pub const DEPLOYMENT_VARIABLE: &str = "API_TEST_DEPLOYMENT";

/// What the suite's `TestApp`s are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Deployment {
    /// One jobcast server in the test's process (the default).
    Single,
    /// Three jobcast instances in the test's process on a Redis of the
    /// test's own, behind a real nginx, which the client talks to.
    Balanced,
}

impl Deployment {
    /// `API_TEST_DEPLOYMENT`: `single` (the default) or `balanced`. CI runs
    /// the suite once with each.
    pub fn of_suite() -> Deployment {
        match std::env::var(DEPLOYMENT_VARIABLE).as_deref() {
            Err(_) | Ok("" | "single") => Deployment::Single,
            Ok("balanced") => Deployment::Balanced,
            Ok(other) => panic!("{DEPLOYMENT_VARIABLE}={other}: not single or balanced"),
        }
    }
}

/// Whether the suite runs against three instances behind nginx.
pub fn deployment_is_balanced() -> bool {
    Deployment::of_suite() == Deployment::Balanced
}

/// Whether a test about what only one process has (its transport, its
/// connections, its own binary's restarts and logs) is skipped: in the
/// balanced deployment it says `why` and answers true.
pub fn skipped_when_balanced(why: &str) -> bool {
    let skipped = deployment_is_balanced();
    if skipped {
        eprintln!("runs on one process only: {why}");
    }
    skipped
}

/// A loopback port free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new directory of the test's own under the system's temporary one.
fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jobcast-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until something accepts connections on `port`, or answers how
/// `child` exited if it did first; fails the test after WAIT.
async fn wait_for_port(port: u16, child: &mut Child, what: &str) -> Result<(), std::process::ExitStatus> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if let Some(exited) = child.try_wait().unwrap() {
            return Err(exited);
        }
        assert!(tokio::time::Instant::now() < deadline, "{what} starts");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// What a Redis server keeps on disk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Persistence {
    /// Nothing: the suite's deployments, which never restart it.
    None,
    /// AOF with `appendfsync always`: what a restart must find.
    AofAlways,
}

/// A `redis-server` of the test's own on a free port, in a temporary
/// directory; killed when dropped.
pub struct Redis {
    dir: PathBuf,
    port: u16,
    persistence: Persistence,
    child: Child,
}

impl Redis {
    pub async fn start(persistence: Persistence) -> Redis {
        let dir = temp_dir("redis");
        // A free port may be taken by the time the server binds it.
        for _ in 0..3 {
            let port = free_port();
            if let Some(child) = Redis::launch(&dir, port, persistence).await {
                return Redis {
                    dir,
                    port,
                    persistence,
                    child,
                };
            }
        }
        panic!("redis-server exited at start three times");
    }

    /// Kills the server (`kill -9`) and waits until it is gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// Starts the server again, on the same port and data.
    pub async fn restart(&mut self) {
        self.child = Redis::launch(&self.dir, self.port, self.persistence)
            .await
            .expect("redis-server restarts on its port");
    }

    /// A server listening on `port`; None when it exited at once (the port
    /// was taken meanwhile).
    async fn launch(dir: &Path, port: u16, persistence: Persistence) -> Option<Child> {
        let appendonly = match persistence {
            Persistence::None => ["--appendonly", "no"],
            Persistence::AofAlways => ["--appendonly", "yes"],
        };
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(appendonly)
            .args(["--appendfsync", "always"])
            // DEBUG SLEEP, for the fault tests.
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        wait_for_port(port, &mut child, "redis-server").await.ok()?;
        Some(child)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's own directory, removed with it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sends a command to the server, as an operator's `redis-cli` would.
    pub async fn command(&self, args: &[&str]) {
        let client = redis::Client::open(self.url()).unwrap();
        // Answers may take as long as a fault lasts.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(WAIT));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap();
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        let _: redis::Value = command.query_async(&mut connection).await.unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// nginx in front of some jobcast instances, configured with the README's
/// configuration; killed when dropped.
pub struct Nginx {
    dir: PathBuf,
    pub port: u16,
    _child: Child,
}

impl Nginx {
    /// nginx balancing over `upstreams`, on a free port, as the user that
    /// runs the tests, with its files in a directory of its own.
    pub async fn start(upstreams: &[SocketAddr]) -> Nginx {
        let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
        let dir = temp_dir("nginx");
        loop {
            let port = free_port();
            std::fs::write(dir.join("nginx.conf"), nginx_config(&readme, upstreams, port, &dir)).unwrap();
            let mut child = Command::new("nginx")
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-e")
                .arg(dir.join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("nginx is installed (.ci/run installs it)");
            match wait_for_port(port, &mut child, "nginx").await {
                Ok(()) => {
                    return Nginx {
                        dir,
                        port,
                        _child: child,
                    }
                }
                Err(exited) => {
                    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    assert!(
                        log.contains("Address already in use"),
                        "nginx exited ({exited}):\n{log}"
                    );
                }
            }
        }
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The heading of the README section whose nginx block the tests run.
const README_SECTION: &str = "## Running several instances";
/// The README's upstream servers and listen address, which the tests
/// replace with their own.
const README_UPSTREAM: &str = "server 127.0.0.1:808";
const README_LISTEN: &str = "listen 127.0.0.1:8080;";

/// A whole nginx configuration: the README's block (an `upstream` and a
/// `server`, as in a file of `/etc/nginx/conf.d/`) with its upstream
/// servers and port replaced, inside what a run as an ordinary user in
/// `dir` needs (the pid file, logs and temporary paths there, in the
/// foreground).
fn nginx_config(readme: &str, upstreams: &[SocketAddr], port: u16, dir: &Path) -> String {
    let block = readme_nginx_block(readme);
    let (mut listens, mut upstream_lines) = (0, 0);
    let mut site = String::new();
    for line in block.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let code = line.split('#').next().unwrap().trim();
        if code.starts_with(README_UPSTREAM) {
            upstream_lines += 1;
            if upstream_lines == 1 {
                for upstream in upstreams {
                    site.push_str(&format!("{indent}server {upstream};\n"));
                }
            }
        } else if code == README_LISTEN {
            listens += 1;
            site.push_str(&format!("{indent}listen 127.0.0.1:{port};\n"));
        } else {
            site.push_str(line);
            site.push('\n');
        }
    }
    assert!(
        listens == 1 && upstream_lines >= 1,
        "the README's nginx block has one `{README_LISTEN}` and `{README_UPSTREAM}N;` upstream lines, which the tests replace:\n{block}"
    );
    let dir = dir.display();
    format!(
        "daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{site}}}
"
    )
}

/// The first ```nginx block of the README's section "Running several instances".
fn readme_nginx_block(readme: &str) -> &str {
    let section = readme
        .split_once(&format!("\n{README_SECTION}\n"))
        .unwrap_or_else(|| panic!("the README has a section {README_SECTION:?}"))
        .1;
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split_once("```nginx\n")
        .unwrap_or_else(|| panic!("{README_SECTION:?} has an nginx block"))
        .1;
    block.split_once("\n```").expect("the nginx block ends").0
}

/// The balanced deployment: a Redis, three jobcast instances on it in the
/// test's process (so that the test's own kinds run on each), and nginx in
/// front of them.
pub struct Cluster {
    /// Kept for as long as the cluster runs.
    _redis: Redis,
    pub nginx: Nginx,
    /// Each instance's own address.
    pub instances: Vec<SocketAddr>,
}

/// How many instances the balanced deployment runs.
pub const INSTANCES: usize = 3;

impl Cluster {
    /// Starts the cluster, each instance with `config` on the cluster's
    /// Redis, served by `serve` on a listener of its own; answers once every
    /// instance is ready (`/readyz` 200) and nginx accepts connections,
    /// with each instance's server task.
    pub async fn start<F, Fut>(config: Config, serve: F) -> (Cluster, Vec<JoinHandle<std::io::Result<()>>>)
    where
        F: Fn(TcpListener, Config) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        assert_eq!(
            config.store,
            StoreChoice::Memory,
            "a test that chooses its store is about that store: it runs on one process"
        );
        let redis = Redis::start(Persistence::None).await;
        let config = Config {
            store: StoreChoice::Redis(redis.url()),
            ..config
        };
        let mut instances = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..INSTANCES {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            instances.push(listener.local_addr().unwrap());
            servers.push(tokio::spawn(serve(listener, config.clone())));
        }
        let client = reqwest::Client::new();
        for (instance, server) in instances.iter().zip(&mut servers) {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let ready = client.get(format!("http://{instance}/readyz")).send().await;
                if ready.is_ok_and(|response| response.status() == 200) {
                    break;
                }
                if server.is_finished() {
                    panic!("instance {instance} stopped at start: {:?}", server.await);
                }
                assert!(tokio::time::Instant::now() < deadline, "instance {instance} is ready");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let nginx = Nginx::start(&instances).await;
        let cluster = Cluster {
            _redis: redis,
            nginx,
            instances,
        };
        (cluster, servers)
    }
}
