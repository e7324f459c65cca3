//! Entra-shaped errors: the provider's own error page, the token endpoint's JSON error, and
//! errors redirected to the client with `error=`.

use askama::Template;
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::json;
use time::OffsetDateTime;

use super::OAuthServer;

pub(super) fn timestamp(now: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    now.format(&f).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "sandbox/error.html")]
struct ErrorPage {
    tenant: String,
    message: String,
    request_id: String,
    correlation_id: String,
    timestamp: String,
}

/// An error shown on the provider's own page, never sent to the client.
pub(super) fn error_page(server: &OAuthServer, tenant: &str, code: u32, message: &str) -> Response {
    let page = ErrorPage {
        tenant: tenant.to_owned(),
        message: format!("AADSTS{code}: {message}"),
        request_id: uuid::Uuid::new_v4().to_string(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        timestamp: timestamp(server.state.now()),
    };
    match page.render() {
        Ok(html) => (StatusCode::BAD_REQUEST, Html(html)).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, format!("AADSTS{code}: {message}")).into_response(),
    }
}

/// A token-endpoint error in Entra's shape.
pub(super) fn token_error(
    server: &OAuthServer,
    status: StatusCode,
    error: &str,
    code: u32,
    message: &str,
) -> Response {
    let now = server.state.now();
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let ts = timestamp(now);
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {ts}"),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace.to_string(),
        "correlation_id": correlation.to_string(),
        "error_uri": format!("{}/error?code={code}", server.base_url),
    });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

pub(super) fn tenant_not_found(tenant: &str) -> String {
    format!(
        "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
    )
}

/// Appends query parameters to a redirect URI.
pub(crate) fn redirect_with(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(url) => url,
        Err(_) => return (StatusCode::BAD_REQUEST, "invalid redirect URI").into_response(),
    };
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in params {
            pairs.append_pair(k, v);
        }
    }
    Redirect::to(url.as_str()).into_response()
}

pub(super) fn redirect_error(
    server: &OAuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    error: &str,
    code: u32,
    message: &str,
) -> Response {
    let now = server.state.now();
    let description = format!(
        "AADSTS{code}: {message} Trace ID: {} Correlation ID: {} Timestamp: {}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        timestamp(now)
    );
    let issuer = server.issuer();
    let mut params = vec![
        ("error", error),
        ("error_description", description.as_str()),
    ];
    if let Some(state) = state {
        params.push(("state", state));
    }
    params.push(("iss", issuer.as_str()));
    redirect_with(redirect_uri, &params)
}
