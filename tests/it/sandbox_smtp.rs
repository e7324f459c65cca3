//! The sandbox's Exchange-shaped SMTP server, driven by lettre (an independent client) and a
//! raw TLS client: XOAUTH2 against sandbox tokens, Send-As, connection and rate limits, and
//! each switch's exact Exchange reply.

use std::sync::Arc;

use herald::sandbox::smtp::{SandboxSmtp, config};
use herald::sandbox::{SMTP_SEND_SCOPE, SandboxState, Switches};
use herald::smtp_server::SmtpServer;
use herald::tls::LocalCa;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const ANN: &str = "ann@contoso.com";

struct Sandbox {
    state: Arc<SandboxState>,
    ca: LocalCa,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Sandbox {
    async fn start() -> Self {
        let state = Arc::new(SandboxState::default());
        state.add_user(ANN, SecretString::from("ann's password"));
        let ca =
            LocalCa::generate("Herald sandbox", &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let server = SmtpServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            config(ca.server_config()),
            Arc::new(SandboxSmtp::new(state.clone())),
        )
        .await
        .unwrap();
        let port = server.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            state,
            ca,
            port,
            stop: Some(stop),
        }
    }

    fn token(&self, user: &str, scopes: &[&str]) -> String {
        let (token, _) = self.state.issue_access_token(
            user,
            "client",
            scopes.iter().map(|s| s.to_string()).collect(),
            herald::clock::system_now(),
        );
        token.expose_secret().to_owned()
    }

    fn transport(
        &self,
        user: &str,
        secret: &str,
        mechanism: Mechanism,
    ) -> AsyncSmtpTransport<Tokio1Executor> {
        let tls = TlsParameters::builder("localhost".into())
            .add_root_certificate(Certificate::from_pem(self.ca.ca_pem().as_bytes()).unwrap())
            .build_rustls()
            .unwrap();
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.port)
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(user.into(), secret.into()))
            .authentication(vec![mechanism])
            .build()
    }

    async fn send(
        &self,
        transport: &AsyncSmtpTransport<Tokio1Executor>,
        from: &str,
    ) -> Result<(), String> {
        let message = Message::builder()
            .from(from.parse().unwrap())
            .to("bob@example.com".parse().unwrap())
            .subject("Hello")
            .body(String::from("Hi Bob"))
            .unwrap();
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn switch(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.state.switches();
        change(&mut switches);
        self.state.set_switches(switches);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test]
async fn xoauth2_with_a_sandbox_token_delivers_and_the_message_is_kept() {
    let sandbox = Sandbox::start().await;
    let token = sandbox.token(ANN, &[SMTP_SEND_SCOPE, "offline_access"]);
    sandbox
        .send(
            &sandbox.transport("Ann@Contoso.com", &token, Mechanism::Xoauth2),
            ANN,
        )
        .await
        .unwrap();
    let messages = sandbox.state.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].user, ANN);
    assert_eq!(messages[0].mechanism, "XOAUTH2");
    assert_eq!(messages[0].mail_from, ANN);
    assert_eq!(messages[0].rcpt_to, ["bob@example.com"]);
    assert!(String::from_utf8_lossy(&messages[0].raw).contains("Subject: Hello"));
    assert_eq!(sandbox.state.smtp_auth_attempts(), 1);
}

#[tokio::test]
async fn a_wrong_user_scope_or_expired_token_gets_535_5_7_3() {
    let sandbox = Sandbox::start().await;
    let token = sandbox.token(ANN, &[SMTP_SEND_SCOPE]);
    let err = sandbox
        .send(
            &sandbox.transport("eve@contoso.com", &token, Mechanism::Xoauth2),
            "eve@contoso.com",
        )
        .await
        .unwrap_err();
    assert!(err.contains("5.7.3 Authentication unsuccessful"), "{err}");

    let no_scope = sandbox.token(ANN, &["openid"]);
    let err = sandbox
        .send(&sandbox.transport(ANN, &no_scope, Mechanism::Xoauth2), ANN)
        .await
        .unwrap_err();
    assert!(err.contains("5.7.3"), "{err}");

    sandbox.switch(|s| s.access_token_lifetime_secs = 0);
    let expired = sandbox.token(ANN, &[SMTP_SEND_SCOPE]);
    let err = sandbox
        .send(&sandbox.transport(ANN, &expired, Mechanism::Xoauth2), ANN)
        .await
        .unwrap_err();
    assert!(err.contains("5.7.3"), "{err}");

    let err = sandbox
        .send(
            &sandbox.transport(ANN, "sbx.made-up", Mechanism::Xoauth2),
            ANN,
        )
        .await
        .unwrap_err();
    assert!(err.contains("5.7.3"), "{err}");
    assert!(sandbox.state.messages().is_empty());
}

#[tokio::test]
async fn smtp_auth_disabled_gets_exchanges_5_7_139() {
    let sandbox = Sandbox::start().await;
    sandbox.switch(|s| s.smtp_auth_disabled = true);
    let token = sandbox.token(ANN, &[SMTP_SEND_SCOPE]);
    let err = sandbox
        .send(&sandbox.transport(ANN, &token, Mechanism::Xoauth2), ANN)
        .await
        .unwrap_err();
    assert!(
        err.contains("5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."),
        "{err}"
    );
}

#[tokio::test]
async fn basic_auth_works_until_retired_then_gets_5_7_30() {
    let sandbox = Sandbox::start().await;
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        sandbox
            .send(&sandbox.transport(ANN, "ann's password", mechanism), ANN)
            .await
            .unwrap();
        let err = sandbox
            .send(&sandbox.transport(ANN, "wrong", mechanism), ANN)
            .await
            .unwrap_err();
        assert!(err.contains("5.7.3"), "{err}");
    }
    sandbox.switch(|s| s.basic_auth_retired = true);
    let err = sandbox
        .send(
            &sandbox.transport(ANN, "ann's password", Mechanism::Login),
            ANN,
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("5.7.30 Basic authentication is not supported for Client Submission."),
        "{err}"
    );
    let messages = sandbox.state.messages();
    assert_eq!(
        messages.iter().map(|m| m.mechanism).collect::<Vec<_>>(),
        ["PLAIN", "LOGIN"]
    );
}

#[tokio::test]
async fn sending_as_another_address_is_denied() {
    let sandbox = Sandbox::start().await;
    let token = sandbox.token(ANN, &[SMTP_SEND_SCOPE]);
    let err = sandbox
        .send(
            &sandbox.transport(ANN, &token, Mechanism::Xoauth2),
            "ceo@contoso.com",
        )
        .await
        .unwrap_err();
    assert!(
        err.contains("5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException"),
        "{err}"
    );
    assert!(sandbox.state.messages().is_empty());
}

#[tokio::test]
async fn the_message_rate_limit_answers_a_transient_4_3_2() {
    let sandbox = Sandbox::start().await;
    sandbox.switch(|s| s.messages_per_minute = 2);
    let token = sandbox.token(ANN, &[SMTP_SEND_SCOPE]);
    let transport = sandbox.transport(ANN, &token, Mechanism::Xoauth2);
    sandbox.send(&transport, ANN).await.unwrap();
    sandbox.send(&transport, ANN).await.unwrap();
    let err = sandbox.send(&transport, ANN).await.unwrap_err();
    assert!(
        err.contains("4.3.2 STOREDRV.ClientSubmit; sender submission rate limit exceeded"),
        "{err}"
    );
    assert_eq!(sandbox.state.messages().len(), 2);
}

/// A raw client that authenticates over STARTTLS and keeps the session open.
async fn authenticated_session(
    sandbox: &Sandbox,
    token: &str,
) -> (
    String,
    BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(sandbox.ca.ca_der()).unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", sandbox.port))
        .await
        .unwrap();
    let mut plain = BufReader::new(tcp);
    let mut line = String::new();
    plain.read_line(&mut line).await.unwrap();
    plain
        .get_mut()
        .write_all(b"EHLO raw\r\nSTARTTLS\r\n")
        .await
        .unwrap();
    loop {
        line.clear();
        plain.read_line(&mut line).await.unwrap();
        if line.starts_with("220 ") {
            break;
        }
    }
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let stream = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            plain.into_inner(),
        )
        .await
        .unwrap();
    let mut tls = BufReader::new(stream);
    use base64::Engine as _;
    let xoauth2 = base64::engine::general_purpose::STANDARD
        .encode(format!("user={ANN}\x01auth=Bearer {token}\x01\x01"));
    tls.get_mut()
        .write_all(format!("EHLO raw\r\nAUTH XOAUTH2 {xoauth2}\r\n").as_bytes())
        .await
        .unwrap();
    let reply;
    loop {
        line.clear();
        tls.read_line(&mut line).await.unwrap();
        if line.as_bytes().get(3) == Some(&b' ') && !line.starts_with("250") {
            reply = line.trim_end().to_owned();
            break;
        }
    }
    (reply, tls)
}

#[tokio::test]
async fn a_fourth_concurrent_connection_of_one_mailbox_gets_4_3_2() {
    let sandbox = Sandbox::start().await;
    let token = sandbox.token(ANN, &[SMTP_SEND_SCOPE]);
    let mut held = Vec::new();
    for _ in 0..3 {
        let (reply, session) = authenticated_session(&sandbox, &token).await;
        assert!(reply.starts_with("235 2.7.0"), "{reply}");
        held.push(session);
    }
    let (reply, _fourth) = authenticated_session(&sandbox, &token).await;
    assert_eq!(
        reply,
        "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"
    );
    drop(held);
}
