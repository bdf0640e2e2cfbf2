//! WAL checkpoints, mostly off the writer's path. The writer's connection
//! never checkpoints on its own (`wal_autocheckpoint = 0`): a checkpoint
//! syncs the database file, and the commits queued behind it would wait
//! for the disk (tens of milliseconds, when many jobs end together).
//! Instead a thread of its own, with a connection of its own, copies the
//! WAL into the database once a second (`PRAGMA wal_checkpoint(PASSIVE)`,
//! which waits for no one). Only the writer can start the WAL over, by a
//! checkpoint of its own once every frame is copied, which it does when
//! idle (it then has little or nothing left to copy).

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::OpenError;

/// How often the WAL is copied into the database.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The checkpointing thread; dropping it stops the thread.
pub struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path`, already opened (and
    /// created) by the writer.
    pub fn start(path: &Path) -> Result<Self, OpenError> {
        let name = path.display().to_string();
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| OpenError::Open { path: name, source })?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("jobcast-sqlite-checkpoint".to_owned())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL) {
                    let checkpointed = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(error) = checkpointed {
                        tracing::debug!(%error, "the WAL could not be checkpointed; trying again");
                    }
                }
            })
            .map_err(OpenError::Writer)?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
