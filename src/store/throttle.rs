//! Per-mailbox throttle state, shared by every instance through the database: the sends of the
//! last minute, per-hour counts of the last day, a back-off after a rate-limit reply, and the
//! connection slots held under a lease. Times here are Unix milliseconds.

use sqlx::Row;

use super::{Conn, StoreResult};
use crate::domain::MailboxId;

/// What the store keeps for one mailbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThrottleState {
    /// Millisecond times of the sends admitted within the last minute, oldest first.
    pub recent_sends: Vec<i64>,
    /// `(hour number, messages, recipients)` for the hours of the last day.
    pub hourly: Vec<(i64, u32, u32)>,
    pub backoff_until: i64,
    pub backoff_level: u32,
}

/// Reads a mailbox's state for update: call inside a write transaction. On PostgreSQL the row
/// is locked until the transaction ends, so two instances decide one after the other.
pub async fn load_for_update(conn: &mut Conn, mailbox_id: MailboxId) -> StoreResult<ThrottleState> {
    sqlx::query(
        "INSERT INTO mailbox_throttle (mailbox_id) VALUES ($1) ON CONFLICT (mailbox_id) DO NOTHING",
    )
    .bind(mailbox_id.to_string())
    .execute(&mut *conn)
    .await?;
    let lock = if super::is_postgres(conn) {
        " FOR UPDATE"
    } else {
        ""
    };
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT recent_sends, hourly, backoff_until, backoff_level FROM mailbox_throttle WHERE mailbox_id = $1{lock}"
    )))
    .bind(mailbox_id.to_string())
    .fetch_one(&mut *conn)
    .await?;
    let recent: String = row.try_get("recent_sends")?;
    let hourly: String = row.try_get("hourly")?;
    Ok(ThrottleState {
        recent_sends: serde_json::from_str(&recent).unwrap_or_default(),
        hourly: serde_json::from_str(&hourly).unwrap_or_default(),
        backoff_until: row.try_get("backoff_until")?,
        backoff_level: u32::try_from(row.try_get::<i64, _>("backoff_level")?).unwrap_or(0),
    })
}

pub async fn save(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    state: &ThrottleState,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE mailbox_throttle SET recent_sends = $1, hourly = $2, backoff_until = $3, backoff_level = $4 \
         WHERE mailbox_id = $5",
    )
    .bind(serde_json::to_string(&state.recent_sends).unwrap_or_else(|_| "[]".into()))
    .bind(serde_json::to_string(&state.hourly).unwrap_or_else(|_| "[]".into()))
    .bind(state.backoff_until)
    .bind(i64::from(state.backoff_level))
    .bind(mailbox_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes a free connection slot below `max`, reclaiming slots whose lease ran out. Answers the
/// slot, or `None` when all are taken.
pub async fn acquire_slot(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    max: u32,
    holder: &str,
    now_ms: i64,
    lease_ms: i64,
) -> StoreResult<Option<i64>> {
    sqlx::query("DELETE FROM mailbox_connections WHERE mailbox_id = $1 AND lease_until < $2")
        .bind(mailbox_id.to_string())
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    let taken: Vec<i64> = sqlx::query("SELECT slot FROM mailbox_connections WHERE mailbox_id = $1")
        .bind(mailbox_id.to_string())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get::<i64, _>("slot"))
        .collect::<Result<_, _>>()?;
    for slot in 0..i64::from(max) {
        if taken.contains(&slot) {
            continue;
        }
        // Two instances may pick the same free slot: the primary key lets one win.
        let done = sqlx::query(
            "INSERT INTO mailbox_connections (mailbox_id, slot, holder, lease_until) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (mailbox_id, slot) DO NOTHING",
        )
        .bind(mailbox_id.to_string())
        .bind(slot)
        .bind(holder)
        .bind(now_ms + lease_ms)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// Extends a held slot's lease; answers false when the slot was lost (taken over after expiry).
pub async fn renew_slot(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    slot: i64,
    holder: &str,
    until_ms: i64,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE mailbox_connections SET lease_until = $1 WHERE mailbox_id = $2 AND slot = $3 AND holder = $4",
    )
    .bind(until_ms)
    .bind(mailbox_id.to_string())
    .bind(slot)
    .bind(holder)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn release_slot(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    slot: i64,
    holder: &str,
) -> StoreResult<()> {
    sqlx::query(
        "DELETE FROM mailbox_connections WHERE mailbox_id = $1 AND slot = $2 AND holder = $3",
    )
    .bind(mailbox_id.to_string())
    .bind(slot)
    .bind(holder)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
