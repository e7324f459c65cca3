//! Device code (RFC 8628) against the sandbox: the API starts it, a person enters the code at
//! the sandbox's `/devicelogin`, signs in and accepts (or declines, or never comes), and Herald
//! polls at the provider's interval, five seconds longer after a `slow_down`, until the mailbox
//! is Verified or the attempt fails with its reason. Herald and the sandbox share a simulated
//! clock, so the polls' spacing is read from the sandbox's timestamps without waiting for it;
//! the command line runs on the real clock with a one-second interval.

use std::sync::Arc;

use herald::sandbox::{RunningSandbox, SandboxClient, Switches};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, eventually, hidden_field, http_builder, problem, spawn_app_with_sandbox,
    spawn_sandboxed_sharing,
};

const MAILBOX: &str = "support@contoso.com";
const MAILBOX_PASSWORD: &str = "support's sandbox password";

struct Device {
    app: TestApp,
    sandbox: RunningSandbox,
    registration: SandboxClient,
    key: String,
    id: String,
}

impl Device {
    /// Herald and the sandbox on one simulated clock, and a sandbox mailbox.
    async fn start() -> Self {
        let clock = Arc::new(herald::clock::ManualClock::starting_at(
            herald::clock::system_now(),
        ));
        let (app, sandbox) = spawn_sandboxed_sharing(clock).await;
        Self::with(app, sandbox).await
    }

    async fn with(app: TestApp, sandbox: RunningSandbox) -> Self {
        sandbox
            .state
            .add_user(MAILBOX, SecretString::from(MAILBOX_PASSWORD));
        let registration = sandbox
            .state
            .register_client("Herald", vec![app.state.access.config.redirect_uri()]);
        let org = app.org("Contoso").await;
        let key = app.key(org, "admin").await;
        let created: Value = app
            .client()
            .post(app.url("/api/v1/mailboxes"))
            .bearer_auth(&key)
            .json(&json!({
                "name": "Support",
                "auth": "oauth2",
                "provider": "sandbox",
                "username": MAILBOX,
                "client_id": registration.client_id,
                "client_secret": registration.secret.expose_secret(),
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"].as_str().expect("a mailbox").to_owned();
        Self {
            app,
            sandbox,
            registration,
            key,
            id,
        }
    }

    fn switch(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.sandbox.state.switches();
        change(&mut switches);
        self.sandbox.state.set_switches(switches);
    }

    async fn start_device(&self) -> reqwest::Response {
        self.app
            .client()
            .post(
                self.app
                    .url(&format!("/api/v1/mailboxes/{}/authorize/device", self.id)),
            )
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        self.app
            .client()
            .get(self.app.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn attempt(&self) -> Value {
        self.get(&format!("/api/v1/mailboxes/{}/authorization", self.id))
            .await
    }

    async fn mailbox(&self) -> Value {
        self.get(&format!("/api/v1/mailboxes/{}", self.id)).await
    }

    /// Waits until the attempt is no longer pending, and answers it.
    async fn outcome(&self) -> Value {
        eventually("the device attempt to end", || async {
            self.attempt().await["status"] != "pending"
        })
        .await;
        self.attempt().await
    }

    async fn stop(self) {
        self.app.stop().await;
    }
}

/// A person at the verification page: enters the code, signs in as the mailbox and answers
/// the consent page with `decision`. Answers the last page's text.
async fn enter_code(verification_uri: &str, user_code: &str, decision: &str) -> String {
    let browser = http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser.get(verification_uri).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Enter code"));
    let sign_in = browser
        .post(verification_uri)
        .form(&[("otc", user_code.to_lowercase())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        sign_in.contains("Sign in") && sign_in.contains("Herald"),
        "{sign_in}"
    );
    let txn = hidden_field(&sign_in, "txn");
    let base = url::Url::parse(verification_uri).unwrap();
    let consent = browser
        .post(base.join("/sandbox/login").unwrap())
        .form(&[
            ("txn", txn.as_str()),
            ("username", MAILBOX),
            ("password", MAILBOX_PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(consent.contains("Permissions requested"), "{consent}");
    browser
        .post(base.join("/sandbox/consent").unwrap())
        .form(&[("txn", txn.as_str()), ("decision", decision)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The seconds between the sandbox's polls, by its clock.
fn gaps(sandbox: &RunningSandbox) -> Vec<i64> {
    sandbox
        .state
        .device_polls()
        .windows(2)
        .map(|w| (w[1] - w[0]).whole_seconds())
        .collect()
}

#[tokio::test]
async fn a_device_code_entered_and_accepted_verifies_the_mailbox_at_the_provider_s_interval() {
    let flow = Device::start().await;
    // Polls move the shared clock by their interval: room for the person to take their time.
    flow.switch(|s| s.device_code_lifetime_secs = 36_000);
    let response = flow.start_device().await;
    assert_eq!(response.status(), 200);
    let started: Value = response.json().await.unwrap();
    let user_code = started["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9, "{started}");
    let verification_uri = started["verification_uri"].as_str().unwrap();
    assert_eq!(
        verification_uri,
        format!("{}/devicelogin", flow.sandbox.oauth.base_url)
    );
    assert_eq!(started["interval"], 5);
    assert!(
        started["message"].as_str().unwrap().contains(user_code),
        "{started}"
    );
    assert!(started["expires_at"].is_string());
    let attempt = flow.attempt().await;
    assert_eq!(attempt["id"], started["attempt_id"]);
    assert_eq!(attempt["status"], "pending");

    let done = enter_code(verification_uri, user_code, "accept").await;
    assert!(done.contains("You may now close this window"), "{done}");
    let attempt = flow.outcome().await;
    assert_eq!(attempt["status"], "completed", "{attempt}");
    let mailbox = flow.mailbox().await;
    assert_eq!(mailbox["status"], "verified", "{mailbox}");

    let gaps = gaps(&flow.sandbox);
    assert!(!gaps.is_empty(), "Herald polled more than once");
    assert!(
        gaps.iter().all(|g| (5..10).contains(g)),
        "every poll waits the interval, and no more: {gaps:?}"
    );
    // The code is spent: the poller stopped at the tokens.
    let polls = flow.sandbox.state.device_polls().len();
    let sent = flow
        .app
        .client()
        .post(
            flow.app
                .url(&format!("/api/v1/mailboxes/{}/test-message", flow.id)),
        )
        .bearer_auth(&flow.key)
        .json(&json!({"to": "bob@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 200, "{}", sent.text().await.unwrap());
    let messages = flow.sandbox.state.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].user, MAILBOX);
    assert_eq!(flow.sandbox.state.device_polls().len(), polls);
    flow.stop().await;
}

#[tokio::test]
async fn slow_down_makes_herald_wait_five_seconds_more_from_then_on() {
    let flow = Device::start().await;
    flow.switch(|s| {
        s.device_code_lifetime_secs = 36_000;
        s.device_slow_down = 1;
    });
    let started: Value = flow.start_device().await.json().await.unwrap();
    // A few polls after the slow_down before the person comes.
    crate::helpers::sandbox_until(&flow.sandbox.state, "three polls", |s| {
        s.device_polls().len() >= 3
    })
    .await;
    enter_code(
        started["verification_uri"].as_str().unwrap(),
        started["user_code"].as_str().unwrap(),
        "accept",
    )
    .await;
    assert_eq!(flow.outcome().await["status"], "completed");
    let gaps = gaps(&flow.sandbox);
    assert!(
        gaps.len() >= 2 && gaps.iter().all(|g| (10..15).contains(g)),
        "the first poll was answered slow_down: 5 + 5 seconds from then on: {gaps:?}"
    );
    flow.stop().await;
}

#[tokio::test]
async fn a_declined_device_code_fails_as_device_code_declined() {
    let flow = Device::start().await;
    flow.switch(|s| s.device_code_lifetime_secs = 36_000);
    let started: Value = flow.start_device().await.json().await.unwrap();
    let done = enter_code(
        started["verification_uri"].as_str().unwrap(),
        started["user_code"].as_str().unwrap(),
        "cancel",
    )
    .await;
    assert!(done.contains("declined"), "{done}");
    let attempt = flow.outcome().await;
    assert_eq!(attempt["status"], "failed");
    assert_eq!(attempt["reason"]["code"], "device_code_declined");
    // The attempt ends a moment before the mailbox's status is written (see the note on
    // services::device's order).
    eventually("the mailbox to turn Not Verified", || async {
        flow.mailbox().await["status"] == "not_verified"
    })
    .await;
    let mailbox = flow.mailbox().await;
    assert_eq!(mailbox["status"], "not_verified");
    assert_eq!(mailbox["status_reason"]["code"], "device_code_declined");
    assert!(
        mailbox["status_reason"]["message"]
            .as_str()
            .unwrap()
            .contains("declined")
    );
    flow.stop().await;
}

#[tokio::test]
async fn a_device_code_nobody_enters_expires_as_device_code_expired() {
    let flow = Device::start().await;
    flow.switch(|s| s.device_code_lifetime_secs = 30);
    let started: Value = flow.start_device().await.json().await.unwrap();
    let attempt = flow.outcome().await;
    assert_eq!(attempt["status"], "failed", "{attempt}");
    assert_eq!(attempt["reason"]["code"], "device_code_expired");
    // The provider said so after its 30 seconds, polled every 5.
    let polls = flow.sandbox.state.device_polls().len();
    assert!((6..=8).contains(&polls), "{polls} polls");
    // The code is gone: the page refuses it.
    let browser = http_builder().build().unwrap();
    let page = browser
        .post(started["verification_uri"].as_str().unwrap())
        .form(&[("otc", started["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Check the code and try again"), "{page}");
    assert_eq!(
        flow.mailbox().await["status_reason"]["code"],
        "device_code_expired"
    );
    flow.stop().await;
}

#[tokio::test]
async fn a_provider_without_device_codes_is_refused_with_422() {
    let (app, sandbox) = spawn_app_with_sandbox().await;
    let flow = Device::with(app, sandbox).await;
    let org = flow.app.org("Fabrikam").await;
    let key = flow.app.key(org, "admin").await;
    let created: Value = flow
        .app
        .client()
        .post(flow.app.url("/api/v1/mailboxes"))
        .bearer_auth(&key)
        .json(&json!({
            "name": "Elsewhere",
            "auth": "oauth2",
            "provider": "custom",
            "host": "smtp.example.org",
            "authorization_url": "https://login.example.org/authorize",
            "token_url": "https://login.example.org/token",
            "username": "someone@example.org",
            "client_id": "client",
            "client_secret": "a secret value",
            "scopes": ["mail", "offline_access"],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = flow
        .app
        .client()
        .post(flow.app.url(&format!(
            "/api/v1/mailboxes/{}/authorize/device",
            created["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let body = problem(response, 422, "device_code_unsupported").await;
    assert!(
        body["detail"].as_str().unwrap().contains("no device code"),
        "{body}"
    );
    // Nobody asked the provider anything, and no attempt was recorded.
    assert!(flow.sandbox.state.device_polls().is_empty());
    let _ = &flow.registration;
    flow.stop().await;
}

/// Runs `herald` against the test's database and data directory.
fn herald_cli(flow: &Device, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
    let ca = flow.app.state.access.config.data_dir.join("sandbox-ca.pem");
    std::fs::write(&ca, flow.sandbox.ca.ca_pem()).unwrap();
    cmd.args(args)
        .env("HERALD_DATA_DIR", &flow.app.state.access.config.data_dir)
        .env("HERALD_DATABASE_URL", flow.app.db.url())
        .env("HERALD_DEV", "true")
        .env("HERALD_SMTP_CA_FILE", &ca)
        .env("HERALD_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `herald mailbox authorize Support --device`, and answers the code and page it printed
/// with the running command.
async fn cli_device(flow: &Device) -> (String, String, tokio::process::Child) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = herald_cli(flow, &["mailbox", "authorize", "Support", "--device"])
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut code, mut page) = (String::new(), String::new());
    crate::helpers::within("the command to print the code", async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(c) = line.strip_prefix("Code: ") {
                code = c.to_owned();
            } else if let Some(p) = line.strip_prefix("Page: ") {
                page = p.to_owned();
            } else if line.starts_with("Waiting") {
                break;
            }
        }
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (code, page, child)
}

#[tokio::test]
async fn herald_mailbox_authorize_device_waits_for_the_person_and_exits_by_the_outcome() {
    let (app, sandbox) = spawn_app_with_sandbox().await;
    let flow = Device::with(app, sandbox).await;
    flow.switch(|s| s.device_interval_secs = 1);

    let (code, page, child) = cli_device(&flow).await;
    assert_eq!(code.len(), 9);
    enter_code(&page, &code, "accept").await;
    let out = crate::helpers::within("the command to end", child.wait_with_output())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(flow.mailbox().await["status"], "verified");

    let (code, page, child) = cli_device(&flow).await;
    enter_code(&page, &code, "cancel").await;
    let out = crate::helpers::within("the command to end", child.wait_with_output())
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not authorized, failed (device_code_declined)"),
        "{stderr}"
    );
    // A Verified mailbox keeps its tokens when a new authorization is declined.
    assert_eq!(flow.mailbox().await["status"], "verified");

    let out = herald_cli(&flow, &["mailbox", "authorize", "nope", "--device"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no mailbox is called or has the id `nope`")
    );
    flow.stop().await;
}

#[tokio::test]
async fn the_authorize_window_offers_a_code_instead() {
    let (app, sandbox) = spawn_app_with_sandbox().await;
    let flow = Device::with(app, sandbox).await;
    let org = flow.app.org("Fabrikam").await;
    flow.app.user(org, "admin@fabrikam.example", "admin").await;
    let (browser, _) = flow.app.signed_in("admin@fabrikam.example").await;
    let (status, html) =
        crate::helpers::page(&browser, &flow.app, "/settings/system/outgoing-mail").await;
    assert_eq!(status, 200);
    assert!(
        html.contains(r##"<a href="#" id="authorize-device-link">Use a code instead</a>"##),
        "{html}"
    );
    let script = browser
        .get(flow.app.url("/static/outgoing-mail.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(script.contains("/authorize/device") && script.contains("/authorization"));
    flow.stop().await;
}
