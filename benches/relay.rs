//! The SMTP relay's benchmark: `cargo bench --bench relay`.
//!
//! One local XOAUTH2 sink (the sandbox's SMTP server, in this process) and, side by side in
//! the same run:
//! - **direct**: a client sending to the sink itself, with an XOAUTH2 token (the limit);
//! - **herald**: the same client sending to Herald's relay (`herald serve`, a process of its
//!   own, on SQLite in a temporary directory) with AUTH PLAIN, Herald delivering to the sink
//!   through an OAuth2 mailbox;
//! - **peer**: the same client sending to email-oauth2-proxy (PyPI `emailproxy`, pinned,
//!   installed once into `target/bench/emailproxy-venv`), headless with `--local-server-auth`,
//!   its sign-in completed through the sandbox's consent page as Herald's is.
//!
//! Each rate runs until the sink has every message. Three modes: one session × N messages,
//! a new session per message, and 20 concurrent sessions. Then CPU per relayed message and
//! per new session (TLS and AUTH), the slowest session opening, peak RSS, and RSS with 1,000
//! idle sessions open. `BENCH_MESSAGES`, `BENCH_SESSIONS` and `BENCH_IDLE_SESSIONS` size it.

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

/// How long a client waits for a session to open before it gives up and tries again, as mail
/// clients do.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `count` messages in `sessions` sessions of `per_session` messages each, `concurrency`
/// at a time. Answers how long the slowest session took to open (connect, greeting, STARTTLS
/// and AUTH) and how many hung: no session within [`OPEN_TIMEOUT`], opened again.
async fn send(
    target: &Target,
    sessions: usize,
    per_session: usize,
    concurrency: usize,
) -> (Duration, usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (target, next) = (target.clone(), next.clone());
            tokio::spawn(async move {
                let (mut slowest, mut hung) = (Duration::ZERO, 0);
                loop {
                    let s = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if s >= sessions {
                        return (slowest, hung);
                    }
                    let opening = Instant::now();
                    let mut conn = loop {
                        match tokio::time::timeout(OPEN_TIMEOUT, target.session()).await {
                            Ok(conn) => break conn,
                            Err(_) => hung += 1,
                        }
                    };
                    slowest = slowest.max(opening.elapsed());
                    for k in 0..per_session {
                        let (envelope, body) = message(s * per_session + k);
                        conn.send(&envelope, &body).await.expect("250");
                    }
                    let _ = conn.quit().await;
                }
            })
        })
        .collect();
    let (mut slowest, mut hung) = (Duration::ZERO, 0);
    for w in workers {
        let (s, h) = w.await.unwrap();
        slowest = slowest.max(s);
        hung += h;
    }
    (slowest, hung)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The peer's version, pinned so that runs compare the same program.
const EMAILPROXY: &str = "emailproxy==2026.7.3";

/// email-oauth2-proxy, running headless in front of the same sink.
struct Peer {
    child: tokio::process::Child,
    target: Target,
    pid: u32,
    _dir: tempfile::TempDir,
}

/// Installs the peer into a virtual environment under `target/` (once), or says why not.
async fn peer_program() -> Result<std::path::PathBuf, String> {
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/emailproxy-venv");
    let program = venv.join("bin/emailproxy");
    if program.exists() {
        return Ok(program);
    }
    let run = |cmd: &mut std::process::Command| {
        cmd.output()
            .map_err(|e| format!("{cmd:?}: {e}"))
            .and_then(|out| {
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{cmd:?}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            })
    };
    run(std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(std::process::Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        EMAILPROXY,
    ]))?;
    Ok(program)
}

impl Peer {
    /// Starts the peer with `--no-gui --local-server-auth` and completes its sign-in the way
    /// a browser would, through the sandbox's consent page.
    async fn start(
        sandbox: &herald::sandbox::RunningSandbox,
        sandbox_url: &str,
        tls: (&std::path::Path, &std::path::Path, &str),
        sink_ca: &std::path::Path,
    ) -> Result<Self, String> {
        let program = peer_program().await?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (port, redirect_port) = (free_port(), free_port());
        let redirect = format!("http://localhost:{redirect_port}/");
        let registration = sandbox
            .state
            .register_client("email-oauth2-proxy", vec![redirect.clone()]);
        let (cert, key, ca_pem) = tls;
        let config = format!(
            "[SMTP-{port}]\n\
             local_address = 127.0.0.1\n\
             server_address = 127.0.0.1\n\
             server_port = {sink}\n\
             server_starttls = True\n\
             local_starttls = True\n\
             local_certificate_path = {cert}\n\
             local_key_path = {key}\n\
             \n\
             [{USER}]\n\
             permission_url = {sandbox_url}/sandbox/oauth2/v2.0/authorize\n\
             token_url = {sandbox_url}/sandbox/oauth2/v2.0/token\n\
             oauth2_scope = https://outlook.office.com/SMTP.Send offline_access\n\
             redirect_uri = {redirect}\n\
             client_id = {client_id}\n\
             client_secret = {secret}\n",
            sink = sandbox.smtp_addr.port(),
            cert = cert.display(),
            key = key.display(),
            client_id = registration.client_id,
            secret = registration.secret.expose_secret(),
        );
        let config_file = dir.path().join("emailproxy.config");
        std::fs::write(&config_file, config).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(&program)
            .args(["--no-gui", "--local-server-auth", "--config-file"])
            .arg(&config_file)
            .arg("--log-file")
            .arg(dir.path().join("emailproxy.log"))
            // The sink's certificate comes from the sandbox's own authority.
            .env("SSL_CERT_FILE", sink_ca)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let pid = child.id().ok_or("the peer exited at once")?;
        // It prints the sign-in address when a client first logs in.
        let stdout = child.stdout.take().ok_or("no output from the peer")?;
        let (url_tx, url_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut url_tx = Some(url_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, url)) = line.split_once(&format!("authenticate account {USER}: "))
                    && let Some(tx) = url_tx.take()
                {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                return Err("the peer never listened".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let target = Target {
            addr,
            ca_pem: ca_pem.to_owned(),
            mechanism: Mechanism::Plain,
            credentials: Credentials::new(USER.into(), "the proxy's own password".into()),
        };
        let login = {
            let target = target.clone();
            tokio::spawn(async move {
                let mut conn = target.session().await;
                let _ = conn.quit().await;
            })
        };
        let url = tokio::time::timeout(Duration::from_secs(30), url_rx)
            .await
            .map_err(|_| "the peer never asked for a sign-in")?
            .map_err(|_| "the peer stopped before asking for a sign-in")?;
        let back = consent(&url).await;
        reqwest::get(&back)
            .await
            .map_err(|e| format!("the peer's redirect receiver: {e}"))?;
        tokio::time::timeout(Duration::from_secs(60), login)
            .await
            .map_err(|_| "the peer's first login never finished")?
            .map_err(|e| format!("the peer's first login failed: {e}"))?;
        Ok(Self {
            child,
            target,
            pid,
            _dir: dir,
        })
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
    let per_message_sessions = env_usize("BENCH_SESSIONS", 200);
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
    let (http_port, relay_port) = (free_port(), free_port());
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
    let peer = match Peer::start(
        &sandbox,
        &sandbox_url,
        (&cert, &key, relay_ca.ca_pem()),
        &ca,
    )
    .await
    {
        Ok(peer) => Some(peer),
        Err(why) => {
            println!("email-oauth2-proxy is left out of this run: {why}");
            None
        }
    };
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
        "Relay benchmark: one XOAUTH2 sink; a direct client, Herald's relay (SQLite) and email-oauth2-proxy, same run."
    );
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!(
        "{:<34} {:>8} {:>8} {:>6} {:>8} {:>6}   {:>10} {:>10}   {:>18} {:>18}",
        "mode (msg/s)",
        "direct",
        "herald",
        "ratio",
        "peer",
        "ratio",
        "herald CPU",
        "peer CPU",
        "herald open/hung",
        "peer open/hung"
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
    // Messages per second, CPU per message (ms) and the slowest session opening.
    let run = |target: Target, pid: Option<u32>, mode: (usize, usize, usize)| {
        let sandbox = &sandbox;
        async move {
            let (sessions, per_session, concurrency) = mode;
            let total = sessions * per_session;
            let before = sandbox.state.messages().len();
            let cpu_before = pid.map(|p| usage(p).0);
            let t = Instant::now();
            let slowest = send(&target, sessions, per_session, concurrency).await;
            wait_for_sink(sandbox, before + total).await;
            let rate = total as f64 / t.elapsed().as_secs_f64();
            let cpu = pid
                .zip(cpu_before)
                .map(|(p, b)| (usage(p).0 - b).as_secs_f64() * 1000.0 / total as f64);
            (rate, cpu.unwrap_or(0.0), slowest)
        }
    };
    let mut herald_cpu = Vec::new();
    let mut peer_cpu = Vec::new();
    for (name, sessions, per_session, concurrency) in &modes {
        let mode = (*sessions, *per_session, *concurrency);
        let (direct_rate, _, _) = run(direct.clone(), None, mode).await;
        let (herald_rate, h_cpu, h_slow) = run(relay.clone(), Some(pid), mode).await;
        herald_cpu.push(h_cpu);
        let (peer_rate, p_cpu, p_slow) = match &peer {
            Some(peer) => run(peer.target.clone(), Some(peer.pid), mode).await,
            None => (f64::NAN, f64::NAN, (Duration::ZERO, 0)),
        };
        peer_cpu.push(p_cpu);
        println!(
            "{name:<34} {direct_rate:>8.0} {herald_rate:>8.0} {:>5.2}x {peer_rate:>8.0} {:>5.2}x   {h_cpu:>7.3} ms {p_cpu:>7.3} ms   {:>18} {:>18}",
            herald_rate / direct_rate,
            peer_rate / direct_rate,
            format!("{:.0?} / {}", h_slow.0, h_slow.1),
            format!("{:.0?} / {}", p_slow.0, p_slow.1),
        );
    }
    println!();
    println!(
        "CPU per new session (TLS handshake + AUTH), beyond a message: herald {:.3} ms, peer {:.3} ms",
        herald_cpu[1] - herald_cpu[0],
        peer_cpu[1] - peer_cpu[0]
    );
    let peak = |pid: u32| usage(pid).1 as f64 / 1024.0;
    println!(
        "peak RSS: herald {:.1} MiB, peer {:.1} MiB",
        peak(pid),
        peer.as_ref().map(|p| peak(p.pid)).unwrap_or(f64::NAN)
    );
    println!(
        "token requests by herald during the run: {}",
        sandbox.state.token_requests() - token_requests_before
    );

    let herald_idle = idle_rss(relay.addr, pid, idle).await;
    let peer_idle = match &peer {
        Some(p) => idle_rss(p.target.addr, p.pid, idle).await,
        None => f64::NAN,
    };
    println!(
        "RSS with {idle} idle sessions open: herald {herald_idle:.1} MiB, peer {peer_idle:.1} MiB"
    );
    if let Some(mut peer) = peer {
        let _ = peer.child.start_kill();
        let _ = peer.child.wait().await;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Opens `count` sessions that are greeted and then stay silent, and reads the server's RSS.
/// Herald allows 50 sessions per client address, so they come from 127.0.0.2, 127.0.0.3, ….
async fn idle_rss(addr: SocketAddr, pid: u32, count: usize) -> f64 {
    let mut sessions = Vec::with_capacity(count);
    for i in 0..count {
        let source = IpAddr::from([127, 0, (2 + i / 20 / 250) as u8, (2 + (i / 20) % 250) as u8]);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let mut stream = socket.connect(addr).await.expect("an idle session");
        let mut banner = [0u8; 64];
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut stream, &mut banner),
        )
        .await;
        sessions.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    usage(pid).2 as f64 / 1024.0
}
