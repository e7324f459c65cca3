//! `/api/v1/mailboxes`: presets, validation guards, write-only sealed secrets, identity changes
//! that drop tokens, the default mailbox, roles, isolation and the audit log.

use herald::domain::MailboxId;
use herald::domain::mailbox::secret_fields;
use herald::keys;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app, spawn_app_with_sandbox};

const SECRET: &str = "abc8Q~Very.Secret_Value-0123456789xyz";

async fn post(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client()
        .post(app.url("/api/v1/mailboxes"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn patch(app: &TestApp, key: &str, id: &str, body: Value) -> reqwest::Response {
    app.client()
        .patch(app.url(&format!("/api/v1/mailboxes/{id}")))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn microsoft(name: &str) -> Value {
    json!({
        "name": name,
        "auth": "oauth2",
        "provider": "microsoft",
        "tenant": "contoso.com",
        "username": "support@contoso.com",
        "from_name": "Contoso Support",
        "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret": SECRET,
        "reply_to": "help@contoso.com",
        "signature": "--\nContoso Support",
        "client_secret_expires_at": "2027-06-30",
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_microsoft_mailbox_gets_its_presets_and_never_shows_its_secret() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;
    let created = post(&app, &key, microsoft("Support")).await;
    assert_eq!(created.status(), 201);
    let text = created.text().await.unwrap();
    assert!(!text.contains(SECRET), "the secret came back: {text}");
    let m: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        m["authorization_url"],
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize"
    );
    assert_eq!(
        m["token_url"],
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    );
    // Entra's issuer carries the tenant's GUID, not the domain typed: no issuer is assumed.
    assert!(m["issuer"].is_null(), "{m}");
    assert_eq!(
        (
            m["host"].as_str(),
            m["port"].as_u64(),
            m["security"].as_str()
        ),
        (Some("smtp.office365.com"), Some(587), Some("starttls"))
    );
    assert_eq!(
        m["scopes"],
        json!([
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
            "openid",
            "profile",
            "email"
        ])
    );
    assert_eq!(m["sign_in_account"], "support@contoso.com");
    assert_eq!(
        m["redirect_uri"],
        format!("{}/web/um/smtp/redirect", app.base)
    );
    assert_eq!(m["status"], "not_verified");
    assert_eq!(m["status_reason"]["code"], "authorization_required");
    assert_eq!(m["has_client_secret"], true);
    assert_eq!(m["client_secret_expires_at"], "2027-06-30");

    let listed = app
        .client()
        .get(app.url("/api/v1/mailboxes"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("Support") && !listed.contains(SECRET));

    // Sealed in the database, never in plaintext.
    let raw = app.db.raw_bytes().await;
    assert!(!contains(&raw, SECRET.as_bytes()));
    let mut conn = app.store().conn().await.unwrap();
    let opened = keys::get_secret(
        &mut conn,
        &app.state.access.keys,
        m["id"].as_str().unwrap(),
        secret_fields::CLIENT_SECRET,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(opened.expose_secret(), SECRET);
    drop(conn);
    app.stop().await;
}

#[tokio::test]
async fn guards_refuse_secret_ids_private_token_urls_and_line_breaks() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;

    let mut guid = microsoft("A");
    guid["client_secret"] = json!("8c3a4a9e-2f4b-4f1e-9a6e-3b1f0c2d4e5f");
    let body = problem(post(&app, &key, guid).await, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "client_secret");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("looks like the Secret ID")
    );

    let custom = |token_url: &str| {
        json!({
            "name": "Custom", "auth": "oauth2", "provider": "custom", "host": "smtp.example.com",
            "username": "a@example.com", "client_id": "id", "client_secret": SECRET, "scopes": ["mail"],
            "authorization_url": "https://idp.example.com/authorize", "token_url": token_url,
        })
    };
    for url in [
        "https://10.1.2.3/token",
        "https://169.254.169.254/latest",
        "http://idp.example.com/token",
        "https://127.0.0.1/token",
        "https://[::1]/token",
        "https://localhost/token",
    ] {
        let body = problem(
            post(&app, &key, custom(url)).await,
            422,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "token_url", "{url}: {body}");
    }

    for field in [
        "name",
        "username",
        "from_name",
        "reply_to",
        "host",
        "client_id",
        "tenant",
    ] {
        let mut bad = microsoft("B");
        bad[field] = json!("x@contoso.com\r\nBcc: victim@example.com");
        let body = problem(post(&app, &key, bad).await, 422, "validation_failed").await;
        assert!(
            body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{field}: {body}"
        );
    }

    let mut port = microsoft("C");
    port["port"] = json!(70000);
    assert_eq!(
        problem(post(&app, &key, port).await, 422, "validation_failed").await["errors"][0]["field"],
        "port"
    );
    let mut plain = microsoft("D");
    plain["security"] = json!("none");
    assert_eq!(
        problem(post(&app, &key, plain).await, 422, "validation_failed").await["errors"][0]["field"],
        "security"
    );
    let mut sandbox = microsoft("E");
    sandbox["provider"] = json!("sandbox");
    assert_eq!(
        problem(post(&app, &key, sandbox).await, 422, "validation_failed").await["errors"][0]["field"],
        "provider"
    );

    // Nothing was written.
    let list: Value = app
        .client()
        .get(app.url("/api/v1/mailboxes"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn changing_the_identity_drops_the_tokens_and_a_patch_without_secret_keeps_it() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;
    let m: Value = post(&app, &key, microsoft("Support"))
        .await
        .json()
        .await
        .unwrap();
    let id = m["id"].as_str().unwrap().to_owned();
    let put_tokens = || async {
        let mut conn = app.store().conn().await.unwrap();
        for field in [secret_fields::ACCESS_TOKEN, secret_fields::REFRESH_TOKEN] {
            keys::put_secret(
                &mut conn,
                &app.state.access.keys,
                &id,
                field,
                &SecretString::from("token"),
                herald::clock::system_now(),
            )
            .await
            .unwrap();
        }
    };
    let token_count = || async {
        let mut conn = app.store().conn().await.unwrap();
        let mut n = 0;
        for field in [secret_fields::ACCESS_TOKEN, secret_fields::REFRESH_TOKEN] {
            n += usize::from(
                herald::store::secrets::get(&mut conn, &id, field)
                    .await
                    .unwrap()
                    .is_some(),
            );
        }
        n
    };

    // Cosmetic changes keep tokens and the secret.
    put_tokens().await;
    let changed: Value = patch(
        &app,
        &key,
        &id,
        json!({"from_name": "Help Desk", "signature": null}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(changed["from_name"], "Help Desk");
    assert!(changed["signature"].is_null());
    assert_eq!(changed["has_client_secret"], true);
    assert_eq!(token_count().await, 2);

    // The account changes: tokens go, and the mailbox must be authorized again.
    let changed: Value = patch(&app, &key, &id, json!({"username": "sales@contoso.com"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        changed["sign_in_account"], "sales@contoso.com",
        "the sign-in account follows the username"
    );
    assert_eq!(changed["status"], "not_verified");
    assert_eq!(changed["status_reason"]["code"], "reauthorization_required");
    assert_eq!(token_count().await, 0);

    // So does a new tenant, which also moves the endpoints: the client secret must come with
    // it, since it would be sent to the new tenant's token endpoint.
    put_tokens().await;
    let body = problem(
        patch(&app, &key, &id, json!({"tenant": "fabrikam.com"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "client_secret");
    let changed: Value = patch(
        &app,
        &key,
        &id,
        json!({"tenant": "fabrikam.com", "client_secret": SECRET}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        changed["token_url"],
        "https://login.microsoftonline.com/fabrikam.com/oauth2/v2.0/token"
    );
    assert_eq!(token_count().await, 0);

    // Bad input in a patch is refused with the field, and nothing changes.
    let body = problem(
        patch(
            &app,
            &key,
            &id,
            json!({"client_secret": "8c3a4a9e-2f4b-4f1e-9a6e-3b1f0c2d4e5f"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "client_secret");
    let mut conn = app.store().conn().await.unwrap();
    let secret = keys::get_secret(
        &mut conn,
        &app.state.access.keys,
        &id,
        secret_fields::CLIENT_SECRET,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(secret.expose_secret(), SECRET);
    drop(conn);
    app.stop().await;
}

#[tokio::test]
async fn names_are_unique_and_one_mailbox_is_the_default() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;
    let mut first = microsoft("Support");
    first["default"] = json!(true);
    let first: Value = post(&app, &key, first).await.json().await.unwrap();
    let dup = problem(
        post(&app, &key, microsoft("SUPPORT")).await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(dup["errors"][0]["field"], "name");
    let mut second = microsoft("Sales");
    second["default"] = json!(true);
    let second: Value = post(&app, &key, second).await.json().await.unwrap();
    assert_eq!(second["default"], true);
    let first: Value = app
        .client()
        .get(app.url(&format!(
            "/api/v1/mailboxes/{}",
            first["id"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["default"], false, "the new default replaces the old");
    app.stop().await;
}

#[tokio::test]
async fn only_admins_change_mailboxes_and_other_organizations_see_none() {
    let app = spawn_app().await;
    let contoso = app.org("Contoso").await;
    let fabrikam = app.org("Fabrikam").await;
    let admin = app.key(contoso, "admin").await;
    let sender = app.key(contoso, "sender").await;
    let foreign = app.key(fabrikam, "admin").await;
    app.user(contoso, "member@contoso.com", "member").await;
    let m: Value = post(&app, &admin, microsoft("Support"))
        .await
        .json()
        .await
        .unwrap();
    let id = m["id"].as_str().unwrap();

    problem(post(&app, &sender, microsoft("X")).await, 403, "forbidden").await;
    let (browser, csrf) = app.signed_in("member@contoso.com").await;
    assert_eq!(
        browser
            .get(app.url("/api/v1/mailboxes"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let denied = browser
        .delete(app.url(&format!("/api/v1/mailboxes/{id}")))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    problem(denied, 403, "forbidden").await;

    problem(
        app.client()
            .get(app.url(&format!("/api/v1/mailboxes/{id}")))
            .bearer_auth(&foreign)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    problem(
        patch(&app, &foreign, id, json!({"name": "Mine"})).await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.client()
            .delete(app.url(&format!("/api/v1/mailboxes/{id}")))
            .bearer_auth(&foreign)
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    let theirs: Value = app
        .client()
        .get(app.url("/api/v1/mailboxes"))
        .bearer_auth(&foreign)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs["items"].as_array().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_mailbox_forgets_its_secrets_and_every_change_is_audited() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;
    let m: Value = post(&app, &key, microsoft("Support"))
        .await
        .json()
        .await
        .unwrap();
    let id = m["id"].as_str().unwrap().to_owned();
    patch(&app, &key, &id, json!({"reply_to": "desk@contoso.com"})).await;
    let deleted = app
        .client()
        .delete(app.url(&format!("/api/v1/mailboxes/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let mut conn = app.store().conn().await.unwrap();
    assert!(
        herald::store::secrets::get(&mut conn, &id, secret_fields::CLIENT_SECRET)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        herald::store::mailboxes::get(&mut conn, org, id.parse::<MailboxId>().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    drop(conn);
    let audit: Value = app
        .client()
        .get(app.url("/api/v1/audit?limit=3"))
        .bearer_auth(&key)
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
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["mailbox.delete", "mailbox.update", "mailbox.create"]
    );
    assert!(!audit.to_string().contains(SECRET));
    app.stop().await;
}

#[tokio::test]
async fn a_basic_mailbox_needs_a_password_and_the_sandbox_preset_points_at_the_sandbox() {
    let (app, sandbox) = spawn_app_with_sandbox().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;
    let basic = json!({"name": "Scanner", "auth": "basic", "provider": "microsoft", "username": "scan@contoso.com"});
    let body = problem(
        post(&app, &key, basic.clone()).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "password");
    let mut with_password = basic;
    with_password["password"] = json!("device password");
    let m: Value = post(&app, &key, with_password).await.json().await.unwrap();
    assert_eq!(m["has_password"], true);
    assert_eq!(m["status_reason"]["code"], "verification_required");

    let m: Value = post(
        &app,
        &key,
        json!({"name": "Sandbox", "auth": "oauth2", "provider": "sandbox", "username": "support@contoso.com", "client_id": "x", "client_secret": SECRET}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(m["tenant"], "sandbox");
    assert_eq!(m["token_url"], sandbox.oauth.token_endpoint());
    assert_eq!(m["issuer"], sandbox.oauth.issuer());
    assert_eq!(m["port"], sandbox.smtp_addr.port());
    app.stop().await;
}

#[tokio::test]
async fn a_national_cloud_is_saved_and_moving_to_another_takes_its_endpoints_host_and_scopes() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;
    let mut body = microsoft("Support");
    body["cloud"] = json!("usgov");
    body["transport"] = json!("graph");
    let created = post(&app, &key, body).await;
    assert_eq!(created.status(), 201);
    let m: Value = created.json().await.unwrap();
    assert_eq!(m["cloud"], "usgov");
    assert_eq!(
        m["token_url"],
        "https://login.microsoftonline.us/contoso.com/oauth2/v2.0/token"
    );
    assert_eq!(m["host"], "smtp.office365.us");
    assert_eq!(m["graph_url"], "https://graph.microsoft.us");
    assert_eq!(m["scopes"][0], "https://graph.microsoft.us/Mail.Send");

    let id = m["id"].as_str().unwrap();
    let moved = patch(
        &app,
        &key,
        id,
        json!({"cloud": "global", "client_secret": SECRET}),
    )
    .await;
    assert_eq!(moved.status(), 200);
    let m: Value = moved.json().await.unwrap();
    assert_eq!(m["cloud"], "global");
    assert_eq!(
        m["authorization_url"],
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize"
    );
    assert_eq!(m["host"], "smtp.office365.com");
    assert_eq!(m["graph_url"], "https://graph.microsoft.com");
    assert_eq!(m["scopes"][0], "https://graph.microsoft.com/Mail.Send");
    assert_eq!(m["status_reason"]["code"], "reauthorization_required");

    let wrong = post(
        &app,
        &key,
        json!({"name": "G", "auth": "oauth2", "provider": "google",
        "cloud": "china", "username": "a@example.com", "client_id": "c", "client_secret": SECRET}),
    )
    .await;
    let answer = problem(wrong, 422, "validation_failed").await;
    assert_eq!(answer["errors"][0]["field"], "cloud");
}

#[tokio::test]
async fn custom_with_microsofts_endpoints_pasted_is_the_microsoft_mailbox_and_custom_needs_scopes()
{
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;
    // The guide's fields, with the endpoints copied from the app registration's Endpoints tab.
    let created = post(&app, &key, json!({
        "name": "Pasted", "auth": "oauth2", "provider": "custom",
        "host": "smtp.office365.com", "port": 587,
        "authorization_url": "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize",
        "token_url": "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token",
        "client_id": "11111111-2222-3333-4444-555555555555", "client_secret": SECRET,
        "username": "support@contoso.com", "reply_to": "help@contoso.com", "signature": "Contoso",
    }))
    .await;
    assert_eq!(created.status(), 201);
    let m: Value = created.json().await.unwrap();
    let preset: Value = post(&app, &key, microsoft("Preset"))
        .await
        .json()
        .await
        .unwrap();
    for field in [
        "provider",
        "tenant",
        "cloud",
        "scopes",
        "host",
        "port",
        "token_url",
        "graph_url",
    ] {
        assert_eq!(m[field], preset[field], "{field}");
    }
    assert_eq!(m["provider"], "microsoft");

    // Another server: the scopes come from the admin, and are asked for when missing.
    let other = json!({
        "name": "Other", "auth": "oauth2", "provider": "custom", "host": "smtp.example.org",
        "authorization_url": "https://idp.example.org/authorize",
        "token_url": "https://idp.example.org/token", "client_id": "c", "client_secret": SECRET,
        "username": "a@example.org",
    });
    let missing = problem(
        post(&app, &key, other.clone()).await,
        422,
        "validation_failed",
    )
    .await;
    assert!(
        missing["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "scopes"),
        "{missing}"
    );
    let mut given = other;
    given["scopes"] = json!(["mail.send", "offline_access"]);
    let created = post(&app, &key, given).await;
    assert_eq!(created.status(), 201);
    let m: Value = created.json().await.unwrap();
    assert_eq!(m["provider"], "custom");
    assert_eq!(m["scopes"], json!(["mail.send", "offline_access"]));
}

#[tokio::test]
async fn a_high_volume_email_mailbox_gets_hves_limits() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;
    let created = post(&app, &key, json!({
        "name": "Bulk", "auth": "basic", "provider": "microsoft", "host": "smtp-hve.office365.com",
        "port": 587, "username": "hve-alerts@contoso.com", "password": "an HVE account password",
    }))
    .await;
    assert_eq!(created.status(), 201);
    let m: Value = created.json().await.unwrap();
    assert_eq!(m["effective_limits"]["messages_per_minute"], Value::Null);
    assert_eq!(m["effective_limits"]["recipients_per_day"], Value::Null);
    assert_eq!(m["effective_limits"]["recipients_per_message"], 50);
}
