//! Messages over Graph's 4 MB request limit: Herald builds a draft, uploads its large
//! attachments through upload sessions and sends it, against the sandbox's Graph.

use base64::Engine as _;
use mail_parser::MimeHeaders as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::outbox::{Outbox, SUPPORT};

/// A Graph mailbox granted Mail.ReadWrite besides Mail.Send, as large messages need.
async fn graph_mailbox(o: &Outbox) -> String {
    o.oauth_mailbox_with(
        &o.admin,
        "Support",
        SUPPORT,
        json!({ "transport": "graph", "scopes": [
            "https://graph.microsoft.com/Mail.Send", "https://graph.microsoft.com/Mail.ReadWrite",
            "offline_access", "openid", "profile", "email",
        ]}),
    )
    .await
}

/// `len` bytes that are not all alike, so a misplaced chunk shows.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_attachment(subject: &str, name: &str, bytes: &[u8]) -> Value {
    json!({
        "to": "customer@example.com",
        "bcc": ["auditor@example.com"],
        "subject": subject,
        "text": "The report is attached.",
        "headers": {"X-Ticket": "42"},
        "attachments": [
            {"filename": name, "content_type": "application/octet-stream",
             "content_base64": base64::engine::general_purpose::STANDARD.encode(bytes)},
            {"filename": "notes.txt", "content_type": "text/plain",
             "content_base64": base64::engine::general_purpose::STANDARD.encode(b"small notes\n")},
        ],
    })
}

#[tokio::test]
async fn a_12_mb_attachment_goes_to_graph_through_an_upload_session_whole_with_bcc_kept() {
    let o = Outbox::start().await;
    graph_mailbox(&o).await;
    let big = payload(12 * 1024 * 1024);
    let message = o
        .accepted(
            &o.admin,
            with_attachment("Quarterly report", "report.bin", &big),
        )
        .await;
    let sent = o.wait_for(&o.admin, &message, "sent").await;
    assert!(
        sent.to_string().contains("Accepted by Microsoft Graph"),
        "{sent}"
    );

    let received = o.received_by(SUPPORT);
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.mechanism, "graph");
    assert!(got.rcpt_to.contains(&"customer@example.com".to_owned()));
    assert!(got.rcpt_to.contains(&"auditor@example.com".to_owned()));
    let state = &o.sandbox.state;
    // What Graph holds: the large file through a session of several chunks, the small one
    // in one request.
    let attachments = state.graph_attachments(&got.id);
    let report = attachments.iter().find(|a| a.name == "report.bin").unwrap();
    assert_eq!(report.size, big.len());
    assert_eq!(report.sha256, sha256(&big));
    assert!(
        attachments
            .iter()
            .any(|a| a.name == "notes.txt" && a.size == 12)
    );
    let sessions = state.graph_upload_sessions();
    assert_eq!(sessions.len(), 1, "only the large file needs a session");
    assert_eq!(sessions[0].name, "report.bin");
    assert!(sessions[0].complete);
    assert!(sessions[0].chunks >= 3, "{} chunks", sessions[0].chunks);
    assert!(state.graph_drafts().is_empty(), "the draft was sent");

    // What the recipient reads: the same bytes, the subject, the X- header, no Bcc.
    let raw = &got.raw;
    let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
    assert_eq!(parsed.subject(), Some("Quarterly report"));
    assert_eq!(parsed.header_raw("X-Ticket").map(str::trim), Some("42"));
    let text = String::from_utf8_lossy(&raw[..raw.len().min(4096)]).to_lowercase();
    assert!(!text.contains("auditor@"), "{text}");
    let file = parsed
        .attachments()
        .find(|a| a.attachment_name() == Some("report.bin"))
        .unwrap();
    assert_eq!(sha256(file.contents()), sha256(&big));
    o.stop().await;
}

#[tokio::test]
async fn an_upload_that_fails_half_way_leaves_no_draft_and_the_message_is_retried_not_lost() {
    let o = Outbox::start().await;
    let id = graph_mailbox(&o).await;
    // The second chunk of the first session is answered 503.
    o.switch(|s| s.graph_upload_outages = 1);
    let big = payload(5 * 1024 * 1024);
    let message = o
        .accepted(&o.admin, with_attachment("Retried", "data.bin", &big))
        .await;
    let sent = o.wait_for(&o.admin, &message, "sent").await;
    assert_eq!(sent["attempts"], 2, "one 503, then sent: {sent}");

    let state = &o.sandbox.state;
    let sessions = state.graph_upload_sessions();
    assert_eq!(sessions.len(), 2, "one session per attempt");
    assert_eq!(sessions.iter().filter(|s| s.complete).count(), 1);
    assert!(
        state.graph_drafts().is_empty(),
        "the failed attempt's draft was deleted, the second one sent"
    );
    let received = o.received_by(SUPPORT);
    assert_eq!(received.len(), 1, "sent once");
    let attachments = state.graph_attachments(&received[0].id);
    let data = attachments.iter().find(|a| a.name == "data.bin").unwrap();
    assert_eq!(data.sha256, sha256(&big));
    let mailbox = o
        .admin_json(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{id}"),
            None,
        )
        .await;
    assert_eq!(
        mailbox["status"], "verified",
        "an outage says nothing of it"
    );
    o.stop().await;
}

#[tokio::test]
async fn without_mail_readwrite_a_large_message_fails_alone_naming_the_permission() {
    let o = Outbox::start().await;
    // Microsoft's rule: drafts take Mail.ReadWrite, which this mailbox (Mail.Send only, the
    // default) was not granted.
    let id = o
        .oauth_mailbox_with(
            &o.admin,
            "Support",
            SUPPORT,
            json!({ "transport": "graph" }),
        )
        .await;
    let message = o
        .accepted(
            &o.admin,
            with_attachment(
                "Too big without a draft",
                "x.bin",
                &payload(5 * 1024 * 1024),
            ),
        )
        .await;
    let failed = o.wait_for(&o.admin, &message, "failed").await;
    assert!(
        failed["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("Mail.ReadWrite"),
        "{failed}"
    );
    assert!(o.sandbox.state.graph_drafts().is_empty());
    // Small mail still goes: the mailbox is fine.
    let small = o
        .accepted(&o.admin, crate::outbox::simple("a@example.com", "Small"))
        .await;
    o.wait_for(&o.admin, &small, "sent").await;
    let mailbox = o
        .admin_json(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{id}"),
            None,
        )
        .await;
    assert_eq!(mailbox["status"], "verified");
    o.stop().await;
}

/// The sandbox's large-message endpoints driven directly, each answer in Graph's shape.
#[tokio::test]
async fn the_sandbox_takes_a_draft_and_an_upload_session_in_order_and_in_chunks_of_4_mb() {
    use secrecy::{ExposeSecret, SecretString};
    let (sandbox, base) = crate::helpers::start_sandbox().await;
    let state = &sandbox.state;
    state.add_user(SUPPORT, SecretString::from("pw"));
    let app = state.register_client("Herald", vec!["http://127.0.0.1/cb".into()]);
    let (token, _) = state.issue_access_token(
        SUPPORT,
        &app.client_id,
        vec![
            herald::sandbox::GRAPH_MAIL_SEND_SCOPE.to_owned(),
            herald::sandbox::GRAPH_MAIL_READWRITE_SCOPE.to_owned(),
        ],
        state.now(),
    );
    let token = token.expose_secret().to_owned();
    let http = crate::helpers::http_builder().build().unwrap();
    let messages = format!("{base}/v1.0/users/{SUPPORT}/messages");
    let create = || async {
        let created = http
            .post(&messages)
            .bearer_auth(&token)
            .json(&json!({
                "subject": "Big",
                "body": {"contentType": "Text", "content": "See attached."},
                "toRecipients": [{"emailAddress": {"address": "a@example.com"}}],
                "bccRecipients": [{"emailAddress": {"address": "hidden@example.com"}}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let created: Value = created.json().await.unwrap();
        assert_eq!(
            created["subject"], "Big",
            "the message comes back: {created}"
        );
        created["id"].as_str().unwrap().to_owned()
    };
    let id = create().await;
    let session = |size: usize| {
        http.post(format!("{messages}/{id}/attachments/createUploadSession"))
            .bearer_auth(&token)
            .json(&json!({"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size}}))
            .send()
    };
    let small: Value = session(1024 * 1024).await.unwrap().json().await.unwrap();
    assert_eq!(
        small["error"]["code"],
        "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"
    );
    let size = 5 * 1024 * 1024;
    let created = session(size).await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["nextExpectedRanges"], json!(["0-"]));
    assert!(created["expirationDateTime"].is_string());
    let upload_url = created["uploadUrl"].as_str().unwrap().to_owned();
    assert!(upload_url.starts_with(&base), "{upload_url}");
    let bytes = payload(size);
    let put = |first: usize, last: usize, bearer: bool| {
        let mut request = http
            .put(&upload_url)
            .header("content-range", format!("bytes {first}-{last}/{size}"))
            .body(bytes[first..=last].to_vec());
        if bearer {
            request = request.bearer_auth(&token);
        }
        request.send()
    };
    let leaked = put(0, 999, true).await.unwrap();
    assert_eq!(leaked.status(), 401, "the upload URL takes no bearer token");
    let too_big = put(0, 4 * 1024 * 1024, false).await.unwrap();
    assert_eq!(too_big.status(), 413);
    let too_big: Value = too_big.json().await.unwrap();
    assert_eq!(too_big["error"]["code"], "RequestEntityTooLarge");
    assert!(too_big["error"]["innerError"]["request-id"].is_string());
    let skipped = put(1000, 1999, false).await.unwrap();
    assert_eq!(skipped.status(), 416);
    let skipped: Value = skipped.json().await.unwrap();
    assert_eq!(skipped["error"]["code"], "InvalidRange");
    let first = put(0, 3_932_159, false).await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["nextExpectedRanges"], json!(["3932160-"]));
    let last = put(3_932_160, size - 1, false).await.unwrap();
    assert_eq!(last.status(), 201);
    assert!(last.headers().contains_key("location"));

    let sent = http
        .post(format!("{messages}/{id}/send"))
        .bearer_auth(&token)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let stored = state.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].mechanism, "graph");
    assert!(stored[0].rcpt_to.contains(&"hidden@example.com".to_owned()));
    assert_eq!(state.saved_to_sent_items(&stored[0].id), Some(true));
    let attachments = state.graph_attachments(&stored[0].id);
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].size, size);
    assert_eq!(attachments[0].sha256, sha256(&bytes));
    let sessions = state.graph_upload_sessions();
    assert_eq!(sessions[0].chunks, 2);

    // A draft deleted is gone: deleting it again is 404, in Graph's shape.
    let id = create().await;
    let delete = || {
        http.delete(format!("{messages}/{id}"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(delete().await.unwrap().status(), 204);
    let again = delete().await.unwrap();
    assert_eq!(again.status(), 404);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["error"]["code"], "ErrorItemNotFound");
    assert!(state.graph_drafts().is_empty());
}

#[tokio::test]
async fn a_long_body_beside_a_large_attachment_goes_through_the_draft_whole() {
    let o = Outbox::start().await;
    graph_mailbox(&o).await;
    let mut body = with_attachment("Long body", "x.bin", &payload(5 * 1024 * 1024));
    // Graph answers a new draft with its body: Herald reads answers that large (a token
    // endpoint's answers are held to 256 KiB, Graph's to the 4 MB a request can carry).
    let words = "word ".repeat(60_000);
    body["html"] = json!(format!("<p>{words}</p>"));
    let message = o.accepted(&o.admin, body).await;
    let sent = o.wait_for(&o.admin, &message, "sent").await;
    assert_eq!(sent["attempts"], 1, "{sent}");
    let received = o.received_by(SUPPORT);
    assert_eq!(received.len(), 1);
    let parsed = mail_parser::MessageParser::default()
        .parse(&received[0].raw)
        .unwrap();
    assert!(
        parsed.body_html(0).unwrap().contains(words.trim_end()),
        "the whole body arrived"
    );
    assert!(
        o.sandbox.state.graph_drafts().is_empty(),
        "no draft is left"
    );
    o.stop().await;
}
