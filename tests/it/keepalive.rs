//! The keep-alive: an idle OAuth2 mailbox has its token refreshed and is verified again
//! before its refresh token can expire unused.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::spawn_app_with_sandbox_on;
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
    for _ in 0..100 {
        if o.sandbox.state.token_requests() >= before + n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} token requests, not {n}",
        o.sandbox.state.token_requests() - before
    );
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
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(o.sandbox.state.token_requests(), before);
    // A week: one refresh, and a verification over SMTP with the new token.
    clock.advance(time::Duration::days(1) + time::Duration::minutes(1));
    token_requests_reach(&o, before, 1).await;
    for _ in 0..100 {
        if o.sandbox.state.smtp_auth_attempts() > auth_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        o.sandbox.state.smtp_auth_attempts() > auth_before,
        "verified again"
    );
    assert_eq!(mailbox(&o, &id).await["status"], "verified");
    // Only once per interval, however often the keep-alive looks.
    tokio::time::sleep(Duration::from_millis(600)).await;
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
    let mut shown = Value::Null;
    for _ in 0..100 {
        shown = mailbox(&o, &id).await;
        if shown["status"] == "not_verified" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown["status"], "not_verified", "{shown}");
    let reason = shown["status_reason"].to_string();
    assert!(reason.contains("refresh_token_expired"), "{reason}");
    o.stop().await;
}
