//! Sealed secrets, one row per (owning record, field). Plaintext never reaches this table: the
//! functions here take and return sealed text, and [`crate::keys`] seals and opens it.

use sqlx::Row;
use time::OffsetDateTime;

use super::{Conn, StoreResult, to_db_time};
use crate::secrets::SealedValue;

/// Stores (or replaces) the sealed value of `field` on `owner_id`.
pub async fn put(
    conn: &mut Conn,
    owner_id: &str,
    field: &str,
    sealed: &SealedValue,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO secrets (owner_id, field, key_id, sealed, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (owner_id, field) DO UPDATE SET key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at",
    )
    .bind(owner_id)
    .bind(field)
    .bind(sealed.key_id.as_str())
    .bind(&sealed.text)
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores the sealed value unless one is already there (a concurrent writer won); the caller
/// reads back what is stored.
pub async fn insert_if_absent(
    conn: &mut Conn,
    owner_id: &str,
    field: &str,
    sealed: &SealedValue,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO secrets (owner_id, field, key_id, sealed, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (owner_id, field) DO NOTHING",
    )
    .bind(owner_id)
    .bind(field)
    .bind(sealed.key_id.as_str())
    .bind(&sealed.text)
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Blocks other writers of sealed values until the transaction ends (PostgreSQL; SQLite's
/// write transactions are serial already).
pub async fn lock_all(conn: &mut Conn, backend: super::Backend) -> StoreResult<()> {
    if backend == super::Backend::Postgres {
        sqlx::query("LOCK TABLE secrets IN EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The sealed text of `field` on `owner_id`, if stored.
pub async fn get(conn: &mut Conn, owner_id: &str, field: &str) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT sealed FROM secrets WHERE owner_id = $1 AND field = $2")
        .bind(owner_id)
        .bind(field)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| r.try_get("sealed"))
        .transpose()
        .map_err(Into::into)
}

/// Forgets one sealed value.
pub async fn delete(conn: &mut Conn, owner_id: &str, field: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM secrets WHERE owner_id = $1 AND field = $2")
        .bind(owner_id)
        .bind(field)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn delete_owner(conn: &mut Conn, owner_id: &str) -> StoreResult<()> {
    sqlx::query("DELETE FROM secrets WHERE owner_id = $1")
        .bind(owner_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A stored sealed value with its coordinates.
#[derive(Debug)]
pub struct SealedRow {
    pub owner_id: String,
    pub field: String,
    pub key_id: String,
    pub sealed: String,
}

/// Every sealed value, for a key rotation.
pub async fn all(conn: &mut Conn) -> StoreResult<Vec<SealedRow>> {
    let rows =
        sqlx::query("SELECT owner_id, field, key_id, sealed FROM secrets ORDER BY owner_id, field")
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(SealedRow {
                owner_id: r.try_get("owner_id")?,
                field: r.try_get("field")?,
                key_id: r.try_get("key_id")?,
                sealed: r.try_get("sealed")?,
            })
        })
        .collect()
}

/// The ids of the keys that sealed the stored values.
pub async fn key_ids_in_use(conn: &mut Conn) -> StoreResult<Vec<String>> {
    let rows = sqlx::query("SELECT DISTINCT key_id FROM secrets ORDER BY key_id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| r.try_get("key_id").map_err(Into::into))
        .collect()
}

pub async fn count(conn: &mut Conn) -> StoreResult<i64> {
    Ok(sqlx::query("SELECT COUNT(*) AS n FROM secrets")
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?)
}

/// One value sealed with the key `key_id`, if any: to try a key without reading every secret.
pub async fn one_sealed_with(conn: &mut Conn, key_id: &str) -> StoreResult<Option<SealedRow>> {
    let row = sqlx::query(
        "SELECT owner_id, field, key_id, sealed FROM secrets WHERE key_id = $1 ORDER BY owner_id, field LIMIT 1",
    )
    .bind(key_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        Ok(SealedRow {
            owner_id: r.try_get("owner_id")?,
            field: r.try_get("field")?,
            key_id: r.try_get("key_id")?,
            sealed: r.try_get("sealed")?,
        })
    })
    .transpose()
}
