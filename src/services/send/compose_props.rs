//! Property tests of what an application may put into a message: whatever string reaches a
//! field of a JSON message (addresses, subject, extra headers, attachment names and types) or
//! the mailbox (From name, signature), the API refuses it naming that field, or the message
//! that leaves has exactly the header lines Herald meant: no injected header, no early end of
//! the header section, every value read back as given. And addresses: parsing never panics,
//! accepts only what lettre accepts, and round-trips.
//!
//! The strings mix plain text with the characters that break a header: CR, LF, CRLF, NUL, the
//! Unicode line and paragraph separators and NEL, encoded-word look-alikes, and whole injected
//! header lines.

use std::collections::BTreeMap;
use std::str::FromStr as _;

use mail_parser::{MessageParser, MimeHeaders as _};
use proptest::prelude::*;

use super::{SendRequest, draft};
use crate::config::OutboxSettings;
use crate::domain::{EmailAddress, FieldError};
use crate::outbox::compose::{AttachmentIn, check_addresses, compose, prepare_raw};
use crate::services::ServiceError;

/// Text with the pieces that break headers.
fn nasty() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => "[a-zA-Z0-9 .@<>:;,\"=?_()\\[\\]-]{0,8}",
        1 => Just("\r".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\r\n".to_owned()),
        1 => Just("\r\n\r\n".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("\t".to_owned()),
        1 => Just("\u{2028}".to_owned()),
        1 => Just("\u{2029}".to_owned()),
        1 => Just("\u{85}".to_owned()),
        1 => Just("\r\nBcc: evil@attacker.example".to_owned()),
        1 => Just("\nX-Injected: yes".to_owned()),
        1 => Just("=?utf-8?q?a=0D=0AX-Injected:_yes?=".to_owned()),
        1 => Just("é€😀".to_owned()),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// Where the string goes.
#[derive(Clone, Copy, Debug)]
enum Field {
    To,
    Cc,
    Bcc,
    ReplyTo,
    Subject,
    HeaderName,
    HeaderValue,
    Filename,
    ContentType,
    FromName,
    Signature,
    Text,
    Html,
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::To),
        Just(Field::Cc),
        Just(Field::Bcc),
        Just(Field::ReplyTo),
        Just(Field::Subject),
        Just(Field::HeaderName),
        Just(Field::HeaderValue),
        Just(Field::Filename),
        Just(Field::ContentType),
        Just(Field::FromName),
        Just(Field::Signature),
        Just(Field::Text),
        Just(Field::Html),
    ]
}

/// The API field a refusal must name for a string put in `field`.
fn api_field(field: Field) -> &'static str {
    match field {
        Field::To => "to[",
        Field::Cc => "cc[",
        Field::Bcc => "bcc[",
        Field::ReplyTo => "reply_to",
        Field::Subject => "subject",
        Field::HeaderName | Field::HeaderValue => "headers.",
        Field::Filename => "attachments[0].filename",
        Field::ContentType => "attachments[0].content_type",
        Field::Text => "text",
        Field::Html => "html",
        // The mailbox's own fields are checked where the mailbox is saved, not here.
        Field::FromName | Field::Signature => "-",
    }
}

/// Header names of a message's header section as a receiver splits it: every line up to the
/// first empty one, folded lines joined. Panics on a bare CR or LF or a line that is neither a
/// field nor a continuation: a receiver would read such a header section its own way.
fn header_names(bytes: &[u8]) -> Vec<String> {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header section ended by an empty line");
    let section = &bytes[..end + 2];
    for (i, b) in section.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && section[i - 1] == b'\r', "bare LF in the header"),
            b'\r' => assert_eq!(section.get(i + 1), Some(&b'\n'), "bare CR in the header"),
            0 => panic!("NUL in the header"),
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(section);
    let mut names = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            assert!(!names.is_empty(), "the header starts with a continuation");
            continue;
        }
        let (name, _) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("a header line without a name: {line:?}"));
        assert!(
            !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b)),
            "not a header name: {name:?}"
        );
        names.push(name.to_ascii_lowercase());
    }
    names
}

/// What a caller sends, with `value` in `field`.
fn request(field: Field, value: &str) -> SendRequest {
    let mut request = SendRequest {
        to: vec!["bob@example.com".into()],
        subject: Some("Hello".into()),
        text: Some("Hi Bob".into()),
        ..SendRequest::default()
    };
    let attachment = |filename: &str, content_type: Option<&str>| AttachmentIn {
        filename: filename.to_owned(),
        content_type: content_type.map(str::to_owned),
        content_base64: "aGVsbG8=".into(),
    };
    match field {
        Field::To => request.to = vec![value.to_owned()],
        Field::Cc => request.cc = vec![value.to_owned()],
        Field::Bcc => request.bcc = vec![value.to_owned()],
        Field::ReplyTo => request.reply_to = Some(value.to_owned()),
        Field::Subject => request.subject = Some(value.to_owned()),
        Field::HeaderName => {
            request.headers = BTreeMap::from([(value.to_owned(), "42".to_owned())]);
        }
        Field::HeaderValue => {
            request.headers = BTreeMap::from([("X-Ticket".to_owned(), value.to_owned())]);
        }
        Field::Filename => request.attachments = vec![attachment(value, Some("text/plain"))],
        Field::ContentType => request.attachments = vec![attachment("a.txt", Some(value))],
        Field::Text => request.text = Some(value.to_owned()),
        Field::Html => request.html = Some(value.to_owned()),
        Field::FromName | Field::Signature => {}
    }
    request
}

/// Checks one string in one field end to end: the API's validation, then the MIME built.
fn check(field: Field, value: &str) -> Result<(), TestCaseError> {
    let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let validated = draft(
        request(field, value),
        &OutboxSettings::default(),
        500,
        "<1@contoso.com>".into(),
        now,
        None,
    );
    let draft = match validated {
        Ok(draft) => draft,
        Err(ServiceError::Invalid(errors)) => {
            let wanted = api_field(field);
            prop_assert!(
                errors
                    .iter()
                    .any(|e: &FieldError| e.field.starts_with(wanted)),
                "refused, but not naming `{wanted}`: {errors:?}"
            );
            return Ok(());
        }
        Err(other) => return Err(TestCaseError::fail(format!("not a field error: {other}"))),
    };
    // The mailbox's fields as stored, unchecked: saving a mailbox refuses control characters
    // in a From name, but composing must not rely on it (lettre 0.11 panics on a line break).
    let mut mailbox = crate::oauth::errors::tests_support::mailbox();
    match field {
        Field::FromName => mailbox.from_name = Some(value.to_owned()),
        Field::Signature => mailbox.signature = Some(value.to_owned()),
        _ => {}
    }
    let (_, bytes) = match compose(&mailbox, &draft, false) {
        Ok(built) => built,
        // A From name with a control character fails the message, not the worker.
        Err(_) if matches!(field, Field::FromName) && value.chars().any(char::is_control) => {
            return Ok(());
        }
        // What was accepted must compose, or the message would fail when it is sent.
        Err(e) => return Err(TestCaseError::fail(format!("accepted, then: {e}"))),
    };

    // Exactly the header lines Herald meant, each once.
    let mut names = header_names(&bytes);
    names.retain(|n| n != "content-transfer-encoding");
    names.sort();
    let mut expected: Vec<String> = ["from", "to", "subject", "message-id", "date"]
        .into_iter()
        .chain(["mime-version", "content-type"])
        .map(str::to_owned)
        .collect();
    if !draft.cc.is_empty() {
        expected.push("cc".into());
    }
    if draft.reply_to.is_some() {
        expected.push("reply-to".into());
    }
    expected.extend(draft.headers.iter().map(|(n, _)| n.to_ascii_lowercase()));
    expected.sort();
    let shown = String::from_utf8_lossy(&bytes);
    prop_assert_eq!(&names, &expected, "{}", shown);

    // A receiver's parser reads the same header lines, and every value as given.
    let parsed = MessageParser::default()
        .parse(&bytes)
        .expect("mail-parser reads the message");
    let mut parsed_names: Vec<String> = parsed
        .headers()
        .iter()
        .map(|h| h.name().to_ascii_lowercase())
        .filter(|n| n != "content-transfer-encoding")
        .collect();
    parsed_names.sort();
    prop_assert_eq!(&parsed_names, &expected, "{}", shown);
    // Compared trimmed and with runs of blanks as one: mail-parser trims ASCII blanks (Rust's
    // `trim` also U+2028 and the like), and may fold the blanks beside an encoded word, which
    // changes how a value looks, never which header lines there are.
    prop_assert_eq!(
        squeeze(parsed.subject().unwrap_or_default()),
        squeeze(&draft.subject)
    );
    for (name, value) in &draft.headers {
        // Decoded (RFC 2047) and unfolded, as a receiver shows it: mail-parser decodes
        // encoded words in a Subject but leaves an unknown header raw, so read it as one.
        let read = parsed.header_raw(name.as_str()).map(|raw| {
            let one = format!("Subject:{raw}\r\n\r\n");
            let decoded = MessageParser::default().parse(one.as_bytes());
            let text = decoded
                .as_ref()
                .and_then(|m| m.subject())
                .unwrap_or_default();
            squeeze(text)
        });
        prop_assert_eq!(read, Some(squeeze(value)), "{}", shown);
    }
    if let Some(name) = mailbox.from_name.as_deref().map(str::trim) {
        let from = parsed.from().and_then(|a| a.first());
        let read = squeeze(from.and_then(|a| a.name()).unwrap_or_default());
        prop_assert_eq!(read, squeeze(name), "{}", shown);
    }
    for attachment in &draft.attachments {
        let read = parsed
            .attachments()
            .next()
            .and_then(|a| a.attachment_name());
        prop_assert_eq!(read, Some(attachment.filename.as_str()), "{}", shown);
    }
    Ok(())
}

/// A value as a reader compares it: trimmed, each run of spaces and tabs one space.
fn squeeze(text: &str) -> String {
    text.split([' ', '\t'])
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn no_string_in_any_field_injects_a_header(field in field(), value in nasty()) {
        check(field, &value)?;
    }

    #[test]
    fn parsing_an_address_never_panics_and_accepts_only_what_lettre_accepts(
        raw in prop_oneof![
            "[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]{1,12}@[a-zA-Z0-9.-]{1,12}",
            "\"[ -~]{0,6}\"@[a-z0-9.]{1,10}",
            "[a-z]{1,6}@\\[[0-9.:a-fA-F]{1,16}\\]",
            nasty(),
            (nasty(), "[a-z]{1,6}@[a-z]{1,6}\\.com", nasty()).prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        ]
    ) {
        let trimmed = raw.trim();
        let lettre = lettre::Address::from_str(trimmed);
        match EmailAddress::parse(&raw) {
            Ok(address) => {
                prop_assert!(lettre.is_ok(), "accepted what lettre refuses: {raw:?}");
                prop_assert!(!address.as_str().chars().any(char::is_control));
                prop_assert!(address.as_str().len() <= EmailAddress::MAX_LEN);
                // Round trip: the normal form parses to itself, and lettre reads it.
                prop_assert_eq!(EmailAddress::parse(address.as_str()), Ok(address.clone()));
                prop_assert!(lettre::Address::from_str(address.as_str()).is_ok());
            }
            Err(error) => {
                prop_assert_eq!(error.field.as_str(), "email");
                // Refused only for a reason of its own: empty, too long, a control
                // character, or what lettre refuses too.
                prop_assert!(
                    trimmed.is_empty()
                        || trimmed.len() > EmailAddress::MAX_LEN
                        || trimmed.chars().any(char::is_control)
                        || lettre.is_err(),
                    "refused what lettre accepts: {raw:?}: {error:?}"
                );
            }
        }
    }

    #[test]
    fn every_address_field_is_named_or_kept(values in prop::collection::vec(nasty(), 0..5)) {
        let mut errors = Vec::new();
        let kept = check_addresses(&mut errors, "cc", &values);
        prop_assert_eq!(kept.len() + errors.len(), values.len());
        for error in &errors {
            prop_assert!(error.field.starts_with("cc["), "{error:?}");
        }
        for address in &kept {
            prop_assert!(lettre::Address::from_str(address).is_ok(), "{address:?}");
        }
    }
}

/// The headers RFC 5322 §3.6 allows once (Resent-* blocks aside).
const ONCE_ONLY: [&str; 11] = [
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The duplicate-header rule of issue 13 (defect 1): the receiver reads the first From, a
    /// check the last, so a message carrying a once-only header twice is refused, however the
    /// second is spelled; the same message with it once passes.
    #[test]
    fn a_once_only_header_given_twice_is_refused(
        which in 0..ONCE_ONLY.len(),
        second_gap in prop_oneof![Just(""), Just(" ")],
        case_bits in any::<u64>(),
    ) {
        let mailbox = crate::oauth::errors::tests_support::mailbox();
        let own = &mailbox.username;
        let name = ONCE_ONLY[which];
        let value = |n: &str| match n {
            "From" | "Sender" => format!("Support <{own}>"),
            "Reply-To" | "To" | "Cc" | "Bcc" => "someone@example.com".to_owned(),
            "Date" => "Fri, 15 Jan 2027 08:00:00 +0000".to_owned(),
            "Message-ID" | "In-Reply-To" | "References" => "<1@contoso.com>".to_owned(),
            _ => "Hello".to_owned(),
        };
        let base: Vec<String> = ["From", "To", "Subject"]
            .iter()
            .chain(std::iter::once(&name))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|n| format!("{n}: {}\r\n", value(n)))
            .collect();
        let once = format!("{}\r\nhi\r\n", base.concat());
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        prop_assert!(
            prepare_raw(once.as_bytes(), &mailbox, "<2@contoso.com>", now).is_ok(),
            "refused with {name} once: {once}"
        );
        let respelled: String = name
            .chars()
            .enumerate()
            .map(|(i, c)| if case_bits >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
            .collect();
        // For From, the second one is another address: what a receiver would read first.
        let second = if name == "From" { "CEO <ceo@bigbank.example>".to_owned() } else { value(name) };
        let twice = format!("{respelled}{second_gap}: {second}\r\n{once}");
        let refused = prepare_raw(twice.as_bytes(), &mailbox, "<2@contoso.com>", now);
        prop_assert!(refused.is_err(), "accepted with {name} twice: {twice}");
    }
}
