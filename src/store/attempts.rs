//! Authorization attempts: one per click on Authorize, single-use by construction (`finish`
//! only moves a pending attempt).

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{Conn, StoreError, StoreResult, from_db_opt_time, from_db_time, parse_id, to_db_time};
use crate::domain::mailbox::StatusReason;
use crate::domain::{MailboxId, OrgId};

/// An attempt's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    Pending,
    Completed,
    Failed,
    Expired,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    fn parse(raw: &str) -> StoreResult<Self> {
        Ok(match raw {
            "pending" => Self::Pending,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            other => return Err(StoreError::Corrupt(format!("attempt status `{other}`"))),
        })
    }
}

#[derive(Clone, Debug)]
pub struct Attempt {
    pub id: String,
    pub org_id: OrgId,
    pub mailbox_id: MailboxId,
    pub session_digest: Option<String>,
    pub started_by: String,
    pub status: AttemptStatus,
    pub reason: Option<StatusReason>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, org_id, mailbox_id, session_digest, started_by, status, reason, created_at, expires_at, finished_at";

fn from_row(row: &AnyRow) -> StoreResult<Attempt> {
    let reason: Option<String> = row.try_get("reason")?;
    Ok(Attempt {
        id: row.try_get("id")?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        mailbox_id: parse_id(&row.try_get::<String, _>("mailbox_id")?)?,
        session_digest: row.try_get("session_digest")?,
        started_by: row.try_get("started_by")?,
        status: AttemptStatus::parse(&row.try_get::<String, _>("status")?)?,
        reason: reason
            .map(|r| {
                serde_json::from_str(&r)
                    .map_err(|e| StoreError::Corrupt(format!("attempt reason: {e}")))
            })
            .transpose()?,
        created_at: from_db_time(row.try_get("created_at")?)?,
        expires_at: from_db_time(row.try_get("expires_at")?)?,
        finished_at: from_db_opt_time(row.try_get("finished_at")?)?,
    })
}

#[allow(clippy::too_many_arguments)]
pub async fn insert(
    conn: &mut Conn,
    id: &str,
    org_id: OrgId,
    mailbox_id: MailboxId,
    state_digest: &str,
    session_digest: Option<&str>,
    started_by: &str,
    now: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO authorization_attempts (id, org_id, mailbox_id, state_digest, session_digest, started_by, status, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
    )
    .bind(id)
    .bind(org_id.to_string())
    .bind(mailbox_id.to_string())
    .bind(state_digest)
    .bind(session_digest.map(str::to_owned))
    .bind(started_by)
    .bind(to_db_time(now))
    .bind(to_db_time(expires_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn find_by_state(conn: &mut Conn, state_digest: &str) -> StoreResult<Option<Attempt>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM authorization_attempts WHERE state_digest = $1"
    )))
    .bind(state_digest)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub async fn get(conn: &mut Conn, org_id: OrgId, id: &str) -> StoreResult<Option<Attempt>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM authorization_attempts WHERE id = $1 AND org_id = $2"
    )))
    .bind(id)
    .bind(org_id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// The newest attempt for a mailbox.
pub async fn latest(
    conn: &mut Conn,
    org_id: OrgId,
    mailbox_id: MailboxId,
) -> StoreResult<Option<Attempt>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM authorization_attempts WHERE org_id = $1 AND mailbox_id = $2 ORDER BY id DESC LIMIT 1"
    )))
    .bind(org_id.to_string())
    .bind(mailbox_id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Claims a pending attempt for the one redirect that may act on it: two redirects with the
/// same state (a double click, a retry, a link scanner) race here, and only one wins.
pub async fn claim(conn: &mut Conn, id: &str, now: OffsetDateTime) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE authorization_attempts SET finished_at = $1 WHERE id = $2 AND status = 'pending' AND finished_at IS NULL")
        .bind(to_db_time(now))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends a pending attempt; answers false when it was not pending any more, so each state is
/// used once even when two redirects race.
pub async fn finish(
    conn: &mut Conn,
    id: &str,
    status: AttemptStatus,
    reason: Option<&StatusReason>,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query("UPDATE authorization_attempts SET status = $1, reason = $2, finished_at = $3 WHERE id = $4 AND status = 'pending'")
        .bind(status.as_str())
        .bind(reason.map(|r| serde_json::to_string(r).unwrap_or_default()))
        .bind(to_db_time(now))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every pending attempt of a mailbox (its settings changed under them).
pub async fn end_pending(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    reason: &StatusReason,
    now: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query("UPDATE authorization_attempts SET status = 'failed', reason = $1, finished_at = $2 WHERE mailbox_id = $3 AND status = 'pending'")
        .bind(serde_json::to_string(reason).unwrap_or_default())
        .bind(to_db_time(now))
        .bind(mailbox_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
