//! What the per-organization limits count: the mail of an organization still waiting to be
//! sent (read through the partial index `messages_org_waiting`, which holds only queued,
//! sending and held mail, never the history), and the messages the installation's default
//! sender sent for it per UTC day (a counter every instance raises atomically).

use sqlx::Row;

use super::{Conn, StoreResult};
use crate::domain::OrgId;

/// An organization's mail waiting to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub messages: u64,
    pub bytes: u64,
}

/// Counts the organization's queued, sending and held mail.
pub async fn waiting(conn: &mut Conn, org_id: OrgId) -> StoreResult<Waiting> {
    // The status condition is written as the index's own, so that SQLite uses it.
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM messages \
         WHERE org_id = $1 AND status IN ('queued', 'sending', 'held')",
    )
    .bind(org_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    Ok(Waiting {
        messages: row.try_get::<i64, _>("n")?.max(0) as u64,
        bytes: row.try_get::<i64, _>("bytes")?.max(0) as u64,
    })
}

/// Takes one message of the organization's daily default-sender quota for `day` (days since
/// 1970-01-01, UTC): `true` when one was left. One statement, so that concurrent instances
/// never hand out more than `limit` between them.
pub async fn take_default_sender(
    conn: &mut Conn,
    org_id: OrgId,
    day: i64,
    limit: u64,
) -> StoreResult<bool> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sent: Option<i64> = sqlx::query(
        "INSERT INTO default_sender_usage (org_id, day, sent) VALUES ($1, $2, 1) \
         ON CONFLICT (org_id, day) DO UPDATE SET sent = default_sender_usage.sent + 1 \
         WHERE default_sender_usage.sent < $3 \
         RETURNING sent",
    )
    .bind(org_id.to_string())
    .bind(day)
    .bind(limit)
    .fetch_optional(&mut *conn)
    .await?
    .map(|row| row.try_get::<i64, _>("sent"))
    .transpose()?;
    if sent == Some(1) {
        // The day's first message: earlier days are no longer needed.
        sqlx::query("DELETE FROM default_sender_usage WHERE org_id = $1 AND day < $2")
            .bind(org_id.to_string())
            .bind(day - 1)
            .execute(&mut *conn)
            .await?;
    }
    Ok(sent.is_some())
}
