//! Settings › Users: who may sign in to the organization (changed through the API).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::SignedIn;
use super::{Frame, render, when};
use crate::services::views;
use crate::web::AppState;
use crate::web::error::UiError;

struct UserRow {
    id: String,
    email: String,
    role: &'static str,
    created_at: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    frame: Frame,
    users: Vec<UserRow>,
}

/// The organization's users.
pub(super) async fn users_page(
    State(state): State<AppState>,
    SignedIn { frame: f, .. }: SignedIn,
) -> Result<Response, UiError> {
    let users = views::users(&state.access.store, f.org_id, None, 200)
        .await?
        .items;
    Ok(render(
        StatusCode::OK,
        &UsersPage {
            users: users
                .into_iter()
                .map(|u| UserRow {
                    id: u.id.to_string(),
                    email: u.email,
                    role: u.role.as_str(),
                    created_at: when(Some(u.created_at)),
                })
                .collect(),
            frame: f,
        },
    ))
}
