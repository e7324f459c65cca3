//! `GET /api/v1/me`: who the caller is.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::services::views;
use crate::web::AppState;
use crate::web::auth::{Access, Principal};
use crate::web::error::ApiError;

/// The caller's organization in short (its settings: `GET /api/v1/organization`). Named apart
/// from that route's `OrganizationOut`: two schemas of one name overwrite each other in the document.
#[derive(Serialize, ToSchema)]
pub struct CallerOrganization {
    pub id: String,
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub organization: CallerOrganization,
    /// `user` or `api_key`.
    pub kind: String,
    pub id: Option<String>,
    /// The user's email or the key's name.
    pub label: String,
    /// `admin`, `member` or `sender`.
    pub access: String,
}

/// The caller's organization and access.
#[utoipa::path(get, path = "/api/v1/me", tag = "account",
    responses((status = 200, body = Me), (status = 401, body = crate::web::error::Problem)))]
pub async fn whoami(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Me>, ApiError> {
    let org = views::organization(&state.access.store, principal.org_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(Json(Me {
        organization: CallerOrganization {
            id: org.id.to_string(),
            name: org.name,
        },
        kind: principal.actor.kind.as_str().into(),
        id: principal.actor.id,
        label: principal.actor.label,
        access: match principal.access {
            Access::Admin => "admin",
            Access::Member => "member",
            Access::Sender => "sender",
        }
        .into(),
    }))
}
