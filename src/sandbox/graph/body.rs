//! The two bodies `sendMail` takes: base64 MIME, and JSON composed into a simple MIME message.

use base64::Engine as _;
use serde::Deserialize;
use time::OffsetDateTime;

/// A message ready to store.
pub(super) struct Outgoing {
    /// The address of its `From:` (the mailbox when it had none).
    pub from: String,
    pub recipients: Vec<String>,
    pub raw: Vec<u8>,
    pub save_to_sent_items: Option<bool>,
}

pub(super) type Refusal = (&'static str, String);

fn no_recipients() -> Refusal {
    (
        "ErrorInvalidRecipients",
        "At least one recipient isn't valid., A message can't be sent because it contains no recipients.".into(),
    )
}

/// A base64 MIME body: recipients from To, Cc and Bcc; the Bcc header removed.
pub(super) fn from_mime(body: &[u8], mailbox: &str) -> Result<Outgoing, Refusal> {
    let text: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let invalid = || {
        (
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.".to_owned(),
        )
    };
    if text.is_empty() {
        return Err(invalid());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&text)
        .map_err(|_| invalid())?;
    let message = mail_parser::MessageParser::default()
        .parse(&raw)
        .ok_or_else(no_recipients)?;
    let mut recipients: Vec<String> = Vec::new();
    for list in [message.to(), message.cc(), message.bcc()]
        .into_iter()
        .flatten()
    {
        for address in list.iter().filter_map(|a| a.address()) {
            if !recipients.iter().any(|r| r.eq_ignore_ascii_case(address)) {
                recipients.push(address.to_owned());
            }
        }
    }
    if recipients.is_empty() || !recipients.iter().all(|r| r.contains('@')) {
        return Err(no_recipients());
    }
    let from = message
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .map(str::to_owned);
    let mut raw = strip_header(&raw, "bcc");
    if from.is_none() {
        // Graph fills in the sender.
        let mut with_from = format!("From: {mailbox}\r\n").into_bytes();
        with_from.extend_from_slice(&raw);
        raw = with_from;
    }
    Ok(Outgoing {
        from: from.unwrap_or_else(|| mailbox.to_owned()),
        recipients,
        raw,
        save_to_sent_items: None,
    })
}

/// The message without the header field `name` (with its folded lines).
fn strip_header(raw: &[u8], name: &str) -> Vec<u8> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(raw.len());
    let (head, rest) = raw.split_at(end);
    let mut out = Vec::with_capacity(raw.len());
    let mut skipping = false;
    for line in head.split_inclusive(|b| *b == b'\n') {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !folded {
            skipping = line.iter().position(|b| *b == b':').is_some_and(|colon| {
                line[..colon]
                    .trim_ascii()
                    .eq_ignore_ascii_case(name.as_bytes())
            });
        }
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(rest);
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendMailJson {
    message: Option<JsonMessage>,
    save_to_sent_items: Option<bool>,
}

/// A message as Graph's JSON has it (`sendMail`'s `message`, or a draft).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct JsonMessage {
    subject: Option<String>,
    internet_message_id: Option<String>,
    body: Option<ItemBody>,
    from: Option<Recipient>,
    to_recipients: Vec<Recipient>,
    cc_recipients: Vec<Recipient>,
    bcc_recipients: Vec<Recipient>,
    reply_to: Vec<Recipient>,
    internet_message_headers: Vec<MessageHeader>,
    attachments: Vec<JsonAttachment>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ItemBody {
    content_type: String,
    content: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    email_address: EmailAddress,
}

#[derive(Deserialize)]
struct EmailAddress {
    address: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct MessageHeader {
    name: String,
    value: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct JsonAttachment {
    pub name: String,
    pub content_type: Option<String>,
    pub content_bytes: String,
    pub is_inline: bool,
    pub content_id: Option<String>,
}

/// An attachment's bytes, decoded.
#[derive(Clone)]
pub(super) struct Part {
    pub name: String,
    pub content_type: String,
    pub content_id: Option<String>,
    pub bytes: Vec<u8>,
}

impl JsonAttachment {
    /// The attachment with its `contentBytes` decoded.
    pub(super) fn decode(&self) -> Result<Part, Refusal> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.content_bytes.trim())
            .map_err(|_| {
                (
                    "ErrorInvalidRequest",
                    format!("The attachment '{}' has invalid contentBytes.", self.name),
                )
            })?;
        Ok(Part {
            name: self.name.clone(),
            content_type: self
                .content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".into()),
            content_id: self.content_id.clone().filter(|_| self.is_inline),
            bytes,
        })
    }
}

/// `"Name" <address>` or the bare address.
fn mailbox_text(r: &Recipient) -> String {
    let address = r.email_address.address.trim();
    match r.email_address.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => format!("{} <{address}>", encode_word(name, true)),
        _ => address.to_owned(),
    }
}

/// RFC 2047 for non-ASCII text (and a quoted string for a display name).
fn encode_word(text: &str, phrase: bool) -> String {
    if text.is_ascii() {
        if phrase {
            return format!("\"{}\"", text.replace(['\\', '"'], ""));
        }
        return text.to_owned();
    }
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

/// Base64 in lines of 76.
fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// A JSON body composed into a simple MIME message (Bcc recipients not in its headers).
pub(super) fn from_json(
    body: &[u8],
    mailbox: &str,
    now: OffsetDateTime,
) -> Result<Outgoing, Refusal> {
    let request: SendMailJson = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let Some(message) = request.message else {
        return Err((
            "ErrorInvalidParameter",
            "The value of the parameter 'Message' is empty.".to_owned(),
        ));
    };
    check_headers(&message)?;
    let mut outgoing = compose(message, Vec::new(), mailbox, now)?;
    outgoing.save_to_sent_items = request.save_to_sent_items;
    Ok(outgoing)
}

/// Graph's answer to a body that is not JSON.
pub(super) fn unreadable() -> Refusal {
    (
        "BadRequest",
        "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.".to_owned(),
    )
}

/// Graph takes only `x-` fields in `internetMessageHeaders`.
pub(super) fn check_headers(message: &JsonMessage) -> Result<(), Refusal> {
    for h in &message.internet_message_headers {
        if !h.name.to_ascii_lowercase().starts_with("x-") {
            return Err((
                "InvalidInternetMessageHeader",
                format!(
                    "The internet message header name '{}' should start with 'x-' or 'X-'.",
                    h.name
                ),
            ));
        }
    }
    Ok(())
}

/// The message composed into MIME, with its own attachments and `more` (a draft's).
pub(super) fn compose(
    message: JsonMessage,
    more: Vec<Part>,
    mailbox: &str,
    now: OffsetDateTime,
) -> Result<Outgoing, Refusal> {
    let mut recipients: Vec<String> = Vec::new();
    for r in message
        .to_recipients
        .iter()
        .chain(&message.cc_recipients)
        .chain(&message.bcc_recipients)
    {
        let address = r.email_address.address.trim();
        if !address.contains('@') {
            return Err((
                "ErrorInvalidRecipients",
                format!(
                    "At least one recipient isn't valid., Recipient '{address}' is not resolved. All recipients must be resolved before a message can be submitted."
                ),
            ));
        }
        if !recipients.iter().any(|x| x.eq_ignore_ascii_case(address)) {
            recipients.push(address.to_owned());
        }
    }
    if recipients.is_empty() {
        return Err(no_recipients());
    }
    let from = message.from.as_ref().map_or_else(
        || mailbox.to_owned(),
        |f| f.email_address.address.trim().to_owned(),
    );
    let list = |rs: &[Recipient]| rs.iter().map(mailbox_text).collect::<Vec<_>>().join(", ");
    let mut head = format!(
        "From: {}\r\n",
        message
            .from
            .as_ref()
            .map_or_else(|| from.clone(), mailbox_text)
    );
    for (name, rs) in [
        ("To", &message.to_recipients),
        ("Cc", &message.cc_recipients),
        ("Reply-To", &message.reply_to),
    ] {
        if !rs.is_empty() {
            head.push_str(&format!("{name}: {}\r\n", list(rs)));
        }
    }
    head.push_str(&format!(
        "Subject: {}\r\n",
        encode_word(message.subject.as_deref().unwrap_or_default(), false)
    ));
    if let Ok(date) = now.format(&time::format_description::well_known::Rfc2822) {
        head.push_str(&format!("Date: {date}\r\n"));
    }
    let message_id = message
        .internet_message_id
        .as_deref()
        .map(|id| id.trim().replace(['\r', '\n'], ""))
        .filter(|id| id.starts_with('<') && id.ends_with('>') && id.contains('@'))
        .unwrap_or_else(|| {
            format!(
                "<{}@sandbox.herald.localhost>",
                uuid::Uuid::new_v4().simple()
            )
        });
    head.push_str(&format!(
        "Message-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
    ));
    for h in &message.internet_message_headers {
        head.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    let item = message.body.unwrap_or_default();
    let subtype = if item.content_type.eq_ignore_ascii_case("html") {
        "html"
    } else {
        "plain"
    };
    let text_part = format!(
        "Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(item.content.as_bytes())
    );
    let mut parts = message
        .attachments
        .iter()
        .map(JsonAttachment::decode)
        .collect::<Result<Vec<_>, _>>()?;
    parts.extend(more);
    let raw = if parts.is_empty() {
        format!("{head}{text_part}")
    } else {
        let boundary = format!("_sbx_{}", uuid::Uuid::new_v4().simple());
        let mut raw = format!(
            "{head}Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n{text_part}"
        );
        for a in &parts {
            let name = a.name.replace(['"', '\r', '\n'], "");
            let content_type = a.content_type.replace(['\r', '\n'], "");
            let (disposition, id) = match &a.content_id {
                Some(id) => (
                    "inline",
                    format!(
                        "Content-ID: <{}>\r\n",
                        id.replace(['\r', '\n', '<', '>'], "")
                    ),
                ),
                None => ("attachment", String::new()),
            };
            raw.push_str(&format!(
                "--{boundary}\r\nContent-Type: {content_type}; name=\"{name}\"\r\nContent-Disposition: {disposition}; filename=\"{name}\"\r\n{id}Content-Transfer-Encoding: base64\r\n\r\n{}",
                base64_lines(&a.bytes)
            ));
        }
        raw.push_str(&format!("--{boundary}--\r\n"));
        raw
    };
    Ok(Outgoing {
        from,
        recipients,
        raw: raw.into_bytes(),
        save_to_sent_items: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bcc_header_and_its_folded_lines_are_removed() {
        let raw = b"From: a@x.y\r\nBcc: b@x.y,\r\n c@x.y\r\nTo: d@x.y\r\n\r\nBcc: stays\r\n";
        assert_eq!(
            strip_header(raw, "bcc"),
            b"From: a@x.y\r\nTo: d@x.y\r\n\r\nBcc: stays\r\n"
        );
    }
}
