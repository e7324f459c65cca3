//! Upload sessions for a draft's large attachments: `POST …/attachments/createUploadSession`
//! opens one for a file of 2 MiB to 150 MB (`201` with an `uploadUrl` on the sandbox's own
//! site, good for 15 minutes after its last chunk), and `PUT {uploadUrl}` takes the file in
//! order, in chunks of at most 4 MB, each with `Content-Range: bytes {first}-{last}/{total}`:
//! `200` with `nextExpectedRanges` until the last, `201` with the attachment's `Location`
//! for it. A chunk over 4 MB is `413`, one out of order `416`, in Graph's error shape.
//!
//! The upload URL carries its own secret (`authtoken`): a `PUT` with an `Authorization`
//! header is refused, as Microsoft says to send none.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use serde::Deserialize;
use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::body::{self, Part};
use super::drafts::{admit_draft, bad_request, graph_id, not_found, rfc3339};
use super::{Admitted, Ctx, Graph, MAX_REQUEST_BYTES, READ_CAP, read_body};
use crate::crypto;
use crate::sandbox::SandboxState;

/// The smallest file an upload session takes (Graph:
/// `ErrorAttachmentSizeShouldNotBeLessThanMinimumSize`).
const MIN_UPLOAD_BYTES: usize = 2 * 1024 * 1024;
/// The largest attachment Graph takes.
const MAX_ATTACHMENT_BYTES: usize = 150 * 1024 * 1024;
/// How long an upload session waits for its next chunk.
const SESSION_LIFETIME: Duration = Duration::minutes(15);

/// An upload session: where its file stands.
pub(super) struct Session {
    pub(super) draft: String,
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

impl SandboxState {
    /// Every upload session opened, complete or not.
    pub fn graph_upload_sessions(&self) -> Vec<GraphUploadSession> {
        self.inner()
            .graph
            .sessions
            .values()
            .map(Session::seen)
            .collect()
    }
}

pub(super) fn routes() -> Router<Graph> {
    Router::new()
        .route(
            "/v1.0/users/{id}/messages/{mid}/attachments/createUploadSession",
            post(create_upload_session),
        )
        .route("/upload/attachmentSessions/{sid}", put(upload_chunk))
}

impl Session {
    /// The session as the tests see it.
    fn seen(&self) -> GraphUploadSession {
        GraphUploadSession {
            message_id: self.draft.clone(),
            name: self.item.name.clone(),
            size: self.size,
            chunks: self.chunks,
            complete: self.complete,
        }
    }
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
    } = match admit_draft(&graph, &ctx, &id, &mid, &headers) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
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
