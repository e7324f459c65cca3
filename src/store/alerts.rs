//! Alerts: raised once per key, shown until resolved or dismissed, delivered to webhooks.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{Conn, StoreResult, from_db_opt_time, from_db_time, parse_id, to_db_time};
use crate::domain::{MailboxId, OrgId};

const COLUMNS: &str = "id, org_id, kind, dedup_key, mailbox_id, message_id, title, detail, action, \
     created_at, resolved_at, dismissed_at, webhook_status, webhook_attempts, webhook_last_error, \
     email_status, email_message_id, email_error";

/// An alert as kept.
#[derive(Clone, Debug)]
pub struct Alert {
    pub id: String,
    pub org_id: OrgId,
    /// `mailbox_not_verified`, `client_secret_expiring`, `client_secret_expired`,
    /// `message_failed` or `keepalive_failed`.
    pub kind: String,
    pub dedup_key: String,
    pub mailbox_id: Option<MailboxId>,
    pub message_id: Option<String>,
    pub title: String,
    pub detail: String,
    pub action: Option<String>,
    pub created_at: OffsetDateTime,
    pub resolved_at: Option<OffsetDateTime>,
    pub dismissed_at: Option<OffsetDateTime>,
    pub webhook_status: String,
    pub webhook_attempts: i64,
    pub webhook_last_error: Option<String>,
    /// `pending`, `writing`, `queued` (as `email_message_id`) or `skipped` (`email_error`).
    pub email_status: String,
    pub email_message_id: Option<String>,
    pub email_error: Option<String>,
}

fn from_row(row: &AnyRow) -> StoreResult<Alert> {
    Ok(Alert {
        id: row.try_get("id")?,
        org_id: parse_id(&row.try_get::<String, _>("org_id")?)?,
        kind: row.try_get("kind")?,
        dedup_key: row.try_get("dedup_key")?,
        mailbox_id: row
            .try_get::<Option<String>, _>("mailbox_id")?
            .map(|id| parse_id(&id))
            .transpose()?,
        message_id: row.try_get("message_id")?,
        title: row.try_get("title")?,
        detail: row.try_get("detail")?,
        action: row.try_get("action")?,
        created_at: from_db_time(row.try_get("created_at")?)?,
        resolved_at: from_db_opt_time(row.try_get("resolved_at")?)?,
        dismissed_at: from_db_opt_time(row.try_get("dismissed_at")?)?,
        webhook_status: row.try_get("webhook_status")?,
        webhook_attempts: row.try_get("webhook_attempts")?,
        webhook_last_error: row.try_get("webhook_last_error")?,
        email_status: row.try_get("email_status")?,
        email_message_id: row.try_get("email_message_id")?,
        email_error: row.try_get("email_error")?,
    })
}

/// A new alert.
pub struct NewAlert<'a> {
    pub org_id: OrgId,
    pub kind: &'a str,
    pub dedup_key: String,
    pub mailbox_id: Option<MailboxId>,
    pub message_id: Option<&'a str>,
    pub title: String,
    pub detail: String,
    pub action: Option<String>,
}

/// Raises an alert unless one with the same key exists. Its webhook delivery is pending when
/// the organization has a webhook. Answers whether it was new.
pub async fn raise(
    conn: &mut Conn,
    alert: &NewAlert<'_>,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "INSERT INTO alerts (id, org_id, kind, dedup_key, mailbox_id, message_id, title, detail, action, created_at, \
           webhook_status, webhook_next_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
           CASE WHEN o.alert_webhook_url IS NULL THEN 'none' ELSE 'pending' END, $10 \
         FROM organizations o WHERE o.id = $2 \
         ON CONFLICT (org_id, dedup_key) DO NOTHING",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(alert.org_id.to_string())
    .bind(alert.kind)
    .bind(&alert.dedup_key)
    .bind(alert.mailbox_id.map(|id| id.to_string()))
    .bind(alert.message_id)
    .bind(&alert.title)
    .bind(&alert.detail)
    .bind(alert.action.as_deref())
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Resolves the mailbox's open alerts of these kinds (it works again): the banner goes, and a
/// later failure alerts anew.
pub async fn resolve(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    kinds: &[&str],
    now: OffsetDateTime,
) -> StoreResult<u64> {
    let mut resolved = 0;
    for kind in kinds {
        // The key is freed for the next occurrence.
        let done = sqlx::query(
            "UPDATE alerts SET resolved_at = $1, dedup_key = dedup_key || '#resolved:' || id \
             WHERE mailbox_id = $2 AND kind = $3 AND resolved_at IS NULL",
        )
        .bind(to_db_time(now))
        .bind(mailbox_id.to_string())
        .bind(*kind)
        .execute(&mut *conn)
        .await?;
        resolved += done.rows_affected();
    }
    Ok(resolved)
}

/// The organization's alerts still to show, newest first.
pub async fn open(conn: &mut Conn, org_id: OrgId) -> StoreResult<Vec<Alert>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE org_id = $1 AND resolved_at IS NULL AND dismissed_at IS NULL \
         ORDER BY created_at DESC, id DESC LIMIT 100"
    )))
    .bind(org_id.to_string())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// The organization's alerts, newest first (the history).
pub async fn recent(conn: &mut Conn, org_id: OrgId, limit: i64) -> StoreResult<Vec<Alert>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
    )))
    .bind(org_id.to_string())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// Hides an alert from the banner. Answers whether the organization has it.
pub async fn dismiss(
    conn: &mut Conn,
    org_id: OrgId,
    id: &str,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE alerts SET dismissed_at = COALESCE(dismissed_at, $1) WHERE id = $2 AND org_id = $3",
    )
    .bind(to_db_time(now))
    .bind(id)
    .bind(org_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The organizations that have alerts due to their webhook, at most `limit`, those waiting
/// longest first.
pub async fn webhook_orgs_due(
    conn: &mut Conn,
    now: OffsetDateTime,
    limit: i64,
) -> StoreResult<Vec<OrgId>> {
    sqlx::query(
        "SELECT org_id FROM alerts WHERE webhook_status = 'pending' AND webhook_next_at <= $1 \
         GROUP BY org_id ORDER BY MIN(webhook_next_at), org_id LIMIT $2",
    )
    .bind(to_db_time(now))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| parse_id(&row.try_get::<String, _>("org_id")?))
    .collect()
}

/// The organization's alert whose webhook delivery is due first, if any.
pub async fn next_webhook_due(
    conn: &mut Conn,
    org_id: OrgId,
    now: OffsetDateTime,
) -> StoreResult<Option<Alert>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE webhook_status = 'pending' AND webhook_next_at <= $1 \
         AND org_id = $2 ORDER BY webhook_next_at, id LIMIT 1"
    )))
    .bind(to_db_time(now))
    .bind(org_id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Takes an alert's delivery for one attempt (no other instance sends it until `until`).
pub async fn take_webhook(
    conn: &mut Conn,
    id: &str,
    now: OffsetDateTime,
    until: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE alerts SET webhook_next_at = $1, webhook_attempts = webhook_attempts + 1 \
         WHERE id = $2 AND webhook_status = 'pending' AND webhook_next_at <= $3",
    )
    .bind(to_db_time(until))
    .bind(id)
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a delivery attempt (the `attempt`-th): delivered, tried again at `retry_at`, or
/// given up. An attempt that another instance has since taken over records nothing.
pub async fn webhook_outcome(
    conn: &mut Conn,
    id: &str,
    attempt: i64,
    outcome: Result<(), (&str, Option<OffsetDateTime>)>,
) -> StoreResult<()> {
    let (status, next, error) = match outcome {
        Ok(()) => ("delivered", None, None),
        Err((error, Some(at))) => ("pending", Some(to_db_time(at)), Some(error)),
        Err((error, None)) => ("failed", None, Some(error)),
    };
    sqlx::query(
        "UPDATE alerts SET webhook_status = $1, webhook_next_at = COALESCE($2, webhook_next_at), \
           webhook_last_error = $3 WHERE id = $4 AND webhook_attempts = $5 AND webhook_status = 'pending'",
    )
    .bind(status)
    .bind(next)
    .bind(error)
    .bind(id)
    .bind(attempt)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The organization's webhook URL.
pub async fn webhook_url(conn: &mut Conn, org_id: OrgId) -> StoreResult<Option<String>> {
    let row = sqlx::query("SELECT alert_webhook_url FROM organizations WHERE id = $1")
        .bind(org_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(row.try_get("alert_webhook_url")?),
        None => Ok(None),
    }
}

/// Sets or clears the organization's webhook URL.
pub async fn set_webhook_url(conn: &mut Conn, org_id: OrgId, url: Option<&str>) -> StoreResult<()> {
    super::changes::announce(conn).await?;
    sqlx::query("UPDATE organizations SET alert_webhook_url = $1 WHERE id = $2")
        .bind(url)
        .bind(org_id.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How long an instance may take to write an alert's email before another takes it over.
const EMAIL_TAKE_SECS: i64 = 600;

/// Alerts whose email is still to be written (or was taken by an instance that stopped), oldest
/// first.
pub async fn emails_due(
    conn: &mut Conn,
    now: OffsetDateTime,
    limit: i64,
) -> StoreResult<Vec<Alert>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE email_status = 'pending' \
           OR (email_status = 'writing' AND email_taken_at < $2) \
         ORDER BY created_at, id LIMIT $1"
    )))
    .bind(limit)
    .bind(to_db_time(now) - EMAIL_TAKE_SECS)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// Takes an alert's email for this instance: true unless another took it.
pub async fn take_email(conn: &mut Conn, id: &str, now: OffsetDateTime) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE alerts SET email_status = 'writing', email_taken_at = $2 WHERE id = $1 \
           AND (email_status = 'pending' OR (email_status = 'writing' AND email_taken_at < $3))",
    )
    .bind(id)
    .bind(to_db_time(now))
    .bind(to_db_time(now) - EMAIL_TAKE_SECS)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records what became of an alert's email: queued as a message, or skipped and why.
pub async fn email_outcome(
    conn: &mut Conn,
    id: &str,
    outcome: Result<&str, &str>,
) -> StoreResult<()> {
    let (status, message_id, error) = match outcome {
        Ok(message_id) => ("queued", Some(message_id), None),
        Err(why) => ("skipped", None, Some(why)),
    };
    sqlx::query(
        "UPDATE alerts SET email_status = $1, email_message_id = $2, email_error = $3 WHERE id = $4",
    )
    .bind(status)
    .bind(message_id)
    .bind(error)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The addresses of the organization's admins.
pub async fn admin_emails(conn: &mut Conn, org_id: OrgId) -> StoreResult<Vec<String>> {
    let rows =
        sqlx::query("SELECT email FROM users WHERE org_id = $1 AND role = 'admin' ORDER BY email")
            .bind(org_id.to_string())
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<String, _>("email")?))
        .collect()
}

/// Resolves the mailbox's open alerts of these kinds other than `keep` (a client secret's
/// earlier step, or an earlier date, once a newer one is raised).
pub async fn resolve_others(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    kinds: &[&str],
    keep: &str,
    now: OffsetDateTime,
) -> StoreResult<()> {
    for kind in kinds {
        sqlx::query(
            "UPDATE alerts SET resolved_at = $1, dedup_key = dedup_key || '#resolved:' || id \
             WHERE mailbox_id = $2 AND kind = $3 AND resolved_at IS NULL AND dedup_key <> $4",
        )
        .bind(to_db_time(now))
        .bind(mailbox_id.to_string())
        .bind(*kind)
        .bind(keep)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Forgets alerts resolved or dismissed before `before`, whose deliveries are over
/// (housekeeping).
pub async fn purge(conn: &mut Conn, before: OffsetDateTime) -> StoreResult<u64> {
    Ok(sqlx::query(
        "DELETE FROM alerts WHERE COALESCE(resolved_at, dismissed_at) < $1 \
           AND webhook_status <> 'pending' AND email_status IN ('queued', 'skipped')",
    )
    .bind(to_db_time(before))
    .execute(&mut *conn)
    .await?
    .rows_affected())
}

/// Resolves every open alert of a mailbox that is gone.
pub async fn resolve_mailbox(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    Ok(sqlx::query(
        "UPDATE alerts SET resolved_at = $1, dedup_key = dedup_key || '#resolved:' || id \
         WHERE mailbox_id = $2 AND resolved_at IS NULL",
    )
    .bind(to_db_time(now))
    .bind(mailbox_id.to_string())
    .execute(&mut *conn)
    .await?
    .rows_affected())
}
