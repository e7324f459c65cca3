//! `/api/v1/mailboxes/{id}/authorize` and `…/authorization`: starting the seed's Authorize
//! flow for a mailbox, and the latest attempt's outcome; `…/authorize/device`: the same with a
//! device code (RFC 8628) for when no browser can come back to Herald.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
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

/// A device code to enter at the provider's page.
#[derive(Serialize, ToSchema)]
pub struct DeviceAuthorizationStarted {
    /// The attempt's id, as in `GET …/authorization`, which follows it.
    pub attempt_id: String,
    /// What the person types at `verification_uri` (Microsoft's has 9 characters).
    pub user_code: String,
    /// Where the person enters the code, on any device, then signs in and accepts.
    pub verification_uri: String,
    /// When the code expires (Microsoft: 15 minutes).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Seconds between Herald's polls of the token endpoint, as the provider asked.
    pub interval: u64,
    /// What to tell the person, in the provider's words when it gives some.
    pub message: String,
}

/// Starts a device-code authorization (RFC 8628). Admins only. Herald asks the provider for a
/// code with the mailbox's app registration, scopes and client authentication, then polls the
/// token endpoint in the background at the provider's `interval` (five seconds more after each
/// `slow_down`) until the person has entered the code, signed in and accepted, declined, or the
/// code expired; `GET …/authorization` follows it, and it ends as Authorize does (the same
/// checks, tokens and status). 422 `device_code_unsupported`: the provider offers no device
/// code (Microsoft and the sandbox do; a custom provider must name a
/// `device_authorization_endpoint` in its discovery document). 502: the provider refused to
/// give a code; `code` is the reason.
#[utoipa::path(post, path = "/api/v1/mailboxes/{id}/authorize/device", tag = "mailboxes", params(("id" = String, Path)),
    responses((status = 200, body = DeviceAuthorizationStarted), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem), (status = 502, body = Problem)))]
pub async fn start_device_authorization(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<DeviceAuthorizationStarted>, ApiError> {
    principal.require_admin()?;
    let id = parse_mailbox_id(&id)?;
    let started =
        crate::services::device::start(&state.access, principal.org_id, id, &principal.actor)
            .await?;
    let (started, poll) = started.map_err(|reason| {
        let code =
            super::test_message::known_reason_code(&reason.code).unwrap_or("provider_refused");
        let mut error = ApiError::new(
            StatusCode::BAD_GATEWAY,
            code,
            "No device code",
            reason.message.clone(),
        );
        if let Some(action) = reason.action {
            error.detail = format!("{} {}", error.detail, action);
        }
        error
    })?;
    poll.spawn();
    Ok(Json(DeviceAuthorizationStarted {
        attempt_id: started.attempt_id,
        user_code: started.user_code,
        verification_uri: started.verification_uri,
        expires_at: started.expires_at,
        interval: started.interval,
        message: started.message,
    }))
}
