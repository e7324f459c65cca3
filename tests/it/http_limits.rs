//! Endpoints that never stop talking: a token URL or a webhook answering 400 MB is cut off at
//! 256 KiB (by its `Content-Length`, or while reading a chunked answer), the admin is told what
//! is wrong, and Herald's memory does not follow the answer. Memory is measured on `herald serve`
//! run as a process of its own (its `/proc/<pid>/status`), so nothing of the test's is counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::crash::{ready, serve};
use crate::helpers::{TestDb, eventually, http_builder};
use crate::outbox::{Outbox, SUPPORT};

/// What each flooding endpoint offers to send.
const FLOOD_BYTES: u64 = 400 * 1024 * 1024;
/// The slice of the answer written at a time; the only buffer the endpoint holds.
const PIECE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
enum Framing {
    /// `Content-Length: 419430400`, then the bytes.
    ContentLength,
    /// No length: `Transfer-Encoding: chunked`, chunk after chunk.
    Chunked,
}

/// An HTTP endpoint on loopback that answers every request `200 OK` with 400 MB, streamed, and
/// counts the bytes the client let it send.
struct Flood {
    base: String,
    sent: Arc<AtomicU64>,
}

impl Flood {
    async fn start(framing: Framing) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, framing, counter.clone()));
            }
        });
        Self { base, sent }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

async fn answer(mut stream: TcpStream, framing: Framing, sent: Arc<AtomicU64>) {
    // Read the whole request (head and form body) before answering, as a server would.
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let body_start = loop {
        let Ok(n) = stream.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < body_start + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = match framing {
        Framing::ContentLength => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {FLOOD_BYTES}\r\n\r\n"
        ),
        Framing::Chunked => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
    };
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let piece = vec![b' '; PIECE];
    let chunk_head = format!("{PIECE:x}\r\n");
    let mut total = 0u64;
    while total < FLOOD_BYTES {
        let written = match framing {
            Framing::ContentLength => stream.write_all(&piece).await,
            Framing::Chunked => {
                let mut r = stream.write_all(chunk_head.as_bytes()).await;
                if r.is_ok() {
                    r = stream.write_all(&piece).await;
                }
                if r.is_ok() {
                    r = stream.write_all(b"\r\n").await;
                }
                r
            }
        };
        if written.is_err() {
            return;
        }
        total += PIECE as u64;
        sent.store(total, Ordering::SeqCst);
    }
    if let Framing::Chunked = framing {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
}

/// A field of `/proc/<pid>/status`, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[tokio::test]
async fn a_token_endpoint_answering_400_mb_is_cut_off_at_256_kib_and_herald_s_memory_stays_flat() {
    let db = TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let herald_url = format!("http://127.0.0.1:{port}");
    let env = BTreeMap::from([
        ("HERALD_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
        ("HERALD_PUBLIC_URL".to_owned(), herald_url.clone()),
        (
            "HERALD_DATA_DIR".to_owned(),
            data.path().display().to_string(),
        ),
        ("HERALD_DATABASE_URL".to_owned(), db.url()),
        // Token URLs on loopback over http.
        ("HERALD_DEV".to_owned(), "true".to_owned()),
        ("HERALD_LOG".to_owned(), "error".to_owned()),
    ]);
    let herald = serve(&env);
    let pid = herald.id().expect("herald serve runs");
    ready(&herald_url).await;

    let (store, key) = crate::helpers::contoso_in(&db.database_url(), "admin").await;
    let client = http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    for framing in [Framing::ContentLength, Framing::Chunked] {
        let flood = Flood::start(framing).await;
        let created: Value = client
            .post(format!("{herald_url}/api/v1/mailboxes"))
            .bearer_auth(&key)
            .json(&json!({
                "name": format!("{framing:?}"), "auth": "oauth2", "provider": "custom",
                "host": "smtp.example.com", "username": SUPPORT, "client_id": "id",
                "client_secret": "a client secret value", "scopes": ["mail"],
                "authorization_url": format!("{}/authorize", flood.base),
                "token_url": format!("{}/token", flood.base),
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"));
        let started: Value = client
            .post(format!("{herald_url}/api/v1/mailboxes/{id}/authorize"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let authorize = url::Url::parse(started["authorization_url"].as_str().unwrap()).unwrap();
        let state = authorize
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap();

        // The provider "redirects" back with a code; Herald redeems it at the flooding URL.
        // The peak is reset first (Linux: 5 in clear_refs), so it is this request's alone.
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
        let rss_before = proc_status_kib(pid, "VmRSS:");
        let landed = client
            .get(format!("{herald_url}/web/um/smtp/redirect"))
            .query(&[("code", "a code"), ("state", state.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(landed.status(), 303);
        let peak = proc_status_kib(pid, "VmHWM:");
        let growth_kib = peak.saturating_sub(rss_before);
        println!(
            "{framing:?}: resident {rss_before} KiB before, peak {peak} KiB after: growth {growth_kib} KiB; the endpoint got to send {} KiB of {} KiB",
            flood.sent() / 1024,
            FLOOD_BYTES / 1024
        );
        assert!(
            growth_kib < 20 * 1024,
            "{framing:?}: Herald's peak memory grew by {growth_kib} KiB reading the answer"
        );
        assert!(
            flood.sent() < FLOOD_BYTES / 8,
            "{framing:?}: Herald kept reading ({} bytes sent)",
            flood.sent()
        );

        let mailbox: Value = client
            .get(format!("{herald_url}/api/v1/mailboxes/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(mailbox["status"], "not_verified", "{framing:?}: {mailbox}");
        assert_eq!(
            mailbox["status_reason"]["code"], "provider_error",
            "{mailbox}"
        );
        assert!(
            mailbox["status_reason"]["message"]
                .as_str()
                .unwrap()
                .contains("the token endpoint answered more than 256 KiB"),
            "{mailbox}"
        );
    }
    store.close().await;
    drop(herald);
}

#[tokio::test]
async fn a_refresh_answered_with_400_mb_turns_the_mailbox_not_verified_at_once_without_retrying() {
    let o = Outbox::start().await;
    let mailbox = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let flood = Flood::start(Framing::Chunked).await;
    // The Token URL now points at an endpoint that never stops (as after an edit), and the
    // access token has run out, so Verify must refresh there.
    sqlx::query("UPDATE mailboxes SET token_url = $1, token_expires_at = 0 WHERE id = $2")
        .bind(format!("{}/token", flood.base))
        .bind(&mailbox)
        .execute(o.app.store().pool())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let verified: Value = o
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{mailbox}/verify"),
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verified["status"], "not_verified", "{verified}");
    assert_eq!(verified["status_reason"]["code"], "provider_error");
    assert!(
        verified["status_reason"]["message"]
            .as_str()
            .unwrap()
            .contains("the token endpoint answered more than 256 KiB"),
        "{verified}"
    );
    assert!(
        flood.sent() < FLOOD_BYTES / 8,
        "Herald kept reading ({} bytes sent)",
        flood.sent()
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "an endless answer is not an outage to wait out"
    );
    o.stop().await;
}

#[tokio::test]
async fn a_webhook_answering_400_mb_is_a_failed_delivery_that_says_so() {
    let o = Outbox::start().await;
    let flood = Flood::start(Framing::ContentLength).await;
    let set = o
        .call(
            reqwest::Method::PUT,
            "/api/v1/organization/alert-webhook",
            &o.admin,
            Some(json!({ "url": format!("{}/hooks/herald", flood.base) })),
        )
        .await;
    assert_eq!(set.status(), 200, "{}", set.text().await.unwrap());
    let mailbox = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    // The mailbox's authorization dies: an alert is raised and POSTed to the webhook.
    o.switch(|s| s.refresh_token_expired = true);
    sqlx::query("UPDATE mailboxes SET token_expires_at = 0 WHERE id = $1")
        .bind(&mailbox)
        .execute(o.app.store().pool())
        .await
        .unwrap();
    o.call(
        reqwest::Method::POST,
        &format!("/api/v1/mailboxes/{mailbox}/verify"),
        &o.admin,
        None,
    )
    .await;
    let alert = || async {
        let list: Value = o
            .call(reqwest::Method::GET, "/api/v1/alerts", &o.admin, None)
            .await
            .json()
            .await
            .unwrap();
        list["alerts"][0].clone()
    };
    eventually("the webhook's delivery to fail", || async {
        !alert().await["webhook_error"].is_null()
    })
    .await;
    let alert = alert().await;
    assert_ne!(alert["webhook"], "delivered", "{alert}");
    assert_eq!(
        alert["webhook_error"], "the webhook answered more than 256 KiB",
        "{alert}"
    );
    assert!(flood.sent() < FLOOD_BYTES / 8);
    o.stop().await;
}
