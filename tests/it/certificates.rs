//! Certificate credentials (`private_key_jwt`): Herald makes a key pair and a certificate per
//! mailbox, the admin uploads the certificate to the app registration, and every token
//! request carries an assertion signed with the key — for delegated and app-only access, over
//! SMTP and Graph alike. The sandbox checks each assertion as Entra does.

use base64::Engine as _;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{eventually, sandbox_consent};
use crate::outbox::{Outbox, PASSWORD, SUPPORT};

/// How a test mailbox is set up.
#[derive(Clone, Copy, Debug)]
struct Combo {
    credential: &'static str,
    client_auth: &'static str,
    transport: &'static str,
}

impl Combo {
    fn label(&self) -> String {
        format!(
            "{}-{}-{}",
            self.credential, self.client_auth, self.transport
        )
    }
}

/// The app registration for a combination, with the grants its access needs.
fn register(o: &Outbox, combo: Combo) -> herald::sandbox::SandboxClient {
    let redirect = o.app.state.access.config.redirect_uri();
    let app = o.sandbox.state.register_client("Herald", vec![redirect]);
    if combo.credential == "app" {
        let state = &o.sandbox.state;
        if combo.transport == "graph" {
            state.grant_app_permission(&app.client_id, herald::sandbox::APP_MAIL_SEND);
        } else {
            state.grant_app_permission(&app.client_id, herald::sandbox::APP_SMTP_SEND_AS_APP);
            state.grant_app_mailbox(&app.client_id, SUPPORT);
        }
    }
    app
}

/// The mailbox's certificate as the download gives it (`.cer`, DER).
async fn download(o: &Outbox, id: &str, renewed: bool) -> Vec<u8> {
    let path = format!("/api/v1/mailboxes/{id}/certificate?renewed={renewed}");
    let response = o.call(reqwest::Method::GET, &path, &o.admin, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/pkix-cert",
        "the Azure portal's Upload certificate takes a .cer"
    );
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment; filename=\"herald-"));
    assert!(disposition.ends_with(".cer\""), "{disposition}");
    response.bytes().await.unwrap().to_vec()
}

async fn mailbox(o: &Outbox, id: &str) -> Value {
    o.admin_json(
        reqwest::Method::GET,
        &format!("/api/v1/mailboxes/{id}"),
        None,
    )
    .await
}

/// Creates the mailbox, uploads its certificate (when it has one) and authorizes or verifies
/// it, as an admin would.
async fn connect(o: &Outbox, combo: Combo) -> String {
    let app = register(o, combo);
    let mut body = json!({
        "name": combo.label(), "auth": "oauth2", "provider": "sandbox", "username": SUPPORT,
        "credential": combo.credential, "transport": combo.transport,
        "client_auth": combo.client_auth, "client_id": app.client_id,
        "reply_to": "help@contoso.com", "signature": "Contoso Support",
    });
    if combo.client_auth == "secret" {
        body["client_secret"] = json!(app.secret.expose_secret());
    }
    let created = o
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            &o.admin,
            Some(body),
        )
        .await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let shown: Value = created.json().await.unwrap();
    let id = shown["id"].as_str().unwrap().to_owned();
    assert_eq!(shown["client_auth"], combo.client_auth);
    if combo.client_auth == "certificate" {
        assert_eq!(shown["has_client_secret"], false);
        assert_eq!(shown["status_reason"]["code"], "certificate_not_verified");
        let thumbprint = shown["certificate"]["thumbprint"].as_str().unwrap();
        assert!(
            shown["status_reason"]["message"]
                .as_str()
                .unwrap()
                .contains(thumbprint)
        );
        let der = download(o, &id, false).await;
        let uploaded = o
            .sandbox
            .state
            .upload_app_certificate(&app.client_id, &der)
            .unwrap();
        assert_eq!(uploaded.thumbprint, thumbprint, "the portal lists the same");
    }
    if combo.credential == "app" {
        let verified = o.verify(&id).await;
        assert_eq!(verified["status"], "verified", "{combo:?}: {verified}");
    } else {
        authorize(o, &id).await;
    }
    id
}

/// Authorize → sign in → Accept → back at Herald, Verified.
async fn authorize(o: &Outbox, id: &str) {
    let started = o
        .admin_json(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/authorize"),
            None,
        )
        .await;
    let redirect = sandbox_consent(
        started["authorization_url"].as_str().unwrap(),
        SUPPORT,
        PASSWORD,
        "accept",
    )
    .await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let landed = o.app.client().get(&location).send().await.unwrap();
    assert_eq!(landed.status(), 303);
    let shown = mailbox(o, id).await;
    assert_eq!(shown["status"], "verified", "{shown}");
}

/// Sends one message with an attachment and answers what the sandbox received.
async fn deliver(o: &Outbox, id: &str, subject: &str) -> herald::sandbox::ReceivedMessage {
    let message = json!({
        "mailbox": id, "to": ["bob@example.com"], "bcc": ["dave@example.com"],
        "subject": subject, "text": "Your report",
        "attachments": [{"filename": "report.pdf", "content_type": "application/pdf",
                         "content_base64": "JVBERi0xLjQK"}],
    });
    let accepted = o.accepted(&o.admin, message).await;
    o.wait_for(&o.admin, &accepted, "sent").await;
    o.received_by(SUPPORT)
        .into_iter()
        .find(|m| String::from_utf8_lossy(&m.raw).contains(subject))
        .expect("the message arrived")
}

#[tokio::test]
async fn every_credential_and_transport_with_a_secret_or_a_certificate_verifies_and_delivers() {
    let o = Outbox::start().await;
    for credential in ["delegated", "app"] {
        for client_auth in ["secret", "certificate"] {
            for transport in ["smtp", "graph"] {
                let combo = Combo {
                    credential,
                    client_auth,
                    transport,
                };
                let id = connect(&o, combo).await;
                let got = deliver(&o, &id, &format!("Report for {}", combo.label())).await;
                let raw = String::from_utf8_lossy(&got.raw).to_string();
                let mechanism = if transport == "graph" {
                    "graph"
                } else {
                    "XOAUTH2"
                };
                assert_eq!(got.mechanism, mechanism, "{combo:?}");
                for expected in [
                    format!("From: {SUPPORT}"),
                    "Reply-To: help@contoso.com".into(),
                    "Contoso Support".into(),
                    "filename=\"report.pdf\"".into(),
                ] {
                    assert!(raw.contains(&expected), "{combo:?}: {expected} in\n{raw}");
                }
                assert!(got.rcpt_to.iter().any(|r| r == "dave@example.com"));
                assert!(
                    !raw.contains("dave@example.com"),
                    "{combo:?}: Bcc stays hidden"
                );
            }
        }
    }
    o.stop().await;
}

#[tokio::test]
async fn a_certificate_not_yet_uploaded_says_so_and_a_renewed_one_takes_over_when_the_old_is_removed()
 {
    let o = Outbox::start().await;
    let combo = Combo {
        credential: "app",
        client_auth: "certificate",
        transport: "graph",
    };
    let app = register(&o, combo);
    // Tokens live a minute: each message asks for a new one.
    o.switch(|s| s.access_token_lifetime_secs = 60);
    let created = o
        .admin_json(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(json!({
                "name": "Support", "auth": "oauth2", "provider": "sandbox", "username": SUPPORT,
                "credential": "app", "transport": "graph", "client_auth": "certificate",
                "client_id": app.client_id,
            })),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let first = created["certificate"]["thumbprint"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not uploaded: Entra does not know the key, and the reason says what to upload where.
    let refused = o.verify(&id).await;
    assert_eq!(refused["status"], "not_verified");
    assert_eq!(refused["status_reason"]["code"], "certificate_not_accepted");
    assert!(
        refused["status_reason"]["message"]
            .as_str()
            .unwrap()
            .contains(&first)
    );
    assert!(
        refused["status_reason"]["action"]
            .as_str()
            .unwrap()
            .contains("Upload certificate")
    );
    let der = download(&o, &id, false).await;
    o.sandbox
        .state
        .upload_app_certificate(&app.client_id, &der)
        .unwrap();
    assert_eq!(o.verify(&id).await["status"], "verified");

    // Renew: the next certificate waits beside the one in use, which keeps working.
    let renewed = o
        .admin_json(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/certificate/renew"),
            None,
        )
        .await;
    assert_eq!(renewed["certificate"]["thumbprint"], first.as_str());
    let next = renewed["next_certificate"]["thumbprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(next, first);
    assert_eq!(renewed["status"], "verified");
    let der = download(&o, &id, true).await;
    o.sandbox
        .state
        .upload_app_certificate(&app.client_id, &der)
        .unwrap();
    // The admin deletes the old certificate from the app registration.
    o.sandbox
        .state
        .remove_app_certificate(&app.client_id, &first);
    let got = deliver(&o, &id, "After the renewal").await;
    assert_eq!(got.mechanism, "graph");
    let shown = mailbox(&o, &id).await;
    assert_eq!(shown["status"], "verified");
    assert_eq!(shown["certificate"]["thumbprint"], next.as_str());
    assert!(shown["next_certificate"].is_null(), "{shown}");
    o.stop().await;
}

#[tokio::test]
async fn an_uploaded_certificate_is_checked_and_its_expiry_raises_the_alerts() {
    let o = Outbox::start().await;
    let combo = Combo {
        credential: "app",
        client_auth: "certificate",
        transport: "smtp",
    };
    let app = register(&o, combo);
    // A certificate made two years less five days ago: it expires in five days.
    let now = herald::clock::system_now();
    let old = herald::oauth::certificate::generate(
        "Contoso mail",
        now - herald::oauth::certificate::VALIDITY + time::Duration::days(5),
    )
    .unwrap();
    let other = herald::oauth::certificate::generate("Other", now).unwrap();
    let body = |key: &str| {
        json!({
            "name": "Support", "auth": "oauth2", "provider": "sandbox", "username": SUPPORT,
            "credential": "app", "client_auth": "certificate", "client_id": app.client_id,
            "certificate_pem": old.certificate.pem, "private_key_pem": key,
        })
    };
    // A key that is not the certificate's is refused, and nothing is saved.
    let mismatched = o
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            &o.admin,
            Some(body(other.private_key.expose_secret())),
        )
        .await;
    assert_eq!(mismatched.status(), 422);
    let problem: Value = mismatched.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "certificate_pem");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("does not belong")
    );
    let created = o
        .admin_json(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(body(old.private_key.expose_secret())),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["certificate"]["thumbprint"],
        old.certificate.thumbprint_sha1.as_str()
    );
    let pem = o
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{id}/certificate?format=pem"),
            &o.admin,
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(pem, old.certificate.pem);
    assert!(
        !serde_json::to_string(&created)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    o.sandbox
        .state
        .upload_app_certificate(&app.client_id, pem.as_bytes())
        .unwrap();
    assert_eq!(o.verify(&id).await["status"], "verified");

    // The certificate's own end date drives the 30/7/1-day warnings: no date to type.
    let title = "The certificate of \"Support\" expires in 5 days";
    eventually("the certificate's expiry alert", || async {
        let alerts = o
            .admin_json(reqwest::Method::GET, "/api/v1/alerts", None)
            .await;
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["title"] == title)
    })
    .await;

    // Renewing makes the next one; the warning names the step that is left.
    let renewed = o
        .admin_json(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{id}/certificate/renew"),
            None,
        )
        .await;
    assert!(renewed["next_certificate"]["expires_at"].is_string());
    o.stop().await;
}

#[tokio::test]
async fn the_sandbox_checks_assertions_as_entra_does() {
    let o = Outbox::start().await;
    let app = o.sandbox.state.register_client("Herald", vec![]);
    let now = herald::clock::system_now();
    let pair = herald::oauth::certificate::generate("Herald", now).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            pair.certificate
                .pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .unwrap();
    let token_url = o.sandbox.oauth.token_endpoint();
    let client = reqwest::Client::new();
    let ask = |assertion: String| {
        let client = client.clone();
        let token_url = token_url.clone();
        let client_id = app.client_id.clone();
        async move {
            let response = client
                .post(&token_url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("scope", "https://graph.microsoft.com/.default"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                ])
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let sign = |client_id: &str, aud: &str, at| {
        herald::oauth::certificate::assertion(
            &pair.certificate,
            &pair.private_key,
            client_id,
            aud,
            at,
        )
        .unwrap()
        .expose_secret()
        .to_owned()
    };
    let code = |answer: &Value| answer["error_codes"][0].as_u64().unwrap();

    // Not uploaded yet: the key is not found.
    let (status, answer) = ask(sign(&app.client_id, &token_url, now)).await;
    assert_eq!((status, code(&answer)), (401, 700027));
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains("The key was not found")
    );
    o.sandbox
        .state
        .upload_app_certificate(&app.client_id, &der)
        .unwrap();
    let good = sign(&app.client_id, &token_url, now);
    let (status, answer) = ask(good.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    // Single use: the same assertion again is refused.
    let (status, answer) = ask(good).await;
    assert_eq!((status, code(&answer)), (401, 700027), "{answer}");
    // Another audience, another client, another time.
    let (_, answer) = ask(sign(&app.client_id, "https://elsewhere/token", now)).await;
    assert_eq!(code(&answer), 700023);
    let (_, answer) = ask(sign("someone-else", &token_url, now)).await;
    assert_eq!(code(&answer), 700021);
    let (_, answer) = ask(sign(
        &app.client_id,
        &token_url,
        now - time::Duration::hours(1),
    ))
    .await;
    assert_eq!(code(&answer), 700024);
    // A tampered signature.
    let mut forged = sign(&app.client_id, &token_url, now);
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let (_, answer) = ask(forged).await;
    assert_eq!(code(&answer), 700027);
    o.stop().await;
}
