//! The sandbox's Microsoft Graph `sendMail`, driven over real HTTP with reqwest: both body
//! forms, Bcc handling, the token and permission checks, and each failure in Graph's shape.

use base64::Engine as _;
use herald::sandbox::{
    GRAPH_MAIL_SEND_SCOPE, GRAPH_MAIL_SEND_SHARED_SCOPE, RunningSandbox, SMTP_SEND_SCOPE,
    SandboxClient, Switches,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::hidden_field;

const ANN: &str = "ann@contoso.com";
const ANN_PASSWORD: &str = "ann's sandbox password";
const SHARED: &str = "sales@contoso.com";
const REDIRECT: &str = "http://127.0.0.1:8080/web/um/graph/redirect";

struct Fixture {
    sandbox: RunningSandbox,
    app: SandboxClient,
    base: String,
    http: reqwest::Client,
}

impl Fixture {
    async fn start() -> Self {
        let (sandbox, base) = crate::helpers::start_sandbox().await;
        sandbox
            .state
            .add_user(ANN, SecretString::from(ANN_PASSWORD));
        let app = sandbox
            .state
            .register_client("Herald", vec![REDIRECT.into()]);
        let http = crate::helpers::http_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            sandbox,
            app,
            base,
            http,
        }
    }

    /// A token straight from the sandbox's state, as the SMTP tests get theirs.
    fn token(&self, user: &str, scopes: &[&str]) -> String {
        let (token, _) = self.sandbox.state.issue_access_token(
            user,
            &self.app.client_id,
            scopes.iter().map(|s| s.to_string()).collect(),
            self.sandbox.state.now(),
        );
        token.expose_secret().to_owned()
    }

    fn switch(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.sandbox.state.switches();
        change(&mut switches);
        self.sandbox.state.set_switches(switches);
    }

    fn url(&self, mailbox: &str) -> String {
        format!("{}/v1.0/users/{mailbox}/sendMail", self.base)
    }

    async fn send_mime(&self, url: &str, token: &str, mime: &str) -> reqwest::Response {
        self.http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body(base64::engine::general_purpose::STANDARD.encode(mime))
            .send()
            .await
            .unwrap()
    }
}

fn mime(from: &str) -> String {
    format!(
        "From: Ann <{from}>\r\nTo: bob@example.com\r\nCc: Carol <carol@example.com>\r\nBcc: dave@example.com,\r\n erin@example.com\r\nSubject: Hello\r\n\r\nHi Bob\r\n"
    )
}

/// Asserts Graph's error shape and returns the code.
async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    let inner = &error["innerError"];
    let date = inner["date"].as_str().unwrap();
    assert_eq!(date.len(), "2026-12-06T12:00:00".len(), "{date}");
    assert_eq!(&date[10..11], "T");
    for id in ["request-id", "client-request-id"] {
        uuid::Uuid::parse_str(inner[id].as_str().unwrap()).unwrap();
    }
    error["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_mime_send_is_accepted_and_stored_without_its_bcc() {
    let fx = Fixture::start().await;
    let token = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE, "offline_access"]);
    let response = fx
        .send_mime(&fx.url("Ann@Contoso.com"), &token, &mime(ANN))
        .await;
    assert_eq!(response.status(), 202);
    assert!(response.headers().contains_key("request-id"));
    assert!(response.text().await.unwrap().is_empty());
    let messages = fx.sandbox.state.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.mechanism, "graph");
    assert_eq!(m.user, ANN);
    assert_eq!(m.mail_from, ANN);
    assert_eq!(
        m.rcpt_to,
        [
            "bob@example.com",
            "carol@example.com",
            "dave@example.com",
            "erin@example.com"
        ]
    );
    let raw = String::from_utf8(m.raw.clone()).unwrap();
    assert!(!raw.to_lowercase().contains("bcc"), "{raw}");
    assert!(!raw.contains("erin@example.com"), "{raw}");
    assert!(raw.contains("Subject: Hello\r\n\r\nHi Bob"), "{raw}");
    assert_eq!(fx.sandbox.state.saved_to_sent_items(&m.id), Some(true));
    assert_eq!(fx.sandbox.state.graph_requests(), 1);

    // /me is the token's user.
    let response = fx
        .send_mime(&format!("{}/v1.0/me/sendMail", fx.base), &token, &mime(ANN))
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(fx.sandbox.state.messages()[1].user, ANN);
}

#[tokio::test]
async fn a_json_send_is_composed_into_mime() {
    let fx = Fixture::start().await;
    let token = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE]);
    let body = json!({
        "message": {
            "subject": "Lunch",
            "body": {"contentType": "Text", "content": "Noon?"},
            "toRecipients": [{"emailAddress": {"address": "bob@example.com", "name": "Bob"}}],
            "ccRecipients": [{"emailAddress": {"address": "carol@example.com"}}],
            "bccRecipients": [{"emailAddress": {"address": "dave@example.com"}}],
            "replyTo": [{"emailAddress": {"address": "replies@contoso.com"}}],
            "attachments": [{
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "a.txt", "contentType": "text/plain",
                "contentBytes": base64::engine::general_purpose::STANDARD.encode("attached"),
            }],
        },
        "saveToSentItems": false,
    });
    let response = fx
        .http
        .post(fx.url(ANN))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let m = &fx.sandbox.state.messages()[0];
    assert_eq!(
        m.rcpt_to,
        ["bob@example.com", "carol@example.com", "dave@example.com"]
    );
    let raw = String::from_utf8(m.raw.clone()).unwrap();
    assert!(raw.contains("From: ann@contoso.com\r\n"), "{raw}");
    assert!(raw.contains("To: \"Bob\" <bob@example.com>\r\n"), "{raw}");
    assert!(raw.contains("Reply-To: replies@contoso.com\r\n"), "{raw}");
    assert!(raw.contains("Subject: Lunch\r\n"), "{raw}");
    assert!(!raw.contains("dave@example.com"), "{raw}");
    assert!(raw.contains("filename=\"a.txt\""), "{raw}");
    assert_eq!(fx.sandbox.state.saved_to_sent_items(&m.id), Some(false));

    let none = fx
        .http
        .post(fx.url(ANN))
        .bearer_auth(&token)
        .json(&json!({"message": {"subject": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(none, 400).await, "ErrorInvalidRecipients");
}

#[tokio::test]
async fn tokens_without_graph_scope_or_life_are_refused() {
    let fx = Fixture::start().await;
    let smtp_only = fx.token(ANN, &[SMTP_SEND_SCOPE, "offline_access"]);
    let response = fx.send_mime(&fx.url(ANN), &smtp_only, &mime(ANN)).await;
    assert_eq!(error_code(response, 403).await, "ErrorAccessDenied");

    let response = fx
        .http
        .post(fx.url(ANN))
        .header("content-type", "text/plain")
        .header("client-request-id", "6f1b8c2e-0000-4000-8000-000000000001")
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(
        response.headers()["client-request-id"],
        "6f1b8c2e-0000-4000-8000-000000000001"
    );
    assert_eq!(
        error_code(response, 401).await,
        "InvalidAuthenticationToken"
    );

    let response = fx.send_mime(&fx.url(ANN), "sbx.made-up", &mime(ANN)).await;
    assert_eq!(
        error_code(response, 401).await,
        "InvalidAuthenticationToken"
    );

    fx.switch(|s| s.access_token_lifetime_secs = 0);
    let expired = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE]);
    let response = fx.send_mime(&fx.url(ANN), &expired, &mime(ANN)).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Lifetime validation failed, the token is expired."
    );
    assert!(fx.sandbox.state.messages().is_empty());
    assert_eq!(fx.sandbox.state.graph_requests(), 4);
}

#[tokio::test]
async fn sending_from_another_mailbox_needs_its_permissions() {
    let fx = Fixture::start().await;
    let token = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE, GRAPH_MAIL_SEND_SHARED_SCOPE]);
    let response = fx.send_mime(&fx.url(SHARED), &token, &mime(SHARED)).await;
    assert_eq!(error_code(response, 403).await, "ErrorAccessDenied");

    // Full Access without Send As.
    fx.sandbox.state.grant_mailbox_access(SHARED, ANN, false);
    let response = fx.send_mime(&fx.url(SHARED), &token, &mime(SHARED)).await;
    assert_eq!(error_code(response, 403).await, "ErrorSendAsDenied");
    // From: another mailbox through /me.
    let response = fx.send_mime(&fx.url(ANN), &token, &mime(SHARED)).await;
    assert_eq!(error_code(response, 403).await, "ErrorSendAsDenied");

    fx.sandbox.state.grant_mailbox_access(SHARED, ANN, true);
    let response = fx.send_mime(&fx.url(SHARED), &token, &mime(SHARED)).await;
    assert_eq!(response.status(), 202);
    let m = &fx.sandbox.state.messages()[0];
    assert_eq!((m.user.as_str(), m.mail_from.as_str()), (SHARED, SHARED));

    // Mail.Send alone does not reach a shared mailbox.
    let own_only = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE]);
    let response = fx
        .send_mime(&fx.url(SHARED), &own_only, &mime(SHARED))
        .await;
    assert_eq!(error_code(response, 403).await, "ErrorAccessDenied");
}

#[tokio::test]
async fn unknown_and_disabled_mailboxes_get_404s() {
    let fx = Fixture::start().await;
    fx.switch(|s| {
        s.graph_unknown_users = vec![ANN.into()];
    });
    let token = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE]);
    let response = fx.send_mime(&fx.url(ANN), &token, &mime(ANN)).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ErrorInvalidUser");
    assert_eq!(
        body["error"]["message"],
        format!("The requested user '{ANN}' is invalid.")
    );
    fx.switch(|s| {
        s.graph_unknown_users.clear();
        s.graph_disabled_mailboxes = vec![ANN.into()];
    });
    let response = fx.send_mime(&fx.url(ANN), &token, &mime(ANN)).await;
    assert_eq!(
        error_code(response, 404).await,
        "MailboxNotEnabledForRESTAPI"
    );
}

#[tokio::test]
async fn bodies_over_4_mb_or_not_base64_mime_are_refused() {
    let fx = Fixture::start().await;
    let token = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE]);
    let response = fx
        .http
        .post(fx.url(ANN))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("A".repeat(4 * 1024 * 1024 + 4))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(response, 413).await, "RequestEntityTooLarge");

    let response = fx
        .http
        .post(fx.url(ANN))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("this is not base64!")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(response, 400).await,
        "ErrorMimeContentInvalidBase64String"
    );
    let response = fx
        .send_mime(&fx.url(ANN), &token, "no headers at all")
        .await;
    assert_eq!(error_code(response, 400).await, "ErrorInvalidRecipients");
    let response = fx
        .http
        .post(fx.url(ANN))
        .bearer_auth(&token)
        .header("content-type", "application/xml")
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert!(fx.sandbox.state.messages().is_empty());
}

#[tokio::test]
async fn throttling_and_outages_answer_then_recover() {
    let fx = Fixture::start().await;
    let token = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE]);
    fx.switch(|s| {
        s.graph_throttled = 2;
        s.graph_retry_after_secs = 7;
    });
    for _ in 0..2 {
        let response = fx.send_mime(&fx.url(ANN), &token, &mime(ANN)).await;
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(error_code(response, 429).await, "ApplicationThrottled");
    }
    let response = fx.send_mime(&fx.url(ANN), &token, &mime(ANN)).await;
    assert_eq!(response.status(), 202);

    fx.switch(|s| s.graph_outages = 1);
    let response = fx.send_mime(&fx.url(ANN), &token, &mime(ANN)).await;
    assert_eq!(error_code(response, 503).await, "ServiceNotAvailable");
    let response = fx.send_mime(&fx.url(ANN), &token, &mime(ANN)).await;
    assert_eq!(response.status(), 202);
    assert_eq!(fx.sandbox.state.messages().len(), 2);
}

#[tokio::test]
async fn a_fifth_concurrent_request_for_a_mailbox_gets_429() {
    use tokio::io::AsyncWriteExt as _;
    let fx = Fixture::start().await;
    let token = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE]);
    let addr = fx.sandbox.http_addr;
    // Four requests that send their headers and hold back their bodies.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1.0/users/{ANN}/sendMail HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    let state = fx.sandbox.state.clone();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        state.wait_until(|s| s.graph_requests() == 4),
    )
    .await
    .unwrap();
    // The counter moves before the slot is taken: give the handlers a moment to take theirs.
    let mut answer = None;
    for _ in 0..50 {
        let response = fx.send_mime(&fx.url(ANN), &token, &mime(ANN)).await;
        if response.status() == 429 {
            answer = Some(response);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let response = answer.expect("a 429 while four requests are in flight");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "Application is over its MailboxConcurrency limit."
    );
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        if fx
            .send_mime(&fx.url(ANN), &token, &mime(ANN))
            .await
            .status()
            == 202
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "the slots are released when the requests end");
}

#[tokio::test]
async fn the_authorize_flow_issues_a_graph_token_that_sends_and_refreshes() {
    let fx = Fixture::start().await;
    let browser = &fx.http;
    let scope = format!("{GRAPH_MAIL_SEND_SCOPE} offline_access");
    let mut url = url::Url::parse(&fx.sandbox.oauth.authorization_endpoint()).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", &fx.app.client_id)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("scope", &scope)
        .append_pair("state", "s1")
        .append_pair("login_hint", ANN);
    let page = browser.get(url.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let txn = hidden_field(&page.text().await.unwrap(), "txn");
    let consent = browser
        .post(format!("{}/sandbox/login", fx.base))
        .form(&[
            ("txn", txn.as_str()),
            ("username", ANN),
            ("password", ANN_PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(consent.contains("Send mail as you"), "{consent}");
    let redirect = browser
        .post(format!("{}/sandbox/consent", fx.base))
        .form(&[("txn", txn.as_str()), ("decision", "accept")])
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 303);
    let location = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let secret = fx.app.secret.expose_secret().to_owned();
    let token_endpoint = fx.sandbox.oauth.token_endpoint();
    let token = |form: Vec<(&'static str, String)>| {
        let mut form = form;
        form.push(("client_id", fx.app.client_id.clone()));
        form.push(("client_secret", secret.clone()));
        let endpoint = token_endpoint.clone();
        async move {
            let response = browser.post(&endpoint).form(&form).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let first = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code),
        ("redirect_uri", REDIRECT.into()),
    ])
    .await;
    assert_eq!(first["scope"], GRAPH_MAIL_SEND_SCOPE);
    let access = first["access_token"].as_str().unwrap();
    let response = fx.send_mime(&fx.url(ANN), access, &mime(ANN)).await;
    assert_eq!(response.status(), 202);

    let refreshed = token(vec![
        ("grant_type", "refresh_token".into()),
        (
            "refresh_token",
            first["refresh_token"].as_str().unwrap().into(),
        ),
    ])
    .await;
    assert_eq!(refreshed["scope"], GRAPH_MAIL_SEND_SCOPE);
    let response = fx
        .send_mime(
            &format!("{}/v1.0/me/sendMail", fx.base),
            refreshed["access_token"].as_str().unwrap(),
            &mime(ANN),
        )
        .await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn unknown_recipients_are_accepted_and_get_nothing() {
    let fx = Fixture::start().await;
    fx.switch(|s| s.unknown_recipients = vec!["bob@example.com".into()]);
    let token = fx.token(ANN, &[GRAPH_MAIL_SEND_SCOPE]);
    let response = fx.send_mime(&fx.url(ANN), &token, &mime(ANN)).await;
    assert_eq!(response.status(), 202);
    assert!(
        !fx.sandbox.state.messages()[0]
            .rcpt_to
            .contains(&"bob@example.com".to_owned())
    );
}
