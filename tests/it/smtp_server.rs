//! The SMTP server component, driven over real sockets and in-memory streams: sessions written
//! as `C:` / `S:` transcripts (see [`converse`]), STARTTLS with a verified certificate (lettre
//! as an independent client), AUTH, limits, and property tests that arbitrary input never
//! panics a session nor smuggles a message.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::smtp_server::data::dot_stuff;
use herald::smtp_server::{
    AuthIdentity, AuthRefusal, Credentials, Envelope, Mechanism, Reply, SessionInfo, SmtpConfig,
    SmtpHandler, SmtpServer, run_session,
};
use herald::tls::LocalCa;
use proptest::prelude::*;
use secrecy::ExposeSecret;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

const USER: &str = "ann@contoso.com";
const PASSWORD: &str = "device password";
const TOKEN: &str = "valid-access-token";

/// A received message: envelope, raw bytes, and who sent it.
type Received = (Envelope, Vec<u8>, Option<AuthIdentity>);

/// The XOAUTH2 token the recorder refuses Gmail's way: a `334` challenge, then `535`.
const CHALLENGED_TOKEN: &str = "token-gmail-refuses";
/// The challenge it sends (base64 of `{"status":"401"}`).
const CHALLENGE: &str = "eyJzdGF0dXMiOiI0MDEifQ==";

/// Accepts one user by password or token; keeps what it receives.
#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<Received>>,
}

impl SmtpHandler for Recorder {
    async fn authenticate(
        &self,
        _session: &SessionInfo,
        credentials: Credentials,
    ) -> Result<AuthIdentity, AuthRefusal> {
        let good = match &credentials {
            Credentials::Password {
                username, password, ..
            } => username == USER && password.expose_secret() == PASSWORD,
            Credentials::XOAuth2 { token, .. } if token.expose_secret() == CHALLENGED_TOKEN => {
                return Err(AuthRefusal {
                    challenge: Some(CHALLENGE.into()),
                    reply: Reply::new(535, "5.7.8", "Username and Password not accepted"),
                });
            }
            Credentials::XOAuth2 { user, token } => user == USER && token.expose_secret() == TOKEN,
        };
        if good {
            Ok(AuthIdentity {
                username: credentials.username().to_owned(),
                mechanism: Some(credentials.mechanism()),
                delegate: None,
            })
        } else {
            Err(Reply::new(535, "5.7.3", "Authentication unsuccessful").into())
        }
    }

    async fn deliver(&self, session: &SessionInfo, envelope: Envelope, message: Vec<u8>) -> Reply {
        self.messages
            .lock()
            .unwrap()
            .push((envelope, message, session.auth.clone()));
        Reply::new(250, "2.6.0", "Queued mail for delivery")
    }
}

impl Recorder {
    fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }
}

fn config(ca: Option<&LocalCa>) -> SmtpConfig {
    let mut config = SmtpConfig::new("smtp.test");
    config.tls = ca.map(LocalCa::server_config);
    config.mechanisms = vec![Mechanism::Login, Mechanism::Plain, Mechanism::XOAuth2];
    config
}

/// The test configuration with AUTH allowed in the clear (the session runs over a pipe).
fn plain_config() -> SmtpConfig {
    let mut config = config(None);
    config.auth_without_tls = true;
    config
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// Runs a session over an in-memory pipe: writes all of `input` at once, closes, and returns
/// all output (for property tests, whose input is arbitrary bytes rather than a script).
async fn send_all(config: SmtpConfig, handler: Arc<Recorder>, input: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let session = tokio::spawn(run_session(server, peer(), Arc::new(config), handler));
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    session.await.expect("the session must not panic").ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// How long a transcript waits for a line the server owes before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// Plays an SMTP transcript against a session over an in-memory pipe, and fails at the first
/// line that differs.
///
/// The script has one line per line on the wire: `C: …` is sent by the client (CRLF is
/// added), `S: …` must be the server's next line. A run of `C:` lines is sent at once, as a
/// pipelining client would; each `S:` line is then awaited. After the last line the client
/// closes its side, and the server must have nothing more to say. Blank lines of the script
/// are skipped, a bare `C:` sends an empty line, and trailing blanks are not compared (so
/// `334 ` survives an editor).
async fn converse<H: SmtpHandler>(config: SmtpConfig, handler: Arc<H>, script: &str) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let session = tokio::spawn(run_session(server, peer(), Arc::new(config), handler));
    let (read, mut write) = tokio::io::split(client);
    let mut read = tokio::io::BufReader::new(read);
    let mut seen = String::new();
    let mut pending = Vec::new();
    for line in script
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.is_empty())
    {
        if let Some(sent) = line.strip_prefix("C:") {
            let sent = sent.strip_prefix(' ').unwrap_or(sent);
            pending.extend_from_slice(sent.as_bytes());
            pending.extend_from_slice(b"\r\n");
            seen.push_str(&format!("C: {sent}\n"));
            continue;
        }
        let Some(expected) = line.strip_prefix("S:") else {
            panic!("a script line starts with `C:` or `S:`: {line:?}");
        };
        if !pending.is_empty() {
            write
                .write_all(&std::mem::take(&mut pending))
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        match tokio::time::timeout(PATIENCE, read.read_until(b'\n', &mut got)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("reading the reply failed: {e}\n{seen}"),
            Err(_) => panic!("no reply within {PATIENCE:?}; expected {expected:?}\n{seen}"),
        }
        let got = String::from_utf8_lossy(&got).into_owned();
        assert!(
            got.ends_with("\r\n"),
            "the server's line must end with CRLF: {got:?}\n{seen}"
        );
        let got = got.trim_end_matches("\r\n");
        assert_eq!(
            got.trim_end(),
            expected.trim(),
            "the server's line differs from the script\n{seen}"
        );
        seen.push_str(&format!("S: {got}\n"));
    }
    write.write_all(&pending).await.unwrap();
    write.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, read.read_to_end(&mut rest))
        .await
        .expect("the session must end once the client closes")
        .unwrap();
    assert!(
        rest.is_empty(),
        "the server said more than the script:\n{seen}{}",
        String::from_utf8_lossy(&rest)
    );
    session.await.expect("the session must not panic").ok();
}

/// The EHLO reply of `smtp.test`, as `S:` lines: the extensions always offered, then `extra`.
fn ehlo(size: usize, extra: &[&str]) -> String {
    let size = format!("SIZE {size}");
    let mut lines = vec!["smtp.test Hello [127.0.0.1]", &size];
    lines.extend(["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "CHUNKING"]);
    lines.extend(extra);
    let last = lines.len() - 1;
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| format!("S: 250{}{line}\n", if i == last { ' ' } else { '-' }))
        .collect()
}

const DEFAULT_SIZE: usize = 35 * 1024 * 1024;
const AUTH_OFFER: &[&str] = &["AUTH LOGIN PLAIN XOAUTH2"];

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn plain(user: &str, pass: &str) -> String {
    b64(&format!("\0{user}\0{pass}"))
}

#[tokio::test]
async fn a_plain_session_accepts_a_message_and_every_reply_has_an_enhanced_code() {
    let handler = Arc::new(Recorder::default());
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO client.test
         {ehlo}
         C: AUTH PLAIN {auth}
         S: 235 2.7.0 Authentication successful
         C: MAIL FROM:<{USER}>
         S: 250 2.1.0 Sender OK
         C: RCPT TO:<bob@example.com>
         S: 250 2.1.5 Recipient OK
         C: DATA
         S: 354 Start mail input; end with <CRLF>.<CRLF>
         C: Subject: hi
         C:
         C: ..dot
         C: .
         S: 250 2.6.0 Queued mail for delivery
         C: QUIT
         S: 221 2.0.0 Service closing transmission channel",
        ehlo = ehlo(DEFAULT_SIZE, AUTH_OFFER),
        auth = plain(USER, PASSWORD),
    );
    converse(plain_config(), handler.clone(), &script).await;
    let messages = handler.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.mail_from, USER);
    assert_eq!(messages[0].0.rcpt_to, ["bob@example.com"]);
    assert_eq!(messages[0].1, b"Subject: hi\r\n\r\n.dot\r\n");
    assert_eq!(
        messages[0].2.as_ref().unwrap().mechanism,
        Some(Mechanism::Plain)
    );
}

#[tokio::test]
async fn auth_is_offered_and_accepted_only_after_starttls() {
    let ca = LocalCa::generate("Test", &["localhost".into()]).unwrap();
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO client.test
         {ehlo}
         C: AUTH PLAIN {auth}
         S: 538 5.7.11 Encryption required for requested authentication mechanism
         C: MAIL FROM:<{USER}>
         S: 530 5.7.0 Authentication required
         C: QUIT
         S: 221 2.0.0 Service closing transmission channel",
        ehlo = ehlo(DEFAULT_SIZE, &["STARTTLS"]),
        auth = plain(USER, PASSWORD),
    );
    converse(config(Some(&ca)), Arc::new(Recorder::default()), &script).await;
}

#[tokio::test]
async fn commands_pipelined_after_starttls_close_the_session() {
    let ca = LocalCa::generate("Test", &["localhost".into()]).unwrap();
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO client.test
         C: STARTTLS
         C: MAIL FROM:<evil@example.com>
         {ehlo}
         S: 554 5.5.1 Commands pipelined after STARTTLS; closing connection",
        ehlo = ehlo(DEFAULT_SIZE, &["STARTTLS"]),
    );
    converse(config(Some(&ca)), Arc::new(Recorder::default()), &script).await;
}

#[tokio::test]
async fn lettre_sends_with_xoauth2_over_starttls_verifying_the_exported_ca() {
    use lettre::transport::smtp::authentication::{
        Credentials as LettreCredentials, Mechanism as LettreMechanism,
    };
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    let ca = LocalCa::generate("Test", &["localhost".into(), "127.0.0.1".into()]).unwrap();
    let handler = Arc::new(Recorder::default());
    let server = SmtpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        config(Some(&ca)),
        handler.clone(),
    )
    .await
    .unwrap();
    let port = server.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap())
        .build_rustls()
        .unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(tls))
        .credentials(LettreCredentials::new(USER.into(), TOKEN.into()))
        .authentication(vec![LettreMechanism::Xoauth2])
        .build();
    let message = Message::builder()
        .from(USER.parse().unwrap())
        .to("bob@example.com".parse().unwrap())
        .subject("Over TLS")
        .body(String::from(".leading dot\nsecond line"))
        .unwrap();
    transport.send(message).await.expect("lettre sends");

    let messages = handler.messages();
    assert_eq!(messages.len(), 1);
    let (envelope, raw, auth) = &messages[0];
    assert_eq!(envelope.rcpt_to, ["bob@example.com"]);
    assert_eq!(auth.as_ref().unwrap().mechanism, Some(Mechanism::XOAuth2));
    let text = String::from_utf8_lossy(raw);
    assert!(
        text.contains("Subject: Over TLS") && text.contains("\r\n.leading dot\r\n"),
        "{text}"
    );

    // A client that does not trust the CA refuses the server.
    let untrusted = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(
            TlsParameters::builder("localhost".into())
                .build_rustls()
                .unwrap(),
        ))
        .credentials(LettreCredentials::new(USER.into(), TOKEN.into()))
        .authentication(vec![LettreMechanism::Xoauth2])
        .build();
    let message = Message::builder()
        .from(USER.parse().unwrap())
        .to("bob@example.com".parse().unwrap())
        .body(String::from("x"))
        .unwrap();
    assert!(untrusted.send(message).await.is_err());
    assert_eq!(handler.messages().len(), 1);

    // A wrong token gets Exchange's reply.
    let wrong = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(
            TlsParameters::builder("localhost".into())
                .add_root_certificate(Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap())
                .build_rustls()
                .unwrap(),
        ))
        .credentials(LettreCredentials::new(USER.into(), "expired".into()))
        .authentication(vec![LettreMechanism::Xoauth2])
        .build();
    let message = Message::builder()
        .from(USER.parse().unwrap())
        .to("bob@example.com".parse().unwrap())
        .body(String::from("x"))
        .unwrap();
    let err = wrong.send(message).await.unwrap_err();
    assert!(err.to_string().contains("5.7.3"), "{err}");

    let _ = stop.send(());
    running.await.unwrap();
}

#[tokio::test]
async fn bad_commands_over_long_lines_and_nul_bytes_are_answered_then_cut_off() {
    let mut config = config(None);
    config.max_bad_commands = 3;
    // The NOOP after the cut-off is never answered.
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: {long}
         C: NO\0OP
         C: FOO
         C: NOOP
         S: 500 5.5.6 Line too long
         S: 500 5.5.2 Syntax error: NUL in command
         S: 500 5.5.2 Unrecognized command
         S: 421 4.7.0 Too many errors; closing connection",
        ehlo = ehlo(DEFAULT_SIZE, &[]),
        long = "A".repeat(5000),
    );
    converse(config, Arc::new(Recorder::default()), &script).await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_disconnected_after_the_timeout() {
    // Not a transcript: the client says nothing, and the (paused) clock runs to the default
    // five-minute timeout, past any patience a transcript would have.
    let (mut client, server) = tokio::io::duplex(4096);
    let session = tokio::spawn(run_session(
        server,
        peer(),
        Arc::new(config(None)),
        Arc::new(Recorder::default()),
    ));
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    session.await.unwrap().ok();
    assert_eq!(
        String::from_utf8_lossy(&out),
        "220 smtp.test ESMTP ready\r\n\
         421 4.4.2 smtp.test Timeout waiting for client input; closing connection\r\n"
    );
}

#[tokio::test]
async fn sessions_per_client_address_are_capped() {
    let mut config = config(None);
    config.max_sessions_per_address = 2;
    let server = SmtpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        config,
        Arc::new(Recorder::default()),
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut banner = [0u8; 64];
        let n = conn.read(&mut banner).await.unwrap();
        assert!(banner[..n].starts_with(b"220 "));
        held.push(conn);
    }
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out).starts_with("421 4.7.0"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    drop(held);
    let _ = stop.send(());
    running.await.unwrap();
}

#[tokio::test]
async fn bdat_chunks_make_one_message_and_the_size_limit_holds() {
    let handler = Arc::new(Recorder::default());
    let mut config = plain_config();
    config.max_message_size = 16;
    // A chunk is counted in octets, not lines: `BDAT 5` takes `ab` CRLF `c`, and the next
    // command follows at once on the same line.
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: AUTH PLAIN {auth}
         S: 235 2.7.0 Authentication successful
         C: MAIL FROM:<{USER}>
         C: RCPT TO:<b@example.com>
         C: BDAT 5
         C: ab
         C: cBDAT 3 LAST
         C: d
         S: 250 2.1.0 Sender OK
         S: 250 2.1.5 Recipient OK
         S: 250 2.0.0 5 octets received
         S: 250 2.6.0 Queued mail for delivery
         C: MAIL FROM:<{USER}>
         C: RCPT TO:<b@example.com>
         C: BDAT 20 LAST
         C: 01234567890123456789MAIL FROM:<{USER}> SIZE=99
         S: 250 2.1.0 Sender OK
         S: 250 2.1.5 Recipient OK
         S: 552 5.3.4 Message size exceeds fixed maximum message size
         S: 552 5.3.4 Message size exceeds fixed maximum message size
         C: QUIT
         S: 221 2.0.0 Service closing transmission channel",
        ehlo = ehlo(16, AUTH_OFFER),
        auth = plain(USER, PASSWORD),
    );
    converse(config, handler.clone(), &script).await;
    let messages = handler.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].1, b"ab\r\ncd\r\n");
}

#[tokio::test]
async fn commands_out_of_sequence_get_503_and_ehlo_or_rset_end_the_transaction() {
    let mut config = plain_config();
    config.max_bad_commands = 100;
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: MAIL FROM:<{USER}>
         S: 503 5.5.1 Send EHLO first
         C: AUTH PLAIN {auth}
         S: 503 5.5.1 Send EHLO first
         C: HELO x
         S: 250 smtp.test Hello [127.0.0.1]
         C: RCPT TO:<b@example.com>
         S: 503 5.5.1 Need MAIL command first
         C: DATA
         S: 503 5.5.1 Need MAIL command first
         C: MAIL FROM:<{USER}>
         S: 530 5.7.0 Authentication required
         C: AUTH PLAIN {auth}
         S: 235 2.7.0 Authentication successful
         C: AUTH PLAIN {auth}
         S: 503 5.5.1 Already authenticated
         C: MAIL FROM:<{USER}>
         S: 250 2.1.0 Sender OK
         C: MAIL FROM:<{USER}>
         S: 503 5.5.1 Sender already specified
         C: DATA
         S: 554 5.5.1 No valid recipients
         C: RSET
         S: 250 2.0.0 Resetting
         C: RCPT TO:<b@example.com>
         S: 503 5.5.1 Need MAIL command first
         C: MAIL FROM:<{USER}>
         S: 250 2.1.0 Sender OK
         C: HELO x
         S: 250 smtp.test Hello [127.0.0.1]
         C: RCPT TO:<b@example.com>
         S: 503 5.5.1 Need MAIL command first
         C: NOOP
         S: 250 2.0.0 OK
         C: VRFY bob
         S: 252 2.5.2 Cannot VRFY user, but will accept message
         C: HELP
         S: 214 2.0.0 See RFC 5321
         C: EXPN list
         S: 502 5.5.1 Command not implemented
         C: STARTTLS
         S: 502 5.5.1 STARTTLS not available
         C: QUIT
         S: 221 2.0.0 Service closing transmission channel",
        auth = plain(USER, PASSWORD),
    );
    converse(config, Arc::new(Recorder::default()), &script).await;
}

#[tokio::test]
async fn auth_may_not_start_inside_a_mail_transaction() {
    let mut config = plain_config();
    config.require_auth = false;
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: MAIL FROM:<{USER}>
         S: 250 2.1.0 Sender OK
         C: AUTH PLAIN {auth}
         S: 503 5.5.1 AUTH not allowed during a mail transaction
         C: RSET
         S: 250 2.0.0 Resetting
         C: AUTH PLAIN {auth}
         S: 235 2.7.0 Authentication successful",
        ehlo = ehlo(DEFAULT_SIZE, AUTH_OFFER),
        auth = plain(USER, PASSWORD),
    );
    converse(config, Arc::new(Recorder::default()), &script).await;
}

#[tokio::test]
async fn auth_exchanges_prompt_for_what_is_missing_and_may_be_cancelled() {
    let handler = Arc::new(Recorder::default());
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: AUTH LOGIN
         S: 334 VXNlcm5hbWU6
         C: *
         S: 501 5.0.0 Authentication cancelled
         C: AUTH LOGIN {user}
         S: 334 UGFzc3dvcmQ6
         C: *
         S: 501 5.0.0 Authentication cancelled
         C: AUTH PLAIN
         S: 334
         C: *
         S: 501 5.0.0 Authentication cancelled
         C: AUTH PLAIN =
         S: 334
         C: not base64!
         S: 501 5.5.2 Cannot decode the authentication response
         C: AUTH PLAIN {no_password}
         S: 501 5.5.2 Cannot decode the authentication response
         C: AUTH XOAUTH2
         S: 334
         C: {basic_xoauth2}
         S: 501 5.5.2 Cannot decode the authentication response
         C: AUTH CRAM-MD5
         S: 504 5.7.4 Unrecognized authentication type
         C: AUTH LOGIN
         S: 334 VXNlcm5hbWU6
         C: {user}
         S: 334 UGFzc3dvcmQ6
         C: {password}
         S: 235 2.7.0 Authentication successful",
        ehlo = ehlo(DEFAULT_SIZE, AUTH_OFFER),
        user = b64(USER),
        password = b64(PASSWORD),
        no_password = b64(&format!("\0{USER}")),
        basic_xoauth2 = b64(&format!("user={USER}\x01auth=Basic {TOKEN}\x01\x01")),
    );
    converse(plain_config(), handler.clone(), &script).await;
    assert!(handler.messages().is_empty());
}

#[tokio::test]
async fn a_challenged_refusal_waits_for_the_answer_and_failures_close_the_session() {
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: AUTH XOAUTH2 {challenged}
         S: 334 {CHALLENGE}
         C:
         S: 535 5.7.8 Username and Password not accepted
         C: AUTH PLAIN {wrong}
         S: 535 5.7.3 Authentication unsuccessful
         C: AUTH XOAUTH2 {good}
         S: 235 2.7.0 Authentication successful",
        ehlo = ehlo(DEFAULT_SIZE, AUTH_OFFER),
        challenged = b64(&format!(
            "user={USER}\x01auth=Bearer {CHALLENGED_TOKEN}\x01\x01"
        )),
        wrong = plain(USER, "wrong"),
        good = b64(&format!("user={USER}\x01auth=Bearer {TOKEN}\x01\x01")),
    );
    converse(plain_config(), Arc::new(Recorder::default()), &script).await;

    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: AUTH PLAIN {wrong}
         S: 535 5.7.3 Authentication unsuccessful
         C: AUTH LOGIN {user}
         S: 334 UGFzc3dvcmQ6
         C: {wrong_password}
         S: 535 5.7.3 Authentication unsuccessful
         C: AUTH XOAUTH2 {challenged}
         C: NOOP
         S: 334 {CHALLENGE}
         S: 535 5.7.8 Username and Password not accepted
         S: 421 4.7.0 Too many failed authentication attempts; closing connection",
        ehlo = ehlo(DEFAULT_SIZE, AUTH_OFFER),
        wrong = plain(USER, "wrong"),
        user = b64(USER),
        wrong_password = b64("wrong"),
        challenged = b64(&format!(
            "user={USER}\x01auth=Bearer {CHALLENGED_TOKEN}\x01\x01"
        )),
    );
    converse(plain_config(), Arc::new(Recorder::default()), &script).await;
}

#[tokio::test]
async fn an_auth_response_line_too_long_closes_the_session() {
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: AUTH PLAIN
         S: 334
         C: {long}
         S: 500 5.5.6 Authentication exchange line too long",
        ehlo = ehlo(DEFAULT_SIZE, AUTH_OFFER),
        long = "A".repeat(3000),
    );
    converse(plain_config(), Arc::new(Recorder::default()), &script).await;
}

#[tokio::test]
async fn refused_bdat_chunks_are_skipped_and_data_may_not_follow_bdat() {
    let handler = Arc::new(Recorder::default());
    // The refused chunks hold commands, which must not run.
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: AUTH PLAIN {auth}
         S: 235 2.7.0 Authentication successful
         C: BDAT 6
         C: RSET
         S: 503 5.5.1 Need MAIL command first
         C: MAIL FROM:<{USER}>
         S: 250 2.1.0 Sender OK
         C: BDAT 6 LAST
         C: QUIT
         S: 554 5.5.1 No valid recipients
         C: RCPT TO:<b@example.com>
         S: 250 2.1.5 Recipient OK
         C: BDAT 3
         C: a
         S: 250 2.0.0 3 octets received
         C: DATA
         S: 503 5.5.1 DATA not allowed after BDAT
         C: MAIL FROM:<{USER}>
         S: 503 5.5.1 Sender already specified
         C: RCPT TO:<c@example.com>
         S: 250 2.1.5 Recipient OK
         C: BDAT 0 LAST
         S: 250 2.6.0 Queued mail for delivery
         C: BDAT 0 LAST
         S: 503 5.5.1 Need MAIL command first",
        ehlo = ehlo(DEFAULT_SIZE, AUTH_OFFER),
        auth = plain(USER, PASSWORD),
    );
    converse(plain_config(), handler.clone(), &script).await;
    let messages = handler.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.rcpt_to, ["b@example.com", "c@example.com"]);
    assert_eq!(messages[0].1, b"a\r\n");
}

#[tokio::test]
async fn oversized_or_bare_cr_messages_are_refused_and_the_transaction_ends() {
    let handler = Arc::new(Recorder::default());
    let mut config = plain_config();
    config.max_message_size = 16;
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: AUTH PLAIN {auth}
         S: 235 2.7.0 Authentication successful
         C: MAIL FROM:<{USER}>
         C: RCPT TO:<b@example.com>
         C: DATA
         S: 250 2.1.0 Sender OK
         S: 250 2.1.5 Recipient OK
         S: 354 Start mail input; end with <CRLF>.<CRLF>
         C: 0123456789abcdefXYZ
         C: .
         S: 552 5.3.4 Message size exceeds fixed maximum message size
         C: RCPT TO:<b@example.com>
         S: 503 5.5.1 Need MAIL command first
         C: MAIL FROM:<{USER}>
         C: RCPT TO:<b@example.com>
         C: DATA
         S: 250 2.1.0 Sender OK
         S: 250 2.1.5 Recipient OK
         S: 354 Start mail input; end with <CRLF>.<CRLF>
         C: a{bare_cr}b
         C: .
         S: 550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare CR or LF characters, which cannot be sent
         C: RCPT TO:<b@example.com>
         S: 503 5.5.1 Need MAIL command first",
        ehlo = ehlo(16, AUTH_OFFER),
        auth = plain(USER, PASSWORD),
        bare_cr = '\r',
    );
    converse(config, handler.clone(), &script).await;
    assert!(handler.messages().is_empty());
}

#[tokio::test]
async fn recipients_are_capped_and_bad_addresses_or_parameters_refused() {
    let handler = Arc::new(Recorder::default());
    let mut config = plain_config();
    config.max_recipients = 1;
    let script = format!(
        "S: 220 smtp.test ESMTP ready
         C: EHLO x
         {ehlo}
         C: AUTH PLAIN {auth}
         S: 235 2.7.0 Authentication successful
         C: MAIL FROM:<{USER}> FOO=bar
         S: 555 5.5.4 Unsupported or invalid parameter
         C: MAIL FROM:<{USER}>
         S: 250 2.1.0 Sender OK
         C: RCPT TO:<>
         S: 501 5.1.3 Invalid recipient address
         C: RCPT TO:<b@example.com>
         S: 250 2.1.5 Recipient OK
         C: RCPT TO:<c@example.com>
         S: 452 4.5.3 Too many recipients
         C: DATA
         S: 354 Start mail input; end with <CRLF>.<CRLF>
         C: Hi
         C: .
         S: 250 2.6.0 Queued mail for delivery",
        ehlo = ehlo(DEFAULT_SIZE, AUTH_OFFER),
        auth = plain(USER, PASSWORD),
    );
    converse(config, handler.clone(), &script).await;
    let messages = handler.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.rcpt_to, ["b@example.com"]);
}

/// A session that authenticates and sends one message whose body is `body`, dot-stuffed.
fn session_with_body(body: &[u8]) -> Vec<u8> {
    let mut input = format!(
        "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<{USER}>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n",
        plain(USER, PASSWORD)
    )
    .into_bytes();
    input.extend(dot_stuff(body));
    input.extend_from_slice(b"QUIT\r\n");
    input
}

fn smuggling_body() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\n.\n".to_vec()),
        Just(b"\r.\r".to_vec()),
        Just(b"\n.\r\n".to_vec()),
        Just(b"\r\n.\n".to_vec()),
        Just(b"\r\n.\r\r\n".to_vec()),
        Just(
            b"\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
                .to_vec()
        ),
        Just(b"\r\n".to_vec()),
        Just(b".".to_vec()),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever bytes arrive, the session neither panics nor delivers a message: nobody is
    /// authenticated, so nothing may be accepted.
    #[test]
    fn arbitrary_bytes_never_panic_nor_deliver(input in prop::collection::vec(any::<u8>(), 0..4096)) {
        let handler = Arc::new(Recorder::default());
        let config = plain_config();
        runtime().block_on(send_all(config, handler.clone(), &input));
        prop_assert!(handler.messages().is_empty());
    }

    /// Garbage, NUL bytes, bare LFs and over-long lines pipelined around a real session never
    /// panic it, and any message delivered is exactly one the client sent.
    #[test]
    fn pipelined_garbage_never_yields_a_message_the_client_did_not_send(
        before in prop::collection::vec(any::<u8>(), 0..512),
        body in smuggling_body(),
    ) {
        let handler = Arc::new(Recorder::default());
        let mut config = plain_config();
        config.max_bad_commands = 1000;
        let mut input = before.clone();
        input.extend_from_slice(b"\r\nRSET\r\n");
        input.extend(session_with_body(&body));
        runtime().block_on(send_all(config, handler.clone(), &input));
        let mut expected = body.clone();
        if !expected.is_empty() && !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        for (envelope, message, _) in handler.messages() {
            prop_assert_eq!(&envelope.rcpt_to, &vec!["b@example.com".to_owned()]);
            prop_assert_eq!(&message, &expected);
        }
    }

    /// Smuggling sequences inside a message never end DATA: the message either arrives whole
    /// or is refused whole, and the commands hidden in it are never run.
    #[test]
    fn smuggling_sequences_never_end_the_data_phase(body in smuggling_body()) {
        let handler = Arc::new(Recorder::default());
        let config = plain_config();
        let out = runtime().block_on(send_all(config, handler.clone(), &session_with_body(&body)));
        let messages = handler.messages();
        prop_assert!(messages.len() <= 1, "{}", out);
        prop_assert!(messages.iter().all(|(e, _, _)| e.rcpt_to == ["b@example.com"]));
        prop_assert!(!out.contains("354 Start mail input; end with <CRLF>.<CRLF>\r\n354"), "{}", out);
        prop_assert_eq!(out.matches("354 ").count(), 1, "{}", out);
        if let Some((_, message, _)) = messages.first() {
            let mut expected = body.clone();
            if !expected.is_empty() && !expected.ends_with(b"\r\n") {
                expected.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(message, &expected);
        } else {
            prop_assert!(out.contains("550 5.6.11"), "{}", out);
        }
    }
}
