//! `/api/v1/alerts` (what the organization's admins must hear about) and
//! `/api/v1/organization/alert-webhook` (where alerts are POSTed, signed).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::services::alerts;
use crate::services::settings;
use crate::services::views::{self, Alert};
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::{ApiJson, ApiQuery};

/// An alert.
#[derive(Serialize, ToSchema)]
pub struct AlertOut {
    pub id: String,
    /// `mailbox_not_verified`, `client_secret_expiring`, `client_secret_expired`,
    /// `message_failed` or `keepalive_failed`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub detail: String,
    /// What to do about it.
    pub action: Option<String>,
    pub mailbox_id: Option<String>,
    pub message_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the cause went away (the mailbox was verified again, say).
    #[serde(with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub dismissed_at: Option<OffsetDateTime>,
    /// The webhook delivery: `none` (no webhook when raised), `pending`, `delivered` or
    /// `failed` (given up after 8 tries).
    pub webhook: String,
    pub webhook_error: Option<String>,
    /// The email to the organization's admins: `pending`, `queued` (the message
    /// `email_message_id`, in the message log) or `skipped` (`email_error` says why).
    pub email: String,
    pub email_message_id: Option<String>,
    pub email_error: Option<String>,
}

impl From<Alert> for AlertOut {
    fn from(a: Alert) -> Self {
        Self {
            id: a.id,
            kind: a.kind,
            title: a.title,
            detail: a.detail,
            action: a.action,
            mailbox_id: a.mailbox_id.map(|m| m.to_string()),
            message_id: a.message_id,
            created_at: a.created_at,
            resolved_at: a.resolved_at,
            dismissed_at: a.dismissed_at,
            webhook: a.webhook_status,
            webhook_error: a.webhook_last_error,
            email: if a.email_status == "writing" {
                "pending".into()
            } else {
                a.email_status
            },
            email_message_id: a.email_message_id,
            email_error: a.email_error,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertParams {
    /// `true`: the last 100, resolved and dismissed ones included. Default: the open ones.
    pub all: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<AlertOut>,
}

/// The organization's alerts: by default the open ones, which the UI shows as a banner.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts", params(AlertParams),
    responses((status = 200, body = AlertList), (status = 403, body = Problem)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<AlertParams>,
) -> Result<Json<AlertList>, ApiError> {
    principal.require_reader()?;
    let alerts = if params.all.unwrap_or(false) {
        views::recent_alerts(&state.access.store, principal.org_id, 100).await?
    } else {
        views::open_alerts(&state.access.store, principal.org_id).await?
    };
    Ok(Json(AlertList {
        alerts: alerts.into_iter().map(AlertOut::from).collect(),
    }))
}

/// Hides an alert from the banner. Admins only.
#[utoipa::path(post, path = "/api/v1/alerts/{id}/dismiss", tag = "alerts", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn dismiss_alert(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    if alerts::dismiss(
        &state.access.store,
        principal.org_id,
        &id,
        &principal.actor,
        state.access.now(),
    )
    .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("alert"))
    }
}

/// Where alerts go.
#[derive(Serialize, ToSchema)]
pub struct AlertWebhookOut {
    pub url: Option<String>,
}

/// A webhook just set, with its signing secret: store it now, it cannot be shown again.
#[derive(Serialize, ToSchema)]
pub struct AlertWebhookSet {
    pub url: String,
    /// The HMAC-SHA256 key of `Herald-Signature`.
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/herald"}))]
pub struct PutAlertWebhook {
    /// An `https://` URL (`http://` on loopback in development mode), under the same rules as
    /// token URLs: no private or loopback address unless the installation allows them.
    pub url: String,
}

/// The organization's alert webhook. Admins only: such a URL often carries a token of the
/// receiver's.
#[utoipa::path(get, path = "/api/v1/organization/alert-webhook", tag = "alerts",
    responses((status = 200, body = AlertWebhookOut), (status = 403, body = Problem)))]
pub async fn get_alert_webhook(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<AlertWebhookOut>, ApiError> {
    principal.require_admin()?;
    Ok(Json(AlertWebhookOut {
        url: views::alert_webhook_url(&state.access.store, principal.org_id).await?,
    }))
}

/// Sets the alert webhook with a new signing secret, shown once. Admins only.
#[utoipa::path(put, path = "/api/v1/organization/alert-webhook", tag = "alerts", request_body = PutAlertWebhook,
    responses((status = 200, body = AlertWebhookSet), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn set_alert_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<PutAlertWebhook>,
) -> Result<Json<AlertWebhookSet>, ApiError> {
    principal.require_admin()?;
    let (url, secret) = alerts::set_webhook(
        &state.access.store,
        &state.access.keys,
        &super::mailboxes::policy(&state),
        principal.org_id,
        &body.url,
        state.access.now(),
    )
    .await?;
    // The audit log keeps where, not the query string (which may carry the receiver's token).
    let shown = url::Url::parse(&url)
        .map(|mut u| {
            u.set_query(None);
            u.to_string()
        })
        .unwrap_or_default();
    audit(
        &state,
        &principal,
        "organization.alert_webhook.set",
        Some(&shown),
    )
    .await?;
    Ok(Json(AlertWebhookSet {
        url,
        secret: secret.expose_secret().to_owned(),
    }))
}

/// Removes the alert webhook. Admins only.
#[utoipa::path(delete, path = "/api/v1/organization/alert-webhook", tag = "alerts",
    responses((status = 204), (status = 403, body = Problem)))]
pub async fn delete_alert_webhook(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    settings::remove_alert_webhook(&state.access.store, principal.org_id).await?;
    audit(
        &state,
        &principal,
        "organization.alert_webhook.delete",
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit(
    state: &AppState,
    principal: &Principal,
    action: &'static str,
    url: Option<&str>,
) -> Result<(), ApiError> {
    settings::audit_alert_webhook(
        &state.access.store,
        principal.org_id,
        &principal.actor,
        action,
        url,
        state.access.now(),
    )
    .await
    .map_err(ApiError::from)
}
