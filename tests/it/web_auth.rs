//! Web sign-in, sessions, CSRF, the sign-in rate limit and first-run setup.

use herald::services;
use herald::web::auth::LoginThrottle;

use crate::helpers::{PASSWORD, TestApp, hidden_field, problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn signing_in_with_the_right_password_opens_the_home_page() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    let browser = app.browser();

    let response = app.sign_in(&browser, "ann@contoso.com", PASSWORD).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/");

    let home = browser.get(app.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 200);
    let html = home.text().await.unwrap();
    assert!(html.contains("Contoso") && html.contains("ann@contoso.com"));

    // The session also authenticates API reads.
    let me: serde_json::Value = browser
        .get(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["organization"]["name"], "Contoso");
    assert_eq!(me["access"], "admin");
    app.stop().await;
}

#[tokio::test]
async fn signing_in_with_a_wrong_password_is_refused_without_a_session() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    let browser = app.browser();

    let response = app
        .sign_in(&browser, "ann@contoso.com", "not the password")
        .await;
    assert_eq!(response.status(), 401);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Wrong email or password.")
    );
    // An unknown account gets the very same answer.
    let response = app.sign_in(&browser, "nobody@contoso.com", PASSWORD).await;
    assert_eq!(response.status(), 401);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Wrong email or password.")
    );

    let home = browser.get(app.url("/")).send().await.unwrap();
    assert_eq!(home.status(), 303);
    assert_eq!(home.headers()["location"], "/login");
    problem(
        browser.get(app.url("/api/v1/me")).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn repeated_failures_lock_the_account_even_for_the_right_password() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    let browser = app.browser();

    for _ in 0..LoginThrottle::PER_ACCOUNT {
        let response = app.sign_in(&browser, "ann@contoso.com", "guess").await;
        assert_eq!(response.status(), 401);
    }
    let response = app.sign_in(&browser, "ANN@contoso.com", PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let html = response.text().await.unwrap();
    assert!(
        html.contains("Too many failed sign-in attempts for this account"),
        "{html}"
    );

    // Other accounts are not locked out by someone guessing Ann's password.
    app.user(org, "bob@contoso.com", "member").await;
    let response = app
        .sign_in(&app.browser(), "bob@contoso.com", PASSWORD)
        .await;
    assert_eq!(response.status(), 303);
    app.stop().await;
}

/// Posts the sign-in form as if relayed for `forwarded_for`.
async fn sign_in_forwarded(
    app: &TestApp,
    browser: &reqwest::Client,
    email: &str,
    forwarded_for: &str,
) -> reqwest::StatusCode {
    let page = browser
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf_token");
    browser
        .post(app.url("/login"))
        .header("x-forwarded-for", forwarded_for)
        .form(&[("email", email), ("password", "x"), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    // Untrusted peer: a spoofed X-Forwarded-For does not spread guesses over "many" addresses.
    let app = spawn_app().await;
    let browser = app.browser();
    for i in 0..LoginThrottle::PER_ADDRESS {
        let status = sign_in_forwarded(
            &app,
            &browser,
            &format!("user{i}@example.com"),
            &format!("203.0.113.{i}"),
        )
        .await;
        assert_eq!(status, 401);
    }
    let response = app.sign_in(&browser, "someone@example.com", "x").await;
    assert_eq!(response.status(), 429);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("from your network address")
    );
    app.stop().await;

    // Trusted proxy: each forwarded client is counted on its own.
    let app = spawn_app_with(|env| {
        env.insert("HERALD_TRUSTED_PROXIES".into(), "127.0.0.1".into());
    })
    .await;
    let browser = app.browser();
    for i in 0..LoginThrottle::PER_ADDRESS {
        let status = sign_in_forwarded(
            &app,
            &browser,
            &format!("user{i}@example.com"),
            "203.0.113.7",
        )
        .await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        sign_in_forwarded(&app, &browser, "fresh@example.com", "203.0.113.7").await,
        429
    );
    assert_eq!(
        sign_in_forwarded(&app, &browser, "fresh@example.com", "198.51.100.9").await,
        401
    );
    app.stop().await;
}

#[tokio::test]
async fn a_sign_in_form_without_its_csrf_token_is_refused() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;

    // A cross-site form post carries no token, and no form cookie either.
    let response = app
        .client()
        .post(app.url("/login"))
        .form(&[
            ("email", "ann@contoso.com"),
            ("password", PASSWORD),
            ("csrf_token", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("This sign-in form has expired")
    );

    // A real form posted from another origin is refused too.
    let browser = app.browser();
    let page = browser
        .get(app.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf_token");
    let response = browser
        .post(app.url("/login"))
        .header("origin", "http://evil.example")
        .form(&[
            ("email", "ann@contoso.com"),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    app.stop().await;
}

#[tokio::test]
async fn cookie_authenticated_changes_need_the_csrf_header() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    let (browser, csrf) = app.signed_in("ann@contoso.com").await;
    let body = serde_json::json!({ "name": "ci", "role": "sender" });

    let missing = browser
        .post(app.url("/api/v1/api-keys"))
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(missing, 403, "csrf_failed").await;
    let wrong = browser
        .post(app.url("/api/v1/api-keys"))
        .header("x-csrf-token", "not-the-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(wrong, 403, "csrf_failed").await;
    let cross_site = browser
        .post(app.url("/api/v1/api-keys"))
        .header("x-csrf-token", &csrf)
        .header("origin", "http://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(cross_site, 403, "csrf_failed").await;

    let ok = browser
        .post(app.url("/api/v1/api-keys"))
        .header("x-csrf-token", &csrf)
        .header("origin", &app.base)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn signing_out_needs_the_csrf_token_and_ends_the_session() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    let (browser, csrf) = app.signed_in("ann@contoso.com").await;

    let forged = browser
        .post(app.url("/logout"))
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(
        browser.get(app.url("/")).send().await.unwrap().status(),
        200,
        "still signed in"
    );

    let out = browser
        .post(app.url("/logout"))
        .form(&[("csrf_token", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(out.headers()["location"], "/login");
    assert_eq!(
        browser.get(app.url("/")).send().await.unwrap().status(),
        303
    );
    app.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site_lax() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    let response = app
        .sign_in(&app.browser(), "ann@contoso.com", PASSWORD)
        .await;
    let cookie = session_set_cookie(&response, "herald_session=");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "plain-http installation: {cookie}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_herald_is_reached_over_https() {
    let app = spawn_app_with(|env| {
        env.insert(
            "HERALD_PUBLIC_URL".into(),
            "https://mail.example.com".into(),
        );
    })
    .await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    // Behind a TLS-terminating proxy the browser sees https; talk to the backend directly.
    let browser = app.browser();
    let login = browser.get(app.url("/login")).send().await.unwrap();
    let form_cookie = session_set_cookie(&login, "__Host-herald_form=");
    assert!(form_cookie.contains("Secure"));
    let value = form_cookie.split(';').next().unwrap().to_owned();
    let csrf = hidden_field(&login.text().await.unwrap(), "csrf_token");
    let response = app
        .client()
        .post(app.url("/login"))
        .header("cookie", value)
        .form(&[
            ("email", "ann@contoso.com"),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cookie = session_set_cookie(&response, "__Host-herald_session=");
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("Path=/"),
        "{cookie}"
    );
    app.stop().await;
}

fn session_set_cookie(response: &reqwest::Response, prefix: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} cookie set"))
        .to_owned()
}

#[tokio::test]
async fn the_setup_link_creates_the_first_organization_and_admin_once() {
    let app = spawn_app().await;
    let token = services::issue_setup_token(app.store(), herald::clock::system_now())
        .await
        .unwrap()
        .expect("no user yet");
    let browser = app.browser();

    let bad = browser
        .get(app.url("/setup?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 410);

    let page = browser
        .get(app.url(&format!("/setup?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = hidden_field(&page.text().await.unwrap(), "csrf_token");
    let form = [
        ("csrf_token", csrf.as_str()),
        ("token", token.as_str()),
        ("org_name", "Contoso"),
        ("email", "ann@contoso.com"),
        ("password", PASSWORD),
        ("password_confirm", PASSWORD),
    ];
    let short = browser
        .post(app.url("/setup"))
        .form(
            &[
                &form[..4],
                &[("password", "short"), ("password_confirm", "short")],
            ]
            .concat(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), 422);
    let html = short.text().await.unwrap();
    assert!(html.contains("Password is too short"), "{html}");
    let csrf = hidden_field(&html, "csrf_token");
    let mut form = form;
    form[0].1 = &csrf;

    let done = browser
        .post(app.url("/setup"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let home = browser
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(home.contains("Contoso") && home.contains("ann@contoso.com (admin)"));

    // The link is spent, and no new one is issued once a user exists.
    let again = app
        .browser()
        .get(app.url(&format!("/setup?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 410);
    assert!(
        services::issue_setup_token(app.store(), herald::clock::system_now())
            .await
            .unwrap()
            .is_none()
    );

    let audit: serde_json::Value = browser
        .get(app.url("/api/v1/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<_> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        actions.contains(&"user.create".to_owned())
            && actions.contains(&"organization.create".to_owned())
    );
    app.stop().await;
}

#[tokio::test]
async fn setup_with_a_taken_organization_name_says_so_in_the_form() {
    let app = spawn_app().await;
    app.org("Acme").await;
    let token = services::issue_setup_token(app.store(), herald::clock::system_now())
        .await
        .unwrap()
        .expect("no user yet");
    let browser = app.browser();
    let page = browser
        .get(app.url(&format!("/setup?token={token}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf_token");
    let response = browser
        .post(app.url("/setup"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("token", token.as_str()),
            ("org_name", "ACME"),
            ("email", "ann@acme.com"),
            ("password", PASSWORD),
            ("password_confirm", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("Organization name: an organization named &#34;ACME&#34; already exists."),
        "{html}"
    );
    // Nothing was written, and the link still works.
    assert!(
        services::setup_token_is_valid(app.store(), &token, herald::clock::system_now())
            .await
            .unwrap()
    );
    app.stop().await;
}
