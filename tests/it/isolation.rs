//! The tenant-isolation matrix, generated from the OpenAPI document: every operation served at
//! `/api/v1/openapi.json` is called by every kind of caller against a victim organization's
//! real objects, and must answer what [`MATRIX`] says. An operation added to the API without a
//! row in [`MATRIX`] fails the test, and so does a row whose operation is gone: isolation is
//! decided for each route on purpose, not inherited by accident.
//!
//! Callers: another organization's admin key (the victim's ids are not found: 404), a member's
//! browser session (cookie and X-CSRF-Token, as the UI sends them), a sender key, a sender key
//! limited to another of the victim's mailboxes, the victim's own admin key (the success
//! status), and no credentials (401 everywhere). Besides the status, no answer to a caller who
//! may not see the victim's objects carries their names, addresses or subjects.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// A caller of the matrix, in [`MATRIX`]'s column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    /// An admin key of another organization.
    Foreign,
    /// A member of the victim organization, signed in to the web UI.
    Member,
    /// A sender key of the victim organization (it sent the victim's message).
    Sender,
    /// A sender key of the victim organization limited to its Billing mailbox.
    Limited,
    /// An admin key of the victim organization.
    Owner,
    /// No credentials at all.
    Anonymous,
}

const CALLERS: [Caller; 5] = [
    Caller::Foreign,
    Caller::Member,
    Caller::Sender,
    Caller::Limited,
    Caller::Owner,
];

/// One row: the operation as `METHOD /path` (as in the OpenAPI document), the status each caller
/// gets in the order foreign admin, member session, sender key, key limited to another mailbox,
/// the organization's own admin key, and the JSON body sent (`{caller}` is replaced by the
/// caller's name, `{mailbox}` by the id of the mailbox every `{id}` of `/mailboxes` names).
/// Every route answers 401 without credentials; that column is checked without being written.
///
/// A path's `{id}` is the victim's object of the collection the path names (see `victim_ids`).
/// Adding a route is one line here. Calls expected to change something (a non-GET answered 2xx)
/// run one after another in this order, DELETEs last; all others run at once.
type Row = (&'static str, [u16; 5], Option<&'static str>);

#[rustfmt::skip]
const MATRIX: &[Row] = &[
    // route                                          foreign member sender limited owner   body
    ("GET /api/v1/me",                                [200, 200, 200, 200, 200], None),
    ("GET /api/v1/users",                             [200, 200, 403, 403, 200], None),
    ("POST /api/v1/users",                            [201, 403, 403, 403, 201], Some(r#"{"email":"new-{caller}@example.org","password":"a long enough password","role":"member"}"#)),
    ("GET /api/v1/users/{id}",                        [404, 200, 403, 403, 200], None),
    ("PATCH /api/v1/users/{id}",                      [404, 403, 403, 403, 200], Some(r#"{"role":"member"}"#)),
    ("DELETE /api/v1/users/{id}",                     [404, 403, 403, 403, 204], None),
    ("GET /api/v1/api-keys",                          [200, 200, 403, 403, 200], None),
    ("POST /api/v1/api-keys",                         [422, 403, 403, 403, 201], Some(r#"{"name":"key-{caller}","role":"sender","mailboxes":["{mailbox}"]}"#)),
    ("GET /api/v1/api-keys/{id}",                     [404, 200, 403, 403, 200], None),
    ("DELETE /api/v1/api-keys/{id}",                  [404, 403, 403, 403, 200], None),
    ("GET /api/v1/audit",                             [200, 403, 403, 403, 200], None),
    ("GET /api/v1/mailboxes",                         [200, 200, 200, 200, 200], None),
    ("POST /api/v1/mailboxes",                        [201, 403, 403, 403, 201], Some(r#"{"name":"mbx-{caller}","auth":"basic","host":"smtp.example.org","port":587,"security":"starttls","username":"mbx-{caller}@example.org","password":"a password"}"#)),
    ("GET /api/v1/mailboxes/{id}",                    [404, 200, 200, 404, 200], None),
    ("PATCH /api/v1/mailboxes/{id}",                  [404, 403, 403, 403, 200], Some(r#"{"signature":"Regards from {caller}"}"#)),
    ("DELETE /api/v1/mailboxes/{id}",                 [404, 403, 403, 403, 204], None),
    ("POST /api/v1/mailboxes/{id}/authorize",         [404, 403, 403, 403, 200], None),
    ("GET /api/v1/mailboxes/{id}/authorization",      [404, 200, 403, 403, 200], None),
    // The victim's custom provider names no device endpoint: 422 device_code_unsupported.
    ("POST /api/v1/mailboxes/{id}/authorize/device",  [404, 403, 403, 403, 422], None),
    ("POST /api/v1/mailboxes/{id}/verify",            [404, 403, 403, 403, 200], None),
    ("GET /api/v1/mailboxes/{id}/certificate",        [404, 200, 403, 403, 200], None),
    ("POST /api/v1/mailboxes/{id}/certificate/renew", [404, 403, 403, 403, 200], None),
    ("POST /api/v1/mailboxes/{id}/test-message",      [404, 403, 403, 403, 502], Some(r#"{"to":"someone@example.org"}"#)),
    ("GET /api/v1/messages",                          [200, 200, 200, 200, 200], None),
    ("POST /api/v1/messages",                         [422, 403, 202, 403, 202], Some(r#"{"mailbox":"{mailbox}","to":["someone@example.org"],"subject":"From {caller}","text":"Hello"}"#)),
    ("GET /api/v1/messages/{id}",                     [404, 200, 200, 404, 200], None),
    ("POST /api/v1/messages/{id}/cancel",             [404, 403, 200, 404, 200], None),
    ("PUT /api/v1/organizations/{id}/default-sender", [403, 403, 403, 403, 403], Some(r#"{"allowed":true}"#)),
    ("GET /api/v1/organization",                      [200, 200, 403, 403, 200], None),
    ("PATCH /api/v1/organization",                    [200, 403, 403, 403, 200], Some(r#"{"no_mailbox_policy":"hold"}"#)),
    ("GET /api/v1/alerts",                            [200, 200, 403, 403, 200], None),
    ("POST /api/v1/alerts/{id}/dismiss",              [404, 403, 403, 403, 204], None),
    ("GET /api/v1/organization/alert-webhook",        [200, 403, 403, 403, 200], None),
    ("PUT /api/v1/organization/alert-webhook",        [200, 403, 403, 403, 200], Some(r#"{"url":"https://hooks.example.org/herald/{caller}"}"#)),
    ("DELETE /api/v1/organization/alert-webhook",     [204, 403, 403, 403, 204], None),
    ("GET /api/v1/relay-credentials",                 [200, 200, 403, 403, 200], None),
    ("POST /api/v1/relay-credentials",                [422, 403, 403, 403, 201], Some(r#"{"name":"relay-{caller}","mailbox":"{mailbox}"}"#)),
    ("GET /api/v1/relay-credentials/{id}",            [404, 200, 403, 403, 200], None),
    ("DELETE /api/v1/relay-credentials/{id}",         [404, 403, 403, 403, 204], None),
];

/// Text that only the victim organization's objects carry: a caller who may not see them must
/// never receive it. Every name of the victim's carries `victim`; nothing of the foreign
/// organization's does.
const VICTIM_MARK: &str = "victim";
/// What the key limited to Billing must not see: the Support mailbox and its mail.
const SUPPORT_MARKS: [&str; 3] = ["victim-support", "support@victim", "victim subject"];

/// The victim organization's objects and the callers' credentials.
struct World {
    app: TestApp,
    /// A path's collection (`mailboxes`, `users`, …) → the victim's object in it.
    ids: BTreeMap<&'static str, String>,
    foreign: String,
    sender: String,
    limited: String,
    owner: String,
    member: (reqwest::Client, String),
    /// One client without cookies for every key and for no credentials.
    api: reqwest::Client,
}

async fn world() -> World {
    let app = spawn_app().await;
    let org = app.org("Victimcorp").await;
    let owner = app.key(org, "admin").await;
    let member = app.user(org, "member@victim.example", "member").await;
    app.user(org, "admin@victim.example", "admin").await;
    let other = app.org("Othercorp").await;
    let foreign = app.key(other, "admin").await;
    // So that its lists are not empty: an answer of the right shape proves more than `[]`.
    app.user(other, "someone@othercorp.example", "member").await;

    let client = app.client();
    let post = |path: &str, key: &str, body: Value| {
        client
            .post(app.url(path))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let created = |response: reqwest::Response| async move {
        let status = response.status();
        let body: Value = response.json().await.expect("JSON answer");
        assert!(status.is_success(), "setup failed: {status} {body}");
        body
    };
    let oauth2 = |name: &str, username: &str| {
        json!({
            "name": name,
            "auth": "oauth2",
            "provider": "custom",
            "host": "smtp.victim.example",
            "authorization_url": "https://login.victim.example/authorize",
            "token_url": "https://login.victim.example/token",
            "username": username,
            "client_id": "victim-client",
            "client_auth": "certificate",
            "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access"],
        })
    };
    let support = created(
        post(
            "/api/v1/mailboxes",
            &owner,
            oauth2("victim-support", "support@victim.example"),
        )
        .await
        .unwrap(),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let billing = created(
        post(
            "/api/v1/mailboxes",
            &owner,
            oauth2("victim-billing", "billing@victim.example"),
        )
        .await
        .unwrap(),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sender_key = created(
        post(
            "/api/v1/api-keys",
            &owner,
            json!({"name": "victim-sender", "role": "sender"}),
        )
        .await
        .unwrap(),
    )
    .await;
    let limited = created(
        post(
            "/api/v1/api-keys",
            &owner,
            json!({"name": "victim-limited", "role": "sender", "mailboxes": [billing]}),
        )
        .await
        .unwrap(),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let sender = sender_key["key"].as_str().unwrap().to_owned();
    let message = created(
        post(
            "/api/v1/messages",
            &sender,
            json!({"mailbox": support, "to": ["customer@victim.example"],
                   "subject": "Victim subject", "text": "Victim text"}),
        )
        .await
        .unwrap(),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let relay = created(
        post(
            "/api/v1/relay-credentials",
            &owner,
            json!({"name": "victim-relay", "mailbox": support}),
        )
        .await
        .unwrap(),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    created(
        client
            .put(app.url("/api/v1/organization/alert-webhook"))
            .bearer_auth(&owner)
            .json(&json!({"url": "https://hooks.victim.example/herald"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let alert = {
        let mut conn = app.store().conn().await.unwrap();
        herald::store::alerts::raise(
            &mut conn,
            &herald::store::alerts::NewAlert {
                org_id: org,
                kind: "keepalive_failed",
                dedup_key: "isolation".into(),
                mailbox_id: Some(support.parse().unwrap()),
                message_id: None,
                title: "victim-support needs attention".into(),
                detail: "victim detail".into(),
                action: None,
            },
            herald::clock::system_now(),
        )
        .await
        .unwrap();
        herald::store::alerts::open(&mut conn, org)
            .await
            .unwrap()
            .remove(0)
            .id
    };
    // An authorization attempt, so that the latest one can be read.
    created(
        client
            .post(app.url(&format!("/api/v1/mailboxes/{support}/authorize")))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let member_session = app.signed_in("member@victim.example").await;
    let ids = BTreeMap::from([
        ("mailboxes", support),
        ("messages", message),
        ("users", member.id.to_string()),
        ("api-keys", sender_key["id"].as_str().unwrap().to_owned()),
        ("relay-credentials", relay),
        ("alerts", alert),
        ("organizations", org.to_string()),
    ]);
    let api = app.client();
    World {
        app,
        ids,
        foreign,
        sender,
        limited,
        owner,
        member: member_session,
        api,
    }
}

/// Every operation of the document, as `METHOD /path`.
async fn documented_operations(app: &TestApp) -> BTreeSet<String> {
    let doc: Value = app
        .client()
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations
}

/// One call of the matrix and what came back.
struct Outcome {
    route: &'static str,
    caller: Caller,
    expected: u16,
    status: u16,
    body: String,
}

async fn call(world: &World, row: &'static Row, caller: Caller, expected: u16) -> Outcome {
    let (route, _, body) = *row;
    let (method, template) = route.split_once(' ').expect("METHOD /path");
    let collection = template
        .trim_start_matches("/api/v1/")
        .split('/')
        .next()
        .unwrap_or_default();
    let path = if template.contains("{id}") {
        let id = world.ids.get(collection).unwrap_or_else(|| {
            panic!("`{route}`: no victim object for `/{collection}`; create one in world() and name it in `ids`")
        });
        template.replace("{id}", id)
    } else {
        template.to_owned()
    };
    let name = format!("{caller:?}").to_lowercase();
    let (client, auth) = match caller {
        Caller::Member => (world.member.0.clone(), None),
        Caller::Foreign => (world.api.clone(), Some(&world.foreign)),
        Caller::Sender => (world.api.clone(), Some(&world.sender)),
        Caller::Limited => (world.api.clone(), Some(&world.limited)),
        Caller::Owner => (world.api.clone(), Some(&world.owner)),
        Caller::Anonymous => (world.api.clone(), None),
    };
    let mut request = client.request(method.parse().unwrap(), world.app.url(&path));
    if let Some(key) = auth {
        request = request.bearer_auth(key);
    }
    if caller == Caller::Member {
        request = request.header("X-CSRF-Token", &world.member.1);
    }
    if let Some(body) = body {
        let body = body
            .replace("{caller}", &name)
            .replace("{mailbox}", &world.ids["mailboxes"]);
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    Outcome {
        route,
        caller,
        expected,
        status: response.status().as_u16(),
        body: response.text().await.unwrap_or_default(),
    }
}

/// What this caller must not read in this answer.
fn leaks(outcome: &Outcome) -> Option<&'static str> {
    let body = outcome.body.to_lowercase();
    let marks: &[&'static str] = match outcome.caller {
        Caller::Foreign | Caller::Anonymous => &[VICTIM_MARK],
        Caller::Limited => &SUPPORT_MARKS,
        // An answer of the victim's own callers may name the victim's objects, but a refusal
        // tells nothing about the object refused.
        _ if outcome.status >= 400 => &SUPPORT_MARKS,
        _ => &[],
    };
    marks.iter().copied().find(|mark| body.contains(mark))
}

#[tokio::test]
async fn every_route_isolates_organizations_and_roles_as_the_matrix_says() {
    let world = world().await;

    // The matrix and the document describe the same operations.
    let documented = documented_operations(&world.app).await;
    let tabled: BTreeSet<String> = MATRIX.iter().map(|(r, ..)| (*r).to_owned()).collect();
    let missing: Vec<_> = documented.difference(&tabled).collect();
    assert!(
        missing.is_empty(),
        "these operations of /api/v1/openapi.json have no row in MATRIX (tests/it/isolation.rs): \
         add one line each saying what another organization's admin, a member, a sender key, a \
         key limited to another mailbox and the organization's admin get: {missing:?}"
    );
    let stale: Vec<_> = tabled.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "MATRIX (tests/it/isolation.rs) has rows for operations the API no longer documents: \
         remove them or fix their spelling: {stale:?}"
    );
    assert_eq!(tabled.len(), MATRIX.len(), "MATRIX names a route twice");

    // Calls that may change something run one at a time, in the table's order and DELETEs
    // last, so that a success does not take away what a later call needs; every other call
    // (refusals, reads) runs at once.
    let mut at_once = Vec::new();
    let mut in_order = Vec::new();
    for row in MATRIX {
        let (route, expected, _) = row;
        at_once.push((row, Caller::Anonymous, 401));
        for (caller, &status) in CALLERS.iter().zip(expected) {
            let changes = !route.starts_with("GET ") && (200..300).contains(&status);
            if changes {
                in_order.push((row, *caller, status));
            } else {
                at_once.push((row, *caller, status));
            }
        }
    }
    in_order.sort_by_key(|(row, ..)| row.0.starts_with("DELETE "));
    let world = std::sync::Arc::new(world);
    // A few at a time: enough to be quick, few enough to stay under any connection cap.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut calls = tokio::task::JoinSet::new();
    for (row, caller, status) in at_once {
        let (world, slots) = (world.clone(), slots.clone());
        calls.spawn(async move {
            let _slot = slots.acquire().await.expect("semaphore open");
            call(&world, row, caller, status).await
        });
    }
    let mut outcomes = calls.join_all().await;
    for (row, caller, status) in in_order {
        outcomes.push(call(&world, row, caller, status).await);
    }
    outcomes.sort_by_key(|o| (o.route, o.caller));

    let mut wrong = Vec::new();
    for outcome in &outcomes {
        if outcome.status != outcome.expected {
            wrong.push(format!(
                "{:<48} {:?}: expected {}, got {} {}",
                outcome.route,
                outcome.caller,
                outcome.expected,
                outcome.status,
                outcome.body.chars().take(200).collect::<String>()
            ));
        }
        if let Some(mark) = leaks(outcome) {
            wrong.push(format!(
                "{:<48} {:?}: the answer ({}) carries the victim's `{mark}`: {}",
                outcome.route,
                outcome.caller,
                outcome.status,
                outcome.body.chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} calls broke the isolation matrix:\n{}",
        wrong.len(),
        outcomes.len(),
        wrong.join("\n")
    );
    // The figure for the record: every operation × 6 callers.
    println!(
        "isolation matrix: {} operations x {} callers = {} calls",
        MATRIX.len(),
        CALLERS.len() + 1,
        outcomes.len()
    );
    assert_eq!(outcomes.len(), MATRIX.len() * (CALLERS.len() + 1));
}
