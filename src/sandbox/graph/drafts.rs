//! Graph's way for messages over the 4 MB request limit: `POST /v1.0/users/{id}/messages`
//! creates a draft (`201` with its `id`), `POST …/messages/{mid}/attachments` adds a
//! `fileAttachment` (one request, so under 4 MB), `POST …/attachments/createUploadSession`
//! opens an upload session for a file of 2 MiB to 150 MB (`201` with an `uploadUrl` on the
//! sandbox's own site), `PUT {uploadUrl}` takes the file in order in chunks of at most 4 MB
//! (`200` with `nextExpectedRanges`, `201` for the last), `POST …/messages/{mid}/send` sends
//! the draft (`202`; Graph keeps it in Sent Items, always), and `DELETE …/messages/{mid}`
//! deletes it (`204`).
//!
//! The token checks are `sendMail`'s. The upload URL carries its own secret (`authtoken`) and
//! takes no bearer token: Microsoft says not to send one, and the sandbox refuses a `PUT` that
//! does, so a client that leaks its token there is caught.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post, put};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::body::{self, JsonAttachment, JsonMessage, Part};
use super::{
    Admitted, Ctx, Graph, MAX_REQUEST_BYTES, Permission, READ_CAP, admit, deliver, read_body,
};
use crate::crypto;
use crate::sandbox::SandboxState;

/// The smallest file an upload session takes (Graph: `ErrorAttachmentSizeShouldNotBeLessThanMinimumSize`).
const MIN_UPLOAD_BYTES: usize = 2 * 1024 * 1024;
/// The largest attachment Graph takes.
const MAX_ATTACHMENT_BYTES: usize = 150 * 1024 * 1024;
/// How long an upload session waits for its next chunk.
const SESSION_LIFETIME: Duration = Duration::minutes(15);

/// A draft in a mailbox's Drafts folder.
pub(super) struct Draft {
    mailbox: String,
    message: JsonMessage,
    attachments: Vec<Part>,
}

/// An upload session: where its file stands.
pub(super) struct Session {
    draft: String,
    mailbox: String,
    /// The digest of the `authtoken` of its upload URL.
    token_digest: String,
    item: Part,
    size: usize,
    received: Vec<u8>,
    chunks: usize,
    complete: bool,
    expires_at: OffsetDateTime,
}

/// An upload session as the tests see it.
#[derive(Clone, Debug)]
pub struct GraphUploadSession {
    /// The draft it attaches to.
    pub message_id: String,
    pub name: String,
    pub size: usize,
    /// The chunks it took.
    pub chunks: usize,
    pub complete: bool,
}

/// An attachment of a message sent from a draft.
#[derive(Clone, Debug)]
pub struct GraphAttachment {
    pub name: String,
    pub content_type: String,
    pub size: usize,
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
}

impl SandboxState {
    /// The ids of the drafts not yet sent nor deleted, in every mailbox.
    pub fn graph_drafts(&self) -> Vec<String> {
        self.inner().graph.drafts.keys().cloned().collect()
    }

    /// Every upload session opened, complete or not.
    pub fn graph_upload_sessions(&self) -> Vec<GraphUploadSession> {
        self.inner()
            .graph
            .sessions
            .values()
            .map(|s| GraphUploadSession {
                message_id: s.draft.clone(),
                name: s.item.name.clone(),
                size: s.size,
                chunks: s.chunks,
                complete: s.complete,
            })
            .collect()
    }

    /// The attachments of a message sent from a draft, by the stored message's id.
    pub fn graph_attachments(&self, message_id: &str) -> Vec<GraphAttachment> {
        self.inner()
            .graph
            .sent_attachments
            .get(message_id)
            .cloned()
            .unwrap_or_default()
    }
}

pub(super) fn routes() -> Router<Graph> {
    Router::new()
        .route("/v1.0/users/{id}/messages", post(create_draft))
        .route("/v1.0/users/{id}/messages/{mid}", delete(delete_draft))
        .route("/v1.0/users/{id}/messages/{mid}/send", post(send_draft))
        .route(
            "/v1.0/users/{id}/messages/{mid}/attachments",
            post(add_attachment),
        )
        .route(
            "/v1.0/users/{id}/messages/{mid}/attachments/createUploadSession",
            post(create_upload_session),
        )
        .route("/upload/attachmentSessions/{sid}", put(upload_chunk))
}

fn not_found(ctx: &Ctx) -> Response {
    ctx.error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

fn bad_request(ctx: &Ctx, code: &str, message: &str) -> Response {
    ctx.error(StatusCode::BAD_REQUEST, code, message)
}

fn graph_id() -> String {
    format!("AAMkAD{}", crypto::random_token())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn create_draft(
    State(graph): State<Graph>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = Ctx::new(&graph, &headers);
    let Admitted {
        mailbox,
        slot: _slot,
        ..
    } = match admit(&graph, &ctx, Some(&id), &headers, Permission::ReadWrite) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let bytes = match read_body(&ctx, body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let message: JsonMessage = match serde_json::from_slice(&bytes) {
        Ok(message) => message,
        Err(_) => {
            let (code, message) = body::unreadable();
            return bad_request(&ctx, code, &message);
        }
    };
    if let Err((code, message)) = body::check_headers(&message) {
        return bad_request(&ctx, code, &message);
    }
    let draft_id = graph_id();
    let created = graph.state.now();
    graph.state.inner().graph.drafts.insert(
        draft_id.clone(),
        Draft {
            mailbox: mailbox.clone(),
            message,
            attachments: Vec::new(),
        },
    );
    let answer = json!({
        "@odata.context": format!("{}/v1.0/$metadata#users('{mailbox}')/messages/$entity", graph.base_url),
        "id": draft_id,
        "createdDateTime": rfc3339(created),
        "isDraft": true,
        "hasAttachments": false,
    });
    (StatusCode::CREATED, ctx.headers(), axum::Json(answer)).into_response()
}

/// Whether `mid` is a draft of `mailbox`.
fn owns(state: &SandboxState, mailbox: &str, mid: &str) -> bool {
    state
        .inner()
        .graph
        .drafts
        .get(mid)
        .is_some_and(|d| d.mailbox == mailbox)
}

async fn delete_draft(
    State(graph): State<Graph>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let ctx = Ctx::new(&graph, &headers);
    let Admitted {
        mailbox,
        slot: _slot,
        ..
    } = match admit(&graph, &ctx, Some(&id), &headers, Permission::ReadWrite) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    if !owns(&graph.state, &mailbox, &mid) {
        return not_found(&ctx);
    }
    graph.state.inner().graph.drafts.remove(&mid);
    (StatusCode::NO_CONTENT, ctx.headers()).into_response()
}

async fn add_attachment(
    State(graph): State<Graph>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = Ctx::new(&graph, &headers);
    let Admitted {
        mailbox,
        slot: _slot,
        ..
    } = match admit(&graph, &ctx, Some(&id), &headers, Permission::ReadWrite) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    if !owns(&graph.state, &mailbox, &mid) {
        return not_found(&ctx);
    }
    let bytes = match read_body(&ctx, body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "@odata.type", default)]
        odata_type: String,
        #[serde(flatten)]
        attachment: JsonAttachment,
    }
    let Ok(typed) = serde_json::from_slice::<Typed>(&bytes) else {
        let (code, message) = body::unreadable();
        return bad_request(&ctx, code, &message);
    };
    if !typed
        .odata_type
        .eq_ignore_ascii_case("#microsoft.graph.fileAttachment")
    {
        return bad_request(
            &ctx,
            "ErrorInvalidRequest",
            "The sandbox takes only #microsoft.graph.fileAttachment.",
        );
    }
    let part = match typed.attachment.decode() {
        Ok(part) => part,
        Err((code, message)) => return bad_request(&ctx, code, &message),
    };
    let attachment_id = graph_id();
    let answer = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": attachment_id,
        "name": part.name,
        "contentType": part.content_type,
        "size": part.bytes.len(),
        "isInline": part.content_id.is_some(),
    });
    let mut inner = graph.state.inner();
    let Some(draft) = inner.graph.drafts.get_mut(&mid) else {
        drop(inner);
        return not_found(&ctx);
    };
    draft.attachments.push(part);
    drop(inner);
    (StatusCode::CREATED, ctx.headers(), axum::Json(answer)).into_response()
}

#[derive(Deserialize)]
struct UploadSessionRequest {
    #[serde(rename = "AttachmentItem")]
    item: Option<AttachmentItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttachmentItem {
    attachment_type: String,
    name: String,
    size: usize,
    content_type: Option<String>,
    #[serde(default)]
    is_inline: bool,
    content_id: Option<String>,
}

async fn create_upload_session(
    State(graph): State<Graph>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = Ctx::new(&graph, &headers);
    let Admitted {
        mailbox,
        slot: _slot,
        ..
    } = match admit(&graph, &ctx, Some(&id), &headers, Permission::ReadWrite) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    if !owns(&graph.state, &mailbox, &mid) {
        return not_found(&ctx);
    }
    let bytes = match read_body(&ctx, body).await {
        Ok(bytes) => bytes,
        Err(response) => return response,
    };
    let Some(item) = serde_json::from_slice::<UploadSessionRequest>(&bytes)
        .ok()
        .and_then(|r| r.item)
    else {
        let (code, message) = body::unreadable();
        return bad_request(&ctx, code, &message);
    };
    if !item.attachment_type.eq_ignore_ascii_case("file") {
        return bad_request(
            &ctx,
            "ErrorInvalidRequest",
            "The attachmentType must be 'file'.",
        );
    }
    if item.size < MIN_UPLOAD_BYTES {
        return bad_request(
            &ctx,
            "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
            "Attachment size must be greater than the minimum size.",
        );
    }
    if item.size > MAX_ATTACHMENT_BYTES {
        return bad_request(
            &ctx,
            "ErrorMessageSizeExceeded",
            "The message exceeds the maximum supported size.",
        );
    }
    let session_id = graph_id();
    let token = crypto::random_token();
    let expires_at = graph.state.now() + SESSION_LIFETIME;
    graph.state.inner().graph.sessions.insert(
        session_id.clone(),
        Session {
            draft: mid,
            mailbox,
            token_digest: crypto::token_digest(&token),
            item: Part {
                name: item.name,
                content_type: item
                    .content_type
                    .unwrap_or_else(|| "application/octet-stream".into()),
                content_id: item.content_id.filter(|_| item.is_inline),
                bytes: Vec::new(),
            },
            size: item.size,
            received: Vec::new(),
            chunks: 0,
            complete: false,
            expires_at,
        },
    );
    let answer = json!({
        "@odata.context": format!("{}/v1.0/$metadata#microsoft.graph.uploadSession", graph.base_url),
        "uploadUrl": format!("{}/upload/attachmentSessions/{session_id}?authtoken={token}", graph.base_url),
        "expirationDateTime": rfc3339(expires_at),
        "nextExpectedRanges": ["0-"],
    });
    (StatusCode::CREATED, ctx.headers(), axum::Json(answer)).into_response()
}

/// `bytes {first}-{last}/{total}`.
fn parse_content_range(value: &str) -> Option<(usize, usize, usize)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, total) = (
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (first <= last && last < total).then_some((first, last, total))
}

async fn upload_chunk(
    State(graph): State<Graph>,
    Path(sid): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = Ctx::new(&graph, &headers);
    let state = &graph.state;
    if headers.contains_key(header::AUTHORIZATION) {
        return ctx.error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The upload URL is pre-authenticated: do not send an Authorization header.",
        );
    }
    let digest = crypto::token_digest(query.get("authtoken").map_or("", String::as_str));
    let (expected, size) = {
        let inner = state.inner();
        let Some(session) = inner.graph.sessions.get(&sid) else {
            drop(inner);
            return not_found(&ctx);
        };
        if !crypto::constant_time_eq(&session.token_digest, &digest) {
            drop(inner);
            return ctx.error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure.",
            );
        }
        if session.complete
            || session.expires_at <= state.now()
            || !inner.graph.drafts.contains_key(&session.draft)
        {
            drop(inner);
            return not_found(&ctx);
        }
        (session.received.len(), session.size)
    };
    let Some((first, last, total)) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range)
    else {
        return bad_request(
            &ctx,
            "ErrorInvalidRequest",
            "The Content-Range header is missing or malformed.",
        );
    };
    if last - first + 1 > MAX_REQUEST_BYTES {
        return ctx.error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request entity is too large. Each upload range must be 4 MB or less.",
        );
    }
    if total != size {
        return bad_request(
            &ctx,
            "ErrorInvalidRequest",
            &format!("The Content-Range total {total} is not the session's size {size}."),
        );
    }
    if first != expected {
        return ctx.error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            &format!(
                "The uploaded fragment is not the next expected range: expected bytes {expected}-."
            ),
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, READ_CAP).await else {
        return bad_request(&ctx, "ErrorInvalidRequest", "The body could not be read.");
    };
    if bytes.len() != last - first + 1 {
        return bad_request(
            &ctx,
            "ErrorInvalidRequest",
            "The body's length does not match its Content-Range.",
        );
    }
    if first > 0 && state.take_switch(|s| &mut s.graph_upload_outages) {
        return ctx.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceNotAvailable",
            "Service is unavailable. Please try again later.",
        );
    }
    let now = state.now();
    let mut inner = state.inner();
    let graph_inner = &mut inner.graph;
    let Some(session) = graph_inner.sessions.get_mut(&sid) else {
        drop(inner);
        return not_found(&ctx);
    };
    if session.received.len() != first {
        // Another request took this range meanwhile.
        drop(inner);
        return ctx.error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The uploaded fragment overlaps one already received.",
        );
    }
    session.received.extend_from_slice(&bytes);
    session.chunks += 1;
    session.expires_at = now + SESSION_LIFETIME;
    let received = session.received.len();
    if received < size {
        let expires_at = session.expires_at;
        drop(inner);
        let answer = json!({
            "expirationDateTime": rfc3339(expires_at),
            "nextExpectedRanges": [format!("{received}-")],
        });
        return (StatusCode::OK, ctx.headers(), axum::Json(answer)).into_response();
    }
    session.complete = true;
    let mut part = session.item.clone();
    part.bytes = std::mem::take(&mut session.received);
    let (draft_id, mailbox) = (session.draft.clone(), session.mailbox.clone());
    let Some(draft) = graph_inner.drafts.get_mut(&draft_id) else {
        drop(inner);
        return not_found(&ctx);
    };
    draft.attachments.push(part);
    drop(inner);
    let location = format!(
        "{}/v1.0/users('{mailbox}')/messages('{draft_id}')/attachments('{}')",
        graph.base_url,
        graph_id()
    );
    let mut response = (StatusCode::CREATED, ctx.headers()).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

async fn send_draft(
    State(graph): State<Graph>,
    Path((id, mid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let ctx = Ctx::new(&graph, &headers);
    let Admitted {
        record,
        mailbox,
        slot: _slot,
    } = match admit(&graph, &ctx, Some(&id), &headers, Permission::Send) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let state = &graph.state;
    if !owns(state, &mailbox, &mid) {
        return not_found(&ctx);
    }
    let Some(draft) = state.inner().graph.drafts.remove(&mid) else {
        return not_found(&ctx);
    };
    let sizes: Vec<GraphAttachment> = draft
        .attachments
        .iter()
        .map(|a| GraphAttachment {
            name: a.name.clone(),
            content_type: a.content_type.clone(),
            size: a.bytes.len(),
            sha256: hex_sha256(&a.bytes),
        })
        .collect();
    let outgoing = match body::compose(draft.message, draft.attachments, &mailbox, state.now()) {
        Ok(outgoing) => outgoing,
        Err((code, message)) => {
            // The draft stays a draft.
            return bad_request(&ctx, code, &message);
        }
    };
    // A draft's `send` has no saveToSentItems: the message is kept in Sent Items.
    match deliver(state, &record, &mailbox, outgoing, true) {
        Ok(Some(stored)) => {
            state.inner().graph.sent_attachments.insert(stored, sizes);
        }
        Ok(None) => {}
        Err(()) => return ctx.send_as_denied(),
    }
    (StatusCode::ACCEPTED, ctx.headers()).into_response()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_range_is_read_with_its_last_byte_inclusive() {
        assert_eq!(
            parse_content_range("bytes 0-3932159/12582912"),
            Some((0, 3_932_159, 12_582_912))
        );
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("bytes 0-10/10"), None);
        assert_eq!(parse_content_range("0-1/2"), None);
    }
}
