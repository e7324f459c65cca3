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

#[path = "common/mod.rs"]
mod common;

use common::{Herald, Target, USER, consent, env_usize, free_port, usage, wait_for_sink};

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    herald::tls::install_crypto_provider();
    let one_session = env_usize("BENCH_MESSAGES", 2_000);
    let per_message_sessions = env_usize("BENCH_SESSIONS", 200);
    let concurrent = 20;
    let idle = env_usize("BENCH_IDLE_SESSIONS", 1_000);

    // The sink, and Herald with its relay.
    let (sandbox, sandbox_url) = common::sink().await;
    let relay_ca = herald::tls::LocalCa::generate("Bench", &["127.0.0.1".to_owned()]).unwrap();
    let relay_port = free_port();
    let herald = Herald::start(&sandbox, &sandbox_url, None, 20, |data| {
        let (cert, key) = (data.join("relay.pem"), data.join("relay.key"));
        std::fs::write(&cert, relay_ca.chain_pem()).unwrap();
        std::fs::write(&key, relay_ca.key_pem()).unwrap();
        vec![
            ("HERALD_RELAY_LISTEN", format!("127.0.0.1:{relay_port}")),
            ("HERALD_RELAY_CERT_FILE", cert.display().to_string()),
            ("HERALD_RELAY_KEY_FILE", key.display().to_string()),
        ]
    })
    .await;
    let pid = herald.pid;
    let (cert, key) = (
        herald.data.path().join("relay.pem"),
        herald.data.path().join("relay.key"),
    );
    let ca = herald.data.path().join("sink-ca.pem");
    let client = reqwest::Client::new();
    let credential: Value = client
        .post(format!("{}/api/v1/relay-credentials", herald.url))
        .bearer_auth(&herald.api_key)
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

    let direct = common::direct(&sandbox, &herald.client_id);
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
            // Each side into an empty sink.
            sandbox.state.clear_messages();
            let before = 0;
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
    let mut figures = serde_json::Map::new();
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
        figures.insert(
            name.clone(),
            json!({
                "direct_per_second": direct_rate.round(),
                "herald_per_second": herald_rate.round(),
                "herald_cpu_ms_per_message": h_cpu,
                "peer_per_second": if peer_rate.is_nan() { Value::Null } else { json!(peer_rate.round()) },
                "peer_cpu_ms_per_message": if p_cpu.is_nan() { Value::Null } else { json!(p_cpu) },
            }),
        );
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
    figures.insert("herald_peak_rss_mib".into(), json!(peak(pid)));
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
    figures.insert("herald_rss_idle_sessions_mib".into(), json!(herald_idle));
    common::write_figures("relay", Value::Object(figures));
    if let Some(mut peer) = peer {
        let _ = peer.child.start_kill();
        let _ = peer.child.wait().await;
    }
    herald.stop().await;
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
