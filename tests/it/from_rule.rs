//! Who a message says it is from. Raw MIME with a second From (the receiver reads the first,
//! a parser the last), a foreign Sender or Resent-From, or any field RFC 5322 allows once
//! given twice is refused before it is queued; and a Send As refusal of an address that is not
//! the mailbox's own fails that message, never the mailbox.

use serde_json::{Value, json};

use crate::helpers::problem;
use crate::outbox::{Outbox, SUPPORT};

async fn post_mime(o: &Outbox, mime: &str) -> reqwest::Response {
    o.app
        .client()
        .post(o.app.url("/api/v1/messages?mailbox=Support"))
        .bearer_auth(&o.admin)
        .header("content-type", "message/rfc822")
        .body(mime.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_second_from_or_a_foreign_sender_is_refused_and_the_mailbox_keeps_sending() {
    let o = Outbox::start().await;
    let mailbox = o
        .basic_mailbox(&o.admin, "Support", SUPPORT, json!({}))
        .await;
    // The review's reproduction, both orders, and spelled as a receiver still reads it.
    for mime in [
        format!(
            "From: CEO <ceo@bigbank.example>\r\nFrom: {SUPPORT}\r\nTo: bob@example.com\r\nSubject: Wire\r\n\r\nNow.\r\n"
        ),
        format!(
            "From: {SUPPORT}\r\nTo: bob@example.com\r\nfrom : CEO <ceo@bigbank.example>\r\nSubject: Wire\r\n\r\nNow.\r\n"
        ),
    ] {
        let body = problem(post_mime(&o, &mime).await, 422, "duplicate_header").await;
        assert_eq!(body["errors"][0]["field"], "headers.From", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("more than one From")
        );
    }
    let twice =
        format!("From: {SUPPORT}\r\nTo: bob@example.com\r\nSubject: a\r\nSubject: b\r\n\r\nx\r\n");
    let body = problem(post_mime(&o, &twice).await, 422, "duplicate_header").await;
    assert_eq!(body["errors"][0]["field"], "headers.Subject");
    for (field, line) in [
        ("sender", "Sender: ceo@bigbank.example"),
        ("resent-from", "Resent-From: CEO <ceo@bigbank.example>"),
        ("resent-sender", "Resent-Sender: ceo@bigbank.example"),
    ] {
        let mime =
            format!("From: {SUPPORT}\r\n{line}\r\nTo: bob@example.com\r\nSubject: x\r\n\r\nx\r\n");
        let body = problem(post_mime(&o, &mime).await, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    // A second entry without an address is no second address to a check counting addresses,
    // but a receiver may read it as the sender.
    for from in [
        format!("{SUPPORT}, \"ceo@bigbank.example\""),
        format!("{SUPPORT}, ceo"),
        format!("Staff: {SUPPORT};"),
    ] {
        let mime = format!("From: {from}\r\nTo: bob@example.com\r\nSubject: x\r\n\r\nx\r\n");
        let body = problem(post_mime(&o, &mime).await, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "from", "{from}: {body}");
    }
    let own_sender = format!(
        "From: {SUPPORT}\r\nSender: {SUPPORT}\r\nTo: bob@example.com\r\nSubject: ok\r\n\r\nx\r\n"
    );
    let own = post_mime(&o, &own_sender).await;
    assert_eq!(own.status(), 202);
    let own = own.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // JSON: two spellings of one header are two keys of the object but one header.
    let json_twice = o
        .send(
            &o.admin,
            json!({"to": "bob@example.com", "subject": "x", "text": "y",
                   "headers": {"In-Reply-To": "<a@x>", "in-reply-to": "<b@x>"}}),
        )
        .await;
    let body = problem(json_twice, 422, "duplicate_header").await;
    assert_eq!(body["errors"][0]["field"], "headers.In-Reply-To");

    let id = o
        .accepted(
            &o.admin,
            json!({"to": "bob@example.com", "subject": "after", "text": "y"}),
        )
        .await;
    o.wait_for(&o.admin, &id, "sent").await;
    o.wait_for(&o.admin, &own, "sent").await;
    let subjects: Vec<String> = o
        .received_by(SUPPORT)
        .iter()
        .map(|m| String::from_utf8_lossy(&m.raw).into_owned())
        .collect();
    assert_eq!(subjects.len(), 2, "only the two proper messages went out");
    assert!(subjects.iter().all(|m| !m.contains("bigbank")));
    let m: Value = o
        .admin_json(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{mailbox}"),
            None,
        )
        .await;
    assert_eq!(m["status"], "verified");
    o.stop().await;
}

#[tokio::test]
async fn a_send_as_refusal_of_another_address_fails_the_message_and_not_the_mailbox() {
    let o = Outbox::start().await;
    // A mailbox not yet verified: its mail is held, as mail queued by an earlier version was.
    let created: Value = o
        .admin_json(
            reqwest::Method::POST,
            "/api/v1/mailboxes",
            Some(
                json!({"name": "Support", "auth": "basic", "provider": "sandbox",
                        "username": SUPPORT, "password": crate::outbox::PASSWORD}),
            ),
        )
        .await;
    let mailbox = created["id"].as_str().unwrap().to_owned();
    let held = post_mime(
        &o,
        &format!("From: {SUPPORT}\r\nTo: bob@example.com\r\nSubject: Wire\r\n\r\nNow.\r\n"),
    )
    .await;
    assert_eq!(held.status(), 202);
    let poisoned = held.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // What the duplicate-From defect let in: the receiver sends as the first From.
    sqlx::query("UPDATE messages SET body = $1 WHERE id = $2")
        .bind(
            format!(
                "From: CEO <ceo@bigbank.example>\r\nFrom: {SUPPORT}\r\nTo: bob@example.com\r\nSubject: Wire\r\n\r\nNow.\r\n"
            )
            .into_bytes(),
        )
        .bind(&poisoned)
        .execute(o.app.store().pool())
        .await
        .unwrap();
    let verified: Value = o.verify(&mailbox).await;
    assert_eq!(verified["status"], "verified", "{verified}");
    let failed = o.wait_for(&o.admin, &poisoned, "failed").await;
    assert_eq!(failed["reason"]["code"], "send_as_denied", "{failed}");
    assert!(
        failed["reason"]["message"]
            .as_str()
            .unwrap()
            .contains("ceo@bigbank.example"),
        "{failed}"
    );
    assert_eq!(failed["last_reply"]["code"], 554);
    let after = o
        .accepted(
            &o.admin,
            json!({"to": "bob@example.com", "subject": "next", "text": "y"}),
        )
        .await;
    o.wait_for(&o.admin, &after, "sent").await;
    let m: Value = o
        .admin_json(
            reqwest::Method::GET,
            &format!("/api/v1/mailboxes/{mailbox}"),
            None,
        )
        .await;
    assert_eq!(m["status"], "verified", "the mailbox is not blamed: {m}");
    o.stop().await;
}
