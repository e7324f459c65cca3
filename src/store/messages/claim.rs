//! The workers' side of the queue: which mailboxes have mail due, claiming the next message
//! under a lease, extending the lease, and recording the attempt's outcome.

use sqlx::Row;
use time::OffsetDateTime;

use super::{COLUMNS, Claimed, Outcome, body_from_row, from_row, reason_json};
use crate::domain::MailboxId;
use crate::store::{Conn, StoreResult, parse_id, to_db_time};

/// Mailboxes with mail due now, and how much (counted up to [`DUE_COUNTED`], more than a
/// mailbox may have connections): queued messages whose time has come, and claimed messages
/// whose lease ran out (their worker died). Mailboxes backing off after a rate-limit reply
/// wait.
///
/// Each mailbox is probed through `messages_mailbox_order` and counting stops at the cap, so a look
/// costs the same with 10 or 100,000 messages waiting (counting them all made every look walk
/// the whole queue, and the dispatcher looks on every accept while lanes may be added).
pub async fn due_mailboxes(
    conn: &mut Conn,
    now: OffsetDateTime,
) -> StoreResult<Vec<(MailboxId, i64)>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT mailbox_id, due FROM ( \
           SELECT b.id AS mailbox_id, \
             (SELECT COUNT(*) FROM (SELECT 1 FROM messages m \
                WHERE m.mailbox_id = b.id AND m.status = 'queued' AND m.next_attempt_at <= $1 LIMIT {DUE_COUNTED}) q) \
             + (SELECT COUNT(*) FROM (SELECT 1 FROM messages m \
                WHERE m.mailbox_id = b.id AND m.status = 'sending' AND m.lease_until < $1 LIMIT {DUE_COUNTED}) s) AS due \
           FROM mailboxes b LEFT JOIN mailbox_throttle t ON t.mailbox_id = b.id \
           WHERE t.backoff_until IS NULL OR t.backoff_until <= $2) d \
         WHERE due > 0"
    )))
    .bind(to_db_time(now))
    .bind(now.unix_timestamp() * 1000 + i64::from(now.millisecond()))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                parse_id(&row.try_get::<String, _>("mailbox_id")?)?,
                row.try_get::<i64, _>("due")?,
            ))
        })
        .collect()
}

/// How far [`due_mailboxes`] counts: the most connections a mailbox may have.
const DUE_COUNTED: u32 = 100;

/// Claims the mailbox's next due message for `owner` until `lease_until`, counting an attempt,
/// or `None` when none is due (see [`claim_many`]).
pub async fn claim(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    owner: &str,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
) -> StoreResult<Option<Claimed>> {
    Ok(claim_many(conn, mailbox_id, owner, now, lease_until, 1)
        .await?
        .pop())
}

/// Claims up to `limit` of the mailbox's due messages for `owner` until `lease_until`, in one
/// statement, each counting an attempt; oldest first. Messages whose worker died (their lease
/// ran out) come before queued ones.
pub async fn claim_many(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    owner: &str,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
) -> StoreResult<Vec<Claimed>> {
    // The next messages are found through `messages_mailbox_order` (mailbox, status, time, id),
    // in the order they came in, without reading the mailbox's sent mail: a plain `OR` over
    // both statuses made SQLite walk every message the mailbox ever had, on every claim.
    let next = if crate::store::is_postgres(conn) {
        // PostgreSQL allows no `FOR UPDATE` beside a `UNION`, and one query over both
        // statuses sorts every due message to take one (3 ms a claim with 5,000 queued). Two
        // index probes instead, each locking its first free rows.
        "id = ANY(ARRAY( \
           SELECT id FROM messages WHERE mailbox_id = $4 AND status = 'sending' AND lease_until < $3 \
             ORDER BY next_attempt_at, id LIMIT $6 FOR UPDATE SKIP LOCKED) || ARRAY( \
           SELECT id FROM messages WHERE mailbox_id = $4 AND status = 'queued' AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at, id LIMIT $6 FOR UPDATE SKIP LOCKED))"
    } else {
        "id IN (SELECT id FROM ( \
           SELECT * FROM (SELECT id, next_attempt_at, 0 AS late FROM messages \
             WHERE mailbox_id = $4 AND status = 'sending' AND lease_until < $3 \
             ORDER BY next_attempt_at, id LIMIT $6) \
           UNION ALL \
           SELECT * FROM (SELECT id, next_attempt_at, 1 AS late FROM messages \
             WHERE mailbox_id = $4 AND status = 'queued' AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at, id LIMIT $6)) \
         ORDER BY late, next_attempt_at, id LIMIT $6)"
    };
    let sql = format!(
        "UPDATE messages SET status = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3, \
           attempted_by = $5 \
         WHERE {next} \
         RETURNING {COLUMNS}, body_kind, body"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(to_db_time(lease_until))
        .bind(to_db_time(now))
        .bind(mailbox_id.to_string())
        // The claim's token is `instance/claim`.
        .bind(owner.split('/').next().unwrap_or(owner))
        .bind(i64::from(limit.max(1)))
        .fetch_all(&mut *conn)
        .await?;
    let mut claimed = rows
        .iter()
        .map(|row| {
            Ok(Claimed {
                message: from_row(row)?,
                body: body_from_row(row)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    // `RETURNING` keeps no order. Ids are UUIDv7: in the order the mail came in.
    claimed.sort_by(|a, b| {
        (a.message.next_attempt_at, &a.message.id).cmp(&(b.message.next_attempt_at, &b.message.id))
    });
    Ok(claimed)
}

/// Extends the lease of a claimed message.
pub async fn extend_lease(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    lease_until: OffsetDateTime,
) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE messages SET lease_until = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'sending'",
    )
    .bind(to_db_time(lease_until))
    .bind(id)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the end of an attempt, if `owner` still holds the message. Answers whether it did.
pub async fn finish(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    outcome: Outcome<'_>,
    now: OffsetDateTime,
) -> StoreResult<bool> {
    let now_db = to_db_time(now);
    let (status, next, reply, reason, sent, finished, undo) = match &outcome {
        Outcome::Sent { reply } => (
            "sent",
            now_db,
            Some(*reply),
            None,
            Some(now_db),
            Some(now_db),
            0,
        ),
        Outcome::Retry {
            next_attempt_at,
            reply,
        } => (
            "queued",
            to_db_time(*next_attempt_at),
            *reply,
            None,
            None,
            None,
            0,
        ),
        Outcome::Release { next_attempt_at } => (
            "queued",
            to_db_time(*next_attempt_at),
            None,
            None,
            None,
            None,
            1,
        ),
        Outcome::Failed { reply, reason } => (
            "failed",
            now_db,
            *reply,
            Some(*reason),
            None,
            Some(now_db),
            0,
        ),
        Outcome::Held { reply, reason } => ("held", now_db, *reply, Some(*reason), None, None, 0),
    };
    // A release keeps the last reply as it was.
    let keep_reply = i64::from(matches!(outcome, Outcome::Release { .. }));
    let done = sqlx::query(
        "UPDATE messages SET status = $1, next_attempt_at = $2, \
         last_code = CASE WHEN $11 = 1 THEN last_code ELSE $3 END, \
         last_enhanced = CASE WHEN $11 = 1 THEN last_enhanced ELSE $4 END, \
         last_text = CASE WHEN $11 = 1 THEN last_text ELSE $5 END, \
         reason = $6, sent_at = $7, finished_at = $8, attempts = attempts - $9, lease_owner = NULL, lease_until = NULL, \
         updated_at = $10 \
         WHERE id = $12 AND lease_owner = $13 AND status = 'sending'",
    )
    .bind(status)
    .bind(next)
    .bind(reply.and_then(|r| r.code).map(i64::from))
    .bind(reply.and_then(|r| r.enhanced.clone()))
    .bind(reply.map(|r| r.text.clone()))
    .bind(reason_json(reason))
    .bind(sent)
    .bind(finished)
    .bind(undo)
    .bind(now_db)
    .bind(keep_reply)
    .bind(id)
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
