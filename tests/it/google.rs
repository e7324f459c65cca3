//! Google done properly, against the sandbox's Google mode: a mailbox with the `google`
//! provider whose endpoints and server are the sandbox's (given as custom URLs, the sandbox's
//! CA trusted with `HERALD_SMTP_CA_FILE`) is authorized, verified and delivers; its refresh
//! token never rotates; each of Google's refusals becomes its reason; Gmail's daily limit keeps
//! the mail; and a service account with domain-wide delegation gets a user's token.

use std::sync::Arc;

use herald::clock::{Clock as _, ManualClock};
use herald::sandbox::{RunningSandbox, SandboxClient, Switches};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, sandbox_consent, spawn_beside};

const ANN: &str = "ann@example.org";
const BOB: &str = "bob@example.org";
const PASSWORD: &str = "a Google password";

struct Google {
    app: TestApp,
    sandbox: RunningSandbox,
    clock: Arc<ManualClock>,
    client: SandboxClient,
    key: String,
    _ca: tempfile::TempDir,
}

impl Google {
    async fn start() -> Self {
        let clock = Arc::new(ManualClock::starting_at(herald::clock::system_now()));
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://localhost:{}", http.local_addr().unwrap().port());
        let sandbox = RunningSandbox::start_with_clock(http, smtp, &base, clock.clone())
            .await
            .unwrap();
        let ca = tempfile::tempdir().unwrap();
        let ca_file = ca.path().join("sandbox-ca.pem");
        std::fs::write(&ca_file, sandbox.ca.ca_pem()).unwrap();
        let app = spawn_beside(&sandbox, |env| {
            env.insert("HERALD_SMTP_CA_FILE".into(), ca_file.display().to_string());
        })
        .await;
        for user in [ANN, BOB] {
            sandbox
                .state
                .add_google_user(user, SecretString::from(PASSWORD));
        }
        let client = sandbox
            .state
            .register_google_client("Herald", vec![app.state.access.config.redirect_uri()]);
        let org = app.org("Example").await;
        let key = app.key(org, "admin").await;
        Self {
            app,
            sandbox,
            clock,
            client,
            key,
            _ca: ca,
        }
    }

    fn switch(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.sandbox.state.switches();
        change(&mut switches);
        self.sandbox.state.set_switches(switches);
    }

    /// A `google` mailbox for Ann whose endpoints and server are the sandbox's Google mode.
    async fn create(&self, extra: Value) -> String {
        let google = self.sandbox.google();
        let mut body = json!({
            "name": "Ann",
            "auth": "oauth2",
            "provider": "google",
            "username": ANN,
            "client_id": self.client.client_id,
            "client_secret": self.client.secret.expose_secret(),
            "authorization_url": google.authorization_endpoint(),
            "token_url": google.token_endpoint(),
            "issuer": google.issuer(),
            "host": self.sandbox.smtp_addr.ip().to_string(),
            "port": self.sandbox.smtp_addr.port(),
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = self
            .call(reqwest::Method::POST, "/api/v1/mailboxes", Some(body))
            .await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .app
            .client()
            .request(method, self.app.url(path))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None)
            .await
            .json()
            .await
            .unwrap()
    }

    async fn authorization_url(&self, id: &str) -> String {
        let started: Value = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/mailboxes/{id}/authorize"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        started["authorization_url"].as_str().unwrap().to_owned()
    }

    /// Authorizes the mailbox, signing in as `user` and answering consent with `decision`;
    /// answers the attempt.
    async fn authorize_as(&self, id: &str, user: &str, decision: &str) -> Value {
        let url = self.authorization_url(id).await;
        let redirect = sandbox_consent(&url, user, PASSWORD, decision).await;
        let location = redirect.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            location.starts_with(&self.app.state.access.config.redirect_uri()),
            "{location}"
        );
        let landed = self.app.client().get(&location).send().await.unwrap();
        assert_eq!(landed.status(), 303);
        self.get(&format!("/api/v1/mailboxes/{id}/authorization"))
            .await
    }

    async fn mailbox(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/mailboxes/{id}")).await
    }

    async fn verify(&self, id: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/verify"),
            None,
        )
        .await;
        self.mailbox(id).await
    }

    async fn test_message(&self, id: &str) -> reqwest::Response {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/test-message"),
            Some(json!({"to": "someone@example.com"})),
        )
        .await
    }
}

#[tokio::test]
async fn a_google_mailbox_is_authorized_verified_and_delivers_through_gmail_s_manners() {
    let g = Google::start().await;
    let id = g.create(json!({})).await;
    let mailbox = g.mailbox(&id).await;
    assert_eq!(
        mailbox["scopes"],
        json!(["https://mail.google.com/", "openid", "email"])
    );
    let url = g.authorization_url(&id).await;
    assert!(url.starts_with(&g.sandbox.google().authorization_endpoint()));
    assert!(url.contains("access_type=offline") && url.contains("prompt=consent"));

    let attempt = g.authorize_as(&id, ANN, "accept").await;
    assert_eq!(attempt["status"], "completed", "{attempt}");
    assert_eq!(g.mailbox(&id).await["status"], "verified");
    assert_eq!(g.sandbox.state.google_refresh_tokens_issued(), 1);

    let sent = g.test_message(&id).await;
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    let messages = g.sandbox.state.messages();
    let last = messages.last().expect("a message in the sandbox");
    assert_eq!(
        (last.user.as_str(), last.mechanism),
        (ANN, "XOAUTH2"),
        "sent as Ann with her token"
    );
}

#[tokio::test]
async fn a_refresh_keeps_google_s_refresh_token_which_never_rotates() {
    let g = Google::start().await;
    // Tokens that live a minute: Herald refreshes before every use.
    g.switch(|s| s.access_token_lifetime_secs = 60);
    let id = g.create(json!({})).await;
    assert_eq!(
        g.authorize_as(&id, ANN, "accept").await["status"],
        "completed"
    );
    for _ in 0..2 {
        let sent = g.test_message(&id).await;
        assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    }
    assert!(
        g.sandbox.state.google_refreshes() >= 2,
        "each send refreshed"
    );
    assert_eq!(
        g.sandbox.state.google_refresh_tokens_issued(),
        1,
        "one refresh token, used again and again"
    );
    assert_eq!(g.mailbox(&id).await["status"], "verified");
}

#[tokio::test]
async fn signing_in_as_another_google_account_is_the_wrong_account() {
    let g = Google::start().await;
    let id = g.create(json!({})).await;
    let attempt = g.authorize_as(&id, BOB, "accept").await;
    assert_eq!(attempt["status"], "failed", "{attempt}");
    let mailbox = g.mailbox(&id).await;
    assert_eq!(
        mailbox["status_reason"]["code"], "wrong_account",
        "the ID token names Bob: {mailbox}"
    );
}

#[tokio::test]
async fn cancelling_at_google_s_consent_is_declined_consent() {
    let g = Google::start().await;
    let id = g.create(json!({})).await;
    let attempt = g.authorize_as(&id, ANN, "cancel").await;
    assert_eq!(attempt["status"], "failed");
    let reason = &g.mailbox(&id).await["status_reason"];
    assert_eq!(reason["code"], "consent_declined", "{reason}");
    assert!(reason["action"].as_str().unwrap().contains("Allow"));
}

#[tokio::test]
async fn an_admin_policy_makes_the_mailbox_say_so() {
    let g = Google::start().await;
    g.switch(|s| s.access_token_lifetime_secs = 60);
    let id = g.create(json!({})).await;
    g.authorize_as(&id, ANN, "accept").await;
    g.switch(|s| s.google_admin_policy_enforced = true);
    let mailbox = g.verify(&id).await;
    assert_eq!(mailbox["status"], "not_verified");
    let reason = &mailbox["status_reason"];
    assert_eq!(reason["code"], "admin_policy_enforced", "{reason}");
    assert!(reason["action"].as_str().unwrap().contains("API controls"));
}

#[tokio::test]
async fn a_testing_app_s_refresh_token_dies_after_seven_days() {
    let g = Google::start().await;
    g.switch(|s| s.google_testing_status = true);
    let id = g.create(json!({})).await;
    g.authorize_as(&id, ANN, "accept").await;
    // Six days on, Gmail refuses the hour-old token with its 334 challenge; the refresh works.
    g.clock.advance(time::Duration::days(6));
    let sent = g.test_message(&id).await;
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    assert_eq!(g.sandbox.state.google_refreshes(), 1);
    // Eight days on, the refresh token is expired.
    g.clock.advance(time::Duration::days(2));
    let refused = g.test_message(&id).await;
    assert_eq!(refused.status(), 502);
    let reason = &g.mailbox(&id).await["status_reason"];
    assert_eq!(reason["code"], "refresh_token_expired", "{reason}");
    assert!(reason["message"].as_str().unwrap().contains("7 days"));
}

#[tokio::test]
async fn an_internal_app_shows_google_s_org_internal_page_to_outsiders() {
    let g = Google::start().await;
    g.switch(|s| {
        s.google_org_internal = true;
        s.google_org_domain = "contoso.com".into();
    });
    let id = g.create(json!({})).await;
    let url = g.authorization_url(&id).await;
    let browser = crate::helpers::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = browser
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let txn = crate::helpers::hidden_field(&html, "txn");
    let page = browser
        .post(format!("{}/google/login", g.sandbox.google().base_url))
        .form(&[
            ("txn", txn.as_str()),
            ("username", ANN),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 403);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Error 403: org_internal")
    );
}

#[tokio::test]
async fn gmail_s_daily_limit_keeps_the_mail_queued_and_the_mailbox_verified() {
    let g = Google::start().await;
    g.switch(|s| s.google_messages_per_day = 2);
    let id = g.create(json!({})).await;
    g.authorize_as(&id, ANN, "accept").await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let accepted = g
            .call(
                reqwest::Method::POST,
                "/api/v1/messages",
                Some(json!({"mailbox": id, "to": ["someone@example.com"], "subject": format!("n{n}"), "text": "hi"})),
            )
            .await;
        assert_eq!(accepted.status(), 202);
        ids.push(
            accepted.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let waiting = std::sync::Mutex::new(Value::Null);
    eventually("two sent and one refused with 550 5.4.5", || async {
        let mut sent = 0;
        for m in &ids {
            let message = g.get(&format!("/api/v1/messages/{m}")).await;
            match message["status"].as_str() {
                Some("sent") => sent += 1,
                _ if message["last_reply"]["enhanced"] == "5.4.5" => {
                    *waiting.lock().unwrap() = message;
                }
                _ => {}
            }
        }
        sent == 2 && !waiting.lock().unwrap().is_null()
    })
    .await;
    let waiting = waiting.into_inner().unwrap();
    assert_eq!(waiting["status"], "queued", "the mail waits: {waiting}");
    assert_eq!(g.sandbox.state.messages().len(), 2);
    assert_eq!(g.mailbox(&id).await["status"], "verified");
}

#[tokio::test]
async fn a_gmail_password_refused_says_to_use_an_app_password() {
    let g = Google::start().await;
    let response = g
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(json!({
                "name": "Ann (password)", "auth": "basic", "provider": "google", "username": ANN,
                "password": "not her password",
                "host": g.sandbox.smtp_addr.ip().to_string(), "port": g.sandbox.smtp_addr.port(),
            })),
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reason = &g.verify(&id).await["status_reason"];
    assert_eq!(reason["code"], "basic_auth_rejected", "{reason}");
    assert!(reason["message"].as_str().unwrap().contains("5.7.8"));
    assert!(reason["action"].as_str().unwrap().contains("App password"));
}

#[tokio::test]
async fn a_password_mailbox_on_smtp_gmail_com_gets_google_s_limits() {
    let g = Google::start().await;
    let response = g
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(json!({
                "name": "Gmail", "auth": "basic", "username": ANN, "password": "app password",
                "host": "smtp.gmail.com", "port": 587,
            })),
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let mailbox: Value = response.json().await.unwrap();
    assert_eq!(mailbox["provider"], "custom");
    assert_eq!(mailbox["effective_limits"]["messages_per_day"], 2_000);
    assert_eq!(mailbox["effective_limits"]["recipients_per_message"], 100);
}

#[tokio::test]
async fn a_service_account_with_domain_wide_delegation_sends_as_the_mailbox() {
    let g = Google::start().await;
    let key = g.sandbox.google().create_service_account("herald");
    let client_id = serde_json::from_str::<Value>(&key).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = g
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(json!({
                "name": "Ann (service account)", "auth": "oauth2", "provider": "google",
                "credential": "app", "username": ANN, "service_account_key": key,
                "host": g.sandbox.smtp_addr.ip().to_string(), "port": g.sandbox.smtp_addr.port(),
            })),
        )
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let mailbox: Value = response.json().await.unwrap();
    assert_eq!(mailbox["client_id"], client_id.as_str());
    assert_eq!(
        mailbox["token_url"],
        g.sandbox.google().token_endpoint().as_str()
    );
    assert_eq!(mailbox["scopes"], json!(["https://mail.google.com/"]));
    assert_eq!(mailbox["has_client_secret"], true);
    assert!(!mailbox.to_string().contains("PRIVATE KEY"));
    let id = mailbox["id"].as_str().unwrap().to_owned();

    // No domain-wide delegation yet: Google's unauthorized_client, in words.
    let refused = g.verify(&id).await;
    assert_eq!(refused["status"], "not_verified");
    let reason = &refused["status_reason"];
    assert_eq!(reason["code"], "delegation_not_granted", "{reason}");
    assert!(
        reason["action"]
            .as_str()
            .unwrap()
            .contains("Manage Domain Wide Delegation")
    );

    g.sandbox
        .state
        .grant_domain_wide_delegation(&client_id, &["https://mail.google.com/"]);
    assert_eq!(g.verify(&id).await["status"], "verified");
    let sent = g.test_message(&id).await;
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    let last = g.sandbox.state.messages().pop().unwrap();
    assert_eq!((last.user.as_str(), last.mechanism), (ANN, "XOAUTH2"));
}

#[tokio::test]
async fn an_oauth_client_s_json_is_refused_as_a_service_account_key() {
    let g = Google::start().await;
    let response = g
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(json!({
                "name": "Wrong file", "auth": "oauth2", "provider": "google", "credential": "app",
                "username": ANN,
                "service_account_key": r#"{"web": {"client_id": "1-x.apps.googleusercontent.com"}}"#,
            })),
        )
        .await;
    let body = crate::helpers::problem(response, 422, "validation_failed").await;
    assert!(body.to_string().contains("service_account_key"), "{body}");
}

/// Signs in at the Google mode's pages as Ann and answers the code of the redirect.
async fn code_for(g: &Google, client: &SandboxClient, extra: &str) -> String {
    let google = g.sandbox.google();
    let url = format!(
        "{}?client_id={}&redirect_uri=http://localhost/cb&response_type=code&scope=https://mail.google.com/%20openid%20email{extra}",
        google.authorization_endpoint(),
        client.client_id
    );
    let redirect = sandbox_consent(&url, ANN, PASSWORD, "accept").await;
    let location = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let pairs: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs["iss"], google.issuer());
    pairs["code"].clone()
}

async fn token_request(g: &Google, client: &SandboxClient, form: &[(&str, &str)]) -> (u16, Value) {
    let mut form = form.to_vec();
    form.push(("client_id", &client.client_id));
    form.push(("client_secret", client.secret.expose_secret()));
    let response = crate::helpers::http_builder()
        .build()
        .unwrap()
        .post(g.sandbox.google().token_endpoint())
        .form(&form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_google_mode_gives_a_refresh_token_only_offline_and_never_rotates_it() {
    let g = Google::start().await;
    let client = g
        .sandbox
        .state
        .register_google_client("Raw", vec!["http://localhost/cb".into()]);
    let redeem = |code: String| {
        let g = &g;
        let client = &client;
        async move {
            token_request(
                g,
                client,
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", "http://localhost/cb"),
                ],
            )
            .await
        }
    };
    // Online: no refresh token, even at the first consent.
    let (status, online) = redeem(code_for(&g, &client, "").await).await;
    assert_eq!(status, 200);
    assert!(online.get("refresh_token").is_none(), "{online}");
    assert!(online["id_token"].is_string());
    // Offline after consent was given once: none without prompt=consent.
    let (_, again) = redeem(code_for(&g, &client, "&access_type=offline").await).await;
    assert!(again.get("refresh_token").is_none(), "{again}");
    let (_, offline) =
        redeem(code_for(&g, &client, "&access_type=offline&prompt=consent").await).await;
    let refresh_token = offline["refresh_token"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, refreshed) = token_request(
            &g,
            &client,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
            ],
        )
        .await;
        assert_eq!(status, 200, "{refreshed}");
        assert!(refreshed.get("refresh_token").is_none(), "no rotation");
        assert!(refreshed["access_token"].is_string());
    }
}

#[tokio::test]
async fn the_google_mode_answers_google_s_error_shapes() {
    let g = Google::start().await;
    let client = g
        .sandbox
        .state
        .register_google_client("Raw", vec!["http://localhost/cb".into()]);
    let (status, body) = token_request(
        &g,
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "1//0nope"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_grant", "error_description": "Bad Request"})
    );
    let stranger = SandboxClient {
        client_id: "0-unknown.apps.googleusercontent.com".into(),
        ..client.clone()
    };
    let (status, body) = token_request(&g, &stranger, &[("grant_type", "refresh_token")]).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": "invalid_client", "error_description": "The OAuth client was not found."})
    );
    let discovery: Value = crate::helpers::http_builder()
        .build()
        .unwrap()
        .get(format!(
            "{}/.well-known/openid-configuration",
            g.sandbox.google().issuer()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], g.sandbox.google().issuer());
    assert_eq!(
        discovery["token_endpoint"],
        g.sandbox.google().token_endpoint()
    );
}

#[tokio::test]
async fn the_google_mode_checks_a_service_account_s_grant() {
    let g = Google::start().await;
    let google = g.sandbox.google();
    let key_json = google.create_service_account("herald");
    let key: Value = serde_json::from_str(&key_json).unwrap();
    g.sandbox.state.grant_domain_wide_delegation(
        key["client_id"].as_str().unwrap(),
        &["https://mail.google.com/"],
    );
    // The same account's name with another account's private key.
    let other: Value = serde_json::from_str(&google.create_service_account("other")).unwrap();
    let mut forged = key.clone();
    forged["private_key"] = other["private_key"].clone();
    let grant = |json: &Value, sub: &str| {
        let key = herald::oauth::service_account::ServiceAccountKey::parse(&SecretString::from(
            json.to_string(),
        ))
        .unwrap();
        key.assertion(
            sub,
            &["https://mail.google.com/".into()],
            &google.token_endpoint(),
            g.clock.now(),
        )
        .unwrap()
    };
    let (status, body) = jwt_grant(&google.token_endpoint(), grant(&forged, ANN)).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Invalid JWT Signature."))
    );
    let (status, body) =
        jwt_grant(&google.token_endpoint(), grant(&key, "nobody@example.org")).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Invalid email or User ID"))
    );
    let (status, body) = jwt_grant(&google.token_endpoint(), grant(&key, ANN)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none() && body["access_token"].is_string());
}

async fn jwt_grant(token_endpoint: &str, assertion: SecretString) -> (u16, Value) {
    let response = crate::helpers::http_builder()
        .build()
        .unwrap()
        .post(token_endpoint)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.expose_secret()),
        ])
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json::<Value>().await.unwrap(),
    )
}
