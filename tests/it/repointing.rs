//! A stored password or client secret goes only to the server it was entered for. Pointing a
//! mailbox at another SMTP host, port or security, or at another token URL, needs the secret
//! again in the same request; without it the change is refused and a fake server on the new
//! address receives nothing, not even a connection.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::problem;
use crate::outbox::{Outbox, PASSWORD, SUPPORT};

/// A listener that records every byte it is sent: an SMTP server that refuses every login, or
/// an HTTP server that answers 400.
struct Recorder {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(smtp: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    log.lock().unwrap().push("<connected>".into());
                    if smtp {
                        smtp_session(stream, &log).await;
                    } else {
                        http_exchange(stream, &log).await;
                    }
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn smtp_session(stream: tokio::net::TcpStream, log: &Mutex<Vec<String>>) {
    let mut stream = BufReader::new(stream);
    let _ = stream.get_mut().write_all(b"220 fake ESMTP\r\n").await;
    let mut line = String::new();
    while stream.read_line(&mut line).await.unwrap_or(0) > 0 {
        log.lock().unwrap().push(line.clone());
        let reply: &[u8] = match line.to_ascii_uppercase() {
            l if l.starts_with("EHLO") => b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n",
            l if l.starts_with("AUTH") => b"535 5.7.8 no\r\n",
            l if l.starts_with("QUIT") => b"221 bye\r\n",
            _ => b"250 ok\r\n",
        };
        let _ = stream.get_mut().write_all(reply).await;
        line.clear();
    }
}

/// Reads one HTTP request whole (headers and a Content-Length body), records it, answers 400.
async fn http_exchange(mut stream: tokio::net::TcpStream, log: &Mutex<Vec<String>>) {
    use tokio::io::AsyncReadExt as _;
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        request.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if request.len() >= end + 4 + length {
                break;
            }
        }
    }
    log.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&request).into_owned());
    let _ = stream
        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 27\r\nconnection: close\r\n\r\n{\"error\":\"invalid_request\"}")
        .await;
}

async fn patch(o: &Outbox, id: &str, body: Value) -> reqwest::Response {
    o.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/mailboxes/{id}"),
        &o.admin,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_password_is_not_sent_to_a_new_smtp_host_unless_it_is_entered_again() {
    let o = Outbox::start().await;
    let id = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let fake = Recorder::start(true).await;
    let elsewhere = json!({"host": "127.0.0.1", "port": fake.addr.port(), "security": "none"});
    let body = problem(
        patch(&o, &id, elsewhere.clone()).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "password", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("enter it again: the server changed")
    );
    // Each of host, port and security alone is a new server.
    for one in [
        json!({"port": fake.addr.port()}),
        json!({"security": "tls"}),
    ] {
        let body = problem(patch(&o, &id, one).await, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "password");
    }
    // Nothing changed: the mailbox still verifies against its own server.
    assert_eq!(o.verify(&id).await["status"], "verified");
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());

    // With the password in the same request, the change is made, and only that one is sent.
    let mut with_password = elsewhere;
    with_password["password"] = json!("a new password for the new host");
    assert_eq!(patch(&o, &id, with_password).await.status(), 200);
    let refused = o.verify(&id).await;
    assert_eq!(refused["status"], "not_verified", "{refused}");
    use base64::Engine as _;
    let sent: Vec<String> = fake
        .seen()
        .iter()
        .filter_map(|l| {
            l.strip_prefix("AUTH PLAIN ")
                .map(str::trim)
                .map(str::to_owned)
        })
        .map(|b64| {
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default(),
            )
            .into_owned()
        })
        .collect();
    assert!(
        !sent.is_empty(),
        "the new host was asked: {:?}",
        fake.seen()
    );
    assert!(sent.iter().all(|s| !s.contains(PASSWORD)), "{sent:?}");
    assert!(sent.iter().any(|s| s.contains("a new password")));
    o.stop().await;
}

#[tokio::test]
async fn a_client_secret_is_not_sent_to_a_new_token_url_unless_it_is_entered_again() {
    let o = Outbox::start().await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let old_secret = {
        let mut conn = o.app.store().conn().await.unwrap();
        herald::keys::get_secret(
            &mut conn,
            &o.app.state.access.keys,
            &id,
            herald::domain::mailbox::secret_fields::CLIENT_SECRET,
        )
        .await
        .unwrap()
        .unwrap()
    };
    let fake = Recorder::start(false).await;
    let token_url = format!("http://127.0.0.1:{}/token", fake.addr.port());
    let body = problem(
        patch(&o, &id, json!({"token_url": token_url})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "client_secret", "{body}");
    let body = problem(
        patch(&o, &id, json!({"client_auth": "basic"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "client_secret");
    let mailbox: Value = o
        .admin_json(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{id}"),
            None,
        )
        .await;
    assert_ne!(mailbox["token_url"], token_url.as_str());
    assert_eq!(mailbox["status"], "verified");
    // Authorize again: the code is redeemed at the mailbox's own token URL.
    let started: Value = o
        .admin_json(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/authorize"),
            None,
        )
        .await;
    assert!(started["authorization_url"].is_string());
    assert_eq!(o.verify(&id).await["status"], "verified");
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
    // A name or signature is not a new server: no secret needed.
    assert_eq!(
        patch(&o, &id, json!({"signature": "Contoso"}))
            .await
            .status(),
        200
    );

    // With a new secret in the same request the new token URL is taken, and a code is redeemed
    // there with that secret alone.
    let new_secret = "NewSecretForTheNewTokenUrl0123456789";
    let moved = patch(
        &o,
        &id,
        json!({"token_url": token_url, "client_secret": new_secret}),
    )
    .await;
    assert_eq!(moved.status(), 200, "{}", moved.text().await.unwrap());
    let started: Value = o
        .admin_json(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/authorize"),
            None,
        )
        .await;
    let redirect = crate::helpers::sandbox_consent(
        started["authorization_url"].as_str().unwrap(),
        SUPPORT,
        PASSWORD,
        "accept",
    )
    .await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    o.app.client().get(&location).send().await.unwrap();
    let requests: Vec<String> = fake
        .seen()
        .into_iter()
        .filter(|r| r.starts_with("POST"))
        .collect();
    assert_eq!(requests.len(), 1, "{:?}", fake.seen());
    assert!(requests[0].contains(new_secret), "{}", requests[0]);
    use secrecy::ExposeSecret as _;
    assert!(
        !requests[0].contains(old_secret.expose_secret()),
        "the old secret never reaches the new token URL"
    );
    o.stop().await;
}
