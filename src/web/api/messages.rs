//! `/api/v1/messages`: hand Herald a message (JSON or raw MIME) and follow it to `sent` or
//! `failed`. A 202 is answered only once the message is committed to the database.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::ListParams;
use crate::domain::mailbox::StatusReason;
use crate::domain::message::{Message, MessageSource, MessageStatus, SmtpReply};
use crate::domain::{FieldError, MailboxId};
use crate::services::send::{self, Body, Caller, SendRequest, Submission};
use crate::services::views;
use crate::web::AppState;
use crate::web::auth::{Access, Principal};
use crate::web::error::{ApiError, Problem};
use crate::web::extract::ApiQuery;

/// The answer to an accepted message.
#[derive(Serialize, ToSchema)]
pub struct AcceptedOut {
    pub id: String,
    /// `queued`, or `held` while the mailbox (or the organization) has no Verified mailbox.
    pub status: MessageStatus,
}

/// A message in the outbox.
#[derive(Serialize, ToSchema)]
pub struct MessageOut {
    pub id: String,
    pub status: MessageStatus,
    /// The mailbox it leaves through; null while held for an organization with no mailbox.
    pub mailbox: Option<String>,
    /// Sent by the installation's default sender for the organization.
    pub via_default_sender: bool,
    /// `api`, `cli` or `relay`.
    pub source: MessageSource,
    pub from: String,
    /// Every envelope recipient (To, Cc and Bcc).
    pub recipients: Vec<String>,
    pub subject: String,
    /// The Message-ID header, the same on every attempt.
    pub message_id: String,
    pub size: u64,
    pub attempts: u32,
    /// The last reply of the SMTP server (or what went wrong on the way to it).
    pub last_reply: Option<SmtpReply>,
    /// Why it failed, or why it is held, with what to do.
    pub reason: Option<StatusReason>,
    /// When it is tried next, while queued.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// The body was purged after the retention period; the rest stays.
    pub body_purged: bool,
}

impl From<Message> for MessageOut {
    fn from(m: Message) -> Self {
        Self {
            next_attempt_at: (m.status == MessageStatus::Queued).then_some(m.next_attempt_at),
            id: m.id,
            status: m.status,
            mailbox: m.mailbox_id.map(|id| id.to_string()),
            via_default_sender: m.via_default_sender,
            source: m.source,
            from: m.mail_from,
            recipients: m.recipients,
            subject: m.subject,
            message_id: m.message_id_header,
            size: m.size,
            attempts: m.attempts,
            last_reply: m.last_reply,
            reason: m.reason,
            created_at: m.created_at,
            updated_at: m.updated_at,
            sent_at: m.sent_at,
            finished_at: m.finished_at,
            body_purged: m.purged_at.is_some(),
        }
    }
}

super::list_type!(MessageList, MessageOut);

/// `?mailbox=` of a raw MIME submission.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SendParams {
    /// The mailbox (id or name) for raw MIME; JSON names it in the body.
    pub mailbox: Option<String>,
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Sends a message. With `Content-Type: application/json` the body is a [`SendRequest`];
/// with `message/rfc822` it is the message itself, whose From must be the mailbox's address.
/// The reply comes once the message is stored durably. An `Idempotency-Key` (kept 24 hours)
/// makes a retry of the same request return the first answer.
#[utoipa::path(post, path = "/api/v1/messages", tag = "messages", params(SendParams,
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe for 24 hours")),
    request_body(content(
        (SendRequest = "application/json"),
        (String = "message/rfc822")
    )),
    responses(
        (status = 202, body = AcceptedOut, description = "Stored durably; delivered by the workers"),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub async fn send_message(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<SendParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if principal.access == Access::Member {
        return Err(ApiError::forbidden(
            "Members may read the message log but not send; use a sender key or an admin account.",
        ));
    }
    let kind = media_type(&headers);
    let idempotency_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::field("Idempotency-Key", "must be visible ASCII characters")
                })?
                .to_owned(),
        ),
        None => None,
    };
    let mut digest = sha2::Sha256::new();
    digest.update(kind.as_bytes());
    digest.update([0]);
    digest.update(params.mailbox.as_deref().unwrap_or_default().as_bytes());
    digest.update([0]);
    digest.update(&body);
    let request_digest: String = digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (mailbox, body) = match kind.as_str() {
        "application/json" => {
            if params.mailbox.is_some() {
                return Err(ApiError::field(
                    "mailbox",
                    "name the mailbox in the JSON body, not the query string",
                ));
            }
            let request: SendRequest = super::super::extract::parse_json_bytes(&body)?;
            (request.mailbox.clone(), Body::Json(Box::new(request)))
        }
        "message/rfc822" => (params.mailbox, Body::Mime(body.to_vec())),
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "Send JSON (Content-Type: application/json) or a MIME message (Content-Type: message/rfc822).",
            ));
        }
    };
    let caller = Caller {
        org_id: principal.org_id,
        api_key_id: principal.api_key,
        allowed: principal.mailboxes.clone(),
        source: MessageSource::Api,
    };
    let accepted = send::accept(
        &state.access.store,
        &state.access.config.outbox,
        &caller,
        Submission {
            mailbox,
            body,
            idempotency_key,
            request_digest,
        },
        state.access.now(),
    )
    .await?;
    if !accepted.replayed && accepted.status == MessageStatus::Queued {
        state.outbox.wake_for(accepted.mailbox_id);
    }
    let mut response = (
        StatusCode::ACCEPTED,
        Json(AcceptedOut {
            id: accepted.id.clone(),
            status: accepted.status,
        }),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/messages/{}", accepted.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if accepted.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// What the caller may read: a sender key reads what it sent; a key limited to mailboxes reads
/// their mail.
fn visible(principal: &Principal, message: &Message) -> bool {
    let own = principal.access != Access::Sender
        || principal.api_key.map(|k| k.to_string()) == message.api_key_id;
    let mailbox = message.mailbox_id.is_none_or(|m| principal.may_use(m));
    own && mailbox
}

/// One message, with its status, attempts and the last SMTP reply.
#[utoipa::path(get, path = "/api/v1/messages/{id}", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = MessageOut), (status = 404, body = Problem)))]
pub async fn get_message(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<MessageOut>, ApiError> {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::not_found("message"));
    }
    let message = views::message(&state.access.store, principal.org_id, &id)
        .await?
        .filter(|m| visible(&principal, m))
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(message.into()))
}

/// Cancels a message that has not gone yet: a queued or held message becomes `cancelled` and
/// is never sent. One being sent, sent or failed answers 409. Members may not cancel; a sender
/// key cancels what it sent.
#[utoipa::path(post, path = "/api/v1/messages/{id}/cancel", tag = "messages", params(("id" = String, Path)),
    responses((status = 200, body = MessageOut, description = "Cancelled (or already cancelled)"),
        (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn cancel_message(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<MessageOut>, ApiError> {
    if principal.access == Access::Member {
        return Err(ApiError::forbidden(
            "Members may read the message log but not cancel mail; ask an admin.",
        ));
    }
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::not_found("message"));
    }
    let message = crate::services::messages::cancel(
        &state.access.store,
        principal.org_id,
        &id,
        |m| visible(&principal, m),
        &principal.actor,
        state.access.now(),
    )
    .await?;
    Ok(Json(message.into()))
}

/// `?status=&mailbox=&limit=&cursor=` of the message list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    /// `queued`, `sending`, `sent`, `failed`, `held` or `cancelled`.
    pub status: Option<String>,
    /// A mailbox id or name.
    pub mailbox: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The organization's messages, newest first. A sender key lists what it sent.
#[utoipa::path(get, path = "/api/v1/messages", tag = "messages", params(MessageFilter),
    responses((status = 200, body = MessageList), (status = 422, body = Problem)))]
pub async fn list_messages(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(filter): ApiQuery<MessageFilter>,
) -> Result<Json<MessageList>, ApiError> {
    let paging = ListParams {
        limit: filter.limit,
        cursor: filter.cursor,
    };
    let (limit, before) = (paging.limit()?, paging.after()?);
    let status = filter
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<MessageStatus>()
                .map_err(|e| ApiError::validation(vec![FieldError::new("status", e)]))
        })
        .transpose()?;
    let mailbox_id: Option<MailboxId> = match filter.mailbox.as_deref().filter(|m| !m.is_empty()) {
        Some(wanted) => Some(
            views::find_mailbox(&state.access.store, principal.org_id, wanted)
                .await?
                .ok_or_else(|| {
                    ApiError::field(
                        "mailbox",
                        format!("the organization has no mailbox called or with the id `{wanted}`"),
                    )
                })?
                .id,
        ),
        None => None,
    };
    let api_key = (principal.access == Access::Sender)
        .then(|| principal.api_key.map(|k| k.to_string()))
        .flatten();
    let page = views::messages(
        &state.access.store,
        principal.org_id,
        &views::MessageFilter {
            status,
            mailbox_id,
            api_key_id: api_key.as_deref(),
            mailboxes: principal.mailboxes.as_deref(),
        },
        before.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(MessageList::from_page(page, MessageOut::from)))
}
