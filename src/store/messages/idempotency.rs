//! Idempotency keys: the stored first answer to a request, so a client's retry gets it again.

use sqlx::Row;
use time::OffsetDateTime;

use super::{IdempotencyRecord, corrupt};
use crate::domain::OrgId;
use crate::store::{Conn, StoreError, StoreResult, to_db_time};

/// The live record of an idempotency key; an expired one is deleted and not returned.
pub async fn idempotency_get(
    conn: &mut Conn,
    org_id: OrgId,
    key: &str,
    now: OffsetDateTime,
) -> StoreResult<Option<IdempotencyRecord>> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE org_id = $1 AND idem_key = $2 AND expires_at <= $3",
    )
    .bind(org_id.to_string())
    .bind(key)
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(
        "SELECT request_digest, message_id, first_status FROM idempotency_keys WHERE org_id = $1 AND idem_key = $2",
    )
    .bind(org_id.to_string())
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(IdempotencyRecord {
            request_digest: row.try_get("request_digest")?,
            message_id: row.try_get("message_id")?,
            first_status: row
                .try_get::<String, _>("first_status")?
                .parse()
                .map_err(|e| corrupt("first_status", e))?,
        })
    })
    .transpose()
}

/// Records an idempotency key; a concurrent first use of the same key is a
/// [`StoreError::Conflict`].
pub async fn idempotency_put(
    conn: &mut Conn,
    org_id: OrgId,
    key: &str,
    record: &IdempotencyRecord,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO idempotency_keys (org_id, idem_key, request_digest, message_id, first_status, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(org_id.to_string())
    .bind(key)
    .bind(&record.request_digest)
    .bind(&record.message_id)
    .bind(record.first_status.as_str())
    .bind(to_db_time(now))
    .bind(to_db_time(expires_at))
    .execute(&mut *conn)
    .await
    .map_err(|e| StoreError::unique(e, "idempotency key"))?;
    Ok(())
}

/// Deletes expired idempotency keys.
pub async fn idempotency_purge(conn: &mut Conn, now: OffsetDateTime) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
        .bind(to_db_time(now))
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
