//! The command's processes: spawning the program in its own process group
//! with its progress pipe at fd 3 and nothing else inherited, signalling
//! that group, and killing it until it is empty. When to signal is `run`'s
//! decision; reading the pipes is `output`'s.
//!
//! Hand-written rather than taken from a crate: the process-group
//! bookkeeping on `libc` (tokio signals the child, not its group, and
//! cannot tell when a group is empty).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::unix::pipe::Receiver;
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::time::Instant;

use super::{CommandKind, ProgressSource};
use crate::jobs::{JobError, JobId};

/// The fd number at which a child in `progress = "fd"` mode finds its
/// progress pipe, also passed as `JOBCAST_PROGRESS_FD`.
const PROGRESS_FD: libc::c_int = 3;

/// How long to wait for a group to empty after SIGKILL.
const GROUP_EXIT_WAIT: Duration = Duration::from_secs(5);

/// How often to look whether a killed group is empty yet.
const GROUP_POLL: Duration = Duration::from_millis(5);

/// A started command: the child, its output pipes, and the guard of its
/// process group.
pub(super) struct Spawned {
    pub(super) child: Child,
    pub(super) stdout: ChildStdout,
    pub(super) stderr: ChildStderr,
    /// The read end of the progress pipe, in `progress = "fd"` mode.
    pub(super) progress_fd: Option<Receiver>,
    pub(super) group: Group,
}

/// Starts the kind's program with `args` for job `job_id`, in a process
/// group of its own, stdin closed, stdout and stderr piped.
pub(super) fn spawn(kind: &CommandKind, job_id: JobId, args: Vec<String>) -> Result<Spawned, JobError> {
    let spawn_failed = |error: io::Error| {
        JobError::new(
            "spawn_failed",
            format!(
                "cannot start {} in {}: {error}",
                kind.program.display(),
                kind.workdir.display()
            ),
        )
    };
    let mut command = tokio::process::Command::new(&kind.program);
    command
        .args(args)
        .current_dir(&kind.workdir)
        .envs(&kind.env)
        .env("JOBCAST_JOB_ID", job_id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let progress_pipe = match kind.progress {
        ProgressSource::Fd => {
            command.env("JOBCAST_PROGRESS_FD", PROGRESS_FD.to_string());
            Some(progress_pipe().map_err(spawn_failed)?)
        }
        ProgressSource::Stdout | ProgressSource::None => None,
    };
    let progress_write_fd = progress_pipe.as_ref().map(|(_, write)| write.as_raw_fd());
    // SAFETY: the closure runs in the forked child between fork and
    // exec, where only async-signal-safe calls are allowed; dup2 and
    // close_range are, and they touch nothing but fd numbers. The write
    // end is close-on-exec (and numbered above 2, so std's stdio setup
    // cannot overwrite it): only this child gets it, at PROGRESS_FD,
    // which dup2 leaves open across exec.
    unsafe {
        command.pre_exec(move || {
            let mut first_private = PROGRESS_FD;
            if let Some(write_fd) = progress_write_fd {
                if libc::dup2(write_fd, PROGRESS_FD) == -1 {
                    return Err(io::Error::last_os_error());
                }
                first_private = PROGRESS_FD + 1;
            }
            close_inherited_on_exec(first_private);
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(spawn_failed)?;
    // The parent's copy of the write end goes now, so that the pipe ends
    // when the child's processes have closed theirs.
    let progress_fd = match progress_pipe {
        Some((read, write)) => {
            drop(write);
            Some(Receiver::from_owned_fd(read).map_err(spawn_failed)?)
        }
        None => None,
    };
    let pid = child.id().expect("a child that was just spawned has not been reaped");
    // The child leads its own process group (process_group(0)), so its
    // pid is the group's id; the guard kills the group if the job's future
    // is dropped before the group is known to be empty.
    let group = Group::new(pid as libc::pid_t);
    tracing::info!(pid, "command started");
    Ok(Spawned {
        stdout: child.stdout.take().expect("stdout is piped"),
        stderr: child.stderr.take().expect("stderr is piped"),
        child,
        progress_fd,
        group,
    })
}

/// Marks every fd from `first` up close-on-exec, so that the program does
/// not inherit what the server itself inherited without that flag (a
/// supervisor's sockets, a terminal's descriptors). Best effort: kernels
/// before 5.11 lack the call, and the fds then stay as they were.
/// Async-signal-safe: it is called between fork and exec.
fn close_inherited_on_exec(first: libc::c_int) {
    #[cfg(target_os = "linux")]
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = first;
}

/// A pipe whose ends are both close-on-exec, the write end numbered above
/// the stdio fds. Not tokio's pipe: that one is non-blocking, a flag the
/// child would share through its copy.
fn progress_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open fds that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_DUPFD_CLOEXEC only reads the fd, which `write` keeps open.
    let high = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if high == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl returned a new open fd that nothing else owns.
    let write = unsafe { OwnedFd::from_raw_fd(high) };
    Ok((read, write))
}

/// The child's process group, killed with SIGKILL when dropped unless it is
/// known to be empty: a job future dropped by the engine (a forced cancel,
/// shutdown) leaves no process behind.
pub(super) struct Group {
    pgid: libc::pid_t,
    empty: bool,
}

impl Group {
    fn new(pgid: libc::pid_t) -> Self {
        Group { pgid, empty: false }
    }

    pub(super) fn signal(&self, signal: libc::c_int) {
        if self.empty {
            return;
        }
        // SAFETY: killpg has no memory-safety requirements.
        if unsafe { libc::killpg(self.pgid, signal) } == -1 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::ESRCH) {
                tracing::warn!(pgid = self.pgid, signal, %error, "cannot signal the process group");
            }
        }
    }

    /// Kills whatever is left in the group and waits, bounded, until no
    /// member is alive (zombies waiting for their parent count as gone).
    pub(super) async fn kill_and_wait(&mut self) {
        if !group_alive(self.pgid) {
            self.empty = true;
            return;
        }
        tracing::debug!(pgid = self.pgid, "killing what is left of the process group");
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + GROUP_EXIT_WAIT;
        while group_alive(self.pgid) {
            if Instant::now() >= deadline {
                tracing::warn!(pgid = self.pgid, "processes of the group survive SIGKILL");
                return;
            }
            tokio::time::sleep(GROUP_POLL).await;
        }
        self.empty = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.empty {
            self.signal(libc::SIGKILL);
        }
    }
}

/// Whether a process of the group is alive (not a zombie).
fn group_alive(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 checks for existence and permission only.
    if unsafe { libc::killpg(pgid, 0) } == -1 {
        return io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    }
    live_member_in_proc(pgid).unwrap_or(true)
}

/// On Linux, whether /proc shows a member of the group that is not a
/// zombie: killpg(…, 0) also finds zombies, which an init that does not
/// reap (as in some containers) may keep forever.
#[cfg(target_os = "linux")]
fn live_member_in_proc(pgid: libc::pid_t) -> Option<bool> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold anything, so read
        // from the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1).and_then(|pgrp| pgrp.parse::<libc::pid_t>().ok());
        if group == Some(pgid) && !matches!(state, Some("Z" | "X")) {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(not(target_os = "linux"))]
fn live_member_in_proc(_pgid: libc::pid_t) -> Option<bool> {
    None
}
