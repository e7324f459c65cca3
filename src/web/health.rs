//! Liveness and readiness probes, and the metrics.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use secrecy::ExposeSecret;

use super::AppState;
use super::auth::ClientAddr;
use crate::domain::message::MessageStatus;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The metrics, in Prometheus' text format (OpenMetrics). With `HERALD_METRICS_TOKEN` set
/// they need it as a bearer token; without, they are served to loopback clients only.
async fn metrics(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Response {
    let allowed = match &state.access.config.metrics_token {
        Some(token) => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| {
                crate::crypto::constant_time_eq(given.trim(), token.expose_secret())
            }),
        // Only an installation that is itself reached on loopback (development, a sidecar
        // scraper) goes without a token. Behind a reverse proxy on this machine every outside
        // request would look local, with or without forwarding headers.
        None => {
            crate::net::reach_of(
                state
                    .access
                    .config
                    .public_url
                    .host_str()
                    .unwrap_or_default(),
            ) == crate::net::Reach::Loopback
                && client.is_loopback()
                && ["x-forwarded-for", "forwarded", "x-real-ip"]
                    .iter()
                    .all(|h| !headers.contains_key(*h))
        }
    };
    if !allowed {
        let why = if state.access.config.metrics_token.is_some() {
            "/metrics needs the bearer token set in HERALD_METRICS_TOKEN\n"
        } else {
            "/metrics needs a bearer token: set HERALD_METRICS_TOKEN (without one it answers only an installation reached on loopback, from this machine)\n"
        };
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let metrics = crate::metrics::get();
    match crate::services::views::all_message_counts(&state.access.store).await {
        Ok(counts) => {
            for &status in MessageStatus::ALL.iter().filter(|s| !s.is_final()) {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map_or(0, |(_, n)| *n);
                metrics
                    .queue
                    .get_or_create(&crate::metrics::StatusLabel {
                        status: status.as_str().to_owned(),
                    })
                    .set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: could not count the queue"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The process is up and its database answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.access.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
        }
    }
}
