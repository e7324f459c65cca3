//! The HTTP side of Herald: the JSON API under `/api/v1`, the server-rendered web UI, sign-in,
//! and health checks. Handlers are thin: they parse the request, call [`crate::services`] (reads
//! through [`crate::services::views`]), and render the result; failures are [`error::ApiError`]
//! for the API and [`error::UiError`] for the pages.

pub mod api;
pub mod auth;
mod correlation;
pub mod error;
pub mod extract;
mod health;
pub mod rate;
pub mod ui;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::access::Access;
use crate::outbox::Outbox;

/// Largest request body accepted by any route.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler can reach: the core's one bundle of dependencies ([`Access`]), the
/// outbox to wake, and what only the web layer keeps.
#[derive(Clone)]
pub struct AppState {
    pub access: Access,
    /// The delivering side of the outbox, woken when mail is accepted.
    pub outbox: Outbox,
    pub login_throttle: Arc<auth::LoginThrottle>,
    /// Each API key's request rate (`HERALD_API_RATE_PER_MINUTE`), on this instance.
    pub api_rate: Arc<rate::ApiRate>,
    /// The running sandbox's state, for its inbox page.
    pub sandbox_state: Option<Arc<crate::sandbox::SandboxState>>,
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        "This route does not accept this HTTP method; see /api/v1/openapi.json.",
    )
}

/// The whole application's routes and middleware.
pub fn router(state: AppState) -> Router {
    let send_limit =
        usize::try_from(state.access.config.outbox.max_message_bytes / 3 * 4 + 256 * 1024)
            .unwrap_or(usize::MAX);
    Router::new()
        .merge(api::router(state.access.config.outbox.max_message_bytes))
        .merge(ui::router().layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES)))
        .merge(health::router())
        .fallback(ui::not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // The outer bound; each route's own limit (1 MiB but for sending) is set inside.
        .layer(RequestBodyLimitLayer::new(send_limit.max(MAX_BODY_BYTES)))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            use axum::response::IntoResponse as _;
            error::ApiError::internal().into_response()
        }))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        // The request's own span (its id, trace, method and path) is `correlate`'s.
        .layer(TraceLayer::new_for_http().make_span_with(
            |_: &axum::http::Request<axum::body::Body>| tracing::debug_span!("http"),
        ))
        .layer(axum::middleware::from_fn(correlation::correlate))
}
