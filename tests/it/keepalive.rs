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
