//! The control API under `/_sandbox`: read and set the switches that reproduce Microsoft's
//! failures, read the mail received and the request counters.

use axum::Json;
use axum::extract::State;
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
    }))
}
