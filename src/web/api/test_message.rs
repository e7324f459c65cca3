//! `/api/v1/mailboxes/{id}/test-message`: a real message through the mailbox, now.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::mailboxes::parse_mailbox_id;
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::ApiJson;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"to": "someone@example.com"}))]
pub struct TestMessage {
    /// Where to send the test message.
    pub to: String,
}

#[derive(Serialize, ToSchema)]
pub struct TestMessageSent {
    pub sent: bool,
    /// The server's final reply.
    pub smtp_reply: String,
}

/// Sends a real message through the mailbox. Admins only. 502 problem+json whose `code` is the
/// reason when the server refuses.
#[utoipa::path(post, path = "/api/v1/mailboxes/{id}/test-message", tag = "mailboxes", params(("id" = String, Path)), request_body = TestMessage,
    responses((status = 200, body = TestMessageSent), (status = 502, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn send_test_message(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TestMessage>,
) -> Result<Json<TestMessageSent>, ApiError> {
    use crate::services::test_message::SendOutcome;
    principal.require_admin()?;
    let id = parse_mailbox_id(&id)?;
    match crate::services::test_message::send_test_message(
        &state.access,
        principal.org_id,
        id,
        &body.to,
    )
    .await?
    {
        SendOutcome::Sent { reply } => Ok(Json(TestMessageSent {
            sent: true,
            smtp_reply: reply,
        })),
        SendOutcome::Failed { reason, transient } => {
            let code = static_reason_code(&reason.code);
            let mut error = ApiError::new(
                StatusCode::BAD_GATEWAY,
                code,
                "Not sent",
                reason.message.clone(),
            );
            if transient {
                error.retry_after = Some(60);
            }
            if let Some(action) = reason.action {
                error.detail = format!("{} {}", error.detail, action);
            }
            Err(error)
        }
    }
}

/// The problem `code` for a send failure: the reason's own code, from the known set.
fn static_reason_code(code: &str) -> &'static str {
    known_reason_code(code).unwrap_or("send_failed")
}

/// A reason's code as a problem `code`, when it is one of the known set.
pub(super) fn known_reason_code(code: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &[
        "smtp_auth_disabled",
        "token_rejected",
        "send_as_denied",
        "basic_auth_retired",
        "basic_auth_rejected",
        "smtp_error",
        "smtp_transient",
        "message_rejected",
        "hve_internal_only",
        "smtp_connection_failed",
        "client_secret_expired",
        "client_secret_invalid",
        "refresh_token_expired",
        "consent_required",
        "consent_declined",
        "redirect_uri_mismatch",
        "app_not_found",
        "mfa_or_conditional_access",
        "invalid_scope",
        "provider_error",
        "certificate_not_verified",
        "certificate_not_accepted",
        "certificate_missing",
        "clock_skew",
        "app_not_permitted",
        "reauthorization_required",
        "verification_required",
        "authorization_required",
    ];
    KNOWN.iter().find(|k| **k == code).copied()
}
