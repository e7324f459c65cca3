//! `/api/v1/mailboxes/{id}/authorize` and `…/authorization`: starting the seed's Authorize
//! flow for a mailbox, and the latest attempt's outcome.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::mailboxes::parse_mailbox_id;
use crate::domain::mailbox::StatusReason;
use crate::services::views;
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};

/// Where to send the browser to authorize the mailbox.
#[derive(Serialize, ToSchema)]
pub struct AuthorizationStarted {
    /// Open this in the browser: the provider's sign-in, then Accept.
    pub authorization_url: String,
    /// The attempt's id, as in `GET …/authorization`.
    pub attempt_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Starts an authorization. Admins only. The state is single-use, valid 10 minutes, bound to the
/// mailbox and, from a browser, to its session; PKCE S256; `login_hint` is the sign-in account.
#[utoipa::path(post, path = "/api/v1/mailboxes/{id}/authorize", tag = "mailboxes", params(("id" = String, Path)),
    responses((status = 200, body = AuthorizationStarted), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn start_authorization(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<AuthorizationStarted>, ApiError> {
    principal.require_admin()?;
    let id = parse_mailbox_id(&id)?;
    let started = crate::services::authorization::start(
        &state.access,
        principal.org_id,
        id,
        principal.session_digest.clone(),
        &principal.actor,
    )
    .await?;
    Ok(Json(AuthorizationStarted {
        authorization_url: started.authorization_url,
        attempt_id: started.attempt_id,
        expires_at: started.expires_at,
    }))
}

/// An authorization attempt's outcome.
#[derive(Serialize, ToSchema)]
pub struct AuthorizationOut {
    pub id: String,
    /// `pending`, `completed`, `failed` or `expired`.
    pub status: views::AttemptStatus,
    pub reason: Option<StatusReason>,
    pub started_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

impl From<views::Attempt> for AuthorizationOut {
    fn from(a: views::Attempt) -> Self {
        Self {
            id: a.id,
            status: a.status,
            reason: a.reason,
            started_by: a.started_by,
            created_at: a.created_at,
            expires_at: a.expires_at,
            finished_at: a.finished_at,
        }
    }
}

/// The mailbox's latest authorization attempt.
#[utoipa::path(get, path = "/api/v1/mailboxes/{id}/authorization", tag = "mailboxes", params(("id" = String, Path)),
    responses((status = 200, body = AuthorizationOut), (status = 404, body = Problem)))]
pub async fn latest_authorization(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<AuthorizationOut>, ApiError> {
    principal.require_reader()?;
    let id = parse_mailbox_id(&id)?;
    let attempt =
        crate::services::authorization::latest_attempt(&state.access, principal.org_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("authorization attempt"))?;
    Ok(Json(attempt.into()))
}
