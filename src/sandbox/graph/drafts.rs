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
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::body::{self, JsonAttachment, JsonMessage, Part};
use super::{Admitted, Ctx, Graph, Permission, admit, deliver, read_body};
use crate::crypto;
use crate::sandbox::SandboxState;

/// A draft in a mailbox's Drafts folder.
pub(super) struct Draft {
    pub(super) mailbox: String,
    message: JsonMessage,
    pub(super) attachments: Vec<Part>,
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
}

pub(super) fn not_found(ctx: &Ctx) -> Response {
    ctx.error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

pub(super) fn bad_request(ctx: &Ctx, code: &str, message: &str) -> Response {
    ctx.error(StatusCode::BAD_REQUEST, code, message)
}

pub(super) fn graph_id() -> String {
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
    // Graph answers the whole message (body included), as it now stands.
    let mut answer = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| json!({}));
    for (key, value) in [
        (
            "@odata.context",
            json!(format!(
                "{}/v1.0/$metadata#users('{mailbox}')/messages/$entity",
                graph.base_url
            )),
        ),
        ("id", json!(draft_id)),
        ("createdDateTime", json!(rfc3339(created))),
        ("isDraft", json!(true)),
        ("hasAttachments", json!(false)),
    ] {
        answer[key] = value;
    }
    (StatusCode::CREATED, ctx.headers(), axum::Json(answer)).into_response()
}

/// Admits a request about the draft `mid` of the mailbox `id` (Mail.ReadWrite), or answers
/// Graph's error; `ErrorItemNotFound` for a draft of another mailbox.
// The error is the response to answer, made once per request.
#[allow(clippy::result_large_err)]
pub(super) fn admit_draft(
    graph: &Graph,
    ctx: &Ctx,
    id: &str,
    mid: &str,
    headers: &HeaderMap,
) -> Result<Admitted, Response> {
    let admitted = admit(graph, ctx, Some(id), headers, Permission::ReadWrite)?;
    if !owns(&graph.state, &admitted.mailbox, mid) {
        return Err(not_found(ctx));
    }
    Ok(admitted)
}

/// Whether `mid` is a draft of `mailbox`.
pub(super) fn owns(state: &SandboxState, mailbox: &str, mid: &str) -> bool {
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
    let _admitted = match admit_draft(&graph, &ctx, &id, &mid, &headers) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
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
    let _admitted = match admit_draft(&graph, &ctx, &id, &mid, &headers) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
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

pub(super) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
