//! `herald doctor`, run as a real process: each check fails on the misconfiguration it claims
//! to find, with its fix, and passes once that is fixed. The servers it reaches are all on
//! 127.0.0.1: the sandbox's SMTP server, a closed port, a name under `.invalid` (RFC 2606) and
//! a token endpoint whose clock is off.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::process::Command;

use crate::helpers::{self, TestApp, TestDb};

/// How long one `herald doctor` may take: its network checks have 10 s deadlines, run at once.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished `herald doctor` printed and how it ended.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "herald doctor exited with {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The line of the check `name` (and holding `with`, when several share the name).
    fn line(&self, name: &str, with: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.get(6..20).is_some_and(|n| n.trim() == name) && l.contains(with))
            .unwrap_or_else(|| panic!("no `{name}` line with {with:?}: {}", self.describe()))
    }

    /// Asserts the check's outcome (`OK`, `WARN`, `FAIL`, `SKIP`) and that its line holds every
    /// one of `needles`.
    fn shows(&self, outcome: &str, name: &str, with: &str, needles: &[&str]) {
        let line = self.line(name, with);
        assert!(
            line.starts_with(&format!("{outcome:<5} ")),
            "`{name}` should be {outcome}: {line}\n{}",
            self.describe()
        );
        for needle in needles {
            assert!(
                line.contains(needle),
                "`{name}` should mention {needle:?}: {line}"
            );
        }
        assert!(!self.stderr.contains("panicked"), "{}", self.describe());
    }
}

/// Runs `herald doctor` with exactly the `HERALD_*` variables of `env`.
async fn doctor(env: &BTreeMap<String, String>, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("doctor").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("herald doctor did not finish within {TIMEOUT:?}"))
        .expect("run herald doctor");
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// Runs `herald migrate` with `env`.
async fn migrate(env: &BTreeMap<String, String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
    let out = tokio::time::timeout(TIMEOUT, cmd.arg("migrate").envs(env).output())
        .await
        .expect("herald migrate finishes")
        .expect("run herald migrate");
    assert!(out.status.success(), "{out:?}");
}

/// Herald (in this process) in development mode with a known master key, the sandbox's SMTP
/// server on 127.0.0.1, an organization with an admin key, and the environment `herald
/// doctor` is given: the same database and key, the sandbox's CA in `HERALD_SMTP_CA_FILE`.
struct Installation {
    app: TestApp,
    sandbox: herald::sandbox::RunningSandbox,
    key: String,
    master_key: String,
    env: BTreeMap<String, String>,
    _dir: TempDir,
}

impl Installation {
    async fn start() -> Self {
        let master_key = herald::app::new_master_key();
        let (sandbox, _) = helpers::start_sandbox().await;
        let app = helpers::spawn_app_with(|env| {
            env.insert("HERALD_DEV".into(), "true".into());
            env.insert("HERALD_MASTER_KEY".into(), master_key.clone());
        })
        .await;
        let org = app.org("Contoso").await;
        let key = app.key(org, "admin").await;
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = dir.path().join("smtp-ca.pem");
        std::fs::write(&ca, sandbox.ca.ca_pem()).expect("write the CA file");
        let mut env = helpers::base_env(&app.db, &dir.path().join("data"));
        env.insert("HERALD_DEV".into(), "true".into());
        env.insert("HERALD_MASTER_KEY".into(), master_key.clone());
        env.insert("HERALD_SMTP_CA_FILE".into(), ca.display().to_string());
        Self {
            app,
            sandbox,
            key,
            master_key,
            env,
            _dir: dir,
        }
    }

    /// The environment with one variable changed (`None` removes it).
    fn env_with(&self, name: &str, value: Option<&str>) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        match value {
            Some(v) => env.insert(name.to_owned(), v.to_owned()),
            None => env.remove(name),
        };
        env
    }

    /// The sandbox's SMTP server, as a mailbox's host and port.
    fn smtp(&self) -> (String, u16) {
        (
            self.sandbox.smtp_addr.ip().to_string(),
            self.sandbox.smtp_addr.port(),
        )
    }

    /// A basic-auth mailbox on `host:port` with STARTTLS; answers its id.
    async fn basic_mailbox(&self, name: &str, host: &str, port: u16) -> String {
        self.create(json!({
            "name": name, "auth": "basic", "provider": "custom",
            "host": host, "port": port, "security": "starttls",
            "username": "support@contoso.com", "password": "a password",
        }))
        .await
    }

    async fn create(&self, body: Value) -> String {
        let response = self
            .app
            .client()
            .post(self.app.url("/api/v1/mailboxes"))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Points the mailbox at the sandbox's SMTP server.
    async fn repoint(&self, id: &str) {
        let (host, port) = self.smtp();
        let response = self
            .app
            .client()
            .patch(self.app.url(&format!("/api/v1/mailboxes/{id}")))
            .bearer_auth(&self.key)
            .json(&json!({"host": host, "port": port, "password": "a password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
}

#[tokio::test]
async fn doctor_refuses_a_configuration_that_does_not_load_with_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let env = BTreeMap::from([
        (
            "HERALD_DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
        ("HERALD_LISTN".to_owned(), "0.0.0.0:8080".to_owned()),
    ]);
    let out = doctor(&env, &[]).await;
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    out.shows("FAIL", "configuration", "", &["HERALD_LISTN", "fix:"]);

    let json = doctor(&env, &["--json"]).await;
    assert_eq!(json.code(), Some(2), "{}", json.describe());
    let report: Value = serde_json::from_str(&json.stdout).expect("JSON on stdout");
    assert_eq!(report["ok"], false);
    assert_eq!(report["checks"][0]["name"], "configuration");
    assert_eq!(report["checks"][0]["outcome"], "fail");
}

#[tokio::test]
async fn doctor_fails_on_an_unmigrated_database_without_migrating_it_and_passes_after_migrate() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let env = helpers::base_env(&db, dir.path());
    if let TestDb::Sqlite { dir } = &db {
        // No file at all: the doctor does not create one.
        let out = doctor(&env, &[]).await;
        assert_eq!(out.code(), Some(1), "{}", out.describe());
        out.shows(
            "FAIL",
            "database",
            "",
            &["no database file", "herald migrate"],
        );
        assert!(
            !dir.path().join("herald.db").exists(),
            "the doctor created the database"
        );
        // An empty database, as a new file is.
        std::fs::write(dir.path().join("herald.db"), b"").unwrap();
    }
    let out = doctor(&env, &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows(
        "FAIL",
        "database",
        "",
        &["migration 0 (0 of", "pending", "fix: run `herald migrate`"],
    );
    out.shows("SKIP", "master key", "", &[]);
    // Still pending: the doctor applied nothing.
    assert!(
        doctor(&env, &[])
            .await
            .line("database", "")
            .starts_with("FAIL")
    );

    migrate(&env).await;
    let out = doctor(&env, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.shows("OK", "database", "", &["applied)"]);
    out.shows("OK", "master key", "", &["none yet"]);
    out.shows("WARN", "herald serve", "", &["start `herald serve`"]);
}

#[tokio::test]
async fn doctor_fails_on_a_database_migrated_by_a_newer_herald() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let env = helpers::base_env(&db, dir.path());
    migrate(&env).await;
    let store = herald::store::Store::connect(&db.database_url())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101, 'from the future', TRUE, $1, 0)",
    )
    .bind(vec![0u8; 48])
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;
    let out = doctor(&env, &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows("FAIL", "database", "", &["newer Herald", "99990101"]);
}

#[tokio::test]
async fn doctor_names_the_key_id_a_wrong_or_missing_master_key_cannot_open() {
    let setup = Installation::start().await;
    let in_use = herald::keys::parse_key(&setup.master_key)
        .unwrap()
        .id()
        .to_string();

    let out = doctor(&setup.env, &[]).await;
    out.shows("OK", "master key", "", &[&in_use, "HERALD_MASTER_KEY"]);

    let other = herald::app::new_master_key();
    let out = doctor(&setup.env_with("HERALD_MASTER_KEY", Some(&other)), &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows("FAIL", "master key", "", &["wrong key", &in_use, "fix:"]);

    let out = doctor(&setup.env_with("HERALD_MASTER_KEY", None), &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows(
        "FAIL",
        "master key",
        "",
        &["no key", &in_use, "restore the key file"],
    );
    // The running instance reports in.
    out.shows("OK", "herald serve", "", &["running"]);
}

#[tokio::test]
async fn doctor_fails_on_a_public_url_in_plain_http_beyond_this_machine() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = helpers::base_env(&db, dir.path());
    migrate(&env).await;
    env.insert(
        "HERALD_PUBLIC_URL".into(),
        "http://herald.example.com".into(),
    );
    let out = doctor(&env, &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows(
        "FAIL",
        "public URL",
        "",
        &["plain http", "fix:", "https://"],
    );
    out.shows(
        "OK",
        "redirect URI",
        "",
        &["http://herald.example.com/web/um/smtp/redirect"],
    );

    env.insert(
        "HERALD_PUBLIC_URL".into(),
        "https://herald.example.com".into(),
    );
    let out = doctor(&env, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.shows("OK", "public URL", "", &["Secure"]);
    out.shows(
        "OK",
        "redirect URI",
        "",
        &["https://herald.example.com/web/um/smtp/redirect"],
    );
}

/// A token endpoint on 127.0.0.1 whose `Date` is `offset` seconds off; answers its URL.
async fn token_endpoint_with_clock(offset: Arc<AtomicI64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let offset = offset.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let at = herald::clock::system_now()
                    + time::Duration::seconds(offset.load(Ordering::SeqCst));
                let date = at
                    .format(time::macros::format_description!(
                        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
                    ))
                    .unwrap();
                let answer = format!(
                    "HTTP/1.1 405 Method Not Allowed\r\nDate: {date}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/contoso/oauth2/v2.0/token")
}

#[tokio::test]
async fn doctor_fails_when_the_clock_is_minutes_off_the_provider_s() {
    let setup = Installation::start().await;
    let offset = Arc::new(AtomicI64::new(10 * 60));
    let token_url = token_endpoint_with_clock(offset.clone()).await;
    let (host, port) = setup.smtp();
    setup
        .create(json!({
            "name": "Support", "auth": "oauth2", "provider": "custom",
            "host": host, "port": port, "security": "starttls",
            "username": "support@contoso.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "abc8Q~Very.Secret_Value-0123456789xyz",
            "authorization_url": token_url.replace("/token", "/authorize"),
            "token_url": token_url,
            "scopes": ["https://outlook.office.com/SMTP.Send", "offline_access"],
        }))
        .await;

    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows(
        "FAIL",
        "clock",
        "",
        &["behind 127.0.0.1", "fix:", "NTP", "AADSTS700024"],
    );

    offset.store(2 * 60, Ordering::SeqCst);
    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.shows("WARN", "clock", "", &[" min ", "behind 127.0.0.1"]);

    offset.store(0, Ordering::SeqCst);
    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.shows("OK", "clock", "", &["127.0.0.1"]);
    out.shows(
        "OK",
        "smtp",
        &host,
        &["STARTTLS, certificate verified", "Support"],
    );
}

#[tokio::test]
async fn doctor_fails_on_an_smtp_host_that_does_not_resolve() {
    let setup = Installation::start().await;
    let id = setup
        .basic_mailbox("Support", "smtp.herald-doctor.invalid", 587)
        .await;
    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows(
        "FAIL",
        "smtp",
        "smtp.herald-doctor.invalid",
        &["fix:", "Host Name", "Support"],
    );

    setup.repoint(&id).await;
    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.shows("OK", "smtp", "Support", &["certificate verified"]);
}

#[tokio::test]
async fn doctor_fails_on_an_smtp_port_where_nothing_listens() {
    let setup = Installation::start().await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let id = setup.basic_mailbox("Support", "127.0.0.1", closed).await;
    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows(
        "FAIL",
        "smtp",
        &format!("127.0.0.1:{closed}"),
        &["cannot connect", "fix:", &format!("port {closed}")],
    );

    setup.repoint(&id).await;
    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.shows("OK", "smtp", "Support", &["certificate verified"]);
}

#[tokio::test]
async fn doctor_fails_on_an_smtp_certificate_it_has_no_reason_to_trust() {
    let setup = Installation::start().await;
    let (host, port) = setup.smtp();
    setup.basic_mailbox("Support", &host, port).await;
    // Without the sandbox's CA, its certificate is anybody's.
    let out = doctor(&setup.env_with("HERALD_SMTP_CA_FILE", None), &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows(
        "FAIL",
        "smtp",
        &format!("{host}:{port}"),
        &["TLS", "fix:", "HERALD_SMTP_CA_FILE"],
    );

    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.shows(
        "OK",
        "smtp",
        &format!("{host}:{port}"),
        &["STARTTLS, certificate verified"],
    );
    // And as JSON.
    let json = doctor(&setup.env, &["--json"]).await;
    let report: Value = serde_json::from_str(&json.stdout).expect("JSON on stdout");
    assert_eq!(report["ok"], true, "{}", json.describe());
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "smtp" && c["outcome"] == "ok")
    );
}

#[tokio::test]
async fn doctor_fails_on_a_graph_host_it_cannot_reach() {
    let setup = Installation::start().await;
    let token_url = token_endpoint_with_clock(Arc::new(AtomicI64::new(0))).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let id = setup
        .create(json!({
            "name": "Reports", "auth": "oauth2", "provider": "microsoft", "tenant": "contoso.com",
            "transport": "graph", "username": "reports@contoso.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "abc8Q~Very.Secret_Value-0123456789xyz",
        }))
        .await;
    // Microsoft's hosts are not for tests: the mailbox's endpoints move to 127.0.0.1, where
    // the API, which derives them from the cloud, cannot put them.
    let repoint = |graph: String| {
        let (store, id, token_url) = (setup.app.store().clone(), id.clone(), token_url.clone());
        async move {
            sqlx::query("UPDATE mailboxes SET graph_url = $1, token_url = $2 WHERE id = $3")
                .bind(graph)
                .bind(token_url)
                .bind(id)
                .execute(store.pool())
                .await
                .unwrap();
        }
    };
    repoint(format!("http://127.0.0.1:{closed}")).await;
    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    out.shows(
        "FAIL",
        "graph",
        &format!("127.0.0.1:{closed}"),
        &["cannot reach", "fix:", "Reports"],
    );

    // Any HTTP answer will do: the token endpoint's server stands in for Graph.
    repoint(token_url.replace("/contoso/oauth2/v2.0/token", "")).await;
    let out = doctor(&setup.env, &[]).await;
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    out.shows("OK", "graph", "Reports", &["answers"]);
}
