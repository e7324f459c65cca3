//! Accepting mail: validate, choose the mailbox it leaves through (or hold it), and commit it
//! durably, with an idempotency key that makes a client's retry return the first answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

mod limits;
mod route;

use super::{ServiceError, ServiceResult};
use crate::config::OutboxSettings;
use crate::domain::message::{MessageSource, MessageStatus};
use crate::domain::{ApiKeyId, EmailAddress, Exceeded, FieldError, MailboxId, OrgId};
use crate::outbox::compose::{self, AttachmentIn, Draft};
use crate::store::messages::{BodyKind, NewMessage};
use crate::store::{self, Store, StoreError};

// How a relayed message's foreign `From` is treated, and the headers that name its originator:
// the outbox's types, offered here as part of the request the relay makes.
pub use crate::outbox::compose::ForeignFrom;
pub use crate::outbox::headers::ORIGINATOR;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: time::Duration = time::Duration::hours(24);
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A message as the API takes it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mailbox": "Support", "to": ["someone@example.com"], "subject": "Hello", "text": "Hi"}))]
pub struct SendRequest {
    /// The mailbox, by id or name; when omitted, the organization's default mailbox.
    pub mailbox: Option<String>,
    /// Recipients: an array, or a single address.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schema(value_type = Vec<String>)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// Recipients not shown in the message.
    #[serde(default)]
    pub bcc: Vec<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Overrides the mailbox's Reply-To.
    pub reply_to: Option<String>,
    /// `X-*`, `In-Reply-To`, `References`, `List-Unsubscribe`, `List-Unsubscribe-Post`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentIn>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// Who hands the message over.
#[derive(Clone, Debug)]
pub struct Caller {
    pub org_id: OrgId,
    pub api_key_id: Option<ApiKeyId>,
    /// The mailboxes an API key is limited to, when it is.
    pub allowed: Option<Vec<MailboxId>>,
    pub source: MessageSource,
}

/// The message's content.
pub enum Body {
    Json(Box<SendRequest>),
    /// `message/rfc822`, sent as given.
    Mime(Vec<u8>),
    /// A message that came in over the SMTP relay, to the envelope's recipients.
    Relayed {
        raw: Vec<u8>,
        recipients: Vec<String>,
        foreign_from: compose::ForeignFrom,
    },
}

/// What to accept.
pub struct Submission {
    /// The mailbox by id or name (for raw MIME it comes from the query string).
    pub mailbox: Option<String>,
    pub body: Body,
    pub idempotency_key: Option<String>,
    /// A digest of the request as received, to tell a retry from another request.
    pub request_digest: String,
}

/// The answer to an accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    pub status: MessageStatus,
    /// The mailbox it leaves through (none while held for the default sender).
    pub mailbox_id: Option<MailboxId>,
    /// The first answer to the same idempotency key.
    pub replayed: bool,
}

fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(vec![FieldError::new(field, message)])
}

fn check_idempotency_key(key: &str) -> ServiceResult<()> {
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(invalid(
            "Idempotency-Key",
            format!("must be 1–{MAX_IDEMPOTENCY_KEY} visible ASCII characters, such as a UUID"),
        ));
    }
    Ok(())
}

async fn replay(
    store: &Store,
    org_id: OrgId,
    key: &str,
    digest: &str,
    now: OffsetDateTime,
) -> ServiceResult<Option<Accepted>> {
    let mut conn = store.conn().await?;
    let Some(record) = store::messages::idempotency_get(&mut conn, org_id, key, now).await? else {
        return Ok(None);
    };
    if record.request_digest != digest {
        return Err(invalid(
            "Idempotency-Key",
            "was used for another request within the last 24 hours: use a new key for a new message",
        ));
    }
    Ok(Some(Accepted {
        id: record.message_id,
        status: record.first_status,
        mailbox_id: None,
        replayed: true,
    }))
}

/// Accepts a message: answers only once it is committed to the database (SQLite with
/// `synchronous=FULL`, PostgreSQL with `synchronous_commit=on`).
pub async fn accept(
    store: &Store,
    settings: &OutboxSettings,
    caller: &Caller,
    submission: Submission,
    now: OffsetDateTime,
) -> ServiceResult<Accepted> {
    if let Some(key) = &submission.idempotency_key {
        check_idempotency_key(key)?;
        if let Some(first) =
            replay(store, caller.org_id, key, &submission.request_digest, now).await?
        {
            return Ok(first);
        }
    }
    let is_mime = !matches!(submission.body, Body::Json(_));
    let route = route::route(
        store,
        settings,
        caller,
        submission.mailbox.as_deref(),
        is_mime,
    )
    .await?;
    let id = uuid::Uuid::now_v7().to_string();
    let domain = route
        .mailbox
        .as_ref()
        .and_then(|m| m.username.rsplit_once('@').map(|(_, d)| d.to_owned()))
        .unwrap_or_else(|| "herald.localhost".into());
    let message_id = compose::new_message_id(&id, &domain);
    let limit = route
        .mailbox
        .as_ref()
        .map(|m| m.effective_limits().recipients_per_message)
        .unwrap_or(500);
    let (recipients, subject, message_id, kind, body) = match submission.body {
        Body::Json(request) => {
            let org_reply_to = if route.via_default_sender {
                let mut conn = store.conn().await?;
                store::orgs::get(&mut conn, caller.org_id)
                    .await?
                    .and_then(|o| o.reply_to)
            } else {
                None
            };
            let draft = draft(*request, settings, limit, message_id, now, org_reply_to)?;
            let body = serde_json::to_vec(&draft)
                .map_err(|e| ServiceError::internal(format!("cannot keep the message: {e}")))?;
            (
                draft.recipients(),
                draft.subject.clone(),
                draft.message_id.clone(),
                BodyKind::Draft,
                body,
            )
        }
        Body::Mime(_) | Body::Relayed { .. } => {
            let (raw, relayed) = match submission.body {
                Body::Mime(raw) => (raw, None),
                Body::Relayed {
                    raw,
                    recipients,
                    foreign_from,
                } => (raw, Some((recipients, foreign_from))),
                Body::Json(_) => unreachable!("matched above"),
            };
            if raw.len() as u64 > settings.max_message_bytes {
                return Err(too_large(raw.len() as u64, settings.max_message_bytes));
            }
            let Some(mailbox) = &route.mailbox else {
                return Err(invalid(
                    "mailbox",
                    "raw MIME is sent as given, From included, so it needs a mailbox of the organization: name one with ?mailbox=",
                ));
            };
            let prepared = match &relayed {
                None => compose::prepare_raw(&raw, mailbox, &message_id, now),
                Some((recipients, foreign)) => {
                    compose::prepare_relayed(&raw, mailbox, recipients, *foreign, &message_id, now)
                }
            }
            .map_err(|refusal| match refusal {
                compose::Refusal::Invalid(errors) => ServiceError::Invalid(errors),
                compose::Refusal::DuplicateHeader(name) => duplicate_header(name),
            })?;
            if prepared.recipients.len() > limit as usize {
                return Err(too_many_recipients(prepared.recipients.len(), limit));
            }
            (
                prepared.recipients,
                prepared.subject,
                prepared.message_id,
                BodyKind::Mime,
                prepared.bytes,
            )
        }
    };
    limits::admit(
        store,
        settings,
        caller,
        route.via_default_sender,
        body.len() as u64,
        now,
    )
    .await?;
    let mail_from = route
        .mailbox
        .as_ref()
        .map(|m| m.username.clone())
        .unwrap_or_default();
    let new = NewMessage {
        id: id.clone(),
        org_id: caller.org_id,
        mailbox_id: route.mailbox.as_ref().map(|m| m.id),
        mailbox_explicit: route.explicit,
        via_default_sender: route.via_default_sender,
        api_key_id: caller.api_key_id.map(|k| k.to_string()),
        source: caller.source,
        status: route.status,
        mail_from,
        recipients,
        subject,
        message_id_header: message_id,
        body_kind: kind,
        body,
        reason: route.reason.clone(),
        now,
    };
    let key = submission
        .idempotency_key
        .as_ref()
        .map(|key| store::messages::NewKey {
            key: key.clone(),
            request_digest: submission.request_digest.clone(),
            expires_at: now + IDEMPOTENCY_TTL,
        });
    match store::messages::insert_durably(store, new, key).await {
        Ok(()) => Ok(Accepted {
            id,
            status: route.status,
            mailbox_id: route.mailbox.as_ref().map(|m| m.id),
            replayed: false,
        }),
        Err(StoreError::Conflict(_)) => {
            // A concurrent request with the same key committed first: answer as it was
            // answered.
            let key = submission.idempotency_key.as_deref().unwrap_or_default();
            match replay(store, caller.org_id, key, &submission.request_digest, now).await? {
                Some(first) => Ok(first),
                None => Err(ServiceError::Conflict(FieldError::new(
                    "Idempotency-Key",
                    "a request with this key is still being processed: retry in a moment",
                ))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// A field allowed once that came twice (raw MIME), or twice in other spellings (JSON).
fn duplicate_header(name: &str) -> ServiceError {
    ServiceError::Rejected {
        code: "duplicate_header",
        error: FieldError::new(
            format!("headers.{name}"),
            format!(
                "the message has more than one {name} header; RFC 5322 allows one, and receivers disagree on which counts: send it with one"
            ),
        ),
    }
}

fn too_large(size: u64, max: u64) -> ServiceError {
    ServiceError::Invalid(vec![FieldError::over(
        "body",
        format!(
            "the message is {size} bytes; at most {max} are accepted (HERALD_MAX_MESSAGE_BYTES)"
        ),
        Exceeded::Size,
    )])
}

fn too_many_recipients(count: usize, limit: u32) -> ServiceError {
    ServiceError::Invalid(vec![FieldError::over(
        "to",
        format!(
            "{count} recipients (To, Cc and Bcc together), but this mailbox's provider takes at most {limit} per message: split the message"
        ),
        Exceeded::Recipients,
    )])
}

/// Validates a JSON message into the draft that is kept.
pub(super) fn draft(
    request: SendRequest,
    settings: &OutboxSettings,
    recipient_limit: u32,
    message_id: String,
    now: OffsetDateTime,
    org_reply_to: Option<String>,
) -> ServiceResult<Draft> {
    let mut errors = Vec::new();
    let to = compose::check_addresses(&mut errors, "to", &request.to);
    let cc = compose::check_addresses(&mut errors, "cc", &request.cc);
    let bcc = compose::check_addresses(&mut errors, "bcc", &request.bcc);
    let count = request.to.len() + request.cc.len() + request.bcc.len();
    if count == 0 {
        errors.push(FieldError::new(
            "to",
            "needs at least one recipient (to, cc or bcc)",
        ));
    } else if count > recipient_limit as usize
        && let ServiceError::Invalid(e) = too_many_recipients(count, recipient_limit)
    {
        errors.extend(e);
    }
    let subject = match request.subject {
        Some(subject) => {
            compose::check_subject(&mut errors, &subject);
            subject
        }
        None => {
            errors.push(FieldError::new("subject", "is required (it may be empty)"));
            String::new()
        }
    };
    let reply_to = request.reply_to.as_deref().and_then(|r| {
        EmailAddress::parse_field("reply_to", r)
            .map_err(|e| errors.push(e))
            .ok()
            .map(|a| a.as_str().to_owned())
    });
    let headers: Vec<(String, String)> = request.headers.into_iter().collect();
    let headers = compose::check_headers(&mut errors, &headers);
    // `In-Reply-To` and `in-reply-to` are two keys of the JSON object but one header.
    if let Some(name) = crate::outbox::headers::SINGLE.into_iter().find(|single| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(single))
            .count()
            > 1
    }) {
        return Err(duplicate_header(name));
    }
    let attached = compose::check_attachments(&mut errors, &request.attachments);
    if request.text.is_none() && request.html.is_none() && request.attachments.is_empty() {
        errors.push(FieldError::new("text", "give a text or an HTML body"));
    }
    for (field, body) in [("text", &request.text), ("html", &request.html)] {
        if body.as_deref().is_some_and(|b| b.contains('\0')) {
            errors.push(FieldError::new(field, "must not contain NUL characters"));
        }
    }
    let size = attached
        + request.text.as_ref().map_or(0, |t| t.len() as u64)
        + request.html.as_ref().map_or(0, |t| t.len() as u64);
    if size > settings.max_message_bytes
        && let ServiceError::Invalid(e) = too_large(size, settings.max_message_bytes)
    {
        errors.extend(e);
    }
    if !errors.is_empty() {
        return Err(ServiceError::Invalid(errors));
    }
    Ok(Draft {
        to,
        cc,
        bcc,
        subject,
        text: request.text,
        html: request.html,
        reply_to,
        headers,
        attachments: request.attachments,
        message_id,
        date: now.unix_timestamp(),
        org_reply_to,
    })
}

#[cfg(test)]
mod compose_props;
