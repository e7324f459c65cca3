//! The outbox: messages, their claims under a lease, and the idempotency keys that make a
//! client's retry return the first answer.
//!
//! A worker claims one due message at a time in one statement (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; SQLite runs one writer at a time), and every later write names the lease owner,
//! so a worker whose lease expired and was taken over cannot overwrite the new owner's outcome.

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{
    Backend, Conn, Page, Store, StoreError, StoreResult, from_db_opt_time, from_db_time, into_page,
    parse_id, to_db_time,
};
use crate::domain::mailbox::StatusReason;
use crate::domain::message::{Message, MessageSource, MessageStatus, SmtpReply};
use crate::domain::{MailboxId, OrgId};

const COLUMNS: &str = "id, org_id, mailbox_id, mailbox_explicit, via_default_sender, api_key_id, source, status, \
     mail_from, recipients, subject, message_id_header, size, attempts, next_attempt_at, last_code, last_enhanced, \
     last_text, reason, created_at, updated_at, sent_at, finished_at, purged_at";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("message {what}: {e}"))
}

fn from_row(row: &AnyRow) -> StoreResult<Message> {
    let text = |name: &str| row.try_get::<String, _>(name);
    let mailbox: Option<String> = row.try_get("mailbox_id")?;
    let recipients: String = row.try_get("recipients")?;
    let reason: Option<String> = row.try_get("reason")?;
    let last_code: Option<i64> = row.try_get("last_code")?;
    let last_text: Option<String> = row.try_get("last_text")?;
    Ok(Message {
        id: text("id")?,
        org_id: parse_id(&text("org_id")?)?,
        mailbox_id: mailbox.as_deref().map(parse_id).transpose()?,
        mailbox_explicit: row.try_get::<i64, _>("mailbox_explicit")? != 0,
        via_default_sender: row.try_get::<i64, _>("via_default_sender")? != 0,
        api_key_id: row.try_get("api_key_id")?,
        source: text("source")?.parse().map_err(|e| corrupt("source", e))?,
        status: text("status")?.parse().map_err(|e| corrupt("status", e))?,
        mail_from: text("mail_from")?,
        recipients: serde_json::from_str(&recipients).map_err(|e| corrupt("recipients", e))?,
        subject: text("subject")?,
        message_id_header: text("message_id_header")?,
        size: u64::try_from(row.try_get::<i64, _>("size")?).unwrap_or(0),
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
        next_attempt_at: from_db_time(row.try_get("next_attempt_at")?)?,
        last_reply: last_text.map(|text| SmtpReply {
            code: last_code.and_then(|c| u16::try_from(c).ok()),
            enhanced: row.try_get("last_enhanced").ok().flatten(),
            text,
        }),
        reason: reason
            .map(|r| serde_json::from_str::<StatusReason>(&r).map_err(|e| corrupt("reason", e)))
            .transpose()?,
        created_at: from_db_time(row.try_get("created_at")?)?,
        updated_at: from_db_time(row.try_get("updated_at")?)?,
        sent_at: from_db_opt_time(row.try_get("sent_at")?)?,
        finished_at: from_db_opt_time(row.try_get("finished_at")?)?,
        purged_at: from_db_opt_time(row.try_get("purged_at")?)?,
    })
}

fn reason_json(reason: Option<&StatusReason>) -> Option<String> {
    reason.map(|r| serde_json::to_string(r).unwrap_or_default())
}

/// How the body is kept: a validated request composed at send time, or MIME as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Draft,
    Mime,
}

impl BodyKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Mime => "mime",
        }
    }
}

/// A message to insert.
pub struct NewMessage {
    pub id: String,
    pub org_id: OrgId,
    pub mailbox_id: Option<MailboxId>,
    pub mailbox_explicit: bool,
    pub via_default_sender: bool,
    pub api_key_id: Option<String>,
    pub source: MessageSource,
    pub status: MessageStatus,
    pub mail_from: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub message_id_header: String,
    pub body_kind: BodyKind,
    pub body: Vec<u8>,
    pub reason: Option<StatusReason>,
    pub now: OffsetDateTime,
}

pub async fn insert(conn: &mut Conn, m: &NewMessage) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO messages (id, org_id, mailbox_id, mailbox_explicit, via_default_sender, api_key_id, source, status, \
         mail_from, recipients, recipient_count, subject, message_id_header, body_kind, body, size, attempts, \
         next_attempt_at, reason, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 0, $17, $18, $17, $17)",
    )
    .bind(m.id.as_str())
    .bind(m.org_id.to_string())
    .bind(m.mailbox_id.map(|id| id.to_string()))
    .bind(i64::from(m.mailbox_explicit))
    .bind(i64::from(m.via_default_sender))
    .bind(m.api_key_id.as_deref())
    .bind(m.source.as_str())
    .bind(m.status.as_str())
    .bind(m.mail_from.as_str())
    .bind(serde_json::to_string(&m.recipients).unwrap_or_else(|_| "[]".into()))
    .bind(m.recipients.len() as i64)
    .bind(m.subject.as_str())
    .bind(m.message_id_header.as_str())
    .bind(m.body_kind.as_str())
    .bind(m.body.clone())
    .bind(m.body.len() as i64)
    .bind(to_db_time(m.now))
    .bind(reason_json(m.reason.as_ref()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts a message and returns once it is on disk.
///
/// On SQLite every commit waits for the disk, one at a time. Messages that arrive while a
/// commit is on its way are inserted together and share the next one: twenty sessions
/// sending at once cost one `fsync`, not twenty. (PostgreSQL groups concurrent commits
/// itself.)
pub async fn insert_durably(store: &Store, m: NewMessage) -> StoreResult<()> {
    if store.backend() == Backend::Postgres {
        let mut conn = store.conn().await?;
        return insert(&mut conn, &m).await;
    }
    // In a task of its own from here on: a caller that goes away (a client that hung up) must
    // neither leave its message waiting for whoever commits next nor others without an answer.
    let store = store.clone();
    tokio::spawn(async move {
        let (done, answer) = tokio::sync::oneshot::channel();
        store.pending_inserts().push((m, done));
        let turn = store.write_permit().await;
        let batch = std::mem::take(&mut *store.pending_inserts());
        if !batch.is_empty() {
            let _turn = turn;
            commit_batch(&store, batch).await;
        }
        answer.await.unwrap_or_else(|_| stopped())
    })
    .await
    .unwrap_or_else(|_| stopped())
}

fn stopped() -> StoreResult<()> {
    Err(StoreError::Corrupt(
        "the commit of a message stopped".into(),
    ))
}

/// A message waiting for the next commit, and where to say how it went.
pub(crate) type PendingInsert = (NewMessage, tokio::sync::oneshot::Sender<StoreResult<()>>);

async fn commit_batch(store: &Store, batch: Vec<PendingInsert>) {
    let together = batch.len() > 1;
    if together {
        let inserted = async {
            let mut tx = store.begin().await?;
            for (m, _) in &batch {
                insert(&mut tx, m).await?;
            }
            tx.commit().await?;
            StoreResult::Ok(())
        }
        .await;
        if inserted.is_ok() {
            for (_, done) in batch {
                let _ = done.send(Ok(()));
            }
            return;
        }
    }
    // One at a time (a batch that failed: each message then gets its own answer).
    for (m, done) in batch {
        let inserted = async {
            let mut conn = store.conn().await?;
            insert(&mut conn, &m).await
        }
        .await;
        let _ = done.send(inserted);
    }
}

/// A message of the organization.
pub async fn get(conn: &mut Conn, org_id: OrgId, id: &str) -> StoreResult<Option<Message>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages WHERE id = $1 AND org_id = $2"
    )))
    .bind(id)
    .bind(org_id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// A message of any organization (for the operator's command line and the workers).
pub async fn get_any(conn: &mut Conn, id: &str) -> StoreResult<Option<Message>> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// A message's body and how it is kept; `None` once purged.
pub async fn body(conn: &mut Conn, id: &str) -> StoreResult<Option<(BodyKind, Vec<u8>)>> {
    let row = sqlx::query("SELECT body_kind, body FROM messages WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref()
        .map(body_from_row)
        .transpose()
        .map(Option::flatten)
}

fn body_from_row(row: &AnyRow) -> StoreResult<Option<(BodyKind, Vec<u8>)>> {
    let kind = match row.try_get::<String, _>("body_kind")?.as_str() {
        "draft" => BodyKind::Draft,
        "mime" => BodyKind::Mime,
        other => return Err(corrupt("body_kind", other)),
    };
    Ok(row
        .try_get::<Option<Vec<u8>>, _>("body")?
        .map(|body| (kind, body)))
}

/// A claimed message and its body (`None` once purged).
pub struct Claimed {
    pub message: Message,
    pub body: Option<(BodyKind, Vec<u8>)>,
}

/// What a message list is narrowed to.
#[derive(Default)]
pub struct Filter<'a> {
    pub status: Option<MessageStatus>,
    pub mailbox_id: Option<MailboxId>,
    /// Only what this API key sent.
    pub api_key_id: Option<&'a str>,
    /// Only through these mailboxes.
    pub mailboxes: Option<&'a [MailboxId]>,
}

/// One page of the organization's messages, newest first.
pub async fn list(
    conn: &mut Conn,
    org_id: OrgId,
    filter: &Filter<'_>,
    before: Option<&str>,
    limit: usize,
) -> StoreResult<Page<Message>> {
    let mut sql = format!(
        "SELECT {COLUMNS} FROM messages WHERE org_id = $1 AND ($2 = '' OR id < $2) \
         AND ($3 = '' OR status = $3) AND ($4 = '' OR mailbox_id = $4) AND ($5 = '' OR api_key_id = $5)"
    );
    if let Some(allowed) = filter.mailboxes {
        // Ids are UUIDs: parsed, so safe to inline.
        let ids: Vec<String> = allowed.iter().map(|id| format!("'{id}'")).collect();
        if ids.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            sql.push_str(&format!(" AND mailbox_id IN ({})", ids.join(", ")));
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT $6");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(org_id.to_string())
        .bind(before.unwrap_or(""))
        .bind(filter.status.map(|s| s.as_str()).unwrap_or(""))
        .bind(filter.mailbox_id.map(|m| m.to_string()).unwrap_or_default())
        .bind(filter.api_key_id.unwrap_or(""))
        .bind((limit + 1) as i64)
        .fetch_all(&mut *conn)
        .await?;
    let items = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
    Ok(into_page(items, limit, |m| m.id.clone()))
}

/// Mailboxes with mail due now, and how much: queued messages whose time has come, and
/// claimed messages whose lease ran out (their worker died). Mailboxes backing off after a
/// rate-limit reply wait.
pub async fn due_mailboxes(
    conn: &mut Conn,
    now: OffsetDateTime,
) -> StoreResult<Vec<(MailboxId, i64)>> {
    let rows = sqlx::query(
        "SELECT m.mailbox_id AS mailbox_id, COUNT(*) AS due FROM messages m \
         LEFT JOIN mailbox_throttle t ON t.mailbox_id = m.mailbox_id \
         WHERE m.mailbox_id IS NOT NULL \
           AND ((m.status = 'queued' AND m.next_attempt_at <= $1) OR (m.status = 'sending' AND m.lease_until < $1)) \
           AND (t.backoff_until IS NULL OR t.backoff_until <= $2) \
         GROUP BY m.mailbox_id",
    )
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

/// Claims the mailbox's next due message for `owner` until `lease_until`, counting an attempt,
/// and reads its body in the same statement.
pub async fn claim(
    conn: &mut Conn,
    mailbox_id: MailboxId,
    owner: &str,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
) -> StoreResult<Option<Claimed>> {
    // The next message is found through `messages_mailbox` (mailbox, status, time) without
    // reading the mailbox's sent mail: a plain `OR` over both statuses made SQLite walk every
    // message the mailbox ever had, on every claim.
    let next = if super::is_postgres(conn) {
        // PostgreSQL allows no `FOR UPDATE` beside a `UNION`; the status list keeps its
        // index scan to the two statuses.
        "SELECT id FROM messages WHERE mailbox_id = $4 AND status IN ('queued', 'sending') \
           AND ((status = 'queued' AND next_attempt_at <= $3) OR (status = 'sending' AND lease_until < $3)) \
         ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
    } else {
        // Index order breaks ties in the order the mail came in.
        "SELECT id FROM ( \
           SELECT * FROM (SELECT id, next_attempt_at FROM messages \
             WHERE mailbox_id = $4 AND status = 'queued' AND next_attempt_at <= $3 \
             ORDER BY next_attempt_at LIMIT 1) \
           UNION ALL \
           SELECT * FROM (SELECT id, next_attempt_at FROM messages \
             WHERE mailbox_id = $4 AND status = 'sending' AND lease_until < $3 \
             ORDER BY next_attempt_at LIMIT 1)) \
         ORDER BY next_attempt_at LIMIT 1"
    };
    let sql = format!(
        "UPDATE messages SET status = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1, updated_at = $3, \
           attempted_by = $5 \
         WHERE id = ({next}) \
         RETURNING {COLUMNS}, body_kind, body"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(to_db_time(lease_until))
        .bind(to_db_time(now))
        .bind(mailbox_id.to_string())
        // The claim's token is `instance/claim`.
        .bind(owner.split('/').next().unwrap_or(owner))
        .fetch_optional(&mut *conn)
        .await?
        .as_ref()
        .map(|row| {
            Ok(Claimed {
                message: from_row(row)?,
                body: body_from_row(row)?,
            })
        })
        .transpose()
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

/// How a claimed message ends its attempt.
#[derive(Clone, Copy)]
pub enum Outcome<'a> {
    Sent {
        reply: &'a SmtpReply,
    },
    /// Back to the queue for another attempt at `next_attempt_at`.
    Retry {
        next_attempt_at: OffsetDateTime,
        reply: Option<&'a SmtpReply>,
    },
    /// Back to the queue without counting the attempt (throttled, shutting down).
    Release {
        next_attempt_at: OffsetDateTime,
    },
    Failed {
        reply: Option<&'a SmtpReply>,
        reason: &'a StatusReason,
    },
    Held {
        reply: Option<&'a SmtpReply>,
        reason: &'a StatusReason,
    },
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

/// Counts of the organization's messages by status (for the message log).
pub async fn counts(conn: &mut Conn, org_id: OrgId) -> StoreResult<Vec<(MessageStatus, i64)>> {
    let rows =
        sqlx::query("SELECT status, COUNT(*) AS n FROM messages WHERE org_id = $1 GROUP BY status")
            .bind(org_id.to_string())
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>("status")?
                    .parse()
                    .map_err(|e| corrupt("status", e))?,
                row.try_get::<i64, _>("n")?,
            ))
        })
        .collect()
}

/// The queue's depth: every organization's messages still to send, by status. Sent and
/// failed mail is not counted here (it only grows; the send counters tell it), so a scrape
/// reads the `messages_due` index, not the whole history.
pub async fn counts_all(conn: &mut Conn) -> StoreResult<Vec<(MessageStatus, i64)>> {
    let rows = sqlx::query(
        "SELECT status, COUNT(*) AS n FROM messages WHERE status IN ('queued', 'sending', 'held') GROUP BY status",
    )
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<String, _>("status")?
                    .parse()
                    .map_err(|e| corrupt("status", e))?,
                row.try_get::<i64, _>("n")?,
            ))
        })
        .collect()
}

/// A stored idempotency key.
pub struct IdempotencyRecord {
    pub request_digest: String,
    pub message_id: String,
    pub first_status: MessageStatus,
}

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
