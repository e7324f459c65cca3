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
//!   its sign-in completed through the sandbox's consent page as Herald's is;
//! - **postfix**: the same client sending to Debian's Postfix (installed with apt-get when
//!   missing), the durable reference: it answers `250` only once the queue file is fsynced.
//!   A private instance ([`Postfix`]): its own configuration, queue and data directories in a
//!   temporary directory, one loopback listener on a free port with STARTTLS on the relay's
//!   certificate and SASL PLAIN (Cyrus, a sasldb of its own), relaying everything to the sink
//!   with SASL PLAIN over STARTTLS. Stopped when the benchmark ends or panics.
//!
//! Each rate runs until the sink has every message ("delivered"); the relays' "accepted" rate
//! runs until the client has every `250`. Three modes: one session × N messages, a new session
//! per message, and 20 concurrent sessions, with lettre's client. Two client write patterns for
//! the message's content, on one session and on 20: the body and the terminating `\r\n.\r\n`
//! in one write, or in two as lettre writes them ([`common::WritePattern`]), every client with
//! `TCP_NODELAY`, so that the pattern is the only difference; the benchmark says which pattern
//! stalls a side on Nagle's algorithm and a delayed ACK (40 ms a message). Then CPU per relayed
//! message (Postfix's: all of its processes, [`common::tree_cpu`]) and per new session (TLS and
//! AUTH; the peer's includes the PBKDF2 it runs on every login, by design), the slowest session
//! opening, peak RSS, and RSS with 1,000 idle sessions open (Herald and the peer).
//! `BENCH_MESSAGES`, `BENCH_SESSIONS` and `BENCH_IDLE_SESSIONS` size it.

#[path = "common/mod.rs"]
mod common;

use common::{
    Herald, Target, USER, WritePattern, consent, env_usize, free_port, tree_cpu, usage,
    wait_for_sink,
};

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
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

/// Sends `sessions × per_session` messages in `sessions` sessions, `concurrency` at a time,
/// with the client that writes as `pattern` says. Answers how long the slowest session took
/// to open (connect, greeting, STARTTLS and AUTH) and how many hung: no session within
/// [`OPEN_TIMEOUT`], opened again.
async fn send(
    target: &Target,
    pattern: WritePattern,
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
                        match tokio::time::timeout(OPEN_TIMEOUT, target.open(pattern)).await {
                            Ok(conn) => break conn.expect("a session"),
                            Err(_) => hung += 1,
                        }
                    };
                    slowest = slowest.max(opening.elapsed());
                    for k in 0..per_session {
                        let (envelope, body) = message(s * per_session + k);
                        assert_eq!(conn.send(&envelope, &body).await, Ok(250));
                    }
                    conn.quit().await;
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

/// Runs a command to its end, or says why it failed.
fn run_command(cmd: &mut std::process::Command) -> Result<(), String> {
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

fn peer_venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/emailproxy-venv")
}

/// Installs the peer into a virtual environment under `target/` (once), or says why not.
async fn peer_program() -> Result<PathBuf, String> {
    let venv = peer_venv();
    let program = venv.join("bin/emailproxy");
    if program.exists() {
        return Ok(program);
    }
    run_command(
        std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv),
    )?;
    run_command(std::process::Command::new(venv.join("bin/pip")).args([
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

/// The PBKDF2 iterations the installed peer runs on every new login, read from its source:
/// each login builds a `Cryptographer`, which derives one key from the client's password per
/// iteration count its cached tokens may be encrypted under (its current `ITERATIONS` and
/// `LEGACY_ITERATIONS`), to decrypt and re-encrypt them. Its deliberate design: the tokens are
/// stored encrypted with a password only the client holds.
fn peer_pbkdf2_iterations() -> Option<(u64, u64)> {
    let lib = peer_venv().join("lib");
    let source = std::fs::read_dir(&lib)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/emailproxy.py"))
        .find(|p| p.exists())?;
    let source = std::fs::read_to_string(source).ok()?;
    let constant = |name: &str| {
        source.lines().find_map(|line| {
            let value = line
                .trim()
                .strip_prefix(name)?
                .trim_start()
                .strip_prefix('=')?;
            value
                .split('#')
                .next()?
                .trim()
                .replace('_', "")
                .parse::<u64>()
                .ok()
        })
    };
    Some((constant("ITERATIONS")?, constant("LEGACY_ITERATIONS")?))
}

/// Installs Debian's Postfix and Cyrus SASL tools when missing, or says why not. Debconf is
/// told "No configuration", so that the package neither writes a system configuration nor
/// means to run a system instance; the benchmark's instance has a configuration of its own.
fn install_postfix() -> Result<(), String> {
    let installed =
        || Path::new("/usr/sbin/postfix").exists() && Path::new("/usr/sbin/saslpasswd2").exists();
    if installed() {
        return Ok(());
    }
    println!("installing postfix with apt-get (once)…");
    run_command(std::process::Command::new("sh").args([
        "-c",
        "echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections",
    ]))?;
    let install = || {
        run_command(
            std::process::Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "postfix",
                    "libsasl2-modules",
                    "sasl2-bin",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        run_command(std::process::Command::new("apt-get").args(["update", "-q"]))?;
        install()?;
    }
    if installed() {
        Ok(())
    } else {
        Err("apt-get installed postfix, but /usr/sbin/postfix or saslpasswd2 is missing".into())
    }
}

/// A private Postfix instance: configuration (`etc/`), queue (`spool/`) and data (`data/`)
/// directories of its own in a temporary directory, started with `postfix -c DIR start`, so
/// that the system's `/etc/postfix` and port 25 are never touched. Its `master.cf` has one
/// listener, `127.0.0.1:PORT`, and no `smtp inet` service; every daemon runs unchrooted, so
/// that no files need copying into the queue directory.
///
/// Client SASL is Cyrus with `auxprop`/`sasldb` on a sasldb of its own (made with
/// `saslpasswd2 -f`), read through `cyrus_sasl_config_path`: no other daemon to run, unlike
/// Dovecot's SASL. Delivery goes to the sink as `relayhost`, with SASL PLAIN (the sink takes
/// the sandbox user's password, as Exchange does for basic-auth mailboxes) and
/// `smtp_tls_security_level = encrypt` with the sink's CA; connections to the relayhost are
/// kept between deliveries (`smtp_connection_cache_destinations`, Postfix's advice for a
/// relayhost), as Herald keeps its sessions to the sink. DNS is off on both sides (peer names
/// are not looked up, the relayhost is an address): this machine has no resolver to ask. The
/// rest are Postfix's defaults, fsync and in-flow control included.
struct Postfix {
    config: PathBuf,
    master: u32,
    target: Target,
    version: String,
    _dir: tempfile::TempDir,
}

/// The Postfix instance's client login: Cyrus adds the realm.
const POSTFIX_USER: &str = "relay";
const POSTFIX_PASSWORD: &str = "the postfix relay password";
const POSTFIX_HOSTNAME: &str = "bench.localhost";

impl Postfix {
    /// `tls` is the relay's certificate chain, key and CA (as Herald's relay has them),
    /// `sink_ca` the sink's authority.
    async fn start(
        tls: (&Path, &Path, &str),
        sink: SocketAddr,
        sink_ca: &Path,
    ) -> Result<Self, String> {
        install_postfix()?;
        let err = |e: std::io::Error| e.to_string();
        let dir = tempfile::tempdir().map_err(err)?;
        let root = dir.path().to_path_buf();
        // Postfix's daemons run as `postfix` and must reach the queue and data directories.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(err)?;
        let (etc, spool, data) = (root.join("etc"), root.join("spool"), root.join("data"));
        let sasl = etc.join("sasl");
        for d in [&etc, &sasl, &spool, &data] {
            std::fs::create_dir_all(d).map_err(err)?;
        }
        let (cert, key, ca_pem) = tls;
        std::fs::copy(cert, etc.join("relay.pem")).map_err(err)?;
        std::fs::copy(key, etc.join("relay.key")).map_err(err)?;
        std::fs::copy(sink_ca, etc.join("sink-ca.pem")).map_err(err)?;
        let port = free_port();
        let relayhost = format!("[{}]:{}", sink.ip(), sink.port());
        let d = |p: &Path| p.display().to_string();
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             config_directory = {etc}\n\
             queue_directory = {spool}\n\
             data_directory = {data}\n\
             maillog_file = {root}/maillog\n\
             maillog_file_prefixes = {root}\n\
             myhostname = {POSTFIX_HOSTNAME}\n\
             mydomain = localhost\n\
             mydestination =\n\
             local_recipient_maps =\n\
             local_transport = error:no local delivery here\n\
             alias_maps =\n\
             alias_database =\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.1/32\n\
             smtpd_peername_lookup = no\n\
             smtpd_relay_restrictions = permit_sasl_authenticated, reject\n\
             smtpd_tls_security_level = may\n\
             smtpd_tls_auth_only = yes\n\
             smtpd_tls_cert_file = {etc}/relay.pem\n\
             smtpd_tls_key_file = {etc}/relay.key\n\
             smtpd_tls_session_cache_database = btree:{data}/smtpd_scache\n\
             smtpd_sasl_auth_enable = yes\n\
             smtpd_sasl_type = cyrus\n\
             smtpd_sasl_path = smtpd\n\
             smtpd_sasl_local_domain = {POSTFIX_HOSTNAME}\n\
             cyrus_sasl_config_path = {sasl}\n\
             relayhost = {relayhost}\n\
             smtp_dns_support_level = disabled\n\
             smtp_connection_cache_destinations = $relayhost\n\
             smtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = texthash:{etc}/sasl_passwd\n\
             smtp_sasl_security_options = noanonymous\n\
             smtp_sasl_mechanism_filter = plain\n\
             smtp_tls_security_level = encrypt\n\
             smtp_tls_CAfile = {etc}/sink-ca.pem\n\
             smtp_tls_session_cache_database = btree:{data}/smtp_scache\n",
            etc = d(&etc),
            spool = d(&spool),
            data = d(&data),
            root = d(&root),
            sasl = d(&sasl),
        );
        // service type private unpriv chroot wakeup maxproc command
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup unix n - n 60 1 pickup\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             tlsmgr unix - - n 1000? 1 tlsmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             showq unix n - n - - showq\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(etc.join("main.cf"), main_cf).map_err(err)?;
        std::fs::write(etc.join("master.cf"), master_cf).map_err(err)?;
        std::fs::write(
            etc.join("sasl_passwd"),
            format!("{relayhost} {USER}:{}\n", common::PASSWORD),
        )
        .map_err(err)?;
        std::fs::write(
            sasl.join("smtpd.conf"),
            format!(
                "pwcheck_method: auxprop\n\
                 auxprop_plugin: sasldb\n\
                 mech_list: PLAIN\n\
                 sasldb_path: {}\n",
                d(&sasl.join("sasldb2"))
            ),
        )
        .map_err(err)?;
        let mut saslpasswd = std::process::Command::new("saslpasswd2")
            .args(["-p", "-c", "-u", POSTFIX_HOSTNAME, "-f"])
            .arg(sasl.join("sasldb2"))
            .arg(POSTFIX_USER)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("saslpasswd2: {e}"))?;
        {
            use std::io::Write as _;
            let mut stdin = saslpasswd.stdin.take().ok_or("saslpasswd2: no stdin")?;
            stdin.write_all(POSTFIX_PASSWORD.as_bytes()).map_err(err)?;
        }
        if !saslpasswd.wait().map_err(err)?.success() {
            return Err("saslpasswd2 failed".into());
        }
        // smtpd reads the sasldb as `postfix`; master.lock and the TLS caches are its too.
        run_command(
            std::process::Command::new("chown")
                .arg("postfix:")
                .arg(sasl.join("sasldb2"))
                .arg(&data),
        )?;
        // The relayhost's password: for root and Postfix's group only.
        let passwords = etc.join("sasl_passwd");
        run_command(
            std::process::Command::new("chown")
                .arg("root:postfix")
                .arg(&passwords),
        )?;
        std::fs::set_permissions(
            &passwords,
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .map_err(err)?;
        let version = std::process::Command::new("postconf")
            .args(["-d", "-h", "mail_version"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        // Its output goes to a file: the master daemon keeps what it inherits open.
        let log = std::fs::File::create(root.join("postfix.out")).map_err(err)?;
        let started = std::process::Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg("start")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(err)?)
            .stderr(log)
            .status()
            .map_err(|e| format!("postfix: {e}"))?;
        let tail = || {
            let log = std::fs::read_to_string(root.join("maillog")).unwrap_or_default();
            let lines: Vec<_> = log.lines().rev().take(3).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        };
        // From here on, Drop stops the instance, whatever happens next.
        let mut postfix = Self {
            config: etc,
            master: 0,
            target: Target {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                ca_pem: ca_pem.to_owned(),
                mechanism: Mechanism::Plain,
                credentials: Credentials::new(POSTFIX_USER.into(), POSTFIX_PASSWORD.into()),
            },
            version,
            _dir: dir,
        };
        if !started.success() {
            return Err(format!("postfix start failed: {}", tail()));
        }
        postfix.master = std::fs::read_to_string(spool.join("pid/master.pid"))
            .map_err(err)?
            .trim()
            .parse()
            .map_err(|_| "no master.pid")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(postfix.target.addr)
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(format!("postfix never listened: {}", tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(postfix)
    }
}

impl Drop for Postfix {
    /// Stops the instance (`postfix stop` waits for its master to end) before its directory
    /// goes, also when the benchmark panics.
    fn drop(&mut self) {
        let _ = std::process::Command::new("postfix")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One row of the table: how many sessions, of how many messages, how many at a time, and
/// how the client writes DATA.
struct Mode {
    name: String,
    sessions: usize,
    per_session: usize,
    concurrency: usize,
    pattern: WritePattern,
}

/// One side's run of one mode.
#[derive(Clone, Copy)]
struct Run {
    /// Messages a second until the sink had every message.
    delivered: f64,
    /// Messages a second until the client had every `250`.
    accepted: f64,
    /// The server's CPU (all its processes) per message, in ms; `None` for the direct client.
    cpu_ms: Option<f64>,
    /// The slowest session opening, and how many hung.
    slowest: (Duration, usize),
}

/// Where the client sends, and the process whose tree is the server.
struct Side {
    target: Target,
    pid: Option<u32>,
}

/// Sends one mode's messages to one side, each side into an empty sink.
async fn run(sandbox: &herald::sandbox::RunningSandbox, side: &Side, mode: &Mode) -> Run {
    let total = mode.sessions * mode.per_session;
    sandbox.state.clear_messages();
    let cpu_before = side.pid.map(tree_cpu);
    let t = Instant::now();
    let slowest = send(
        &side.target,
        mode.pattern,
        mode.sessions,
        mode.per_session,
        mode.concurrency,
    )
    .await;
    let accepted = total as f64 / t.elapsed().as_secs_f64();
    wait_for_sink(sandbox, total).await;
    let delivered = total as f64 / t.elapsed().as_secs_f64();
    let cpu_ms = side
        .pid
        .zip(cpu_before)
        .map(|(p, b)| (tree_cpu(p) - b).as_secs_f64() * 1000.0 / total as f64);
    Run {
        delivered,
        accepted,
        cpu_ms,
        slowest,
    }
}

/// A figure for the table, `-` when the side was left out.
fn cell(value: Option<f64>, decimals: usize) -> String {
    value
        .filter(|v| v.is_finite())
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a / b).filter(|r| r.is_finite())
}

fn number(value: Option<f64>) -> Value {
    value
        .filter(|v| v.is_finite())
        .map_or(Value::Null, |v| json!(v))
}

/// How many ms a message a write pattern costs beyond the other before it counts as a stall:
/// Linux delays an ACK by 40 ms at least, far above any other difference of these clients.
const STALL_MS: f64 = 20.0;

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
    let postfix =
        match Postfix::start((&cert, &key, relay_ca.ca_pem()), sandbox.smtp_addr, &ca).await {
            Ok(postfix) => Some(postfix),
            Err(why) => {
                println!("Postfix is left out of this run: {why}");
                None
            }
        };
    let token_requests_before = sandbox.state.token_requests();

    let relay = Target {
        addr: SocketAddr::from(([127, 0, 0, 1], relay_port)),
        ca_pem: relay_ca.ca_pem().to_owned(),
        mechanism: Mechanism::Plain,
        credentials: Credentials::new(
            credential["username"].as_str().unwrap().into(),
            credential["password"].as_str().unwrap().into(),
        ),
    };
    // The sides in the table's order; the peer and Postfix may be missing.
    let sides: Vec<Option<Side>> = vec![
        Some(Side {
            target: common::direct(&sandbox, &herald.client_id),
            pid: None,
        }),
        Some(Side {
            target: relay.clone(),
            pid: Some(pid),
        }),
        peer.as_ref().map(|p| Side {
            target: p.target.clone(),
            pid: Some(p.pid),
        }),
        postfix.as_ref().map(|p| Side {
            target: p.target.clone(),
            pid: Some(p.master),
        }),
    ];
    const DIRECT: usize = 0;
    const HERALD: usize = 1;
    const PEER: usize = 2;
    const POSTFIX: usize = 3;
    const NAMES: [&str; 4] = ["direct", "herald", "peer", "postfix"];

    let n = one_session;
    let per_concurrent = one_session / concurrent;
    let mode = |name: String, sessions, per_session, concurrency, pattern| Mode {
        name,
        sessions,
        per_session,
        concurrency,
        pattern,
    };
    let modes = [
        mode(format!("one session x {n}"), 1, n, 1, WritePattern::Lettre),
        mode(
            format!("one session x {n}, one write"),
            1,
            n,
            1,
            WritePattern::OneWrite,
        ),
        mode(
            format!("one session x {n}, two writes"),
            1,
            n,
            1,
            WritePattern::TwoWrites,
        ),
        mode(
            format!("a session per message x {per_message_sessions}"),
            per_message_sessions,
            1,
            1,
            WritePattern::Lettre,
        ),
        mode(
            format!("{concurrent} concurrent sessions x {per_concurrent}"),
            concurrent,
            per_concurrent,
            concurrent,
            WritePattern::Lettre,
        ),
        mode(
            format!("{concurrent} concurrent sessions x {per_concurrent}, one write"),
            concurrent,
            per_concurrent,
            concurrent,
            WritePattern::OneWrite,
        ),
    ];
    let (one, one_write, two_writes, per_message) = (0, 1, 2, 3);

    let mut runs: Vec<[Option<Run>; 4]> = Vec::new();
    for mode in &modes {
        let mut row = [None; 4];
        for (i, side) in sides.iter().enumerate() {
            if let Some(side) = side {
                row[i] = Some(run(&sandbox, side, mode).await);
            }
        }
        eprintln!("  done: {}", mode.name);
        runs.push(row);
    }
    let get = |m: usize, s: usize, f: fn(&Run) -> Option<f64>| runs[m][s].as_ref().and_then(f);
    let delivered = |r: &Run| Some(r.delivered);
    let accepted = |r: &Run| Some(r.accepted);
    let cpu = |r: &Run| r.cpu_ms;

    println!(
        "Relay benchmark: one XOAUTH2 sink; a direct client, Herald's relay (SQLite), email-oauth2-proxy and Postfix{}, same run.",
        postfix
            .as_ref()
            .map(|p| format!(" {}", p.version))
            .unwrap_or_default()
    );
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "Rows without a pattern use lettre's client (body, then terminator: two writes); \"one write\" and \"two writes\" use the bench's own client. All set TCP_NODELAY."
    );
    println!();
    println!(
        "Delivered, messages a second (until the sink has every message), and ratio to direct:"
    );
    println!(
        "{:<40} {:>7} {:>7} {:>6} {:>7} {:>6} {:>7} {:>6}",
        "mode", "direct", "herald", "ratio", "peer", "ratio", "postfix", "ratio"
    );
    for (m, mode) in modes.iter().enumerate() {
        let d = get(m, DIRECT, delivered);
        let side = |s| {
            let v = get(m, s, delivered);
            format!("{:>7} {:>5}x", cell(v, 0), cell(ratio(v, d), 2))
        };
        println!(
            "{:<40} {:>7} {} {} {}",
            mode.name,
            cell(d, 0),
            side(HERALD),
            side(PEER),
            side(POSTFIX)
        );
    }
    println!();
    println!(
        "Accepted, messages a second (until the client has every 250), and server CPU per message, ms (Postfix: all its processes):"
    );
    println!(
        "{:<40} {:>7} {:>7} {:>7}   {:>7} {:>7} {:>7} {:>7}",
        "mode", "herald", "postfix", "H/P", "herald", "peer", "postfix", "P/H"
    );
    for (m, mode) in modes.iter().enumerate() {
        let (ha, pa) = (get(m, HERALD, accepted), get(m, POSTFIX, accepted));
        let (hc, pc) = (get(m, HERALD, cpu), get(m, POSTFIX, cpu));
        println!(
            "{:<40} {:>7} {:>7} {:>6}x   {:>7} {:>7} {:>7} {:>6}x",
            mode.name,
            cell(ha, 0),
            cell(pa, 0),
            cell(ratio(ha, pa), 2),
            cell(hc, 3),
            cell(get(m, PEER, cpu), 3),
            cell(pc, 3),
            cell(ratio(pc, hc), 2),
        );
    }
    println!(
        "(H/P: Herald's accept rate over Postfix's; P/H: Postfix's CPU over Herald's. At or above 1.00 on both, Herald is at least as good as Postfix.)"
    );
    println!();
    println!("Slowest session opening / sessions hung:");
    println!(
        "{:<40} {:>14} {:>14} {:>14}",
        "mode", "herald", "peer", "postfix"
    );
    for (m, mode) in modes.iter().enumerate() {
        let open = |s: usize| {
            runs[m][s].map_or_else(
                || "-".to_owned(),
                |r| format!("{:.0?} / {}", r.slowest.0, r.slowest.1),
            )
        };
        println!(
            "{:<40} {:>14} {:>14} {:>14}",
            mode.name,
            open(HERALD),
            open(PEER),
            open(POSTFIX)
        );
    }
    println!();

    // Which write pattern stalls whom: the time a message takes on one session (to its 250)
    // with two writes, beyond one write.
    let extra: Vec<Option<f64>> = (0..4)
        .map(|s| {
            get(two_writes, s, accepted)
                .zip(get(one_write, s, accepted))
                .map(|(two, one)| 1000.0 / two - 1000.0 / one)
        })
        .collect();
    println!(
        "Write pattern, one session: ms a message with two writes beyond one write: {}",
        (0..4)
            .filter_map(|s| extra[s].map(|e| format!("{} {e:+.1}", NAMES[s])))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut stalls = Vec::new();
    for (s, e) in extra.iter().enumerate() {
        let Some(e) = *e else { continue };
        let (slow, fast) = if e >= STALL_MS {
            (WritePattern::TwoWrites, WritePattern::OneWrite)
        } else if e <= -STALL_MS {
            (WritePattern::OneWrite, WritePattern::TwoWrites)
        } else {
            continue;
        };
        println!(
            "=> the pattern \"{}\" stalls the {} {:.0} ms a message (Nagle + delayed ACK); \"{}\" does not.",
            slow.describe(),
            NAMES[s],
            e.abs(),
            fast.describe()
        );
        stalls
            .push(json!({"side": NAMES[s], "pattern": slow.describe(), "ms_per_message": e.abs()}));
    }
    if stalls.is_empty() {
        println!("=> no write pattern stalled any side in this run.");
    }
    if stalls_peer(&stalls) {
        println!(
            "   email-oauth2-proxy forwards each piece the client writes to the sink as it comes, on a socket without TCP_NODELAY: the terminator waits for the ACK of the body, which the sink delays."
        );
    }
    let pbkdf2 = peer_pbkdf2_iterations();
    match pbkdf2 {
        Some((current, legacy)) => println!(
            "The peer, by design: every new login derives its token-encryption keys from the client's password with PBKDF2-HMAC-SHA256, {} + {} = {} iterations (one key per iteration count its cached tokens may be under), to decrypt and re-encrypt its cached OAuth2 tokens.",
            thousands(current),
            thousands(legacy),
            thousands(current + legacy)
        ),
        None => println!("The peer's PBKDF2 iteration count could not be read from its source."),
    }
    let new_session: Vec<Option<f64>> = (0..4)
        .map(|s| {
            get(per_message, s, cpu)
                .zip(get(one, s, cpu))
                .map(|(a, b)| a - b)
        })
        .collect();
    println!(
        "CPU per new session (TLS handshake + AUTH), beyond a message: herald {} ms, peer {} ms, postfix {} ms",
        cell(new_session[HERALD], 3),
        cell(new_session[PEER], 3),
        cell(new_session[POSTFIX], 3)
    );
    let peak = |pid: u32| usage(pid).1 as f64 / 1024.0;
    let herald_peak = peak(pid);
    let peer_peak = peer.as_ref().map(|p| peak(p.pid));
    println!(
        "peak RSS: herald {herald_peak:.1} MiB, peer {} MiB",
        cell(peer_peak, 1)
    );
    let token_requests = sandbox.state.token_requests() - token_requests_before;
    println!("token requests by herald during the run: {token_requests}");

    let herald_idle = idle_rss(relay.addr, pid, idle).await;
    let peer_idle = match &peer {
        Some(p) => Some(idle_rss(p.target.addr, p.pid, idle).await),
        None => None,
    };
    println!(
        "RSS with {idle} idle sessions open: herald {herald_idle:.1} MiB, peer {} MiB",
        cell(peer_idle, 1)
    );

    let mut figures = serde_json::Map::new();
    for (m, mode) in modes.iter().enumerate() {
        let mut row = serde_json::Map::new();
        row.insert("pattern".into(), json!(mode.pattern.describe()));
        row.insert("sessions".into(), json!(mode.sessions));
        row.insert("messages_per_session".into(), json!(mode.per_session));
        row.insert("concurrency".into(), json!(mode.concurrency));
        let d = get(m, DIRECT, delivered);
        for (s, name) in NAMES.iter().enumerate() {
            let r = runs[m][s];
            row.insert(
                format!("{name}_per_second"),
                number(r.map(|r| r.delivered.round())),
            );
            if s == DIRECT {
                continue;
            }
            row.insert(
                format!("{name}_accepted_per_second"),
                number(r.map(|r| r.accepted.round())),
            );
            row.insert(
                format!("{name}_cpu_ms_per_message"),
                number(r.and_then(|r| r.cpu_ms)),
            );
            row.insert(
                format!("{name}_to_direct"),
                number(ratio(r.map(|r| r.delivered), d)),
            );
            row.insert(
                format!("{name}_slowest_open_ms"),
                number(r.map(|r| r.slowest.0.as_secs_f64() * 1000.0)),
            );
            row.insert(format!("{name}_hung"), json!(r.map(|r| r.slowest.1)));
        }
        row.insert(
            "herald_to_postfix_accepted".into(),
            number(ratio(get(m, HERALD, accepted), get(m, POSTFIX, accepted))),
        );
        row.insert(
            "herald_to_postfix_delivered".into(),
            number(ratio(get(m, HERALD, delivered), get(m, POSTFIX, delivered))),
        );
        row.insert(
            "postfix_to_herald_cpu".into(),
            number(ratio(get(m, POSTFIX, cpu), get(m, HERALD, cpu))),
        );
        figures.insert(mode.name.clone(), Value::Object(row));
    }
    figures.insert(
        "write_pattern_two_minus_one_ms_per_message".into(),
        Value::Object(
            (0..4)
                .map(|s| (NAMES[s].to_owned(), number(extra[s])))
                .collect(),
        ),
    );
    figures.insert("write_pattern_stalls".into(), json!(stalls));
    figures.insert(
        "peer_pbkdf2_iterations_per_login".into(),
        json!(pbkdf2.map(|(c, l)| c + l)),
    );
    figures.insert(
        "cpu_ms_per_new_session".into(),
        Value::Object(
            (1..4)
                .map(|s| (NAMES[s].to_owned(), number(new_session[s])))
                .collect(),
        ),
    );
    figures.insert("herald_peak_rss_mib".into(), json!(herald_peak));
    figures.insert("peer_peak_rss_mib".into(), number(peer_peak));
    figures.insert("herald_rss_idle_sessions_mib".into(), json!(herald_idle));
    figures.insert("peer_rss_idle_sessions_mib".into(), number(peer_idle));
    figures.insert("token_requests".into(), json!(token_requests));
    figures.insert(
        "postfix_version".into(),
        json!(postfix.as_ref().map(|p| p.version.clone())),
    );
    common::write_figures("relay", Value::Object(figures));
    drop(postfix);
    if let Some(mut peer) = peer {
        let _ = peer.child.start_kill();
        let _ = peer.child.wait().await;
    }
    herald.stop().await;
}

fn stalls_peer(stalls: &[Value]) -> bool {
    stalls.iter().any(|s| s["side"] == "peer")
}

/// 1200000 as 1,200,000.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
