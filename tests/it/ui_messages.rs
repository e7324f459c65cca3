//! The message log and the sending settings in the web UI: rows in words, filters and paging,
//! tenant isolation, read-only members, CSRF and the audit of a change.

use herald::domain::mailbox::StatusReason;
use herald::domain::message::MessageStatus;
use herald::domain::{MailboxId, OrgId};
use herald::store::messages::{self, BodyKind, NewMessage};
use serde_json::{Value, json};

use crate::helpers::{TestApp, contoso, mailbox, page, problem, spawn_app, spawn_app_with};

const LOG: &str = "/settings/system/outgoing-mail/messages";
const OUTGOING: &str = "/settings/system/outgoing-mail";

/// What a test message looks like after its last attempt.
struct Seed<'a> {
    status: MessageStatus,
    subject: &'a str,
    to: &'a str,
    mailbox: Option<MailboxId>,
    reply: Option<(i64, &'a str, &'a str)>,
    attempts: i64,
    reason: Option<StatusReason>,
    /// When a queued message is tried next; the test's workers leave it alone until then.
    next_attempt: Option<time::OffsetDateTime>,
}

impl<'a> Seed<'a> {
    fn new(status: MessageStatus, subject: &'a str, mailbox: Option<MailboxId>) -> Self {
        Self {
            status,
            subject,
            to: "customer@example.com",
            mailbox,
            reply: None,
            attempts: 0,
            reason: None,
            next_attempt: None,
        }
    }
}

/// Stores a message as the outbox would leave it, without SMTP; answers its id.
async fn seed(app: &TestApp, org: OrgId, s: Seed<'_>) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let recipients = vec![s.to.to_owned()];
    // One transaction: the outbox's workers never see a queued message due before its retry.
    let mut conn = app.store().begin().await.unwrap();
    messages::insert(
        &mut conn,
        &NewMessage {
            id: id.clone(),
            org_id: org,
            mailbox_id: s.mailbox,
            mailbox_explicit: s.mailbox.is_some(),
            via_default_sender: false,
            api_key_id: None,
            source: herald::domain::message::MessageSource::Api,
            status: s.status,
            mail_from: "support@contoso.com".into(),
            recipients,
            subject: s.subject.into(),
            message_id_header: format!("<{id}@herald.test>"),
            body_kind: BodyKind::Mime,
            body: b"Subject: test\r\n\r\nHello\r\n".to_vec(),
            reason: s.reason.clone(),
            now: herald::clock::system_now(),
        },
    )
    .await
    .unwrap();
    // What an attempt leaves behind: the count and the server's last reply.
    let (code, enhanced, text) = s.reply.unzip3();
    sqlx::query(
        "UPDATE messages SET attempts = $1, last_code = $2, last_enhanced = $3, last_text = $4, \
         next_attempt_at = COALESCE($5, next_attempt_at) WHERE id = $6",
    )
    .bind(s.attempts)
    .bind(code)
    .bind(enhanced.map(str::to_owned))
    .bind(text.map(str::to_owned))
    .bind(s.next_attempt.map(|t| t.unix_timestamp()))
    .bind(&id)
    .execute(&mut *conn)
    .await
    .unwrap();
    conn.commit().await.unwrap();
    id
}

trait Unzip3<A, B, C> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>);
}

impl<A, B, C> Unzip3<A, B, C> for Option<(A, B, C)> {
    fn unzip3(self) -> (Option<A>, Option<B>, Option<C>) {
        match self {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        }
    }
}

/// The rows of the log's table, one string of text per row.
fn rows(html: &str) -> Vec<&str> {
    let Some(start) = html.find("<tbody>") else {
        return Vec::new();
    };
    let end = html[start..].find("</tbody>").unwrap() + start;
    html[start..end]
        .split("<tr data-message=")
        .skip(1)
        .collect()
}

#[tokio::test]
async fn the_message_log_shows_each_message_in_words_newest_first() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let retry_at = herald::clock::system_now() + time::Duration::hours(1);
    let retry_words = retry_at
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]"
        ))
        .unwrap();
    let sent = seed(
        &app,
        c.org,
        Seed {
            reply: Some((250, "2.0.0", "OK <queued as 42>")),
            attempts: 1,
            ..Seed::new(MessageStatus::Sent, "Your invoice", Some(c.billing))
        },
    )
    .await;
    let queued = seed(
        &app,
        c.org,
        Seed {
            reply: Some((
                432,
                "4.3.2",
                "STOREDRV.ClientSubmit; sender thread limit exceeded",
            )),
            attempts: 2,
            next_attempt: Some(retry_at),
            ..Seed::new(MessageStatus::Queued, "Password reset", Some(c.support))
        },
    )
    .await;
    let failed = seed(
        &app,
        c.org,
        Seed {
            reply: Some((
                535,
                "5.7.139",
                "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
            )),
            attempts: 1,
            reason: Some(StatusReason::new(
                "smtp_auth_disabled",
                "SMTP AUTH is disabled for this mailbox.",
                Some("Run Set-CASMailbox -SmtpClientAuthenticationDisabled $false.".into()),
            )),
            ..Seed::new(MessageStatus::Failed, "Weekly <report>", Some(c.support))
        },
    )
    .await;
    let held = seed(
        &app,
        c.org,
        Seed {
            to: "ops@example.com",
            reason: Some(StatusReason::new(
                "mailbox_not_verified",
                "The mailbox is Not Verified.",
                Some("Click Authorize on Outgoing Mail.".into()),
            )),
            ..Seed::new(MessageStatus::Held, "Ticket #7 updated", Some(c.support))
        },
    )
    .await;

    for who in ["admin@contoso.com", "member@contoso.com"] {
        let (browser, _) = app.signed_in(who).await;
        let (status, html) = page(&browser, &app, LOG).await;
        assert_eq!(status, 200, "{who} reads the log");
        let rows = rows(&html);
        assert_eq!(rows.len(), 4, "{html}");
        // Newest first.
        for (row, id) in rows.iter().zip([&held, &failed, &queued, &sent]) {
            assert!(row.contains(id.as_str()), "{row}");
        }
        let [held_row, failed_row, queued_row, sent_row] = rows[..] else {
            unreachable!()
        };
        assert!(held_row.contains(">Held</span>"));
        assert!(held_row.contains("Ticket #7 updated") && held_row.contains("ops@example.com"));
        assert!(held_row.contains("The mailbox is Not Verified."));
        assert!(held_row.contains("Click Authorize on Outgoing Mail."));

        assert!(failed_row.contains(">Failed</span>"));
        assert!(failed_row.contains("SMTP AUTH is disabled for this mailbox."));
        assert!(failed_row.contains("Set-CASMailbox -SmtpClientAuthenticationDisabled $false"));
        assert!(failed_row.contains("<code>535 5.7.139</code> Authentication unsuccessful"));
        // The subject is text, never markup.
        assert!(
            failed_row.contains("Weekly &#60;report&#62;")
                || failed_row.contains("Weekly &lt;report&gt;")
        );
        assert!(!html.contains("Weekly <report>"));

        assert!(queued_row.contains(">Queued</span>"));
        assert!(queued_row.contains("<code>432 4.3.2</code> STOREDRV.ClientSubmit"));
        assert!(queued_row.contains("<td>Support</td>") && queued_row.contains("<td>2</td>"));
        assert!(
            queued_row.contains(&format!("<td>{retry_words}</td>")),
            "{queued_row}"
        );
        // A queued retry shows its reply, not a reason.
        assert!(!queued_row.contains("class=\"reason\""));

        assert!(sent_row.contains(">Sent</span>"));
        assert!(sent_row.contains("<td>Billing</td>") && sent_row.contains("Your invoice"));
        assert!(sent_row.contains("<code>250 2.0.0</code>"));
        // The log is reachable from the navigation and from Outgoing Mail.
        let (_, outgoing) = page(&browser, &app, OUTGOING).await;
        assert!(outgoing.contains(&format!("<a href=\"{LOG}\">Message log</a>")));
        assert!(outgoing.contains("1 Held") && outgoing.contains("1 Failed"));
    }

    // One message's page has everything the row has, and more.
    let (browser, _) = app.signed_in("member@contoso.com").await;
    let (status, detail) = page(&browser, &app, &format!("{LOG}/{failed}")).await;
    assert_eq!(status, 200);
    for words in [
        "Failed",
        "SMTP AUTH is disabled for this mailbox.",
        "Set-CASMailbox",
        "535 5.7.139",
        "support@contoso.com",
        "customer@example.com",
        "Support",
        &format!("&lt;{failed}@herald.test&gt;"),
    ] {
        assert!(
            detail.contains(words)
                || detail.contains(&words.replace("&lt;", "&#60;").replace("&gt;", "&#62;")),
            "{words} missing from\n{detail}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn filters_narrow_the_log_and_older_pages_follow_the_cursor() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    for n in 0..53 {
        seed(
            &app,
            c.org,
            Seed::new(
                MessageStatus::Sent,
                &format!("Receipt {n:02}"),
                Some(c.billing),
            ),
        )
        .await;
    }
    let failed = seed(
        &app,
        c.org,
        Seed::new(MessageStatus::Failed, "Bounced newsletter", Some(c.support)),
    )
    .await;
    let held = seed(
        &app,
        c.org,
        Seed::new(MessageStatus::Held, "Waiting alert", Some(c.support)),
    )
    .await;
    let (browser, _) = app.signed_in("member@contoso.com").await;

    let (_, html) = page(&browser, &app, &format!("{LOG}?status=failed")).await;
    let only = rows(&html);
    assert_eq!(only.len(), 1, "{html}");
    assert!(only[0].contains(&failed));
    assert!(html.contains("<option value=\"failed\" selected>Failed (1)</option>"));

    let (_, html) = page(&browser, &app, &format!("{LOG}?mailbox={}", c.support)).await;
    let support = rows(&html);
    assert_eq!(support.len(), 2);
    assert!(support[0].contains(&held) && support[1].contains(&failed));

    let (_, html) = page(
        &browser,
        &app,
        &format!("{LOG}?status=held&mailbox={}", c.billing),
    )
    .await;
    assert!(rows(&html).is_empty());
    assert!(html.contains("No message matches these filters."));

    // Paging: 50 a page, then "Older" carries the cursor and the filter on.
    let (_, first) = page(&browser, &app, &format!("{LOG}?status=sent")).await;
    assert_eq!(rows(&first).len(), 50);
    assert!(first.contains("Receipt 52") && !first.contains("Receipt 02"));
    let marker = "rel=\"next\"";
    let at = first.find(marker).expect("an Older link");
    let href_start = first[..at].rfind("href=\"").unwrap() + "href=\"".len();
    let href = first[href_start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&")
        .replace("&#38;", "&");
    assert!(
        href.contains("status=sent") && href.contains("before="),
        "{href}"
    );
    let (status, older) = page(&browser, &app, &href).await;
    assert_eq!(status, 200);
    let older_rows = rows(&older);
    assert_eq!(older_rows.len(), 3);
    assert!(older.contains("Receipt 02") && older.contains("Receipt 00"));
    assert!(!older.contains("Receipt 03"));
    assert!(!older.contains(marker), "the last page has no Older link");

    // A filter that is no status is a bad link, not a server error.
    let (status, html) = page(&browser, &app, &format!("{LOG}?status=bounced")).await;
    assert_eq!(status, 400);
    assert!(html.contains("Status must be one of"));
    app.stop().await;
}

#[tokio::test]
async fn another_organizations_messages_never_appear_and_their_ids_answer_404() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let ours = seed(
        &app,
        c.org,
        Seed::new(MessageStatus::Sent, "Contoso newsletter", Some(c.support)),
    )
    .await;
    let fabrikam = app.org("Fabrikam").await;
    app.user(fabrikam, "admin@fabrikam.com", "admin").await;
    let fabrikam_key = app.key(fabrikam, "admin").await;
    let theirs_mailbox = mailbox(&app, &fabrikam_key, "Sales", "sales@fabrikam.com").await;
    let theirs = seed(
        &app,
        fabrikam,
        Seed::new(
            MessageStatus::Failed,
            "Fabrikam secret plans",
            Some(theirs_mailbox),
        ),
    )
    .await;

    let (browser, _) = app.signed_in("admin@contoso.com").await;
    let (_, html) = page(&browser, &app, LOG).await;
    assert!(html.contains(&ours));
    assert!(!html.contains(&theirs) && !html.contains("Fabrikam secret plans"));
    assert!(!html.contains("Sales"), "their mailbox is no filter choice");
    let (_, filtered) = page(&browser, &app, &format!("{LOG}?mailbox={theirs_mailbox}")).await;
    assert!(rows(&filtered).is_empty());
    assert!(!filtered.contains("Fabrikam secret plans"));

    let (status, html) = page(&browser, &app, &format!("{LOG}/{theirs}")).await;
    assert_eq!(status, 404);
    assert!(!html.contains("Fabrikam secret plans"));
    let (status, _) = page(&browser, &app, &format!("{LOG}/{ours}")).await;
    assert_eq!(status, 200);

    // And the other way round.
    let (browser, _) = app.signed_in("admin@fabrikam.com").await;
    let (status, _) = page(&browser, &app, &format!("{LOG}/{ours}")).await;
    assert_eq!(status, 404);
    let (_, html) = page(&browser, &app, LOG).await;
    assert!(html.contains(&theirs) && !html.contains("Contoso newsletter"));
    app.stop().await;
}

#[tokio::test]
async fn an_empty_log_says_how_applications_send_and_visitors_must_sign_in() {
    let app = spawn_app().await;
    contoso(&app).await;

    let visitor = app.browser();
    let response = visitor.get(app.url(LOG)).send().await.unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        format!("/login?next={LOG}").as_str()
    );

    let (browser, _) = app.signed_in("member@contoso.com").await;
    let (status, html) = page(&browser, &app, LOG).await;
    assert_eq!(status, 200);
    assert!(html.contains("No mail has been sent yet."));
    assert!(html.contains("POST /api/v1/messages"));
    assert!(html.contains("Authorization: Bearer"));
    let (_, outgoing) = page(&browser, &app, OUTGOING).await;
    assert!(outgoing.contains("no mail has been sent yet"));
    app.stop().await;
}

async fn settings(app: &TestApp, org: OrgId) -> herald::domain::Organization {
    let mut conn = app.store().conn().await.unwrap();
    herald::store::orgs::get(&mut conn, org)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn members_see_the_sending_settings_read_only_and_cannot_change_them() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let (browser, csrf) = app.signed_in("member@contoso.com").await;
    let (_, html) = page(&browser, &app, OUTGOING).await;
    assert!(html.contains("While no mailbox is Verified"));
    assert!(html.contains("<dd>Send from the default sender</dd>"));
    assert!(html.contains("Reply-To for mail sent by the default sender"));
    assert!(html.contains("Only an admin of the organization can change these."));
    assert!(!html.contains("id=\"sending-form\"") && !html.contains("type=\"radio\""));

    let refused = browser
        .patch(app.url("/api/v1/organization"))
        .header("x-csrf-token", &csrf)
        .json(&json!({ "no_mailbox_policy": "hold", "reply_to": "member@contoso.com" }))
        .send()
        .await
        .unwrap();
    problem(refused, 403, "forbidden").await;
    let org = settings(&app, c.org).await;
    assert_eq!(org.no_mailbox_policy.as_str(), "fallback");
    assert_eq!(org.reply_to, None);
    app.stop().await;
}

#[tokio::test]
async fn an_admins_change_is_saved_shown_and_audited_and_needs_the_csrf_token() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let (browser, csrf) = app.signed_in("admin@contoso.com").await;
    let (_, html) = page(&browser, &app, OUTGOING).await;
    assert!(html.contains("id=\"sending-form\""));
    assert!(html.contains("<legend>While no mailbox is Verified</legend>"));
    assert!(html.contains(
        "value=\"fallback\" checked aria-describedby=\"policy-fallback-hint\"> Send from the default sender"
    ));
    assert!(html.contains(
        "value=\"hold\" aria-describedby=\"policy-hold-hint\"> Hold mail until a mailbox is verified"
    ));
    assert!(html.contains(
        "<label for=\"sending-reply-to\">Reply-To for mail sent by the default sender</label>"
    ));
    // The test installation has no default sender: the page says what that means.
    assert!(html.contains("This installation has no default sender"));

    // Without the session's CSRF token, or with another, nothing changes.
    let change = json!({ "no_mailbox_policy": "hold", "reply_to": "help@contoso.com" });
    let bare = browser
        .patch(app.url("/api/v1/organization"))
        .json(&change)
        .send()
        .await
        .unwrap();
    problem(bare, 403, "csrf_failed").await;
    let forged = browser
        .patch(app.url("/api/v1/organization"))
        .header("x-csrf-token", "forged")
        .json(&change)
        .send()
        .await
        .unwrap();
    problem(forged, 403, "csrf_failed").await;
    let cross_site = browser
        .patch(app.url("/api/v1/organization"))
        .header("x-csrf-token", &csrf)
        .header("origin", "https://evil.example")
        .json(&change)
        .send()
        .await
        .unwrap();
    problem(cross_site, 403, "csrf_failed").await;
    assert_eq!(settings(&app, c.org).await.reply_to, None);

    // What the page's script sends.
    let saved = browser
        .patch(app.url("/api/v1/organization"))
        .header("x-csrf-token", &csrf)
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 200);
    let org = settings(&app, c.org).await;
    assert_eq!(org.no_mailbox_policy.as_str(), "hold");
    assert_eq!(org.reply_to.as_deref(), Some("help@contoso.com"));

    let (_, html) = page(&browser, &app, OUTGOING).await;
    assert!(
        html.contains("value=\"hold\" checked aria-describedby=\"policy-hold-hint\"> Hold mail")
    );
    assert!(html.contains("value=\"fallback\" aria-describedby"));
    assert!(html.contains("value=\"help@contoso.com\""));
    let (member, _) = app.signed_in("member@contoso.com").await;
    let (_, html) = page(&member, &app, OUTGOING).await;
    assert!(html.contains("<dd>Hold mail until a mailbox is verified</dd>"));
    assert!(html.contains("<dd>help@contoso.com</dd>"));

    // A bad address is refused next to its field.
    let bad = browser
        .patch(app.url("/api/v1/organization"))
        .header("x-csrf-token", &csrf)
        .json(&json!({ "reply_to": "not an address" }))
        .send()
        .await
        .unwrap();
    let body = problem(bad, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "reply_to");

    let (status, audit) = page(&browser, &app, "/settings/audit").await;
    assert_eq!(status, 200);
    assert!(audit.contains("<code>organization.update</code>"));
    assert!(audit.contains("admin@contoso.com"));
    app.stop().await;
}

#[tokio::test]
async fn with_a_default_sender_the_page_does_not_warn_that_fallback_holds() {
    let sender = MailboxId::new().to_string();
    let app = spawn_app_with(|env| {
        env.insert("HERALD_DEFAULT_SENDER".into(), sender);
    })
    .await;
    contoso(&app).await;
    let (browser, _) = app.signed_in("admin@contoso.com").await;
    let (_, html) = page(&browser, &app, OUTGOING).await;
    assert!(html.contains("While no mailbox is Verified"));
    assert!(!html.contains("This installation has no default sender"));
    app.stop().await;
}

#[tokio::test]
async fn mail_accepted_over_the_api_appears_in_the_log_with_what_to_do() {
    let app = spawn_app().await;
    let org = app.org("Contoso").await;
    app.user(org, "member@contoso.com", "member").await;
    let sender = app.key(org, "sender").await;
    let accepted = app
        .client()
        .post(app.url("/api/v1/messages"))
        .bearer_auth(&sender)
        .json(&json!({ "to": ["bob@example.com"], "subject": "Welcome aboard", "text": "Hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (browser, _) = app.signed_in("member@contoso.com").await;
    let (_, html) = page(&browser, &app, LOG).await;
    let rows = rows(&html);
    assert_eq!(rows.len(), 1, "{html}");
    assert!(rows[0].contains(&id) && rows[0].contains("Welcome aboard"));
    assert!(rows[0].contains(">Held</span>"));
    assert!(rows[0].contains("The organization has no mailbox to send from yet."));
    assert!(rows[0].contains("Add a mailbox under Settings"));
    app.stop().await;
}

#[tokio::test]
async fn an_admin_cancels_held_mail_from_the_log_and_a_member_sees_no_cancel() {
    let app = spawn_app().await;
    let c = contoso(&app).await;
    let held = seed(
        &app,
        c.org,
        Seed::new(
            MessageStatus::Held,
            "Waiting for a mailbox",
            Some(c.support),
        ),
    )
    .await;
    let sent = seed(
        &app,
        c.org,
        Seed::new(MessageStatus::Sent, "Already gone", Some(c.support)),
    )
    .await;
    let cancel_path = |id: &str| format!("{LOG}/{id}/cancel");

    let (member, member_csrf) = app.signed_in("member@contoso.com").await;
    let (_, html) = page(&member, &app, LOG).await;
    assert!(!html.contains(&cancel_path(&held)), "no Cancel for members");
    let refused = member
        .post(app.url(&cancel_path(&held)))
        .form(&[("csrf_token", member_csrf.as_str()), ("back", LOG)])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    let (admin, csrf) = app.signed_in("admin@contoso.com").await;
    let (_, html) = page(&admin, &app, LOG).await;
    let held_row = rows(&html)
        .into_iter()
        .find(|r| r.contains("Waiting for a mailbox"))
        .unwrap();
    assert!(held_row.contains(&cancel_path(&held)), "{held_row}");
    assert!(held_row.contains("aria-label=\"Cancel: Waiting for a mailbox\""));
    assert!(
        !html.contains(&cancel_path(&sent)),
        "sent mail has no Cancel"
    );
    let forged = admin
        .post(app.url(&cancel_path(&held)))
        .form(&[("csrf_token", "forged"), ("back", LOG)])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let done = admin
        .post(app.url(&cancel_path(&held)))
        .form(&[("csrf_token", csrf.as_str()), ("back", LOG)])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], LOG);
    let (_, html) = page(&admin, &app, LOG).await;
    let row = rows(&html)
        .into_iter()
        .find(|r| r.contains("Waiting for a mailbox"))
        .unwrap();
    assert!(row.contains(">Cancelled</span>"), "{row}");
    assert!(row.contains("Cancelled by admin@contoso.com before it was sent."));
    let late = admin
        .post(app.url(&cancel_path(&sent)))
        .form(&[("csrf_token", csrf.as_str()), ("back", LOG)])
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 409);
    assert!(
        late.text()
            .await
            .unwrap()
            .contains("The message was already sent.")
    );
    app.stop().await;
}
