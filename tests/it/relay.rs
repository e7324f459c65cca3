//! The SMTP relay: a legacy client logs in with AUTH PLAIN over STARTTLS, and its mail leaves
//! through an OAuth2 mailbox at the sandbox's XOAUTH2 server. Then the refusals a device can
//! meet: AUTH before STARTTLS, a wrong password (and too many), a foreign sender under the
//! refusing policy, an oversize message.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::helpers::{spawn_sandboxed, within};
use crate::outbox::{Outbox, SUPPORT};

pub(crate) struct Relay {
    pub(crate) o: Outbox,
    ca_pem: String,
    _certs: tempfile::TempDir,
}

impl Relay {
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Self {
        herald::tls::install_crypto_provider();
        let ca = herald::tls::LocalCa::generate("Contoso test", &["127.0.0.1".to_owned()])
            .expect("a certificate");
        let certs = tempfile::tempdir().unwrap();
        let (cert, key) = (
            certs.path().join("relay.pem"),
            certs.path().join("relay.key"),
        );
        std::fs::write(&cert, ca.chain_pem()).unwrap();
        std::fs::write(&key, ca.key_pem()).unwrap();
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (app, sandbox) = spawn_sandboxed(Arc::new(herald::clock::SystemClock), |env| {
            env.insert("HERALD_RELAY_LISTEN".into(), "127.0.0.1:0".into());
            env.insert("HERALD_RELAY_TLS_LISTEN".into(), "127.0.0.1:0".into());
            env.insert("HERALD_RELAY_CERT_FILE".into(), cert.display().to_string());
            env.insert("HERALD_RELAY_KEY_FILE".into(), key.display().to_string());
            for (k, v) in extra {
                env.insert(k, v);
            }
        })
        .await;
        Self {
            o: Outbox::with(app, sandbox).await,
            ca_pem: ca.ca_pem().to_owned(),
            _certs: certs,
        }
    }

    /// Issues a credential; answers `(username, password)`.
    pub(crate) async fn credential(&self, body: Value) -> (String, String) {
        let response = self
            .o
            .call(
                reqwest::Method::POST,
                "/api/v1/relay-credentials",
                &self.o.admin,
                Some(body),
            )
            .await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        let created: Value = response.json().await.unwrap();
        (
            created["username"].as_str().unwrap().to_owned(),
            created["password"].as_str().unwrap().to_owned(),
        )
    }

    /// A legacy client: STARTTLS (or implicit TLS), then AUTH PLAIN.
    pub(crate) fn client(
        &self,
        user: &str,
        password: &str,
        implicit: bool,
    ) -> AsyncSmtpTransport<Tokio1Executor> {
        let params = TlsParameters::builder("127.0.0.1".into())
            .add_root_certificate(Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build_rustls()
            .unwrap();
        let addr = if implicit {
            self.o.app.relay_tls_addr
        } else {
            self.o.app.relay_addr
        }
        .expect("the relay listens");
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(addr.port())
            .tls(if implicit {
                Tls::Wrapper(params)
            } else {
                Tls::Required(params)
            })
            .credentials(Credentials::new(user.into(), password.into()))
            .authentication(vec![Mechanism::Plain])
            .timeout(Some(Duration::from_secs(10)))
            .build()
    }
}

pub(crate) fn scan(from: &str, to: &str, size: usize) -> lettre::Message {
    lettre::Message::builder()
        .from(from.parse().unwrap())
        .to(to.parse().unwrap())
        .subject("Scan from the 2nd floor")
        // Short lines, so the client sends 7bit as a scanner does.
        .body(
            "x".repeat(size)
                .as_bytes()
                .chunks(50)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("\n"),
        )
        .unwrap()
}

/// Speaks SMTP over plain TCP and answers each reply line by line.
async fn plain_session(addr: std::net::SocketAddr, lines: &[&str]) -> Vec<String> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut replies = Vec::new();
    replies.push(read_reply(&mut reader).await);
    for line in lines {
        write
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        replies.push(read_reply(&mut reader).await);
    }
    replies
}

#[tokio::test]
async fn a_password_only_client_sends_through_an_oauth2_mailbox() {
    let r = Relay::start(&[]).await;
    let support = r.o.oauth_mailbox(&r.o.admin, "Support", SUPPORT).await;
    let (user, password) = r
        .credential(json!({"name": "Scanner, 2nd floor", "mailbox": "Support"}))
        .await;
    assert!(user.starts_with("relay-") && password.len() == 32);
    // The printer writes its own address; the default policy sends it as the mailbox.
    let client = r.client(&user, &password, false);
    let reply = client
        .send(scan("scanner@localdomain", "bob@example.com", 100))
        .await
        .expect("relayed");
    assert_eq!(reply.code().to_string(), "250");
    let text = reply.message().collect::<Vec<_>>().join(" ");
    let id = text
        .split_whitespace()
        .last()
        .expect("the queue id")
        .to_owned();
    let message = r.o.wait_for(&r.o.admin, &id, "sent").await;
    assert_eq!(message["source"], "relay");
    assert_eq!(message["mailbox"], support.as_str());
    let received = r.o.received_by(SUPPORT);
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].mechanism, "XOAUTH2",
        "OAuth 2.0 towards the provider"
    );
    assert_eq!(received[0].rcpt_to, ["bob@example.com"]);
    let raw = String::from_utf8_lossy(&received[0].raw).to_string();
    assert!(raw.contains(&format!("<{SUPPORT}>")), "{raw}");
    assert!(raw.contains("Reply-To: scanner@localdomain"), "{raw}");
    assert!(
        raw.contains("-- \r\nContoso Support\r\n"),
        "the signature: {raw}"
    );
    assert!(!raw.contains("From: scanner@localdomain"), "{raw}");

    // Implicit TLS works the same.
    let client = r.client(&user, &password, true);
    client
        .send(scan(SUPPORT, "carol@example.com", 10))
        .await
        .expect("relayed over implicit TLS");
    r.o.stop().await;
}

#[tokio::test]
async fn auth_before_starttls_a_wrong_password_a_foreign_sender_and_oversize_are_refused() {
    let r = Relay::start(&[("HERALD_MAX_MESSAGE_BYTES", "4096")]).await;
    r.o.basic_mailbox(&r.o.admin, "Support", SUPPORT, json!({}))
        .await;
    let (user, password) = r
        .credential(json!({"name": "Billing app", "mailbox": "Support", "from_policy": "refuse"}))
        .await;
    let addr = r.o.app.relay_addr.unwrap();

    let replies = plain_session(addr, &["EHLO device", "AUTH PLAIN AGFiYwBkZWY=", "QUIT"]).await;
    assert!(replies[1].contains("STARTTLS"), "{}", replies[1]);
    assert!(
        !replies[1].contains("AUTH"),
        "no AUTH offered in the clear: {}",
        replies[1]
    );
    assert!(replies[2].starts_with("530 5.7.0"), "{}", replies[2]);

    let wrong = r.client(&user, "not the password", false);
    let error = wrong
        .send(scan(SUPPORT, "bob@example.com", 10))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("535"), "{error}");

    let client = r.client(&user, &password, false);
    let error = client
        .send(scan("scanner@localdomain", "bob@example.com", 10))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("550") && error.to_string().contains("5.7.1"),
        "{error}"
    );
    let error = client
        .send(scan(SUPPORT, "bob@example.com", 8000))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("552") && error.to_string().contains("5.3.4"),
        "{error}"
    );
    // Its own address goes.
    client
        .send(scan(SUPPORT, "bob@example.com", 10))
        .await
        .expect("relayed");

    // Ten failures from one address, and even the right password waits.
    for _ in 0..10 {
        let _ = wrong.send(scan(SUPPORT, "bob@example.com", 10)).await;
    }
    let error = client
        .send(scan(SUPPORT, "bob@example.com", 10))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("454") || error.to_string().contains("4.7.0"),
        "{error}"
    );
    r.o.stop().await;
}

#[tokio::test]
async fn relay_credentials_are_managed_by_admins_and_the_password_is_shown_once() {
    let r = Relay::start(&[]).await;
    r.o.basic_mailbox(&r.o.admin, "Support", SUPPORT, json!({}))
        .await;
    let bad =
        r.o.call(
            reqwest::Method::POST,
            "/api/v1/relay-credentials",
            &r.o.admin,
            Some(json!({"name": "x", "mailbox": "nope", "allowed_networks": ["not a net"]})),
        )
        .await;
    let body = crate::helpers::problem(bad, 422, "validation_failed").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["allowed_networks[0]", "mailboxes[0]"]);
    let (user, password) = r
        .credential(
            json!({"name": "Scanner", "mailbox": "Support", "allowed_networks": ["10.0.0.0/8"]}),
        )
        .await;
    let list: Value =
        r.o.call(
            reqwest::Method::GET,
            "/api/v1/relay-credentials",
            &r.o.admin,
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["username"], user.as_str());
    assert!(
        !list.to_string().contains(&password),
        "the password is shown once"
    );
    // From 127.0.0.1, outside 10.0.0.0/8, the right password is refused.
    let error = r
        .client(&user, &password, false)
        .send(scan(SUPPORT, "bob@example.com", 10))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("535"), "{error}");
    let sender = r.o.app.key(r.o.org, "sender").await;
    let refused =
        r.o.call(
            reqwest::Method::POST,
            "/api/v1/relay-credentials",
            &sender,
            Some(json!({"name": "x", "mailbox": "Support"})),
        )
        .await;
    crate::helpers::problem(refused, 403, "forbidden").await;
    let id = list["items"][0]["id"].as_str().unwrap();
    let deleted =
        r.o.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/relay-credentials/{id}"),
            &r.o.admin,
            None,
        )
        .await;
    assert_eq!(deleted.status(), 204);
    r.o.stop().await;
}

/// A client speaking raw SMTP over STARTTLS, for what a library would never send.
struct RawClient {
    stream: BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
}

impl RawClient {
    async fn connect(r: &Relay, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let tcp = tokio::net::TcpStream::connect(r.o.app.relay_addr.unwrap())
            .await
            .unwrap();
        let mut plain = BufReader::new(tcp);
        read_reply(&mut plain).await;
        for line in ["EHLO device\r\n", "STARTTLS\r\n"] {
            plain.get_mut().write_all(line.as_bytes()).await.unwrap();
            read_reply(&mut plain).await;
        }
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(herald::tls::LocalCa::ca_der_of(&r.ca_pem))
            .unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                plain.into_inner(),
            )
            .await
            .unwrap();
        let mut client = Self {
            stream: BufReader::new(tls),
        };
        client.command("EHLO device").await;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        let reply = client.command(&format!("AUTH PLAIN {auth}")).await;
        assert!(reply.starts_with("235"), "{reply}");
        client
    }

    async fn command(&mut self, line: &str) -> String {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
        read_reply(&mut self.stream).await
    }

    async fn raw(&mut self, bytes: &[u8]) -> String {
        self.stream.get_mut().write_all(bytes).await.unwrap();
        read_reply(&mut self.stream).await
    }
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap() == 0 {
            break;
        }
        all.push_str(&line);
        if line.as_bytes().get(3) == Some(&b' ') {
            break;
        }
    }
    all
}

#[tokio::test]
async fn smuggled_messages_are_refused_whole_and_dot_stuffing_is_undone() {
    let r = Relay::start(&[]).await;
    r.o.basic_mailbox(&r.o.admin, "Support", SUPPORT, json!({}))
        .await;
    let (user, password) = r
        .credential(json!({"name": "App", "mailbox": "Support"}))
        .await;
    let mut client = RawClient::connect(&r, &user, &password).await;
    for smuggling in [&b"\n.\n"[..], b"\r.\r", b"\n.\r\n"] {
        assert!(
            client
                .command(&format!("MAIL FROM:<{SUPPORT}>"))
                .await
                .starts_with("250")
        );
        assert!(
            client
                .command("RCPT TO:<bob@example.com>")
                .await
                .starts_with("250")
        );
        assert!(client.command("DATA").await.starts_with("354"));
        let mut data =
            format!("From: {SUPPORT}\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nhello")
                .into_bytes();
        data.extend_from_slice(smuggling);
        data.extend_from_slice(
            format!(
                "MAIL FROM:<{SUPPORT}>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n"
            )
            .as_bytes(),
        );
        let reply = client.raw(&data).await;
        assert!(reply.starts_with("550 5.6.11"), "{smuggling:?}: {reply}");
    }
    // Leading dots: `..` on the wire is one `.` in the message.
    assert!(
        client
            .command(&format!("MAIL FROM:<{SUPPORT}>"))
            .await
            .starts_with("250")
    );
    assert!(
        client
            .command("RCPT TO:<bob@example.com>")
            .await
            .starts_with("250")
    );
    assert!(client.command("DATA").await.starts_with("354"));
    let reply = client
        .raw(format!("From: {SUPPORT}\r\nSubject: dots\r\n\r\n..hidden line\r\n.\r\n").as_bytes())
        .await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    assert!(client.command("QUIT").await.starts_with("221"));
    let id = reply.trim().rsplit(' ').next().unwrap().to_owned();
    r.o.wait_for(&r.o.admin, &id, "sent").await;
    let received = r.o.received_by(SUPPORT);
    assert_eq!(received.len(), 1, "nothing smuggled went out");
    let raw = String::from_utf8_lossy(&received[0].raw).to_string();
    assert!(raw.contains("\r\n.hidden line\r\n"), "{raw}");
    assert!(!raw.contains("smuggled"));
    let list: Value =
        r.o.call(reqwest::Method::GET, "/api/v1/messages", &r.o.admin, None)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    r.o.stop().await;
}

#[tokio::test]
async fn failed_logins_recorded_by_any_instance_count_here() {
    let r = Relay::start(&[]).await;
    r.o.basic_mailbox(&r.o.admin, "Support", SUPPORT, json!({}))
        .await;
    let (user, password) = r
        .credential(json!({"name": "Scanner", "mailbox": "Support"}))
        .await;
    // Another instance on the same database saw ten failures from this address.
    let now = herald::clock::system_now().unix_timestamp();
    let mut conn = r.o.app.store().conn().await.unwrap();
    for _ in 0..10 {
        herald::store::auth_failures::record(&mut conn, "relay:address:127.0.0.1", now)
            .await
            .unwrap();
    }
    drop(conn);
    let error = r
        .client(&user, &password, false)
        .send(scan(SUPPORT, "bob@example.com", 10))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("454") || error.to_string().contains("4.7.0"),
        "{error}"
    );
    r.o.stop().await;
}

#[tokio::test]
async fn a_second_from_through_the_relay_is_refused_under_either_policy() {
    let r = Relay::start(&[]).await;
    r.o.basic_mailbox(&r.o.admin, "Support", SUPPORT, json!({}))
        .await;
    for policy in ["rewrite", "refuse"] {
        let (user, password) = r
            .credential(json!({"name": format!("App {policy}"), "mailbox": "Support", "from_policy": policy}))
            .await;
        let mut client = RawClient::connect(&r, &user, &password).await;
        assert!(
            client
                .command(&format!("MAIL FROM:<{SUPPORT}>"))
                .await
                .starts_with("250")
        );
        assert!(
            client
                .command("RCPT TO:<bob@example.com>")
                .await
                .starts_with("250")
        );
        assert!(client.command("DATA").await.starts_with("354"));
        let reply = client
            .raw(
                format!(
                    "From: CEO <ceo@bigbank.example>\r\nFrom: {SUPPORT}\r\nTo: bob@example.com\r\nSubject: Wire\r\n\r\nNow.\r\n.\r\n"
                )
                .as_bytes(),
            )
            .await;
        assert!(reply.starts_with("550 5.6.0"), "{policy}: {reply}");
        assert!(reply.contains("more than one From"), "{reply}");
        assert!(client.command("QUIT").await.starts_with("221"));
    }
    let list: Value =
        r.o.call(reqwest::Method::GET, "/api/v1/messages", &r.o.admin, None)
            .await
            .json()
            .await
            .unwrap();
    assert!(
        list["items"].as_array().unwrap().is_empty(),
        "nothing queued"
    );
    assert!(r.o.received_by(SUPPORT).is_empty());
    r.o.stop().await;
}

/// `AUTH PLAIN` for a user and password.
fn auth_plain(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
    format!("AUTH PLAIN {token}")
}

/// Logs in once over a fresh session (AUTH before STARTTLS, allowed on loopback) and answers
/// the AUTH reply.
async fn login_once(addr: std::net::SocketAddr, user: &str, password: &str) -> String {
    let replies = plain_session(addr, &["EHLO device", &auth_plain(user, password)]).await;
    replies[2].clone()
}

#[tokio::test]
async fn parallel_wrong_passwords_from_one_address_get_no_more_tries_than_the_limit() {
    let r = Relay::start(&[("HERALD_RELAY_AUTH_WITHOUT_TLS", "true")]).await;
    r.o.basic_mailbox(&r.o.admin, "Support", SUPPORT, json!({}))
        .await;
    let (user, password) = r
        .credential(json!({"name": "Scanner", "mailbox": "Support"}))
        .await;
    let addr = r.o.app.relay_addr.unwrap();

    // The review's reproduction: 50 sessions, each ready to send a wrong password, all at once.
    let ready = Arc::new(tokio::sync::Barrier::new(50));
    let sessions: Vec<_> = (0..50)
        .map(|_| {
            let (ready, user) = (ready.clone(), user.clone());
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                read_reply(&mut reader).await;
                write.write_all(b"EHLO device\r\n").await.unwrap();
                read_reply(&mut reader).await;
                ready.wait().await;
                let auth = format!("{}\r\n", auth_plain(&user, "not the password"));
                write.write_all(auth.as_bytes()).await.unwrap();
                read_reply(&mut reader).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for session in sessions {
        replies.push(session.await.unwrap());
    }
    let checked = replies.iter().filter(|r| r.starts_with("535")).count();
    let refused = replies
        .iter()
        .filter(|r| r.starts_with("454 4.7.0"))
        .count();
    assert!(
        checked <= herald::relay::MAX_FAILURES_PER_ADDRESS as usize,
        "{checked} of 50 parallel wrong passwords were checked: {replies:?}"
    );
    assert_eq!(checked + refused, 50, "{replies:?}");

    // A fresh window: a correct login takes its reserved attempt back, so however many
    // succeed, the address keeps the tries it had; its failures are not forgiven.
    let mut conn = r.o.app.store().conn().await.unwrap();
    herald::store::auth_failures::forget_key(&mut conn, "relay:address:127.0.0.1")
        .await
        .unwrap();
    drop(conn);
    for _ in 0..9 {
        let reply = login_once(addr, &user, "not the password").await;
        assert!(reply.starts_with("535 5.7.8"), "{reply}");
    }
    for _ in 0..3 {
        let reply = login_once(addr, &user, &password).await;
        assert!(reply.starts_with("235"), "{reply}");
    }
    let tenth = login_once(addr, &user, "not the password").await;
    assert!(tenth.starts_with("535 5.7.8"), "{tenth}");
    for attempt in ["not the password", password.as_str()] {
        let reply = login_once(addr, &user, attempt).await;
        assert!(reply.starts_with("454 4.7.0"), "{reply}");
    }
    r.o.stop().await;
}

#[tokio::test]
async fn sessions_past_the_relay_wide_cap_are_answered_421_and_closed() {
    let r = Relay::start(&[("HERALD_RELAY_MAX_SESSIONS", "2")]).await;
    let (starttls, implicit) = (r.o.app.relay_addr.unwrap(), r.o.app.relay_tls_addr.unwrap());
    let greet = |addr| async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut reader = BufReader::new(stream);
        let greeting = read_reply(&mut reader).await;
        (reader, greeting)
    };
    let (first, greeting) = greet(starttls).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    // The implicit-TLS listener's sessions count against the same cap: its handshake has not
    // begun, but the session holds its place.
    let _second = tokio::net::TcpStream::connect(implicit).await.unwrap();
    let mut open = r.o.app.relay_sessions.clone().expect("the relay listens");
    within(
        "the implicit-TLS session to take its place",
        open.wait_for(|n| *n == 2),
    )
    .await
    .unwrap();
    let (mut third, refused) = greet(starttls).await;
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    let mut rest = Vec::new();
    third.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "the refused session was closed");
    // A place freed is a place taken.
    drop(first);
    within("the first session to end", open.wait_for(|n| *n == 1))
        .await
        .unwrap();
    let greeting = greet(starttls).await.1;
    assert!(greeting.starts_with("220"), "{greeting}");
    r.o.stop().await;
}

#[tokio::test]
async fn a_device_that_cannot_log_in_is_known_by_its_private_network_alone() {
    let r = Relay::start(&[]).await;
    r.o.oauth_mailbox(&r.o.admin, "Support", SUPPORT).await;
    let addr = r.o.app.relay_addr.expect("the relay listens");
    let send = [
        "EHLO printer.local",
        "MAIL FROM:<scanner@localdomain>",
        "RCPT TO:<bob@example.com>",
        "DATA",
        "From: scanner@localdomain\r\nTo: bob@example.com\r\nSubject: Scan without a login\r\n\r\nhello\r\n.",
    ];
    // No credential knows the printer: authentication is required.
    let replies = plain_session(addr, &send[..2]).await;
    assert!(replies[2].starts_with("530"), "{replies:?}");

    let create = |body: Value| {
        r.o.call(
            reqwest::Method::POST,
            "/api/v1/relay-credentials",
            &r.o.admin,
            Some(body),
        )
    };
    // Without a password, the networks must be given, and private or loopback.
    for (networks, field) in [
        (json!([]), "allowed_networks"),
        (json!(["8.8.8.0/24"]), "allowed_networks[0]"),
        (json!(["0.0.0.0/0"]), "allowed_networks[0]"),
    ] {
        let refused = create(json!({"name": "Printer", "mailbox": "Support",
            "network_only": true, "allowed_networks": networks}))
        .await;
        assert_eq!(refused.status(), 422);
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let created = create(json!({"name": "Printer, 2nd floor", "mailbox": "Support",
        "network_only": true, "allowed_networks": ["127.0.0.0/8"]}))
    .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["network_only"], true);
    assert!(
        created["password"].is_null(),
        "no password to show: {created}"
    );

    let replies = plain_session(addr, &send).await;
    assert!(replies[2].starts_with("250"), "{replies:?}");
    assert!(replies[5].starts_with("250"), "{replies:?}");
    crate::helpers::eventually("the scan delivered through the mailbox", || async {
        r.o.received_by(SUPPORT)
            .iter()
            .any(|m| String::from_utf8_lossy(&m.raw).contains("Scan without a login"))
    })
    .await;
    let got = r.o.received_by(SUPPORT).pop().unwrap();
    assert_eq!(got.rcpt_to, ["bob@example.com"]);
    // The From policy still holds: the device's address went to Reply-To.
    let raw = String::from_utf8_lossy(&got.raw);
    assert!(
        raw.contains(&format!("From: {SUPPORT}")) || raw.contains(SUPPORT),
        "{raw}"
    );
    r.o.stop().await;
}

#[tokio::test]
async fn twenty_sessions_of_one_application_server_all_log_in_at_once() {
    let r = Relay::start(&[("HERALD_RELAY_AUTH_WITHOUT_TLS", "true")]).await;
    r.o.basic_mailbox(&r.o.admin, "Support", SUPPORT, json!({}))
        .await;
    let (user, password) = r
        .credential(json!({"name": "CRM", "mailbox": "Support"}))
        .await;
    let addr = r.o.app.relay_addr.unwrap();
    // A pool of 20 sessions, each with the right password, all logging in at the same moment:
    // more than the 10 attempts one address may have in flight, so some wait their turn.
    let ready = Arc::new(tokio::sync::Barrier::new(20));
    let sessions: Vec<_> = (0..20)
        .map(|_| {
            let (ready, user, password) = (ready.clone(), user.clone(), password.clone());
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                read_reply(&mut reader).await;
                write.write_all(b"EHLO pool\r\n").await.unwrap();
                read_reply(&mut reader).await;
                ready.wait().await;
                let auth = format!("{}\r\n", auth_plain(&user, &password));
                write.write_all(auth.as_bytes()).await.unwrap();
                read_reply(&mut reader).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for session in sessions {
        replies.push(session.await.unwrap());
    }
    assert!(
        replies.iter().all(|r| r.starts_with("235")),
        "every good login of the pool succeeds: {replies:?}"
    );
    r.o.stop().await;
}
