//! What the benchmarks share: the local XOAUTH2 sink (the sandbox), Herald in a process of its
//! own with an OAuth2 mailbox authorized through the sandbox's consent page, SMTP clients
//! (lettre's, and a small hand-written one that can choose how DATA is written), and readings
//! of a process's CPU and memory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub const USER: &str = "bench@contoso.com";
pub const PASSWORD: &str = "the bench mailbox password";

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where to send and how to log in.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub ca_pem: String,
    pub mechanism: Mechanism,
    pub credentials: Credentials,
}

impl Target {
    pub async fn session(&self) -> AsyncSmtpConnection {
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

    /// A session of the client that writes DATA as `pattern` says.
    pub async fn open(&self, pattern: WritePattern) -> Result<Session, String> {
        match pattern {
            WritePattern::Lettre => Ok(Session::Lettre(Box::new(self.session().await))),
            WritePattern::OneWrite => RawSession::open(self, true)
                .await
                .map(|s| Session::Raw(Box::new(s))),
            WritePattern::TwoWrites => RawSession::open(self, false)
                .await
                .map(|s| Session::Raw(Box::new(s))),
        }
    }
}

/// How a client writes a message's content after `354`. Every client sets `TCP_NODELAY` the
/// same way, so that the write pattern is the only difference between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WritePattern {
    /// lettre's `AsyncSmtpConnection`: the body, then `\r\n.\r\n`, each written and flushed
    /// on its own (two TLS records, two TCP segments).
    Lettre,
    /// The hand-written client: the body and `\r\n.\r\n` in one write (one TLS record).
    OneWrite,
    /// The hand-written client writing as lettre does: the body, then `\r\n.\r\n`.
    TwoWrites,
}

impl WritePattern {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Lettre => "lettre: body, then terminator (two writes)",
            Self::OneWrite => "one write: body + terminator",
            Self::TwoWrites => "two writes: body, then terminator",
        }
    }
}

/// An open, authenticated session of either client.
pub enum Session {
    Lettre(Box<AsyncSmtpConnection>),
    Raw(Box<RawSession>),
}

impl Session {
    /// Sends one message and answers the server's final reply code (250 when accepted).
    pub async fn send(&mut self, envelope: &Envelope, body: &[u8]) -> Result<u16, String> {
        match self {
            Self::Lettre(conn) => conn
                .send(envelope, body)
                .await
                .map(|r| u16::from(r.code()))
                .map_err(|e| e.to_string()),
            Self::Raw(raw) => raw.send(envelope, body).await,
        }
    }

    pub async fn quit(self) {
        match self {
            Self::Lettre(mut conn) => {
                let _ = conn.quit().await;
            }
            Self::Raw(raw) => raw.quit().await,
        }
    }
}

/// A minimal SMTP submission client (STARTTLS, AUTH PLAIN / XOAUTH2, MAIL, RCPT, DATA), written
/// for the benchmark because no client crate lets the caller choose whether the message and
/// its terminating `.` leave in one write or two: that choice is what it measures. It speaks
/// only to the servers of this benchmark, and treats any unexpected reply as an error.
pub struct RawSession {
    stream: BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    one_write: bool,
}

/// Reads one (possibly multiline) reply and answers its code.
async fn read_reply<S: tokio::io::AsyncBufRead + Unpin>(stream: &mut S) -> Result<u16, String> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let code = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("not a reply: {line:?}"))?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

/// Writes `bytes` as one write and flushes, as lettre does for each of its writes.
async fn write<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> Result<(), String> {
    stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

/// Sends a command and checks its reply's code.
async fn command<S>(stream: &mut S, line: &str, expect: u16) -> Result<(), String>
where
    S: tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin,
{
    write(stream, line.as_bytes()).await?;
    match read_reply(stream).await? {
        code if code == expect => Ok(()),
        code => Err(format!("{}: {code}", line.trim_end())),
    }
}

impl RawSession {
    async fn open(target: &Target, one_write: bool) -> Result<Self, String> {
        use base64::Engine as _;
        use rustls::pki_types::pem::PemObject as _;
        let tcp = tokio::net::TcpStream::connect(target.addr)
            .await
            .map_err(|e| e.to_string())?;
        // The same as lettre's sessions get in `Target::session`.
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut plain = BufReader::new(tcp);
        if read_reply(&mut plain).await? != 220 {
            return Err("no greeting".into());
        }
        command(&mut plain, "EHLO bench.localhost\r\n", 250).await?;
        command(&mut plain, "STARTTLS\r\n", 220).await?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(target.ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::from(target.addr.ip());
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, plain.into_inner())
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = BufReader::new(tls);
        command(&mut stream, "EHLO bench.localhost\r\n", 250).await?;
        let initial = target
            .mechanism
            .response(&target.credentials, None)
            .map_err(|e| e.to_string())?;
        let auth = format!(
            "AUTH {} {}\r\n",
            target.mechanism,
            base64::engine::general_purpose::STANDARD.encode(initial)
        );
        command(&mut stream, &auth, 235)
            .await
            .map_err(|_| format!("AUTH {} refused", target.mechanism))?;
        Ok(Self { stream, one_write })
    }

    async fn send(&mut self, envelope: &Envelope, body: &[u8]) -> Result<u16, String> {
        let from = envelope.from().map(|a| a.to_string()).unwrap_or_default();
        command(&mut self.stream, &format!("MAIL FROM:<{from}>\r\n"), 250).await?;
        for to in envelope.to() {
            command(&mut self.stream, &format!("RCPT TO:<{to}>\r\n"), 250).await?;
        }
        command(&mut self.stream, "DATA\r\n", 354).await?;
        // Dot-stuffing, as lettre's codec does; the body's own lines end in CRLF.
        let mut data = Vec::with_capacity(body.len() + 8);
        for line in body.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if self.one_write {
            data.extend_from_slice(b"\r\n.\r\n");
            write(&mut self.stream, &data).await?;
        } else {
            write(&mut self.stream, &data).await?;
            write(&mut self.stream, b"\r\n.\r\n").await?;
        }
        read_reply(&mut self.stream).await
    }

    async fn quit(mut self) {
        let _ = command(&mut self.stream, "QUIT\r\n", 221).await;
    }
}

/// User + system CPU time of a process, and its peak and current RSS in KiB (Linux).
pub fn usage(pid: u32) -> (Duration, u64, u64) {
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

/// User + system CPU time of a process and of every process below it, living or ended: an
/// ended child's time is in its parent's `cutime` and `cstime` once the parent has reaped it,
/// as a server's master process does (Postfix's `master` with its `smtpd`, `cleanup`, `qmgr`,
/// `smtp`, … processes, which come and go).
pub fn tree_cpu(root: u32) -> Duration {
    // pid -> (parent, ticks of its own and of its reaped children)
    let mut processes = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| -> u64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
        // After the name: state, ppid (1), …, utime (11), stime, cutime, cstime (14).
        processes.insert(
            pid,
            (
                field(1) as u32,
                field(11) + field(12) + field(13) + field(14),
            ),
        );
    }
    let in_tree = |mut pid: u32| {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match processes.get(&pid) {
                Some(&(parent, _)) if parent != 0 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    let ticks: u64 = processes
        .iter()
        .filter(|(pid, _)| in_tree(**pid))
        .map(|(_, (_, ticks))| ticks)
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Waits until the sink holds `total` messages: told by the sandbox's change notification and
/// counted in O(1), so that waiting costs Herald's side of a run no more than a direct client's
/// (no copy of every stored message under the lock the sink needs to store the next one).
pub async fn wait_for_sink(sandbox: &herald::sandbox::RunningSandbox, total: usize) {
    let arrived = sandbox.state.wait_until(|s| s.message_count() >= total);
    tokio::time::timeout(Duration::from_secs(600), arrived)
        .await
        .expect("the sink never got every message");
}

/// Completes the sandbox's sign-in and consent as a browser would.
pub async fn consent(auth_url: &str) -> String {
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

/// The local XOAUTH2 sink: the sandbox, with the bench user and Exchange's limits off.
pub async fn sink() -> (herald::sandbox::RunningSandbox, String) {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://localhost:{}", http.local_addr().unwrap().port());
    let sandbox = herald::sandbox::RunningSandbox::start_on(http, smtp, &url)
        .await
        .unwrap();
    sandbox.state.add_user(USER, SecretString::from(PASSWORD));
    let mut switches = sandbox.state.switches();
    switches.messages_per_minute = u32::MAX;
    switches.max_connections_per_mailbox = 10_000;
    sandbox.state.set_switches(switches);
    (sandbox, url)
}

/// `herald serve` in a process of its own, with an organization, an admin key and the OAuth2
/// mailbox "Bench" (the sink's user, throttling off, `connections` lanes) authorized.
pub struct Herald {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub url: String,
    pub api_key: String,
    pub mailbox: String,
    /// The app registration Herald signs in with.
    pub client_id: String,
    /// The database Herald runs on, as a URL.
    pub database: String,
    pub data: tempfile::TempDir,
}

impl Herald {
    /// `database` is a URL (SQLite in the data directory when `None`); `extra` adds settings,
    /// given the data directory.
    pub async fn start(
        sandbox: &herald::sandbox::RunningSandbox,
        sandbox_url: &str,
        database: Option<String>,
        connections: u32,
        extra: impl FnOnce(&std::path::Path) -> Vec<(&'static str, String)>,
    ) -> Self {
        let data = tempfile::tempdir().unwrap();
        let ca = data.path().join("sink-ca.pem");
        std::fs::write(&ca, sandbox.ca.ca_pem()).unwrap();
        let http_port = free_port();
        let url = format!("http://127.0.0.1:{http_port}");
        let database = database
            .unwrap_or_else(|| format!("sqlite://{}", data.path().join("herald.db").display()));
        let mut env = BTreeMap::from([
            ("HERALD_LISTEN", format!("127.0.0.1:{http_port}")),
            ("HERALD_PUBLIC_URL", url.clone()),
            ("HERALD_DATA_DIR", data.path().display().to_string()),
            ("HERALD_DATABASE_URL", database.clone()),
            ("HERALD_DEV", "true".into()),
            ("HERALD_ALLOW_PRIVATE_HOSTS", "true".into()),
            ("HERALD_SMTP_CA_FILE", ca.display().to_string()),
            ("HERALD_LOG", "warn".into()),
            // A throughput benchmark, not one of the per-key rate limit.
            ("HERALD_API_RATE_PER_MINUTE", "1000000".into()),
        ]);
        env.extend(extra(data.path()));
        // `BENCH_HERALD_BIN` runs another build (an earlier commit's, to compare).
        let bin = std::env::var_os("BENCH_HERALD_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_herald").into());
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("serve");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("HERALD_") {
                cmd.env_remove(name);
            }
        }
        let child = cmd
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("herald serve");
        let pid = child.id().unwrap();
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "herald serve never got ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let store =
            herald::store::Store::connect(&herald::store::DatabaseUrl::parse(&database).unwrap())
                .await
                .unwrap();
        let actor = herald::domain::Actor::cli();
        let org =
            herald::services::create_org(&store, "Contoso", &actor, herald::clock::system_now())
                .await
                .unwrap();
        let (_, api_key) = herald::services::create_api_key(
            &store,
            org.id,
            "bench",
            "admin",
            &[],
            &actor,
            herald::clock::system_now(),
        )
        .await
        .unwrap();
        let api_key = api_key.expose().to_owned();
        let registration = sandbox
            .state
            .register_client("Herald", vec![format!("{url}/web/um/smtp/redirect")]);
        let smtp_addr = sandbox.smtp_addr;
        let created: Value = client
            .post(format!("{url}/api/v1/mailboxes"))
            .bearer_auth(&api_key)
            .json(&json!({
                "name": "Bench", "auth": "oauth2", "provider": "custom", "username": USER,
                "host": smtp_addr.ip().to_string(), "port": smtp_addr.port(), "security": "starttls",
                "authorization_url": format!("{sandbox_url}/sandbox/oauth2/v2.0/authorize"),
                "token_url": format!("{sandbox_url}/sandbox/oauth2/v2.0/token"),
                "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access"],
                "client_id": registration.client_id,
                "client_secret": registration.secret.expose_secret(),
                // Throttling off: the benchmarks measure Herald, not Exchange's limits.
                "limits": {"connections": connections},
                "default": true,
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
            .post(format!("{url}/api/v1/mailboxes/{mailbox}/authorize"))
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
        Self {
            child,
            pid,
            url,
            api_key,
            mailbox,
            client_id: registration.client_id,
            database,
            data,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A client sending straight to the sink with a token the sandbox issued (the limit).
pub fn direct(sandbox: &herald::sandbox::RunningSandbox, client_id: &str) -> Target {
    Target {
        addr: sandbox.smtp_addr,
        ca_pem: sandbox.ca.ca_pem().to_owned(),
        mechanism: Mechanism::Xoauth2,
        credentials: Credentials::new(
            USER.into(),
            sandbox
                .state
                .issue_access_token(
                    USER,
                    client_id,
                    vec![herald::sandbox::SMTP_SEND_SCOPE.into()],
                    herald::clock::system_now(),
                )
                .0
                .expose_secret()
                .to_owned(),
        ),
    }
}

/// Writes a benchmark's figures to `target/bench/NAME.json` (or under `CARGO_TARGET_DIR`).
pub fn write_figures(name: &str, figures: Value) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench");
    let path = dir.join(format!("{name}.json"));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&figures).unwrap_or_default(),
        )
    });
    match written {
        Ok(()) => println!("\nfigures written to {}", path.display()),
        Err(e) => println!("\ncould not write {}: {e}", path.display()),
    }
}
