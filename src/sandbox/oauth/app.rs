//! The client credentials grant (app-only access): once the client is authenticated, exactly
//! one scope `{resource}/.default` names the resource, and the token carries the application
//! permissions granted on it (perhaps none: Entra still issues it). No refresh token, no ID
//! token.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde_json::json;

use super::super::apps::resource_named;
use super::OAuthServer;
use super::errors::token_error;

pub(super) fn client_credentials(
    server: &OAuthServer,
    client_id: &str,
    scope: Option<&str>,
) -> Response {
    let bad =
        |status, error, code, message: &str| token_error(server, status, error, code, message);
    let scope = scope.unwrap_or_default().trim();
    if scope.is_empty() {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let identifier = match scopes.as_slice() {
        [one] => one.strip_suffix("/.default"),
        _ => None,
    };
    let Some(identifier) = identifier else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let Some(resource) = resource_named(identifier) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {identifier} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                server.tenant
            ),
        );
    };
    let now = server.state.now();
    let (token, record) = server.state.issue_app_token(client_id, resource, now);
    let expires_in = (record.expires_at - now).whole_seconds().max(0);
    (
        StatusCode::OK,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token.expose_secret(),
        })),
    )
        .into_response()
}
