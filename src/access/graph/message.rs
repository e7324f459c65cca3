//! The composed MIME message read back as a Graph `message` resource (JSON): what a draft is
//! created from (messages over 4 MB), and what `sendMail` takes as JSON when the mailbox keeps
//! no copy in Sent Items (`saveToSentItems: false`, which Graph's MIME form cannot carry).
//!
//! Graph takes only `X-` fields in `internetMessageHeaders`. The Message-ID goes in
//! `internetMessageId`; other fields of the composed message (List-Unsubscribe, In-Reply-To,
//! References) are not carried, so the MIME form is used whenever it can be.

use base64::Engine as _;
use lettre::address::Envelope;
use mail_parser::{MessageParser, MimeHeaders as _};
use serde_json::{Value, json};

/// An attachment read from the composed message.
pub(super) struct Attachment {
    pub name: String,
    pub content_type: String,
    pub content_id: Option<String>,
    pub bytes: Vec<u8>,
}

/// The draft to create, and the attachments to add to it.
pub(super) struct Draft {
    pub json: Vec<u8>,
    pub attachments: Vec<Attachment>,
}

/// A `#microsoft.graph.fileAttachment` with the attachment's bytes.
pub(super) fn file_attachment_json(attachment: &Attachment) -> Value {
    let mut body = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": attachment.name,
        "contentType": attachment.content_type,
        "contentBytes": base64::engine::general_purpose::STANDARD.encode(&attachment.bytes),
    });
    if let Some(id) = &attachment.content_id {
        body["isInline"] = json!(true);
        body["contentId"] = json!(id);
    }
    body
}

/// [`file_attachment_json`] as a request body.
pub(super) fn file_attachment(attachment: &Attachment) -> Vec<u8> {
    file_attachment_json(attachment).to_string().into_bytes()
}

/// `{"emailAddress": {"address", "name"}}` for each address of a header field.
fn recipients(list: Option<&mail_parser::Address<'_>>) -> Vec<Value> {
    list.into_iter()
        .flat_map(|a| a.iter())
        .filter_map(|a| {
            let address = a.address()?;
            Some(match a.name() {
                Some(name) if !name.trim().is_empty() => {
                    json!({ "emailAddress": { "address": address, "name": name.trim() } })
                }
                _ => json!({ "emailAddress": { "address": address } }),
            })
        })
        .collect()
}

/// The draft Graph is to hold: the composed message's headers, body and attachments, with
/// the envelope's recipients that its `To` and `Cc` do not name as `bccRecipients`.
pub(super) fn draft(envelope: &Envelope, message: &[u8], mailbox: &str) -> Option<Draft> {
    let parsed = MessageParser::default().parse(message)?;
    let to = recipients(parsed.to());
    let cc = recipients(parsed.cc());
    let visible: Vec<String> = to
        .iter()
        .chain(&cc)
        .filter_map(|r| r["emailAddress"]["address"].as_str())
        .map(str::to_lowercase)
        .collect();
    let bcc: Vec<Value> = envelope
        .to()
        .iter()
        .map(|a| a.to_string())
        .filter(|a| !visible.contains(&a.to_lowercase()))
        .map(|a| json!({ "emailAddress": { "address": a } }))
        .collect();
    let body = match parsed.html_part(0) {
        Some(part) if part.is_text_html() => json!({
            "contentType": "HTML",
            "content": parsed.body_html(0).unwrap_or_default(),
        }),
        _ => json!({
            "contentType": "Text",
            "content": parsed.body_text(0).unwrap_or_default(),
        }),
    };
    let mut json = json!({
        "subject": parsed.subject().unwrap_or_default(),
        "body": body,
        "toRecipients": to,
        "ccRecipients": cc,
        "bccRecipients": bcc,
        "replyTo": recipients(parsed.reply_to()),
    });
    // Only a From other than the mailbox (send-as) is named; Graph fills in the mailbox.
    if let Some(from) = recipients(parsed.from()).into_iter().next()
        && !from["emailAddress"]["address"]
            .as_str()
            .is_some_and(|a| a.eq_ignore_ascii_case(mailbox))
    {
        json["from"] = from;
    }
    if let Some(id) = parsed.message_id() {
        json["internetMessageId"] = json!(format!("<{id}>"));
    }
    let headers: Vec<Value> = parsed
        .headers_raw()
        .filter(|(name, _)| name.len() > 2 && name[..2].eq_ignore_ascii_case("x-"))
        .map(|(name, value)| json!({ "name": name, "value": unfold(value) }))
        .collect();
    if !headers.is_empty() {
        json["internetMessageHeaders"] = json!(headers);
    }
    let attachments = parsed
        .attachments()
        .enumerate()
        .map(|(i, part)| Attachment {
            name: part
                .attachment_name()
                .map_or_else(|| format!("attachment-{}", i + 1), str::to_owned),
            content_type: part.content_type().map_or_else(
                || "application/octet-stream".to_owned(),
                |ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_owned(),
                },
            ),
            content_id: part
                .content_id()
                .filter(|_| part.content_disposition().is_none_or(|d| d.is_inline()))
                .map(str::to_owned),
            bytes: part.contents().to_vec(),
        })
        .collect();
    Some(Draft {
        json: json.to_string().into_bytes(),
        attachments,
    })
}

/// A header field's value on one line.
fn unfold(value: &str) -> String {
    value
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_owned()
}

/// `sendMail`'s JSON body for a mailbox that keeps no copy in Sent Items: the message with
/// its attachments inline and `saveToSentItems: false`.
pub(super) fn send_mail_json(
    envelope: &Envelope,
    message: &[u8],
    mailbox: &str,
) -> Option<Vec<u8>> {
    let draft = draft(envelope, message, mailbox)?;
    let mut json: Value = serde_json::from_slice(&draft.json).ok()?;
    if !draft.attachments.is_empty() {
        json["attachments"] =
            Value::Array(draft.attachments.iter().map(file_attachment_json).collect());
    }
    Some(
        json!({ "message": json, "saveToSentItems": false })
            .to_string()
            .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draft_carries_the_headers_body_bcc_and_attachments_graph_can_take() {
        let envelope = Envelope::new(
            Some("support@contoso.com".parse().unwrap()),
            vec![
                "a@example.com".parse().unwrap(),
                "hidden@example.com".parse().unwrap(),
            ],
        )
        .unwrap();
        let message = concat!(
            "From: \"Contoso Support\" <support@contoso.com>\r\n",
            "To: Ann <a@example.com>\r\n",
            "Reply-To: help@contoso.com\r\n",
            "Subject: Report\r\n",
            "Message-ID: <m1@contoso.com>\r\n",
            "X-Ticket: 42\r\n",
            "List-Unsubscribe: <mailto:u@contoso.com>\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
            "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hi</p>\r\n",
            "--b\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\n",
            "Content-Disposition: attachment; filename=\"r.pdf\"\r\n",
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n",
        );
        let draft = draft(&envelope, message.as_bytes(), "support@contoso.com").unwrap();
        let json: Value = serde_json::from_slice(&draft.json).unwrap();
        assert_eq!(json["subject"], "Report");
        assert_eq!(json["body"]["contentType"], "HTML");
        assert!(
            json["body"]["content"]
                .as_str()
                .unwrap()
                .contains("<p>Hi</p>")
        );
        assert_eq!(json["toRecipients"][0]["emailAddress"]["name"], "Ann");
        assert_eq!(
            json["bccRecipients"],
            json!([{ "emailAddress": { "address": "hidden@example.com" } }])
        );
        assert_eq!(
            json["replyTo"][0]["emailAddress"]["address"],
            "help@contoso.com"
        );
        assert!(
            json.get("from").is_none(),
            "the mailbox itself: Graph fills it in"
        );
        assert_eq!(json["internetMessageId"], "<m1@contoso.com>");
        assert_eq!(
            json["internetMessageHeaders"],
            json!([{ "name": "X-Ticket", "value": "42" }])
        );
        assert_eq!(draft.attachments.len(), 1);
        assert_eq!(draft.attachments[0].name, "r.pdf");
        assert_eq!(draft.attachments[0].content_type, "application/pdf");
        assert_eq!(draft.attachments[0].bytes, b"%PDF-1.4\n");

        let send_as = message.replace("support@contoso.com>", "billing@fabrikam.com>");
        let draft = super::draft(&envelope, send_as.as_bytes(), "support@contoso.com").unwrap();
        let json: Value = serde_json::from_slice(&draft.json).unwrap();
        assert_eq!(
            json["from"]["emailAddress"]["address"],
            "billing@fabrikam.com"
        );
    }

    #[test]
    fn a_mailbox_that_keeps_no_copy_sends_json_with_its_attachments_inline() {
        let envelope = Envelope::new(
            Some("support@contoso.com".parse().unwrap()),
            vec!["a@example.com".parse().unwrap()],
        )
        .unwrap();
        let message = concat!(
            "From: support@contoso.com\r\nTo: a@example.com\r\nSubject: S\r\n",
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
            "--b\r\nContent-Type: text/plain\r\n\r\nHi\r\n",
            "--b\r\nContent-Type: text/plain; name=\"n.txt\"\r\n",
            "Content-Disposition: attachment; filename=\"n.txt\"\r\n\r\nnote\r\n--b--\r\n",
        );
        let body = send_mail_json(&envelope, message.as_bytes(), "support@contoso.com").unwrap();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["saveToSentItems"], false);
        assert_eq!(json["message"]["subject"], "S");
        let attachment = &json["message"]["attachments"][0];
        assert_eq!(attachment["@odata.type"], "#microsoft.graph.fileAttachment");
        assert_eq!(attachment["name"], "n.txt");
    }
}
