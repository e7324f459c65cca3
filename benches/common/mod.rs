//! What the benchmarks share: the local XOAUTH2 sink (the sandbox), Herald in a process of its
//! own with an OAuth2 mailbox authorized through the sandbox's consent page, an SMTP client,
//! and readings of a process's CPU and memory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

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
