//! Unit tests of composing and preparing messages.

use super::mime::strip_field;
use super::*;

fn mailbox() -> Mailbox {
    crate::oauth::errors::tests_support::mailbox()
}

#[test]
fn a_bcc_header_and_its_folded_lines_are_removed() {
    let header = b"From: a@b.c\r\nBcc: x@y.z,\r\n  w@y.z\r\nTo: t@u.v\r\nBCC : q@r.s\r\n";
    assert_eq!(
        strip_field(header, b"bcc"),
        b"From: a@b.c\r\nTo: t@u.v\r\n".to_vec()
    );
}

#[test]
fn raw_mime_from_another_address_is_refused_and_bcc_stays_off_the_wire() {
    let m = mailbox();
    let now = crate::clock::system_now();
    let foreign = b"From: someone@else.example\nTo: a@example.com\nSubject: x\n\nhi\n";
    let Err(Refusal::Invalid(errors)) = prepare_raw(foreign, &m, "<1@h>", now) else {
        panic!("a foreign From is refused");
    };
    assert_eq!(errors[0].field, "from");
    let own = format!(
        "From: Support <{}>\nTo: a@example.com\nBcc: hidden@example.com\nSubject: Hello\n\nhi\n",
        m.username
    );
    let prepared = prepare_raw(own.as_bytes(), &m, "<1@h>", now).unwrap();
    assert_eq!(prepared.recipients, ["a@example.com", "hidden@example.com"]);
    let text = String::from_utf8(prepared.bytes).unwrap();
    assert!(!text.to_lowercase().contains("hidden@"), "{text}");
    assert!(text.starts_with("Message-ID: <1@h>\r\nDate: "), "{text}");
    assert!(text.ends_with("\r\n\r\nhi\r\n"));
    assert_eq!(prepared.subject, "Hello");
}

#[test]
fn every_line_of_a_composed_message_ends_in_crlf() {
    let draft = Draft {
        to: vec!["bob@example.com".into()],
        cc: vec![],
        bcc: vec!["dave@example.com".into()],
        subject: "Ticket".into(),
        text: Some("Your ticket\nline two".into()),
        html: Some("<p>Your ticket</p>\n<p>two</p>".into()),
        reply_to: None,
        headers: vec![("X-Ticket".into(), "42".into())],
        attachments: vec![AttachmentIn {
            filename: "report.pdf".into(),
            content_type: Some("application/pdf".into()),
            content_base64: "JVBERi0xLjQK".into(),
        }],
        message_id: "<1@contoso.com>".into(),
        date: 1_800_000_000,
        org_reply_to: None,
    };
    let (_, bytes) = compose(&mailbox(), &draft, false).unwrap();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            assert!(
                i > 0 && bytes[i - 1] == b'\r',
                "bare LF at {i}:\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

#[test]
fn a_relayed_printer_from_is_rewritten_and_kept_as_reply_to() {
    let m = mailbox();
    let now = crate::clock::system_now();
    let scan =
        b"From: Scanner <scanner@localdomain>\r\nTo: a@example.com\r\nSubject: Scan\r\n\r\npdf\r\n";
    let rcpt = vec!["a@example.com".to_owned(), "b@example.com".to_owned()];
    let prepared = prepare_relayed(
        scan,
        &m,
        &rcpt,
        ForeignFrom::Rewrite {
            keep_reply_to: true,
        },
        "<1@h>",
        now,
    )
    .unwrap();
    let text = String::from_utf8(prepared.bytes).unwrap();
    assert!(text.contains(&format!("<{}>\r\n", m.username)), "{text}");
    assert!(text.contains("Reply-To: scanner@localdomain\r\n"), "{text}");
    assert!(!text.contains("From: Scanner"), "{text}");
    assert_eq!(prepared.recipients, rcpt, "the envelope's recipients");
    let refused = prepare_relayed(scan, &m, &rcpt, ForeignFrom::Refuse, "<1@h>", now);
    assert!(
        matches!(refused, Err(Refusal::Invalid(e)) if e[0].field == "from"),
        "the refuse policy refuses it"
    );
}

#[test]
fn only_allowed_headers_pass() {
    let mut errors = Vec::new();
    let ok = check_headers(
        &mut errors,
        &[
            ("x-ticket".into(), "42".into()),
            ("list-unsubscribe".into(), "<mailto:u@x.y>".into()),
            ("Received".into(), "forged".into()),
            ("X-Evil".into(), "a\r\nBcc: x@y.z".into()),
        ],
    );
    assert_eq!(
        ok,
        [
            ("x-ticket".to_owned(), "42".to_owned()),
            ("List-Unsubscribe".to_owned(), "<mailto:u@x.y>".to_owned())
        ]
    );
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].field, "headers.Received");
}
