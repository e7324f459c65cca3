//! `herald migrate-to-postgres` as the README has an operator run it: a populated SQLite
//! installation (mailboxes with sealed secrets, queued and held mail, API keys, users) copied
//! into an empty PostgreSQL database, then served by two instances. Needs `TEST_POSTGRES_URL`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::backup::{herald, on_sqlite, sqlite_env};
use crate::helpers::{self, PASSWORD, POSTGRES_ENV, TestApp, TestDb, spawn_beside};
use crate::outbox::{Outbox, SUPPORT, simple};

async fn on_postgres(
    sandbox: &herald::sandbox::RunningSandbox,
    url: &str,
    master_key: &str,
) -> TestApp {
    spawn_beside(sandbox, |env| {
        env.insert("HERALD_DATABASE_URL".into(), url.into());
        env.insert("HERALD_MASTER_KEY".into(), master_key.into());
    })
    .await
}

async fn call(app: &TestApp, method: reqwest::Method, key: &str, path: &str) -> (u16, Value) {
    let response = app
        .client()
        .request(method, app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_populated_sqlite_database_moves_to_postgresql_and_two_instances_serve_it() {
    if !std::env::var(POSTGRES_ENV).is_ok_and(|v| !v.is_empty()) {
        eprintln!("migrate-to-postgres needs a PostgreSQL server: set {POSTGRES_ENV}");
        return;
    }
    let master_key = herald::app::new_master_key();
    let (sandbox, _) = helpers::start_sandbox().await;
    let data = tempfile::tempdir().unwrap();
    let app = on_sqlite(&sandbox, data.path(), &[("HERALD_MASTER_KEY", &master_key)]).await;
    let o = Outbox::with(app, sandbox).await;
    let support = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    o.app.user(o.org, "admin@contoso.com", "admin").await;
    let fabrikam = o.app.org("Fabrikam").await;
    let fabrikam_key = o.app.key(fabrikam, "sender").await;
    let held = o
        .accepted(
            &fabrikam_key,
            simple("carol@example.com", "Held for Fabrikam"),
        )
        .await;
    let sent = o
        .accepted(&o.admin, simple("bob@example.com", "Sent from SQLite"))
        .await;
    o.wait_for(&o.admin, &sent, "sent").await;

    let mut env = sqlite_env(data.path());
    env.insert("HERALD_MASTER_KEY".into(), master_key.clone());
    env.insert("HERALD_DEV".into(), "true".into());
    let target = TestDb::new().await;
    let url = target.url();
    // Not while Herald serves on the SQLite database.
    herald(&env, &["migrate-to-postgres", "--to", &url])
        .await
        .fails_with(&["Herald is running"]);

    let Outbox {
        app,
        sandbox,
        admin,
        ..
    } = o;
    app.stop().await;
    // Queued with no Herald serving: these wait in SQLite, and must leave once, from PostgreSQL.
    let mut queued = Vec::new();
    for i in 0..4 {
        let subject = format!("Queued before the move #{i}");
        let out = herald(
            &env,
            &[
                "send",
                "--mailbox",
                "Support",
                "--to",
                "bob@example.com",
                "--subject",
                &subject,
                "--text",
                "Hello",
            ],
        )
        .await;
        out.succeeds();
        queued.push(subject);
    }

    let ran = herald(&env, &["migrate-to-postgres", "--to", &url]).await;
    let out = ran.succeeds();
    assert!(
        out.contains("one transaction") && out.contains("secrets") && out.contains("messages"),
        "{out}"
    );
    // Once only: the target is no longer empty.
    herald(&env, &["migrate-to-postgres", "--to", &url])
        .await
        .fails_with(&["not empty"]);

    // Two instances on the PostgreSQL database, with the same master key.
    let first = on_postgres(&sandbox, &url, &master_key).await;
    let second = on_postgres(&sandbox, &url, &master_key).await;
    for app in [&first, &second] {
        let (status, list) = call(app, reqwest::Method::GET, &admin, "/api/v1/mailboxes").await;
        assert_eq!(status, 200, "{list}");
        assert!(list.to_string().contains("Support"), "{list}");
        let (status, message) = call(
            app,
            reqwest::Method::GET,
            &fabrikam_key,
            &format!("/api/v1/messages/{held}"),
        )
        .await;
        assert_eq!(
            (status, message["status"].as_str()),
            (200, Some("held")),
            "{message}"
        );
        let (_, message) = call(
            app,
            reqwest::Method::GET,
            &admin,
            &format!("/api/v1/messages/{sent}"),
        )
        .await;
        assert_eq!(message["status"], "sent", "{message}");
    }
    // The sealed tokens open on PostgreSQL: the mailbox verifies against the sandbox.
    let (_, verified) = call(
        &second,
        reqwest::Method::POST,
        &admin,
        &format!("/api/v1/mailboxes/{support}/verify"),
    )
    .await;
    assert_eq!(verified["status"], "verified", "{verified}");
    let browser = second.browser();
    assert_eq!(
        second
            .sign_in(&browser, "admin@contoso.com", PASSWORD)
            .await
            .status(),
        303
    );

    // The mail queued in SQLite leaves exactly once.
    helpers::sandbox_until(&sandbox.state, "the queued mail to arrive", |s| {
        let got = s.messages();
        queued.iter().all(|q| {
            got.iter()
                .any(|m| String::from_utf8_lossy(&m.raw).contains(q.as_str()))
        })
    })
    .await;
    // Let both instances look at the queue again before counting.
    let mut copies = BTreeMap::<&str, usize>::new();
    helpers::eventually("every queued message to be sent", || async {
        let (_, list) = call(&first, reqwest::Method::GET, &admin, "/api/v1/messages").await;
        list.to_string().matches("\"queued\"").count() == 0
            && list.to_string().matches("\"sending\"").count() == 0
    })
    .await;
    for m in sandbox.state.messages() {
        let raw = String::from_utf8_lossy(&m.raw).into_owned();
        for q in &queued {
            if raw.contains(q.as_str()) {
                *copies.entry(q.as_str()).or_default() += 1;
            }
        }
    }
    assert!(
        copies.values().all(|n| *n == 1) && copies.len() == queued.len(),
        "{copies:?}"
    );
    first.stop().await;
    second.stop().await;
    drop(target);
}
