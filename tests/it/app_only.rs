//! App-only mailboxes (OAuth 2.0 client credentials): nobody signs in, the app asks for its
//! own token, and Exchange decides which mailboxes it may send as, over SMTP and Graph.

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::outbox::{Outbox, SALES, SUPPORT, simple};

/// An app registration in the sandbox's tenant, with its secret.
fn app(o: &Outbox) -> herald::sandbox::SandboxClient {
    o.sandbox.state.register_client("Herald (app-only)", vec![])
}

async fn app_mailbox(
    o: &Outbox,
    app: &herald::sandbox::SandboxClient,
    address: &str,
    transport: &str,
) -> String {
    let created = o
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            &o.admin,
            Some(json!({
                "name": address, "auth": "oauth2", "provider": "sandbox", "username": address,
                "credential": "app", "transport": transport,
                "client_id": app.client_id, "client_secret": app.secret.expose_secret(),
                "reply_to": "help@contoso.com", "signature": "Contoso Support",
            })),
        )
        .await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let shown: Value = created.json().await.unwrap();
    assert_eq!(shown["credential"], "app");
    assert_eq!(shown["status_reason"]["code"], "verification_required");
    shown["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_app_sends_over_smtp_as_the_mailboxes_exchange_gave_it_with_one_token_for_all() {
    let o = Outbox::start().await;
    let app = app(&o);
    let support = app_mailbox(&o, &app, SUPPORT, "smtp").await;
    let sales = app_mailbox(&o, &app, SALES, "smtp").await;
    // Nobody signs in: Authorize is refused with the way to go.
    let authorize = o
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/mailboxes/{support}/authorize"),
            &o.admin,
            None,
        )
        .await;
    assert!(authorize.status().is_client_error());
    assert!(authorize.text().await.unwrap().contains("use verify"));

    // Consent given and Exchange gave the app both mailboxes: one token serves them all.
    o.sandbox
        .state
        .grant_app_permission(&app.client_id, herald::sandbox::APP_SMTP_SEND_AS_APP);
    for mailbox in [SUPPORT, SALES] {
        o.sandbox.state.grant_app_mailbox(&app.client_id, mailbox);
    }
    let before = o.sandbox.state.token_requests();
    assert_eq!(o.verify(&support).await["status"], "verified");
    assert_eq!(o.verify(&sales).await["status"], "verified");
    let mut message = simple("a@example.com", "From the app");
    message["mailbox"] = json!(support);
    let id = o.accepted(&o.admin, message).await;
    o.wait_for(&o.admin, &id, "sent").await;
    let got = o.received_by(SUPPORT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mechanism, "XOAUTH2");
    assert_eq!(
        o.sandbox.state.token_requests(),
        before + 2,
        "one app, one token per resource: Exchange's for both mailboxes and the message, \
         Graph's to read the client secret's expiry"
    );

    // A mailbox Exchange has not given the app: the reason says how to give it.
    let other = app_mailbox(&o, &app, "noreply@herald.example", "smtp").await;
    let refused = o.verify(&other).await;
    assert_eq!(refused["status"], "not_verified");
    assert_eq!(
        refused["status_reason"]["code"], "app_not_permitted",
        "{refused}"
    );
    let action = refused["status_reason"]["action"].as_str().unwrap();
    assert!(action.contains("Add-MailboxPermission") && action.contains("New-ServicePrincipal"));
    o.stop().await;
}

#[tokio::test]
async fn an_app_sends_with_graph_within_the_mailboxes_its_scope_allows() {
    let o = Outbox::start().await;
    let app = app(&o);
    let support = app_mailbox(&o, &app, SUPPORT, "graph").await;
    let shown = o
        .admin_json(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{support}"),
            None,
        )
        .await;
    assert_eq!(
        shown["scopes"],
        json!(["https://graph.microsoft.com/.default"])
    );
    // Without the application permission Mail.Send: Not Verified, with the fix.
    let refused = o.verify(&support).await;
    assert_eq!(
        refused["status_reason"]["code"], "graph_access_denied",
        "{refused}"
    );
    assert!(
        refused["status_reason"]["action"]
            .as_str()
            .unwrap()
            .contains("application permission Mail.Send")
    );
    o.sandbox
        .state
        .grant_app_permission(&app.client_id, herald::sandbox::APP_MAIL_SEND);
    // RBAC for Applications limits the app to Sales: Support stays out.
    o.sandbox
        .state
        .limit_app_to_mailboxes(&app.client_id, Some(vec![SALES.to_owned()]));
    assert_eq!(o.verify(&support).await["status"], "not_verified");
    o.sandbox.state.limit_app_to_mailboxes(&app.client_id, None);
    assert_eq!(o.verify(&support).await["status"], "verified");

    let id = o
        .accepted(
            &o.admin,
            json!({ "to": "a@example.com", "bcc": ["b@example.com"], "subject": "Graph, app-only", "text": "Hi" }),
        )
        .await;
    o.wait_for(&o.admin, &id, "sent").await;
    let got = o.received_by(SUPPORT);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mechanism, "graph");
    assert!(got[0].rcpt_to.contains(&"b@example.com".to_owned()));
    assert!(String::from_utf8_lossy(&got[0].raw).contains("Contoso Support"));
    o.stop().await;
}

#[tokio::test]
async fn a_wrong_app_secret_is_named_and_a_tenant_of_its_own_is_required() {
    let o = Outbox::start().await;
    let app = app(&o);
    let support = app_mailbox(&o, &app, SUPPORT, "smtp").await;
    o.switch(|s| s.client_secret_invalid = true);
    let refused = o.verify(&support).await;
    assert_eq!(
        refused["status_reason"]["code"], "client_secret_invalid",
        "{refused}"
    );
    o.switch(|s| s.client_secret_invalid = false);

    let common = o
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            &o.admin,
            Some(json!({
                "name": "Common", "auth": "oauth2", "provider": "microsoft", "tenant": "common",
                "username": "x@contoso.com", "credential": "app",
                "client_id": app.client_id, "client_secret": app.secret.expose_secret(),
            })),
        )
        .await;
    assert_eq!(common.status(), 422);
    assert!(common.text().await.unwrap().contains("AADSTS9001023"));
    o.stop().await;
}
