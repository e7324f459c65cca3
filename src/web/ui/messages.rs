//! Settings › System › Outgoing Mail › Message log: the organization's messages, newest first,
//! narrowed by status and mailbox with plain GET links, paged by cursor, and one page per message.
//! Admins and members read it; every query names the signed-in user's organization, so another
//! organization's messages never appear and their ids answer 404.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::extract::{ButtonForm, SignedForm, SignedIn};
use super::{Frame, notice, render, when};
use crate::domain::MailboxId;
use crate::domain::message::{Message, MessageStatus};
use crate::services::ServiceError;
use crate::services::views::{self, MessageFilter};
use crate::web::AppState;
use crate::web::error::UiError;

/// Messages on one page of the log.
const PAGE_SIZE: usize = 50;

const LOG_PATH: &str = "/settings/system/outgoing-mail/messages";

/// The word a reader sees for a status, and the badge it wears.
fn status_word(status: MessageStatus) -> (&'static str, &'static str) {
    match status {
        MessageStatus::Queued => ("Queued", "neutral"),
        MessageStatus::Sending => ("Sending", "neutral"),
        MessageStatus::Sent => ("Sent", "ok"),
        MessageStatus::Failed => ("Failed", "bad"),
        MessageStatus::Held => ("Held", "warn"),
        MessageStatus::Cancelled => ("Cancelled", "neutral"),
    }
}

const STATUSES: [MessageStatus; 6] = [
    MessageStatus::Queued,
    MessageStatus::Sending,
    MessageStatus::Sent,
    MessageStatus::Failed,
    MessageStatus::Held,
    MessageStatus::Cancelled,
];

/// `?status=&mailbox=&before=`; an empty value means "all".
#[derive(Deserialize, Default)]
pub(super) struct LogQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    mailbox: String,
    #[serde(default)]
    before: String,
}

struct StatusChoice {
    value: &'static str,
    word: &'static str,
    count: i64,
    selected: bool,
}

struct MailboxChoice {
    id: String,
    name: String,
    selected: bool,
}

/// A message as the log shows it: every value already in words.
struct MessageRow {
    id: String,
    status: &'static str,
    badge: &'static str,
    subject: String,
    recipients: String,
    from: String,
    mailbox: String,
    attempts: u32,
    reply: Option<ReplyView>,
    reason: Option<String>,
    action: Option<String>,
    accepted: String,
    finished: String,
    next_attempt: String,
    /// Queued or held: an admin may still cancel it.
    cancellable: bool,
}

struct ReplyView {
    code: String,
    enhanced: String,
    text: String,
}

fn mailbox_label(m: &Message, names: &HashMap<MailboxId, String>) -> String {
    // The default sender is a mailbox of the operator's organization, not among `names`.
    if m.via_default_sender {
        return "Default sender of the installation".into();
    }
    m.mailbox_id
        .and_then(|id| names.get(&id).cloned())
        .unwrap_or_else(|| "—".into())
}

fn row(m: Message, names: &HashMap<MailboxId, String>) -> MessageRow {
    let (status, badge) = status_word(m.status);
    MessageRow {
        cancellable: matches!(m.status, MessageStatus::Queued | MessageStatus::Held),
        mailbox: mailbox_label(&m, names),
        id: m.id,
        status,
        badge,
        subject: if m.subject.is_empty() {
            "(no subject)".into()
        } else {
            m.subject
        },
        recipients: m.recipients.join(", "),
        from: m.mail_from,
        attempts: m.attempts,
        reply: m.last_reply.map(|r| ReplyView {
            code: r.code.map(|c| c.to_string()).unwrap_or_default(),
            enhanced: r.enhanced.unwrap_or_default(),
            text: r.text,
        }),
        // The reason belongs to mail that is stuck or refused; a queued retry shows its reply.
        reason: matches!(
            m.status,
            MessageStatus::Failed | MessageStatus::Held | MessageStatus::Cancelled
        )
        .then(|| m.reason.as_ref().map(|r| r.message.clone()))
        .flatten(),
        action: matches!(m.status, MessageStatus::Failed | MessageStatus::Held)
            .then(|| m.reason.as_ref().and_then(|r| r.action.clone()))
            .flatten(),
        accepted: when(Some(m.created_at)),
        finished: when(m.sent_at.or(m.finished_at)),
        next_attempt: if m.status == MessageStatus::Queued {
            when(Some(m.next_attempt_at))
        } else {
            "—".into()
        },
    }
}

#[derive(Template)]
#[template(path = "messages.html")]
struct MessageLogPage {
    frame: Frame,
    statuses: Vec<StatusChoice>,
    mailboxes: Vec<MailboxChoice>,
    filtered: bool,
    total: i64,
    messages: Vec<MessageRow>,
    /// The "Older" link, when there is an older page.
    older: Option<String>,
    /// The "Newest" link, when this is not the first page.
    newest: Option<String>,
}

fn bad_filter(message: &str) -> Response {
    notice(
        StatusCode::BAD_REQUEST,
        "This filter is not valid",
        message,
        LOG_PATH,
        "Show all messages",
    )
}

/// A link to the log with these filters (and cursor), each value URL-encoded.
fn log_link(status: &str, mailbox: &str, before: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if !status.is_empty() {
        query.append_pair("status", status);
    }
    if !mailbox.is_empty() {
        query.append_pair("mailbox", mailbox);
    }
    if let Some(before) = before {
        query.append_pair("before", before);
    }
    let query = query.finish();
    if query.is_empty() {
        LOG_PATH.to_owned()
    } else {
        format!("{LOG_PATH}?{query}")
    }
}

/// The message log.
pub(super) async fn message_log(
    State(state): State<AppState>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
    SignedIn { frame: f, .. }: SignedIn,
) -> Result<Response, UiError> {
    // Repeated or malformed parameters are a bad link, not a server error.
    let Ok(Query(q)) = query else {
        return Ok(bad_filter(
            "The address has parameters Herald does not understand.",
        ));
    };
    let status = match q.status.trim() {
        "" => None,
        s => match s.parse::<MessageStatus>() {
            Ok(s) => Some(s),
            Err(_) => {
                return Ok(bad_filter(
                    "Status must be one of Queued, Sending, Sent, Failed, Held or Cancelled.",
                ));
            }
        },
    };
    let mailbox = match q.mailbox.trim() {
        "" => None,
        m => match m.parse::<MailboxId>() {
            Ok(m) => Some(m),
            Err(_) => return Ok(bad_filter("There is no such mailbox.")),
        },
    };
    let before = Some(q.before.trim()).filter(|b| !b.is_empty());
    let mailboxes = views::mailboxes(&state.access.store, f.org_id, None, 500)
        .await?
        .items;
    let counts = views::message_counts(&state.access.store, f.org_id).await?;
    let filter = MessageFilter {
        status,
        mailbox_id: mailbox,
        ..Default::default()
    };
    let page = views::messages(&state.access.store, f.org_id, &filter, before, PAGE_SIZE).await?;
    let names: HashMap<MailboxId, String> =
        mailboxes.iter().map(|m| (m.id, m.name.clone())).collect();
    let count_of = |s: MessageStatus| {
        counts
            .iter()
            .filter(|(status, _)| *status == s)
            .map(|(_, n)| *n)
            .sum::<i64>()
    };
    let status_value = status.map(|s| s.as_str()).unwrap_or("");
    let mailbox_value = mailbox.map(|m| m.to_string()).unwrap_or_default();
    let page_view = MessageLogPage {
        statuses: STATUSES
            .iter()
            .map(|&s| StatusChoice {
                value: s.as_str(),
                word: status_word(s).0,
                count: count_of(s),
                selected: status == Some(s),
            })
            .collect(),
        mailboxes: mailboxes
            .iter()
            .map(|m| MailboxChoice {
                id: m.id.to_string(),
                name: m.name.clone(),
                selected: mailbox == Some(m.id),
            })
            .collect(),
        filtered: status.is_some() || mailbox.is_some(),
        total: counts.iter().map(|(_, n)| n).sum(),
        older: page
            .next_cursor
            .as_deref()
            .map(|cursor| log_link(status_value, &mailbox_value, Some(cursor))),
        newest: before.map(|_| log_link(status_value, &mailbox_value, None)),
        messages: page.items.into_iter().map(|m| row(m, &names)).collect(),
        frame: f,
    };
    Ok(render(StatusCode::OK, &page_view))
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    frame: Frame,
    m: MessageRow,
    source: &'static str,
    message_id: String,
    size: u64,
    updated: String,
    sent: String,
    finished: String,
    body_purged: Option<String>,
}

/// One message of the organization; any other id answers 404.
pub(super) async fn message_detail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    SignedIn { frame: mut f, .. }: SignedIn,
) -> Result<Response, UiError> {
    // The page's path as the Dismiss form returns to it: the id as routed, as before.
    f.path = format!("{LOG_PATH}/{id}");
    let Some(message) = views::message(&state.access.store, f.org_id, &id).await? else {
        return Err(UiError::NotFound);
    };
    let mailboxes = views::mailboxes(&state.access.store, f.org_id, None, 500)
        .await?
        .items;
    let names: HashMap<MailboxId, String> =
        mailboxes.iter().map(|m| (m.id, m.name.clone())).collect();
    let page = MessagePage {
        source: message.source.as_str(),
        message_id: message.message_id_header.clone(),
        size: message.size,
        updated: when(Some(message.updated_at)),
        sent: when(message.sent_at),
        finished: when(message.finished_at),
        body_purged: message.purged_at.map(|t| when(Some(t))),
        m: row(message, &names),
        frame: f,
    };
    Ok(render(StatusCode::OK, &page))
}

/// The route of a message's Cancel form.
pub(super) const CANCEL_PATH: &str = "/settings/system/outgoing-mail/messages/{id}/cancel";

/// Cancels a queued or held message of the signed-in admin's organization, as
/// `POST /api/v1/messages/{id}/cancel` does, and returns to the page the form was on.
pub(super) async fn cancel_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm<ButtonForm>,
) -> Result<Response, UiError> {
    let actor = signed.admin("Only an admin of the organization can cancel a message.")?;
    let (session, form) = (&signed.session, &signed.form);
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(UiError::NotFound);
    }
    let cancelled = crate::services::messages::cancel(
        &state.access.store,
        session.user.org_id,
        &id,
        |_| true,
        &actor,
        state.access.now(),
    )
    .await;
    match cancelled {
        Ok(_) => Ok(Redirect::to(&form.back_to()).into_response()),
        Err(ServiceError::NotFound(_)) => Err(UiError::NotFound),
        Err(ServiceError::Conflict(why)) => Ok(notice(
            StatusCode::CONFLICT,
            "This message can no longer be cancelled",
            &format!("{}.", capitalize(&why.message)),
            &form.back_to(),
            "Back",
        )),
        Err(e) => Err(e.into()),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
