//! Settings › API keys: the organization's keys (created and revoked through the API).

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::SignedIn;
use super::{Frame, render, when};
use crate::services::views;
use crate::web::AppState;
use crate::web::error::UiError;

struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    role: &'static str,
    created_at: String,
    last_used_at: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "api_keys.html")]
struct ApiKeysPage {
    frame: Frame,
    keys: Vec<KeyRow>,
}

/// The organization's API keys, revoked ones included.
pub(super) async fn api_keys_page(
    State(state): State<AppState>,
    SignedIn { frame: f, .. }: SignedIn,
) -> Result<Response, UiError> {
    let keys = views::api_keys(&state.access.store, f.org_id, None, 200)
        .await?
        .items;
    Ok(render(
        StatusCode::OK,
        &ApiKeysPage {
            keys: keys
                .into_iter()
                .map(|k| KeyRow {
                    id: k.id.to_string(),
                    name: k.name,
                    prefix: k.prefix,
                    role: k.role.as_str(),
                    created_at: when(Some(k.created_at)),
                    last_used_at: when(k.last_used_at),
                    revoked: k.revoked_at.is_some(),
                })
                .collect(),
            frame: f,
        },
    ))
}
