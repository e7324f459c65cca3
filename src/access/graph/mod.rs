//! Microsoft Graph `sendMail`: the transport for tenants where SMTP AUTH is turned off. The
//! composed message goes as MIME (`Content-Type: text/plain`, base64) to
//! `POST {graph}/v1.0/users/{mailbox}/sendMail`, and `202 Accepted` means Exchange took it.
//! Graph reads the recipients from the headers and removes `Bcc` itself, so the envelope's
//! hidden recipients go in a `Bcc` field that never reaches a reader.
//!
//! Graph's errors are decided by their `error.code`, never by their text: a fault of the
//! mailbox (permission, licence, send-as) makes it Not Verified with the fix in words; a
//! fault of one message fails that message; `429` and `5xx` wait, as long as Graph says.
//!
//! A message whose base64 would pass Graph's 4 MB request limit goes the large-message way
//! instead (a draft, its attachments, then `send`): see [`upload`].

use std::time::{Duration, Instant};

use base64::Engine as _;
use lettre::address::Envelope;
use secrecy::{ExposeSecret, SecretString};

use super::transport::{BoxFuture, Connection, Refusal, SendFailure, Transport};
use super::{Access, AccessResult, Credential, Secret};
use errors::{classify, needs_oauth2, refusal, unreachable};

mod errors;
mod message;
/// Messages over the 4 MB request limit: a draft, attachments by upload session, then `send`.
mod upload;
use crate::domain::mailbox::{Mailbox, StatusReason};
use crate::domain::message::SmtpReply;
use crate::oauth::http::HttpError;

/// The largest request Graph takes (about 4 MB); larger messages need an upload session.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The largest answer Herald reads from Graph: a draft's answer repeats its body (at most
/// the 4 MB a request takes), errors and `sendMail`'s answers are small.
const MAX_ANSWER_BYTES: usize = 6 * 1024 * 1024;

/// How long to wait when Graph throttles without saying how long.
pub(super) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Microsoft Graph `sendMail`, authenticated with the mailbox's OAuth 2.0 access token.
pub(super) struct GraphSendMail;

impl Transport for GraphSendMail {
    fn open<'a>(
        &'a self,
        access: &'a Access,
        mailbox: &'a Mailbox,
        credential: &'a Credential,
    ) -> BoxFuture<'a, AccessResult<Result<Box<dyn Connection>, SendFailure>>> {
        Box::pin(async move {
            let token = match bearer(credential.secret(access, mailbox, None).await?) {
                Ok(token) => token,
                Err(failure) => return Ok(Err(failure)),
            };
            let mut connection = GraphConnection {
                access: access.clone(),
                mailbox: mailbox.clone(),
                credential: credential.clone(),
                token,
                opened: Instant::now(),
                usable: true,
            };
            // Opening is where a mailbox shows it works: ask Graph once, as Verify does.
            match connection.request(Request::Probe).await? {
                Ok(_) => Ok(Ok(Box::new(connection) as Box<dyn Connection>)),
                Err(refusal) => Ok(Err(refusal.failure)),
            }
        })
    }

    fn check<'a>(
        &'a self,
        access: &'a Access,
        mailbox: &'a Mailbox,
        secret: &'a Secret,
    ) -> BoxFuture<'a, Result<(), SendFailure>> {
        Box::pin(async move {
            let Secret::Bearer(token) = secret else {
                return Err(SendFailure::Refused(needs_oauth2()));
            };
            let url = send_mail_url(mailbox)?;
            match post(access, &url, token, Request::Probe).await {
                Ok(answer) => match answer.outcome(mailbox, Request::Probe) {
                    Ok(_) => Ok(()),
                    Err(refusal) => Err(refusal.failure),
                },
                Err(e) => Err(unreachable(&e)),
            }
        })
    }
}

/// What is asked of Graph.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Request<'a> {
    /// A message without recipients: Graph checks the token, the permission and the mailbox,
    /// then refuses the message itself with `400 ErrorInvalidRecipients`, which is the answer
    /// that says the mailbox works. Nothing is sent.
    Probe,
    /// The message, as MIME.
    Send { mime: &'a [u8] },
    /// The message as JSON with `saveToSentItems: false` (MIME cannot say it).
    SendJson { body: &'a [u8] },
}

struct GraphConnection {
    access: Access,
    mailbox: Mailbox,
    credential: Credential,
    token: SecretString,
    opened: Instant,
    usable: bool,
}

impl GraphConnection {
    /// Posts the request; a token Graph refuses is renewed once and the request tried once
    /// more.
    // The error is `Connection::send`'s own, made once per request.
    #[allow(clippy::result_large_err)]
    async fn request(&mut self, request: Request<'_>) -> AccessResult<Result<SmtpReply, Refusal>> {
        let url = match send_mail_url(&self.mailbox) {
            Ok(url) => url,
            Err(failure) => return Ok(Err(refusal(failure))),
        };
        let answer = self
            .authorized(|token| send_mail_request(&url, token, request))
            .await?;
        Ok(answer.and_then(|answer| answer.outcome(&self.mailbox, request)))
    }

    /// Makes the request `build` makes with the token; a token Graph refuses is renewed once
    /// and the request made once more. Any other answer is the caller's to read.
    async fn authorized(
        &mut self,
        build: impl Fn(&SecretString) -> Result<HttpRequest, HttpError>,
    ) -> AccessResult<Result<Answer, Refusal>> {
        self.authorized_or(build, unreachable).await
    }

    /// [`GraphConnection::authorized`], with `unanswered` saying what a request without an
    /// answer means.
    async fn authorized_or(
        &mut self,
        build: impl Fn(&SecretString) -> Result<HttpRequest, HttpError>,
        unanswered: fn(&HttpError) -> SendFailure,
    ) -> AccessResult<Result<Answer, Refusal>> {
        let mut renewed = false;
        loop {
            let answer = match build(&self.token) {
                Ok(request) => exchange(&self.access, request).await,
                Err(e) => Err(e),
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => return Ok(Err(refusal(unanswered(&e)))),
            };
            // A token may have been revoked early (401), or fetched before an admin granted
            // a permission (403: an app's roles are fixed when its token is issued).
            if matches!(answer.status, 401 | 403) && !renewed && self.credential.renews() {
                renewed = true;
                let stale = Secret::Bearer(self.token.clone());
                match bearer(
                    self.credential
                        .secret(&self.access, &self.mailbox, Some(&stale))
                        .await?,
                ) {
                    Ok(token) => self.token = token,
                    Err(failure) => return Ok(Err(refusal(failure))),
                }
                continue;
            }
            return Ok(Ok(answer));
        }
    }
}

impl Connection for GraphConnection {
    fn is_usable(&self) -> bool {
        self.usable
    }

    fn age(&self) -> Duration {
        self.opened.elapsed()
    }

    fn send<'a>(
        &'a mut self,
        envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<SmtpReply, Refusal>> {
        Box::pin(async move {
            let mime = with_bcc(envelope, message);
            let json = (!self.mailbox.save_to_sent_items)
                .then(|| message::send_mail_json(envelope, message, &self.mailbox.username))
                .flatten()
                .filter(|json| json.len() <= MAX_REQUEST_BYTES);
            let result = if base64_len(mime.len()) > MAX_REQUEST_BYTES {
                upload::send_large(self, envelope, message).await
            } else if let Some(json) = &json {
                self.request(Request::SendJson { body: json }).await
            } else {
                self.request(Request::Send { mime: &mime }).await
            };
            match result {
                Ok(result) => {
                    if let Err(Refusal {
                        failure: SendFailure::Refused(_),
                        ..
                    }) = &result
                    {
                        self.usable = false;
                    }
                    result
                }
                Err(e) => {
                    self.usable = false;
                    Err(refusal(SendFailure::Transient(SmtpReply::no_reply(
                        format!("could not read the mailbox's token: {e}"),
                    ))))
                }
            }
        })
    }

    fn quit(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// Graph's answer to one request.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    request_id: Option<String>,
    /// `error.code` and `error.message`, when Graph answered an error.
    error: Option<(String, String)>,
    /// The answer's JSON (a created draft's `id`, an upload session's `uploadUrl`, …).
    body: serde_json::Value,
}

impl Answer {
    // The error is `Connection::send`'s own, made once per request.
    #[allow(clippy::result_large_err)]
    fn outcome(&self, mailbox: &Mailbox, request: Request<'_>) -> Result<SmtpReply, Refusal> {
        let id = self.id();
        if request == Request::Probe
            && self.status == 400
            && self.code() == "ErrorInvalidRecipients"
        {
            return Ok(SmtpReply::new(
                Some(250),
                format!("2.0.0 Microsoft Graph accepts this mailbox's token{id}"),
            ));
        }
        if (200..300).contains(&self.status) && request != Request::Probe {
            return Ok(self.accepted());
        }
        Err(self.refusal(mailbox))
    }

    /// `250`: Graph took the message.
    fn accepted(&self) -> SmtpReply {
        SmtpReply::new(
            Some(250),
            format!("2.0.0 Accepted by Microsoft Graph{}", self.id()),
        )
    }

    /// What this error answer means, decided by its status and code.
    fn refusal(&self, mailbox: &Mailbox) -> Refusal {
        let (code, message) = self
            .error
            .clone()
            .unwrap_or_else(|| (String::new(), String::new()));
        classify(
            self.status,
            &code,
            &message,
            self.retry_after,
            mailbox,
            &self.id(),
        )
    }

    fn code(&self) -> &str {
        self.error.as_ref().map_or("", |(code, _)| code.as_str())
    }

    /// ` (request-id …)` for the log, when Graph gave one.
    fn id(&self) -> String {
        self.request_id
            .as_deref()
            .map(|id| format!(" (request-id {id})"))
            .unwrap_or_default()
    }
}

fn bearer(secret: Result<Secret, SendFailure>) -> Result<SecretString, SendFailure> {
    match secret? {
        Secret::Bearer(token) => Ok(token),
        Secret::Password(_) => Err(SendFailure::Refused(needs_oauth2())),
    }
}

/// `{graph}/v1.0/users/{mailbox}/sendMail`.
fn send_mail_url(mailbox: &Mailbox) -> Result<url::Url, SendFailure> {
    user_url(mailbox, &["sendMail"])
}

/// `{graph}/v1.0/users/{mailbox}/` followed by the path segments `tail` (each escaped).
fn user_url(mailbox: &Mailbox, tail: &[&str]) -> Result<url::Url, SendFailure> {
    let base = mailbox.graph_url.as_deref().unwrap_or_default();
    let mut url = url::Url::parse(base).map_err(|_| {
        SendFailure::Refused(StatusReason::new(
            "graph_url_missing",
            "This mailbox sends with Microsoft Graph but has no Graph address.",
            Some("Edit the mailbox: choose the Microsoft provider, or send with SMTP.".into()),
        ))
    })?;
    url.path_segments_mut()
        .map_err(|_| SendFailure::Rejected(SmtpReply::no_reply("bad Graph URL")))?
        .pop_if_empty()
        .extend(["v1.0", "users", mailbox.username.as_str()])
        .extend(tail);
    Ok(url)
}

/// An HTTP request as [`TokenHttp`](crate::oauth::http::TokenHttp) takes it.
type HttpRequest = axum::http::Request<Vec<u8>>;

/// `sendMail` with the probe's JSON or the message's base64 MIME.
fn send_mail_request(
    url: &url::Url,
    token: &SecretString,
    request: Request<'_>,
) -> Result<HttpRequest, HttpError> {
    let (content_type, body) = match request {
        Request::Probe => (
            "application/json",
            br#"{"message":{"subject":"Herald checks that it may send","body":{"contentType":"Text","content":""},"toRecipients":[]},"saveToSentItems":false}"#.to_vec(),
        ),
        Request::Send { mime } => (
            "text/plain",
            base64::engine::general_purpose::STANDARD
                .encode(mime)
                .into_bytes(),
        ),
        Request::SendJson { body } => ("application/json", body.to_vec()),
    };
    build(
        axum::http::Method::POST,
        url,
        Some(token),
        Some(content_type),
        body,
    )
}

/// A request to Graph: with the bearer token, unless `token` is `None` (an upload URL carries
/// its own authorization, and Graph says not to send the token to it).
fn build(
    method: axum::http::Method,
    url: &url::Url,
    token: Option<&SecretString>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<HttpRequest, HttpError> {
    use axum::http;
    let mut builder = http::Request::builder()
        .method(method)
        .uri(url.as_str())
        .header("client-request-id", uuid::Uuid::new_v4().to_string());
    if let Some(content_type) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    if let Some(token) = token {
        builder = builder.header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", token.expose_secret()),
        );
    }
    builder
        .body(body)
        .map_err(|e| HttpError::Transport(e.to_string()))
}

async fn post(
    access: &Access,
    url: &url::Url,
    token: &SecretString,
    request: Request<'_>,
) -> Result<Answer, HttpError> {
    exchange(access, send_mail_request(url, token, request)?).await
}

/// Sends one request and reads Graph's answer.
async fn exchange(access: &Access, request: HttpRequest) -> Result<Answer, HttpError> {
    let response = access.http.execute_api(request, MAX_ANSWER_BYTES).await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let retry_after = header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.min(3_600)));
    let request_id = header("request-id");
    let body = serde_json::from_slice::<serde_json::Value>(response.body())
        .unwrap_or(serde_json::Value::Null);
    let error = body.get("error").and_then(|error| {
        Some((
            error.get("code")?.as_str()?.to_owned(),
            error
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned(),
        ))
    });
    Ok(Answer {
        status: response.status().as_u16(),
        retry_after,
        request_id,
        error,
        body,
    })
}

/// The size of `n` bytes in base64.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// The message with a `Bcc` field naming the envelope's recipients that its `To` and `Cc` do
/// not: Graph sends to them and removes the field.
fn with_bcc(envelope: &Envelope, message: &[u8]) -> Vec<u8> {
    let visible: Vec<String> = mail_parser::MessageParser::default()
        .parse_headers(message)
        .map(|parsed| {
            [parsed.to(), parsed.cc()]
                .into_iter()
                .flatten()
                .flat_map(|a| a.iter())
                .filter_map(|a| a.address())
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let hidden: Vec<String> = envelope
        .to()
        .iter()
        .map(|a| a.to_string())
        .filter(|a| !visible.contains(&a.to_lowercase()))
        .collect();
    if hidden.is_empty() {
        return message.to_vec();
    }
    let mut out = format!("Bcc: {}\r\n", hidden.join(", ")).into_bytes();
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::errors::tests_support::mailbox;

    #[test]
    fn hidden_recipients_go_in_a_bcc_field_for_graph_to_remove() {
        let envelope = Envelope::new(
            Some("support@contoso.com".parse().unwrap()),
            vec![
                "a@example.com".parse().unwrap(),
                "B@example.com".parse().unwrap(),
                "hidden@example.com".parse().unwrap(),
            ],
        )
        .unwrap();
        let message =
            b"From: support@contoso.com\r\nTo: a@example.com\r\nCc: b@example.com\r\nSubject: x\r\n\r\nhi\r\n";
        let out = String::from_utf8(with_bcc(&envelope, message)).unwrap();
        assert!(
            out.starts_with("Bcc: hidden@example.com\r\nFrom: "),
            "{out}"
        );
        let all_visible = Envelope::new(None, vec!["a@example.com".parse().unwrap()]).unwrap();
        assert_eq!(with_bcc(&all_visible, message), message.to_vec());
    }

    #[test]
    fn the_send_mail_url_names_the_mailbox() {
        let mut m = mailbox();
        m.graph_url = Some("https://graph.microsoft.com".into());
        let url = send_mail_url(&m).ok().unwrap();
        assert_eq!(
            url.as_str(),
            format!(
                "https://graph.microsoft.com/v1.0/users/{}/sendMail",
                m.username
            )
        );
        m.graph_url = None;
        assert!(matches!(send_mail_url(&m), Err(SendFailure::Refused(_))));
    }
}
