//! SQLite files taken whole, for `herald backup` and `herald restore`: a consistent copy of a
//! live database, a copy described (schema level, rows per table, the master keys its sealed
//! secrets need), and a database taken out of service before it is replaced.
//!
//! sqlx does not expose SQLite's online-backup API (`sqlite3_backup_*`). `VACUUM INTO` does the
//! same job here: it reads the database in one read transaction, so the copy is one consistent
//! snapshot even while `herald serve` writes. In WAL mode writers go on beside it and are not
//! blocked; only the checkpoint waits until the copy is done. The copy is a compact,
//! self-contained file in rollback-journal mode, with no WAL beside it.

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::{Connection as _, Row as _};

use super::{Backend, Conn, Store, StoreError, StoreResult};

/// What a database file holds, as `herald backup` records it and `herald restore` checks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// The last migration applied (`_sqlx_migrations`), 0 before any.
    pub schema_version: i64,
    /// Rows per table (sqlx's own bookkeeping aside).
    pub tables: BTreeMap<String, i64>,
    /// The ids of the master keys that sealed the stored secrets.
    pub key_ids: Vec<String>,
}

/// The newest schema this build of Herald knows for `backend`.
pub fn latest_schema_version(backend: Backend) -> i64 {
    let migrator = match backend {
        Backend::Sqlite => &super::SQLITE_MIGRATIONS,
        Backend::Postgres => &super::POSTGRES_MIGRATIONS,
    };
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Writes a consistent copy of the store's SQLite database to `target`, which must not exist.
pub async fn vacuum_into(store: &Store, target: &Path) -> StoreResult<()> {
    if store.backend() != Backend::Sqlite {
        return Err(StoreError::Corrupt(
            "only an SQLite database can be copied as a file".into(),
        ));
    }
    let mut conn = store.conn().await?;
    sqlx::query("VACUUM INTO $1")
        .bind(target.to_string_lossy().into_owned())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Opens an SQLite file read-only, to describe or check it; never creates one.
pub async fn open_read_only(path: &Path) -> StoreResult<Conn> {
    sqlx::any::install_default_drivers();
    Conn::connect(&super::sqlite_url_mode(path, "ro"))
        .await
        .map_err(|cause| StoreError::Connect {
            backend: "SQLite",
            cause,
        })
}

/// Opens an existing SQLite file for writing, without waiting on another process's lock.
pub async fn open_existing(path: &Path) -> StoreResult<Conn> {
    sqlx::any::install_default_drivers();
    let mut conn = Conn::connect(&super::sqlite_url_mode(path, "rw"))
        .await
        .map_err(|cause| StoreError::Connect {
            backend: "SQLite",
            cause,
        })?;
    sqlx::query("PRAGMA busy_timeout = 0")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// The tables of an SQLite database, sqlx's `_sqlx_migrations` and SQLite's own aside, by name.
pub async fn sqlite_tables(conn: &mut Conn) -> StoreResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get("name")?;
            checked_identifier(&name)?;
            Ok(name)
        })
        .collect()
}

/// A table or column name as Herald's migrations write them, safe to put in SQL as `"name"`.
pub(crate) fn checked_identifier(name: &str) -> StoreResult<&str> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if plain {
        Ok(name)
    } else {
        Err(StoreError::Corrupt(format!(
            "the database has a table or column named {name:?}, which is not Herald's"
        )))
    }
}

/// Describes an SQLite database: its schema level, rows per table and the key ids in use.
pub async fn describe(conn: &mut Conn) -> StoreResult<Description> {
    let tables = sqlite_tables(conn).await?;
    let mut counts = BTreeMap::new();
    for table in &tables {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM \"{table}\""
        )))
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
        counts.insert(table.clone(), n);
    }
    let has = |name: &str| tables.iter().any(|t| t == name);
    let key_ids = if has("secrets") {
        super::secrets::key_ids_in_use(conn).await?
    } else {
        Vec::new()
    };
    let migrated: bool = sqlx::query(
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_one(&mut *conn)
    .await?
    .try_get::<i64, _>("n")?
        > 0;
    let schema_version = if migrated {
        sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *conn)
            .await?
            .try_get("v")?
    } else {
        0
    };
    Ok(Description {
        schema_version,
        tables: counts,
        key_ids,
    })
}

/// Checks an SQLite file's structure (`PRAGMA quick_check`); answers SQLite's complaint if any.
pub async fn quick_check(conn: &mut Conn) -> StoreResult<Option<String>> {
    let rows = sqlx::query("PRAGMA quick_check")
        .fetch_all(&mut *conn)
        .await?;
    let lines: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()?;
    Ok((lines != ["ok"]).then(|| lines.join("; ")))
}

/// Whether the database has the `instances` table (a database Herald has served from).
pub async fn has_table(conn: &mut Conn, name: &str) -> StoreResult<bool> {
    Ok(
        sqlx::query("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?
            .try_get::<i64, _>("n")?
            > 0,
    )
}

/// Takes a database out of WAL mode, folding its WAL into the main file, so that the file alone
/// is the whole database and can be moved aside. SQLite allows this only to the one connection
/// open on the file: every process with the database open (a `herald serve`) holds a shared lock
/// in WAL mode, so this fails at once (`false`) while any other has it open.
pub async fn take_offline(mut conn: Conn) -> StoreResult<bool> {
    let mode = sqlx::query("PRAGMA journal_mode = DELETE")
        .fetch_one(&mut conn)
        .await
        .and_then(|r| r.try_get::<String, _>(0));
    let _ = conn.close().await;
    match mode {
        Ok(mode) => Ok(mode.eq_ignore_ascii_case("delete")),
        Err(sqlx::Error::Database(e))
            if e.message().contains("locked") || e.message().contains("busy") =>
        {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}
