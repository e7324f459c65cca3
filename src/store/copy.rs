//! An SQLite database copied into an empty PostgreSQL one (`herald migrate-to-postgres`):
//! every table, row for row, in one transaction, then checked.
//!
//! Both schemas come from migrations written alike (`migrations/sqlite`, `migrations/postgres`):
//! text ids, Unix seconds as integers, flags as integers 0 and 1, message bodies as BLOB and
//! BYTEA. So each value is carried as the target column's type says (an integer, text or bytes)
//! and no time or flag needs converting. Sealed secrets are text and travel as they are: the
//! copy never opens them and needs no master key. No table has a serial or identity column
//! today; should one get one, its sequence is moved past the ids copied.
//!
//! The tables are listed from the SQLite database itself, so a table added by a later
//! migration is never skipped: a target without it fails the copy. They are copied parents
//! first (by their foreign keys), so that the target checks every reference as it goes.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Connection as _, Row as _};

use super::backup::{checked_identifier, sqlite_tables};
use super::{Backend, Conn, Store, StoreError};

/// Rows read from SQLite at a time.
const BATCH: i64 = 500;

/// Message bodies compared byte for byte after the copy.
const BODY_SAMPLE: i64 = 100;

/// What the copy did, once checked.
#[derive(Debug)]
pub struct CopyReport {
    /// Rows per table, the same on both sides.
    pub tables: Vec<(String, i64)>,
    /// Sealed values found identical in the target (all of them).
    pub secrets_compared: usize,
    /// Message bodies found identical in the target (a sample).
    pub bodies_compared: usize,
}

/// Why the copy was refused or failed. Nothing is committed in either case.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(
        "the PostgreSQL database is not empty: its table {table} has {rows} row(s). Copy into a new, empty database (CREATE DATABASE …) instead"
    )]
    TargetNotEmpty { table: String, rows: i64 },
    #[error(
        "the PostgreSQL database has no table {0}, which the SQLite database has: is it migrated by this version of Herald?"
    )]
    MissingTable(String),
    #[error("the PostgreSQL table {table} has no column {column}, which the SQLite table has")]
    MissingColumn { table: String, column: String },
    #[error(
        "the PostgreSQL column {table}.{column} has the type {kind}, which the copy does not carry"
    )]
    UnknownType {
        table: String,
        column: String,
        kind: String,
    },
    #[error(
        "the two databases are at different schema levels (SQLite {sqlite}, PostgreSQL {postgres}): run both with the same version of Herald"
    )]
    SchemaMismatch { sqlite: i64, postgres: i64 },
    #[error("the tables' foreign keys form a circle through {0}: no order copies them")]
    Circle(String),
    #[error("the copy does not match its source: {0}; nothing was committed")]
    Mismatch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CopyError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// How a column's values travel.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Integer,
    Text,
    Bytes,
}

/// Copies every table of `source` (SQLite) into `target` (PostgreSQL, migrated, empty) in one
/// transaction, then checks rows per table, every sealed value and a sample of message bodies
/// before committing. `source` is read in one snapshot.
pub async fn sqlite_to_postgres(source: &Store, target: &Store) -> Result<CopyReport, CopyError> {
    if source.backend() != Backend::Sqlite || target.backend() != Backend::Postgres {
        return Err(CopyError::Mismatch(
            "the copy goes from SQLite to PostgreSQL".into(),
        ));
    }
    let mut src = source.conn().await?;
    let mut src = src.begin().await?;
    let mut dst = target.pool().begin().await?;

    let (sqlite, postgres) = (
        schema_version(&mut src).await?,
        schema_version(&mut dst).await?,
    );
    if sqlite != postgres {
        return Err(CopyError::SchemaMismatch { sqlite, postgres });
    }
    let tables = in_dependency_order(&mut src).await?;
    let mut columns = BTreeMap::new();
    for table in &tables {
        columns.insert(table.clone(), columns_of(&mut src, &mut dst, table).await?);
    }
    // Nobody else writes the target until this commits (a `herald serve` started on it now
    // waits), and it must be empty.
    let list: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        list.join(", ")
    )))
    .execute(&mut *dst)
    .await?;
    for table in &tables {
        let rows = count(&mut dst, table).await?;
        if rows > 0 {
            return Err(CopyError::TargetNotEmpty {
                table: table.clone(),
                rows,
            });
        }
    }

    for table in &tables {
        copy_table(&mut src, &mut dst, table, &columns[table]).await?;
        reset_sequences(&mut dst, table).await?;
    }

    let mut counted = Vec::new();
    for table in &tables {
        let (a, b) = (count(&mut src, table).await?, count(&mut dst, table).await?);
        if a != b {
            return Err(CopyError::Mismatch(format!(
                "table {table} has {a} row(s) in SQLite but {b} in PostgreSQL"
            )));
        }
        counted.push((table.clone(), a));
    }
    let secrets_compared = compare_secrets(&mut src, &mut dst).await?;
    let bodies_compared = compare_bodies(&mut src, &mut dst).await?;
    dst.commit().await?;
    src.rollback().await?;
    Ok(CopyReport {
        tables: counted,
        secrets_compared,
        bodies_compared,
    })
}

async fn schema_version(conn: &mut Conn) -> Result<i64, CopyError> {
    // `success` is a boolean in PostgreSQL and an integer in SQLite: compared as neither.
    Ok(sqlx::query(
        "SELECT COALESCE(MAX(version), 0) AS v FROM _sqlx_migrations WHERE success = TRUE",
    )
    .fetch_one(&mut *conn)
    .await?
    .try_get("v")?)
}

async fn count(conn: &mut Conn, table: &str) -> Result<i64, CopyError> {
    Ok(sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM \"{table}\""
    )))
    .fetch_one(&mut *conn)
    .await?
    .try_get("n")?)
}

/// The SQLite tables, each after every table it references.
async fn in_dependency_order(src: &mut Conn) -> Result<Vec<String>, CopyError> {
    let tables = sqlite_tables(src).await?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for table in &tables {
        let rows =
            sqlx::query("SELECT DISTINCT \"table\" AS parent FROM pragma_foreign_key_list($1)")
                .bind(table)
                .fetch_all(&mut *src)
                .await?;
        let mut set = BTreeSet::new();
        for row in rows {
            let parent: String = row.try_get("parent")?;
            if &parent != table {
                set.insert(parent);
            }
        }
        parents.insert(table.clone(), set);
    }
    let mut ordered: Vec<String> = Vec::new();
    while ordered.len() < tables.len() {
        let ready: Vec<String> = tables
            .iter()
            .filter(|t| !ordered.contains(t))
            .filter(|t| {
                parents[*t]
                    .iter()
                    .all(|p| ordered.contains(p) || !tables.contains(p))
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            let rest: Vec<&str> = tables
                .iter()
                .filter(|t| !ordered.contains(t))
                .map(String::as_str)
                .collect();
            return Err(CopyError::Circle(rest.join(", ")));
        }
        ordered.extend(ready);
    }
    Ok(ordered)
}

/// The SQLite table's columns, with how each travels, as the PostgreSQL table types them.
async fn columns_of(
    src: &mut Conn,
    dst: &mut Conn,
    table: &str,
) -> Result<Vec<(String, Kind)>, CopyError> {
    let target: BTreeMap<String, String> = sqlx::query(
        "SELECT column_name::text AS name, data_type::text AS kind FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(table)
    .fetch_all(&mut *dst)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("name")?, r.try_get("kind")?)))
    .collect::<Result<_, sqlx::Error>>()?;
    if target.is_empty() {
        return Err(CopyError::MissingTable(table.to_owned()));
    }
    let names = sqlx::query("SELECT name FROM pragma_table_info($1) ORDER BY cid")
        .bind(table)
        .fetch_all(&mut *src)
        .await?;
    let mut columns = Vec::new();
    for row in names {
        let name: String = row.try_get("name")?;
        checked_identifier(&name)?;
        let Some(kind) = target.get(&name) else {
            return Err(CopyError::MissingColumn {
                table: table.to_owned(),
                column: name,
            });
        };
        let kind = match kind.as_str() {
            "bigint" | "integer" | "smallint" => Kind::Integer,
            "text" | "character varying" => Kind::Text,
            "bytea" => Kind::Bytes,
            other => {
                return Err(CopyError::UnknownType {
                    table: table.to_owned(),
                    column: name,
                    kind: other.to_owned(),
                });
            }
        };
        columns.push((name, kind));
    }
    Ok(columns)
}

/// Copies one table's rows, in batches read by rowid.
async fn copy_table(
    src: &mut Conn,
    dst: &mut Conn,
    table: &str,
    columns: &[(String, Kind)],
) -> Result<(), CopyError> {
    let names: Vec<String> = columns.iter().map(|(c, _)| format!("\"{c}\"")).collect();
    let select = format!(
        "SELECT rowid AS herald_rowid, {} FROM \"{table}\" WHERE rowid > $1 ORDER BY rowid LIMIT {BATCH}",
        names.join(", ")
    );
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO \"{table}\" ({}) VALUES ({})",
        names.join(", "),
        placeholders.join(", ")
    );
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
            .bind(after)
            .fetch_all(&mut *src)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.try_get("herald_rowid")?;
        for row in &rows {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
            for (i, (_, kind)) in columns.iter().enumerate() {
                // Column 0 is the rowid.
                let at = i + 1;
                query = match kind {
                    Kind::Integer => query.bind(row.try_get::<Option<i64>, _>(at)?),
                    Kind::Text => query.bind(row.try_get::<Option<String>, _>(at)?),
                    Kind::Bytes => query.bind(bytes_at(row, at)?),
                };
            }
            query.execute(&mut *dst).await?;
        }
    }
}

/// A BLOB column's value; SQLite may also hold text there, which travels as its bytes.
fn bytes_at(row: &sqlx::any::AnyRow, at: usize) -> Result<Option<Vec<u8>>, sqlx::Error> {
    match row.try_get::<Option<Vec<u8>>, _>(at) {
        Ok(bytes) => Ok(bytes),
        Err(_) => Ok(row
            .try_get::<Option<String>, _>(at)?
            .map(String::into_bytes)),
    }
}

/// Moves the sequence behind any serial or identity column of `table` past its largest value.
async fn reset_sequences(dst: &mut Conn, table: &str) -> Result<(), CopyError> {
    let rows = sqlx::query(
        "SELECT column_name::text AS name, \
                pg_get_serial_sequence(quote_ident($1), column_name::text)::text AS seq \
         FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 \
           AND (column_default LIKE 'nextval(%' OR is_identity = 'YES')",
    )
    .bind(table)
    .fetch_all(&mut *dst)
    .await?;
    for row in rows {
        let column: String = row.try_get("name")?;
        let Some(seq) = row.try_get::<Option<String>, _>("seq")? else {
            continue;
        };
        checked_identifier(&column)?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval($1::regclass, COALESCE((SELECT MAX(\"{column}\") FROM \"{table}\"), 0) + 1, false)"
        )))
        .bind(seq)
        .execute(&mut *dst)
        .await?;
    }
    Ok(())
}

/// Every sealed value, compared byte for byte with its key id.
async fn compare_secrets(src: &mut Conn, dst: &mut Conn) -> Result<usize, CopyError> {
    let (a, b) = (
        super::secrets::all(src).await?,
        super::secrets::all(dst).await?,
    );
    let by_key =
        |rows: &[super::secrets::SealedRow]| -> BTreeMap<(String, String), (String, String)> {
            rows.iter()
                .map(|r| {
                    (
                        (r.owner_id.clone(), r.field.clone()),
                        (r.key_id.clone(), r.sealed.clone()),
                    )
                })
                .collect()
        };
    let (a, b) = (by_key(&a), by_key(&b));
    if let Some(((owner, field), _)) = a.iter().find(|(k, v)| b.get(*k) != Some(*v)) {
        return Err(CopyError::Mismatch(format!(
            "the sealed value {owner}/{field} differs"
        )));
    }
    Ok(a.len())
}

/// A sample of message bodies (the oldest and the newest), compared byte for byte.
async fn compare_bodies(src: &mut Conn, dst: &mut Conn) -> Result<usize, CopyError> {
    let sample = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, body FROM (SELECT id, body FROM messages ORDER BY rowid LIMIT {half}) \
         UNION SELECT id, body FROM (SELECT id, body FROM messages ORDER BY rowid DESC LIMIT {half})",
        half = BODY_SAMPLE / 2
    )))
    .fetch_all(&mut *src)
    .await?;
    for row in &sample {
        let id: String = row.try_get("id")?;
        let expected = bytes_at(row, 1)?;
        let copied = sqlx::query("SELECT body FROM messages WHERE id = $1")
            .bind(&id)
            .fetch_optional(&mut *dst)
            .await?
            .map(|r| r.try_get::<Option<Vec<u8>>, _>("body"))
            .transpose()?;
        if copied != Some(expected) {
            return Err(CopyError::Mismatch(format!("message {id}'s body differs")));
        }
    }
    Ok(sample.len())
}
