//! Slow clients and floods: the HTTP header-read timeout and connection cap, and the bounded
//! password hashing pool behind sign-in. (The relay's session caps are in `relay`.)

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{PASSWORD, eventually, hidden_field, spawn_app_with};

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

#[test]
fn the_defaults_are_a_ten_second_header_timeout_and_a_thousand_connections_or_sessions() {
    let env = std::collections::BTreeMap::new();
    let config = herald::config::Config::load(None, &env).unwrap();
    assert_eq!(config.http.header_timeout, Duration::from_secs(10));
    assert_eq!(config.http.max_connections, 1024);
    assert_eq!(config.relay.max_sessions, 1000);
    let env = std::collections::BTreeMap::from([(
        "HERALD_HTTP_MAX_CONNECTIONS".to_owned(),
        "0".to_owned(),
    )]);
    let error = herald::config::Config::load(None, &env).unwrap_err();
    assert!(
        error.to_string().contains("HERALD_HTTP_MAX_CONNECTIONS"),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_sending_its_headers_slowly_is_cut_off() {
    let app = spawn_app_with(|env| {
        env.insert("HERALD_HTTP_HEADER_TIMEOUT_SECS".into(), "1".into());
    })
    .await;
    // Slowloris: a header line every 200 ms keeps any per-read timeout happy; only a
    // deadline on the whole header stops it.
    let mut stream = TcpStream::connect(addr(&app.base)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let cut_off = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the slow client is still connected after 5 s"
        );
        if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break started.elapsed();
        }
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            break started.elapsed();
        }
    };
    assert!(
        cut_off >= Duration::from_millis(900),
        "cut off too early: {cut_off:?}"
    );
    // A client that sends its request at once is served as before.
    let health = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let app = spawn_app_with(|env| {
        env.insert("HERALD_HTTP_MAX_CONNECTIONS".into(), "2".into());
    })
    .await;
    let first = TcpStream::connect(addr(&app.base)).await.unwrap();
    let _second = TcpStream::connect(addr(&app.base)).await.unwrap();
    let client = crate::helpers::http_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let third = client.get(app.url("/healthz")).send();
    tokio::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut third)
            .await
            .is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(served.status(), 200);
    drop(_second);
    app.stop().await;
}

#[tokio::test]
async fn sign_in_answers_503_with_retry_after_while_password_hashing_is_full() {
    let app = spawn_app_with(|env| {
        env.insert("HERALD_PASSWORD_HASHING_THREADS".into(), "1".into());
    })
    .await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    let browser = app.browser();
    let page = browser.get(app.url("/login")).send().await.unwrap();
    let csrf = hidden_field(&page.text().await.unwrap(), "csrf_token");

    // A flood of sign-ins, held still: the one thread busy, the queue behind it full.
    let pool = herald::crypto::hash_pool();
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel();
    let busy = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.run(herald::crypto::Wait::Always, move || {
                let _ = started.send(());
                hold.recv().ok()
            })
            .await
        }
    });
    running.await.unwrap();
    let queued: Vec<_> = (0..pool.queue_limit())
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(herald::crypto::Wait::Briefly, || ()).await })
        })
        .collect();
    eventually("the pool's queue to fill", || async {
        pool.waiting() >= pool.queue_limit()
    })
    .await;

    // More tries than an account may fail (5): being told to wait is no failed guess. Each
    // answer carries the next form's token.
    let mut csrf = csrf;
    for _ in 0..6 {
        let again = browser
            .post(app.url("/login"))
            .form(&[
                ("email", "ann@contoso.com"),
                ("password", PASSWORD),
                ("csrf_token", csrf.as_str()),
                ("next", "/"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 503);
        csrf = hidden_field(&again.text().await.unwrap(), "csrf_token");
    }
    let form = [
        ("email", "ann@contoso.com"),
        ("password", PASSWORD),
        ("csrf_token", csrf.as_str()),
        ("next", "/"),
    ];
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        browser.post(app.url("/login")).form(&form).send(),
    )
    .await
    .expect("sign-in answers at once instead of queueing behind the flood")
    .unwrap();
    assert_eq!(refused.status(), 503);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let html = refused.text().await.unwrap();
    assert!(
        html.contains("Herald is busy checking other sign-ins. Wait a few seconds"),
        "{html}"
    );

    // Once the flood drains, the same person signs in: the busy answers did not lock the
    // account.
    release.send(()).unwrap();
    busy.await.unwrap().unwrap();
    for job in queued {
        job.await.unwrap().unwrap();
    }
    let csrf = hidden_field(&html, "csrf_token");
    let signed_in = browser
        .post(app.url("/login"))
        .form(&[
            ("email", "ann@contoso.com"),
            ("password", PASSWORD),
            ("csrf_token", csrf.as_str()),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    app.stop().await;
}
