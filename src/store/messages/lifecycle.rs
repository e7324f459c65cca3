//! Changes to many messages at once as their mailbox changes: holding, releasing, sweeping
//! up after races, failing a deleted mailbox's mail, cancelling, expiring held mail and
//! purging old bodies.

use time::OffsetDateTime;

use super::{COLUMNS, from_row, get, reason_json};
use crate::domain::mailbox::StatusReason;
use crate::domain::message::Message;
use crate::domain::{MailboxId, OrgId};
use crate::store::{Conn, StoreResult, to_db_time};

/// Holds every queued message of a mailbox that turned Not Verified, and those a dead worker
/// left claimed, if the mailbox is still Not Verified. Mail the mailbox sends for other
/// organizations (the default sender's) shows `for_others` instead of the mailbox's details.
pub async fn hold_mailbox(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    reason: &StatusReason,
    for_others: &StatusReason,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE messages SET status = 'held', \
         reason = CASE WHEN via_default_sender = 1 THEN $1 ELSE $2 END, \
         updated_at = $3, lease_owner = NULL, lease_until = NULL \
         WHERE mailbox_id = $4 AND (status = 'queued' OR (status = 'sending' AND lease_until < $3)) \
           AND EXISTS (SELECT 1 FROM mailboxes b WHERE b.id = $4 AND b.status <> 'verified')",
    )
    .bind(reason_json(Some(for_others)))
    .bind(reason_json(Some(reason)))
    .bind(to_db_time(now))
    .bind(mailbox_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Repairs what races can leave behind: held mail whose mailbox is Verified goes back to the
/// queue, and queued mail whose mailbox was deleted under it fails.
pub async fn sweep(
    conn: &mut Conn,
    deleted: &StatusReason,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    let released = sqlx::query(
        "UPDATE messages SET status = 'queued', reason = NULL, next_attempt_at = $1, updated_at = $1 \
         WHERE status = 'held' AND mailbox_id IN (SELECT id FROM mailboxes WHERE status = 'verified')",
    )
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    // Mail held for an organization with no mailbox goes to its Verified mailbox (the default
    // first), if one was verified while the mail was being accepted.
    let assigned = sqlx::query(
        "UPDATE messages SET status = 'queued', reason = NULL, next_attempt_at = $1, updated_at = $1, \
         mailbox_id = (SELECT b.id FROM mailboxes b WHERE b.org_id = messages.org_id AND b.status = 'verified' \
                       ORDER BY b.is_default DESC, b.id LIMIT 1), \
         mail_from = (SELECT b.username FROM mailboxes b WHERE b.org_id = messages.org_id AND b.status = 'verified' \
                      ORDER BY b.is_default DESC, b.id LIMIT 1) \
         WHERE status = 'held' AND mailbox_id IS NULL \
           AND EXISTS (SELECT 1 FROM mailboxes b WHERE b.org_id = messages.org_id AND b.status = 'verified')",
    )
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    let orphaned = sqlx::query(
        "UPDATE messages SET status = 'failed', reason = $1, updated_at = $2, finished_at = $2 \
         WHERE status = 'queued' AND mailbox_id IS NULL",
    )
    .bind(reason_json(Some(deleted)))
    .bind(to_db_time(now))
    .execute(&mut *conn)
    .await?;
    Ok(released.rows_affected() + assigned.rows_affected() + orphaned.rows_affected())
}

/// Releases held mail once a mailbox is Verified: its own, and the organization's mail that
/// was held for want of any mailbox.
pub async fn release_held(
    conn: &mut Conn,
    org_id: OrgId,
    mailbox_id: MailboxId,
    mail_from: &str,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    let own = sqlx::query(
        "UPDATE messages SET status = 'queued', reason = NULL, next_attempt_at = $1, updated_at = $1 \
         WHERE mailbox_id = $2 AND status = 'held'",
    )
    .bind(to_db_time(now))
    .bind(mailbox_id.to_string())
    .execute(&mut *conn)
    .await?;
    let unassigned = sqlx::query(
        "UPDATE messages SET status = 'queued', reason = NULL, next_attempt_at = $1, updated_at = $1, \
         mailbox_id = $2, mail_from = $3 \
         WHERE org_id = $4 AND mailbox_id IS NULL AND status = 'held'",
    )
    .bind(to_db_time(now))
    .bind(mailbox_id.to_string())
    .bind(mail_from)
    .bind(org_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(own.rows_affected() + unassigned.rows_affected())
}

/// Fails the queued and held mail of a mailbox being deleted.
pub async fn fail_mailbox(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    reason: &StatusReason,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE messages SET status = 'failed', reason = $1, updated_at = $2, finished_at = $2 \
         WHERE mailbox_id = $3 AND status IN ('queued', 'held')",
    )
    .bind(reason_json(Some(reason)))
    .bind(to_db_time(now))
    .bind(mailbox_id.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// Cancels a queued or held message of the organization. Answers the message as it now is
/// (`cancelled`, or the status that kept it from being cancelled), or `None` when the
/// organization has no such message. A message a worker holds (`sending`) is not touched.
pub async fn cancel(
    conn: &mut Conn,
    org_id: OrgId,
    id: &str,
    reason: &StatusReason,
    now: OffsetDateTime,
) -> StoreResult<Option<Message>> {
    sqlx::query(
        "UPDATE messages SET status = 'cancelled', reason = $1, updated_at = $2, finished_at = $2, \
         lease_owner = NULL, lease_until = NULL \
         WHERE org_id = $3 AND id = $4 AND status IN ('queued', 'held')",
    )
    .bind(reason_json(Some(reason)))
    .bind(to_db_time(now))
    .bind(org_id.to_string())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    get(conn, org_id, id).await
}

/// Fails the mail held since before `cutoff` (its mailbox was never verified again). A held
/// message is not changed while it waits, so its last change is when it was held. Answers each
/// message failed, for the alerts.
pub async fn expire_held(
    conn: &mut Conn,
    cutoff: OffsetDateTime,
    reason: &StatusReason,
    now: OffsetDateTime,
) -> StoreResult<Vec<Message>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE messages SET status = 'failed', reason = $1, updated_at = $2, finished_at = $2 \
         WHERE status = 'held' AND updated_at < $3 RETURNING {COLUMNS}"
    )))
    .bind(reason_json(Some(reason)))
    .bind(to_db_time(now))
    .bind(to_db_time(cutoff))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Drops the bodies of messages that ended before `cutoff`; their metadata stays.
pub async fn purge_bodies(
    conn: &mut Conn,
    cutoff: OffsetDateTime,
    now: OffsetDateTime,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE messages SET body = NULL, purged_at = $1 \
         WHERE body IS NOT NULL AND finished_at IS NOT NULL AND finished_at < $2",
    )
    .bind(to_db_time(now))
    .bind(to_db_time(cutoff))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
