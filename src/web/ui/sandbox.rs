//! The sandbox's inbox: the mail its SMTP server received, while the sandbox runs.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::SignedIn;
use super::{Frame, render, when};
use crate::web::AppState;
use crate::web::error::UiError;

struct InboxRow {
    received_at: String,
    user: String,
    mechanism: &'static str,
    to: String,
    subject: String,
    raw: String,
}

#[derive(Template)]
#[template(path = "sandbox_inbox.html")]
struct SandboxInboxPage {
    frame: Frame,
    messages: Vec<InboxRow>,
}

/// The sandbox's received mail, while the sandbox runs (`herald demo`).
pub(super) async fn sandbox_inbox_page(
    State(state): State<AppState>,
    SignedIn { frame: f, .. }: SignedIn,
) -> Result<Response, UiError> {
    let Some(sandbox) = &state.sandbox_state else {
        return Err(UiError::NotFound);
    };
    let mut messages: Vec<InboxRow> = sandbox
        .messages()
        .into_iter()
        .map(|m| {
            let raw = String::from_utf8_lossy(&m.raw).into_owned();
            let subject = raw
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default()
                .to_owned();
            InboxRow {
                received_at: when(Some(m.received_at)),
                user: m.user,
                mechanism: m.mechanism,
                to: m.rcpt_to.join(", "),
                subject,
                raw,
            }
        })
        .collect();
    messages.reverse();
    Ok(render(
        StatusCode::OK,
        &SandboxInboxPage { messages, frame: f },
    ))
}
