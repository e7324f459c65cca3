//! Idempotency keys: the stored first answer to a request, so a client's retry gets it again.

use sqlx::Row;
use time::OffsetDateTime;

use super::{IdempotencyRecord, corrupt};
use crate::domain::OrgId;
use crate::store::{Conn, StoreResult, to_db_time};

/// The live record of an idempotency key (an expired one is left to
/// [`idempotency_purge`], and a new use of the key replaces it).
pub async fn idempotency_get(
    conn: &mut Conn,
    org_id: OrgId,
    key: &str,
    now: OffsetDateTime,
) -> StoreResult<Option<IdempotencyRecord>> {
    let row = sqlx::query(
        "SELECT request_digest, message_id, first_status FROM idempotency_keys \
         WHERE org_id = $1 AND idem_key = $2 AND expires_at > $3",
    )
    .bind(org_id.to_string())
    .bind(key)
    .bind(to_db_time(now))
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

/// Records an idempotency key, over an expired record of it. `false` when the key is live:
/// another request took it first (on PostgreSQL this waits for that request's transaction).
pub async fn idempotency_put(
    conn: &mut Conn,
    org_id: OrgId,
    key: &str,
    record: &IdempotencyRecord,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO idempotency_keys (org_id, idem_key, request_digest, message_id, first_status, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (org_id, idem_key) DO UPDATE SET request_digest = excluded.request_digest, \
           message_id = excluded.message_id, first_status = excluded.first_status, \
           created_at = excluded.created_at, expires_at = excluded.expires_at \
         WHERE idempotency_keys.expires_at <= excluded.created_at",
    )
    .bind(org_id.to_string())
    .bind(key)
    .bind(&record.request_digest)
    .bind(&record.message_id)
    .bind(record.first_status.as_str())
    .bind(to_db_time(now))
    .bind(to_db_time(expires_at))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes expired idempotency keys.
pub async fn idempotency_purge(conn: &mut Conn, now: OffsetDateTime) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
        .bind(to_db_time(now))
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
