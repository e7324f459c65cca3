//! The seed's flow at the API level, against the sandbox: create an OAuth2 mailbox, authorize,
//! sign in and Accept, land on the redirect, Verified, and a test message in the sandbox's
//! store. Then every failure path the sandbox can reproduce, mapped to its reason.

use herald::domain::mailbox::secret_fields;
use herald::sandbox::{RunningSandbox, SandboxClient, Switches};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, sandbox_consent, spawn_app_with_sandbox};

const MAILBOX: &str = "support@contoso.com";
const MAILBOX_PASSWORD: &str = "support's sandbox password";

struct Flow {
    app: TestApp,
    sandbox: RunningSandbox,
    registration: SandboxClient,
    key: String,
}

impl Flow {
    async fn start() -> Self {
        let (app, sandbox) = spawn_app_with_sandbox().await;
        sandbox
            .state
            .add_user(MAILBOX, SecretString::from(MAILBOX_PASSWORD));
        let registration = sandbox
            .state
            .register_client("Herald", vec![app.state.access.config.redirect_uri()]);
        let org = app.org("Contoso").await;
        let key = app.key(org, "admin").await;
        Self {
            app,
            sandbox,
            registration,
            key,
        }
    }

    async fn create(&self, extra: Value) -> String {
        let mut body = json!({
            "name": "Support",
            "auth": "oauth2",
            "provider": "sandbox",
            "username": MAILBOX,
            "from_name": "Contoso Support",
            "reply_to": "help@contoso.com",
            "signature": "Contoso Support\nhttps://contoso.example",
            "client_id": self.registration.client_id,
            "client_secret": self.registration.secret.expose_secret(),
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = self
            .app
            .client()
            .post(self.app.url("/api/v1/mailboxes"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn authorize_url(&self, id: &str) -> String {
        let started: Value = self
            .app
            .client()
            .post(self.app.url(&format!("/api/v1/mailboxes/{id}/authorize")))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        started["authorization_url"]
            .as_str()
            .expect("an authorization URL")
            .to_owned()
    }

    /// Follows the provider's redirect to Herald and answers where Herald sends the browser.
    async fn land(&self, provider_redirect: &reqwest::Response) -> String {
        let location = provider_redirect.headers()["location"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            location.starts_with(&self.app.state.access.config.redirect_uri()),
            "{location}"
        );
        self.land_at(&location).await
    }

    async fn land_at(&self, url: &str) -> String {
        let response = self.app.client().get(url).send().await.unwrap();
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["referrer-policy"], "no-referrer");
        let target = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            target.starts_with("/settings/system/outgoing-mail?attempt="),
            "{target}"
        );
        assert!(
            !target.contains("code=") && !target.contains("error"),
            "nothing from the provider in the URL: {target}"
        );
        target
    }

    async fn authorize(&self, id: &str) -> String {
        let url = self.authorize_url(id).await;
        let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
        self.land(&redirect).await
    }

    async fn mailbox(&self, id: &str) -> Value {
        self.app
            .client()
            .get(self.app.url(&format!("/api/v1/mailboxes/{id}")))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn attempt(&self, id: &str) -> Value {
        self.app
            .client()
            .get(
                self.app
                    .url(&format!("/api/v1/mailboxes/{id}/authorization")),
            )
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn test_message(&self, id: &str) -> reqwest::Response {
        self.app
            .client()
            .post(
                self.app
                    .url(&format!("/api/v1/mailboxes/{id}/test-message")),
            )
            .bearer_auth(&self.key)
            .json(&json!({"to": "someone@example.com"}))
            .send()
            .await
            .unwrap()
    }

    async fn verify(&self, id: &str) -> Value {
        let response = self
            .app
            .client()
            .post(self.app.url(&format!("/api/v1/mailboxes/{id}/verify")))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    fn switch(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.sandbox.state.switches();
        change(&mut switches);
        self.sandbox.state.set_switches(switches);
    }

    async fn has_tokens(&self, id: &str) -> bool {
        let mut conn = self.app.store().conn().await.unwrap();
        herald::store::secrets::get(&mut conn, id, secret_fields::REFRESH_TOKEN)
            .await
            .unwrap()
            .is_some()
    }

    /// Makes the stored access token look expired, so the next use must refresh.
    async fn expire_access_token(&self, id: &str) {
        let mut conn = self.app.store().conn().await.unwrap();
        sqlx::query("UPDATE mailboxes SET token_expires_at = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.app.stop().await;
    }
}

#[tokio::test]
async fn the_seed_flow_ends_verified_and_a_test_message_arrives_with_from_reply_to_and_signature() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    let before = flow.mailbox(&id).await;
    assert_eq!(before["status"], "not_verified");

    let url = flow.authorize_url(&id).await;
    let query: Vec<(String, String)> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("response_type").as_deref(), Some("code"));
    assert_eq!(get("login_hint").as_deref(), Some(MAILBOX));
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert!(
        get("state").unwrap().len() >= 43,
        "at least 128 random bits"
    );
    assert!(
        get("scope")
            .unwrap()
            .contains("https://outlook.office.com/SMTP.Send")
    );
    assert_eq!(
        get("redirect_uri"),
        Some(flow.app.state.access.config.redirect_uri())
    );

    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
    let target = flow.land(&redirect).await;
    let mailbox = flow.mailbox(&id).await;
    assert_eq!(mailbox["status"], "verified", "{mailbox}");
    assert!(mailbox["status_reason"].is_null());
    assert!(mailbox["verified_at"].is_string() && mailbox["token_expires_at"].is_string());
    let attempt = flow.attempt(&id).await;
    assert_eq!(attempt["status"], "completed");
    assert!(target.ends_with(attempt["id"].as_str().unwrap()));
    assert_eq!(
        flow.sandbox.state.smtp_auth_attempts(),
        1,
        "verified over SMTP"
    );

    let sent = flow.test_message(&id).await;
    assert_eq!(sent.status(), 200);
    let sent: Value = sent.json().await.unwrap();
    assert_eq!(sent["sent"], true);
    assert!(sent["smtp_reply"].as_str().unwrap().starts_with("250"));
    let messages = flow.sandbox.state.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.user, MAILBOX);
    assert_eq!(message.mechanism, "XOAUTH2");
    let raw = String::from_utf8_lossy(&message.raw);
    assert!(
        raw.contains("From: \"Contoso Support\" <support@contoso.com>"),
        "{raw}"
    );
    assert!(raw.contains("Reply-To: help@contoso.com"), "{raw}");
    assert!(
        raw.contains("-- \r\nContoso Support\r\nhttps://contoso.example"),
        "{raw}"
    );

    // The redirect's state was single-use: replaying it changes nothing.
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(flow.land_at(&location).await, target);
    assert_eq!(flow.sandbox.state.token_requests(), 1);

    flow.stop().await;
}

#[tokio::test]
async fn cancel_at_consent_is_recorded_as_consent_declined_with_nothing_stored() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "cancel").await;
    flow.land(&redirect).await;
    let attempt = flow.attempt(&id).await;
    assert_eq!(attempt["status"], "failed");
    assert_eq!(attempt["reason"]["code"], "consent_declined");
    let mailbox = flow.mailbox(&id).await;
    assert_eq!(mailbox["status"], "not_verified");
    assert_eq!(mailbox["status_reason"]["code"], "consent_declined");
    assert!(!flow.has_tokens(&id).await);
    flow.stop().await;
}

#[tokio::test]
async fn missing_unknown_reused_and_foreign_session_states_are_refused_with_nothing_stored() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    let redirect_uri = flow.app.state.access.config.redirect_uri();
    assert!(
        flow.land_at(&format!("{redirect_uri}?code=x"))
            .await
            .ends_with("attempt=invalid")
    );
    assert!(
        flow.land_at(&format!("{redirect_uri}?code=x&state=forged"))
            .await
            .ends_with("attempt=invalid")
    );
    assert!(!flow.has_tokens(&id).await);
    assert_eq!(flow.sandbox.state.token_requests(), 0);

    // Started from a browser session, the state works only with that session.
    let org_admin = {
        let mut conn = flow.app.store().conn().await.unwrap();
        let org = herald::store::orgs::find(&mut conn, "Contoso")
            .await
            .unwrap()
            .unwrap();
        drop(conn);
        flow.app.user(org.id, "ann@contoso.com", "admin").await;
        "ann@contoso.com"
    };
    let (browser, csrf) = flow.app.signed_in(org_admin).await;
    let started: Value = browser
        .post(flow.app.url(&format!("/api/v1/mailboxes/{id}/authorize")))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let redirect = sandbox_consent(
        started["authorization_url"].as_str().unwrap(),
        MAILBOX,
        MAILBOX_PASSWORD,
        "accept",
    )
    .await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    // Another browser (no session) presenting the state is refused…
    assert!(flow.land_at(&location).await.ends_with("attempt=invalid"));
    assert!(!flow.has_tokens(&id).await);
    // …while the browser that started it completes it.
    let response = browser.get(&location).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(flow.mailbox(&id).await["status"], "verified");
    let page = browser
        .get(
            flow.app
                .url(response.headers()["location"].to_str().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Authorized: the mailbox is Verified."),
        "{page}"
    );
    assert!(page.contains("Verified"));
    flow.stop().await;
}

#[tokio::test]
async fn a_wrong_iss_is_refused_and_an_unfinished_attempt_expires_without_touching_a_verified_mailbox()
 {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let mut forged = url::Url::parse(&location).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "iss")
        .collect();
    forged
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("iss", "https://evil.example/v2.0");
    flow.land_at(forged.as_str()).await;
    let attempt = flow.attempt(&id).await;
    assert_eq!(attempt["reason"]["code"], "issuer_mismatch");
    assert!(!flow.has_tokens(&id).await);

    // Verified first, then an attempt left unfinished.
    flow.authorize(&id).await;
    assert_eq!(flow.mailbox(&id).await["status"], "verified");
    flow.authorize_url(&id).await;
    let mut conn = flow.app.store().conn().await.unwrap();
    sqlx::query("UPDATE authorization_attempts SET expires_at = 1 WHERE status = 'pending'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let attempt = flow.attempt(&id).await;
    assert_eq!(attempt["status"], "expired");
    assert_eq!(attempt["reason"]["code"], "authorization_incomplete");
    assert!(
        attempt["reason"]["action"]
            .as_str()
            .unwrap()
            .contains("AADSTS50011")
    );
    assert_eq!(
        flow.mailbox(&id).await["status"],
        "verified",
        "a Verified mailbox stays Verified"
    );
    flow.stop().await;
}

#[tokio::test]
async fn an_expired_client_secret_at_redemption_says_so() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
    flow.switch(|s| s.client_secret_expired = true);
    flow.land(&redirect).await;
    let mailbox = flow.mailbox(&id).await;
    assert_eq!(mailbox["status_reason"]["code"], "client_secret_expired");
    assert!(
        mailbox["status_reason"]["action"]
            .as_str()
            .unwrap()
            .contains("New client secret")
    );
    assert!(!flow.has_tokens(&id).await);
    flow.stop().await;
}

#[tokio::test]
async fn refresh_failures_turn_the_mailbox_not_verified_with_their_reason() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    flow.authorize(&id).await;
    type Case = (fn(&mut Switches), &'static str);
    let cases: [Case; 4] = [
        (|s| s.refresh_token_expired = true, "refresh_token_expired"),
        (|s| s.grant_revoked = true, "refresh_token_expired"),
        (|s| s.consent_required = true, "consent_required"),
        (|s| s.mfa_required = true, "mfa_or_conditional_access"),
    ];
    for (set, code) in cases {
        flow.sandbox.state.set_switches(Switches::default());
        flow.switch(set);
        flow.expire_access_token(&id).await;
        let mailbox = flow.verify(&id).await;
        assert_eq!(mailbox["status"], "not_verified", "{code}");
        assert_eq!(mailbox["status_reason"]["code"], code);
    }
    // Once the provider accepts again, verification restores the status.
    flow.sandbox.state.set_switches(Switches::default());
    assert_eq!(flow.verify(&id).await["status"], "verified");
    flow.stop().await;
}

#[tokio::test]
async fn smtp_auth_disabled_is_named_and_a_432_leaves_the_status_alone() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    flow.authorize(&id).await;

    flow.switch(|s| s.max_connections_per_mailbox = 0);
    assert_eq!(
        flow.verify(&id).await["status"],
        "verified",
        "throttling is not a configuration fault"
    );

    flow.switch(|s| {
        s.max_connections_per_mailbox = 3;
        s.smtp_auth_disabled = true;
    });
    let mailbox = flow.verify(&id).await;
    assert_eq!(mailbox["status_reason"]["code"], "smtp_auth_disabled");
    assert!(
        mailbox["status_reason"]["action"]
            .as_str()
            .unwrap()
            .contains("Set-CASMailbox")
    );
    let sent = flow.test_message(&id).await;
    problem(sent, 502, "smtp_auth_disabled").await;
    flow.stop().await;
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_for_fifty_concurrent_users() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    flow.authorize(&id).await;
    let before = flow.sandbox.state.token_requests();
    flow.expire_access_token(&id).await;
    let org = {
        let mut conn = flow.app.store().conn().await.unwrap();
        herald::store::orgs::find(&mut conn, "Contoso")
            .await
            .unwrap()
            .unwrap()
            .id
    };
    let mailbox_id: herald::domain::MailboxId = id.parse().unwrap();
    let deps = &flow.app.state.access;
    let tokens = futures_join_all(
        (0..50).map(|_| herald::access::access_token(deps, org, mailbox_id, None)),
    )
    .await;
    let mut distinct = std::collections::HashSet::new();
    for token in tokens {
        match token.unwrap() {
            Ok(token) => {
                distinct.insert(token.expose_secret().to_owned());
            }
            Err(_) => panic!("refresh failed"),
        }
    }
    assert_eq!(
        flow.sandbox.state.token_requests() - before,
        1,
        "exactly one token request"
    );
    assert_eq!(distinct.len(), 1, "everyone got the same fresh token");
    flow.stop().await;
}

/// Polls all the futures together on this task until each has finished, like
/// `futures::future::join_all`, so that they genuinely wait on one another.
pub(crate) async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut results: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
            if let Some(future) = slot
                && let std::task::Poll::Ready(out) = future.as_mut().poll(cx)
            {
                *result = Some(out);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future completed"))
        .collect()
}

#[tokio::test]
async fn a_basic_mailbox_verifies_and_sends_and_a_wrong_password_is_named() {
    let flow = Flow::start().await;
    let body = json!({"name": "Scanner", "auth": "basic", "provider": "sandbox", "username": MAILBOX, "password": MAILBOX_PASSWORD, "reply_to": null});
    let created: Value = flow
        .app
        .client()
        .post(flow.app.url("/api/v1/mailboxes"))
        .bearer_auth(&flow.key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(flow.verify(&id).await["status"], "verified");
    let sent = flow.test_message(&id).await;
    assert_eq!(sent.status(), 200);
    assert_eq!(flow.sandbox.state.messages()[0].mechanism, "PLAIN");

    let wrong = flow
        .app
        .client()
        .patch(flow.app.url(&format!("/api/v1/mailboxes/{id}")))
        .bearer_auth(&flow.key)
        .json(&json!({"password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 200);
    let mailbox = flow.verify(&id).await;
    assert_eq!(mailbox["status"], "not_verified");
    assert_eq!(mailbox["status_reason"]["code"], "basic_auth_rejected");

    flow.switch(|s| s.basic_auth_retired = true);
    let mailbox = flow.verify(&id).await;
    assert_eq!(mailbox["status_reason"]["code"], "basic_auth_retired");
    flow.stop().await;
}

#[tokio::test]
async fn a_shared_mailbox_without_send_as_is_named_send_as_denied() {
    let flow = Flow::start().await;
    let delegate = "ann@contoso.com";
    flow.sandbox
        .state
        .add_user(delegate, SecretString::from("ann's password"));
    flow.sandbox
        .state
        .grant_mailbox_access(MAILBOX, delegate, false);
    let id = flow.create(json!({"sign_in_account": delegate})).await;
    let url = flow.authorize_url(&id).await;
    assert!(url.contains("login_hint=ann%40contoso.com"), "{url}");
    let redirect = sandbox_consent(&url, delegate, "ann's password", "accept").await;
    flow.land(&redirect).await;
    assert_eq!(
        flow.mailbox(&id).await["status"],
        "verified",
        "Full Access opens the mailbox"
    );

    let sent = flow.test_message(&id).await;
    let body = problem(sent, 502, "send_as_denied").await;
    assert!(
        body["detail"].as_str().unwrap().contains("Send As"),
        "{body}"
    );
    let mailbox = flow.mailbox(&id).await;
    assert_eq!(mailbox["status_reason"]["code"], "send_as_denied");
    assert!(flow.sandbox.state.messages().is_empty());
    flow.stop().await;
}

#[tokio::test]
async fn signing_in_as_another_account_than_the_mailbox_s_is_named() {
    let flow = Flow::start().await;
    let other = "eve@contoso.com";
    flow.sandbox
        .state
        .add_user(other, SecretString::from("eve's password"));
    let id = flow.create(json!({})).await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, other, "eve's password", "accept").await;
    flow.land(&redirect).await;
    let mailbox = flow.mailbox(&id).await;
    assert_eq!(mailbox["status"], "not_verified");
    assert_eq!(mailbox["status_reason"]["code"], "wrong_account");
    assert!(
        mailbox["status_reason"]["message"]
            .as_str()
            .unwrap()
            .contains("Signed in as eve@contoso.com")
    );
    flow.stop().await;
}

/// Runs `herald` against the flow's database and data directory, trusting the sandbox's CA.
async fn herald_cli(flow: &Flow, args: &[&str]) -> std::process::Output {
    let ca = flow.app.state.access.config.data_dir.join("sandbox-ca.pem");
    std::fs::write(&ca, flow.sandbox.ca.ca_pem()).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .env("HERALD_DATA_DIR", &flow.app.state.access.config.data_dir)
        .env("HERALD_DATABASE_URL", flow.app.db.url())
        .env("HERALD_DEV", "true")
        .env("HERALD_SMTP_CA_FILE", &ca)
        .env("HERALD_LOG", "warn")
        .kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("herald finishes")
        .unwrap()
}

#[tokio::test]
async fn herald_send_delivers_through_an_authorized_mailbox_from_the_shell() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    flow.authorize(&id).await;
    let out = herald_cli(
        &flow,
        &[
            "send",
            "--wait",
            "--mailbox",
            "support",
            "--to",
            "bob@example.com",
            "--to",
            "carol@example.com",
            "--subject",
            "From the shell",
            "--text",
            "Hello",
            "--html",
            "<p>Hello</p>",
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("Sent through Support (support@contoso.com): 250"),
        "{stdout}"
    );
    let messages = flow.sandbox.state.messages();
    assert_eq!(
        messages[0].rcpt_to,
        ["bob@example.com", "carol@example.com"]
    );
    let raw = String::from_utf8_lossy(&messages[0].raw);
    assert!(
        raw.contains("multipart/alternative")
            && raw.contains("<p>Hello</p>")
            && raw.contains("https://contoso.example"),
        "{raw}"
    );

    flow.switch(|s| s.smtp_auth_disabled = true);
    let out = herald_cli(
        &flow,
        &[
            "send",
            "--wait",
            "--mailbox",
            &id,
            "--to",
            "bob@example.com",
            "--subject",
            "x",
            "--text",
            "y",
        ],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not sent yet, held (smtp_auth_disabled)")
            && stderr.contains("Set-CASMailbox"),
        "{stderr}"
    );
    let out = herald_cli(
        &flow,
        &[
            "send",
            "--mailbox",
            "nope",
            "--to",
            "bob@example.com",
            "--subject",
            "x",
            "--text",
            "y",
        ],
    )
    .await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no mailbox is called or has the id `nope`")
    );
    flow.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_refreshed_once_and_gmail_s_334_refusal_is_a_rejected_token() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    flow.authorize(&id).await;
    let spoil = || async {
        let mut conn = flow.app.store().conn().await.unwrap();
        herald::keys::put_secret(
            &mut conn,
            &flow.app.state.access.keys,
            &id,
            secret_fields::ACCESS_TOKEN,
            &SecretString::from("sbx.revoked-early"),
            herald::clock::system_now(),
        )
        .await
        .unwrap();
    };
    flow.switch(|s| s.google_style_auth_failure = true);

    // The stored token is refused (Gmail-style 334, then 535): one refresh, one retry, success.
    spoil().await;
    let before = flow.sandbox.state.token_requests();
    assert_eq!(flow.verify(&id).await["status"], "verified");
    assert_eq!(
        flow.sandbox.state.token_requests() - before,
        1,
        "exactly one refresh"
    );

    // Refused again after the refresh: the token is rejected, and the mailbox says so.
    spoil().await;
    flow.switch(|s| s.access_token_lifetime_secs = 0);
    let mailbox = flow.verify(&id).await;
    assert_eq!(mailbox["status"], "not_verified");
    assert_eq!(mailbox["status_reason"]["code"], "token_rejected");
    flow.stop().await;
}

#[tokio::test]
async fn token_endpoint_outages_are_retried_and_never_change_the_status() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    flow.authorize(&id).await;

    // Two 503 pages, then the provider recovers: the refresh goes through on the third try.
    flow.expire_access_token(&id).await;
    flow.switch(|s| s.token_outages = 2);
    let before = flow.sandbox.state.token_requests();
    assert_eq!(flow.verify(&id).await["status"], "verified");
    assert_eq!(flow.sandbox.state.token_requests() - before, 3);

    // A longer outage: the refresh gives up for now, and the mailbox stays Verified.
    flow.expire_access_token(&id).await;
    flow.switch(|s| s.token_outages = 10);
    let mailbox = flow.verify(&id).await;
    assert_eq!(
        mailbox["status"], "verified",
        "an outage is not a configuration fault"
    );
    assert!(mailbox["status_reason"].is_null());
    flow.stop().await;
}

#[tokio::test]
async fn a_redirect_arriving_after_the_state_expired_stores_nothing() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
    let mut conn = flow.app.store().conn().await.unwrap();
    sqlx::query("UPDATE authorization_attempts SET expires_at = 1")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    flow.land(&redirect).await;
    let attempt = flow.attempt(&id).await;
    assert_eq!(attempt["status"], "expired");
    assert_eq!(attempt["reason"]["code"], "authorization_incomplete");
    assert!(!flow.has_tokens(&id).await);
    assert_eq!(
        flow.sandbox.state.token_requests(),
        0,
        "the code was never redeemed"
    );
    flow.stop().await;
}

#[tokio::test]
async fn a_failed_reauthorization_keeps_a_verified_mailbox_s_working_tokens() {
    let flow = Flow::start().await;
    let other = "eve@contoso.com";
    flow.sandbox
        .state
        .add_user(other, SecretString::from("eve's password"));
    let id = flow.create(json!({})).await;
    flow.authorize(&id).await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, other, "eve's password", "accept").await;
    flow.land(&redirect).await;
    assert_eq!(flow.attempt(&id).await["reason"]["code"], "wrong_account");
    assert_eq!(
        flow.mailbox(&id).await["status"],
        "verified",
        "the earlier authorization still works"
    );
    flow.expire_access_token(&id).await;
    assert_eq!(
        flow.verify(&id).await["status"],
        "verified",
        "its refresh token was kept"
    );
    flow.stop().await;
}

#[tokio::test]
async fn two_redirects_with_one_state_redeem_the_code_once() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let (a, b) = tokio::join!(flow.land_at(&location), flow.land_at(&location));
    assert_eq!(a, b);
    assert_eq!(
        flow.sandbox.state.token_requests(),
        1,
        "the code was redeemed once"
    );
    assert_eq!(flow.mailbox(&id).await["status"], "verified");
    assert_eq!(flow.attempt(&id).await["status"], "completed");
    flow.stop().await;
}

#[tokio::test]
async fn throttling_during_authorize_leaves_the_status_alone() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    flow.authorize(&id).await;
    flow.switch(|s| s.max_connections_per_mailbox = 0);
    flow.authorize(&id).await;
    assert_eq!(flow.attempt(&id).await["status"], "completed");
    assert_eq!(flow.mailbox(&id).await["status"], "verified");
    flow.stop().await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_configuration_fault_not_a_delay() {
    let flow = Flow::start().await;
    // A custom server that presents a certificate Herald has no reason to trust.
    let body = json!({
        "name": "Custom", "auth": "basic", "provider": "custom",
        "host": flow.sandbox.smtp_addr.ip().to_string(), "port": flow.sandbox.smtp_addr.port(),
        "username": MAILBOX, "password": MAILBOX_PASSWORD,
    });
    let created: Value = flow
        .app
        .client()
        .post(flow.app.url("/api/v1/mailboxes"))
        .bearer_auth(&flow.key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mailbox = flow.verify(created["id"].as_str().unwrap()).await;
    assert_eq!(mailbox["status"], "not_verified");
    assert_eq!(mailbox["status_reason"]["code"], "smtp_connection_failed");
    assert!(
        mailbox["status_reason"]["action"]
            .as_str()
            .unwrap()
            .contains("HERALD_SMTP_CA_FILE")
    );
    flow.stop().await;
}

#[tokio::test]
async fn an_authorization_started_before_the_settings_changed_cannot_complete() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
    let changed = flow
        .app
        .client()
        .patch(flow.app.url(&format!("/api/v1/mailboxes/{id}")))
        .bearer_auth(&flow.key)
        .json(&json!({"username": "sales@contoso.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    flow.land(&redirect).await;
    let attempt = flow.attempt(&id).await;
    assert_eq!(attempt["status"], "failed");
    assert_eq!(attempt["reason"]["code"], "reauthorization_required");
    assert!(!flow.has_tokens(&id).await);
    assert_eq!(flow.sandbox.state.token_requests(), 0);
    flow.stop().await;
}

/// The provider's redirect to Herald without its `iss` parameter.
fn without_iss(location: &str) -> String {
    let mut url = url::Url::parse(location).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "iss")
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

#[tokio::test]
async fn the_issuer_is_read_from_discovery_and_a_redirect_without_iss_is_then_refused() {
    let flow = Flow::start().await;
    let id = flow.create(json!({})).await;
    // The sandbox preset names no issuer: it comes from the tenant's discovery document, which
    // also says that every redirect carries `iss`.
    let mailbox = flow.mailbox(&id).await;
    assert_eq!(mailbox["issuer"], flow.sandbox.oauth.issuer(), "{mailbox}");
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("iss="), "{location}");
    flow.land_at(&without_iss(&location)).await;
    let attempt = flow.attempt(&id).await;
    assert_eq!(attempt["reason"]["code"], "issuer_missing", "{attempt}");
    assert!(!flow.has_tokens(&id).await);
    // With its `iss`, the same provider's redirect completes.
    flow.authorize(&id).await;
    assert_eq!(flow.mailbox(&id).await["status"], "verified");
    flow.stop().await;
}

#[tokio::test]
async fn an_issuer_is_never_pinned_from_the_first_redirect_seen() {
    let flow = Flow::start().await;
    // A custom provider without an issuer: nothing says which `iss` is right.
    let id = flow
        .create(json!({
            "provider": "custom",
            "host": flow.sandbox.smtp_addr.ip().to_string(),
            "port": flow.sandbox.smtp_addr.port(),
            "authorization_url": flow.sandbox.oauth.authorization_endpoint(),
            "token_url": flow.sandbox.oauth.token_endpoint(),
            "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access", "openid", "profile", "email"],
        }))
        .await;
    let url = flow.authorize_url(&id).await;
    let redirect = sandbox_consent(&url, MAILBOX, MAILBOX_PASSWORD, "accept").await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let mut forged = url::Url::parse(&without_iss(&location)).unwrap();
    forged
        .query_pairs_mut()
        .append_pair("iss", "https://evil.example/v2.0");
    flow.land_at(forged.as_str()).await;
    let mailbox = flow.mailbox(&id).await;
    assert!(
        mailbox["issuer"].is_null(),
        "a redirect's iss pins nothing: {mailbox}"
    );
    // So the real provider is not locked out by what a forged first redirect said.
    flow.authorize(&id).await;
    let attempt = flow.attempt(&id).await;
    assert_ne!(attempt["reason"]["code"], "issuer_mismatch", "{attempt}");
    assert!(flow.has_tokens(&id).await);
    flow.stop().await;
}
