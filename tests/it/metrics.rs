//! `/metrics`: Prometheus' text format, bounded labels, and who may read it.

use serde_json::json;

use crate::helpers::spawn_app_with;
use crate::outbox::{Outbox, SUPPORT, simple};

async fn scrape(client: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn metrics_count_sends_replies_latency_tokens_and_the_queue_without_addresses_or_ids() {
    let o = Outbox::start().await;
    o.basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let oauth = o
        .oauth_mailbox(&o.admin, "Sales", "sales@contoso.com")
        .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let mut body = simple("bob@example.com", &format!("Counted #{i}"));
        body["mailbox"] = json!("Support");
        ids.push(o.accepted(&o.admin, body).await);
    }
    for id in &ids {
        o.wait_for(&o.admin, id, "sent").await;
    }
    // A send through the OAuth2 mailbox whose token has run out: one refresh.
    sqlx::query("UPDATE mailboxes SET token_expires_at = 0 WHERE id = $1")
        .bind(&oauth)
        .execute(o.app.store().pool())
        .await
        .unwrap();
    let mut body = simple("bob@example.com", "Through Sales");
    body["mailbox"] = json!("Sales");
    let sales = o.accepted(&o.admin, body).await;
    o.wait_for(&o.admin, &sales, "sent").await;

    let response = scrape(&o.app.client(), &o.app.url("/metrics"), None).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"))
            .to_owned()
    };
    let value = |prefix: &str| -> f64 { line(prefix).rsplit(' ').next().unwrap().parse().unwrap() };
    assert_eq!(value("herald_queue_messages{status=\"queued\"}"), 0.0);
    assert_eq!(value("herald_queue_messages{status=\"held\"}"), 0.0);
    assert!(!text.contains("herald_queue_messages{status=\"sent\"}"));
    assert!(value("herald_sends_total{outcome=\"sent\",reason=\"none\"}") >= 4.0);
    assert!(value("herald_smtp_replies_total{code=\"250\"}") >= 4.0);
    assert!(value("herald_delivery_latency_seconds_count") >= 4.0);
    assert!(value("herald_token_refreshes_total{outcome=\"ok\"}") >= 1.0);
    line("herald_relay_sessions_open");
    line("herald_throttle_waits_total");
    assert!(text.ends_with("# EOF\n"));
    // Bounded labels: no address, no mailbox, no message id.
    assert!(!text.contains('@'), "an address in the metrics:\n{text}");
    for id in ids.iter().chain([&sales, &oauth]) {
        assert!(!text.contains(id.as_str()), "an id in the metrics");
    }
    o.stop().await;
}

#[tokio::test]
async fn with_a_token_set_metrics_need_it() {
    let token = "a metrics token of some length";
    let app = spawn_app_with(|env| {
        env.insert("HERALD_METRICS_TOKEN".into(), token.into());
    })
    .await;
    let client = app.client();
    let url = app.url("/metrics");
    let none = scrape(&client, &url, None).await;
    assert_eq!(none.status(), 403);
    assert!(none.text().await.unwrap().contains("HERALD_METRICS_TOKEN"));
    assert_eq!(
        scrape(&client, &url, Some("a metrics token of some lengtH"))
            .await
            .status(),
        403
    );
    assert_eq!(scrape(&client, &url, Some(token)).await.status(), 200);
}

#[tokio::test]
async fn without_a_token_metrics_answer_only_this_machine() {
    // A client behind a trusted proxy, from elsewhere.
    let app = spawn_app_with(|env| {
        env.insert("HERALD_TRUSTED_PROXIES".into(), "127.0.0.1".into());
    })
    .await;
    let remote = app
        .client()
        .get(app.url("/metrics"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(remote.status(), 403);
    assert!(
        remote
            .text()
            .await
            .unwrap()
            .contains("HERALD_METRICS_TOKEN")
    );
    assert_eq!(
        scrape(&app.client(), &app.url("/metrics"), None)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn without_a_token_a_request_relayed_by_an_unlisted_local_proxy_is_refused() {
    // A reverse proxy on this machine, not in HERALD_TRUSTED_PROXIES: the peer is loopback,
    // but the request came from elsewhere.
    let app = spawn_app_with(|_| {}).await;
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let relayed = app
            .client()
            .get(app.url("/metrics"))
            .header(header, "203.0.113.9")
            .send()
            .await
            .unwrap();
        assert_eq!(relayed.status(), 403, "{header}");
    }
}

#[test]
fn a_short_metrics_token_is_refused_at_start() {
    let env =
        std::collections::BTreeMap::from([("HERALD_METRICS_TOKEN".to_owned(), "short".to_owned())]);
    let error = herald::config::Config::load(None, &env).unwrap_err();
    assert!(
        error.to_string().contains("HERALD_METRICS_TOKEN"),
        "{error}"
    );
}

#[tokio::test]
async fn without_a_token_an_installation_with_a_public_address_never_shows_metrics() {
    // Reached as https://herald.example.com through a proxy on this machine that adds no
    // forwarding header: the peer is loopback, the request is not.
    let app = spawn_app_with(|env| {
        env.insert(
            "HERALD_PUBLIC_URL".into(),
            "https://herald.example.com".into(),
        );
    })
    .await;
    let response = scrape(&app.client(), &app.url("/metrics"), None).await;
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("HERALD_METRICS_TOKEN")
    );
}
