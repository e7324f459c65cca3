//! The control API under `/_sandbox`: read and set the switches that reproduce Microsoft's
//! failures, read the mail received and the request counters, and give apps their app-only
//! access (`/_sandbox/apps/{client_id}`: permissions, disabled, mailboxes, limited_to,
//! certificates, secrets: New client secret, and letting one expire).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde_json::json;

use super::super::Switches;
use super::OAuthServer;

pub(super) async fn get_switches(State(server): State<OAuthServer>) -> Json<Switches> {
    Json(server.state.switches())
}

pub(super) async fn put_switches(
    State(server): State<OAuthServer>,
    Json(switches): Json<Switches>,
) -> Json<Switches> {
    server.state.set_switches(switches);
    Json(server.state.switches())
}

pub(super) async fn messages(State(server): State<OAuthServer>) -> Json<serde_json::Value> {
    let items: Vec<_> = server
        .state
        .messages()
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "user": m.user,
                "mechanism": m.mechanism,
                "mail_from": m.mail_from,
                "rcpt_to": m.rcpt_to,
                "raw": String::from_utf8_lossy(&m.raw),
                "received_at": m.received_at.unix_timestamp(),
                "save_to_sent_items": server.state.saved_to_sent_items(&m.id),
            })
        })
        .collect();
    Json(json!({ "items": items }))
}

pub(super) async fn counters(State(server): State<OAuthServer>) -> Json<serde_json::Value> {
    Json(json!({
        "token_requests": server.state.token_requests(),
        "smtp_auth_attempts": server.state.smtp_auth_attempts(),
        "graph_requests": server.state.graph_requests(),
        "device_polls": server.state.device_polls().len(),
    }))
}

/// The app's app-only access: `404` for an unknown client id.
fn app_json(server: &OAuthServer, client_id: &str) -> Response {
    let Some(client) = server.state.client(client_id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown client_id"})),
        )
            .into_response();
    };
    let access = server.state.app_access(client_id);
    Json(json!({
        "client_id": client.client_id,
        "name": client.name,
        "permissions": access.permissions,
        "disabled": access.disabled,
        "mailboxes": access.mailboxes,
        "limited_to": access.limited_to,
        "certificates": access.certificates,
    }))
    .into_response()
}

pub(super) async fn get_app(
    State(server): State<OAuthServer>,
    Path(client_id): Path<String>,
) -> Response {
    app_json(&server, &client_id)
}

/// Sets the application permissions granted by admin consent: those listed are granted, the
/// others revoked. `400` for a permission the sandbox does not know.
pub(super) async fn put_permissions(
    State(server): State<OAuthServer>,
    Path(client_id): Path<String>,
    Json(permissions): Json<Vec<String>>,
) -> Response {
    if server.state.client(&client_id).is_none() {
        return app_json(&server, &client_id);
    }
    for old in server.state.app_access(&client_id).permissions {
        server.state.revoke_app_permission(&client_id, &old);
    }
    for permission in &permissions {
        if !server.state.grant_app_permission(&client_id, permission) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("unknown application permission '{permission}'")})),
            )
                .into_response();
        }
    }
    app_json(&server, &client_id)
}

pub(super) async fn put_disabled(
    State(server): State<OAuthServer>,
    Path(client_id): Path<String>,
    Json(disabled): Json<bool>,
) -> Response {
    if server.state.client(&client_id).is_some() {
        server.state.disable_app(&client_id, disabled);
    }
    app_json(&server, &client_id)
}

/// Sets the mailboxes the app's service principal has Full Access to (SMTP).
pub(super) async fn put_mailboxes(
    State(server): State<OAuthServer>,
    Path(client_id): Path<String>,
    Json(mailboxes): Json<Vec<String>>,
) -> Response {
    if server.state.client(&client_id).is_some() {
        for old in server.state.app_access(&client_id).mailboxes {
            server.state.revoke_app_mailbox(&client_id, &old);
        }
        for mailbox in &mailboxes {
            server.state.grant_app_mailbox(&client_id, mailbox);
        }
    }
    app_json(&server, &client_id)
}

/// Limits the app's Graph access to mailboxes (`null`: the whole tenant).
pub(super) async fn put_limited_to(
    State(server): State<OAuthServer>,
    Path(client_id): Path<String>,
    Json(limited_to): Json<Option<Vec<String>>>,
) -> Response {
    if server.state.client(&client_id).is_some() {
        server.state.limit_app_to_mailboxes(&client_id, limited_to);
    }
    app_json(&server, &client_id)
}

/// Uploads a certificate (PEM or DER `.cer`) to the app registration, as the portal's
/// Certificates & secrets › Upload certificate does.
pub(super) async fn upload_certificate(
    State(server): State<OAuthServer>,
    Path(client_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if server.state.client(&client_id).is_none() {
        return app_json(&server, &client_id);
    }
    match server.state.upload_app_certificate(&client_id, &body) {
        Ok(_) => app_json(&server, &client_id),
        Err(error) => (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response(),
    }
}

/// Deletes a certificate from the app registration, by its thumbprint.
pub(super) async fn remove_certificate(
    State(server): State<OAuthServer>,
    Path((client_id, thumbprint)): Path<(String, String)>,
) -> Response {
    server.state.remove_app_certificate(&client_id, &thumbprint);
    app_json(&server, &client_id)
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub(super) struct NewSecret {
    description: Option<String>,
    /// Days until it expires (the portal offers 180 and 365; default 180).
    days: Option<i64>,
}

/// **New client secret** (Certificates & secrets): answers the Value, shown this once, with
/// its Secret ID, hint and end date.
pub(super) async fn add_secret(
    State(server): State<OAuthServer>,
    Path(client_id): Path<String>,
    body: Option<Json<NewSecret>>,
) -> Response {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let end = server.state.now() + time::Duration::days(body.days.unwrap_or(180));
    let description = body.description.as_deref().unwrap_or("Herald");
    match server
        .state
        .add_client_secret(&client_id, description, end)
    {
        Some(made) => Json(json!({
            "key_id": made.key_id,
            "value": made.value().expose_secret(),
            "hint": made.hint,
            "end": made.end.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no app registration '{client_id}'")})),
        )
            .into_response(),
    }
}

/// Lets a client secret expire now (its end date moves to the sandbox's present), by its
/// Secret ID or its Value's hint.
pub(super) async fn expire_secret(
    State(server): State<OAuthServer>,
    Path((client_id, which)): Path<(String, String)>,
) -> Response {
    let now = server.state.now();
    for secret in server.state.client_secrets(&client_id) {
        if secret.key_id == which || secret.hint == which {
            server.state.set_client_secret_end(
                &client_id,
                &secret.key_id,
                now - time::Duration::seconds(1),
            );
        }
    }
    app_json(&server, &client_id)
}
