//! Raw MIME given by an application or relayed from a device, prepared for sending: its
//! header fields read as a receiver reads them, Herald's own fields set, line ends made CRLF.

use super::*;

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
pub(super) fn strip_field(header: &[u8], name: &[u8]) -> Vec<u8> {
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
