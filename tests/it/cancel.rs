//! Mail that should not go: a queued or held message cancelled by the organization (API and
//! message log), and held mail that waited longer than HERALD_HELD_MAX_HOURS failing with
//! `held_expired` and an alert.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::helpers::{problem, spawn_app_with_sandbox_on};
use crate::outbox::{Outbox, PASSWORD, SUPPORT, simple};

/// A basic mailbox that is not verified yet: mail for it is held.
async fn unverified_mailbox(o: &Outbox) -> String {
    let created: Value = o
        .admin_json(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(
                json!({"name": "Support", "auth": "basic", "provider": "sandbox",
                        "username": SUPPORT, "password": PASSWORD}),
            ),
        )
        .await;
    created["id"].as_str().unwrap().to_owned()
}

async fn cancel(o: &Outbox, key: &str, id: &str) -> reqwest::Response {
    o.call(
        reqwest::Method::POST,
        &format!("/api/v1/messages/{id}/cancel"),
        key,
        None,
    )
    .await
}

#[tokio::test]
async fn a_held_message_cancelled_is_never_sent_and_sent_mail_cannot_be_cancelled() {
    let o = Outbox::start().await;
    let mailbox = unverified_mailbox(&o).await;
    let sender = o.app.key(o.org, "sender").await;
    let cancelled = o
        .accepted(&o.admin, simple("bob@example.com", "Oops"))
        .await;
    let kept = o
        .accepted(&o.admin, simple("bob@example.com", "Keep"))
        .await;
    let by_sender = o.accepted(&sender, simple("bob@example.com", "Mine")).await;
    assert_eq!(o.message(&o.admin, &cancelled).await["status"], "held");

    // A sender key cancels what it sent, and nothing else; another organization sees nothing.
    problem(cancel(&o, &sender, &cancelled).await, 404, "not_found").await;
    let other = o.app.org("Fabrikam").await;
    let outsider = o.app.key(other, "admin").await;
    problem(cancel(&o, &outsider, &cancelled).await, 404, "not_found").await;
    let mine = cancel(&o, &sender, &by_sender).await;
    assert_eq!(mine.status(), 200);

    let done = cancel(&o, &o.admin, &cancelled).await;
    assert_eq!(done.status(), 200);
    let done: Value = done.json().await.unwrap();
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["reason"]["code"], "cancelled");
    let again: Value = cancel(&o, &o.admin, &cancelled).await.json().await.unwrap();
    assert_eq!(again["status"], "cancelled", "cancelling twice is harmless");

    // The mailbox is verified: held mail goes, except what was cancelled.
    let verified: Value = o.verify(&mailbox).await;
    assert_eq!(verified["status"], "verified");
    o.wait_for(&o.admin, &kept, "sent").await;
    o.app.state.outbox.sweep_now().await.unwrap();
    assert_eq!(o.message(&o.admin, &cancelled).await["status"], "cancelled");
    let subjects: Vec<String> = o
        .received_by(SUPPORT)
        .iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .collect();
    assert_eq!(subjects.len(), 1, "only the kept message went out");
    assert!(subjects[0].contains("Subject: Keep"));

    let too_late = problem(cancel(&o, &o.admin, &kept).await, 409, "conflict").await;
    assert!(
        too_late["detail"]
            .as_str()
            .unwrap()
            .contains("already sent"),
        "{too_late}"
    );
    let audit: Value = o
        .admin_json(reqwest::Method::GET, "/api/v1/audit", None)
        .await;
    let cancels: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "message.cancel")
        .collect();
    assert_eq!(
        cancels.len(),
        2,
        "each cancellation is audited once: {audit}"
    );
    let listed: Value = o
        .admin_json(
            reqwest::Method::GET,
            "/api/v1/messages?status=cancelled",
            None,
        )
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    o.stop().await;
}

#[tokio::test]
async fn held_mail_fails_as_held_expired_after_the_limit_and_raises_an_alert() {
    let clock = Arc::new(herald::clock::ManualClock::starting_at(
        herald::clock::system_now(),
    ));
    let (app, sandbox) = spawn_app_with_sandbox_on(clock.clone()).await;
    let o = Outbox::with(app, sandbox).await;
    unverified_mailbox(&o).await;
    let id = o
        .accepted(&o.admin, simple("bob@example.com", "Waiting"))
        .await;
    clock.advance(time::Duration::hours(167));
    o.app.state.outbox.sweep_now().await.unwrap();
    assert_eq!(
        o.message(&o.admin, &id).await["status"],
        "held",
        "a week less an hour"
    );
    clock.advance(time::Duration::hours(2));
    o.app.state.outbox.sweep_now().await.unwrap();
    let failed = o.message(&o.admin, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["reason"]["code"], "held_expired");
    assert!(
        failed["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("168 hours"),
        "{failed}"
    );
    let alerts: Value = o
        .admin_json(reqwest::Method::GET, "/api/v1/alerts", None)
        .await;
    let alert = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "message_failed")
        .unwrap_or_else(|| panic!("an alert: {alerts}"));
    assert_eq!(alert["message_id"], id.as_str());
    o.stop().await;
}
