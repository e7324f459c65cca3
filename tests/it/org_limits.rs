//! Per-organization limits: the installation's default sender serves only the organizations
//! the operator allowed (unless told to serve all), within a daily quota per organization; an
//! organization's waiting mail is bounded in messages and bytes (API 429 `queue_full`, relay
//! `452 4.3.1`); and each API key has a request rate (429 `rate_limited` with `Retry-After`).

use herald::config::OutboxSettings;
use herald::domain::OrgId;
use herald::domain::message::MessageSource;
use herald::services::ServiceError;
use herald::services::send::{self, Body, Caller, SendRequest, Submission};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::{TestApp, page, problem, spawn_app_with, spawn_instance_with};
use crate::outbox::{Outbox, SUPPORT, simple};
use crate::relay::{Relay, scan};

const DEFAULT_SENDER: &str = "noreply@herald.example";

/// An installation whose operator's organization holds a Verified default sender: `o.app` is an
/// instance configured with `HERALD_DEFAULT_SENDER` naming it (and `extra`); `first`, the
/// instance the mailbox was made through, runs beside it on the same database.
struct Installation {
    o: Outbox,
    first: TestApp,
    /// An admin key of the operator's organization: an installation admin.
    operator: String,
}

impl Installation {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let o = Outbox::start().await;
        let operator_org = o.app.org("Herald Operator").await;
        let operator = o.app.key(operator_org, "admin").await;
        let sender = o
            .basic_mailbox(
                &operator,
                "Default",
                DEFAULT_SENDER,
                json!({"reply_to": null}),
            )
            .await;
        let Outbox {
            app: first,
            sandbox,
            org,
            admin,
        } = o;
        let app = spawn_instance_with(&first, &sandbox, |env| {
            env.insert("HERALD_DEFAULT_SENDER".into(), sender);
            for (k, v) in extra {
                env.insert((*k).into(), (*v).into());
            }
        })
        .await;
        Self {
            o: Outbox {
                app,
                sandbox,
                org,
                admin,
            },
            first,
            operator,
        }
    }

    /// A new organization without a mailbox, and an admin key of it.
    async fn customer(&self, name: &str) -> (OrgId, String) {
        let org = self.o.app.org(name).await;
        (org, self.o.app.key(org, "admin").await)
    }

    async fn stop(self) {
        self.o.stop().await;
        self.first.stop().await;
    }
}

/// Accepts a JSON message for `org` at `now`, as the API would, with these settings.
async fn accept_at(
    app: &TestApp,
    settings: &OutboxSettings,
    org: OrgId,
    source: MessageSource,
    now: OffsetDateTime,
) -> Result<send::Accepted, ServiceError> {
    accept_with(app.store(), settings, org, source, now).await
}

async fn accept_with(
    store: &herald::store::Store,
    settings: &OutboxSettings,
    org: OrgId,
    source: MessageSource,
    now: OffsetDateTime,
) -> Result<send::Accepted, ServiceError> {
    send::accept(
        store,
        settings,
        &Caller {
            org_id: org,
            api_key_id: None,
            allowed: None,
            source,
        },
        Submission {
            mailbox: None,
            body: Body::Json(Box::new(SendRequest {
                to: vec!["customer@example.com".into()],
                subject: Some("Report".into()),
                text: Some("Your report".into()),
                ..Default::default()
            })),
            idempotency_key: None,
            request_digest: String::new(),
        },
        now,
    )
    .await
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_default_sender_sends_only_for_organizations_the_operator_allowed() {
    let i = Installation::start(&[]).await;
    let (fabrikam, key) = i.customer("Fabrikam").await;

    // `listed` is the default and Fabrikam is not listed: its mail is held, saying what to do.
    let held =
        i.o.accepted(&key, simple("customer@example.com", "Before"))
            .await;
    let message = i.o.message(&key, &held).await;
    assert_eq!(message["status"], "held", "{message}");
    assert_eq!(message["reason"]["code"], "default_sender_not_allowed");
    let action = message["reason"]["action"].as_str().unwrap();
    assert!(
        action.contains("Verify a mailbox") && action.contains("ask the operator"),
        "{action}"
    );
    let org: Value =
        i.o.call(Method::GET, "/api/v1/organization", &key, None)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(org["default_sender_configured"], true);
    assert_eq!(org["default_sender_allowed"], false);
    // Nor do Herald's own alerts reach its admins from the operator's address.
    let settings = i.o.app.state.access.config.outbox.clone();
    let alert = accept_at(
        &i.o.app,
        &settings,
        fabrikam,
        MessageSource::Alert,
        herald::clock::system_now(),
    )
    .await;
    assert!(matches!(alert, Err(ServiceError::Refused(_))), "{alert:?}");

    // An organization cannot allow itself; an installation admin can.
    let path = format!("/api/v1/organizations/{fabrikam}/default-sender");
    let own =
        i.o.call(Method::PUT, &path, &key, Some(json!({"allowed": true})))
            .await;
    problem(own, 403, "forbidden").await;
    let allowed =
        i.o.call(
            Method::PUT,
            &path,
            &i.operator,
            Some(json!({"allowed": true})),
        )
        .await;
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.json::<Value>().await.unwrap()["allowed"], true);
    let id =
        i.o.accepted(&key, simple("customer@example.com", "After"))
            .await;
    let sent = i.o.wait_for(&key, &id, "sent").await;
    assert_eq!(sent["via_default_sender"], true);
    assert_eq!(sent["from"], DEFAULT_SENDER);
    assert_eq!(i.o.received_by(DEFAULT_SENDER).len(), 1);

    // The message log says so in words.
    i.o.app.user(fabrikam, "admin@fabrikam.com", "admin").await;
    let (browser, _) = i.o.app.signed_in("admin@fabrikam.com").await;
    let (_, html) = page(
        &browser,
        &i.o.app,
        &format!("/settings/system/outgoing-mail/messages/{id}"),
    )
    .await;
    assert!(
        html.contains("Default sender of the installation"),
        "{html}"
    );

    // Denied again, new mail is held again.
    let denied =
        i.o.call(
            Method::PUT,
            &path,
            &i.operator,
            Some(json!({"allowed": false})),
        )
        .await;
    assert_eq!(denied.status(), 200);
    let again =
        i.o.accepted(&key, simple("customer@example.com", "Later"))
            .await;
    assert_eq!(i.o.message(&key, &again).await["status"], "held");
    let (_, html) = page(&browser, &i.o.app, "/settings/system/outgoing-mail").await;
    assert!(
        html.contains("default sender does not send for this organization"),
        "{html}"
    );
    i.stop().await;
}

#[tokio::test]
async fn the_default_sender_keeps_to_a_daily_quota_per_organization_until_midnight_utc() {
    let i = Installation::start(&[
        ("HERALD_DEFAULT_SENDER_ORGS", "all"),
        ("HERALD_DEFAULT_SENDER_DAILY", "2"),
    ])
    .await;
    let (fabrikam, key) = i.customer("Fabrikam").await;
    let (_, northwind) = i.customer("Northwind").await;
    for n in 0..2 {
        i.o.accepted(&key, simple("customer@example.com", &format!("#{n}")))
            .await;
    }
    let refused = i.o.send(&key, simple("customer@example.com", "#2")).await;
    let now = herald::clock::system_now();
    let to_midnight = (86_400 - now.unix_timestamp().rem_euclid(86_400)) as u64;
    let wait = retry_after(&refused);
    assert!(wait >= 1 && wait <= to_midnight + 1, "{wait} s");
    let body = problem(refused, 429, "default_sender_quota").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("2 messages") && detail.contains("midnight UTC"),
        "{detail}"
    );
    // The refused message was not queued.
    let list: Value =
        i.o.call(Method::GET, "/api/v1/messages", &key, None)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    // Each organization has a quota of its own.
    i.o.accepted(&northwind, simple("customer@example.com", "North"))
        .await;

    // Ten at once, half through this instance's API and half through the other instance's
    // database pool: the counter is shared and raised atomically, so exactly two get through.
    let (tailspin, tailspin_key) = i.customer("Tailspin").await;
    let settings = i.o.app.state.access.config.outbox.clone();
    let mut racers = tokio::task::JoinSet::new();
    for n in 0..5 {
        let request =
            i.o.app
                .client()
                .post(i.o.app.url("/api/v1/messages"))
                .bearer_auth(&tailspin_key)
                .json(&simple("customer@example.com", &format!("#{n}")));
        racers.spawn(async move { request.send().await.unwrap().status() == 202 });
        let (store, settings) = (i.first.store().clone(), settings.clone());
        racers.spawn(async move {
            accept_with(
                &store,
                &settings,
                tailspin,
                MessageSource::Api,
                herald::clock::system_now(),
            )
            .await
            .is_ok()
        });
    }
    let through = racers.join_all().await.into_iter().filter(|ok| *ok).count();
    assert_eq!(through, 2, "the daily quota is 2");

    // The quota is per calendar day in UTC: the last second of the day is refused, the first
    // of the next day is not.
    let settings = i.o.app.state.access.config.outbox.clone();
    let tomorrow =
        OffsetDateTime::from_unix_timestamp((now.unix_timestamp().div_euclid(86_400) + 1) * 86_400)
            .unwrap();
    let late = accept_at(
        &i.o.app,
        &settings,
        fabrikam,
        MessageSource::Api,
        tomorrow - time::Duration::seconds(1),
    )
    .await;
    assert!(
        matches!(
            &late,
            Err(ServiceError::Limited {
                code: "default_sender_quota",
                ..
            })
        ),
        "{late:?}"
    );
    let next = accept_at(&i.o.app, &settings, fabrikam, MessageSource::Api, tomorrow)
        .await
        .expect("a new day, a new quota");
    assert_eq!(next.status.as_str(), "queued");
    i.stop().await;
}

#[tokio::test]
async fn an_organization_with_too_much_mail_waiting_is_told_its_queue_is_full() {
    let app = spawn_app_with(|env| {
        env.insert("HERALD_ORG_MAX_QUEUED_MESSAGES".into(), "3".into());
        env.insert("HERALD_MAX_MESSAGE_BYTES".into(), "2048".into());
        env.insert("HERALD_ORG_MAX_QUEUED_BYTES".into(), "4096".into());
    })
    .await;
    // Without a mailbox, Contoso's mail is held: it waits, and counts.
    let contoso = app.org("Contoso").await;
    let key = app.key(contoso, "sender").await;
    let other = app.org("Northwind").await;
    let other_key = app.key(other, "sender").await;
    let send = |key: String, text: String| {
        let (client, url) = (app.client(), app.url("/api/v1/messages"));
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"to": "bob@example.com", "subject": "Report", "text": text}))
                .send()
                .await
                .unwrap()
        }
    };
    let large = "x".repeat(1400);
    for _ in 0..2 {
        assert_eq!(send(key.clone(), large.clone()).await.status(), 202);
    }
    // A third large one would pass 4096 bytes.
    let full = send(key.clone(), large.clone()).await;
    assert_eq!(retry_after(&full), 60);
    let body = problem(full, 429, "queue_full").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("2 messages") && detail.contains("at most 3 messages and 4096 bytes"),
        "{detail}"
    );
    // A small one still fits; then three messages are the most.
    assert_eq!(send(key.clone(), "Hi".into()).await.status(), 202);
    let full = send(key.clone(), "Hi".into()).await;
    let body = problem(full, 429, "queue_full").await;
    assert!(body["detail"].as_str().unwrap().contains("3 messages"));
    // Another organization's queue is its own.
    assert_eq!(send(other_key, large).await.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn the_relay_answers_452_when_the_organization_queue_is_full() {
    let r = Relay::start(&[("HERALD_ORG_MAX_QUEUED_MESSAGES", "1")]).await;
    // Not Verified, so relayed mail is held and stays in the queue.
    crate::helpers::mailbox(&r.o.app, &r.o.admin, "Support", SUPPORT).await;
    let (user, password) = r
        .credential(json!({"name": "Scanner", "mailbox": "Support"}))
        .await;
    let client = r.client(&user, &password, false);
    let first = lettre::AsyncTransport::send(&client, scan(SUPPORT, "bob@example.com", 100))
        .await
        .expect("the first message is held");
    assert_eq!(first.code().to_string(), "250");
    let refused = lettre::AsyncTransport::send(&client, scan(SUPPORT, "bob@example.com", 100))
        .await
        .expect_err("the queue is full");
    assert!(refused.is_transient(), "{refused}");
    assert_eq!(refused.status().map(|c| c.to_string()), Some("452".into()));
    assert!(refused.to_string().contains("4.3.1"), "{refused}");
    r.o.stop().await;
}

#[tokio::test]
async fn an_api_key_past_its_rate_waits_as_retry_after_says() {
    let app = spawn_app_with(|env| {
        env.insert("HERALD_API_RATE_PER_MINUTE".into(), "3".into());
    })
    .await;
    let org = app.org("Contoso").await;
    let (busy, calm) = (app.key(org, "admin").await, app.key(org, "admin").await);
    let me = |key: &str| {
        app.client()
            .get(app.url("/api/v1/me"))
            .bearer_auth(key)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(me(&busy).await.unwrap().status(), 200);
    }
    let limited = me(&busy).await.unwrap();
    // Three a minute: one more every 20 seconds.
    let wait = retry_after(&limited);
    assert!((1..=20).contains(&wait), "{wait} s");
    problem(limited, 429, "rate_limited").await;
    assert_eq!(
        me(&calm).await.unwrap().status(),
        200,
        "another key is not slowed"
    );
    // The document says so, for every operation.
    let doc: Value = app
        .client()
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/api/v1/me", "get"),
        ("/api/v1/messages", "post"),
        ("/api/v1/organizations/{id}/default-sender", "put"),
    ] {
        let documented = &doc["paths"][path][method]["responses"]["429"];
        assert!(
            documented["headers"]["Retry-After"].is_object(),
            "{method} {path}: {documented}"
        );
    }
    app.stop().await;
}
