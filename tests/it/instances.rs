//! Several `herald serve` instances on one PostgreSQL database: one queue, one token per
//! mailbox, one throttle.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::helpers::{POSTGRES_ENV, spawn_app_with_sandbox_on, spawn_instance_of};
use crate::outbox::{Outbox, SUPPORT, simple};

fn postgres() -> bool {
    std::env::var(POSTGRES_ENV).is_ok_and(|v| !v.is_empty())
}

#[tokio::test]
async fn two_instances_deliver_each_message_once_with_one_refresh_and_one_shared_limit() {
    if !postgres() {
        // On SQLite one process serves; the PostgreSQL pass of the suite runs this.
        eprintln!("several instances share a PostgreSQL database: set {POSTGRES_ENV}");
        return;
    }
    let start = time::OffsetDateTime::now_utc();
    // One simulated clock for both, ahead of the real one so that mail is due at once.
    let clock = Arc::new(herald::outbox::ManualClock::starting_at(
        start + time::Duration::minutes(5),
    ));
    let (app, sandbox) = spawn_app_with_sandbox_on(clock.clone()).await;
    let second = spawn_instance_of(&app, &sandbox, clock.clone()).await;
    let o = Outbox::with(app, sandbox).await;
    // The sandbox counts real minutes; Herald's own shared limit is what is under test.
    // A token endpoint slow enough that both instances ask while the other is waiting.
    o.switch(|s| {
        s.messages_per_minute = 100_000;
        s.token_latency_ms = 500;
    });
    let mailbox = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    // The access token has run out: both instances need a new one at once.
    sqlx::query("UPDATE mailboxes SET token_expires_at = $1 WHERE id = $2")
        .bind(start.unix_timestamp() - 60)
        .bind(&mailbox)
        .execute(o.app.store().pool())
        .await
        .unwrap();
    let refreshes_before = o.sandbox.state.token_requests();

    // 75 messages, through either instance's API.
    let mut ids = Vec::new();
    for i in 0..75 {
        let id = if i % 2 == 0 {
            o.accepted(&o.admin, simple("bob@example.com", &format!("Shared #{i}")))
                .await
        } else {
            let response = second
                .client()
                .post(second.url("/api/v1/messages"))
                .bearer_auth(&o.admin)
                .json(&simple("bob@example.com", &format!("Shared #{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        ids.push(id);
    }
    for id in &ids {
        o.wait_for(&o.admin, id, "sent").await;
    }

    // None sent twice.
    let mut copies = BTreeMap::<String, usize>::new();
    for m in o.sandbox.state.messages() {
        let raw = String::from_utf8_lossy(&m.raw).into_owned();
        if let Some(subject) = raw
            .lines()
            .find_map(|l| l.strip_prefix("Subject: Shared #"))
        {
            *copies.entry(subject.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(copies.len(), 75, "every message arrived");
    assert!(
        copies.values().all(|n| *n == 1),
        "none arrived twice: {copies:?}"
    );
    // Both instances sent.
    let instances: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT DISTINCT attempted_by FROM messages WHERE mailbox_id = $1")
            .bind(&mailbox)
            .fetch_all(o.app.store().pool())
            .await
            .unwrap();
    assert_eq!(instances.len(), 2, "both instances sent: {instances:?}");
    // One refresh between them.
    assert_eq!(o.sandbox.state.token_requests() - refreshes_before, 1);
    // One limit between them: 30 in the first simulated minute, 30 in the second, 15 in the
    // third. Two limits of their own would have sent the 75 within one minute and a bit.
    let mut sent_at = Vec::new();
    for id in &ids {
        let m = o.message(&o.admin, id).await;
        let t = time::OffsetDateTime::parse(
            m["sent_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        sent_at.push(t.unix_timestamp());
    }
    sent_at.sort_unstable();
    let span = sent_at[74] - sent_at[0];
    assert!(
        span >= 120,
        "75 messages at 30 a minute take two simulated minutes, took {span} s"
    );
    second.stop().await;
    o.stop().await;
}

#[tokio::test]
async fn failed_sign_ins_count_across_instances() {
    use herald::web::auth::LoginThrottle;
    let clock: Arc<dyn herald::outbox::Clock> = Arc::new(herald::outbox::SystemClock);
    let (first, sandbox) = spawn_app_with_sandbox_on(clock.clone()).await;
    let second = spawn_instance_of(&first, &sandbox, clock).await;
    let org = first.org("Contoso").await;
    first.user(org, "ann@contoso.com", "admin").await;
    // Guesses spread over both instances, fewer than the limit on each.
    for i in 0..LoginThrottle::PER_ACCOUNT {
        let app = if i % 2 == 0 { &first } else { &second };
        let response = app
            .sign_in(&app.browser(), "ann@contoso.com", "guess")
            .await;
        assert_eq!(response.status(), 401);
    }
    // Either instance now refuses even the right password.
    for app in [&first, &second] {
        let response = app
            .sign_in(&app.browser(), "ann@contoso.com", crate::helpers::PASSWORD)
            .await;
        assert_eq!(response.status(), 429);
    }
    second.stop().await;
    first.stop().await;
}
