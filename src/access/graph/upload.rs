//! Messages over Graph's 4 MB request limit, sent the way Graph documents for them: the
//! message becomes a draft (`POST /users/{mailbox}/messages`, JSON read from the composed MIME
//! with mail-parser), each attachment is added to the draft (under 3 MB in one
//! `POST …/attachments`; larger through `…/attachments/createUploadSession`, whose URL takes
//! `PUT`s of at most 4 MB with `Content-Range`), and `POST …/messages/{id}/send` sends it
//! (`202`). Messages over 150 MB (Graph's attachment limit) are refused `552 5.3.4` before
//! any request.
//!
//! A step that fails deletes the draft (best effort), so no half-built message stays in the
//! mailbox's Drafts folder, and the failure is classified as `sendMail`'s are: `429` and `5xx`
//! are retried later, a refused message fails, a fault of the mailbox turns it Not Verified.
//! The upload URL is pre-authenticated: the bearer token is never sent to it.
//!
//! What differs from `sendMail`:
//! - Sent Items: Graph's `send` of a draft always leaves a copy in Sent Items; it has no
//!   `saveToSentItems`. A mailbox set not to save sent mail still keeps these messages.
//! - Permission: a draft takes Mail.ReadWrite (delegated or application), where `sendMail`
//!   takes Mail.Send only. Without it Graph answers `403` and only this message fails,
//!   naming the permission.
//! - Answers: Graph answers a new draft with the whole message, body included; Herald reads
//!   Graph's answers up to 6 MB. An answer larger still fails the message for good (retrying
//!   would only leave more drafts), saying the draft may be left in Drafts.
//! - Headers: as [`super::message`] says.

// `Refusal` is `Connection::send`'s own error, made once per request.
#![allow(clippy::result_large_err)]

use std::ops::Range;

use axum::http::{HeaderValue, Method, header};
use lettre::address::Envelope;
use serde_json::{Value, json};

use super::errors::{
    draft_refused, draft_unanswered, message_refused, refusal, too_large, unreachable,
};
use super::message::{Attachment, draft, file_attachment};
use super::{Answer, GraphConnection, build, exchange, user_url};
use crate::access::AccessResult;
use crate::access::transport::{Refusal, SendFailure};
use crate::domain::message::SmtpReply;

/// The largest message sent this way: Graph takes attachments up to 150 MB.
pub(super) const MAX_MESSAGE_BYTES: usize = 150 * 1024 * 1024;

/// Attachments smaller than this go in one `POST` (Graph: "under 3 MB"; its base64 and the
/// JSON around it stay under the 4 MB request limit); larger ones through an upload session
/// (which Graph refuses for small files).
pub(super) const INLINE_ATTACHMENT_BYTES: usize = 3_000_000;

/// The bytes of one upload `PUT`: at most 4 MB, and a multiple of 320 KiB as Microsoft's
/// upload sessions ask.
pub(super) const CHUNK_BYTES: usize = 12 * 320 * 1024;

/// Sends `message` as a draft with attachments; answers as [`GraphConnection::request`].
pub(super) async fn send_large(
    connection: &mut GraphConnection,
    envelope: &Envelope,
    message: &[u8],
) -> AccessResult<Result<SmtpReply, Refusal>> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Ok(Err(too_large(message.len(), MAX_MESSAGE_BYTES)));
    }
    let Some(draft) = draft(envelope, message, &connection.mailbox.username) else {
        return Ok(Err(message_refused(SmtpReply::new(
            Some(554),
            "5.6.0 Herald could not read the composed message back to build a Microsoft Graph draft",
        ))));
    };
    let messages = match user_url(&connection.mailbox, &["messages"]) {
        Ok(url) => url,
        Err(failure) => return Ok(Err(refusal(failure))),
    };
    let created = connection
        .authorized_or(
            |token| {
                build(
                    Method::POST,
                    &messages,
                    Some(token),
                    Some("application/json"),
                    draft.json.clone(),
                )
            },
            draft_unanswered,
        )
        .await?;
    let created = match created {
        Ok(answer) if answer.status == 201 => answer,
        Ok(answer) if answer.status == 403 && answer.code() != "ErrorSendAsDenied" => {
            let said = format!("{} {}{}", answer.status, answer.code(), answer.id());
            return Ok(Err(draft_refused(&said, &connection.mailbox)));
        }
        Ok(answer) => return Ok(Err(answer.refusal(&connection.mailbox))),
        Err(refused) => return Ok(Err(refused)),
    };
    let Some(id) = created.body.get("id").and_then(Value::as_str) else {
        return Ok(Err(transient(
            "Microsoft Graph created a draft without an id",
        )));
    };
    let draft_url = match user_url(&connection.mailbox, &["messages", id]) {
        Ok(url) => url,
        Err(failure) => return Ok(Err(refusal(failure))),
    };
    let outcome = complete(connection, &draft_url, &draft.attachments).await;
    if !matches!(outcome, Ok(Ok(_))) {
        discard(connection, &draft_url).await;
    }
    outcome
}

/// Adds the attachments to the draft and sends it.
async fn complete(
    connection: &mut GraphConnection,
    draft_url: &url::Url,
    attachments: &[Attachment],
) -> AccessResult<Result<SmtpReply, Refusal>> {
    let child = |tail: &[&str]| {
        let mut url = draft_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(tail);
        }
        url
    };
    for attachment in attachments {
        let added = if attachment.bytes.len() < INLINE_ATTACHMENT_BYTES {
            let url = child(&["attachments"]);
            let body = file_attachment(attachment);
            connection
                .authorized(|token| {
                    build(
                        Method::POST,
                        &url,
                        Some(token),
                        Some("application/json"),
                        body.clone(),
                    )
                })
                .await?
                .and_then(|answer| expect(&answer, 201, connection))
        } else {
            let url = child(&["attachments", "createUploadSession"]);
            upload(connection, &url, attachment).await?
        };
        if let Err(refused) = added {
            return Ok(Err(refused));
        }
    }
    let url = child(&["send"]);
    let sent = connection
        .authorized(|token| build(Method::POST, &url, Some(token), None, Vec::new()))
        .await?;
    Ok(sent.and_then(|answer| {
        expect(&answer, 202, connection)?;
        Ok(answer.accepted())
    }))
}

/// Creates an upload session for the attachment and puts its bytes, chunk by chunk.
async fn upload(
    connection: &mut GraphConnection,
    session_url: &url::Url,
    attachment: &Attachment,
) -> AccessResult<Result<(), Refusal>> {
    let body = upload_session_request(attachment);
    let answer = connection
        .authorized(|token| {
            build(
                Method::POST,
                session_url,
                Some(token),
                Some("application/json"),
                body.clone(),
            )
        })
        .await?;
    let session = match answer.and_then(|answer| expect(&answer, 201, connection).map(|_| answer)) {
        Ok(session) => session,
        Err(refused) => return Ok(Err(refused)),
    };
    let Some(upload_url) = session
        .body
        .get("uploadUrl")
        .and_then(Value::as_str)
        .and_then(|u| url::Url::parse(u).ok())
    else {
        return Ok(Err(transient(
            "Microsoft Graph created an upload session without an uploadUrl",
        )));
    };
    let total = attachment.bytes.len();
    let mut start = 0;
    while start < total {
        let range = chunk(start, total);
        // Pre-authenticated: no bearer token (Graph refuses a PUT that carries one).
        let request = build(
            Method::PUT,
            &upload_url,
            None,
            Some("application/octet-stream"),
            attachment.bytes[range.clone()].to_vec(),
        )
        .map(|mut request| {
            if let Ok(value) = HeaderValue::from_str(&content_range(&range, total)) {
                request.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            request
        });
        let answer = match request {
            Ok(request) => exchange(&connection.access, request).await,
            Err(e) => Err(e),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => return Ok(Err(refusal(unreachable(&e)))),
        };
        match answer.status {
            201 => return Ok(Ok(())),
            200 => match next_start(&answer.body) {
                // Graph says where to go on; it must be forward, or the upload never ends.
                Some(next) if next > start && next <= total => start = next,
                None => start = range.end,
                Some(next) => {
                    return Ok(Err(transient(&format!(
                        "Microsoft Graph's upload session asked for byte {next} after bytes {}-{}",
                        range.start,
                        range.end - 1
                    ))));
                }
            },
            _ => return Ok(Err(answer.refusal(&connection.mailbox))),
        }
    }
    Ok(Err(transient(
        "Microsoft Graph's upload session took every byte but did not create the attachment",
    )))
}

/// Deletes the draft; a failure here changes nothing about the outcome already decided.
async fn discard(connection: &GraphConnection, draft_url: &url::Url) {
    let request = build(
        Method::DELETE,
        draft_url,
        Some(&connection.token),
        None,
        Vec::new(),
    );
    let answer = match request {
        Ok(request) => exchange(&connection.access, request).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(answer) if (200..300).contains(&answer.status) || answer.status == 404 => {}
        Ok(answer) => tracing::warn!(
            mailbox = %connection.mailbox.id,
            status = answer.status,
            code = answer.code(),
            "could not delete a Microsoft Graph draft after a failed send"
        ),
        Err(e) => tracing::warn!(
            mailbox = %connection.mailbox.id,
            error = %e,
            "could not delete a Microsoft Graph draft after a failed send"
        ),
    }
}

/// The answer, if it has the status `want`; otherwise what its error means.
fn expect(answer: &Answer, want: u16, connection: &GraphConnection) -> Result<(), Refusal> {
    if answer.status == want {
        return Ok(());
    }
    if (200..300).contains(&answer.status) {
        // Some other success: not what Graph documents, so not trusted to mean done.
        return Err(transient(&format!(
            "Microsoft Graph answered {} where {want} was expected{}",
            answer.status,
            answer.id()
        )));
    }
    Err(answer.refusal(&connection.mailbox))
}

fn transient(said: &str) -> Refusal {
    refusal(SendFailure::Transient(SmtpReply::new(
        Some(451),
        format!("4.3.0 {said}"),
    )))
}

/// The bytes of the chunk that starts at `start`.
fn chunk(start: usize, total: usize) -> Range<usize> {
    start..(start + CHUNK_BYTES).min(total)
}

/// `bytes {first}-{last}/{total}`, with `last` inclusive as HTTP has it.
fn content_range(range: &Range<usize>, total: usize) -> String {
    format!("bytes {}-{}/{total}", range.start, range.end - 1)
}

/// The first byte of the first of Graph's `nextExpectedRanges` (`"4194304-"` or `"a-b"`).
fn next_start(body: &Value) -> Option<usize> {
    body.get("nextExpectedRanges")?
        .as_array()?
        .first()?
        .as_str()?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

fn upload_session_request(attachment: &Attachment) -> Vec<u8> {
    let mut item = json!({
        "attachmentType": "file",
        "name": attachment.name,
        "size": attachment.bytes.len(),
        "contentType": attachment.content_type,
    });
    if let Some(id) = &attachment.content_id {
        item["isInline"] = json!(true);
        item["contentId"] = json!(id);
    }
    json!({ "AttachmentItem": item }).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_320_kib_multiples_under_4_mb_and_cover_every_byte_once() {
        const { assert!(CHUNK_BYTES.is_multiple_of(320 * 1024) && CHUNK_BYTES <= 4 * 1024 * 1024) };
        let total = 12 * 1024 * 1024;
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < total {
            let range = chunk(start, total);
            start = range.end;
            ranges.push(range);
        }
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0], 0..3_932_160);
        assert_eq!(ranges[3], 11_796_480..total);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(
            content_range(&ranges[3], total),
            "bytes 11796480-12582911/12582912"
        );
        // A file of exactly one chunk is one PUT; one byte more is two.
        assert_eq!(chunk(0, CHUNK_BYTES), 0..CHUNK_BYTES);
        assert_eq!(
            chunk(CHUNK_BYTES, CHUNK_BYTES + 1),
            CHUNK_BYTES..CHUNK_BYTES + 1
        );
        assert_eq!(content_range(&(0..1), 1), "bytes 0-0/1");
    }

    #[test]
    fn the_next_expected_range_is_read_open_or_closed() {
        let next = |v: Value| next_start(&v);
        assert_eq!(
            next(json!({"nextExpectedRanges": ["3932160-"]})),
            Some(3_932_160)
        );
        assert_eq!(
            next(json!({"nextExpectedRanges": ["10-20", "40-"]})),
            Some(10)
        );
        assert_eq!(next(json!({"nextExpectedRanges": []})), None);
        assert_eq!(next(json!({})), None);
    }

    #[test]
    fn a_small_attachment_is_posted_whole_and_stays_under_the_request_limit() {
        let attachment = Attachment {
            name: "a.bin".into(),
            content_type: "application/octet-stream".into(),
            content_id: None,
            bytes: vec![7; INLINE_ATTACHMENT_BYTES - 1],
        };
        assert!(file_attachment(&attachment).len() < super::super::MAX_REQUEST_BYTES);
    }
}
