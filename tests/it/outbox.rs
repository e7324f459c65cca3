//! The durable outbox against the sandbox: accept over HTTP, deliver through the mailbox,
//! retry, fail with a reason, hold and release, idempotency, key scopes, raw MIME, the
//! organization's policy while it has no Verified mailbox, and Exchange's limits.

use std::sync::Arc;

use herald::domain::message::MessageSource;
use herald::sandbox::{RunningSandbox, Switches};
use herald::services::send::{self, Body, Caller, SendRequest, Submission};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, problem, sandbox_consent, sandbox_until, spawn_app_with_sandbox,
    spawn_app_with_sandbox_on,
};

pub(crate) const SUPPORT: &str = "support@contoso.com";
pub(crate) const SALES: &str = "sales@contoso.com";
pub(crate) const PASSWORD: &str = "a sandbox mailbox password";

pub(crate) struct Outbox {
    pub(crate) app: TestApp,
    pub(crate) sandbox: RunningSandbox,
    pub(crate) org: herald::domain::OrgId,
    pub(crate) admin: String,
}

impl Outbox {
    pub(crate) async fn start() -> Self {
        let (app, sandbox) = spawn_app_with_sandbox().await;
        Self::with(app, sandbox).await
    }

    pub(crate) async fn with(app: TestApp, sandbox: RunningSandbox) -> Self {
        for user in [
            SUPPORT,
            SALES,
            "billing@fabrikam.com",
            "noreply@herald.example",
        ] {
            sandbox.state.add_user(user, SecretString::from(PASSWORD));
        }
        let org = app.org("Contoso").await;
        let admin = app.key(org, "admin").await;
        Self {
            app,
            sandbox,
            org,
            admin,
        }
    }

    pub(crate) fn switch(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.sandbox.state.switches();
        change(&mut switches);
        self.sandbox.state.set_switches(switches);
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .app
            .client()
            .request(method, self.app.url(path))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// A Verified basic mailbox of the sandbox user `address`.
    pub(crate) async fn basic_mailbox(
        &self,
        key: &str,
        name: &str,
        address: &str,
        extra: Value,
    ) -> String {
        let mut body = json!({
            "name": name, "auth": "basic", "provider": "sandbox", "username": address,
            "password": PASSWORD, "reply_to": "help@contoso.com",
            "signature": "Contoso Support",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let created = self
            .call(reqwest::Method::POST, "/api/v1/mailboxes", key, Some(body))
            .await;
        assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
        let id = created.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let verified: Value = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/mailboxes/{id}/verify"),
                key,
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(verified["status"], "verified", "{verified}");
        id
    }

    /// A Verified OAuth2 mailbox: created, authorized in the sandbox, Accepted.
    pub(crate) async fn oauth_mailbox(&self, key: &str, name: &str, address: &str) -> String {
        self.oauth_mailbox_with(key, name, address, json!({})).await
    }

    /// [`Outbox::oauth_mailbox`] with `extra` fields in the mailbox (e.g. `transport`).
    pub(crate) async fn oauth_mailbox_with(
        &self,
        key: &str,
        name: &str,
        address: &str,
        extra: Value,
    ) -> String {
        let registration = self
            .sandbox
            .state
            .register_client("Herald", vec![self.app.state.access.config.redirect_uri()]);
        let created = self
            .call(
                reqwest::Method::POST,
                "/api/v1/mailboxes",
                key,
                Some({
                    let mut body = json!({
                        "name": name, "auth": "oauth2", "provider": "sandbox", "username": address,
                        "client_id": registration.client_id,
                        "client_secret": registration.secret.expose_secret(),
                        "reply_to": "help@contoso.com", "signature": "Contoso Support",
                    });
                    for (k, v) in extra.as_object().unwrap() {
                        body[k] = v.clone();
                    }
                    body
                }),
            )
            .await;
        assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
        let id = created.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let started: Value = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/mailboxes/{id}/authorize"),
                key,
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        // The account that signs in: the mailbox's own, or the one given for a shared mailbox.
        let signer = extra
            .get("sign_in_account")
            .and_then(Value::as_str)
            .unwrap_or(address);
        let redirect = sandbox_consent(
            started["authorization_url"].as_str().unwrap(),
            signer,
            PASSWORD,
            "accept",
        )
        .await;
        let location = redirect.headers()["location"].to_str().unwrap().to_owned();
        let landed = self.app.client().get(&location).send().await.unwrap();
        assert_eq!(landed.status(), 303);
        let mailbox: Value = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/mailboxes/{id}"),
                key,
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(mailbox["status"], "verified", "{mailbox}");
        id
    }

    /// A call with the admin key, answered as JSON.
    pub(crate) async fn admin_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        self.call(method, path, &self.admin, body)
            .await
            .json()
            .await
            .unwrap()
    }

    /// Verifies a mailbox with the admin key; answers the mailbox.
    pub(crate) async fn verify(&self, mailbox: &str) -> Value {
        self.admin_json(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{mailbox}/verify"),
            None,
        )
        .await
    }

    pub(crate) async fn send(&self, key: &str, body: Value) -> reqwest::Response {
        self.call(reqwest::Method::POST, "/api/v1/messages", key, Some(body))
            .await
    }

    pub(crate) async fn accepted(&self, key: &str, body: Value) -> String {
        let response = self.send(key, body).await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) async fn message(&self, key: &str, id: &str) -> Value {
        self.call(
            reqwest::Method::GET,
            &format!("/api/v1/messages/{id}"),
            key,
            None,
        )
        .await
        .json()
        .await
        .unwrap()
    }

    /// Waits until the message's status is `status` (at most 20 s).
    pub(crate) async fn wait_for(&self, key: &str, id: &str, status: &str) -> Value {
        crate::helpers::eventually(&format!("message {id} to become {status}"), || async {
            self.message(key, id).await["status"] == status
        })
        .await;
        self.message(key, id).await
    }

    pub(crate) fn received_by(&self, user: &str) -> Vec<herald::sandbox::ReceivedMessage> {
        self.sandbox
            .state
            .messages()
            .into_iter()
            .filter(|m| m.user.eq_ignore_ascii_case(user))
            .collect()
    }

    pub(crate) async fn stop(self) {
        self.app.stop().await;
    }
}

pub(crate) fn simple(to: &str, subject: &str) -> Value {
    json!({ "to": to, "subject": subject, "text": "Hello" })
}

#[tokio::test]
async fn a_message_is_accepted_then_delivered_with_bcc_off_the_wire_and_readable() {
    let o = Outbox::start().await;
    o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let org = o.app.org("Other").await;
    let outsider = o.app.key(org, "admin").await;
    let sender = o.app.key(o.org, "sender").await;
    let response = o
        .send(
            &sender,
            json!({
                "to": ["bob@example.com"], "cc": ["carol@example.com"], "bcc": ["dave@example.com"],
                "subject": "Ticket #42", "text": "Your ticket", "html": "<p>Your ticket</p>",
                "headers": {"X-Ticket": "42", "List-Unsubscribe": "<mailto:unsubscribe@contoso.com>"},
                "attachments": [{"filename": "report.pdf", "content_type": "application/pdf",
                                 "content_base64": "JVBERi0xLjQK"}],
            }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "queued");
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/v1/messages/{id}"));

    let sent = o.wait_for(&sender, id, "sent").await;
    assert_eq!(sent["attempts"], 1);
    assert_eq!(sent["last_reply"]["code"], 250);
    assert_eq!(sent["from"], SUPPORT);
    assert!(sent["sent_at"].is_string() && sent["finished_at"].is_string());
    let received = o.received_by(SUPPORT);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].mechanism, "XOAUTH2");
    assert_eq!(
        received[0].rcpt_to,
        ["bob@example.com", "carol@example.com", "dave@example.com"]
    );
    let raw = String::from_utf8_lossy(&received[0].raw).to_string();
    for expected in [
        "X-Ticket: 42",
        "List-Unsubscribe: <mailto:unsubscribe@contoso.com>",
        "Reply-To: help@contoso.com",
        "report.pdf",
        "Contoso Support",
        sent["message_id"].as_str().unwrap(),
    ] {
        assert!(raw.contains(expected), "{expected} in\n{raw}");
    }
    assert!(
        !raw.contains("dave@example.com"),
        "Bcc stays off the wire:\n{raw}"
    );

    // The log: filters, and another organization's view.
    let list: Value = o
        .call(
            reqwest::Method::GET,
            "/api/v1/messages?status=sent&mailbox=support",
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["id"], id);
    let queued: Value = o
        .call(
            reqwest::Method::GET,
            "/api/v1/messages?status=queued",
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queued["items"].as_array().unwrap().len(), 0);
    let foreign = o
        .call(reqwest::Method::GET, &location, &outsider, None)
        .await;
    problem(foreign, 404, "not_found").await;
    o.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_field_by_field_and_nothing_is_stored() {
    let o = Outbox::start().await;
    o.basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let response = o
        .send(
            &o.admin,
            json!({
                "to": ["not an address", "ok@example.com"], "subject": "a\r\nBcc: x@y.z",
                "headers": {"Received": "forged"},
                "attachments": [{"filename": "../x", "content_base64": "%%%"}],
            }),
        )
        .await;
    let body = problem(response, 422, "validation_failed").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in [
        "to[0]",
        "subject",
        "headers.Received",
        "attachments[0].filename",
        "attachments[0].content_base64",
    ] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    let too_many: Vec<String> = (0..501).map(|i| format!("r{i}@example.com")).collect();
    let body = problem(
        o.send(
            &o.admin,
            json!({"to": too_many, "subject": "x", "text": "y"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 500")
    );
    let unknown = o
        .send(
            &o.admin,
            json!({"mailbox": "nope", "to": "a@b.c", "subject": "x", "text": "y"}),
        )
        .await;
    problem(unknown, 422, "validation_failed").await;
    let list: Value = o
        .call(reqwest::Method::GET, "/api/v1/messages", &o.admin, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    o.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_answer_refuses_another_body_and_dedups_races() {
    let o = Outbox::start().await;
    o.basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let post = |key: &'static str, body: Value| {
        let request = o
            .app
            .client()
            .post(o.app.url("/api/v1/messages"))
            .bearer_auth(&o.admin)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let first = post("order-1001", simple("bob@example.com", "Order 1001")).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = post("order-1001", simple("bob@example.com", "Order 1001")).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the same answer");
    let other = post("order-1001", simple("bob@example.com", "Order 1002")).await;
    let body = problem(other, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "Idempotency-Key");

    // Twenty concurrent requests with one new key store one message.
    let answers = crate::authorization::futures_join_all(
        (0..20).map(|_| post("order-2002", simple("carol@example.com", "Order 2002"))),
    )
    .await;
    let mut ids = std::collections::BTreeSet::new();
    for answer in answers {
        match answer.status().as_u16() {
            202 => {
                let id = answer.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                ids.insert(id);
            }
            409 => {}
            other => panic!("unexpected {other}: {}", answer.text().await.unwrap()),
        }
    }
    assert_eq!(ids.len(), 1, "one message for one key: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    o.wait_for(&o.admin, &id, "sent").await;
    // Every request has been answered, so every message they stored is in the database now:
    // one, sent once (a message is sent again only if it is claimed again, and a sent one is
    // never claimed).
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE subject = 'Order 2002'")
            .fetch_one(o.app.store().pool())
            .await
            .unwrap();
    assert_eq!(stored, 1, "one message stored for one key");
    let to_carol = o
        .received_by(SUPPORT)
        .iter()
        .filter(|m| m.rcpt_to == ["carol@example.com"])
        .count();
    assert_eq!(to_carol, 1);
    o.stop().await;
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_sent_and_a_permanent_one_fails_with_its_reason() {
    let o = Outbox::start().await;
    let mailbox = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    o.switch(|s| s.submission_outages = 2);
    let id = o
        .accepted(&o.admin, simple("bob@example.com", "Retried"))
        .await;
    let sent = o.wait_for(&o.admin, &id, "sent").await;
    assert_eq!(sent["attempts"], 3, "two 451s, then 250: {sent}");
    assert_eq!(sent["last_reply"]["code"], 250);
    assert_eq!(o.received_by(SUPPORT).len(), 1);

    o.switch(|s| s.unknown_recipients = vec!["nobody@example.com".into()]);
    let id = o
        .accepted(&o.admin, simple("nobody@example.com", "Refused"))
        .await;
    let failed = o.wait_for(&o.admin, &id, "failed").await;
    assert_eq!(failed["reason"]["code"], "message_rejected");
    assert_eq!(failed["last_reply"]["code"], 550);
    assert_eq!(failed["last_reply"]["enhanced"], "5.1.10");
    assert!(
        failed["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("RecipientNotFound")
    );
    assert_eq!(failed["attempts"], 1, "a permanent refusal is not retried");
    // An address the server cannot take (non-ASCII, no SMTPUTF8) fails that message alone.
    let id = o
        .accepted(&o.admin, simple("jörg@example.com", "Umlaut"))
        .await;
    let failed = o.wait_for(&o.admin, &id, "failed").await;
    assert_eq!(failed["reason"]["code"], "message_rejected", "{failed}");
    assert!(
        failed["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("SMTPUTF8")
    );
    let mailbox: Value = o
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{mailbox}"),
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mailbox["status"], "verified", "the mailbox itself is fine");
    o.stop().await;
}

#[tokio::test]
async fn an_authentication_failure_holds_the_mail_and_a_new_verification_releases_it() {
    let o = Outbox::start().await;
    let mailbox = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    o.switch(|s| s.smtp_auth_disabled = true);
    let first = o.accepted(&o.admin, simple("bob@example.com", "One")).await;
    let held = o.wait_for(&o.admin, &first, "held").await;
    assert_eq!(held["reason"]["code"], "mailbox_not_verified");
    assert!(
        held["reason"]["action"]
            .as_str()
            .unwrap()
            .contains("Set-CASMailbox")
    );
    // New mail for a Not Verified mailbox is held at once.
    let second = o.send(&o.admin, simple("carol@example.com", "Two")).await;
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["status"], "held");
    assert!(o.received_by(SUPPORT).is_empty());

    o.switch(|s| s.smtp_auth_disabled = false);
    let verified: Value = o
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{mailbox}/verify"),
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verified["status"], "verified");
    o.app.state.outbox.wake();
    o.wait_for(&o.admin, &first, "sent").await;
    o.wait_for(&o.admin, second["id"].as_str().unwrap(), "sent")
        .await;
    assert_eq!(o.received_by(SUPPORT).len(), 2);
    o.stop().await;
}

#[tokio::test]
async fn a_key_limited_to_one_mailbox_cannot_send_through_another_nor_see_it() {
    let o = Outbox::start().await;
    let support = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    o.basic_mailbox(&o.admin, "Sales", SALES, json!({})).await;
    let created: Value = o
        .call(
            reqwest::Method::POST,
            "/api/v1/api-keys",
            &o.admin,
            Some(json!({"name": "helpdesk", "role": "sender", "mailboxes": ["Support"]})),
        )
        .await
        .json()
        .await
        .unwrap();
    let limited = created["key"].as_str().unwrap().to_owned();
    let refused = o
        .send(
            &limited,
            json!({"mailbox": "Sales", "to": "a@example.com", "subject": "x", "text": "y"}),
        )
        .await;
    problem(refused, 403, "forbidden").await;
    let allowed = o
        .accepted(
            &limited,
            json!({"mailbox": "Support", "to": "a@example.com", "subject": "x", "text": "y"}),
        )
        .await;
    let sent = o.wait_for(&limited, &allowed, "sent").await;
    assert_eq!(sent["mailbox"], support.as_str());
    let visible: Value = o
        .call(reqwest::Method::GET, "/api/v1/mailboxes", &limited, None)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = visible["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Support"]);
    assert!(
        !visible.to_string().contains(PASSWORD),
        "no secret in a sender's view"
    );
    // A sender key reads what it sent, not the organization's other mail.
    let by_admin = o
        .accepted(
            &o.admin,
            json!({"mailbox": "Support", "to": "z@example.com", "subject": "x", "text": "y"}),
        )
        .await;
    let hidden = o
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/messages/{by_admin}"),
            &limited,
            None,
        )
        .await;
    problem(hidden, 404, "not_found").await;
    o.stop().await;
}

#[tokio::test]
async fn raw_mime_is_sent_as_given_but_a_foreign_from_is_refused() {
    let o = Outbox::start().await;
    o.basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let post = |mime: String| {
        let request = o
            .app
            .client()
            .post(o.app.url("/api/v1/messages?mailbox=Support"))
            .bearer_auth(&o.admin)
            .header("content-type", "message/rfc822")
            .body(mime);
        async move { request.send().await.unwrap() }
    };
    let foreign = post(
        "From: ceo@contoso.com\r\nTo: bob@example.com\r\nSubject: Wire money\r\n\r\nNow.\r\n"
            .into(),
    )
    .await;
    let body = problem(foreign, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "from");
    let own = post(format!(
        "From: Contoso Support <{SUPPORT}>\nTo: bob@example.com\nBcc: audit@contoso.com\nSubject: Scan\nX-Scanner: floor-2\n\nscanned\n"
    ))
    .await;
    assert_eq!(own.status(), 202);
    let id = own.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = o.wait_for(&o.admin, &id, "sent").await;
    assert_eq!(sent["subject"], "Scan");
    let received = o.received_by(SUPPORT);
    assert_eq!(
        received[0].rcpt_to,
        ["bob@example.com", "audit@contoso.com"]
    );
    let raw = String::from_utf8_lossy(&received[0].raw).to_string();
    assert!(raw.contains("X-Scanner: floor-2\r\n") && raw.contains("Reply-To: help@contoso.com"));
    assert!(!raw.contains("audit@"), "{raw}");
    o.stop().await;
}

/// Accepts for an organization as the API does, with an installation default sender.
async fn accept_for(
    o: &Outbox,
    org: herald::domain::OrgId,
    default_sender: Option<herald::domain::MailboxId>,
    subject: &str,
) -> send::Accepted {
    let settings = herald::config::OutboxSettings {
        default_sender,
        default_sender_orgs: herald::config::DefaultSenderOrgs::All,
        ..Default::default()
    };
    let accepted = send::accept(
        o.app.store(),
        &settings,
        &Caller {
            org_id: org,
            api_key_id: None,
            allowed: None,
            source: MessageSource::Api,
        },
        Submission {
            mailbox: None,
            body: Body::Json(Box::new(SendRequest {
                to: vec!["customer@example.com".into()],
                subject: Some(subject.into()),
                text: Some("Your report".into()),
                ..Default::default()
            })),
            idempotency_key: None,
            request_digest: String::new(),
        },
        herald::clock::system_now(),
    )
    .await
    .unwrap();
    o.app.state.outbox.wake();
    accepted
}

#[tokio::test]
async fn without_a_verified_mailbox_fallback_sends_from_the_default_sender_and_hold_waits() {
    let o = Outbox::start().await;
    // The operator's own organization holds the default sender.
    let system = o.app.org("Herald Operator").await;
    let system_key = o.app.key(system, "admin").await;
    let default_sender: herald::domain::MailboxId = o
        .basic_mailbox(
            &system_key,
            "Default",
            "noreply@herald.example",
            json!({"reply_to": null}),
        )
        .await
        .parse()
        .unwrap();

    // Fabrikam has no mailbox and the default policy, fallback, with its own Reply-To.
    let fabrikam = o.app.org("Fabrikam").await;
    let fabrikam_key = o.app.key(fabrikam, "admin").await;
    let patched = o
        .call(
            reqwest::Method::PATCH,
            "/api/v1/organization",
            &fabrikam_key,
            Some(json!({"reply_to": "office@fabrikam.com"})),
        )
        .await;
    assert_eq!(patched.status(), 200);
    let accepted = accept_for(&o, fabrikam, Some(default_sender), "Fallback").await;
    assert_eq!(accepted.status.as_str(), "queued");
    let sent = o.wait_for(&fabrikam_key, &accepted.id, "sent").await;
    assert_eq!(sent["via_default_sender"], true);
    assert_eq!(sent["from"], "noreply@herald.example");
    let received = o.received_by("noreply@herald.example");
    let raw = String::from_utf8_lossy(&received[0].raw).to_string();
    assert!(raw.contains("Reply-To: office@fabrikam.com"), "{raw}");

    // With `hold`, the same message waits for Fabrikam's own mailbox.
    let patched: Value = o
        .call(
            reqwest::Method::PATCH,
            "/api/v1/organization",
            &fabrikam_key,
            Some(json!({"no_mailbox_policy": "hold"})),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["no_mailbox_policy"], "hold");
    let held = accept_for(&o, fabrikam, Some(default_sender), "Held").await;
    assert_eq!(held.status.as_str(), "held");
    let message = o.message(&fabrikam_key, &held.id).await;
    assert_eq!(message["reason"]["code"], "no_mailbox");
    assert!(message["mailbox"].is_null());
    let own = o
        .basic_mailbox(
            &fabrikam_key,
            "Billing",
            "billing@fabrikam.com",
            json!({"reply_to": null}),
        )
        .await;
    o.app.state.outbox.wake();
    let sent = o.wait_for(&fabrikam_key, &held.id, "sent").await;
    assert_eq!(sent["mailbox"], own.as_str());
    assert_eq!(sent["from"], "billing@fabrikam.com");
    assert_eq!(sent["via_default_sender"], false);
    assert_eq!(o.received_by("noreply@herald.example").len(), 1);
    o.stop().await;
}

#[tokio::test]
async fn an_exchange_mailbox_keeps_to_30_a_minute_on_a_simulated_clock() {
    let start = herald::clock::system_now();
    // Ahead of the real clock, so that mail accepted during the test is due at once.
    let clock = Arc::new(herald::clock::ManualClock::starting_at(
        start + time::Duration::minutes(5),
    ));
    let (app, sandbox) = spawn_app_with_sandbox_on(clock.clone()).await;
    let o = Outbox::with(app, sandbox).await;
    // The sandbox counts real minutes; here only Herald's own limit is under test.
    o.switch(|s| s.messages_per_minute = 100_000);
    // One connection: concurrent lanes would each jump the simulated clock while the others
    // are between admission and the record of their send, blurring the times measured here.
    o.basic_mailbox(
        &o.admin,
        "Support",
        SUPPORT,
        json!({"limits": {"connections": 1}}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..75 {
        ids.push(
            o.accepted(&o.admin, simple("bob@example.com", &format!("#{i}")))
                .await,
        );
    }
    for id in &ids {
        o.wait_for(&o.admin, id, "sent").await;
    }
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
    for (i, t) in sent_at.iter().enumerate() {
        let within = sent_at[i..].iter().take_while(|u| **u < t + 60).count();
        assert!(
            within <= 30,
            "{within} sent within a minute of #{i}: {sent_at:?}"
        );
    }
    let span = sent_at[74] - sent_at[0];
    assert!(
        (120..=125).contains(&span),
        "75 messages take two simulated minutes (30 + 30 + 15), took {span} s"
    );
    assert!(
        herald::clock::system_now() - start < time::Duration::seconds(60),
        "and no real minute"
    );
    o.stop().await;
}

#[tokio::test]
async fn a_432_backs_off_only_its_own_mailbox() {
    let o = Outbox::start().await;
    // Herald's own limit out of the way, so the server's 432 is what slows Support down.
    let limits = json!({"limits": {"messages_per_minute": 1000}});
    let support = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, limits.clone())
        .await;
    o.basic_mailbox(&o.admin, "Sales", SALES, limits).await;
    o.switch(|s| s.messages_per_minute = 3);
    let mut support_ids = Vec::new();
    for i in 0..6 {
        support_ids.push(
            o.accepted(
                &o.admin,
                json!({"mailbox": "Support", "to": "a@example.com", "subject": format!("S{i}"), "text": "x"}),
            )
            .await,
        );
    }
    // Let Support run into the limit first.
    sandbox_until(&o.sandbox.state, "Support's first three messages", |s| {
        s.messages()
            .iter()
            .filter(|m| m.user.eq_ignore_ascii_case(SUPPORT))
            .count()
            >= 3
    })
    .await;
    let mut sales_ids = Vec::new();
    for i in 0..3 {
        sales_ids.push(
            o.accepted(
                &o.admin,
                json!({"mailbox": "Sales", "to": "b@example.com", "subject": format!("P{i}"), "text": "x"}),
            )
            .await,
        );
    }
    for id in &sales_ids {
        o.wait_for(&o.admin, id, "sent").await;
    }
    // Support's three unsent messages wait in the queue (one may be on its way to another
    // 432 at any moment); none failed.
    let (mut unsent, mut throttled) = (0, 0);
    for id in &support_ids {
        let m = o.message(&o.admin, id).await;
        assert_ne!(m["status"], "failed", "throttled mail is not failed: {m}");
        if m["status"] != "sent" {
            unsent += 1;
            if m["last_reply"]["code"] == 432 {
                throttled += 1;
            }
        }
    }
    assert_eq!(unsent, 3, "three wait in the queue");
    assert!(throttled >= 1, "at least one met the 432");
    assert_eq!(o.received_by(SUPPORT).len(), 3);
    let mailbox: Value = o
        .call(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{support}"),
            &o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mailbox["status"], "verified", "throttling is not a fault");
    let level: i64 =
        sqlx::query_scalar("SELECT backoff_level FROM mailbox_throttle WHERE mailbox_id = $1")
            .bind(&support)
            .fetch_one(o.app.store().pool())
            .await
            .unwrap();
    assert!(level >= 1);
    o.stop().await;
}

#[tokio::test]
async fn bodies_past_their_retention_are_purged_and_the_metadata_stays() {
    let o = Outbox::start().await;
    o.basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let old = o.accepted(&o.admin, simple("bob@example.com", "Old")).await;
    o.wait_for(&o.admin, &old, "sent").await;
    o.switch(|s| s.smtp_auth_disabled = true);
    let waiting = o
        .accepted(&o.admin, simple("carol@example.com", "Held"))
        .await;
    o.wait_for(&o.admin, &waiting, "held").await;
    let store = o.app.store();
    let now = herald::clock::system_now();
    // The sweep as housekeeping runs it, 31 days on, with the default 30-day retention.
    let later = now + time::Duration::days(31);
    let purged = herald::store::messages::purge_bodies(
        &mut store.conn().await.unwrap(),
        later - o.app.state.access.config.outbox.retention,
        later,
    )
    .await
    .unwrap();
    assert_eq!(purged, 1, "only the finished message");
    let sent = o.message(&o.admin, &old).await;
    assert_eq!(sent["body_purged"], true);
    assert_eq!(sent["status"], "sent");
    assert_eq!(sent["subject"], "Old");
    assert_eq!(sent["recipients"], json!(["bob@example.com"]));
    let held = o.message(&o.admin, &waiting).await;
    assert_eq!(held["body_purged"], false, "unfinished mail keeps its body");
    let body = herald::store::messages::body(&mut store.conn().await.unwrap(), &old)
        .await
        .unwrap();
    assert!(body.is_none());
    o.stop().await;
}

#[tokio::test]
async fn a_burst_reuses_connections_and_never_opens_more_than_exchange_s_three() {
    let o = Outbox::start().await;
    // Both minute limits out of the way: the burst goes as fast as the connections allow.
    o.switch(|s| s.messages_per_minute = 100_000);
    o.basic_mailbox(
        &o.admin,
        "Support",
        SUPPORT,
        json!({"limits": {"messages_per_minute": 1000}}),
    )
    .await;
    let logins_before = o
        .sandbox
        .state
        .counters
        .smtp_auth_attempts
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            o.accepted(&o.admin, simple("bob@example.com", &format!("#{i}")))
                .await,
        );
    }
    for id in &ids {
        o.wait_for(&o.admin, id, "sent").await;
    }
    let counters = &o.sandbox.state.counters;
    let logins = counters
        .smtp_auth_attempts
        .load(std::sync::atomic::Ordering::Relaxed)
        - logins_before;
    assert_eq!(
        counters
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "never a fourth connection"
    );
    assert!(
        logins < 30,
        "60 messages over reused connections took {logins} logins"
    );
    o.stop().await;
}

/// A mailbox "Support" with one message per subject queued an hour ahead, where the running
/// workers (on the real clock) never see them due: a test claims them itself, at that hour.
/// Answers the mailbox, the messages' ids in the order they came, and that hour.
async fn queued_out_of_reach(
    o: &Outbox,
    subjects: &[&str],
) -> (herald::domain::MailboxId, Vec<String>, time::OffsetDateTime) {
    let mailbox: herald::domain::MailboxId = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await
        .parse()
        .unwrap();
    // Held meanwhile: the mailbox is made Not Verified in the database only.
    sqlx::query("UPDATE mailboxes SET status = 'not_verified' WHERE id = $1")
        .bind(mailbox.to_string())
        .execute(o.app.store().pool())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for subject in subjects {
        ids.push(accept_for(o, o.org, None, subject).await.id);
    }
    let at = herald::clock::system_now() + time::Duration::hours(1);
    sqlx::query(
        "UPDATE messages SET status = 'queued', next_attempt_at = $1 WHERE status = 'held'",
    )
    .bind(at.unix_timestamp())
    .execute(o.app.store().pool())
    .await
    .unwrap();
    (mailbox, ids, at)
}

#[tokio::test]
async fn an_outcome_from_a_claim_that_was_taken_over_is_ignored() {
    let o = Outbox::start().await;
    let (mailbox, ids, now) = queued_out_of_reach(&o, &["Contested"]).await;
    let id = ids[0].clone();
    use herald::store::messages::{self, Outcome};
    let mut conn = o.app.store().conn().await.unwrap();
    let first = messages::claim(
        &mut conn,
        mailbox,
        "a/1",
        now,
        now + time::Duration::seconds(1),
    )
    .await
    .unwrap()
    .expect("claimed");
    assert_eq!(first.message.attempts, 1);
    // Its lease runs out; another worker takes the message over.
    let later = now + time::Duration::seconds(5);
    let second = messages::claim(
        &mut conn,
        mailbox,
        "b/1",
        later,
        later + time::Duration::minutes(5),
    )
    .await
    .unwrap()
    .expect("taken over");
    assert_eq!(second.message.attempts, 2);
    let reply = herald::domain::message::SmtpReply {
        code: Some(451),
        enhanced: None,
        text: "late".into(),
    };
    let stale = messages::finish(
        &mut conn,
        &id,
        "a/1",
        Outcome::Retry {
            next_attempt_at: later,
            reply: Some(&reply),
        },
        later,
    )
    .await
    .unwrap();
    assert!(!stale, "the first worker's outcome is refused");
    let sent = herald::domain::message::SmtpReply {
        code: Some(250),
        enhanced: None,
        text: "OK".into(),
    };
    assert!(
        messages::finish(&mut conn, &id, "b/1", Outcome::Sent { reply: &sent }, later)
            .await
            .unwrap()
    );
    drop(conn);
    assert_eq!(o.message(&o.admin, &id).await["status"], "sent");
    o.stop().await;
}

#[tokio::test]
async fn admin_keys_cannot_be_limited_and_a_key_whose_mailboxes_are_gone_sends_nothing() {
    let o = Outbox::start().await;
    let support = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let refused = o
        .call(
            reqwest::Method::POST,
            "/api/v1/api-keys",
            &o.admin,
            Some(json!({"name": "ops", "role": "admin", "mailboxes": ["Support"]})),
        )
        .await;
    let body = problem(refused, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "mailboxes");
    let created: Value = o
        .call(
            reqwest::Method::POST,
            "/api/v1/api-keys",
            &o.admin,
            Some(json!({"name": "helpdesk", "role": "sender", "mailboxes": ["Support"]})),
        )
        .await
        .json()
        .await
        .unwrap();
    let limited = created["key"].as_str().unwrap().to_owned();
    let deleted = o
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/mailboxes/{support}"),
            &o.admin,
            None,
        )
        .await;
    assert!(deleted.status().is_success());
    o.basic_mailbox(&o.admin, "Sales", SALES, json!({"default": true}))
        .await;
    let refused = o.send(&limited, simple("a@example.com", "x")).await;
    problem(refused, 403, "forbidden").await;
    o.stop().await;
}

/// Inserts the messages while another writer has the turn, so that on SQLite they all wait
/// for it and go to the disk in one commit; answers each message's result, in order.
async fn insert_together(
    store: &herald::store::Store,
    messages: Vec<(
        herald::store::messages::NewMessage,
        Option<herald::store::messages::NewKey>,
    )>,
) -> Vec<herald::store::StoreResult<()>> {
    let count = messages.len();
    let turn = store.write_permit().await;
    let inserts: Vec<_> = messages
        .into_iter()
        .map(|(message, key)| {
            let store = store.clone();
            tokio::spawn(async move {
                herald::store::messages::insert_durably(&store, message, key).await
            })
        })
        .collect();
    if store.backend() == herald::store::Backend::Sqlite {
        let mut waiting = store.inserts_waiting();
        crate::helpers::within(
            "the inserts waiting for the commit",
            waiting.wait_for(|n| *n == count),
        )
        .await
        .unwrap();
    }
    drop(turn);
    let mut answers = Vec::with_capacity(count);
    for insert in inserts {
        answers.push(crate::helpers::within("an answer", insert).await.unwrap());
    }
    answers
}

/// A held message of the organization, inserted by a test straight into the store.
fn held_message(
    org: herald::domain::OrgId,
    id: &str,
    subject: &str,
    now: time::OffsetDateTime,
) -> herald::store::messages::NewMessage {
    use herald::domain::message::{MessageSource, MessageStatus};
    herald::store::messages::NewMessage {
        id: id.to_owned(),
        org_id: org,
        mailbox_id: None,
        mailbox_explicit: false,
        via_default_sender: false,
        api_key_id: None,
        source: MessageSource::Api,
        status: MessageStatus::Held,
        mail_from: SUPPORT.into(),
        recipients: vec!["someone@example.com".into()],
        subject: subject.to_owned(),
        message_id_header: format!("<{id}@herald.test>"),
        body_kind: herald::store::messages::BodyKind::Mime,
        body: format!("Subject: {subject}\r\n\r\nHello\r\n").into_bytes(),
        reason: None,
        now,
    }
}

#[tokio::test]
async fn messages_that_share_a_commit_are_each_answered_and_one_bad_one_fails_alone() {
    use herald::store::messages;
    let o = Outbox::start().await;
    let store = o.app.store().clone();
    let new = |id: &str| {
        held_message(
            o.org,
            id,
            &format!("Grouped {id}"),
            herald::clock::system_now(),
        )
    };
    let taken = uuid::Uuid::now_v7().to_string();
    messages::insert_durably(&store, new(&taken), None)
        .await
        .unwrap();
    // While another writer has the turn, twenty messages arrive, one of them reusing an id:
    // on SQLite they then go to the disk together.
    let ids: Vec<String> = (0..20)
        .map(|i| {
            if i == 7 {
                taken.clone()
            } else {
                uuid::Uuid::now_v7().to_string()
            }
        })
        .collect();
    let answers = insert_together(&store, ids.iter().map(|id| (new(id), None)).collect()).await;
    let mut refused = 0;
    for (i, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(()) => assert_ne!(i, 7),
            Err(_) => {
                assert_eq!(i, 7, "only the message reusing an id fails");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 1);
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE subject LIKE 'Grouped %'")
            .fetch_one(o.app.store().pool())
            .await
            .unwrap();
    assert_eq!(
        stored, 20,
        "the nineteen good ones and the first are all kept"
    );
}

#[tokio::test]
async fn keyed_messages_share_the_commit_and_a_key_taken_in_it_or_before_refuses_only_its_message()
{
    use herald::store::messages::{self, NewKey};
    let o = Outbox::start().await;
    let store = o.app.store().clone();
    let now = herald::clock::system_now();
    let new = |id: &str| held_message(o.org, id, &format!("Keyed {id}"), now);
    let key = |name: &str| NewKey {
        key: name.to_owned(),
        request_digest: format!("digest of {name}"),
        expires_at: now + time::Duration::hours(24),
    };
    // One key is live from an earlier request; another was used long ago and has expired.
    messages::insert_durably(
        &store,
        new(&uuid::Uuid::now_v7().to_string()),
        Some(key("live")),
    )
    .await
    .unwrap();
    messages::insert_durably(
        &store,
        new(&uuid::Uuid::now_v7().to_string()),
        Some(key("old")),
    )
    .await
    .unwrap();
    sqlx::query("UPDATE idempotency_keys SET expires_at = $1 WHERE idem_key = 'old'")
        .bind((now - time::Duration::hours(1)).unix_timestamp())
        .execute(store.pool())
        .await
        .unwrap();
    // Twenty arrive while another writer has the turn: every other one keyed, two with the
    // same key, one with the live key and one with the expired key.
    let keys: Vec<Option<String>> = (0..20)
        .map(|i| match i {
            4 | 6 => Some("twin".to_owned()),
            8 => Some("live".to_owned()),
            10 => Some("old".to_owned()),
            i if i % 2 == 0 => Some(format!("key-{i}")),
            _ => None,
        })
        .collect();
    let ids: Vec<String> = (0..20).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let messages = ids
        .iter()
        .zip(&keys)
        .map(|(id, k)| (new(id), k.as_deref().map(key)))
        .collect();
    let answers = insert_together(&store, messages).await;
    let mut refused = Vec::new();
    for (i, answer) in answers.into_iter().enumerate() {
        match answer {
            Ok(()) => {}
            Err(herald::store::StoreError::Conflict(what)) => {
                assert_eq!(what, "idempotency key");
                refused.push(i);
            }
            Err(e) => panic!("message {i}: {e}"),
        }
    }
    assert!(
        refused == [4, 8] || refused == [6, 8],
        "one of the twins and the live key are refused, the expired key is taken anew: {refused:?}"
    );
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT id FROM messages WHERE subject LIKE 'Keyed %'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(kept.len(), 2 + 18, "a refused message is not kept");
    for i in &refused {
        assert!(!kept.contains(&ids[*i]), "message {i} was refused but kept");
    }
    // Each key names the message that took it.
    let twin = if refused[0] == 4 { &ids[6] } else { &ids[4] };
    for (name, id) in [("twin", twin), ("old", &ids[10])] {
        let record = messages::idempotency_get(&mut store.conn().await.unwrap(), o.org, name, now)
            .await
            .unwrap()
            .expect("the key is live");
        assert_eq!(&record.message_id, id, "key {name}");
    }
    o.stop().await;
}

#[tokio::test]
async fn accepts_read_the_organization_from_memory_and_see_a_change_at_once_or_within_a_second() {
    let o = Outbox::start().await;
    let support = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    let store = o.app.store();
    // Read twice with nothing changed in between: the second answer is the first, from memory.
    let mut served_from_memory = false;
    for _ in 0..20 {
        let first = store.org_directory(o.org).await.unwrap().unwrap();
        let again = store.org_directory(o.org).await.unwrap().unwrap();
        if Arc::ptr_eq(&first, &again) {
            served_from_memory = true;
            break;
        }
    }
    assert!(
        served_from_memory,
        "every accept read the organization anew"
    );
    // A change through Herald is seen by the next read.
    let renamed = o
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/mailboxes/{support}"),
            &o.admin,
            Some(json!({"name": "Helpdesk"})),
        )
        .await;
    assert!(renamed.status().is_success());
    let seen = store.org_directory(o.org).await.unwrap().unwrap();
    assert_eq!(seen.mailboxes[0].name, "Helpdesk");
    // A change made elsewhere (another instance, the command line) within a second.
    sqlx::query("UPDATE mailboxes SET name = 'Frontdesk', name_key = 'frontdesk' WHERE id = $1")
        .bind(&support)
        .execute(store.pool())
        .await
        .unwrap();
    tokio::time::sleep(herald::store::directory::FRESH).await;
    let seen = store.org_directory(o.org).await.unwrap().unwrap();
    assert_eq!(seen.mailboxes[0].name, "Frontdesk");
    o.stop().await;
}

#[tokio::test]
async fn a_lane_claims_several_messages_in_one_statement_oldest_first_and_none_twice() {
    let o = Outbox::start().await;
    let subjects: Vec<String> = (0..20).map(|i| format!("Batch {i}")).collect();
    let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let (mailbox, ids, now) = queued_out_of_reach(&o, &subjects).await;
    use herald::store::messages;
    let mut conn = o.app.store().conn().await.unwrap();
    let lease = now + time::Duration::minutes(5);
    let first = messages::claim_many(&mut conn, mailbox, "a/1", now, lease, 8)
        .await
        .unwrap();
    let second = messages::claim_many(&mut conn, mailbox, "b/1", now, lease, 8)
        .await
        .unwrap();
    let third = messages::claim_many(&mut conn, mailbox, "c/1", now, lease, 8)
        .await
        .unwrap();
    let taken: Vec<&str> = [&first, &second, &third]
        .iter()
        .flat_map(|batch| batch.iter().map(|c| c.message.id.as_str()))
        .collect();
    assert_eq!(
        (first.len(), second.len(), third.len()),
        (8, 8, 4),
        "eight at a time, then the four left"
    );
    assert_eq!(taken, ids, "every message once, in the order it came");
    assert!(
        first
            .iter()
            .all(|c| c.message.attempts == 1 && c.body.is_some())
    );
    // What a lane gives back is queued again without the attempt counted.
    for c in &third {
        let release = messages::Outcome::Release {
            next_attempt_at: now,
        };
        assert!(
            messages::finish(&mut conn, &c.message.id, "c/1", release, now)
                .await
                .unwrap()
        );
    }
    let again = messages::claim_many(&mut conn, mailbox, "d/1", now, lease, 8)
        .await
        .unwrap();
    assert_eq!(again.len(), 4);
    assert!(again.iter().all(|c| c.message.attempts == 1));
    drop(conn);
    o.stop().await;
}

#[tokio::test]
async fn a_batch_that_cannot_be_written_answers_every_caller_and_keeps_nothing() {
    let o = Outbox::start().await;
    let store = o.app.store().clone();
    if store.backend() != herald::store::Backend::Sqlite {
        // The failure is made with a SQLite trigger; PostgreSQL commits each message alone.
        o.stop().await;
        return;
    }
    // Every insert of a "Doomed" message fails, as a full disk would fail them all.
    sqlx::query(
        "CREATE TRIGGER doomed BEFORE INSERT ON messages WHEN NEW.subject LIKE 'Doomed %' \
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let now = herald::clock::system_now();
    let doomed = (0..10)
        .map(|i| {
            let id = uuid::Uuid::now_v7().to_string();
            (held_message(o.org, &id, &format!("Doomed {i}"), now), None)
        })
        .collect();
    for answer in insert_together(&store, doomed).await {
        assert!(
            answer.is_err(),
            "a message that was not kept was acknowledged"
        );
    }
    let kept: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE subject LIKE 'Doomed %'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(kept, 0);
    // The next message, once the disk has room, is kept.
    sqlx::query("DROP TRIGGER doomed")
        .execute(store.pool())
        .await
        .unwrap();
    let id = uuid::Uuid::now_v7().to_string();
    herald::store::messages::insert_durably(&store, held_message(o.org, &id, "Kept", now), None)
        .await
        .unwrap();
    o.stop().await;
}
