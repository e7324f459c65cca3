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

use crate::domain::mailbox::Mailbox;
use crate::domain::{EmailAddress, FieldError};
use crate::outbox::headers;

mod mime;
#[cfg(test)]
mod tests;

pub use mime::{ForeignFrom, PreparedRaw, Refusal, prepare_raw, prepare_relayed};

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

/// A new Message-ID for a message accepted now.
pub fn new_message_id(id: &str, domain: &str) -> String {
    format!("<{id}@{domain}>")
}
