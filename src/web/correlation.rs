//! Every request's identity in the logs: a request id (the caller's `X-Request-Id` when it is
//! a plain token, as a proxy in front sets it, else a new one) and the W3C trace it belongs
//! to (the caller's `traceparent`, or a new trace). Both name the span every log line of the
//! request is written under, and both are answered back (`X-Request-Id`, `traceparent`), so a
//! caller can quote them.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

use crate::trace::{self, TraceContext};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A caller's request id, if it is 1 to 64 letters, digits or `-_.:` (nothing a log reader
/// could mistake for structure).
fn callers_id(request: &Request) -> Option<String> {
    let id = request.headers().get(&REQUEST_ID)?.to_str().ok()?;
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    plain.then(|| id.to_owned())
}

/// The middleware: runs the request inside its span and trace.
pub async fn correlate(request: Request, next: Next) -> Response {
    let context = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .map(|caller| caller.child())
        .unwrap_or_else(TraceContext::new_root);
    let request_id = callers_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // The path only: a query string can carry a secret (the setup link's token).
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        trace_id = %context.trace_id(),
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = trace::scope(context, next.run(request))
        .instrument(span)
        .await;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, value);
    }
    if let Ok(value) = HeaderValue::from_str(&context.header()) {
        headers.insert(TRACEPARENT, value);
    }
    response
}
