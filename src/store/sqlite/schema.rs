//! The database file: opening it, recognising it as jobcast's, its schema
//! version and forward migrations, and reading what an earlier run left.
//!
//! A file is jobcast's when its `application_id` is [`APPLICATION_ID`]; its
//! schema version is `user_version`. An empty or new file is made a jobcast
//! database. A file that is not a database, is another program's, or has a
//! newer schema than this binary knows is refused before anything is
//! written to it, so a wrong `--store` never damages a file.
//!
//! The schema: `jobs` holds each job's latest stored state (the job resource
//! as JSON, its `seq`, status and server-wide event id, 0 until the state's
//! fan-out has numbered it, and the job's secrets); `meta` holds the event-id history (the first
//! id this database issued, the highest id of a removed job).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// `jobc` in ASCII: marks a SQLite file as a jobcast database.
pub const APPLICATION_ID: i32 = 0x6a6f_6263;
/// The schema this binary writes; older ones are migrated forward.
pub const SCHEMA_VERSION: i32 = 1;

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
    #[error("{path} is not a jobcast database ({reason}); it was left untouched")]
    NotJobcast { path: String, reason: String },
    #[error("{path} has schema version {found}, newer than this jobcast's {SCHEMA_VERSION}; it was left untouched (use a newer jobcast)")]
    Newer { path: String, found: i32 },
    #[error("{path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("cannot start the database writer: {0}")]
    Writer(std::io::Error),
}

/// Opens (or creates) the database at `path` and brings its schema to
/// [`SCHEMA_VERSION`].
pub fn open(path: &Path) -> Result<Connection, OpenError> {
    let name = path.display().to_string();
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| OpenError::Open {
        path: name.clone(),
        source,
    })?;
    // Reads only, before anything is written: a file that is not a
    // database fails here.
    let not_jobcast = |reason: String| OpenError::NotJobcast {
        path: name.clone(),
        reason,
    };
    let read = |sql: &str| -> Result<i64, OpenError> {
        connection
            .query_row(sql, [], |row| row.get(0))
            .map_err(|error| not_jobcast(error.to_string()))
    };
    let application_id = read("PRAGMA application_id")?;
    let version = read("PRAGMA user_version")? as i32;
    let objects = read("SELECT count(*) FROM sqlite_schema")?;
    let sqlite = |source| OpenError::Sqlite {
        path: name.clone(),
        source,
    };
    if objects == 0 && application_id == 0 {
        create(&connection).map_err(sqlite)?;
        return Ok(connection);
    }
    if application_id != i64::from(APPLICATION_ID) {
        return Err(not_jobcast(format!("its application id is {application_id:#x}")));
    }
    if version > SCHEMA_VERSION {
        return Err(OpenError::Newer {
            path: name,
            found: version,
        });
    }
    configure(&connection).map_err(sqlite)?;
    migrate(&connection, version).map_err(sqlite)?;
    Ok(connection)
}

/// Settings of the writer's connection: WAL, so that a commit survives a
/// crash of the process without a sync per commit (`synchronous = NORMAL`;
/// an OS crash or power loss may lose the last commits, never the file),
/// and no checkpoints on the way of commits (the writer checkpoints when
/// it is idle).
fn configure(connection: &Connection) -> rusqlite::Result<()> {
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "wal_autocheckpoint", 0)?;
    Ok(())
}

/// A new database. `auto_vacuum` must be chosen before the first table.
fn create(connection: &Connection) -> rusqlite::Result<()> {
    connection.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    configure(connection)?;
    connection.execute_batch(&format!(
        "BEGIN;
         CREATE TABLE jobs (
             id TEXT PRIMARY KEY NOT NULL,
             kind TEXT NOT NULL,
             status TEXT NOT NULL,
             seq INTEGER NOT NULL,
             event_id INTEGER NOT NULL,
             state TEXT NOT NULL,
             secrets TEXT
         ) WITHOUT ROWID;
         CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ))
}

/// Brings a schema of `version` up to [`SCHEMA_VERSION`], one step at a
/// time, each in its own transaction. There is one version so far.
fn migrate(_connection: &Connection, version: i32) -> rusqlite::Result<()> {
    debug_assert!(version <= SCHEMA_VERSION);
    Ok(())
}

/// One job as stored.
pub struct StoredJob {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub seq: u64,
    pub event_id: u64,
    pub state: String,
    /// [`crate::published::JobSecrets`] as JSON, if the job has any.
    pub secrets: Option<String>,
}

/// Writes a job's row unless the stored one is as new: parameters id,
/// kind, status, seq, event id, state, secrets (kept when NULL).
pub const UPSERT_JOB: &str =
    "INSERT INTO jobs (id, kind, status, seq, event_id, state, secrets) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (id) DO UPDATE SET
         kind = excluded.kind, status = excluded.status, seq = excluded.seq,
         event_id = excluded.event_id, state = excluded.state,
         secrets = coalesce(excluded.secrets, jobs.secrets)
     WHERE excluded.seq > jobs.seq OR (excluded.seq = jobs.seq AND excluded.event_id > jobs.event_id)";

/// Writes a later state over a job's row unless the stored one is as new
/// (one lookup, where [`UPSERT_JOB`] makes two; a removed job stays
/// removed): parameters id, status, seq, event id, state.
pub const UPDATE_JOB: &str = "UPDATE jobs SET status = ?2, seq = ?3, event_id = ?4, state = ?5
     WHERE id = ?1 AND (?3 > seq OR (?3 = seq AND ?4 > event_id))";

/// Every stored job, oldest first (ids are time-ordered).
pub fn jobs(connection: &Connection) -> rusqlite::Result<Vec<StoredJob>> {
    let mut statement =
        connection.prepare("SELECT id, kind, status, seq, event_id, state, secrets FROM jobs ORDER BY id")?;
    let rows = statement.query_map([], |row| {
        Ok(StoredJob {
            id: row.get(0)?,
            kind: row.get(1)?,
            status: row.get(2)?,
            seq: row.get::<_, i64>(3)? as u64,
            event_id: row.get::<_, i64>(4)? as u64,
            state: row.get(5)?,
            secrets: row.get(6)?,
        })
    })?;
    rows.collect()
}

/// A value of `meta`, if set.
pub fn meta(connection: &Connection, name: &str) -> rusqlite::Result<Option<u64>> {
    connection
        .query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get::<_, i64>(0)
        })
        .optional()
        .map(|value| value.map(|value| value as u64))
}

/// Sets a value of `meta`.
pub fn set_meta(connection: &Connection, name: &str, value: u64) -> rusqlite::Result<()> {
    connection.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        rusqlite::params![name, value as i64],
    )?;
    Ok(())
}
