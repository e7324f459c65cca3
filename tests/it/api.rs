//! The JSON API: authentication, roles, organization isolation, API keys, validation errors,
//! pagination, the audit log, health checks and the OpenAPI document.

use herald::crypto::token_digest;
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::helpers::{TestApp, problem, spawn_app};

async fn get(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    app.client()
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.client()
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app.client().get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn requests_without_valid_credentials_get_401() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let key = app.key(org, "admin").await;

    let none = app
        .client()
        .get(app.url("/api/v1/me"))
        .send()
        .await
        .unwrap();
    assert!(none.headers().contains_key("www-authenticate"));
    problem(none, 401, "unauthenticated").await;
    let basic = app
        .client()
        .get(app.url("/api/v1/me"))
        .header("authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    problem(basic, 401, "invalid_authorization").await;
    let malformed = get(&app, "hk_tooshort", "/api/v1/me").await;
    let body = problem(malformed, 401, "malformed_api_key").await;
    assert!(body["detail"].as_str().unwrap().contains("43"));
    let unknown = get(&app, &format!("hk_{}", "A".repeat(43)), "/api/v1/me").await;
    problem(unknown, 401, "invalid_api_key").await;

    let ok = get(&app, &key, "/api/v1/me").await;
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_is_shown_once_and_stored_only_as_a_digest() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let admin = app.key(org, "admin").await;

    let created = post(
        &app,
        &admin,
        "/api/v1/api-keys",
        json!({ "name": "ticketing", "role": "sender" }),
    )
    .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("hk_") && key.len() == 46);
    assert_eq!(created["prefix"], key[..11]);
    let id = created["id"].as_str().unwrap();

    // Never shown again.
    let listed = get(&app, &admin, "/api/v1/api-keys")
        .await
        .text()
        .await
        .unwrap();
    let one = get(&app, &admin, &format!("/api/v1/api-keys/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains(id) && !listed.contains(&key));
    assert!(!one.contains(&key) && !one.contains("\"key\""));

    // Stored as its SHA-256 digest, and nowhere in plaintext.
    let mut conn = app.store().conn().await.unwrap();
    let row = sqlx::query("SELECT digest, prefix FROM api_keys WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("digest"), token_digest(&key));
    drop(conn);
    let raw = app.db.raw_bytes().await;
    assert!(
        !contains(&raw, key.as_bytes()),
        "the key's plaintext is in the database"
    );
    assert!(contains(&raw, token_digest(&key).as_bytes()));

    // It works, then stops working once revoked.
    assert_eq!(get(&app, &key, "/api/v1/me").await.status(), 200);
    let revoked = app
        .client()
        .delete(app.url(&format!("/api/v1/api-keys/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let revoked: Value = revoked.json().await.unwrap();
    assert!(revoked["revoked_at"].is_string());
    problem(get(&app, &key, "/api/v1/me").await, 401, "invalid_api_key").await;
    app.stop().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn members_and_sender_keys_cannot_change_settings() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "member@contoso.com", "member").await;
    let sender = app.key(org, "sender").await;
    let admin = app.key(org, "admin").await;
    let new_user = json!({ "email": "new@contoso.com", "password": "a long enough password", "role": "member" });

    // Sender key: may say who it is, nothing more here.
    assert_eq!(get(&app, &sender, "/api/v1/me").await.status(), 200);
    problem(
        post(&app, &sender, "/api/v1/users", new_user.clone()).await,
        403,
        "forbidden",
    )
    .await;
    problem(
        post(
            &app,
            &sender,
            "/api/v1/api-keys",
            json!({"name": "x", "role": "admin"}),
        )
        .await,
        403,
        "forbidden",
    )
    .await;
    problem(get(&app, &sender, "/api/v1/users").await, 403, "forbidden").await;
    problem(get(&app, &sender, "/api/v1/audit").await, 403, "forbidden").await;

    // Member: reads users and keys, changes nothing, no audit log.
    let (browser, csrf) = app.signed_in("member@contoso.com").await;
    assert_eq!(
        browser
            .get(app.url("/api/v1/users"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        browser
            .get(app.url("/api/v1/api-keys"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let denied = browser
        .post(app.url("/api/v1/users"))
        .header("x-csrf-token", &csrf)
        .json(&new_user)
        .send()
        .await
        .unwrap();
    problem(denied, 403, "forbidden").await;
    let denied = browser
        .post(app.url("/api/v1/api-keys"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"name": "x", "role": "sender"}))
        .send()
        .await
        .unwrap();
    problem(denied, 403, "forbidden").await;
    problem(
        browser.get(app.url("/api/v1/audit")).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;

    // Admin key: allowed.
    assert_eq!(
        post(&app, &admin, "/api/v1/users", new_user).await.status(),
        201
    );
    app.stop().await;
}

#[tokio::test]
async fn another_organizations_records_answer_404() {
    let app = spawn_app().await;
    let contoso = app.org("Contoso").await;
    let fabrikam = app.org("Fabrikam").await;
    let contoso_admin = app.key(contoso, "admin").await;
    let fabrikam_user = app.user(fabrikam, "eve@fabrikam.com", "admin").await;
    let fabrikam_key: Value = post(
        &app,
        &app.key(fabrikam, "admin").await,
        "/api/v1/api-keys",
        json!({"name": "f", "role": "sender"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let user_path = format!("/api/v1/users/{}", fabrikam_user.id);
    let key_path = format!("/api/v1/api-keys/{}", fabrikam_key["id"].as_str().unwrap());

    problem(
        get(&app, &contoso_admin, &user_path).await,
        404,
        "not_found",
    )
    .await;
    let patch = app
        .client()
        .patch(app.url(&user_path))
        .bearer_auth(&contoso_admin)
        .json(&json!({"role": "member"}))
        .send()
        .await
        .unwrap();
    problem(patch, 404, "not_found").await;
    let delete = app
        .client()
        .delete(app.url(&user_path))
        .bearer_auth(&contoso_admin)
        .send()
        .await
        .unwrap();
    problem(delete, 404, "not_found").await;
    problem(get(&app, &contoso_admin, &key_path).await, 404, "not_found").await;
    let revoke = app
        .client()
        .delete(app.url(&key_path))
        .bearer_auth(&contoso_admin)
        .send()
        .await
        .unwrap();
    problem(revoke, 404, "not_found").await;

    // Untouched, and absent from Contoso's lists and audit log.
    let fabrikam_admin = app.key(fabrikam, "admin").await;
    let user: Value = get(&app, &fabrikam_admin, &user_path)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(user["role"], "admin");
    let key: Value = get(&app, &fabrikam_admin, &key_path)
        .await
        .json()
        .await
        .unwrap();
    assert!(key["revoked_at"].is_null());
    let users = get(&app, &contoso_admin, "/api/v1/users")
        .await
        .text()
        .await
        .unwrap();
    assert!(!users.contains("fabrikam"));
    let audit = get(&app, &contoso_admin, "/api/v1/audit")
        .await
        .text()
        .await
        .unwrap();
    assert!(!audit.contains("fabrikam") && !audit.contains("Fabrikam"));
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_problem_details_naming_the_field() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let admin = app.key(org, "admin").await;
    app.user(org, "ann@contoso.com", "member").await;

    let dup = post(
        &app,
        &admin,
        "/api/v1/users",
        json!({"email": "Ann@Contoso.com", "password": "a long enough password", "role": "member"}),
    )
    .await;
    let body = problem(dup, 409, "conflict").await;
    assert_eq!(body["errors"][0]["field"], "email");

    let empty = post(
        &app,
        &admin,
        "/api/v1/users",
        json!({"email": "b@contoso.com", "password": "", "role": "member"}),
    )
    .await;
    let body = problem(empty, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "password");
    assert_eq!(body["errors"][0]["message"], "must not be empty");

    let several = post(
        &app,
        &admin,
        "/api/v1/users",
        json!({"email": "nope", "password": "short", "role": "owner"}),
    )
    .await;
    let body = problem(several, 422, "validation_failed").await;
    let fields: Vec<_> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password", "role"]);

    let long = post(
        &app,
        &admin,
        "/api/v1/api-keys",
        json!({"name": "x".repeat(101), "role": "sender"}),
    )
    .await;
    let body = problem(long, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "name");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too long")
    );

    let long_email = post(&app, &admin, "/api/v1/users", json!({"email": format!("{}@contoso.com", "a".repeat(300)), "password": "a long enough password", "role": "member"})).await;
    assert_eq!(
        problem(long_email, 422, "validation_failed").await["errors"][0]["field"],
        "email"
    );

    let unknown = post(
        &app,
        &admin,
        "/api/v1/api-keys",
        json!({"name": "x", "role": "sender", "scopes": []}),
    )
    .await;
    assert_eq!(
        problem(unknown, 422, "validation_failed").await["errors"][0]["field"],
        "scopes"
    );
    let missing = post(&app, &admin, "/api/v1/api-keys", json!({"name": "x"})).await;
    assert_eq!(
        problem(missing, 422, "validation_failed").await["errors"][0]["field"],
        "role"
    );

    let malformed = app
        .client()
        .post(app.url("/api/v1/api-keys"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    problem(malformed, 400, "malformed_json").await;
    let form = app
        .client()
        .post(app.url("/api/v1/api-keys"))
        .bearer_auth(&admin)
        .form(&[("name", "x")])
        .send()
        .await
        .unwrap();
    problem(form, 415, "unsupported_media_type").await;
    let huge = app
        .client()
        .post(app.url("/api/v1/api-keys"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);

    // Nothing half-written: still exactly one user and one key.
    let users: Value = get(&app, &admin, "/api/v1/users")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users["items"].as_array().unwrap().len(), 1);
    let keys: Value = get(&app, &admin, "/api/v1/api-keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["items"].as_array().unwrap().len(), 1);

    problem(
        get(&app, &admin, "/api/v1/no-such-thing").await,
        404,
        "no_such_route",
    )
    .await;
    problem(
        get(&app, &admin, "/api/v1/users/not-a-uuid").await,
        404,
        "not_found",
    )
    .await;
    let put = app
        .client()
        .put(app.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(put, 405, "method_not_allowed").await;
    let page = app
        .client()
        .get(app.url("/no/such/page"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    assert!(page.text().await.unwrap().contains("Page not found"));
    app.stop().await;
}

#[tokio::test]
async fn lists_are_paginated_with_an_opaque_cursor() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let admin = app.key(org, "admin").await;
    for i in 0..5 {
        app.user(org, &format!("user{i}@contoso.com"), "member")
            .await;
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/users?limit=2".to_owned();
    loop {
        let page: Value = get(&app, &admin, &path).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|u| u["email"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/users?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        (0..5)
            .map(|i| format!("user{i}@contoso.com"))
            .collect::<Vec<_>>()
    );

    let bad_cursor = get(&app, &admin, "/api/v1/users?cursor=garbage").await;
    assert_eq!(
        problem(bad_cursor, 422, "validation_failed").await["errors"][0]["field"],
        "cursor"
    );
    let bad_limit = get(&app, &admin, "/api/v1/users?limit=0").await;
    assert_eq!(
        problem(bad_limit, 422, "validation_failed").await["errors"][0]["field"],
        "limit"
    );
    let not_number = get(&app, &admin, "/api/v1/users?limit=many").await;
    assert_eq!(
        problem(not_number, 422, "validation_failed").await["errors"][0]["field"],
        "limit"
    );
    app.stop().await;
}

#[tokio::test]
async fn changes_are_in_the_audit_log_with_who_and_from_where() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "ann@contoso.com", "admin").await;
    let (browser, csrf) = app.signed_in("ann@contoso.com").await;

    let created: Value = browser
        .post(app.url("/api/v1/users"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"email": "bob@contoso.com", "password": "a long enough password", "role": "member"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob = created["id"].as_str().unwrap();
    let patched = browser
        .patch(app.url(&format!("/api/v1/users/{bob}")))
        .header("x-csrf-token", &csrf)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let deleted = browser
        .delete(app.url(&format!("/api/v1/users/{bob}")))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let audit: Value = browser
        .get(app.url("/api/v1/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = audit["items"].as_array().unwrap();
    let newest: Vec<_> = items
        .iter()
        .take(3)
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(newest, ["user.delete", "user.update", "user.create"]);
    let create = &items[2];
    assert_eq!(create["actor"]["kind"], "user");
    assert_eq!(create["actor"]["label"], "ann@contoso.com");
    assert_eq!(create["source"], "127.0.0.1");
    assert_eq!(create["target"]["id"], bob);
    assert_eq!(create["detail"]["email"], "bob@contoso.com");
    assert!(create["at"].is_string());
    assert!(!audit.to_string().contains("a long enough password"));
    app.stop().await;
}

#[tokio::test]
async fn the_last_admin_cannot_be_demoted_or_removed() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let ann = app.user(org, "ann@contoso.com", "admin").await;
    let key = app.key(org, "admin").await;
    let path = format!("/api/v1/users/{}", ann.id);
    let demote = app
        .client()
        .patch(app.url(&path))
        .bearer_auth(&key)
        .json(&json!({"role": "member"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(demote, 409, "conflict").await["errors"][0]["field"],
        "role"
    );
    let delete = app
        .client()
        .delete(app.url(&path))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    problem(delete, 409, "refused").await;
    app.stop().await;
}

#[tokio::test]
async fn a_new_password_signs_the_user_out_everywhere() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let bob = app.user(org, "bob@contoso.com", "member").await;
    let key = app.key(org, "admin").await;
    let (browser, _) = app.signed_in("bob@contoso.com").await;
    let changed = app
        .client()
        .patch(app.url(&format!("/api/v1/users/{}", bob.id)))
        .bearer_auth(&key)
        .json(&json!({"password": "a brand new password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    problem(
        browser.get(app.url("/api/v1/me")).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    assert_eq!(
        app.sign_in(&app.browser(), "bob@contoso.com", "a brand new password")
            .await
            .status(),
        303
    );
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .client()
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/api/v1/me", &["get"][..]),
        ("/api/v1/users", &["get", "post"]),
        ("/api/v1/users/{id}", &["get", "patch", "delete"]),
        ("/api/v1/api-keys", &["get", "post"]),
        ("/api/v1/api-keys/{id}", &["get", "delete"]),
        ("/api/v1/audit", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn concurrent_demotions_never_leave_an_organization_without_an_admin() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    let ann = app.user(org, "ann@contoso.com", "admin").await;
    let bob = app.user(org, "bob@contoso.com", "admin").await;
    let key = app.key(org, "admin").await;
    for _ in 0..5 {
        let demote = |id: String| {
            let request = app
                .client()
                .patch(app.url(&format!("/api/v1/users/{id}")))
                .bearer_auth(&key)
                .json(&json!({"role": "member"}));
            async move { request.send().await.unwrap().status().as_u16() }
        };
        let (a, b) = tokio::join!(demote(ann.id.to_string()), demote(bob.id.to_string()));
        let mut statuses = [a, b];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "exactly one demotion may succeed");
        let users: Value = get(&app, &key, "/api/v1/users").await.json().await.unwrap();
        let admins = users["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["role"] == "admin")
            .count();
        assert_eq!(admins, 1);
        // Restore both admins for the next round.
        for id in [ann.id, bob.id] {
            let promote = app
                .client()
                .patch(app.url(&format!("/api/v1/users/{id}")))
                .bearer_auth(&key)
                .json(&json!({"role": "admin"}))
                .send()
                .await
                .unwrap();
            assert_eq!(promote.status(), 200);
        }
    }
    app.stop().await;
}
