//! The data-access layer: one [`Store`] over SQLite (the default, embedded) or PostgreSQL (for
//! several instances), with versioned migrations for each.
//!
//! Queries are written once, in the SQL both databases accept (`$N` placeholders, integer Unix
//! times, text ids), and run through sqlx's `Any` driver. Each submodule owns one table family
//! and exposes functions over `&mut AnyConnection`, so callers compose them inside one
//! transaction (a change and its audit event commit together).

pub mod alerts;
pub mod api_keys;
pub mod attempts;
pub mod audit;
pub mod auth_failures;
pub mod backup;
pub mod changes;
pub mod copy;
mod database_url;
pub mod directory;
pub mod instances;
pub mod mailboxes;
pub mod messages;
pub mod org_limits;
pub mod orgs;
pub mod relay;
pub mod schema;
pub mod secrets;
pub mod sessions;
pub mod setup;
pub mod throttle;
pub mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Transaction};
use time::OffsetDateTime;

pub use database_url::{DatabaseUrl, redact_url};
pub use sqlx::Any;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database the store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// What went wrong in the store. Messages never include SQL or bound values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the string names the rule's column.
    #[error("a record with this {0} already exists")]
    Conflict(&'static str),
    #[error("cannot reach the {backend} database: {cause}")]
    Connect {
        backend: &'static str,
        cause: sqlx::Error,
    },
    #[error("cannot migrate the database: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl StoreError {
    /// Maps a unique-constraint violation to [`StoreError::Conflict`] naming `what`.
    pub(crate) fn unique(e: sqlx::Error, what: &'static str) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict(what),
            _ => Self::Database(e),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A handle on the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// SQLite connections that commit without waiting for the disk (`synchronous=NORMAL`),
    /// for the outbox workers' bookkeeping. A power cut can lose their last commits, which
    /// only sends a message again (delivery is at-least-once); accepting mail never uses them.
    relaxed: Option<AnyPool>,
    /// SQLite takes one writer at a time. The busy writers (accepting mail, the outbox's
    /// claims and outcomes) queue for it here, in the order they came, instead of in SQLite's
    /// busy handler, which sleeps a millisecond or more each time it finds the lock taken.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Accepted messages waiting to share the next commit (see `messages::insert_durably`).
    pending_inserts: Arc<PendingInserts>,
    /// How many token refreshes may hold a cross-instance lock at once (PostgreSQL).
    refresh_slots: Arc<tokio::sync::Semaphore>,
    /// On SQLite, one relaxed connection kept out of the pool for the outbox's busiest writes
    /// (see [`Store::relaxed_writer`]).
    kept_writer: Arc<tokio::sync::Mutex<Option<sqlx::AnyConnection>>>,
    /// API keys and organizations with their mailboxes, served from memory.
    directory: Arc<directory::Directory>,
    backend: Backend,
}

/// The messages waiting for the next grouped commit, and how many they are.
struct PendingInserts(
    std::sync::Mutex<Vec<messages::PendingInsert>>,
    tokio::sync::watch::Sender<usize>,
);

impl Default for PendingInserts {
    fn default() -> Self {
        Self(
            std::sync::Mutex::default(),
            tokio::sync::watch::channel(0).0,
        )
    }
}

impl std::fmt::Debug for PendingInserts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the messages themselves.
        f.write_str("PendingInserts")
    }
}

/// The first half of the advisory-lock keys of token refreshes (`pg_advisory_xact_lock(int, int)`).
const TOKEN_LOCK_SPACE: i32 = 0x4865_7261; // "Hera"

/// Held while a token is refreshed (see [`Store::lock_token_refresh`]); released when dropped.
pub struct TokenRefreshLock(
    #[allow(dead_code)] Transaction<'static, sqlx::Any>,
    #[allow(dead_code)] tokio::sync::OwnedSemaphorePermit,
);

/// A turn at writing with its connection (see [`Store::relaxed_writer`]); dereferences to the
/// connection.
pub struct RelaxedWriter {
    conn: WriterConn,
    _turn: WritePermit,
}

enum WriterConn {
    Kept(tokio::sync::OwnedMutexGuard<Option<sqlx::AnyConnection>>),
    Pooled(sqlx::pool::PoolConnection<Any>),
}

impl RelaxedWriter {
    /// Begins a transaction on the writer's connection (`BEGIN IMMEDIATE` on SQLite).
    pub async fn begin(&mut self) -> StoreResult<Transaction<'_, Any>> {
        use sqlx::Connection;
        let sqlite = !is_postgres(self);
        let conn: &mut AnyConnection = self;
        Ok(if sqlite {
            conn.begin_with("BEGIN IMMEDIATE").await?
        } else {
            conn.begin().await?
        })
    }
}

impl std::ops::Deref for RelaxedWriter {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match &self.conn {
            WriterConn::Kept(kept) => kept.as_ref().expect("connected when the writer was made"),
            WriterConn::Pooled(conn) => conn,
        }
    }
}

impl std::ops::DerefMut for RelaxedWriter {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.conn {
            WriterConn::Kept(kept) => kept.as_mut().expect("connected when the writer was made"),
            WriterConn::Pooled(conn) => conn,
        }
    }
}

/// A turn at writing (see [`Store::write_permit`]); the turn ends when it is dropped.
#[must_use = "the turn ends when the permit is dropped"]
pub struct WritePermit(#[allow(dead_code)] Option<tokio::sync::OwnedMutexGuard<()>>);

impl Store {
    /// Connects, creating the SQLite file (and its directory) when needed. Does not migrate.
    pub async fn connect(url: &DatabaseUrl) -> StoreResult<Self> {
        install_default_drivers();
        let connect_err = |cause| StoreError::Connect {
            backend: url.backend_name(),
            cause,
        };
        match url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    create_private_dir(dir).map_err(|e| connect_err(sqlx::Error::Io(e)))?;
                }
                let pool = AnyPoolOptions::new()
                    // SQLite runs one writer at a time; a few readers beside it are plenty.
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    // A file cannot drop a connection the way a server can: a ping before
                    // every use would cost a round trip to the connection's thread each time.
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the writer; FULL makes a commit
                            // durable before it returns, which accepting mail relies on.
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA foreign_keys = ON",
                                "PRAGMA busy_timeout = 10000",
                            ] {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url(path))
                    .await
                    .map_err(connect_err)?;
                let relaxed = AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(30))
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = NORMAL",
                                "PRAGMA foreign_keys = ON",
                                "PRAGMA busy_timeout = 10000",
                            ] {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_lazy(&sqlite_url(path))
                    .map_err(connect_err)?;
                Ok(Self {
                    pool,
                    relaxed: Some(relaxed),
                    write_gate: Some(Arc::default()),
                    pending_inserts: Arc::default(),
                    refresh_slots: Arc::new(tokio::sync::Semaphore::new(4)),
                    directory: Arc::default(),
                    kept_writer: Arc::default(),
                    backend: Backend::Sqlite,
                })
            }
            DatabaseUrl::Postgres(raw) => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // Explicit even though it is PostgreSQL's default: a commit must be
                            // on disk before Herald answers that it has the data.
                            sqlx::query("SET synchronous_commit = on")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(raw)
                    .await
                    .map_err(connect_err)?;
                Ok(Self {
                    pool,
                    relaxed: None,
                    write_gate: None,
                    pending_inserts: Arc::default(),
                    refresh_slots: Arc::new(tokio::sync::Semaphore::new(4)),
                    directory: Arc::default(),
                    kept_writer: Arc::default(),
                    backend: Backend::Postgres,
                })
            }
        }
    }

    /// Applies every migration not yet applied. Safe to run from several processes at once.
    pub async fn migrate(&self) -> StoreResult<()> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection from the pool for reads and single statements.
    pub async fn conn(&self) -> StoreResult<sqlx::pool::PoolConnection<Any>> {
        Ok(self.pool.acquire().await?)
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so two writers queue instead of failing when both upgrade.
    pub async fn begin(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A connection for the outbox workers' bookkeeping (see [`Store`]'s `relaxed`); on
    /// PostgreSQL an ordinary one.
    pub async fn relaxed_conn(&self) -> StoreResult<sqlx::pool::PoolConnection<Any>> {
        Ok(self
            .relaxed
            .as_ref()
            .unwrap_or(&self.pool)
            .acquire()
            .await?)
    }

    /// A write transaction on a [`Store::relaxed_conn`].
    pub async fn relaxed_begin(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(match (self.backend, &self.relaxed) {
            (Backend::Sqlite, Some(relaxed)) => relaxed.begin_with("BEGIN IMMEDIATE").await?,
            (Backend::Sqlite, None) => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            (Backend::Postgres, _) => self.pool.begin().await?,
        })
    }

    /// Waits for this process's turn to write, on SQLite; PostgreSQL writes side by side and
    /// needs none. Hold it around one write (a statement or a transaction), never across
    /// anything that waits on the network.
    pub async fn write_permit(&self) -> WritePermit {
        match &self.write_gate {
            Some(gate) => WritePermit(Some(gate.clone().lock_owned().await)),
            None => WritePermit(None),
        }
    }

    /// The turn at writing, with a connection for the outbox's bookkeeping (see `relaxed`): on
    /// SQLite one kept out of the pool for it, which the pool therefore never pings on its way
    /// back (sqlx pings every connection it takes back: a round trip to the connection's
    /// thread per write); on PostgreSQL one from the pool.
    pub async fn relaxed_writer(&self) -> StoreResult<RelaxedWriter> {
        let turn = self.write_permit().await;
        let conn = match (&self.relaxed, self.backend) {
            (Some(relaxed), Backend::Sqlite) => {
                let mut kept = self.kept_writer.clone().lock_owned().await;
                if kept.is_none() {
                    *kept = Some(relaxed.acquire().await?.detach());
                }
                WriterConn::Kept(kept)
            }
            _ => WriterConn::Pooled(self.pool.acquire().await?),
        };
        Ok(RelaxedWriter { conn, _turn: turn })
    }

    fn pending_inserts(&self) -> std::sync::MutexGuard<'_, Vec<messages::PendingInsert>> {
        self.pending_inserts
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a message to those waiting for the next grouped commit.
    fn queue_insert(&self, pending: messages::PendingInsert) {
        let mut queue = self.pending_inserts();
        queue.push(pending);
        self.pending_inserts.1.send_replace(queue.len());
    }

    /// Takes the messages waiting for a grouped commit, to commit them.
    fn take_inserts(&self) -> Vec<messages::PendingInsert> {
        let mut queue = self.pending_inserts();
        self.pending_inserts.1.send_replace(0);
        std::mem::take(&mut *queue)
    }

    /// How many accepted messages wait for the next grouped commit (SQLite; none on
    /// PostgreSQL, which commits each at once); changes as they come and go.
    pub fn inserts_waiting(&self) -> tokio::sync::watch::Receiver<usize> {
        self.pending_inserts.1.subscribe()
    }

    /// Held while this process refreshes a mailbox's token, so that instances sharing a
    /// PostgreSQL database refresh it one at a time: a transaction-scoped advisory lock, which
    /// the database also releases if this process dies. On SQLite one process serves, and
    /// the caller's in-process lock is enough: `None`.
    pub async fn lock_token_refresh(
        &self,
        mailbox_id: crate::domain::MailboxId,
    ) -> StoreResult<Option<TokenRefreshLock>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        // The lock holds a connection while the refresh takes others: a few at a time, so
        // that many refreshes together cannot take the whole pool and wait on each other.
        let slot = self
            .refresh_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Corrupt("the refresh slots were closed".into()))?;
        let mut tx = self.pool.begin().await?;
        // The mailbox's id folded to 32 bits, in a key space of Herald's own. Two mailboxes
        // that fold alike only refresh one after the other.
        let v = mailbox_id.as_uuid().as_u128();
        let key = (v ^ (v >> 32) ^ (v >> 64) ^ (v >> 96)) as u32 as i32;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(TOKEN_LOCK_SPACE)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        Ok(Some(TokenRefreshLock(tx, slot)))
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(kept) = self.kept_writer.lock().await.take() {
            use sqlx::Connection;
            let _ = kept.close().await;
        }
        if let Some(relaxed) = &self.relaxed {
            relaxed.close().await;
        }
        self.pool.close().await;
    }
}

/// Creates a directory readable only by its owner (mode 0700 on Unix), parents included.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn sqlite_url(path: &Path) -> String {
    sqlite_url_mode(path, "rwc")
}

/// The URL of the SQLite file at `path`, opened in `mode` (`rwc`, `rw` or `ro`).
fn sqlite_url_mode(path: &Path, mode: &str) -> String {
    // sqlx percent-decodes the file name, so encode what would end it early.
    let encoded = path
        .to_string_lossy()
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    format!("sqlite://{encoded}?mode={mode}")
}

/// Unix seconds, the storage form of every timestamp.
pub(crate) fn to_db_time(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

pub(crate) fn from_db_time(secs: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {secs} is out of range")))
}

pub(crate) fn from_db_opt_time(secs: Option<i64>) -> StoreResult<Option<OffsetDateTime>> {
    secs.map(from_db_time).transpose()
}

pub(crate) fn parse_id<T: std::str::FromStr>(raw: &str) -> StoreResult<T> {
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("`{raw}` is not a valid id")))
}

/// Whether a connection is to PostgreSQL (which needs `FOR UPDATE` where SQLite's single
/// writer needs nothing).
pub(crate) fn is_postgres(conn: &Conn) -> bool {
    conn.backend_name().eq_ignore_ascii_case("postgresql")
}

/// Shorthand for the connection type the submodules take.
pub type Conn = AnyConnection;

/// One page of a list, with the cursor for the next page.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Turns `limit + 1` fetched rows into a page: the extra row only proves that another page
/// exists, and the last kept row's id is the cursor.
pub(crate) fn into_page<T>(
    mut rows: Vec<T>,
    limit: usize,
    id_of: impl Fn(&T) -> String,
) -> Page<T> {
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(id_of)
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}
