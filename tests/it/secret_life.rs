//! A client secret's whole life against the sandbox: a new secret tried before it is kept (and
//! a refused one leaving the old at work), its expiry date following it, the date read from
//! the app registration when the app may, a next secret taking over during a rotation, and
//! refresh requests naming their scopes.

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use time::Duration;

use crate::helpers::problem;
use crate::outbox::{Outbox, SUPPORT};

/// Every token request refreshes: a token lives 60 seconds, less than Herald's 5-minute margin.
fn short_tokens(o: &Outbox) {
    o.switch(|s| s.access_token_lifetime_secs = 60);
}

async fn mailbox(o: &Outbox, id: &str) -> Value {
    o.admin_json(
        reqwest::Method::GET,
        &format!("/api/v1/mailboxes/{id}"),
        None,
    )
    .await
}

async fn patch(o: &Outbox, id: &str, body: Value) -> reqwest::Response {
    o.call(
        reqwest::Method::PATCH,
        &format!("/api/v1/mailboxes/{id}"),
        &o.admin,
        Some(body),
    )
    .await
}

fn client_id(shown: &Value) -> String {
    shown["client_id"].as_str().unwrap().to_owned()
}

/// A new secret of the app registration, ending `days` from now.
fn new_secret(o: &Outbox, client_id: &str, days: i64) -> herald::sandbox::PasswordCredential {
    o.sandbox
        .state
        .add_client_secret(
            client_id,
            "rotation",
            o.sandbox.state.now() + Duration::days(days),
        )
        .unwrap()
}

/// The Secret ID of the secret the registration was made with.
fn first_secret_id(o: &Outbox, client_id: &str) -> String {
    o.sandbox.state.client_secrets(client_id)[0].key_id.clone()
}

async fn field_error(response: reqwest::Response) -> String {
    let body = problem(response, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "client_secret", "{body}");
    body["errors"][0]["message"].as_str().unwrap().to_owned()
}

/// A Verified app-only SMTP mailbox of a new app registration, and that registration.
async fn app_mailbox(
    o: &Outbox,
    name: &str,
    permissions: &[&str],
) -> (String, herald::sandbox::SandboxClient) {
    let app = o.sandbox.state.register_client("Herald (app-only)", vec![]);
    for p in [herald::sandbox::APP_SMTP_SEND_AS_APP]
        .iter()
        .chain(permissions)
    {
        assert!(o.sandbox.state.grant_app_permission(&app.client_id, p));
    }
    o.sandbox.state.grant_app_mailbox(&app.client_id, SUPPORT);
    let created = o
        .call(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            &o.admin,
            Some(json!({
                "name": name, "auth": "oauth2", "provider": "sandbox", "username": SUPPORT,
                "credential": "app", "client_id": app.client_id,
                "client_secret": app.secret.expose_secret(),
                "client_secret_expires_at": "2030-01-31",
            })),
        )
        .await;
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, app)
}

#[tokio::test]
async fn a_new_secret_is_tried_first_and_a_refused_one_leaves_the_old_one_at_work() {
    let o = Outbox::start().await;
    short_tokens(&o);
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let app = client_id(&mailbox(&o, &id).await);

    // A Value the app registration does not hold: AADSTS7000215, said on the field.
    let wrong = field_error(
        patch(
            &o,
            &id,
            json!({"client_secret": "abc8Q~not.a.secret.of.this.app"}),
        )
        .await,
    )
    .await;
    assert!(wrong.contains("AADSTS7000215"), "{wrong}");
    assert!(wrong.contains("not the Secret ID"), "{wrong}");
    // A secret that has expired: AADSTS7000222.
    let expired = new_secret(&o, &app, -1);
    let refused = field_error(
        patch(
            &o,
            &id,
            json!({"client_secret": expired.value().expose_secret()}),
        )
        .await,
    )
    .await;
    assert!(refused.contains("has expired (AADSTS7000222)"), "{refused}");
    // The Secret ID is caught by its shape, before any request.
    let before = o.sandbox.state.token_requests();
    let id_pasted =
        field_error(patch(&o, &id, json!({"client_secret": expired.key_id})).await).await;
    assert!(id_pasted.contains("Secret ID"), "{id_pasted}");
    assert_eq!(o.sandbox.state.token_requests(), before);
    // The old secret is still stored and still works.
    assert_eq!(o.verify(&id).await["status"], "verified");

    // A good one is kept and the mailbox stays Verified; once the old one is deleted from
    // the app registration, the mailbox goes on with the new one.
    let good = new_secret(&o, &app, 365);
    let kept = patch(
        &o,
        &id,
        json!({"client_secret": good.value().expose_secret()}),
    )
    .await;
    assert_eq!(kept.status(), 200, "{}", kept.text().await.unwrap());
    let kept: Value = kept.json().await.unwrap();
    assert_eq!(kept["status"], "verified", "{kept}");
    o.sandbox
        .state
        .remove_client_secret(&app, &first_secret_id(&o, &app));
    assert_eq!(o.verify(&id).await["status"], "verified");
    o.stop().await;
}

#[tokio::test]
async fn a_mailbox_refused_for_its_expired_secret_works_again_with_a_new_one_without_authorize() {
    let o = Outbox::start().await;
    short_tokens(&o);
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let app = client_id(&mailbox(&o, &id).await);
    o.sandbox.state.set_client_secret_end(
        &app,
        &first_secret_id(&o, &app),
        o.sandbox.state.now() - Duration::hours(1),
    );
    let failed = o.verify(&id).await;
    assert_eq!(
        failed["status_reason"]["code"], "client_secret_expired",
        "{failed}"
    );

    let good = new_secret(&o, &app, 365);
    let restored = patch(
        &o,
        &id,
        json!({"client_secret": good.value().expose_secret()}),
    )
    .await;
    assert_eq!(restored.status(), 200, "{}", restored.text().await.unwrap());
    let restored: Value = restored.json().await.unwrap();
    assert_eq!(restored["status"], "verified", "{restored}");
    assert!(restored["status_reason"].is_null(), "{restored}");
    assert_eq!(o.verify(&id).await["status"], "verified");
    o.stop().await;
}

#[tokio::test]
async fn an_app_only_mailbox_tries_a_new_secret_with_client_credentials() {
    let o = Outbox::start().await;
    short_tokens(&o);
    let (id, app) = app_mailbox(&o, "Support", &[]).await;
    assert_eq!(o.verify(&id).await["status"], "verified");
    let wrong = field_error(
        patch(
            &o,
            &id,
            json!({"client_secret": "abc8Q~not.a.secret.of.this.app"}),
        )
        .await,
    )
    .await;
    assert!(wrong.contains("AADSTS7000215"), "{wrong}");
    assert_eq!(o.verify(&id).await["status"], "verified");

    // Every secret refused (the switch): Not Verified; then Microsoft takes a new one again.
    o.switch(|s| s.client_secret_invalid = true);
    assert_eq!(
        o.verify(&id).await["status_reason"]["code"],
        "client_secret_invalid"
    );
    o.switch(|s| s.client_secret_invalid = false);
    let good = new_secret(&o, &app.client_id, 365);
    let restored: Value = patch(
        &o,
        &id,
        json!({"client_secret": good.value().expose_secret()}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(restored["status"], "verified", "{restored}");
    o.stop().await;
}

#[tokio::test]
async fn a_mailbox_never_authorized_just_stores_a_new_secret() {
    let o = Outbox::start().await;
    let registration = o
        .sandbox
        .state
        .register_client("Herald", vec![o.app.state.access.config.redirect_uri()]);
    let created: Value = o
        .admin_json(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(json!({
                "name": "Support", "auth": "oauth2", "provider": "sandbox", "username": SUPPORT,
                "client_id": registration.client_id,
                "client_secret": registration.secret.expose_secret(),
            })),
        )
        .await;
    let id = created["id"].as_str().unwrap();
    let before = o.sandbox.state.token_requests();
    let stored = patch(&o, id, json!({"client_secret": "abc8Q~not.checked.yet"})).await;
    assert_eq!(stored.status(), 200, "{}", stored.text().await.unwrap());
    assert_eq!(
        o.sandbox.state.token_requests(),
        before,
        "nothing to try it with"
    );
    o.stop().await;
}

#[tokio::test]
async fn the_expiry_date_follows_the_secret_and_its_alerts_resolve() {
    let o = Outbox::start().await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let app = client_id(&mailbox(&o, &id).await);
    let store = &o.app.state.access.store;
    let now = o.app.state.access.now();
    let soon = (now.date() + Duration::days(5)).to_string();
    let typed: Value = patch(&o, &id, json!({"client_secret_expires_at": soon}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(typed["client_secret_expires_at"], soon.as_str());
    assert_eq!(typed["client_secret_expiry_source"], "typed");
    herald::services::alerts::check_secret_expiry(store, now)
        .await
        .unwrap();
    let open = open_secret_alerts(&o).await;
    assert_eq!(open.len(), 1);
    assert!(
        open[0]["title"]
            .as_str()
            .unwrap()
            .contains("expires in 5 days")
    );

    // A new secret without its date: the date is unknown, and the warning about the old one
    // goes.
    let good = new_secret(&o, &app, 365);
    let replaced: Value = patch(
        &o,
        &id,
        json!({"client_secret": good.value().expose_secret()}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(replaced["client_secret_expires_at"].is_null(), "{replaced}");
    assert!(replaced["client_secret_expiry_source"].is_null());
    assert!(open_secret_alerts(&o).await.is_empty());

    // With its date, the date is kept.
    let other = new_secret(&o, &app, 365);
    let later = (now.date() + Duration::days(200)).to_string();
    let replaced: Value = patch(
        &o,
        &id,
        json!({"client_secret": other.value().expose_secret(), "client_secret_expires_at": later}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(replaced["client_secret_expires_at"], later.as_str());
    o.stop().await;
}

#[tokio::test]
async fn a_date_moved_past_30_days_resolves_the_warning_in_the_expiry_pass() {
    let o = Outbox::start().await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let store = &o.app.state.access.store;
    let now = o.app.state.access.now();
    let soon = (now.date() + Duration::days(3)).to_string();
    assert_eq!(
        patch(&o, &id, json!({"client_secret_expires_at": soon}))
            .await
            .status(),
        200
    );
    herald::services::alerts::check_secret_expiry(store, now)
        .await
        .unwrap();
    assert_eq!(open_secret_alerts(&o).await.len(), 1);
    // Moved behind the API's back (as another instance would): the pass itself resolves it.
    sqlx::query("UPDATE mailboxes SET client_secret_expires_at = $1 WHERE id = $2")
        .bind((now.date() + Duration::days(90)).to_string())
        .bind(&id)
        .execute(o.app.store().pool())
        .await
        .unwrap();
    herald::services::alerts::check_secret_expiry(store, now)
        .await
        .unwrap();
    assert!(open_secret_alerts(&o).await.is_empty());
    o.stop().await;
}

async fn open_secret_alerts(o: &Outbox) -> Vec<Value> {
    let list = o
        .admin_json(reqwest::Method::GET, "/api/v1/alerts", None)
        .await;
    list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("client_secret_"))
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_expiry_is_read_from_the_app_registration_when_the_app_may() {
    let o = Outbox::start().await;
    // Without Application.Read.All: Graph refuses, the typed date stays.
    let (plain, _) = app_mailbox(&o, "Support", &[]).await;
    let verified = o.verify(&plain).await;
    assert_eq!(verified["status"], "verified");
    assert_eq!(verified["client_secret_expires_at"], "2030-01-31");
    assert_eq!(verified["client_secret_expiry_source"], "typed");

    // With it: the end date of the secret in use, by its hint.
    let (reader, app) =
        app_mailbox(&o, "Reader", &[herald::sandbox::APP_APPLICATION_READ_ALL]).await;
    let end = o.sandbox.state.client_secrets(&app.client_id)[0].end.date();
    let verified = o.verify(&reader).await;
    assert_eq!(
        verified["client_secret_expires_at"],
        end.to_string(),
        "{verified}"
    );
    assert_eq!(verified["client_secret_expiry_source"], "microsoft");

    // A new secret: its own date, read at once.
    let good = new_secret(&o, &app.client_id, 400);
    let replaced: Value = patch(
        &o,
        &reader,
        json!({"client_secret": good.value().expose_secret()}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        replaced["client_secret_expires_at"],
        good.end.date().to_string(),
        "{replaced}"
    );
    assert_eq!(replaced["client_secret_expiry_source"], "microsoft");
    o.stop().await;
}

#[tokio::test]
async fn a_delegated_mailbox_reads_the_expiry_with_the_scope_it_asked_for() {
    let o = Outbox::start().await;
    let id = o
        .oauth_mailbox_with(
            &o.admin,
            "Support",
            SUPPORT,
            json!({"scopes": [
                herald::sandbox::SMTP_SEND_SCOPE, "offline_access", "openid", "profile", "email",
                herald::sandbox::GRAPH_APPLICATION_READ_ALL_SCOPE,
            ]}),
        )
        .await;
    let shown = mailbox(&o, &id).await;
    let end = o.sandbox.state.client_secrets(&client_id(&shown))[0]
        .end
        .date();
    assert_eq!(
        shown["client_secret_expires_at"],
        end.to_string(),
        "{shown}"
    );
    assert_eq!(shown["client_secret_expiry_source"], "microsoft");
    o.stop().await;
}

#[tokio::test]
async fn the_next_secret_takes_over_when_the_one_in_use_expires() {
    let o = Outbox::start().await;
    short_tokens(&o);
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let app = client_id(&mailbox(&o, &id).await);
    let next = new_secret(&o, &app, 365);
    let staged: Value = patch(
        &o,
        &id,
        json!({"next_client_secret": next.value().expose_secret(), "client_secret_expires_at": "2030-01-01"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(staged["has_next_client_secret"], true, "{staged}");
    // The one in use still works: it stays in use, the next one waits.
    assert_eq!(o.verify(&id).await["status"], "verified");
    assert_eq!(mailbox(&o, &id).await["has_next_client_secret"], true);

    // It expires: the next one takes over, the old one (and its date) is forgotten.
    o.sandbox.state.set_client_secret_end(
        &app,
        &first_secret_id(&o, &app),
        o.sandbox.state.now() - Duration::hours(1),
    );
    let after = o.verify(&id).await;
    assert_eq!(after["status"], "verified", "{after}");
    assert_eq!(after["has_next_client_secret"], false, "{after}");
    assert_eq!(after["has_client_secret"], true);
    assert!(after["client_secret_expires_at"].is_null(), "{after}");
    // The new one is the one in use now: the old one can go from the app registration.
    o.sandbox
        .state
        .remove_client_secret(&app, &first_secret_id(&o, &app));
    assert_eq!(o.verify(&id).await["status"], "verified");
    let audit = o
        .call(reqwest::Method::GET, "/api/v1/audit", &o.admin, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(audit.contains("mailbox.credential_promoted"), "{audit}");
    o.stop().await;
}

#[tokio::test]
async fn an_app_only_mailbox_switches_to_the_next_secret_when_the_one_in_use_is_removed() {
    let o = Outbox::start().await;
    short_tokens(&o);
    let (id, app) = app_mailbox(&o, "Support", &[]).await;
    let next = new_secret(&o, &app.client_id, 365);
    assert_eq!(
        patch(
            &o,
            &id,
            json!({"next_client_secret": next.value().expose_secret()})
        )
        .await
        .status(),
        200
    );
    assert_eq!(o.verify(&id).await["status"], "verified");
    o.sandbox
        .state
        .remove_client_secret(&app.client_id, &app.secret_id);
    let after = o.verify(&id).await;
    assert_eq!(after["status"], "verified", "{after}");
    assert_eq!(after["has_next_client_secret"], false);
    o.stop().await;
}

#[tokio::test]
async fn a_next_secret_is_checked_for_its_shape_and_never_shown() {
    let o = Outbox::start().await;
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let body = problem(
        patch(
            &o,
            &id,
            json!({"next_client_secret": "8c3a4a9e-2f4b-4f1e-9a6e-3b1f0c2d4e5f"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "next_client_secret", "{body}");
    let shown = patch(&o, &id, json!({"next_client_secret": "abc8Q~the.next.one"}))
        .await
        .text()
        .await
        .unwrap();
    assert!(!shown.contains("the.next.one"), "{shown}");
    assert!(shown.contains("\"has_next_client_secret\":true"), "{shown}");
    // Another app registration: the next secret was the old app's, and is dropped.
    let other = o.sandbox.state.register_client("Other", vec![]);
    let moved: Value = patch(&o, &id, json!({"client_id": other.client_id}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(moved["has_next_client_secret"], false, "{moved}");
    o.stop().await;
}

#[tokio::test]
async fn a_refresh_sends_the_scopes_it_was_granted() {
    let o = Outbox::start().await;
    short_tokens(&o);
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let scopes = mailbox(&o, &id).await["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(o.verify(&id).await["status"], "verified");
    let sent = o.sandbox.state.refresh_scopes();
    assert_eq!(sent.last().cloned().flatten(), Some(scopes));
    o.stop().await;
}

#[tokio::test]
async fn a_form_that_sends_every_field_unchanged_still_has_its_new_secret_tried() {
    let o = Outbox::start().await;
    short_tokens(&o);
    let id = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    let shown = mailbox(&o, &id).await;
    // What the Edit window sends: every field, as it was, and the new secret.
    let mut body = json!({"client_secret": "abc8Q~not.a.secret.of.this.app"});
    for field in [
        "host",
        "port",
        "security",
        "username",
        "authorization_url",
        "token_url",
        "client_id",
        "client_auth",
        "transport",
        "credential",
        "cloud",
        "reply_to",
        "signature",
    ] {
        body[field] = shown[field].clone();
    }
    body["sign_in_account"] = Value::Null;
    let wrong = field_error(patch(&o, &id, body).await).await;
    assert!(wrong.contains("AADSTS7000215"), "{wrong}");
    assert_eq!(mailbox(&o, &id).await["status"], "verified");
}
