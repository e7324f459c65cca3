//! Sending with Microsoft Graph `sendMail` where SMTP AUTH is off: the real application, a
//! sandbox mailbox set to `transport: graph`, and the sandbox's Graph endpoint.

use serde_json::{Value, json};

use crate::outbox::{Outbox, SUPPORT};

async fn graph_mailbox(o: &Outbox) -> String {
    o.oauth_mailbox_with(
        &o.admin,
        "Support",
        SUPPORT,
        json!({ "transport": "graph" }),
    )
    .await
}

async fn mailbox(o: &Outbox, id: &str) -> Value {
    o.admin_json(
        reqwest::Method::GET,
        &format!("/api/v1/mailboxes/{id}"),
        None,
    )
    .await
}

#[tokio::test]
async fn a_graph_mailbox_is_verified_and_delivers_with_reply_to_signature_and_bcc_kept_hidden() {
    let o = Outbox::start().await;
    // SMTP AUTH is off for the tenant: Graph does not care.
    o.switch(|s| s.smtp_auth_disabled = true);
    let id = graph_mailbox(&o).await;
    let shown = mailbox(&o, &id).await;
    assert_eq!(shown["transport"], "graph");
    assert_eq!(shown["graph_url"], o.sandbox.oauth.base_url.as_str());
    assert!(
        shown["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("https://graph.microsoft.com/Mail.Send")),
        "{shown}"
    );
    // Verify asks Graph without sending anything.
    assert_eq!(o.verify(&id).await["status"], "verified");
    assert!(o.received_by(SUPPORT).is_empty());

    let message = o
        .accepted(
            &o.admin,
            json!({
                "to": "customer@example.com",
                "bcc": ["auditor@example.com"],
                "subject": "Your ticket",
                "text": "We are on it.",
            }),
        )
        .await;
    let sent = o.wait_for(&o.admin, &message, "sent").await;
    let received = o.received_by(SUPPORT);
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.mechanism, "graph");
    assert!(got.rcpt_to.contains(&"auditor@example.com".to_owned()));
    assert!(got.rcpt_to.contains(&"customer@example.com".to_owned()));
    let raw = String::from_utf8_lossy(&got.raw);
    assert!(!raw.to_lowercase().contains("auditor@"), "{raw}");
    assert!(raw.contains("Reply-To: help@contoso.com"), "{raw}");
    assert!(raw.contains("Contoso Support"), "{raw}");
    assert!(raw.contains("Subject: Your ticket"), "{raw}");
    let log = sent.to_string();
    assert!(log.contains("Accepted by Microsoft Graph"), "{log}");
    o.stop().await;
}

#[tokio::test]
async fn graph_throttling_waits_as_told_and_loses_nothing() {
    let o = Outbox::start().await;
    let id = graph_mailbox(&o).await;
    // Longer than the outbox's own first retry (1 s in tests): only Retry-After explains it.
    o.switch(|s| {
        s.graph_throttled = 1;
        s.graph_retry_after_secs = 3;
    });
    let started = std::time::Instant::now();
    let message = o
        .accepted(
            &o.admin,
            crate::outbox::simple("a@example.com", "Throttled"),
        )
        .await;
    o.wait_for(&o.admin, &message, "sent").await;
    // A 429 saying "retry after 3 s": no sooner than that.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "sent after {:?}",
        started.elapsed()
    );
    assert_eq!(o.received_by(SUPPORT).len(), 1);
    // Throttling says nothing about the mailbox.
    assert_eq!(mailbox(&o, &id).await["status"], "verified");
    o.stop().await;
}

#[tokio::test]
async fn a_mailbox_graph_cannot_send_from_turns_not_verified_with_the_fix_and_holds_its_mail() {
    let o = Outbox::start().await;
    let id = graph_mailbox(&o).await;
    o.switch(|s| s.graph_disabled_mailboxes = vec![SUPPORT.to_owned()]);
    let message = o
        .accepted(&o.admin, crate::outbox::simple("a@example.com", "Held"))
        .await;
    o.wait_for(&o.admin, &message, "held").await;
    let shown = mailbox(&o, &id).await;
    assert_eq!(shown["status"], "not_verified");
    assert_eq!(
        shown["status_reason"]["code"], "graph_mailbox_not_enabled",
        "{shown}"
    );
    assert!(
        shown["status_reason"]["action"]
            .as_str()
            .unwrap()
            .contains("licence"),
        "{shown}"
    );
    // Fixed at Microsoft's end: Verify brings it back and the held mail goes out.
    o.switch(|s| s.graph_disabled_mailboxes.clear());
    assert_eq!(o.verify(&id).await["status"], "verified");
    o.wait_for(&o.admin, &message, "sent").await;
    assert_eq!(o.received_by(SUPPORT)[0].mechanism, "graph");
    o.stop().await;
}

#[tokio::test]
async fn switching_an_smtp_mailbox_to_graph_asks_for_graphs_scope_and_a_new_authorization() {
    let o = Outbox::start().await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let patched = o
        .call(
            reqwest::Method::PATCH,
            &format!("/api/v1/mailboxes/{id}"),
            &o.admin,
            Some(json!({ "transport": "graph" })),
        )
        .await;
    assert_eq!(patched.status(), 200, "{}", patched.text().await.unwrap());
    let shown: Value = mailbox(&o, &id).await;
    assert_eq!(shown["transport"], "graph");
    assert_eq!(shown["status"], "not_verified");
    assert_eq!(shown["status_reason"]["code"], "reauthorization_required");
    let scopes = shown["scopes"].as_array().unwrap();
    assert!(scopes.contains(&json!("https://graph.microsoft.com/Mail.Send")));
    assert!(!scopes.contains(&json!("https://outlook.office.com/SMTP.Send")));
    o.stop().await;
}

#[tokio::test]
async fn a_shared_mailbox_sends_through_graph_as_itself_with_send_as() {
    let o = Outbox::start().await;
    let shared = "help@contoso.com";
    let agent = "agent@contoso.com";
    for user in [shared, agent] {
        o.sandbox
            .state
            .add_user(user, secrecy::SecretString::from(crate::outbox::PASSWORD));
    }
    o.sandbox.state.grant_mailbox_access(shared, agent, true);
    let id = o
        .oauth_mailbox_with(
            &o.admin,
            "Help desk",
            shared,
            json!({ "transport": "graph", "sign_in_account": agent }),
        )
        .await;
    let shown = mailbox(&o, &id).await;
    assert!(
        shown["scopes"]
            .as_array()
            .unwrap()
            .contains(&json!("https://graph.microsoft.com/Mail.Send.Shared")),
        "{shown}"
    );
    let message = o
        .accepted(
            &o.admin,
            crate::outbox::simple("a@example.com", "From the desk"),
        )
        .await;
    o.wait_for(&o.admin, &message, "sent").await;
    let got = o.received_by(shared);
    assert_eq!(got.len(), 1, "sent as the shared mailbox");
    assert_eq!(got[0].mechanism, "graph");
    o.stop().await;
}

#[tokio::test]
async fn the_outgoing_mail_page_offers_graph_where_smtp_auth_is_off_and_the_window_has_send_with() {
    let o = Outbox::start().await;
    o.app.user(o.org, "admin@contoso.com", "admin").await;
    o.app.user(o.org, "member@contoso.com", "member").await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let page = "/settings/system/outgoing-mail";
    let (admin, csrf) = o.app.signed_in("admin@contoso.com").await;
    let (_, html) = crate::helpers::page(&admin, &o.app, page).await;
    assert!(
        html.contains(r#"<label for="f-transport">Send with</label>"#),
        "{html}"
    );
    assert!(html.contains(r#"<option value="graph">Microsoft Graph</option>"#));
    assert!(!html.contains("Send with Microsoft Graph instead"));
    // The setup guide says what each choice needs at Microsoft.
    for words in [
        "Sign in as",
        "Mail.Send.Shared",
        "SMTP.SendAsApp",
        "New-ServicePrincipal",
        "New-ManagementRoleAssignment",
        "Grant admin consent",
    ] {
        assert!(html.contains(words), "the guide names {words}");
    }

    // The tenant turns SMTP AUTH off: the row says so and offers Graph.
    o.switch(|s| s.smtp_auth_disabled = true);
    assert_eq!(
        o.verify(&id).await["status_reason"]["code"],
        "smtp_auth_disabled"
    );
    let (_, html) = crate::helpers::page(&admin, &o.app, page).await;
    assert!(
        html.contains(r#"data-action="use-graph">Send with Microsoft Graph instead</button>"#),
        "{html}"
    );
    assert!(html.contains("Mail.Send"));
    let (member, _) = o.app.signed_in("member@contoso.com").await;
    let (_, html) = crate::helpers::page(&member, &o.app, page).await;
    assert!(!html.contains("Send with Microsoft Graph instead"));

    // The button's call, as the page's script makes it: the row then reads Microsoft Graph
    // and asks for a new authorization.
    let switched = admin
        .patch(o.app.url(&format!("/api/v1/mailboxes/{id}")))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({ "transport": "graph" }))
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), 200, "{}", switched.text().await.unwrap());
    let (_, html) = crate::helpers::page(&admin, &o.app, page).await;
    assert!(
        html.contains(r#"<div class="muted">Microsoft Graph</div>"#),
        "{html}"
    );
    assert!(!html.contains("Send with Microsoft Graph instead"));
    o.stop().await;
}

#[tokio::test]
async fn a_mailbox_that_keeps_no_copy_in_sent_items_sends_json_saying_so() {
    let o = Outbox::start().await;
    let id = o
        .oauth_mailbox_with(
            &o.admin,
            "Support",
            SUPPORT,
            json!({ "transport": "graph", "save_to_sent_items": false }),
        )
        .await;
    assert_eq!(mailbox(&o, &id).await["save_to_sent_items"], false);
    let message = json!({
        "to": ["bob@example.com"], "bcc": ["dave@example.com"], "subject": "No copy", "text": "Hi",
        "attachments": [{"filename": "report.pdf", "content_type": "application/pdf",
                         "content_base64": "JVBERi0xLjQK"}],
    });
    let accepted = o.accepted(&o.admin, message).await;
    o.wait_for(&o.admin, &accepted, "sent").await;
    let got = o.received_by(SUPPORT).pop().unwrap();
    assert_eq!(got.mechanism, "graph");
    assert_eq!(o.sandbox.state.saved_to_sent_items(&got.id), Some(false));
    assert!(got.rcpt_to.contains(&"dave@example.com".to_owned()));
    let raw = String::from_utf8_lossy(&got.raw);
    assert!(raw.contains("report.pdf"), "{raw}");
    assert!(raw.contains("Reply-To: help@contoso.com"), "{raw}");
    assert!(!raw.contains("dave@example.com"), "{raw}");

    // A mailbox that keeps copies sends the MIME form, which Graph saves.
    let keeps = graph_mailbox_named(&o, "Keeps").await;
    let accepted = o
        .accepted(
            &o.admin,
            json!({"mailbox": keeps, "to": ["bob@example.com"], "subject": "Copy", "text": "Hi"}),
        )
        .await;
    o.wait_for(&o.admin, &accepted, "sent").await;
    let got = o.received_by(SUPPORT).pop().unwrap();
    assert_ne!(o.sandbox.state.saved_to_sent_items(&got.id), Some(false));
    o.stop().await;
}

async fn graph_mailbox_named(o: &Outbox, name: &str) -> String {
    o.oauth_mailbox_with(&o.admin, name, SUPPORT, json!({ "transport": "graph" }))
        .await
}
