//! Alerts: each trigger fires once, reaches the organization's webhook signed, and shows until
//! its cause goes away. The receiver here checks signatures as the README tells receivers to,
//! written from that description alone.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use herald::clock::SharedClock;

use axum::body::Bytes;
use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::helpers::{eventually, passes, sandbox_until, spawn_app_with_sandbox_on, within};
use crate::outbox::{Outbox, SUPPORT, simple};

/// The reference verifier: `Herald-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
/// "<t>.<raw body>")>`, at most 5 minutes old, each signature accepted once.
struct Verifier {
    secret: String,
    seen: HashSet<String>,
}

#[derive(Debug, PartialEq)]
enum Rejected {
    Malformed,
    Stale,
    BadSignature,
    Replayed,
}

impl Verifier {
    fn new(secret: &str) -> Self {
        Self {
            secret: secret.to_owned(),
            seen: HashSet::new(),
        }
    }

    fn verify(&mut self, header: &str, body: &[u8], now: i64) -> Result<(), Rejected> {
        let mut t = None;
        let mut v1 = None;
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => t = value.parse::<i64>().ok(),
                Some(("v1", value)) => v1 = Some(value.to_owned()),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return Err(Rejected::Malformed);
        };
        if (now - t).abs() > 300 {
            return Err(Rejected::Stale);
        }
        let given: Vec<u8> = (0..v1.len())
            .step_by(2)
            .filter_map(|i| v1.get(i..i + 2))
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&given)
            .map_err(|_| Rejected::BadSignature)?;
        if !self.seen.insert(v1) {
            return Err(Rejected::Replayed);
        }
        Ok(())
    }
}

/// A webhook receiver on loopback that keeps what it was sent, and when (by its clock: the
/// application's, when that is simulated).
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Bytes)>>>,
    received_at: Arc<Mutex<Vec<i64>>>,
    /// How many requests came: changes with each.
    arrived: Arc<tokio::sync::watch::Sender<usize>>,
    clock: SharedClock,
}

impl Receiver {
    async fn start() -> (Self, String) {
        Self::start_on(herald::clock::system()).await
    }

    async fn start_on(clock: SharedClock) -> (Self, String) {
        let receiver = Self {
            got: Arc::default(),
            received_at: Arc::default(),
            arrived: Arc::new(tokio::sync::watch::channel(0).0),
            clock,
        };
        let kept = receiver.clone();
        let app = axum::Router::new().route(
            "/hooks/herald",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    let signature = headers
                        .get("herald-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    kept.received_at
                        .lock()
                        .unwrap()
                        .push(kept.clock.now().unix_timestamp());
                    kept.got.lock().unwrap().push((signature, body));
                    kept.arrived.send_modify(|n| *n += 1);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/hooks/herald",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    /// When the `i`th request came, in Unix seconds.
    fn received_at(&self, i: usize) -> i64 {
        self.received_at.lock().unwrap()[i]
    }

    fn requests(&self) -> Vec<(String, Bytes)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests came, and then until `o`'s background jobs have looked again,
    /// to see that no more come: the keep-alive (which raises alerts) twice, then the alerts
    /// job four times, which in the tests' tuning also spans a client-secret scan (every
    /// 200 ms; the job rests 100 ms between passes), and delivers what those raised.
    async fn wait_for(&self, o: &Outbox, n: usize) -> Vec<(String, Bytes)> {
        let mut arrived = self.arrived.subscribe();
        within(
            &format!("{n} webhook requests"),
            arrived.wait_for(|came| *came >= n),
        )
        .await
        .expect("the receiver keeps its counter");
        passes(
            &mut o.app.state.outbox.keepalive_passes(),
            2,
            "the keep-alive",
        )
        .await;
        passes(&mut o.app.state.outbox.alert_passes(), 4, "the alerts job").await;
        self.requests()
    }
}

fn now() -> i64 {
    herald::clock::system_now().unix_timestamp()
}

async fn webhook(o: &Outbox, url: &str) -> String {
    let set: Value = o
        .call(
            reqwest::Method::PUT,
            "/api/v1/organization/alert-webhook",
            &o.admin,
            Some(json!({ "url": url })),
        )
        .await
        .json()
        .await
        .unwrap();
    set["secret"].as_str().expect("the secret, once").to_owned()
}

async fn open_alerts(o: &Outbox) -> Vec<Value> {
    let list: Value = o
        .call(reqwest::Method::GET, "/api/v1/alerts", &o.admin, None)
        .await
        .json()
        .await
        .unwrap();
    list["alerts"].as_array().unwrap().clone()
}

/// Verifies the mailbox with a token that has run out, so that it must be refreshed.
async fn verify(o: &Outbox, mailbox: &str) -> Value {
    sqlx::query("UPDATE mailboxes SET token_expires_at = 0 WHERE id = $1")
        .bind(mailbox)
        .execute(o.app.store().pool())
        .await
        .unwrap();
    o.call(
        reqwest::Method::POST,
        &format!("/api/v1/mailboxes/{mailbox}/verify"),
        &o.admin,
        None,
    )
    .await
    .json()
    .await
    .unwrap()
}

#[tokio::test]
async fn a_mailbox_turning_not_verified_alerts_once_signed_and_the_banner_goes_when_it_is_verified()
{
    let clock = Arc::new(herald::clock::SystemClock);
    let (app, sandbox) = spawn_app_with_sandbox_on(clock).await;
    let o = Outbox::with(app, sandbox).await;
    let (receiver, url) = Receiver::start().await;
    let secret = webhook(&o, &url).await;
    o.app.user(o.org, "admin@contoso.com", "admin").await;
    o.app.user(o.org, "member@contoso.com", "member").await;
    let mailbox = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    // Another mailbox of the organization, still working, carries the alert's email.
    o.basic_mailbox(&o.admin, "Sales", "sales@contoso.com", json!({}))
        .await;
    // Support's authorization dies (a refresh token unused too long), and its token is due.
    o.switch(|s| s.refresh_token_expired = true);
    // Twice, for the same reason: one alert.
    assert_eq!(verify(&o, &mailbox).await["status"], "not_verified");
    assert_eq!(verify(&o, &mailbox).await["status"], "not_verified");
    let got = receiver.wait_for(&o, 1).await;
    assert_eq!(got.len(), 1, "one alert, not one per failure");
    let (signature, body) = &got[0];
    let mut verifier = Verifier::new(&secret);
    assert_eq!(verifier.verify(signature, body, now()), Ok(()));
    // The same request again is a replay; kept 6 minutes, it is stale; altered, it is forged.
    assert_eq!(
        verifier.verify(signature, body, now()),
        Err(Rejected::Replayed)
    );
    assert_eq!(
        Verifier::new(&secret).verify(signature, body, now() + 360),
        Err(Rejected::Stale)
    );
    assert_eq!(
        Verifier::new(&secret).verify(signature, &body[1..], now()),
        Err(Rejected::BadSignature)
    );
    assert_eq!(
        Verifier::new("another secret").verify(signature, body, now()),
        Err(Rejected::BadSignature)
    );
    let alert: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(alert["type"], "mailbox_not_verified");
    assert_eq!(alert["mailbox_id"], mailbox.as_str());
    assert!(
        alert["detail"].as_str().unwrap().contains("AADSTS700082"),
        "{alert}"
    );
    assert!(alert["action"].as_str().unwrap().contains("Authorize"));
    // The banner shows it until the mailbox works again.
    let open = open_alerts(&o).await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["webhook"], "delivered");
    // The admins (not the members) get one email, through the mailbox that still works.
    sandbox_until(&o.sandbox.state, "the alert's email", |s| {
        s.messages()
            .iter()
            .any(|m| m.user.eq_ignore_ascii_case("sales@contoso.com"))
    })
    .await;
    let emailed = o.received_by("sales@contoso.com");
    assert_eq!(emailed.len(), 1, "one email");
    assert_eq!(emailed[0].rcpt_to, ["admin@contoso.com"]);
    let raw = String::from_utf8_lossy(&emailed[0].raw).into_owned();
    assert!(
        raw.contains("The mailbox \"Support\" is Not Verified"),
        "{raw}"
    );
    assert!(
        raw.contains("X-Herald-Alert: mailbox_not_verified"),
        "{raw}"
    );
    assert_eq!(open_alerts(&o).await[0]["email"], "queued");
    o.switch(|s| s.refresh_token_expired = false);
    assert_eq!(verify(&o, &mailbox).await["status"], "verified");
    assert!(open_alerts(&o).await.is_empty());
    // A new failure later is a new alert.
    o.switch(|s| s.refresh_token_expired = true);
    verify(&o, &mailbox).await;
    assert_eq!(receiver.wait_for(&o, 2).await.len(), 2);
    o.stop().await;
}

#[tokio::test]
async fn failed_messages_expiring_secrets_and_keepalive_failures_each_alert_once() {
    // Ahead of the real clock, so that mail accepted during the test is due at once.
    let clock = Arc::new(herald::clock::ManualClock::starting_at(
        herald::clock::system_now() + time::Duration::minutes(5),
    ));
    let (app, sandbox) = spawn_app_with_sandbox_on(clock.clone()).await;
    let o = Outbox::with(app, sandbox).await;
    let (receiver, url) = Receiver::start_on(clock.clone()).await;
    let secret = webhook(&o, &url).await;
    let mailbox = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;

    // Two messages refused for the same reason within the hour: one alert.
    o.switch(|s| s.unknown_recipients = vec!["nobody@example.com".into()]);
    for subject in ["Refused once", "Refused twice"] {
        let id = o
            .accepted(&o.admin, simple("nobody@example.com", subject))
            .await;
        o.wait_for(&o.admin, &id, "failed").await;
    }
    // A client secret expiring in five days: the 7-day warning, once.
    let patched = o
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/mailboxes/{mailbox}"),
            &o.admin,
            Some(json!({
                "client_secret_expires_at":
                    (herald::clock::system_now().date() + time::Duration::days(5)).to_string()
            })),
        )
        .await;
    assert_eq!(patched.status(), 200, "{}", patched.text().await.unwrap());
    assert_eq!(receiver.wait_for(&o, 2).await.len(), 2);
    // A week later: the secret has expired (the next step, a new alert), and the keep-alive
    // meets a token endpoint that is down.
    o.switch(|s| s.token_outages = 3);
    clock.advance(time::Duration::days(8));

    let got = receiver.wait_for(&o, 4).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "client_secret_expired",
            "client_secret_expiring",
            "keepalive_failed",
            "message_failed"
        ],
        "each once: {kinds:?}"
    );
    let mut verifier = Verifier::new(&secret);
    // Signed at the application's time (simulated), checked when each came.
    for (i, (signature, body)) in got.iter().enumerate() {
        assert_eq!(
            verifier.verify(signature, body, receiver.received_at(i)),
            Ok(())
        );
    }
    let expiring = got
        .iter()
        .map(|(_, body)| serde_json::from_slice::<Value>(body).unwrap())
        .find(|a| a["type"] == "client_secret_expiring")
        .unwrap();
    assert!(
        expiring["title"].as_str().unwrap().contains("expires in"),
        "{expiring}"
    );
    assert!(
        expiring["action"]
            .as_str()
            .unwrap()
            .contains("Certificates & secrets")
    );
    // The expired secret's alert replaced the 7-day warning on the banner.
    let open = open_alerts(&o).await;
    assert_eq!(open.len(), 3, "{open:?}");
    assert!(open.iter().all(|a| a["type"] != "client_secret_expiring"));
    // No admin to write to: said, not silently dropped.
    assert!(
        open.iter()
            .all(|a| a["email"] == "skipped"
                && a["email_error"].as_str().unwrap().contains("no admin")),
        "{open:?}"
    );
    o.stop().await;
}

#[tokio::test]
async fn a_webhook_must_be_a_url_herald_may_reach_and_its_secret_is_never_shown_again() {
    let o = Outbox::start().await;
    for (url, why) in [
        ("not a url", "is not a URL"),
        ("ftp://hooks.example.com/x", "https://"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://10.1.2.3/hooks", "private"),
    ] {
        let refused = o
            .call(
                reqwest::Method::PUT,
                "/api/v1/organization/alert-webhook",
                &o.admin,
                Some(json!({ "url": url })),
            )
            .await;
        assert_eq!(refused.status(), 422, "{url}");
        let text = refused.text().await.unwrap();
        assert!(text.contains(why), "{url}: {text}");
    }
    let (_, url) = Receiver::start().await;
    let secret = webhook(&o, &url).await;
    let shown = o
        .call(
            reqwest::Method::GET,
            "/api/v1/organization/alert-webhook",
            &o.admin,
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(shown.contains(&url));
    assert!(!shown.contains(&secret));
    // Only admins see where alerts go.
    let sender = o.app.key(o.org, "sender").await;
    let refused = o
        .call(
            reqwest::Method::GET,
            "/api/v1/organization/alert-webhook",
            &sender,
            None,
        )
        .await;
    assert_eq!(refused.status(), 403);
    let removed = o
        .call(
            reqwest::Method::DELETE,
            "/api/v1/organization/alert-webhook",
            &o.admin,
            None,
        )
        .await;
    assert_eq!(removed.status(), 204);
    let gone: Value = o
        .call(
            reqwest::Method::GET,
            "/api/v1/organization/alert-webhook",
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(gone["url"].is_null());
    o.stop().await;
}

#[tokio::test]
async fn dismissing_an_alert_hides_it_and_is_audited() {
    let o = Outbox::start().await;
    let mut conn = o.app.store().conn().await.unwrap();
    herald::store::alerts::raise(
        &mut conn,
        &herald::store::alerts::NewAlert {
            org_id: o.org,
            kind: "keepalive_failed",
            dedup_key: "test".into(),
            mailbox_id: None,
            message_id: None,
            title: "Something to see".into(),
            detail: "Details".into(),
            action: None,
        },
        herald::clock::system_now(),
    )
    .await
    .unwrap();
    drop(conn);
    let id = open_alerts(&o).await[0]["id"].as_str().unwrap().to_owned();
    let dismissed = o
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{id}/dismiss"),
            &o.admin,
            None,
        )
        .await;
    assert_eq!(dismissed.status(), 204);
    assert!(open_alerts(&o).await.is_empty());
    let all: Value = o
        .call(
            reqwest::Method::GET,
            "/api/v1/alerts?all=true",
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert!(all["alerts"][0]["dismissed_at"].is_string());
    let audit = o
        .call(reqwest::Method::GET, "/api/v1/audit", &o.admin, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(audit.contains("alert.dismiss"), "{audit}");
    let unknown = o
        .call(
            reqwest::Method::POST,
            "/api/v1/alerts/no-such-alert/dismiss",
            &o.admin,
            None,
        )
        .await;
    assert_eq!(unknown.status(), 404);
    o.stop().await;
}

#[tokio::test]
async fn a_deleted_mailbox_takes_its_alerts_off_the_banner() {
    let o = Outbox::start().await;
    let mailbox = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let mut conn = o.app.store().conn().await.unwrap();
    herald::store::alerts::raise(
        &mut conn,
        &herald::store::alerts::NewAlert {
            org_id: o.org,
            kind: "client_secret_expiring",
            dedup_key: "secret".into(),
            mailbox_id: Some(mailbox.parse().unwrap()),
            message_id: None,
            title: "The client secret of \"Support\" expires in 7 days".into(),
            detail: "Details".into(),
            action: None,
        },
        herald::clock::system_now(),
    )
    .await
    .unwrap();
    drop(conn);
    assert_eq!(open_alerts(&o).await.len(), 1);
    let deleted = o
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/mailboxes/{mailbox}"),
            &o.admin,
            None,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    assert!(open_alerts(&o).await.is_empty());
    o.stop().await;
}

#[tokio::test]
async fn a_webhook_that_never_answers_delays_only_its_own_organization() {
    let (app, sandbox) = spawn_app_with_sandbox_on(Arc::new(herald::clock::SystemClock)).await;
    let o = Outbox::with(app, sandbox).await;
    // Fabrikam's webhook accepts connections and never answers (each request waits the
    // 20 seconds Herald allows it).
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}/hooks", black_hole.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let kept = held.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = black_hole.accept().await {
            kept.lock().unwrap().push(socket);
        }
    });
    let fabrikam = o.app.org("Fabrikam").await;
    let fabrikam_key = o.app.key(fabrikam, "admin").await;
    let set = o
        .call(
            reqwest::Method::PUT,
            "/api/v1/organization/alert-webhook",
            &fabrikam_key,
            Some(json!({ "url": hole_url })),
        )
        .await;
    assert_eq!(set.status(), 200);
    let (receiver, url) = Receiver::start().await;
    webhook(&o, &url).await;

    // Fabrikam's alerts come first, Contoso's after them.
    let raise = |org, n: usize| {
        let store = o.app.store().clone();
        async move {
            let mut conn = store.conn().await.unwrap();
            let now = herald::clock::system_now();
            let alert = herald::store::alerts::NewAlert {
                org_id: org,
                kind: "keepalive_failed",
                dedup_key: format!("test-{n}"),
                mailbox_id: None,
                message_id: None,
                title: format!("Alert {n}"),
                detail: "A test alert.".into(),
                action: None,
            };
            assert!(
                herald::store::alerts::raise(&mut conn, &alert, now)
                    .await
                    .unwrap()
            );
        }
    };
    for n in 0..3 {
        raise(fabrikam, n).await;
    }
    let started = std::time::Instant::now();
    raise(o.org, 3).await;
    let got = within(
        "Contoso's alert",
        receiver.arrived.subscribe().wait_for(|n| *n >= 1),
    )
    .await
    .map(|n| *n)
    .unwrap();
    assert_eq!(got, 1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "Contoso's alert waited {:?} behind Fabrikam's webhook",
        started.elapsed()
    );
    // Fabrikam's first alert is being tried; the others wait their turn behind it, not beside.
    let first = held.clone();
    eventually("Fabrikam's first request", move || {
        let first = first.clone();
        async move { first.lock().unwrap().len() == 1 }
    })
    .await;
    passes(&mut o.app.state.outbox.alert_passes(), 3, "the alerts job").await;
    assert_eq!(
        held.lock().unwrap().len(),
        1,
        "one request to Fabrikam at a time"
    );
    o.stop().await;
}
