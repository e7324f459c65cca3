//! What an application sends, validated at the door, and the MIME that leaves through a
//! mailbox.
//!
//! A JSON message is kept as a validated [`Draft`] and composed when it is sent: From is the
//! mailbox that sends it (an organization's held mail may be released to a mailbox verified
//! later), with its Reply-To and signature. Its Message-ID and Date are fixed at acceptance, so
//! a retry is the same message to the receiver. Raw MIME is sent as given, except that Bcc is
//! removed and a missing Message-ID, Date or Reply-To is added.

use base64::Engine as _;
use lettre::address::Envelope;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, MultiPart, SinglePart};
use serde::{Deserialize, Serialize};

use super::headers;
use crate::domain::mailbox::Mailbox;
use crate::domain::{EmailAddress, FieldError};

/// The most attachments one message may carry.
pub const MAX_ATTACHMENTS: usize = 50;
/// The most extra headers one message may carry.
pub const MAX_HEADERS: usize = 50;
const MAX_SUBJECT: usize = 998;
const MAX_HEADER_VALUE: usize = 998;

/// Headers a caller may set besides `X-*`.
const ALLOWED_HEADERS: &[&str] = &[
    "In-Reply-To",
    "References",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// An attachment as the API takes it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentIn {
    pub filename: String,
    /// e.g. `application/pdf`; default `application/octet-stream`.
    pub content_type: Option<String>,
    /// The content, base64-encoded.
    pub content_base64: String,
}

/// A validated message, kept until it is sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Draft {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub reply_to: Option<String>,
    /// `(name, value)` in the order given.
    pub headers: Vec<(String, String)>,
    pub attachments: Vec<AttachmentIn>,
    /// `<…@…>`, fixed at acceptance.
    pub message_id: String,
    /// Unix seconds, fixed at acceptance.
    pub date: i64,
    /// The organization's Reply-To, used when the installation's default sender sends for it.
    pub org_reply_to: Option<String>,
}

impl Draft {
    /// Every envelope recipient: To, Cc and Bcc.
    pub fn recipients(&self) -> Vec<String> {
        self.to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .cloned()
            .collect()
    }
}

/// Checks one address field, naming `field[i]` on error; answers the normalized addresses.
pub fn check_addresses(
    errors: &mut Vec<FieldError>,
    field: &str,
    values: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, raw) in values.iter().enumerate() {
        match EmailAddress::parse_field("address", raw) {
            Ok(address) => out.push(address.as_str().to_owned()),
            Err(e) => errors.push(FieldError::new(format!("{field}[{i}]"), e.message)),
        }
    }
    out
}

/// Checks the extra headers against the allow-list; answers them with canonical names.
pub fn check_headers(
    errors: &mut Vec<FieldError>,
    headers: &[(String, String)],
) -> Vec<(String, String)> {
    if headers.len() > MAX_HEADERS {
        errors.push(FieldError::new(
            "headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (name, value) in headers {
        let field = format!("headers.{name}");
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        let canonical = ALLOWED_HEADERS
            .iter()
            .find(|h| h.eq_ignore_ascii_case(name))
            .map(|h| (*h).to_owned())
            .or_else(|| {
                (token && name.len() > 2 && name[..2].eq_ignore_ascii_case("x-"))
                    .then(|| name.clone())
            });
        let Some(canonical) = canonical else {
            errors.push(FieldError::new(
                field,
                format!(
                    "is not a header Herald lets callers set: use X-* headers, {}",
                    ALLOWED_HEADERS.join(", ")
                ),
            ));
            continue;
        };
        if value.chars().any(char::is_control) || encodes_control(value) {
            errors.push(FieldError::new(
                field,
                "must not contain line breaks or other control characters",
            ));
            continue;
        }
        if value.len() > MAX_HEADER_VALUE {
            errors.push(FieldError::new(
                field,
                format!("is too long: at most {MAX_HEADER_VALUE} bytes"),
            ));
            continue;
        }
        out.push((canonical, value.clone()));
    }
    out
}

/// Whether a receiver decoding the RFC 2047 encoded words (`=?utf-8?q?…?=`) of a header value
/// reads a control character, such as a line break, that the raw text does not show. Such a
/// value is sent as given, and decoded by whoever reads it.
fn encodes_control(value: &str) -> bool {
    value.contains("=?")
        && mail_parser::MessageParser::default()
            .parse(format!("Subject: {value}\r\n\r\n").as_bytes())
            .and_then(|m| m.subject().map(|s| s.chars().any(char::is_control)))
            .unwrap_or(false)
}

/// Checks a subject: one line, even once its encoded words are decoded.
pub fn check_subject(errors: &mut Vec<FieldError>, subject: &str) {
    if subject.chars().any(char::is_control) || encodes_control(subject) {
        errors.push(FieldError::new(
            "subject",
            "must not contain line breaks or other control characters",
        ));
    } else if subject.chars().count() > MAX_SUBJECT {
        errors.push(FieldError::new(
            "subject",
            format!("is too long: at most {MAX_SUBJECT} characters"),
        ));
    }
}

/// Checks the attachments; answers their decoded size in bytes.
pub fn check_attachments(errors: &mut Vec<FieldError>, attachments: &[AttachmentIn]) -> u64 {
    if attachments.len() > MAX_ATTACHMENTS {
        errors.push(FieldError::new(
            "attachments",
            format!("at most {MAX_ATTACHMENTS} attachments"),
        ));
        return 0;
    }
    let mut total = 0u64;
    for (i, a) in attachments.iter().enumerate() {
        let field = |f: &str| format!("attachments[{i}].{f}");
        if a.filename.trim().is_empty()
            || a.filename
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '\\')
            || encodes_control(&a.filename)
            || a.filename.chars().count() > 255
        {
            errors.push(FieldError::new(
                field("filename"),
                "must be a file name of 1–255 characters without slashes or line breaks",
            ));
        }
        if let Some(ct) = &a.content_type
            && ContentType::parse(ct).is_err()
        {
            errors.push(FieldError::new(
                field("content_type"),
                format!("`{ct}` is not a media type such as application/pdf"),
            ));
        }
        match base64::engine::general_purpose::STANDARD.decode(a.content_base64.trim()) {
            Ok(bytes) => total += bytes.len() as u64,
            Err(_) => errors.push(FieldError::new(
                field("content_base64"),
                "is not valid base64",
            )),
        }
    }
    total
}

fn lettre_mailbox(name: Option<String>, address: &str) -> Result<lettre::message::Mailbox, String> {
    // lettre 0.11 panics formatting a name with a line break. Saved names have none, but a bad
    // one must fail its message, not the worker that composes it.
    if let Some(name) = name.as_deref().filter(|n| n.chars().any(char::is_control)) {
        return Err(format!(
            "the From name {name:?} contains a control character"
        ));
    }
    Ok(lettre::message::Mailbox::new(
        name,
        address
            .parse()
            .map_err(|e| format!("`{address}` is not an address lettre accepts: {e}"))?,
    ))
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The text and HTML bodies with the mailbox's signature appended (HTML-escaped in HTML).
pub fn with_signature(
    signature: Option<&str>,
    text: Option<&str>,
    html: Option<&str>,
) -> (Option<String>, Option<String>) {
    let text = text.map(|text| match signature {
        Some(signature) => format!("{text}\n\n-- \n{signature}\n"),
        None => format!("{text}\n"),
    });
    let html = html.map(|html| match signature {
        Some(signature) => {
            let signature = escape_html(signature).replace('\n', "<br>\n");
            let block = format!("<p>-- <br>\n{signature}</p>");
            match html.rfind("</body>") {
                Some(at) => format!("{}{block}\n{}", &html[..at], &html[at..]),
                None => format!("{html}\n{block}"),
            }
        }
        None => html.to_owned(),
    });
    (text, html)
}

/// Composes a draft as sent through `mailbox`: From, Reply-To (the caller's; else, through the
/// default sender, the organization's; else the mailbox's), signature, headers, attachments.
/// `via_default_sender` says the mailbox sends on another organization's behalf.
pub fn compose(
    mailbox: &Mailbox,
    draft: &Draft,
    via_default_sender: bool,
) -> Result<(Envelope, Vec<u8>), String> {
    let mut builder = lettre::Message::builder()
        .from(lettre_mailbox(
            mailbox.from_name.clone(),
            &mailbox.username,
        )?)
        .subject(draft.subject.clone())
        .message_id(Some(draft.message_id.clone()))
        .date(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(draft.date).unwrap_or(0)),
        );
    for to in &draft.to {
        builder = builder.to(lettre_mailbox(None, to)?);
    }
    for cc in &draft.cc {
        builder = builder.cc(lettre_mailbox(None, cc)?);
    }
    for bcc in &draft.bcc {
        builder = builder.bcc(lettre_mailbox(None, bcc)?);
    }
    let reply_to = draft.reply_to.clone().or_else(|| {
        if via_default_sender {
            draft
                .org_reply_to
                .clone()
                .or_else(|| mailbox.reply_to.clone())
        } else {
            mailbox.reply_to.clone()
        }
    });
    if let Some(reply_to) = reply_to {
        builder = builder.reply_to(lettre_mailbox(None, &reply_to)?);
    }
    for (name, value) in &draft.headers {
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| format!("`{name}` is not a header name"))?;
        builder = builder.raw_header(HeaderValue::new(name, value.clone()));
    }
    let (text, html) = with_signature(
        mailbox.signature.as_deref(),
        draft.text.as_deref(),
        draft.html.as_deref(),
    );
    enum Content {
        One(SinglePart),
        Alternative(MultiPart),
    }
    let single = |content_type: ContentType, body: String| {
        SinglePart::builder().header(content_type).body(body)
    };
    let content = match (text, html) {
        (Some(text), Some(html)) => {
            Content::Alternative(MultiPart::alternative_plain_html(text, html))
        }
        (Some(text), None) => Content::One(single(ContentType::TEXT_PLAIN, text)),
        (None, Some(html)) => Content::One(single(ContentType::TEXT_HTML, html)),
        (None, None) => Content::One(single(ContentType::TEXT_PLAIN, String::new())),
    };
    let built = |result: Result<lettre::Message, lettre::error::Error>| {
        result
            .map(|message| (message.envelope().clone(), message.formatted()))
            .map_err(|e| e.to_string())
    };
    if draft.attachments.is_empty() {
        return built(match content {
            Content::One(part) => builder.singlepart(part),
            Content::Alternative(part) => builder.multipart(part),
        });
    }
    let mut mixed = match content {
        Content::One(part) => MultiPart::mixed().singlepart(part),
        Content::Alternative(part) => MultiPart::mixed().multipart(part),
    };
    for a in &draft.attachments {
        let content = base64::engine::general_purpose::STANDARD
            .decode(a.content_base64.trim())
            .map_err(|e| format!("attachment {}: {e}", a.filename))?;
        let content_type = ContentType::parse(
            a.content_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        )
        .map_err(|e| format!("attachment {}: {e}", a.filename))?;
        // Always base64: content is bytes, and a 7-bit guess would send its bare LFs as they are.
        let body = lettre::message::Body::new_with_encoding(
            content,
            lettre::message::header::ContentTransferEncoding::Base64,
        )
        .map_err(|_| format!("attachment {}: cannot encode", a.filename))?;
        mixed = mixed.singlepart(Attachment::new(a.filename.clone()).body(body, content_type));
    }
    built(builder.multipart(mixed))
}

/// Raw MIME, checked and made ready to send.
pub struct PreparedRaw {
    pub bytes: Vec<u8>,
    pub recipients: Vec<String>,
    pub subject: String,
    pub message_id: String,
}

/// Why raw MIME is refused.
#[derive(Debug)]
pub enum Refusal {
    Invalid(Vec<FieldError>),
    /// A field RFC 5322 allows once (see [`headers::SINGLE`]) came more than once: receivers
    /// disagree on which one counts.
    DuplicateHeader(&'static str),
}

impl Refusal {
    fn one(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }
}

/// What a relay does with a From that is not the mailbox's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignFrom {
    /// Refuse the message (the API, and relay credentials with the `refuse` policy).
    Refuse,
    /// Send as the mailbox; with `keep_reply_to`, the original From becomes the Reply-To
    /// (unless the message sets one).
    Rewrite { keep_reply_to: bool },
}

/// Checks raw MIME for `mailbox`: its From (and Sender, Resent-From, Resent-Sender) must be the
/// mailbox's address, no field allowed once may come twice, and its recipients (To, Cc, Bcc)
/// must be addresses. Line ends become CRLF, Bcc is removed, and a missing Message-ID,
/// Date or Reply-To (the mailbox's) is added.
pub fn prepare_raw(
    raw: &[u8],
    mailbox: &Mailbox,
    message_id: &str,
    date: time::OffsetDateTime,
) -> Result<PreparedRaw, Refusal> {
    prepare_mime(raw, mailbox, None, ForeignFrom::Refuse, message_id, date)
}

/// Like [`prepare_raw`], for mail that arrived over SMTP: the recipients are the envelope's,
/// and a foreign From is handled by `foreign`.
pub fn prepare_relayed(
    raw: &[u8],
    mailbox: &Mailbox,
    recipients: &[String],
    foreign: ForeignFrom,
    message_id: &str,
    date: time::OffsetDateTime,
) -> Result<PreparedRaw, Refusal> {
    prepare_mime(raw, mailbox, Some(recipients), foreign, message_id, date)
}

fn prepare_mime(
    raw: &[u8],
    mailbox: &Mailbox,
    envelope: Option<&[String]>,
    foreign: ForeignFrom,
    message_id: &str,
    date: time::OffsetDateTime,
) -> Result<PreparedRaw, Refusal> {
    if raw.contains(&0) {
        return Err(Refusal::one("body", "must not contain NUL bytes"));
    }
    let normalized = crlf(raw);
    let Some(header_end) = find(&normalized, b"\r\n\r\n") else {
        return Err(Refusal::one(
            "body",
            "is not a MIME message: no blank line ends its header",
        ));
    };
    let fields = headers::fields(&normalized[..header_end + 2]).map_err(|e| {
        Refusal::one(
            "body",
            format!(
                "line {} of the header is not a field (`Name: value`)",
                e.line
            ),
        )
    })?;
    if let Some(name) = headers::duplicate(&fields) {
        return Err(Refusal::DuplicateHeader(name));
    }
    let parsed = mail_parser::MessageParser::default()
        .parse(&normalized)
        .ok_or_else(|| Refusal::one("body", "is not a MIME message"))?;
    let addresses = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|addr| addr.address().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
    };
    let is_own =
        |list: &[String]| matches!(list, [one] if one.eq_ignore_ascii_case(&mailbox.username));
    // Read from the fields, not the parser, which answers the last of several.
    let from: Vec<String> = fields
        .iter()
        .filter(|f| f.is("From"))
        .flat_map(|f| headers::addresses(&f.value))
        .collect();
    let own = is_own(&from);
    // Sender and the Resent- fields name a sender too: a foreign one is refused like a foreign
    // From, or removed where the From is rewritten.
    let foreign_originators: Vec<(&'static str, Vec<String>)> = headers::ORIGINATOR[1..]
        .iter()
        .flat_map(|name| {
            fields
                .iter()
                .filter(|f| f.is(name))
                .map(|f| (*name, headers::addresses(&f.value)))
        })
        .filter(|(_, list)| !is_own(list))
        .collect();
    let mut added = String::new();
    let mut strip: Vec<&[u8]> = vec![b"bcc"];
    let mut reply_to_added = false;
    if let ForeignFrom::Refuse = foreign
        && let Some((name, list)) = foreign_originators.first()
    {
        return Err(Refusal::one(
            &name.to_ascii_lowercase(),
            format!(
                "the message's {name} is {}, but this mailbox sends only as {}",
                if list.is_empty() {
                    "not an address".to_owned()
                } else {
                    headers::shown(list)
                },
                mailbox.username
            ),
        ));
    }
    for (name, _) in &foreign_originators {
        strip.push(name.as_bytes());
    }
    if !own {
        match foreign {
            ForeignFrom::Refuse if from.is_empty() => {
                return Err(Refusal::one(
                    "from",
                    format!(
                        "the message has no From header: it must be {}",
                        mailbox.username
                    ),
                ));
            }
            ForeignFrom::Refuse => {
                return Err(Refusal::one(
                    "from",
                    format!(
                        "the message's From is {}, but this mailbox sends only as {}",
                        headers::shown(&from),
                        mailbox.username
                    ),
                ));
            }
            ForeignFrom::Rewrite { keep_reply_to } => {
                strip.push(b"from");
                let name = mailbox
                    .from_name
                    .as_deref()
                    .filter(|n| !n.chars().any(char::is_control))
                    .map(|n| format!("\"{}\" ", n.replace(['"', '\\'], "")))
                    .unwrap_or_default();
                added.push_str(&format!("From: {name}<{}>\r\n", mailbox.username));
                let replies: Vec<&str> = from
                    .iter()
                    .filter(|a| !a.is_empty())
                    .map(String::as_str)
                    .collect();
                if keep_reply_to && parsed.reply_to().is_none() && !replies.is_empty() {
                    added.push_str(&format!("Reply-To: {}\r\n", replies.join(", ")));
                    reply_to_added = true;
                }
            }
        }
    }
    let mut errors = Vec::new();
    let recipients = match envelope {
        Some(envelope) => check_addresses(&mut errors, "to", envelope),
        None => {
            let mut recipients = Vec::new();
            for (field, list) in [
                ("to", addresses(parsed.to())),
                ("cc", addresses(parsed.cc())),
                ("bcc", addresses(parsed.bcc())),
            ] {
                recipients.extend(check_addresses(&mut errors, field, &list));
            }
            recipients
        }
    };
    if recipients.is_empty() && errors.is_empty() {
        errors.push(FieldError::new(
            "to",
            "the message has no recipients in To, Cc or Bcc",
        ));
    }
    if !errors.is_empty() {
        return Err(Refusal::Invalid(errors));
    }
    let subject = parsed.subject().unwrap_or_default().to_owned();
    let existing_id = parsed.message_id().map(|id| format!("<{id}>"));
    if existing_id.is_none() {
        added.push_str(&format!("Message-ID: {message_id}\r\n"));
    }
    if parsed.date().is_none() {
        let date = date
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default();
        added.push_str(&format!("Date: {date}\r\n"));
    }
    if !reply_to_added
        && parsed.reply_to().is_none()
        && let Some(reply_to) = &mailbox.reply_to
    {
        added.push_str(&format!("Reply-To: {reply_to}\r\n"));
    }
    let mut header = normalized[..header_end + 2].to_vec();
    for name in strip {
        header = strip_field(&header, name);
    }
    let mut bytes = Vec::with_capacity(normalized.len() + added.len());
    bytes.extend_from_slice(added.as_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&normalized[header_end + 2..]);
    // A device's plain-text message gets the mailbox's signature, as API mail does. Other
    // shapes (multipart, quoted-printable, base64) are left as the device wrote them.
    if envelope.is_some()
        && let Some(signature) = &mailbox.signature
        && is_plain_7_or_8_bit(&parsed)
    {
        if !bytes.ends_with(b"\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n-- \r\n");
        for line in signature.lines() {
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
    }
    Ok(PreparedRaw {
        bytes,
        recipients,
        subject,
        message_id: existing_id.unwrap_or_else(|| message_id.to_owned()),
    })
}

/// Whether the message is one text/plain part in 7bit or 8bit, which a signature can be
/// appended to as it is.
fn is_plain_7_or_8_bit(parsed: &mail_parser::Message<'_>) -> bool {
    use mail_parser::MimeHeaders as _;
    let plain = parsed.content_type().is_none_or(|ct| {
        ct.ctype().eq_ignore_ascii_case("text")
            && ct.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))
    });
    let encoding = parsed
        .header_raw("Content-Transfer-Encoding")
        .map(|e| e.trim().to_ascii_lowercase());
    plain && encoding.is_none_or(|e| e == "7bit" || e == "8bit")
}

/// Every bare CR or LF becomes CRLF.
fn crlf(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 50);
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\r' if raw.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The header section without the fields called `name` (and their folded lines).
fn strip_field(header: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len());
    let mut skipping = false;
    for line in header.split_inclusive(|b| *b == b'\n') {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            skipping = line.len() > name.len()
                && line[..name.len()].eq_ignore_ascii_case(name)
                && line[name.len()..]
                    .iter()
                    .find(|b| **b != b' ' && **b != b'\t')
                    == Some(&b':');
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out
}

/// A new Message-ID for a message accepted now.
pub fn new_message_id(id: &str, domain: &str) -> String {
    format!("<{id}@{domain}>")
}

#[cfg(test)]
mod tests {
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
        let now = time::OffsetDateTime::now_utc();
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
        let now = time::OffsetDateTime::now_utc();
        let scan = b"From: Scanner <scanner@localdomain>\r\nTo: a@example.com\r\nSubject: Scan\r\n\r\npdf\r\n";
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
}
