//! One SMTP session as an explicit state machine over any byte stream.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use secrecy::SecretString;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN, AUTH_XOAUTH2, Request};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use super::data::DataReader;
use super::{Credentials, Envelope, Mechanism, Reply, SessionInfo, SmtpConfig, SmtpHandler};

/// The stream, before or after STARTTLS.
enum Transport<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
    /// Only while the handshake runs.
    Upgrading,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Self::Upgrading => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Self::Upgrading => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
            Self::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Self::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// Why the session loop stopped.
enum Stop {
    /// The client said QUIT or went away; nothing more to say.
    Done,
    /// Close with this reply.
    Close(Reply),
}

type Step<T> = Result<T, Stop>;

/// A line read from the client.
enum Line {
    Complete(Vec<u8>),
    TooLong,
}

struct Session<S, H> {
    io: Transport<S>,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
    info: SessionInfo,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    /// Message assembled from BDAT chunks so far, and whether it already overflowed.
    bdat: Option<(Vec<u8>, bool)>,
    bad_commands: u32,
    auth_failures: u32,
}

/// Runs one session to its end on `stream`, which is plain TCP (or any byte stream in tests).
pub async fn run_session<S, H>(
    stream: S,
    peer: SocketAddr,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    run(Transport::Plain(stream), false, peer, config, handler).await
}

/// Runs one session on a connection that speaks TLS from its first byte (implicit TLS, as on
/// port 465): the handshake first, then the session as if STARTTLS had been done.
pub async fn run_tls_session<S, H>(
    stream: S,
    peer: SocketAddr,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    let Some(tls) = config.tls.clone() else {
        return Err(std::io::Error::other(
            "implicit TLS without a TLS configuration",
        ));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = tokio::time::timeout(config.command_timeout, acceptor.accept(stream))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    run(
        Transport::Tls(Box::new(stream)),
        true,
        peer,
        config,
        handler,
    )
    .await
}

async fn run<S, H>(
    io: Transport<S>,
    tls: bool,
    peer: SocketAddr,
    config: Arc<SmtpConfig>,
    handler: Arc<H>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    let mut session = Session {
        io,
        inbox: Vec::with_capacity(4096),
        outbox: Vec::with_capacity(1024),
        config,
        handler,
        info: SessionInfo {
            peer,
            tls,
            helo: None,
            auth: None,
        },
        mail_from: None,
        rcpt_to: Vec::new(),
        bdat: None,
        bad_commands: 0,
        auth_failures: 0,
    };
    let result = session.run().await;
    let _ = session.io.shutdown().await;
    session.handler.on_disconnect(&session.info);
    result
}

fn ok(text: impl Into<String>) -> Reply {
    Reply::new(250, "2.0.0", text)
}

fn bad_sequence(text: &str) -> Reply {
    Reply::new(503, "5.5.1", text)
}

impl<S, H> Session<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: SmtpHandler,
{
    async fn run(&mut self) -> std::io::Result<()> {
        if let Err(reply) = self.handler.on_connect(self.info.peer).await {
            self.reply(&reply);
            return self.flush().await;
        }
        let banner = Reply::new(
            220,
            "",
            format!("{} {}", self.config.hostname, self.config.banner),
        );
        self.reply(&banner);
        let stop = self.serve().await;
        if let Stop::Close(reply) = stop {
            self.reply(&reply);
        }
        self.flush().await
    }

    fn reply(&mut self, reply: &Reply) {
        reply.write_to(&mut self.outbox);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.outbox.is_empty() {
            let out = std::mem::take(&mut self.outbox);
            self.io.write_all(&out).await?;
            self.io.flush().await?;
        }
        Ok(())
    }

    /// Reads more bytes into the inbox, flushing pending replies first (so pipelined commands
    /// are answered in one batch). `Ok(false)` at end of stream.
    async fn fill(&mut self, timeout: Duration) -> Step<bool> {
        self.flush().await.map_err(|_| Stop::Done)?;
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(timeout, self.io.read(&mut chunk)).await {
            Err(_) => Err(Stop::Close(Reply::new(
                421,
                "4.4.2",
                format!(
                    "{} Timeout waiting for client input; closing connection",
                    self.config.hostname
                ),
            ))),
            Ok(Err(_)) | Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                self.inbox.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }

    /// The next command line, or `None` at end of stream. Over-long lines are skipped whole.
    async fn next_line(&mut self) -> Step<Option<Line>> {
        let max = self.config.max_line_length;
        let mut discarding = false;
        loop {
            if let Some(pos) = self.inbox.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbox.drain(..=pos).collect();
                if discarding || line.len() > max {
                    return Ok(Some(Line::TooLong));
                }
                return Ok(Some(Line::Complete(line)));
            }
            if self.inbox.len() > max {
                discarding = true;
                self.inbox.clear();
            }
            if !self.fill(self.config.command_timeout).await? {
                return Ok(None);
            }
        }
    }

    fn count_bad(&mut self, reply: Reply) -> Step<()> {
        self.bad_commands += 1;
        self.reply(&reply);
        if self.bad_commands >= self.config.max_bad_commands {
            return Err(Stop::Close(Reply::new(
                421,
                "4.7.0",
                "Too many errors; closing connection",
            )));
        }
        Ok(())
    }

    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
        self.bdat = None;
    }

    fn auth_allowed_now(&self) -> bool {
        !self.config.mechanisms.is_empty() && (self.info.tls || self.config.auth_without_tls)
    }

    async fn serve(&mut self) -> Stop {
        loop {
            let line = match self.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return Stop::Done,
                Err(stop) => return stop,
            };
            let result = match line {
                Line::TooLong => self.count_bad(Reply::new(500, "5.5.6", "Line too long")),
                Line::Complete(line) => self.command(&line).await,
            };
            if let Err(stop) = result {
                return stop;
            }
        }
    }

    async fn command(&mut self, line: &[u8]) -> Step<()> {
        if line.contains(&0) {
            return self.count_bad(Reply::new(500, "5.5.2", "Syntax error: NUL in command"));
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request,
            Err(smtp_proto::Error::UnknownCommand)
            | Err(smtp_proto::Error::NeedsMoreData { .. }) => {
                return self.count_bad(Reply::new(500, "5.5.2", "Unrecognized command"));
            }
            Err(smtp_proto::Error::InvalidSenderAddress) => {
                return self.count_bad(Reply::new(501, "5.1.7", "Invalid sender address"));
            }
            Err(smtp_proto::Error::InvalidRecipientAddress) => {
                return self.count_bad(Reply::new(501, "5.1.3", "Invalid recipient address"));
            }
            Err(smtp_proto::Error::UnsupportedParameter { .. })
            | Err(smtp_proto::Error::InvalidParameter { .. }) => {
                return self.count_bad(Reply::new(
                    555,
                    "5.5.4",
                    "Unsupported or invalid parameter",
                ));
            }
            Err(_) => {
                return self.count_bad(Reply::new(
                    501,
                    "5.5.4",
                    "Syntax error in parameters or arguments",
                ));
            }
        };
        match request {
            Request::Ehlo { host } => {
                self.greet(host.into_owned(), true);
                Ok(())
            }
            Request::Helo { host } => {
                self.greet(host.into_owned(), false);
                Ok(())
            }
            Request::StartTls => self.starttls().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response.into_owned()).await,
            Request::Mail { from } => self.mail(from.address.into_owned(), from.size).await,
            Request::Rcpt { to } => self.rcpt(to.address.into_owned()).await,
            Request::Data => self.data().await,
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size, is_last).await,
            Request::Rset => {
                self.reset_transaction();
                self.reply(&ok("Resetting"));
                Ok(())
            }
            Request::Noop { .. } => {
                self.reply(&ok("OK"));
                Ok(())
            }
            Request::Quit => {
                self.reply(&Reply::new(
                    221,
                    "2.0.0",
                    "Service closing transmission channel",
                ));
                Err(Stop::Done)
            }
            Request::Vrfy { .. } => {
                self.reply(&Reply::new(
                    252,
                    "2.5.2",
                    "Cannot VRFY user, but will accept message",
                ));
                Ok(())
            }
            Request::Help { .. } => {
                self.reply(&Reply::new(214, "2.0.0", "See RFC 5321"));
                Ok(())
            }
            _ => self.count_bad(Reply::new(502, "5.5.1", "Command not implemented")),
        }
    }

    fn greet(&mut self, host: String, extended: bool) {
        self.reset_transaction();
        self.info.helo = Some(host);
        let hello = format!("{} Hello [{}]", self.config.hostname, self.info.peer.ip());
        if !extended {
            self.reply(&Reply::new(250, "", hello));
            return;
        }
        let mut lines = vec![
            hello,
            format!("SIZE {}", self.config.max_message_size),
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
            "8BITMIME".into(),
            "CHUNKING".into(),
        ];
        if self.config.tls.is_some() && !self.info.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_allowed_now() {
            let names: Vec<_> = self.config.mechanisms.iter().map(|m| m.name()).collect();
            lines.push(format!("AUTH {}", names.join(" ")));
        }
        self.reply(&Reply::new(250, "", lines.join("\n")));
    }

    async fn starttls(&mut self) -> Step<()> {
        let Some(tls) = self.config.tls.clone() else {
            return self.count_bad(Reply::new(502, "5.5.1", "STARTTLS not available"));
        };
        if self.info.tls {
            return self.count_bad(bad_sequence("TLS already active"));
        }
        // Anything pipelined after STARTTLS was sent in the clear and must not be trusted as if
        // it came over TLS (CVE-2011-0411).
        if !self.inbox.is_empty() {
            return Err(Stop::Close(Reply::new(
                554,
                "5.5.1",
                "Commands pipelined after STARTTLS; closing connection",
            )));
        }
        self.reply(&Reply::new(220, "2.0.0", "SMTP server ready"));
        self.flush().await.map_err(|_| Stop::Done)?;
        let Transport::Plain(plain) = std::mem::replace(&mut self.io, Transport::Upgrading) else {
            return Err(Stop::Done);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        match tokio::time::timeout(self.config.command_timeout, acceptor.accept(plain)).await {
            Ok(Ok(stream)) => {
                self.io = Transport::Tls(Box::new(stream));
                self.info.tls = true;
                // RFC 3207: forget everything learnt before the handshake.
                self.info.helo = None;
                self.info.auth = None;
                self.reset_transaction();
                Ok(())
            }
            _ => Err(Stop::Done),
        }
    }

    async fn read_auth_line(&mut self, challenge: &str) -> Step<String> {
        self.reply(&Reply::new(334, "", challenge));
        match self.next_line().await? {
            Some(Line::Complete(line)) => Ok(String::from_utf8_lossy(&line).trim_end().to_owned()),
            Some(Line::TooLong) => Err(Stop::Close(Reply::new(
                500,
                "5.5.6",
                "Authentication exchange line too long",
            ))),
            None => Err(Stop::Done),
        }
    }

    async fn auth(&mut self, mechanism: u64, initial: String) -> Step<()> {
        if self.info.helo.is_none() {
            return self.count_bad(bad_sequence("Send EHLO first"));
        }
        if self.info.auth.is_some() {
            return self.count_bad(bad_sequence("Already authenticated"));
        }
        if self.mail_from.is_some() {
            return self.count_bad(bad_sequence("AUTH not allowed during a mail transaction"));
        }
        if !self.info.tls && !self.config.auth_without_tls {
            let reply = self.config.auth_needs_tls_reply.clone();
            return self.count_bad(reply);
        }
        let wanted = match mechanism {
            AUTH_PLAIN => Mechanism::Plain,
            AUTH_LOGIN => Mechanism::Login,
            AUTH_XOAUTH2 => Mechanism::XOAuth2,
            _ => Mechanism::Plain,
        };
        if !matches!(mechanism, AUTH_PLAIN | AUTH_LOGIN | AUTH_XOAUTH2)
            || !self.config.mechanisms.contains(&wanted)
        {
            return self.count_bad(Reply::new(504, "5.7.4", "Unrecognized authentication type"));
        }
        let decode = |text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
        };
        let malformed = || Reply::new(501, "5.5.2", "Cannot decode the authentication response");
        let cancelled = || Reply::new(501, "5.0.0", "Authentication cancelled");
        let initial = (!initial.is_empty() && initial != "=").then_some(initial);

        let credentials = match wanted {
            Mechanism::Plain => {
                let response = match initial {
                    Some(r) => r,
                    None => self.read_auth_line("").await?,
                };
                if response == "*" {
                    return self.count_bad(cancelled());
                }
                let Some(bytes) = decode(&response) else {
                    return self.count_bad(malformed());
                };
                let mut parts = bytes.split(|&b| b == 0);
                let (Some(_authzid), Some(user), Some(pass), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return self.count_bad(malformed());
                };
                Credentials::Password {
                    mechanism: Mechanism::Plain,
                    username: String::from_utf8_lossy(user).into_owned(),
                    password: SecretString::from(String::from_utf8_lossy(pass).into_owned()),
                }
            }
            Mechanism::Login => {
                let user = match initial {
                    Some(r) => r,
                    None => self.read_auth_line("VXNlcm5hbWU6").await?,
                };
                if user == "*" {
                    return self.count_bad(cancelled());
                }
                let pass = self.read_auth_line("UGFzc3dvcmQ6").await?;
                if pass == "*" {
                    return self.count_bad(cancelled());
                }
                let (Some(user), Some(pass)) = (decode(&user), decode(&pass)) else {
                    return self.count_bad(malformed());
                };
                Credentials::Password {
                    mechanism: Mechanism::Login,
                    username: String::from_utf8_lossy(&user).into_owned(),
                    password: SecretString::from(String::from_utf8_lossy(&pass).into_owned()),
                }
            }
            Mechanism::XOAuth2 => {
                let response = match initial {
                    Some(r) => r,
                    None => self.read_auth_line("").await?,
                };
                if response == "*" {
                    return self.count_bad(cancelled());
                }
                let Some((user, token)) = decode(&response).and_then(|b| parse_xoauth2(&b)) else {
                    return self.count_bad(malformed());
                };
                Credentials::XOAuth2 {
                    user,
                    token: SecretString::from(token),
                }
            }
        };
        match self.handler.authenticate(&self.info, credentials).await {
            Ok(identity) => {
                self.info.auth = Some(identity);
                self.reply(&Reply::new(235, "2.7.0", "Authentication successful"));
                Ok(())
            }
            Err(refusal) => {
                self.auth_failures += 1;
                if let Some(challenge) = &refusal.challenge {
                    // The client answers the challenge (an empty line) before the final reply.
                    self.read_auth_line(challenge).await?;
                }
                self.reply(&refusal.reply);
                if self.auth_failures >= self.config.max_auth_failures {
                    return Err(Stop::Close(Reply::new(
                        421,
                        "4.7.0",
                        "Too many failed authentication attempts; closing connection",
                    )));
                }
                Ok(())
            }
        }
    }

    async fn mail(&mut self, from: String, declared_size: usize) -> Step<()> {
        if self.info.helo.is_none() {
            return self.count_bad(bad_sequence("Send EHLO first"));
        }
        if self.mail_from.is_some() {
            return self.count_bad(bad_sequence("Sender already specified"));
        }
        if self.config.require_auth && self.info.auth.is_none() {
            let reply = self.config.auth_required_reply.clone();
            return self.count_bad(reply);
        }
        if declared_size > self.config.max_message_size {
            self.reply(&Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
            return Ok(());
        }
        if from.chars().any(char::is_control) {
            return self.count_bad(Reply::new(501, "5.1.7", "Invalid sender address"));
        }
        match self.handler.mail_from(&self.info, &from).await {
            Ok(()) => {
                self.mail_from = Some(from);
                self.reply(&Reply::new(250, "2.1.0", "Sender OK"));
            }
            Err(reply) => self.reply(&reply),
        }
        Ok(())
    }

    async fn rcpt(&mut self, to: String) -> Step<()> {
        let Some(from) = self.mail_from.clone() else {
            return self.count_bad(bad_sequence("Need MAIL command first"));
        };
        if self.rcpt_to.len() >= self.config.max_recipients {
            self.reply(&Reply::new(452, "4.5.3", "Too many recipients"));
            return Ok(());
        }
        if to.is_empty() || to.chars().any(char::is_control) {
            return self.count_bad(Reply::new(501, "5.1.3", "Invalid recipient address"));
        }
        match self.handler.rcpt_to(&self.info, &from, &to).await {
            Ok(()) => {
                self.rcpt_to.push(to);
                self.reply(&Reply::new(250, "2.1.5", "Recipient OK"));
            }
            Err(reply) => self.reply(&reply),
        }
        Ok(())
    }

    fn check_ready_for_data(&mut self) -> Result<(), Reply> {
        if self.mail_from.is_none() {
            return Err(bad_sequence("Need MAIL command first"));
        }
        if self.rcpt_to.is_empty() {
            return Err(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        Ok(())
    }

    async fn data(&mut self) -> Step<()> {
        if self.bdat.is_some() {
            return self.count_bad(bad_sequence("DATA not allowed after BDAT"));
        }
        if let Err(reply) = self.check_ready_for_data() {
            return self.count_bad(reply);
        }
        self.reply(&Reply::new(
            354,
            "",
            "Start mail input; end with <CRLF>.<CRLF>",
        ));
        let mut reader = DataReader::new(self.config.max_message_size);
        loop {
            if let Some(used) = reader.feed(&self.inbox) {
                self.inbox.drain(..used);
                break;
            }
            self.inbox.clear();
            if !self.fill(self.config.data_timeout).await? {
                return Err(Stop::Done);
            }
        }
        let outcome = reader.finish();
        if outcome.too_big {
            self.reset_transaction();
            self.reply(&Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
            return Ok(());
        }
        self.finish_message(outcome.message, outcome.bare_line_ending)
            .await;
        Ok(())
    }

    async fn bdat(&mut self, size: usize, last: bool) -> Step<()> {
        if let Err(reply) = self.check_ready_for_data() {
            // The chunk follows regardless; skip it so it is not read as commands.
            self.skip(size).await?;
            return self.count_bad(reply);
        }
        let (mut message, mut too_big) = self.bdat.take().unwrap_or_default();
        let mut left = size;
        loop {
            let take = left.min(self.inbox.len());
            if !too_big && message.len() + take <= self.config.max_message_size {
                message.extend_from_slice(&self.inbox[..take]);
            } else {
                too_big = true;
                message = Vec::new();
            }
            self.inbox.drain(..take);
            left -= take;
            if left == 0 {
                break;
            }
            if !self.fill(self.config.data_timeout).await? {
                return Err(Stop::Done);
            }
        }
        if !last {
            self.bdat = Some((message, too_big));
            self.reply(&Reply::new(250, "2.0.0", format!("{size} octets received")));
            return Ok(());
        }
        if too_big {
            self.reset_transaction();
            self.reply(&Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ));
            return Ok(());
        }
        let bare = has_bare_line_ending(&message);
        self.finish_message(message, bare).await;
        Ok(())
    }

    async fn skip(&mut self, mut left: usize) -> Step<()> {
        loop {
            let take = left.min(self.inbox.len());
            self.inbox.drain(..take);
            left -= take;
            if left == 0 {
                return Ok(());
            }
            if !self.fill(self.config.data_timeout).await? {
                return Err(Stop::Done);
            }
        }
    }

    async fn finish_message(&mut self, message: Vec<u8>, bare_line_ending: bool) {
        let envelope = Envelope {
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
        };
        self.reset_transaction();
        if bare_line_ending {
            self.reply(&Reply::new(
                550,
                "5.6.11",
                "SMTPSEND.BareLinefeedsAreIllegal; message contains bare CR or LF characters, which cannot be sent",
            ));
            return;
        }
        let reply = self.handler.deliver(&self.info, envelope, message).await;
        self.reply(&reply);
    }
}

/// Splits an XOAUTH2 initial response: `user=U\x01auth=Bearer T\x01\x01`.
pub(crate) fn parse_xoauth2(bytes: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut user = None;
    let mut token = None;
    for part in text.split('\x01').filter(|p| !p.is_empty()) {
        if let Some(u) = part.strip_prefix("user=") {
            user = Some(u.to_owned());
        } else if let Some(auth) = part.strip_prefix("auth=") {
            let (scheme, value) = auth.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            token = Some(value.trim().to_owned());
        }
    }
    Some((user?, token?))
}

fn has_bare_line_ending(message: &[u8]) -> bool {
    message.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || message[i - 1] != b'\r',
        b'\r' => message.get(i + 1) != Some(&b'\n'),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_responses_are_split() {
        assert_eq!(
            parse_xoauth2(b"user=ann@contoso.com\x01auth=Bearer abc.def\x01\x01"),
            Some(("ann@contoso.com".into(), "abc.def".into()))
        );
        assert_eq!(parse_xoauth2(b"user=x\x01auth=Basic abc\x01\x01"), None);
        assert_eq!(parse_xoauth2(b"auth=Bearer abc\x01\x01"), None);
    }

    #[test]
    fn bare_line_endings_are_found() {
        assert!(!has_bare_line_ending(b"a\r\nb\r\n"));
        assert!(has_bare_line_ending(b"a\nb"));
        assert!(has_bare_line_ending(b"a\rb"));
        assert!(has_bare_line_ending(b"\n"));
    }
}
