//! The SMTP relay's benchmark: `cargo bench --bench relay`.
//!
//! One local XOAUTH2 sink (the sandbox's SMTP server, in this process) and, side by side in
//! the same run:
//! - **direct**: a client sending to the sink itself, with an XOAUTH2 token (the limit);
//! - **herald**: the same client sending to Herald's relay (`herald serve`, a process of its
//!   own, on SQLite in a temporary directory) with AUTH PLAIN, Herald delivering to the sink
//!   through an OAuth2 mailbox. Its time runs until the sink has every message.
//!
//! Three modes: one session × N messages, a new session per message, and 20 concurrent
//! sessions. Then Herald's CPU per relayed message and per new session (TLS and AUTH), its
//! peak RSS, and its RSS with 1,000 idle sessions open.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const USER: &str = "bench@contoso.com";
const PASSWORD: &str = "the bench mailbox password";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where to send and how to log in.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    ca_pem: String,
    mechanism: Mechanism,
    credentials: Credentials,
}

impl Target {
    async fn session(&self) -> AsyncSmtpConnection {
        let hello = ClientId::Domain("bench.localhost".into());
        // A client that does not wait on Nagle's algorithm, as a well-written one should.
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        tcp.set_nodelay(true).unwrap();
        let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
            .await
            .expect("greeting");
        let params = TlsParameters::builder("127.0.0.1".into())
            .add_root_certificate(Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build_rustls()
            .unwrap();
        conn.starttls(params, &hello).await.expect("STARTTLS");
        conn.auth(&[self.mechanism], &self.credentials)
            .await
            .expect("AUTH");
        conn
    }
}

fn message(i: usize) -> (Envelope, Vec<u8>) {
    let envelope = Envelope::new(
        Some(USER.parse().unwrap()),
        vec!["archive@example.com".parse().unwrap()],
    )
    .unwrap();
    let body = format!(
        "From: {USER}\r\nTo: archive@example.com\r\nSubject: Report {i}\r\nMessage-ID: <bench-{i}@contoso.com>\r\n\r\n{}\r\n",
        "The numbers of the day, in a line of text.\r\n".repeat(20)
    );
    (envelope, body.into_bytes())
}

/// Sends `count` messages in `sessions` sessions of `per_session` messages each, `concurrency`
/// at a time.
async fn send(target: &Target, sessions: usize, per_session: usize, concurrency: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (target, next) = (target.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let s = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if s >= sessions {
                        return;
                    }
                    let mut conn = target.session().await;
                    for k in 0..per_session {
                        let (envelope, body) = message(s * per_session + k);
                        conn.send(&envelope, &body).await.expect("250");
                    }
                    let _ = conn.quit().await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

/// User + system CPU time of a process, and its peak and current RSS in KiB (Linux).
fn usage(pid: u32) -> (Duration, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        Duration::from_millis(ticks * 10),
        kib("VmHWM:"),
        kib("VmRSS:"),
    )
}

async fn wait_for_sink(sandbox: &herald::sandbox::RunningSandbox, total: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while sandbox.state.messages().len() < total {
        assert!(
            Instant::now() < deadline,
            "the sink never got every message"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Completes the sandbox's sign-in and consent as a browser would.
async fn consent(auth_url: &str) -> String {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let html = browser
        .get(auth_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let txn = html
        .split("name=\"txn\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the sign-in form's transaction")
        .to_owned();
    let base = url::Url::parse(auth_url).unwrap();
    let tenant = base
        .path_segments()
        .and_then(|mut s| s.next())
        .unwrap()
        .to_owned();
    browser
        .post(base.join(&format!("/{tenant}/login")).unwrap())
        .form(&[
            ("txn", txn.as_str()),
            ("username", USER),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let redirect = browser
        .post(base.join(&format!("/{tenant}/consent")).unwrap())
        .form(&[("txn", txn.as_str()), ("decision", "accept")])
        .send()
        .await
        .unwrap();
    redirect.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    herald::tls::install_crypto_provider();
    let one_session = env_usize("BENCH_MESSAGES", 2_000);
    let per_message_sessions = env_usize("BENCH_SESSIONS", 500);
    let concurrent = 20;
    let idle = env_usize("BENCH_IDLE_SESSIONS", 1_000);

    // The sink.
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox_url = format!("http://localhost:{}", http.local_addr().unwrap().port());
    let sandbox = herald::sandbox::RunningSandbox::start_on(http, smtp, &sandbox_url)
        .await
        .unwrap();
    sandbox.state.add_user(USER, SecretString::from(PASSWORD));
    let mut switches = sandbox.state.switches();
    switches.messages_per_minute = u32::MAX;
    switches.max_connections_per_mailbox = 10_000;
    sandbox.state.set_switches(switches);

    // Herald, in a process of its own.
    let data = tempfile::tempdir().unwrap();
    let ca = data.path().join("sink-ca.pem");
    std::fs::write(&ca, sandbox.ca.ca_pem()).unwrap();
    let relay_ca = herald::tls::LocalCa::generate("Bench", &["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (data.path().join("relay.pem"), data.path().join("relay.key"));
    std::fs::write(&cert, relay_ca.chain_pem()).unwrap();
    std::fs::write(&key, relay_ca.key_pem()).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http_port, relay_port) = (free(), free());
    let herald_url = format!("http://127.0.0.1:{http_port}");
    let env = BTreeMap::from([
        ("HERALD_LISTEN", format!("127.0.0.1:{http_port}")),
        ("HERALD_PUBLIC_URL", herald_url.clone()),
        ("HERALD_DATA_DIR", data.path().display().to_string()),
        ("HERALD_DEV", "true".into()),
        ("HERALD_ALLOW_PRIVATE_HOSTS", "true".into()),
        ("HERALD_SMTP_CA_FILE", ca.display().to_string()),
        ("HERALD_RELAY_LISTEN", format!("127.0.0.1:{relay_port}")),
        ("HERALD_RELAY_CERT_FILE", cert.display().to_string()),
        ("HERALD_RELAY_KEY_FILE", key.display().to_string()),
        ("HERALD_LOG", "warn".into()),
    ]);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("serve");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("herald serve");
    let pid = child.id().unwrap();
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if client
            .get(format!("{herald_url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = herald::store::Store::connect(
        &herald::config::DatabaseUrl::parse(&format!(
            "sqlite://{}",
            data.path().join("herald.db").display()
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let actor = herald::domain::Actor::cli();
    let org = herald::services::create_org(&store, "Contoso", &actor)
        .await
        .unwrap();
    let (_, api_key) =
        herald::services::create_api_key(&store, org.id, "bench", "admin", &[], &actor)
            .await
            .unwrap();
    let api_key = api_key.expose().to_owned();
    let registration = sandbox
        .state
        .register_client("Herald", vec![format!("{herald_url}/web/um/smtp/redirect")]);
    let smtp_addr = sandbox.smtp_addr;
    let created: Value = client
        .post(format!("{herald_url}/api/v1/mailboxes"))
        .bearer_auth(&api_key)
        .json(&json!({
            "name": "Bench", "auth": "oauth2", "provider": "custom", "username": USER,
            "host": smtp_addr.ip().to_string(), "port": smtp_addr.port(), "security": "starttls",
            "authorization_url": format!("{sandbox_url}/sandbox/oauth2/v2.0/authorize"),
            "token_url": format!("{sandbox_url}/sandbox/oauth2/v2.0/token"),
            "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access"],
            "client_id": registration.client_id,
            "client_secret": registration.secret.expose_secret(),
            // Throttling off: the benchmark measures the relay, not Exchange's limits.
            "limits": {"connections": 20},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mailbox = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let started: Value = client
        .post(format!("{herald_url}/api/v1/mailboxes/{mailbox}/authorize"))
        .bearer_auth(&api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let back = consent(started["authorization_url"].as_str().unwrap()).await;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&back)
        .send()
        .await
        .unwrap();
    let credential: Value = client
        .post(format!("{herald_url}/api/v1/relay-credentials"))
        .bearer_auth(&api_key)
        .json(&json!({"name": "Bench", "mailbox": "Bench"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token_requests_before = sandbox.state.token_requests();

    let direct = Target {
        addr: smtp_addr,
        ca_pem: sandbox.ca.ca_pem().to_owned(),
        mechanism: Mechanism::Xoauth2,
        credentials: Credentials::new(
            USER.into(),
            sandbox
                .state
                .issue_access_token(
                    USER,
                    &registration.client_id,
                    vec![herald::sandbox::SMTP_SEND_SCOPE.into()],
                    time::OffsetDateTime::now_utc(),
                )
                .0
                .expose_secret()
                .to_owned(),
        ),
    };
    let relay = Target {
        addr: SocketAddr::from(([127, 0, 0, 1], relay_port)),
        ca_pem: relay_ca.ca_pem().to_owned(),
        mechanism: Mechanism::Plain,
        credentials: Credentials::new(
            credential["username"].as_str().unwrap().into(),
            credential["password"].as_str().unwrap().into(),
        ),
    };

    println!(
        "Relay benchmark: one XOAUTH2 sink; direct client vs Herald's relay (SQLite), same run."
    );
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!(
        "{:<36} {:>12} {:>12} {:>8} {:>16}",
        "mode", "direct msg/s", "herald msg/s", "ratio", "herald CPU/msg"
    );
    let modes = [
        (format!("one session x {one_session}"), 1, one_session, 1),
        (
            format!("a session per message x {per_message_sessions}"),
            per_message_sessions,
            1,
            1,
        ),
        (
            format!(
                "{concurrent} concurrent sessions x {}",
                one_session / concurrent
            ),
            concurrent,
            one_session / concurrent,
            concurrent,
        ),
    ];
    let mut cpu_per_message = Vec::new();
    for (name, sessions, per_session, concurrency) in &modes {
        let total = sessions * per_session;
        let before = sandbox.state.messages().len();
        let t = Instant::now();
        send(&direct, *sessions, *per_session, *concurrency).await;
        wait_for_sink(&sandbox, before + total).await;
        let direct_rate = total as f64 / t.elapsed().as_secs_f64();

        let before = sandbox.state.messages().len();
        let (cpu_before, _, _) = usage(pid);
        let t = Instant::now();
        send(&relay, *sessions, *per_session, *concurrency).await;
        wait_for_sink(&sandbox, before + total).await;
        let herald_rate = total as f64 / t.elapsed().as_secs_f64();
        let (cpu_after, _, _) = usage(pid);
        let cpu = (cpu_after - cpu_before).as_secs_f64() * 1000.0 / total as f64;
        cpu_per_message.push(cpu);
        println!(
            "{name:<36} {direct_rate:>12.0} {herald_rate:>12.0} {:>7.2}x {cpu:>13.3} ms",
            herald_rate / direct_rate
        );
    }
    let per_session = cpu_per_message[1] - cpu_per_message[0];
    let (_, peak, _) = usage(pid);
    println!();
    println!(
        "herald CPU per new session (TLS handshake + AUTH), beyond a message: {per_session:.3} ms"
    );
    println!("herald peak RSS: {:.1} MiB", peak as f64 / 1024.0);
    println!(
        "token requests by herald during the run: {}",
        sandbox.state.token_requests() - token_requests_before
    );

    // Idle sessions: connected, greeted, silent. 20 per client address are allowed, so they
    // come from 127.0.0.2, 127.0.0.3, ….
    let mut idle_sessions = Vec::with_capacity(idle);
    for i in 0..idle {
        let source = IpAddr::from([127, 0, (2 + i / 20 / 250) as u8, (2 + (i / 20) % 250) as u8]);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let mut stream = socket.connect(relay.addr).await.expect("an idle session");
        let mut banner = [0u8; 64];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut banner).await;
        idle_sessions.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, _, rss) = usage(pid);
    println!(
        "herald RSS with {idle} idle sessions open: {:.1} MiB",
        rss as f64 / 1024.0
    );
    drop(idle_sessions);
    let _ = child.start_kill();
    let _ = child.wait().await;
}
