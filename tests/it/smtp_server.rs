//! The SMTP server component, driven over real sockets and in-memory streams: transcripts,
//! STARTTLS with a verified certificate (lettre as an independent client), AUTH, limits, and
//! property tests that arbitrary input never panics a session nor smuggles a message.

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
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const USER: &str = "ann@contoso.com";
const PASSWORD: &str = "device password";
const TOKEN: &str = "valid-access-token";

/// A received message: envelope, raw bytes, and who sent it.
type Received = (Envelope, Vec<u8>, Option<AuthIdentity>);

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
            Credentials::XOAuth2 { user, token } => user == USER && token.expose_secret() == TOKEN,
        };
        if good {
            Ok(AuthIdentity {
                username: credentials.username().to_owned(),
                mechanism: credentials.mechanism(),
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

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// Runs a session over an in-memory pipe: writes `input`, closes, and returns all output.
async fn transcript(config: SmtpConfig, handler: Arc<Recorder>, input: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let session = tokio::spawn(run_session(server, peer(), Arc::new(config), handler));
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    session.await.expect("the session must not panic").ok();
    String::from_utf8_lossy(&out).into_owned()
}

fn codes(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.len() >= 4 && &l[3..4] == " ")
        .map(|l| l[..3].to_owned())
        .collect()
}

fn plain(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

#[tokio::test]
async fn a_plain_session_accepts_a_message_and_every_reply_has_an_enhanced_code() {
    let handler = Arc::new(Recorder::default());
    let mut config = config(None);
    config.auth_without_tls = true;
    let input = format!(
        "EHLO client.test\r\nAUTH PLAIN {}\r\nMAIL FROM:<{USER}>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
        plain(USER, PASSWORD)
    );
    let out = transcript(config, handler.clone(), input.as_bytes()).await;
    assert_eq!(
        codes(&out),
        ["220", "250", "235", "250", "250", "354", "250", "221"],
        "{out}"
    );
    for reply in [
        "235 2.7.0",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.6.0",
        "221 2.0.0",
    ] {
        assert!(out.contains(reply), "missing {reply}: {out}");
    }
    let messages = handler.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.mail_from, USER);
    assert_eq!(messages[0].0.rcpt_to, ["bob@example.com"]);
    assert_eq!(messages[0].1, b"Subject: hi\r\n\r\n.dot\r\n");
    assert_eq!(messages[0].2.as_ref().unwrap().mechanism, Mechanism::Plain);
}

#[tokio::test]
async fn auth_is_offered_and_accepted_only_after_starttls() {
    let ca = LocalCa::generate("Test", &["localhost".into()]).unwrap();
    let handler = Arc::new(Recorder::default());
    let input = format!(
        "EHLO client.test\r\nAUTH PLAIN {}\r\nMAIL FROM:<{USER}>\r\nQUIT\r\n",
        plain(USER, PASSWORD)
    );
    let out = transcript(config(Some(&ca)), handler, input.as_bytes()).await;
    assert!(out.contains("250 STARTTLS"), "{out}");
    assert!(
        !out.contains("AUTH "),
        "AUTH advertised before STARTTLS: {out}"
    );
    assert!(out.contains("538 5.7.11"), "{out}");
    assert!(out.contains("530 5.7.0"), "MAIL without AUTH: {out}");
}

#[tokio::test]
async fn commands_pipelined_after_starttls_close_the_session() {
    let ca = LocalCa::generate("Test", &["localhost".into()]).unwrap();
    let out = transcript(
        config(Some(&ca)),
        Arc::new(Recorder::default()),
        b"EHLO client.test\r\nSTARTTLS\r\nMAIL FROM:<evil@example.com>\r\n",
    )
    .await;
    assert!(out.contains("554 5.5.1"), "{out}");
    assert!(!out.contains("220 2.0.0"), "TLS must not start: {out}");
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
    assert_eq!(auth.as_ref().unwrap().mechanism, Mechanism::XOAuth2);
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
    let mut input = b"EHLO x\r\n".to_vec();
    input.extend(vec![b'A'; 5000]);
    input.extend_from_slice(b"\r\nNO\0OP\r\nFOO\r\nNOOP\r\n");
    let out = transcript(config, Arc::new(Recorder::default()), &input).await;
    assert!(out.contains("500 5.5.6 Line too long"), "{out}");
    assert!(
        out.contains("500 5.5.2 Syntax error: NUL in command"),
        "{out}"
    );
    assert!(out.contains("421 4.7.0 Too many errors"), "{out}");
    assert!(
        !out.contains("250 2.0.0 OK"),
        "NOOP after the cut-off must not run: {out}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_disconnected_after_the_timeout() {
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
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("421 4.4.2"), "{out}");
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
    let mut config = config(None);
    config.auth_without_tls = true;
    config.max_message_size = 16;
    let input = format!(
        "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<{USER}>\r\nRCPT TO:<b@example.com>\r\nBDAT 5\r\nab\r\ncBDAT 3 LAST\r\nd\r\nMAIL FROM:<{USER}>\r\nRCPT TO:<b@example.com>\r\nBDAT 20 LAST\r\n01234567890123456789MAIL FROM:<{USER}> SIZE=99\r\nQUIT\r\n",
        plain(USER, PASSWORD)
    );
    let out = transcript(config, handler.clone(), input.as_bytes()).await;
    assert!(out.contains("250 2.0.0 5 octets received"), "{out}");
    assert!(out.contains("552 5.3.4"), "{out}");
    assert_eq!(
        out.matches("552 5.3.4").count(),
        2,
        "the oversized chunk and the oversized SIZE: {out}"
    );
    let messages = handler.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].1, b"ab\r\ncd\r\n");
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
        let mut config = config(None);
        config.auth_without_tls = true;
        runtime().block_on(transcript(config, handler.clone(), &input));
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
        let mut config = config(None);
        config.auth_without_tls = true;
        config.max_bad_commands = 1000;
        let mut input = before.clone();
        input.extend_from_slice(b"\r\nRSET\r\n");
        input.extend(session_with_body(&body));
        runtime().block_on(transcript(config, handler.clone(), &input));
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
        let mut config = config(None);
        config.auth_without_tls = true;
        let out = runtime().block_on(transcript(config, handler.clone(), &session_with_body(&body)));
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
