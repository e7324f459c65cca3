//! The database schema against the migrations this binary carries, read without changing
//! anything (`herald doctor`): which are applied, pending, unknown to this binary, failed
//! partway or changed since they were applied.

use sqlx::Row;

use super::{Backend, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Store, StoreResult};

/// Where the schema stands.
#[derive(Debug, Default)]
pub struct SchemaState {
    /// How many migrations this binary carries, and the latest one's version.
    pub known: usize,
    pub latest_known: Option<i64>,
    /// How many of them the database records as applied, and the latest applied version.
    pub applied: usize,
    pub latest_applied: Option<i64>,
    /// Migrations this binary carries that the database lacks.
    pub pending: Vec<i64>,
    /// Versions the database records that this binary does not know: a newer Herald
    /// migrated it.
    pub unknown: Vec<i64>,
    /// Versions whose migration began but did not finish.
    pub failed: Vec<i64>,
    /// Versions applied from another text than this binary's.
    pub changed: Vec<i64>,
}

impl SchemaState {
    /// Whether the schema is exactly the one this binary expects.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
            && self.unknown.is_empty()
            && self.failed.is_empty()
            && self.changed.is_empty()
    }
}

/// Compares the migrations recorded in the database with this binary's. Reads only: an empty
/// database (no migrations table yet) has every migration pending.
pub async fn state(store: &Store) -> StoreResult<SchemaState> {
    let migrator = match store.backend() {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    let known: Vec<_> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    let exists = match store.backend() {
        Backend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' AND table_schema = current_schema()"
        }
    };
    let mut conn = store.conn().await?;
    let has_table = sqlx::query(exists)
        .fetch_one(&mut *conn)
        .await?
        .try_get::<i64, _>("n")?
        > 0;
    let mut applied: Vec<(i64, bool, Vec<u8>)> = Vec::new();
    if has_table {
        let rows = sqlx::query(
            "SELECT version, CAST(CASE WHEN success THEN 1 ELSE 0 END AS BIGINT) AS ok, checksum \
             FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            applied.push((
                row.try_get("version")?,
                row.try_get::<i64, _>("ok")? != 0,
                row.try_get("checksum")?,
            ));
        }
    }
    let mut state = SchemaState {
        known: known.len(),
        latest_known: known.iter().map(|m| m.version).max(),
        latest_applied: applied.iter().filter(|a| a.1).map(|a| a.0).max(),
        ..SchemaState::default()
    };
    for m in &known {
        match applied.iter().find(|a| a.0 == m.version) {
            None => state.pending.push(m.version),
            Some((_, false, _)) => state.failed.push(m.version),
            Some((_, true, checksum)) => {
                state.applied += 1;
                if checksum.as_slice() != &*m.checksum {
                    state.changed.push(m.version);
                }
            }
        }
    }
    state.unknown = applied
        .iter()
        .map(|a| a.0)
        .filter(|v| !known.iter().any(|m| m.version == *v))
        .collect();
    Ok(state)
}
