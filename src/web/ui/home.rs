//! The landing page.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::SignedIn;
use super::{Frame, render};
use crate::services::views;
use crate::web::AppState;
use crate::web::error::UiError;

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    /// For the alerts banner of the base layout.
    frame: Frame,
    org_name: String,
    email: String,
    role: &'static str,
    csrf_token: String,
    user_count: usize,
    key_count: usize,
}

/// The landing page: who is signed in, and how many users and live API keys the organization has.
pub(super) async fn home(
    State(state): State<AppState>,
    SignedIn { session, frame: f }: SignedIn,
) -> Result<Response, UiError> {
    let user_count = views::users(&state.access.store, f.org_id, None, 200)
        .await?
        .items
        .len();
    let key_count = views::api_keys(&state.access.store, f.org_id, None, 200)
        .await?
        .items
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .count();
    Ok(render(
        StatusCode::OK,
        &HomePage {
            org_name: f.org_name.clone(),
            email: f.email.clone(),
            role: session.user.role.as_str(),
            csrf_token: f.csrf_token.clone(),
            user_count,
            key_count,
            frame: f,
        },
    ))
}
