//! Several `herald serve` instances on one PostgreSQL database: one queue, one token per
//! mailbox, one throttle.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::helpers::{
    POSTGRES_ENV, eventually_within, spawn_app_with_sandbox_on, spawn_instance_of,
};
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
    let start = herald::clock::system_now();
    // One simulated clock for both, ahead of the real one so that mail is due at once.
    let clock = Arc::new(herald::clock::ManualClock::starting_at(
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
    let clock: Arc<dyn herald::clock::Clock> = Arc::new(herald::clock::SystemClock);
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

/// Two `herald serve` processes, one PostgreSQL database, one sandbox: every message is sent
/// once, by either process, and the mailbox's token is refreshed once between them.
#[tokio::test]
async fn two_herald_processes_share_the_queue_and_one_token_refresh() {
    use crate::crash::{ready, serve};
    use crate::helpers::{TestDb, http_builder, sandbox_consent};
    if !postgres() {
        eprintln!("several instances share a PostgreSQL database: set {POSTGRES_ENV}");
        return;
    }
    const USER: &str = "reports@contoso.com";
    const PASSWORD: &str = "reports' sandbox password";
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_url = format!("http://localhost:{}", http.local_addr().unwrap().port());
    let sandbox = herald::sandbox::RunningSandbox::start_on(http, smtp, &sandbox_url)
        .await
        .unwrap();
    sandbox
        .state
        .add_user(USER, secrecy::SecretString::from(PASSWORD));
    let mut switches = sandbox.state.switches();
    switches.messages_per_minute = 1_000_000;
    switches.token_latency_ms = 500;
    sandbox.state.set_switches(switches);

    let db = TestDb::new().await;
    let data = tempfile::tempdir().unwrap();
    let ca = data.path().join("sandbox-ca.pem");
    std::fs::write(&ca, sandbox.ca.ca_pem()).unwrap();
    // One key for both, as an installation of several instances must have.
    let master_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(herald::crypto::random_bytes::<32>())
    };
    let mut processes = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let own_data = tempfile::tempdir().unwrap();
        let env = BTreeMap::from([
            ("HERALD_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
            ("HERALD_PUBLIC_URL".to_owned(), url.clone()),
            (
                "HERALD_DATA_DIR".to_owned(),
                own_data.path().display().to_string(),
            ),
            ("HERALD_DATABASE_URL".to_owned(), db.url()),
            ("HERALD_MASTER_KEY".to_owned(), master_key.clone()),
            ("HERALD_DEV".to_owned(), "true".to_owned()),
            ("HERALD_ALLOW_PRIVATE_HOSTS".to_owned(), "true".to_owned()),
            ("HERALD_SMTP_CA_FILE".to_owned(), ca.display().to_string()),
            ("HERALD_LOG".to_owned(), "warn".to_owned()),
        ]);
        processes.push((serve(&env), own_data));
        ready(&url).await;
        urls.push(url);
    }

    let (store, key) = crate::helpers::contoso_in(&db.database_url(), "reports").await;
    let client = http_builder().build().unwrap();
    // An OAuth2 mailbox, authorized through the first process.
    let registration = sandbox
        .state
        .register_client("Herald", vec![format!("{}/web/um/smtp/redirect", urls[0])]);
    let smtp_addr = sandbox.smtp_addr;
    let created: Value = client
        .post(format!("{}/api/v1/mailboxes", urls[0]))
        .bearer_auth(&key)
        .json(&serde_json::json!({
            "name": "Reports", "auth": "oauth2", "provider": "custom", "username": USER,
            "host": smtp_addr.ip().to_string(), "port": smtp_addr.port(), "security": "starttls",
            "authorization_url": format!("{sandbox_url}/sandbox/oauth2/v2.0/authorize"),
            "token_url": format!("{sandbox_url}/sandbox/oauth2/v2.0/token"),
            "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access"],
            "client_id": registration.client_id,
            "client_secret": secrecy::ExposeSecret::expose_secret(&registration.secret),
            "default": true,
            "limits": {"connections": 4},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mailbox = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let started: Value = client
        .post(format!("{}/api/v1/mailboxes/{mailbox}/authorize", urls[0]))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let redirect = sandbox_consent(
        started["authorization_url"].as_str().unwrap(),
        USER,
        PASSWORD,
        "accept",
    )
    .await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&location)
        .send()
        .await
        .unwrap();
    // Its token has run out: both processes will want a new one at once.
    sqlx::query("UPDATE mailboxes SET token_expires_at = 0 WHERE id = $1")
        .bind(&mailbox)
        .execute(store.pool())
        .await
        .unwrap();
    let refreshes_before = sandbox.state.token_requests();

    // 40 messages, half through each process's API.
    for i in 0..40 {
        let response = client
            .post(format!("{}/api/v1/messages", urls[i % 2]))
            .bearer_auth(&key)
            .json(&serde_json::json!({
                "to": "bob@example.com", "subject": format!("Shared #{i}"), "text": "Hello",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    eventually_within(
        "40 messages sent",
        std::time::Duration::from_secs(60),
        || async {
            let sent: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE status = 'sent'")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            sent == 40
        },
    )
    .await;
    let mut copies = BTreeMap::<String, usize>::new();
    for m in sandbox.state.messages() {
        let raw = String::from_utf8_lossy(&m.raw).into_owned();
        if let Some(subject) = raw
            .lines()
            .find_map(|l| l.strip_prefix("Subject: Shared #"))
        {
            *copies.entry(subject.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(copies.len(), 40, "every message arrived");
    assert!(copies.values().all(|n| *n == 1), "none twice: {copies:?}");
    assert_eq!(
        sandbox.state.token_requests() - refreshes_before,
        1,
        "one refresh between the two processes"
    );
    let instances: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT DISTINCT attempted_by FROM messages")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(instances.len(), 2, "both processes sent: {instances:?}");
    drop(processes);
}

#[tokio::test]
async fn parallel_guesses_over_two_instances_get_no_more_tries_than_on_one() {
    use herald::web::auth::LoginThrottle;
    let clock: Arc<dyn herald::clock::Clock> = Arc::new(herald::clock::SystemClock);
    let (first, sandbox) = spawn_app_with_sandbox_on(clock.clone()).await;
    let second = spawn_instance_of(&first, &sandbox, clock).await;
    let org = first.org("Contoso").await;
    first.user(org, "ann@contoso.com", "admin").await;
    // Twelve guesses at once, half at each instance: each is recorded before its password is
    // checked, so no more than the limit are checked at all.
    let guesses = (0..12).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        async move {
            app.sign_in(&app.browser(), "ann@contoso.com", "guess")
                .await
                .status()
        }
    });
    let statuses = crate::authorization::futures_join_all(guesses).await;
    let checked = statuses.iter().filter(|s| s.as_u16() == 401).count();
    let refused = statuses.iter().filter(|s| s.as_u16() == 429).count();
    assert_eq!(checked + refused, 12, "{statuses:?}");
    assert!(
        checked <= LoginThrottle::PER_ACCOUNT,
        "{checked} guesses were checked: {statuses:?}"
    );
    second.stop().await;
    first.stop().await;
}
