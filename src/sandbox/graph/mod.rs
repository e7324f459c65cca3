//! The sandbox's Microsoft Graph `sendMail`: `POST {base}/v1.0/users/{id|UPN}/sendMail` and
//! `POST {base}/v1.0/me/sendMail`, with a bearer token the sandbox issued carrying
//! `https://graph.microsoft.com/Mail.Send` (or `Mail.Send.Shared`).
//!
//! Both body forms are taken: base64 MIME (`Content-Type: text/plain`), whose recipients come
//! from the To, Cc and Bcc headers and whose Bcc header is removed before delivery, and JSON
//! (`{"message": {...}, "saveToSentItems": bool}`), composed into a simple MIME message.
//! Success is `202 Accepted` with an empty body; errors are Graph's
//! `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
//!
//! Sending from another mailbox than the token's user (by `{id}` or by the `From`) follows the
//! SMTP server's rules: Full Access to open the mailbox, Send As to send as it; Graph also
//! wants the delegated `Mail.Send.Shared` scope for `/users/{other}/sendMail`.
//!
//! An app-only token (client credentials, audience Graph) needs the `Mail.Send` role and sends
//! as any mailbox by `/users/{id}` (never `/me`), unless the app is limited to some mailboxes.
//!
//! Messages over the 4 MB request limit go Graph's other way, through the same checks: a
//! draft with attachments and upload sessions, then `send` ([`drafts`], [`sessions`]).
//! `applications` lists an app registration's client secrets, for Application.Read.All.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use time::OffsetDateTime;

/// `GET /v1.0/applications`: an app registration's client secrets (Application.Read.All).
mod applications;
mod body;
/// Drafts, their attachments, `send` and `DELETE`: Graph's way for large messages.
mod drafts;
/// Upload sessions: a draft's large attachments, chunk by chunk.
mod sessions;

use super::{APP_MAIL_SEND, AccessToken, GRAPH_RESOURCE, ReceivedMessage, SandboxState, Switches};
use crate::crypto;
use body::{from_json, from_mime};
pub use drafts::GraphAttachment;
pub use sessions::GraphUploadSession;

/// The delegated Graph scope that allows `sendMail` as the signed-in user.
pub const GRAPH_MAIL_SEND_SCOPE: &str = "https://graph.microsoft.com/Mail.Send";
/// The delegated Graph scope that also allows `sendMail` from mailboxes shared with the user.
pub const GRAPH_MAIL_SEND_SHARED_SCOPE: &str = "https://graph.microsoft.com/Mail.Send.Shared";
/// The delegated Graph scope that allows drafts in the signed-in user's mailbox.
pub const GRAPH_MAIL_READWRITE_SCOPE: &str = "https://graph.microsoft.com/Mail.ReadWrite";
/// The delegated Graph scope that also allows drafts in mailboxes shared with the user.
pub const GRAPH_MAIL_READWRITE_SHARED_SCOPE: &str =
    "https://graph.microsoft.com/Mail.ReadWrite.Shared";
/// The application permission that allows drafts in any mailbox the app reaches.
pub const APP_MAIL_READWRITE: &str = "Mail.ReadWrite";
/// Graph's request size limit: 4 MB of request body.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// Concurrent requests per mailbox before `429` (Graph's Outlook limit: 4).
pub const MAX_CONCURRENT_PER_MAILBOX: usize = 4;
/// The most the sandbox reads of a body it will refuse anyway.
const READ_CAP: usize = 64 * 1024 * 1024;

/// Graph's own state inside the sandbox's.
#[derive(Default)]
pub(super) struct GraphInner {
    /// Requests in flight per mailbox.
    in_flight: HashMap<String, usize>,
    /// `saveToSentItems` by stored message id.
    save_to_sent_items: HashMap<String, bool>,
    /// Drafts not yet sent nor deleted, by id.
    drafts: HashMap<String, drafts::Draft>,
    /// Upload sessions, by id, kept once complete for the tests to read.
    sessions: HashMap<String, sessions::Session>,
    /// The attachments of messages sent from drafts, by stored message id.
    sent_attachments: HashMap<String, Vec<GraphAttachment>>,
}

impl SandboxState {
    /// The `saveToSentItems` a Graph `sendMail` asked for, by the stored message's id (`true`
    /// when the request did not say, as Graph defaults it).
    pub fn saved_to_sent_items(&self, message_id: &str) -> Option<bool> {
        self.inner()
            .graph
            .save_to_sent_items
            .get(message_id)
            .copied()
    }

    /// The access token with this value, expired or not.
    fn any_access_token(&self, token: &str) -> Option<AccessToken> {
        self.inner()
            .access_tokens
            .get(&crypto::token_digest(token))
            .cloned()
    }

    /// Uses up one of a countdown switch, if any is left.
    fn take_switch(&self, pick: fn(&mut Switches) -> &mut u32) -> bool {
        let mut switches = self.switches.lock().unwrap_or_else(|e| e.into_inner());
        let left = pick(&mut switches);
        if *left > 0 {
            *left -= 1;
            return true;
        }
        false
    }
}

/// A request in flight for a mailbox, released on drop.
struct Slot {
    state: Arc<SandboxState>,
    mailbox: String,
}

impl Slot {
    fn enter(state: &Arc<SandboxState>, mailbox: &str) -> Option<Self> {
        let mut inner = state.inner();
        let count = inner.graph.in_flight.entry(mailbox.to_owned()).or_default();
        if *count >= MAX_CONCURRENT_PER_MAILBOX {
            return None;
        }
        *count += 1;
        Some(Self {
            state: state.clone(),
            mailbox: mailbox.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(count) = self.state.inner().graph.in_flight.get_mut(&self.mailbox) {
            *count = count.saturating_sub(1);
        }
    }
}

#[derive(Clone)]
struct Graph {
    state: Arc<SandboxState>,
    base_url: String,
}

/// Graph's routes, mounted at the root of the sandbox's site (`{base}/v1.0/...`).
pub fn router(state: Arc<SandboxState>, base_url: &str) -> Router {
    Router::new()
        .route("/v1.0/me/sendMail", post(send_me))
        .route("/v1.0/users/{id}/sendMail", post(send_user))
        .merge(drafts::routes())
        .merge(applications::routes())
        .merge(sessions::routes())
        // The 4 MB limit is Graph's, answered in Graph's shape below.
        .layer(DefaultBodyLimit::disable())
        .with_state(Graph {
            state,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
}

/// One request's ids and time, for the `innerError` and the response headers.
#[derive(Clone)]
struct Ctx {
    request_id: String,
    client_request_id: String,
    date: OffsetDateTime,
    retry_after: u64,
    base_url: String,
}

impl Ctx {
    fn new(graph: &Graph, headers: &HeaderMap) -> Self {
        let state = &graph.state;
        Self {
            request_id: uuid::Uuid::new_v4().to_string(),
            client_request_id: headers
                .get("client-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
            date: state.now(),
            retry_after: state.switches().graph_retry_after_secs,
            base_url: graph.base_url.clone(),
        }
    }

    fn send_as_denied(&self) -> Response {
        self.error(
            StatusCode::FORBIDDEN,
            "ErrorSendAsDenied",
            "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
        )
    }

    fn headers(&self) -> [(&'static str, String); 2] {
        [
            ("request-id", self.request_id.clone()),
            ("client-request-id", self.client_request_id.clone()),
        ]
    }

    fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        let date = self
            .date
            .to_offset(time::UtcOffset::UTC)
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]"
            ))
            .unwrap_or_default();
        let body = json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": date,
                "request-id": self.request_id,
                "client-request-id": self.client_request_id,
            },
        }});
        let mut response = (status, self.headers(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if matches!(status.as_u16(), 429 | 503)
            && let Ok(value) = HeaderValue::from_str(&self.retry_after.to_string())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        if status == StatusCode::UNAUTHORIZED
            && let Ok(value) = HeaderValue::from_str(&format!(
                "Bearer realm=\"\", authorization_uri=\"{}/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
                self.base_url
            ))
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

async fn send_me(
    State(graph): State<Graph>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    send_mail(graph, None, query, headers, body).await
}

async fn send_user(
    State(graph): State<Graph>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    send_mail(graph, Some(id), query, headers, body).await
}

fn listed(list: &[String], address: &str) -> bool {
    list.iter().any(|a| a.eq_ignore_ascii_case(address))
}

async fn send_mail(
    graph: Graph,
    id: Option<String>,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = Ctx::new(&graph, &headers);
    let Admitted {
        record,
        mailbox,
        slot: _slot,
    } = match admit(&graph, &ctx, id.as_deref(), &headers, Permission::Send) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let state = &graph.state;
    let bytes = match read_body(&ctx, body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let now = state.now();
    let parsed = match media.as_str() {
        "text/plain" => from_mime(&bytes, &mailbox),
        "application/json" => from_json(&bytes, &mailbox, now),
        _ => {
            return ctx.error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!("The content type '{content_type}' is not supported."),
            );
        }
    };
    let outgoing = match parsed {
        Ok(outgoing) => outgoing,
        Err((code, message)) => return ctx.error(StatusCode::BAD_REQUEST, code, &message),
    };
    let save = outgoing
        .save_to_sent_items
        .or_else(|| {
            query
                .get("saveToSentItems")
                .map(|v| !v.eq_ignore_ascii_case("false"))
        })
        .unwrap_or(true);
    match deliver(state, &record, &mailbox, outgoing, save) {
        Ok(_) => (StatusCode::ACCEPTED, ctx.headers()).into_response(),
        Err(()) => ctx.send_as_denied(),
    }
}

/// The request body, refused in Graph's shape past the 4 MB request limit.
async fn read_body(ctx: &Ctx, body: Body) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        ctx.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request entity is too large. The maximum request size is 4 MB.",
        )
    };
    let Ok(bytes) = axum::body::to_bytes(body, READ_CAP).await else {
        return Err(too_large());
    };
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Stores the message as delivered, after the send-as check of its `From`; answers the
/// stored message's id (`None` when every recipient was unknown), or `Err` when the token's
/// user may not send as the `From`.
#[allow(clippy::result_unit_err)]
fn deliver(
    state: &SandboxState,
    record: &AccessToken,
    mailbox: &str,
    outgoing: body::Outgoing,
    save: bool,
) -> Result<Option<String>, ()> {
    if !outgoing.from.eq_ignore_ascii_case(mailbox)
        && !state.has_send_as(&outgoing.from, mailbox)
        && !state.has_send_as(&outgoing.from, &record.user)
    {
        return Err(());
    }
    let switches = state.switches();
    // Graph accepts unknown recipients and answers them later with an NDR: they get nothing.
    let rcpt_to: Vec<String> = outgoing
        .recipients
        .into_iter()
        .filter(|r| !listed(&switches.unknown_recipients, r))
        .collect();
    if rcpt_to.is_empty() {
        return Ok(None);
    }
    let id = format!(
        "<{}@sandbox.herald.localhost>",
        uuid::Uuid::new_v4().simple()
    );
    state
        .inner()
        .graph
        .save_to_sent_items
        .insert(id.clone(), save);
    state.store_message(ReceivedMessage {
        id: id.clone(),
        user: mailbox.to_owned(),
        mechanism: "graph",
        mail_from: outgoing.from.to_lowercase(),
        rcpt_to,
        raw: outgoing.raw,
        received_at: state.now(),
    });
    Ok(Some(id))
}

/// What a request asks of the mailbox, for the permission it needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Permission {
    /// `sendMail`, a draft's `send`: Mail.Send.
    Send,
    /// Drafts and their attachments: Mail.ReadWrite.
    ReadWrite,
}

/// A request Graph lets through: the token, the mailbox it acts on, and its place among the
/// mailbox's requests in flight.
struct Admitted {
    record: AccessToken,
    mailbox: String,
    slot: Slot,
}

/// What every `/users/{id}/…` (and `/me/…`) request goes through, in Graph's order: an
/// outage, the token, the permission, the mailbox, throttling and concurrency.
// The error is the response to answer, made once per request.
#[allow(clippy::result_large_err)]
fn admit(
    graph: &Graph,
    ctx: &Ctx,
    id: Option<&str>,
    headers: &HeaderMap,
    permission: Permission,
) -> Result<Admitted, Response> {
    let state = &graph.state;
    state.count(&state.counters.graph_requests);
    let switches = state.switches();
    if state.take_switch(|s| &mut s.graph_outages) {
        return Err(ctx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceNotAvailable",
            "Service is unavailable. Please try again later.",
        ));
    }
    let record = authenticate(state, headers).map_err(|message| {
        ctx.error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            message,
        )
    })?;
    let has = |scope: &str| record.scopes.iter().any(|s| s == scope);
    let access_denied = || {
        ctx.error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        )
    };
    // Drafts take Mail.ReadWrite at Microsoft (unless the switch is turned off).
    let strict = permission == Permission::ReadWrite && switches.graph_drafts_need_mail_readwrite;
    let (own, shared, role) = if strict {
        (
            GRAPH_MAIL_READWRITE_SCOPE,
            GRAPH_MAIL_READWRITE_SHARED_SCOPE,
            APP_MAIL_READWRITE,
        )
    } else {
        (
            GRAPH_MAIL_SEND_SCOPE,
            GRAPH_MAIL_SEND_SHARED_SCOPE,
            APP_MAIL_SEND,
        )
    };
    if record.app_only {
        if record.audience != GRAPH_RESOURCE {
            return Err(ctx.error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            ));
        }
        if id.is_none() {
            return Err(ctx.error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "/me request is only valid with delegated authentication flow.",
            ));
        }
        if !record.roles.iter().any(|r| r == role) {
            return Err(access_denied());
        }
    } else if !has(own) && !has(shared) {
        return Err(access_denied());
    }
    let requested = id.map_or_else(|| record.user.clone(), str::to_owned);
    if listed(&switches.graph_unknown_users, &requested) {
        return Err(ctx.error(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{requested}' is invalid."),
        ));
    }
    let mailbox = requested.to_lowercase();
    if listed(&switches.graph_disabled_mailboxes, &mailbox) {
        return Err(ctx.error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ));
    }
    if record.app_only {
        // Mail.Send as an application reaches the whole tenant unless RBAC for Applications
        // (or an application access policy) limits it.
        if !state.app_reaches_mailbox(&record.client_id, &mailbox) {
            return Err(ctx.error(
                StatusCode::FORBIDDEN,
                "ErrorAccessDenied",
                "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
            ));
        }
    } else if mailbox != record.user {
        if !has(shared) || !state.has_full_access(&mailbox, &record.user) {
            return Err(access_denied());
        }
        if permission == Permission::Send && !state.has_send_as(&mailbox, &record.user) {
            return Err(ctx.send_as_denied());
        }
    }
    if state.take_switch(|s| &mut s.graph_throttled) {
        return Err(ctx.error(
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            "Application is over its ResourceRequestCount limit.",
        ));
    }
    let Some(slot) = Slot::enter(state, &mailbox) else {
        let ctx = Ctx {
            retry_after: 1,
            ..ctx.clone()
        };
        return Err(ctx.error(
            StatusCode::TOO_MANY_REQUESTS,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
        ));
    };
    Ok(Admitted {
        record,
        mailbox,
        slot,
    })
}

/// The live token of the `Authorization: Bearer` header, or Graph's reason to refuse it.
fn authenticate(state: &SandboxState, headers: &HeaderMap) -> Result<AccessToken, &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    };
    if token.is_empty() {
        return Err("Access token is empty.");
    }
    let Some(record) = state.any_access_token(token) else {
        return Err("Access token validation failure. Invalid audience.");
    };
    if record.expires_at <= state.now() {
        return Err("Lifetime validation failed, the token is expired.");
    }
    Ok(record)
}
