//! The outbox: messages, their claims under a lease, and the idempotency keys that make a
//! client's retry return the first answer.
//!
//! A worker claims one due message at a time in one statement (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL; SQLite runs one writer at a time), and every later write names the lease owner,
//! so a worker whose lease expired and was taken over cannot overwrite the new owner's outcome.
//!
//! This file holds the types and the row mapping; `insert` writes new messages, `queries`
//! reads them, `claim` is the workers' lease and outcome, `lifecycle` the changes to many
//! messages at once, and `idempotency` the keys.

mod claim;
mod idempotency;
mod insert;
mod lifecycle;
mod queries;

pub use claim::{claim, claim_many, due_mailboxes, extend_lease, finish};
pub use idempotency::{idempotency_get, idempotency_purge, idempotency_put};
pub(crate) use insert::PendingInsert;
pub use insert::{NewKey, insert, insert_durably};
pub use lifecycle::{
    cancel, expire_held, fail_mailbox, hold_mailbox, purge_bodies, release_held, sweep,
};
pub use queries::{body, counts, counts_all, get, get_any, list};

use sqlx::Row;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use super::{StoreError, StoreResult, from_db_opt_time, from_db_time, parse_id};
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

/// A stored idempotency key.
pub struct IdempotencyRecord {
    pub request_digest: String,
    pub message_id: String,
    pub first_status: MessageStatus,
}
