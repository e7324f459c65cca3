//! The alerts banner of the web UI: every page with the settings frame shows the organization's
//! open alerts in words, escaped; admins dismiss one with a form that needs the session's CSRF
//! token and returns to the page; members read them only; another organization's alerts are
//! neither shown nor dismissable; a database error costs the banner, never the page.

use herald::domain::OrgId;
use herald::store::alerts::{self, NewAlert};

use crate::helpers::{TestApp, contoso, hidden_field, page, spawn_app};

const OUTGOING: &str = "/settings/system/outgoing-mail";
const RELAY: &str = "/settings/system/outgoing-mail/relay";
const LOG: &str = "/settings/system/outgoing-mail/messages";

/// Raises an alert as Herald's triggers do; answers its id.
async fn raise(
    app: &TestApp,
    org: OrgId,
    title: &str,
    detail: &str,
    action: Option<&str>,
) -> String {
    let mut conn = app.store().conn().await.unwrap();
    let new = alerts::raise(
        &mut conn,
        &NewAlert {
            org_id: org,
            kind: "mailbox_not_verified",
            dedup_key: format!("test:{title}"),
            mailbox_id: None,
            message_id: None,
            title: title.into(),
            detail: detail.into(),
            action: action.map(Into::into),
        },
        herald::clock::system_now(),
    )
    .await
    .unwrap();
    assert!(new, "the alert is new");
    alerts::open(&mut conn, org)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.title == title)
        .expect("the raised alert is open")
        .id
}

/// The ids of the organization's open alerts.
async fn open_ids(app: &TestApp, org: OrgId) -> Vec<String> {
    let mut conn = app.store().conn().await.unwrap();
    alerts::open(&mut conn, org)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect()
}

/// The banner of a page: from its start to the page's heading, which follows it.
fn banner(html: &str) -> Option<&str> {
    let start = html.find("<div class=\"alert-banner\">")?;
    let end = html[start..]
        .find("<h1")
        .expect("a heading after the banner")
        + start;
    Some(&html[start..end])
}

/// One alert of the banner, up to the next.
fn alert_in<'a>(html: &'a str, id: &str) -> Option<&'a str> {
    let banner = banner(html)?;
    let at = banner.find(&format!("data-alert=\"{id}\""))?;
    let start = banner[..at].rfind("<div").expect("the alert's element");
    let end = banner[at..]
        .find("role=\"alert\"")
        .map_or(banner.len(), |i| {
            banner[..at + i].rfind("<div").unwrap_or(at + i)
        });
    Some(&banner[start..end])
}

/// Posts the Dismiss form of an alert.
async fn dismiss(
    browser: &reqwest::Client,
    app: &TestApp,
    id: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser
        .post(app.url(&format!("/settings/alerts/{id}/dismiss")))
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_sees_the_open_alerts_above_every_page_with_what_to_do() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let fabrikam = app.org("Fabrikam").await;
    let (browser, csrf) = app.signed_in("admin@contoso.com").await;
    let (status, html) = page(&browser, &app, OUTGOING).await;
    assert_eq!(status, 200);
    assert!(banner(&html).is_none(), "no alert, no banner: {html}");

    let expired = raise(
        &app,
        c.org,
        "The client secret of Support has expired",
        "Microsoft refuses the stored client secret.",
        Some("Create a new client secret in Azure and paste its Value into the mailbox."),
    )
    .await;
    let failed = raise(
        &app,
        c.org,
        "Mail through Billing failed",
        "The server answered 550 5.7.1.",
        None,
    )
    .await;
    raise(
        &app,
        fabrikam,
        "Fabrikam's own trouble",
        "Not Contoso's.",
        None,
    )
    .await;

    for path in [
        "/",
        OUTGOING,
        RELAY,
        LOG,
        "/settings/api-keys",
        "/settings/users",
    ] {
        let (status, html) = page(&browser, &app, path).await;
        assert_eq!(status, 200, "{path}");
        let shown = banner(&html).unwrap_or_else(|| panic!("no banner on {path}: {html}"));
        assert!(
            html.find("alert-banner") < html.find("<h1"),
            "the banner is above the content of {path}"
        );
        assert!(
            !shown.contains("Fabrikam"),
            "another organization's alert on {path}"
        );

        let one = alert_in(&html, &expired).expect("the expired secret's alert");
        assert!(one.contains("role=\"alert\""), "{one}");
        assert!(one.contains("<strong>The client secret of Support has expired</strong>"));
        assert!(one.contains("<p>Microsoft refuses the stored client secret.</p>"));
        assert!(one.contains(
            "<p>What to do: Create a new client secret in Azure and paste its Value into the mailbox.</p>"
        ));
        assert!(one.contains(&format!(
            "<form method=\"post\" action=\"/settings/alerts/{expired}/dismiss\">"
        )));
        assert_eq!(hidden_field(one, "csrf_token"), csrf);
        assert_eq!(
            hidden_field(one, "back"),
            path,
            "the form returns to {path}"
        );
        assert!(one.contains(">Dismiss</button>"));

        let two = alert_in(&html, &failed).expect("the failed mail's alert");
        assert!(two.contains("<strong>Mail through Billing failed</strong>"));
        assert!(two.contains("<p>The server answered 550 5.7.1.</p>"));
        assert!(!two.contains("What to do"), "no action, no advice: {two}");
    }
    app.stop().await;
}

#[tokio::test]
async fn alert_text_is_escaped_in_the_banner() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let id = raise(
        &app,
        c.org,
        "<script>alert('title')</script> & \"Support\"",
        "<img src=x onerror=alert(1)>",
        Some("<b>bold</b> advice"),
    )
    .await;
    let (browser, _) = app.signed_in("admin@contoso.com").await;
    let (status, html) = page(&browser, &app, OUTGOING).await;
    assert_eq!(status, 200);
    let one = alert_in(&html, &id).expect("the alert is shown");
    for raw in ["<script>alert", "<img", "<b>bold", "\"Support\""] {
        assert!(
            !html.contains(raw),
            "{raw} reached the page unescaped: {one}"
        );
    }
    assert!(one.contains("<strong>&#60;script&#62;alert(&#39;title&#39;)&#60;/script&#62; &#38; &#34;Support&#34;</strong>"), "{one}");
    assert!(
        one.contains("<p>&#60;img src=x onerror=alert(1)&#62;</p>"),
        "{one}"
    );
    assert!(
        one.contains("<p>What to do: &#60;b&#62;bold&#60;/b&#62; advice</p>"),
        "{one}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_admin_dismisses_an_alert_and_returns_to_the_page() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let gone = raise(
        &app,
        c.org,
        "Support is Not Verified",
        "Sign-in refused.",
        None,
    )
    .await;
    let kept = raise(
        &app,
        c.org,
        "Billing is Not Verified",
        "Sign-in refused.",
        None,
    )
    .await;
    let (browser, _) = app.signed_in("admin@contoso.com").await;
    let (_, html) = page(&browser, &app, RELAY).await;
    let form = alert_in(&html, &gone).expect("the alert is shown");
    let (csrf, back) = (hidden_field(form, "csrf_token"), hidden_field(form, "back"));

    let done = dismiss(
        &browser,
        &app,
        &gone,
        &[("csrf_token", &csrf), ("back", &back)],
    )
    .await;
    assert_eq!(done.status(), 303, "a dismiss sends the browser back");
    assert_eq!(done.headers()["location"], RELAY);

    let (status, html) = page(&browser, &app, RELAY).await;
    assert_eq!(status, 200);
    assert!(
        alert_in(&html, &gone).is_none(),
        "the dismissed alert is gone: {html}"
    );
    assert!(alert_in(&html, &kept).is_some(), "the other alert stays");
    assert_eq!(open_ids(&app, c.org).await, vec![kept.clone()]);

    // The last one gone, the banner goes with it.
    let done = dismiss(
        &browser,
        &app,
        &kept,
        &[("csrf_token", &csrf), ("back", OUTGOING)],
    )
    .await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], OUTGOING);
    let (_, html) = page(&browser, &app, OUTGOING).await;
    assert!(banner(&html).is_none(), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn a_dismiss_returns_only_to_a_local_path() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let id = raise(
        &app,
        c.org,
        "Support is Not Verified",
        "Sign-in refused.",
        None,
    )
    .await;
    let (browser, csrf) = app.signed_in("admin@contoso.com").await;
    for back in [
        "//evil.example/settings",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:alert(1)",
        "",
    ] {
        let done = dismiss(
            &browser,
            &app,
            &id,
            &[("csrf_token", &csrf), ("back", back)],
        )
        .await;
        assert_eq!(done.status(), 303, "{back:?}");
        assert_eq!(done.headers()["location"], "/", "{back:?} is not followed");
    }
    assert!(open_ids(&app, c.org).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_member_sees_the_banner_but_cannot_dismiss() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let id = raise(
        &app,
        c.org,
        "Support is Not Verified",
        "Sign-in refused.",
        Some("Authorize the mailbox again."),
    )
    .await;
    let (browser, csrf) = app.signed_in("member@contoso.com").await;
    for path in ["/", OUTGOING, LOG] {
        let (status, html) = page(&browser, &app, path).await;
        assert_eq!(status, 200);
        let one = alert_in(&html, &id).unwrap_or_else(|| panic!("no alert on {path}: {html}"));
        assert!(one.contains("<strong>Support is Not Verified</strong>"));
        assert!(one.contains("<p>What to do: Authorize the mailbox again.</p>"));
        assert!(!one.contains("Dismiss") && !one.contains("<form"), "{one}");
        assert!(!html.contains("/dismiss"), "{path}");
    }

    let refused = dismiss(
        &browser,
        &app,
        &id,
        &[("csrf_token", &csrf), ("back", OUTGOING)],
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("Admins only"));
    assert_eq!(open_ids(&app, c.org).await, vec![id]);
    app.stop().await;
}

#[tokio::test]
async fn dismissing_another_organizations_alert_is_not_found() {
    let app = spawn_app().await;
    contoso(&app).await;
    let fabrikam = app.org("Fabrikam").await;
    let theirs = raise(
        &app,
        fabrikam,
        "Fabrikam's mailbox",
        "Sign-in refused.",
        None,
    )
    .await;
    let (browser, csrf) = app.signed_in("admin@contoso.com").await;

    for id in [
        theirs.as_str(),
        "00000000-0000-0000-0000-000000000000",
        "not-an-id",
    ] {
        let missing = dismiss(
            &browser,
            &app,
            id,
            &[("csrf_token", &csrf), ("back", OUTGOING)],
        )
        .await;
        assert_eq!(missing.status(), 404, "{id}");
        assert!(missing.text().await.unwrap().contains("Page not found"));
    }
    assert_eq!(open_ids(&app, fabrikam).await, vec![theirs]);
    app.stop().await;
}

#[tokio::test]
async fn a_dismiss_without_the_csrf_token_is_refused() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let id = raise(
        &app,
        c.org,
        "Support is Not Verified",
        "Sign-in refused.",
        None,
    )
    .await;
    let (browser, csrf) = app.signed_in("admin@contoso.com").await;

    let bare = dismiss(&browser, &app, &id, &[("back", OUTGOING)]).await;
    assert_eq!(bare.status(), 403);
    assert!(bare.text().await.unwrap().contains("Request not verified"));
    let forged = dismiss(
        &browser,
        &app,
        &id,
        &[("csrf_token", "forged"), ("back", OUTGOING)],
    )
    .await;
    assert_eq!(forged.status(), 403);
    let cross_site = browser
        .post(app.url(&format!("/settings/alerts/{id}/dismiss")))
        .header("origin", "https://evil.example")
        .form(&[("csrf_token", csrf.as_str()), ("back", OUTGOING)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let signed_out = dismiss(
        &app.browser(),
        &app,
        &id,
        &[("csrf_token", &csrf), ("back", OUTGOING)],
    )
    .await;
    assert_eq!(signed_out.status(), 303);
    assert_eq!(signed_out.headers()["location"], "/login");
    assert_eq!(open_ids(&app, c.org).await, vec![id.clone()], "still open");

    // The same request with the token goes through: the refusals were the token's doing.
    let done = dismiss(
        &browser,
        &app,
        &id,
        &[("csrf_token", &csrf), ("back", OUTGOING)],
    )
    .await;
    assert_eq!(done.status(), 303);
    assert!(open_ids(&app, c.org).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_page_is_shown_without_the_banner_when_the_alerts_cannot_be_read() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let id = raise(
        &app,
        c.org,
        "Support is Not Verified",
        "Sign-in refused.",
        None,
    )
    .await;
    let (browser, _) = app.signed_in("admin@contoso.com").await;
    let (_, html) = page(&browser, &app, OUTGOING).await;
    assert!(alert_in(&html, &id).is_some());

    {
        let mut conn = app.store().conn().await.unwrap();
        sqlx::query("DROP TABLE alerts")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    for path in ["/", OUTGOING, RELAY] {
        let (status, html) = page(&browser, &app, path).await;
        assert_eq!(status, 200, "{path} survives: {html}");
        assert!(banner(&html).is_none(), "{path}");
        assert!(html.contains("<h1"), "{path} shows its content");
    }
    app.stop().await;
}
