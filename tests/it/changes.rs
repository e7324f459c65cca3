//! Instances on one PostgreSQL database tell each other of changes: what one remembers (the
//! relay's credentials, the directory of organizations and mailboxes) is stale as soon as
//! another instance changes it, not a second later. Each instance is a `herald serve` process
//! of its own here, since instances in one process share what they count.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::crash::{ready, serve};
use crate::helpers::{TestDb, http_builder};

const MAILBOX: &str = "reports@contoso.com";
const PASSWORD: &str = "reports' sandbox password";

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_relay_credential_deleted_on_one_instance_stops_working_on_another_at_once() {
    let db = TestDb::new().await;
    if !matches!(db, TestDb::Postgres { .. }) {
        return; // One SQLite file has one instance.
    }
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", http.local_addr().unwrap().port());
    let sandbox = herald::sandbox::RunningSandbox::start_on(http, smtp, &base)
        .await
        .unwrap();
    sandbox
        .state
        .add_user(MAILBOX, SecretString::from(PASSWORD));
    let data = tempfile::tempdir().unwrap();
    let ca = data.path().join("sandbox-ca.pem");
    std::fs::write(&ca, sandbox.ca.ca_pem()).unwrap();
    let master_key = herald::app::new_master_key();
    let instance = |name: &str| {
        let (port, relay) = (free_port(), free_port());
        let dir = data.path().join(name);
        let env = BTreeMap::from([
            ("HERALD_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
            (
                "HERALD_PUBLIC_URL".to_owned(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("HERALD_DATA_DIR".to_owned(), dir.display().to_string()),
            ("HERALD_DATABASE_URL".to_owned(), db.url()),
            ("HERALD_MASTER_KEY".to_owned(), master_key.clone()),
            ("HERALD_ALLOW_PRIVATE_HOSTS".to_owned(), "true".to_owned()),
            ("HERALD_SMTP_CA_FILE".to_owned(), ca.display().to_string()),
            (
                "HERALD_RELAY_LISTEN".to_owned(),
                format!("127.0.0.1:{relay}"),
            ),
            (
                "HERALD_RELAY_AUTH_WITHOUT_TLS".to_owned(),
                "true".to_owned(),
            ),
            ("HERALD_LOG".to_owned(), "warn".to_owned()),
        ]);
        (serve(&env), format!("http://127.0.0.1:{port}"), relay)
    };
    let (mut first, first_url, _) = instance("first");
    ready(&first_url).await;
    let (mut second, second_url, second_relay) = instance("second");
    ready(&second_url).await;

    let (_store, key) = crate::helpers::contoso_in(&db.database_url(), "ops").await;
    let client = http_builder().build().unwrap();
    let api = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let request = client
            .request(method, format!("{first_url}/api/v1{path}"))
            .bearer_auth(&key);
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    let smtp_addr = sandbox.smtp_addr;
    let created: Value = api(
        reqwest::Method::POST,
        "/mailboxes",
        Some(json!({
            "name": "Reports", "auth": "basic", "provider": "custom",
            "host": smtp_addr.ip().to_string(), "port": smtp_addr.port(), "security": "starttls",
            "username": MAILBOX, "password": PASSWORD, "default": true,
        })),
    )
    .await
    .json()
    .await
    .unwrap();
    let mailbox = created["id"].as_str().unwrap().to_owned();
    let verified: Value = api(
        reqwest::Method::POST,
        &format!("/mailboxes/{mailbox}/verify"),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(verified["status"], "verified", "{verified}");
    let credential: Value = api(
        reqwest::Method::POST,
        "/relay-credentials",
        Some(json!({"name": "Scanner", "mailbox": "Reports"})),
    )
    .await
    .json()
    .await
    .unwrap();

    // A device signs in to the second instance and sends: the credential is remembered there.
    let mut device = AsyncSmtpConnection::connect_tokio1(
        ("127.0.0.1", second_relay),
        Some(Duration::from_secs(10)),
        &ClientId::Domain("scanner.contoso.com".into()),
        None,
        None,
    )
    .await
    .unwrap();
    device
        .auth(
            &[Mechanism::Plain],
            &Credentials::new(
                credential["username"].as_str().unwrap().into(),
                credential["password"].as_str().unwrap().into(),
            ),
        )
        .await
        .unwrap();
    let envelope = Envelope::new(
        Some("scanner@contoso.com".parse().unwrap()),
        vec!["archive@example.com".parse().unwrap()],
    )
    .unwrap();
    let scan = b"Subject: Scan\r\n\r\nPage 1.\r\n";
    device
        .send(&envelope, scan)
        .await
        .expect("250 for a live credential");
    // Once what it remembers has aged, once more: the second instance has just read the
    // credential again, and would keep it for a second.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    device
        .send(&envelope, scan)
        .await
        .expect("250 for a live credential");

    // The admin deletes it through the first instance; the second refuses the next message
    // at once, well before what it remembers would have aged (a second).
    let deleted = api(
        reqwest::Method::DELETE,
        &format!("/relay-credentials/{}", credential["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(deleted.status(), 204);
    let since = Instant::now();
    let refusal = loop {
        match device.send(&envelope, scan).await {
            Err(e) => break e.to_string(),
            Ok(_) => {
                assert!(
                    since.elapsed() < Duration::from_millis(500),
                    "the second instance still took mail {:?} after the credential was deleted",
                    since.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(refusal.contains("deleted"), "{refusal}");
    let _ = first.kill().await;
    let _ = second.kill().await;
}
