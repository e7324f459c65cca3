//! The keep-alive: an idle OAuth2 mailbox has its token refreshed and is verified again
//! before its refresh token can expire unused.

use std::sync::Arc;

use serde_json::Value;

use crate::helpers::{eventually, passes, sandbox_until, spawn_app_with_sandbox_on};
use crate::outbox::{Outbox, SUPPORT};

async fn mailbox(o: &Outbox, id: &str) -> Value {
    o.call(
        reqwest::Method::GET,
        &format!("/api/v1/mailboxes/{id}"),
        &o.admin,
        None,
    )
    .await
    .json()
    .await
    .unwrap()
}

/// Waits until the sandbox has seen `n` token requests more than `before`.
async fn token_requests_reach(o: &Outbox, before: u64, n: u64) {
    sandbox_until(&o.sandbox.state, &format!("{n} token requests"), |s| {
        s.token_requests() >= before + n
    })
    .await;
}

/// Waits until the keep-alive has looked for mailboxes due at least once since now.
async fn keepalive_looked(o: &Outbox) {
    let mut looked = o.app.state.outbox.keepalive_passes();
    passes(&mut looked, 2, "two keep-alive passes").await;
}

#[tokio::test]
async fn an_idle_mailbox_is_refreshed_and_verified_once_a_week() {
    let clock = Arc::new(herald::clock::ManualClock::starting_at(
        herald::clock::system_now(),
    ));
    let (app, sandbox) = spawn_app_with_sandbox_on(clock.clone()).await;
    let o = Outbox::with(app, sandbox).await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let before = o.sandbox.state.token_requests();
    let auth_before = o.sandbox.state.smtp_auth_attempts();
    // Six idle days: nothing yet.
    clock.advance(time::Duration::days(6));
    keepalive_looked(&o).await;
    assert_eq!(o.sandbox.state.token_requests(), before);
    // A week: one refresh, and a verification over SMTP with the new token.
    clock.advance(time::Duration::days(1) + time::Duration::minutes(1));
    token_requests_reach(&o, before, 1).await;
    sandbox_until(&o.sandbox.state, "verified again", |s| {
        s.smtp_auth_attempts() > auth_before
    })
    .await;
    assert_eq!(mailbox(&o, &id).await["status"], "verified");
    // Only once per interval, however often the keep-alive looks.
    keepalive_looked(&o).await;
    keepalive_looked(&o).await;
    assert_eq!(o.sandbox.state.token_requests(), before + 1);
    o.stop().await;
}

#[tokio::test]
async fn a_refresh_token_that_died_makes_the_mailbox_not_verified_with_the_reason() {
    let clock = Arc::new(herald::clock::ManualClock::starting_at(
        herald::clock::system_now(),
    ));
    let (app, sandbox) = spawn_app_with_sandbox_on(clock.clone()).await;
    let o = Outbox::with(app, sandbox).await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    o.switch(|s| s.refresh_token_expired = true);
    let before = o.sandbox.state.token_requests();
    clock.advance(time::Duration::days(8));
    token_requests_reach(&o, before, 1).await;
    eventually("the mailbox to be not verified", || async {
        mailbox(&o, &id).await["status"] == "not_verified"
    })
    .await;
    let shown = mailbox(&o, &id).await;
    let reason = shown["status_reason"].to_string();
    assert!(reason.contains("refresh_token_expired"), "{reason}");
    o.stop().await;
}

#[tokio::test]
async fn a_token_endpoint_that_never_answers_is_given_up_at_the_refresh_deadline() {
    let (app, sandbox) = spawn_app_with_sandbox_on(Arc::new(herald::clock::SystemClock)).await;
    let o = Outbox::with(app, sandbox).await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    // The token endpoint now accepts connections and never answers; the token is due.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/contoso/oauth2/v2.0/token",
        black_hole.local_addr().unwrap()
    );
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
        }
    });
    sqlx::query("UPDATE mailboxes SET token_url = $1, token_expires_at = 0 WHERE id = $2")
        .bind(&url)
        .bind(&id)
        .execute(o.app.store().pool())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let verified: Value = o
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/verify"),
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let took = started.elapsed();
    // Each request may take 30 seconds; three of them would hold the mailbox's lock (and on
    // PostgreSQL a refresh slot) for a minute and a half.
    let deadline = herald::access::REFRESH_DEADLINE;
    assert!(
        took >= deadline && took < deadline + std::time::Duration::from_secs(10),
        "gave up after {took:?}"
    );
    // An outage, not a refusal: the mailbox stays Verified.
    assert_eq!(verified["status"], "verified", "{verified}");
    assert_eq!(mailbox(&o, &id).await["status"], "verified");
    o.stop().await;
}
