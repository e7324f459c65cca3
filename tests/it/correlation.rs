//! Logs an operator can follow: every line of a request names its request id and trace id,
//! every line of a delivery its message; a caller's `traceparent` is honoured and carried to
//! the provider.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::outbox::{Outbox, SUPPORT, simple};

/// Herald's log lines, as JSON, kept while the guard lives (this thread's tasks only: the
/// tests' runtime runs the application on the test's own thread).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter("herald=debug,tower_http=debug")
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The lines logged inside a span named `span` whose `field` is `value`.
    fn under(&self, span: &str, field: &str, value: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|line| {
                line["spans"].as_array().is_some_and(|spans| {
                    spans
                        .iter()
                        .any(|s| s["name"] == span && s[field].as_str() == Some(value))
                })
            })
            .collect()
    }
}

/// A token endpoint that answers `503` and keeps the `traceparent` of each request.
async fn failing_token_endpoint() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let kept = kept.clone();
            async move {
                let trace = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                kept.lock().unwrap().push(trace);
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

const CALLERS_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn a_request_is_logged_under_its_id_and_trace_and_the_provider_sees_the_trace() {
    let (logs, _guard) = Logs::capture();
    let o = Outbox::start().await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let (token_url, seen) = failing_token_endpoint().await;
    sqlx::query("UPDATE mailboxes SET token_url = $1, token_expires_at = 0 WHERE id = $2")
        .bind(&token_url)
        .bind(&id)
        .execute(o.app.store().pool())
        .await
        .unwrap();

    let response = o
        .app
        .client()
        .post(o.app.url(&format!("/api/v1/mailboxes/{id}/verify")))
        .bearer_auth(&o.admin)
        .header("traceparent", CALLERS_TRACE)
        .header("x-request-id", "ticket-4711")
        .send()
        .await
        .unwrap();
    // The caller's request id and trace come back; the span id is Herald's own.
    assert_eq!(response.headers()["x-request-id"], "ticket-4711");
    let answered = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        answered.starts_with(&format!("00-{TRACE_ID}-")),
        "{answered}"
    );
    assert!(answered.ends_with("-01"), "{answered}");
    assert_ne!(answered, CALLERS_TRACE);
    // The token endpoint saw the same trace, from a hop of its own.
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the refresh was tried");
    for trace in &seen {
        assert!(trace.starts_with(&format!("00-{TRACE_ID}-")), "{trace}");
        assert_ne!(trace, &answered);
    }
    // Every line of the request, Herald's retries included, names its id and trace.
    let lines = logs.under("request", "request_id", "ticket-4711");
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("token endpoint unavailable"))),
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| {
        l["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["trace_id"] == TRACE_ID)
    }));

    // Without them, Herald makes its own: a new id and a new trace each time.
    let plain = o
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{id}"),
            &o.admin,
            None,
        )
        .await;
    let request_id = plain.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&request_id).is_ok(), "{request_id}");
    let trace = plain.headers()["traceparent"].to_str().unwrap();
    assert!(!trace.contains(TRACE_ID), "{trace}");
    // A request id that could pass for structure in a log is not taken.
    let odd = o
        .app
        .client()
        .get(o.app.url("/api/v1/mailboxes"))
        .bearer_auth(&o.admin)
        .header("x-request-id", "a\" injected=\"1")
        .send()
        .await
        .unwrap();
    assert_ne!(odd.headers()["x-request-id"], "a\" injected=\"1");
    o.stop().await;
}

#[tokio::test]
async fn every_line_of_a_delivery_names_the_message() {
    let (logs, _guard) = Logs::capture();
    let o = Outbox::start().await;
    o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let id = o
        .accepted(&o.admin, simple("bob@example.com", "Traced"))
        .await;
    o.wait_for(&o.admin, &id, "sent").await;
    let lines = logs.under("delivery", "message_id", &id);
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "sent"),
        "{:#?}",
        logs.lines()
    );
    o.stop().await;
}
