//! The Relay credentials page: rows in words with mailbox names, tenant isolation, read-only
//! members, no password or digest on the page, how a device connects (or that the relay is not
//! configured), and the session calls the page's script makes to add and delete.

use herald::domain::relay::RelayCredential;
use herald::domain::{Actor, MailboxId, OrgId};
use herald::services::relay::{self, NewRelayCredential};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::helpers::{TestApp, contoso, mailbox, page, problem, spawn_app, spawn_app_with};

const RELAY: &str = "/settings/system/outgoing-mail/relay";
const OUTGOING: &str = "/settings/system/outgoing-mail";

/// Issues a credential as the CLI would; answers it with its password.
async fn credential(
    app: &TestApp,
    org: OrgId,
    name: &str,
    mailboxes: &[MailboxId],
    networks: &[&str],
    from_policy: &str,
    keep_reply_to: bool,
) -> (RelayCredential, String) {
    let (c, password) = relay::create(
        app.store(),
        org,
        NewRelayCredential {
            name: name.into(),
            mailboxes: mailboxes.iter().map(ToString::to_string).collect(),
            allowed_networks: networks.iter().map(|n| (*n).to_owned()).collect(),
            from_policy: Some(from_policy.into()),
            keep_reply_to: Some(keep_reply_to),
            network_only: None,
        },
        &Actor::cli(),
        herald::clock::system_now(),
    )
    .await
    .expect("create a relay credential");
    (c, password.expect("a password").expose_secret().to_owned())
}

/// The page's text with askama's escapes undone, so assertions read like what a user sees.
fn words(html: &str) -> String {
    html.replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

/// The rows of the credentials table, one string of text per row.
fn rows(html: &str) -> Vec<String> {
    let Some(start) = html.find("<tbody>") else {
        return Vec::new();
    };
    let end = html[start..].find("</tbody>").unwrap() + start;
    html[start..end]
        .split("<tr data-credential=")
        .skip(1)
        .map(words)
        .collect()
}

#[tokio::test]
async fn credentials_are_listed_in_words_with_their_mailboxes_by_name() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let (scanner, scanner_password) = credential(
        &app,
        c.org,
        "Scanner, 2nd floor",
        &[c.support, c.billing],
        &["192.168.10.0/24", "10.0.0.7"],
        "rewrite",
        true,
    )
    .await;
    let (printer, printer_password) =
        credential(&app, c.org, "Printer", &[c.billing], &[], "rewrite", false).await;
    let (crm, crm_password) =
        credential(&app, c.org, "Old CRM", &[c.support], &[], "refuse", true).await;
    let used_at = time::macros::datetime!(2030-01-02 03:04 UTC);
    {
        let mut conn = app.store().conn().await.unwrap();
        herald::store::relay::touch(&mut conn, &printer.id, used_at)
            .await
            .unwrap();
    }

    for who in ["admin@contoso.com", "member@contoso.com"] {
        let (browser, _) = app.signed_in(who).await;
        let (status, html) = page(&browser, &app, RELAY).await;
        assert_eq!(status, 200, "{who} reads the relay credentials");
        let rows = rows(&html);
        assert_eq!(rows.len(), 3, "{html}");
        let find = |id: &str| {
            rows.iter()
                .find(|r| r.starts_with(&format!("\"{id}\"")))
                .unwrap_or_else(|| panic!("no row for {id} in {html}"))
                .clone()
        };

        let row = find(&scanner.id);
        assert!(row.contains("<td>Scanner, 2nd floor</td>"), "{row}");
        assert!(row.contains(&format!("<code>{}</code>", scanner.username)));
        assert!(row.contains("<td>Support, Billing</td>"), "{row}");
        assert!(
            row.contains("<td>192.168.10.0/24, 10.0.0.7/32</td>"),
            "{row}"
        );
        assert!(
            row.contains("<td>Sent as the mailbox; the device's address becomes Reply-To</td>")
        );
        assert!(row.contains("<td>Never</td>"));

        let row = find(&printer.id);
        assert!(row.contains("<td>Billing</td>") && row.contains("<td>Anywhere</td>"));
        assert!(row.contains("<td>Sent as the mailbox</td>"), "{row}");
        assert!(row.contains("<td>2030-01-02 03:04</td>"), "{row}");
        assert!(!row.contains("Never"));

        let row = find(&crm.id);
        assert!(row.contains("<td>Support</td>") && row.contains("<td>Refused</td>"));

        // What was shown once stays unseen: neither the passwords nor what is stored of them.
        for password in [&scanner_password, &printer_password, &crm_password] {
            assert!(!html.contains(password.as_str()));
            assert!(!html.contains(&relay::password_digest(password)));
        }

        // Reachable from Settings › System and from Outgoing Mail, under the Settings tabs.
        let (_, outgoing) = page(&browser, &app, OUTGOING).await;
        assert!(outgoing.contains(&format!("<a href=\"{RELAY}\">Relay credentials</a>")));
        let nav = &html[html.find("aria-label=\"Settings\"").unwrap()..];
        let nav = &nav[..nav.find("</nav>").unwrap()];
        assert!(
            nav.contains("<a href=\"/settings/system\">System</a>"),
            "{nav}"
        );
        let (_, system) = page(&browser, &app, "/settings/system").await;
        assert!(
            system.find("Message log").unwrap() < system.find("Relay credentials").unwrap(),
            "{system}"
        );
        assert!(system.contains(&format!("<a href=\"{RELAY}\">Relay credentials</a>")));
    }
    app.stop().await;
}

#[tokio::test]
async fn admins_get_add_and_delete_and_members_read_only() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let (scanner, _) = credential(&app, c.org, "Scanner", &[c.support], &[], "rewrite", true).await;

    let (admin, _) = app.signed_in("admin@contoso.com").await;
    let (_, html) = page(&admin, &app, RELAY).await;
    assert!(html.contains("id=\"relay-add\""), "admins see Add");
    assert!(html.contains(&format!("data-relay-delete=\"{}\"", scanner.id)));
    assert!(html.contains("<th scope=\"col\">Actions</th>"));
    // The Add window offers the organization's mailboxes by name, and a slot for each field
    // the API can name in a 422.
    let add = words(&html[html.find("id=\"relay-form\"").unwrap()..]);
    for (id, name) in [(c.support, "Support"), (c.billing, "Billing")] {
        assert!(
            add.contains(&format!("name=\"mailboxes\" value=\"{id}\"")),
            "{add}"
        );
        assert!(add.contains(&format!("> {name}")));
    }
    for field in [
        "name",
        "mailboxes",
        "allowed_networks",
        "from_policy",
        "form",
    ] {
        assert!(
            add.contains(&format!("data-error-for=\"{field}\"")),
            "{field}"
        );
    }
    assert!(add.contains("cannot show it again"));
    assert!(html.contains("<script src=\"/static/relay.js\"></script>"));
    let script = app
        .client()
        .get(app.url("/static/relay.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().contains("/relay-credentials"));

    let (member, _) = app.signed_in("member@contoso.com").await;
    let (status, html) = page(&member, &app, RELAY).await;
    assert_eq!(status, 200);
    assert_eq!(rows(&html).len(), 1);
    assert!(!html.contains("relay-add") && !html.contains(">Add<"));
    assert!(!html.contains("data-relay-delete") && !html.contains(">Delete<"));
    assert!(!html.contains("relay-form") && !html.contains("relay.js"));
    assert!(
        html.contains("Only an admin of the organization can add or delete relay credentials.")
    );

    // Signed out, the page asks for a sign-in first.
    let response = app.browser().get(app.url(RELAY)).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        format!("/login?next={RELAY}").as_str()
    );
    app.stop().await;
}

#[tokio::test]
async fn another_organizations_credentials_and_mailboxes_never_appear() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let (ours, _) = credential(
        &app,
        c.org,
        "Contoso scanner",
        &[c.support],
        &[],
        "rewrite",
        true,
    )
    .await;
    let fabrikam = app.org("Fabrikam").await;
    let fabrikam_key = app.key(fabrikam, "admin").await;
    let theirs_mailbox = mailbox(&app, &fabrikam_key, "Fabrikam sales", "sales@fabrikam.com").await;
    let (theirs, _) = credential(
        &app,
        fabrikam,
        "Fabrikam printer",
        &[theirs_mailbox],
        &[],
        "refuse",
        false,
    )
    .await;

    for who in ["admin@contoso.com", "member@contoso.com"] {
        let (browser, _) = app.signed_in(who).await;
        let (_, html) = page(&browser, &app, RELAY).await;
        let rows = rows(&html);
        assert_eq!(rows.len(), 1, "{html}");
        assert!(rows[0].contains(&ours.id) && rows[0].contains("Contoso scanner"));
        assert!(!html.contains(&theirs.id) && !html.contains(&theirs.username));
        assert!(!html.contains("Fabrikam") && !html.contains(&theirs_mailbox.to_string()));
    }
    app.stop().await;
}

#[tokio::test]
async fn the_page_says_plainly_when_the_relay_is_not_configured() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    credential(&app, c.org, "Scanner", &[c.support], &[], "rewrite", true).await;
    let (browser, _) = app.signed_in("member@contoso.com").await;
    let (_, html) = page(&browser, &app, RELAY).await;
    let text = words(&html);
    assert!(
        text.contains(
            "The relay is not configured on this installation, so devices cannot connect yet."
        ),
        "{text}"
    );
    assert!(text.contains("<code>HERALD_RELAY_LISTEN</code>"));
    assert!(!text.contains("STARTTLS on port"));
    app.stop().await;
}

#[tokio::test]
async fn the_page_shows_where_a_device_connects_when_the_relay_listens() {
    let app = spawn_app_with(|env| {
        env.insert("HERALD_RELAY_LISTEN".into(), "127.0.0.1:0".into());
        env.insert("HERALD_RELAY_TLS_LISTEN".into(), "127.0.0.1:0".into());
        env.insert("HERALD_RELAY_HOSTNAME".into(), "relay.contoso.test".into());
    })
    .await;
    assert!(app.relay_addr.is_some(), "the relay listens");
    let c = contoso(&app).await;
    credential(&app, c.org, "Scanner", &[c.support], &[], "rewrite", true).await;
    let (browser, _) = app.signed_in("member@contoso.com").await;
    let (_, html) = page(&browser, &app, RELAY).await;
    let text = words(&html);
    assert!(
        text.contains("<dt>Server</dt><dd><code>relay.contoso.test</code></dd>"),
        "{text}"
    );
    // Port 0 shows as the port actually bound.
    let (port, tls_port) = (
        app.relay_addr.unwrap().port(),
        app.relay_tls_addr.unwrap().port(),
    );
    assert!(text.contains(&format!("STARTTLS on port {port}")), "{text}");
    assert!(text.contains(&format!("TLS on port {tls_port}")), "{text}");
    assert!(text.contains("AUTH PLAIN or LOGIN, after STARTTLS"));
    assert!(!text.contains("not configured"));
    app.stop().await;
}

#[tokio::test]
async fn the_calls_the_page_makes_add_refuse_with_fields_and_delete() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let (admin, csrf) = app.signed_in("admin@contoso.com").await;

    // What the Add window sends, with a typo in the second network: the error names its line.
    let refused = admin
        .post(app.url("/api/v1/relay-credentials"))
        .header("x-csrf-token", &csrf)
        .json(&json!({
            "name": "Scanner",
            "mailboxes": [c.support.to_string()],
            "allowed_networks": ["192.168.10.0/24", "10.0.0.300"],
            "from_policy": "rewrite",
            "keep_reply_to": true,
        }))
        .send()
        .await
        .unwrap();
    let body = problem(refused, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "allowed_networks[1]", "{body}");

    let created = admin
        .post(app.url("/api/v1/relay-credentials"))
        .header("x-csrf-token", &csrf)
        .json(&json!({
            "name": "Scanner",
            "mailboxes": [c.billing.to_string(), c.support.to_string()],
            "allowed_networks": ["192.168.10.0/24"],
            "from_policy": "refuse",
            "keep_reply_to": false,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let (id, password) = (
        created["id"].as_str().unwrap(),
        created["password"].as_str().unwrap(),
    );
    assert!(!password.is_empty());

    let (_, html) = page(&admin, &app, RELAY).await;
    let listed = rows(&html);
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].contains("<td>Billing, Support</td>") && listed[0].contains("<td>Refused</td>")
    );
    assert!(!html.contains(password));

    // A member's session cannot add or delete, whatever the page would offer.
    let (member, member_csrf) = app.signed_in("member@contoso.com").await;
    let refused = member
        .delete(app.url(&format!("/api/v1/relay-credentials/{id}")))
        .header("x-csrf-token", &member_csrf)
        .send()
        .await
        .unwrap();
    problem(refused, 403, "forbidden").await;

    let deleted = admin
        .delete(app.url(&format!("/api/v1/relay-credentials/{id}")))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (_, html) = page(&admin, &app, RELAY).await;
    assert!(rows(&html).is_empty());
    assert!(html.contains("No relay credential yet. Click Add to issue one for a device."));
    app.stop().await;
}

#[tokio::test]
async fn an_admin_without_a_mailbox_is_sent_to_add_one_first() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "admin@contoso.com", "admin").await;
    let (admin, _) = app.signed_in("admin@contoso.com").await;
    let (status, html) = page(&admin, &app, RELAY).await;
    assert_eq!(status, 200);
    assert!(!html.contains("id=\"relay-add\""));
    assert!(words(&html).contains("add a mailbox on Outgoing Mail</a> first"));
    app.stop().await;
}
