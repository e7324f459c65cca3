//! The server-rendered web UI: sign-in, sign-out, first-run setup, the landing page and the
//! settings pages (Settings › System, Outgoing Mail with its sending settings, message log and relay credentials,
//! API keys, users, the audit log), each under the banner of the organization's open alerts.
//!
//! One file per page; this one holds the routes and what the pages share: rendering, the frame
//! around a signed-in page, and the notice pages. A page reaches its user through the
//! [`extract`] extractors, which answer for a missing session or an unverified form.

mod alerts;
mod assets;
mod audit;
mod extract;
mod home;
mod keys;
mod login;
mod messages;
mod outgoing_mail;
pub(in crate::web) mod page;
mod relay;
mod sandbox;
mod sending;
mod settings;
mod setup;
mod users;

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};

use super::AppState;
use super::auth;
use super::error::UiError;
use crate::services::views;
pub(in crate::web) use page::{not_found_page, notice, render};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home::home))
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/setup", get(setup::setup_page).post(setup::setup))
        .route("/static/app.css", get(assets::stylesheet))
        .route(
            "/static/outgoing-mail.js",
            get(assets::outgoing_mail_script),
        )
        .route("/static/settings.js", get(assets::settings_script))
        .route("/static/herald.js", get(assets::shared_script))
        .route("/static/relay.js", get(assets::relay_script))
        .route("/settings", get(settings::settings))
        .route("/settings/system", get(settings::system_page))
        .route("/settings/api-keys", get(keys::api_keys_page))
        .route("/settings/users", get(users::users_page))
        .route("/settings/audit", get(audit::audit_page))
        .route("/settings/sandbox/inbox", get(sandbox::sandbox_inbox_page))
        .route("/web/um/smtp/redirect", get(outgoing_mail::oauth_redirect))
        .route(
            "/settings/system/outgoing-mail",
            get(outgoing_mail::outgoing_mail),
        )
        .route(
            "/settings/system/outgoing-mail/messages",
            get(messages::message_log),
        )
        .route(
            "/settings/system/outgoing-mail/messages/{id}",
            get(messages::message_detail),
        )
        .route(relay::RELAY_PATH, get(relay::relay_credentials))
        .route(alerts::DISMISS_PATH, post(alerts::dismiss_alert))
        .route(messages::CANCEL_PATH, post(messages::cancel_message))
}

/// Only same-site paths may follow sign-in, so the form cannot bounce a user elsewhere.
pub(super) fn safe_next(next: &str) -> String {
    if next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(char::is_control)
    {
        next.to_owned()
    } else {
        "/".to_owned()
    }
}

/// Any path no route claims.
pub async fn not_found() -> Response {
    not_found_page()
}

/// A time as the pages show it, to the minute; "—" for none.
pub(super) fn when(t: Option<time::OffsetDateTime>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    t.and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "—".into())
}

/// What every settings page shows around its content.
pub(super) struct Frame {
    org_name: String,
    email: String,
    csrf_token: String,
    admin: bool,
    sandbox_on: bool,
    org_id: crate::domain::OrgId,
    /// The organization's open alerts, shown as a banner above the content.
    alerts: Vec<alerts::AlertView>,
    /// The page's own path: where a form on it (Dismiss) returns to.
    path: String,
}

/// The frame of a page at `path` for a signed-in user.
async fn frame_of(
    state: &AppState,
    session: &auth::SessionUser,
    path: &str,
) -> Result<Frame, UiError> {
    let org_id = session.user.org_id;
    let org = views::organization(&state.access.store, org_id).await?;
    let alerts = alerts::banner(state, org_id).await;
    Ok(Frame {
        org_name: org.map(|o| o.name).unwrap_or_default(),
        email: session.user.email.clone(),
        csrf_token: session.csrf_token(),
        admin: session.user.role == crate::domain::UserRole::Admin,
        sandbox_on: state.access.sandbox.is_some() && state.sandbox_state.is_some(),
        org_id,
        alerts,
        path: path.to_owned(),
    })
}
