//! What the sign-in pages share between the code flow (`authorize`) and device codes
//! (`device`): the sign-in form, the scopes the consent page can name, and rendering.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::super::{
    GRAPH_MAIL_READWRITE_SCOPE, GRAPH_MAIL_READWRITE_SHARED_SCOPE, GRAPH_MAIL_SEND_SCOPE,
    GRAPH_MAIL_SEND_SHARED_SCOPE, SMTP_SEND_SCOPE,
};

/// The scopes the sandbox knows, with what the consent page says of them.
pub(super) const KNOWN_SCOPES: &[(&str, &str)] = &[
    (
        SMTP_SEND_SCOPE,
        "Send emails from mailboxes using SMTP AUTH.",
    ),
    (GRAPH_MAIL_SEND_SCOPE, "Send mail as you"),
    (
        GRAPH_MAIL_SEND_SHARED_SCOPE,
        "Send mail on behalf of others or yourself",
    ),
    (
        "offline_access",
        "Maintain access to data you have given it access to",
    ),
    (
        GRAPH_MAIL_READWRITE_SCOPE,
        "Read and write access to your mail",
    ),
    (
        GRAPH_MAIL_READWRITE_SHARED_SCOPE,
        "Read and write user and shared mail",
    ),
    (
        super::super::GRAPH_APPLICATION_READ_ALL_SCOPE,
        "Read all applications",
    ),
    ("openid", "Sign you in"),
    ("profile", "View your basic profile"),
    ("email", "View your email address"),
];

#[derive(Template)]
#[template(path = "sandbox/signin.html")]
pub(super) struct SignInPage {
    pub tenant: String,
    pub app_name: String,
    pub action: String,
    pub txn: String,
    pub login_hint: String,
    pub error: Option<String>,
}

pub(super) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
