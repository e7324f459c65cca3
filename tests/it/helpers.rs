//! The test harness: a fresh database per test (an SQLite file in a temporary directory, or a
//! new PostgreSQL database when `TEST_POSTGRES_URL` is set), and the real application serving
//! real HTTP on a random loopback port.

use std::collections::BTreeMap;
use std::path::Path;

use herald::app::App;
use herald::config::Config;
use herald::domain::{Actor, MailboxId, OrgId, User};
use herald::services::{self, NewUserInput};
use herald::store::{DatabaseUrl, Store};
use herald::web::AppState;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Environment variable with an admin URL of a PostgreSQL server; when set, every test gets
/// its own new database there instead of an SQLite file.
pub const POSTGRES_ENV: &str = "TEST_POSTGRES_URL";

pub const PASSWORD: &str = "correct horse battery staple";

/// A database that exists for one test only.
pub enum TestDb {
    Sqlite {
        dir: TempDir,
    },
    Postgres {
        admin_url: String,
        name: String,
    },
    /// Another instance's database, which that instance owns and drops.
    Shared {
        url: String,
    },
}

impl TestDb {
    pub async fn new() -> Self {
        sqlx::any::install_default_drivers();
        match std::env::var(POSTGRES_ENV) {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::AnyConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create a test database");
                conn.close().await.ok();
                Self::Postgres { admin_url, name }
            }
            _ => Self::Sqlite {
                dir: tempfile::tempdir().expect("temporary directory"),
            },
        }
    }

    /// The URL Herald is configured with.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite { dir } => format!("sqlite://{}", dir.path().join("herald.db").display()),
            Self::Postgres { admin_url, name } => {
                let mut url = url::Url::parse(admin_url).expect("admin URL");
                url.set_path(name);
                url.to_string()
            }
            Self::Shared { url } => url.clone(),
        }
    }

    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url()).expect("test database URL")
    }

    /// Every byte the database keeps on disk for this test: the SQLite file with its WAL, or the
    /// PostgreSQL database's directory after a checkpoint.
    pub async fn raw_bytes(&self) -> Vec<u8> {
        match self {
            Self::Sqlite { dir } => {
                let mut bytes = Vec::new();
                for name in ["herald.db", "herald.db-wal"] {
                    if let Ok(b) = std::fs::read(dir.path().join(name)) {
                        bytes.extend(b);
                    }
                }
                bytes
            }
            Self::Postgres { admin_url, name } => {
                let mut conn = sqlx::AnyConnection::connect(admin_url)
                    .await
                    .expect("admin connection");
                sqlx::query("CHECKPOINT")
                    .execute(&mut conn)
                    .await
                    .expect("checkpoint");
                let row: (String, i64) = sqlx::query_as(
                    "SELECT current_setting('data_directory'), oid::bigint FROM pg_database WHERE datname = $1",
                )
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .expect("database directory");
                let dir = Path::new(&row.0).join("base").join(row.1.to_string());
                let mut bytes = Vec::new();
                for entry in std::fs::read_dir(&dir)
                    .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
                {
                    let path = entry.expect("dir entry").path();
                    if path.is_file() {
                        bytes.extend(std::fs::read(&path).expect("read relation file"));
                    }
                }
                bytes
            }
            Self::Shared { .. } => Vec::new(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside any async context guarantee: use a runtime of our own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut conn = sqlx::AnyConnection::connect(&admin_url).await.ok()?;
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await
                    .ok()
                })
            })
            .join();
        }
    }
}

/// The environment a test's Herald is configured from.
pub fn base_env(db: &TestDb, data_dir: &Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("HERALD_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ("HERALD_DATA_DIR".to_owned(), data_dir.display().to_string()),
        ("HERALD_DATABASE_URL".to_owned(), db.url()),
        ("HERALD_LOG".to_owned(), "warn".to_owned()),
    ])
}

/// Herald serving real HTTP on a random port, with its own database.
pub struct TestApp {
    pub base: String,
    /// The SMTP relay's STARTTLS and implicit-TLS addresses, when configured.
    pub relay_addr: Option<std::net::SocketAddr>,
    pub relay_tls_addr: Option<std::net::SocketAddr>,
    /// How many relay sessions are open, when the relay listens.
    pub relay_sessions: Option<tokio::sync::watch::Receiver<usize>>,
    pub state: AppState,
    pub db: TestDb,
    /// Holds the data directory until the test ends.
    _data_dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app after letting the test adjust its environment.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut BTreeMap<String, String>)) -> TestApp {
    spawn(
        adjust,
        None,
        std::sync::Arc::new(herald::clock::SystemClock),
    )
    .await
}

/// A running sandbox provider (authorization server and SMTP server) on loopback ports, and
/// Herald offering the `sandbox` provider pointed at it, in development mode.
pub async fn spawn_app_with_sandbox() -> (TestApp, herald::sandbox::RunningSandbox) {
    spawn_app_with_sandbox_on(std::sync::Arc::new(herald::clock::SystemClock)).await
}

/// Like [`spawn_app_with_sandbox`], with the outbox on the given clock.
pub async fn spawn_app_with_sandbox_on(
    clock: std::sync::Arc<dyn herald::clock::Clock>,
) -> (TestApp, herald::sandbox::RunningSandbox) {
    spawn_sandboxed(clock, |_| {}).await
}

/// Like [`spawn_app_with_sandbox`], after letting the test adjust the environment.
pub async fn spawn_sandboxed(
    clock: std::sync::Arc<dyn herald::clock::Clock>,
    adjust: impl FnOnce(&mut BTreeMap<String, String>),
) -> (TestApp, herald::sandbox::RunningSandbox) {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let smtp = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let base = format!("http://localhost:{}", http.local_addr().unwrap().port());
    let sandbox = herald::sandbox::RunningSandbox::start_on(http, smtp, &base)
        .await
        .expect("start the sandbox");
    let preset = preset_of(&sandbox);
    let app = spawn(
        |env| {
            env.insert("HERALD_DEV".into(), "true".into());
            adjust(env);
        },
        Some((preset, sandbox.state.clone())),
        clock,
    )
    .await;
    (app, sandbox)
}

/// Herald in development mode offering the `sandbox` provider of a sandbox the test started
/// itself (on a clock of its own, say), after letting the test adjust the environment.
pub async fn spawn_beside(
    sandbox: &herald::sandbox::RunningSandbox,
    adjust: impl FnOnce(&mut BTreeMap<String, String>),
) -> TestApp {
    spawn(
        |env| {
            env.insert("HERALD_DEV".into(), "true".into());
            adjust(env);
        },
        Some((preset_of(sandbox), sandbox.state.clone())),
        std::sync::Arc::new(herald::clock::SystemClock),
    )
    .await
}

/// Like [`spawn_app_with_sandbox_on`], with the sandbox on the same clock as Herald: a
/// simulated clock then moves both (a device code's polls, its expiry).
pub async fn spawn_sandboxed_sharing(
    clock: std::sync::Arc<dyn herald::clock::Clock>,
) -> (TestApp, herald::sandbox::RunningSandbox) {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let smtp = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let base = format!("http://localhost:{}", http.local_addr().unwrap().port());
    let sandbox =
        herald::sandbox::RunningSandbox::start_with_clock(http, smtp, &base, clock.clone())
            .await
            .expect("start the sandbox");
    let preset = preset_of(&sandbox);
    let app = spawn(
        |env| {
            env.insert("HERALD_DEV".into(), "true".into());
        },
        Some((preset, sandbox.state.clone())),
        clock,
    )
    .await;
    (app, sandbox)
}

/// The outbox's pace in tests: connections close as soon as the queue is empty, and retries
/// and back-offs take a second instead of half a minute.
pub fn test_tuning() -> herald::outbox::Tuning {
    herald::outbox::Tuning {
        poll: std::time::Duration::from_millis(100),
        linger: std::time::Duration::ZERO,
        retry_base: time::Duration::seconds(1),
        retry_max: time::Duration::seconds(2),
        backoff_base_ms: 1_000,
        keepalive_check: std::time::Duration::from_millis(200),
        alert_poll: std::time::Duration::from_millis(100),
        secret_check: std::time::Duration::from_millis(200),
        ..Default::default()
    }
}

async fn spawn(
    adjust: impl FnOnce(&mut BTreeMap<String, String>),
    sandbox: Option<(
        herald::domain::presets::SandboxPreset,
        std::sync::Arc<herald::sandbox::SandboxState>,
    )>,
    clock: std::sync::Arc<dyn herald::clock::Clock>,
) -> TestApp {
    spawn_on(TestDb::new().await, None, adjust, sandbox, clock).await
}

/// A second instance of `first`'s installation: the same database and data directory (its
/// keys), its own HTTP port, outbox and caches, as another `herald serve` would have.
pub async fn spawn_instance_of(
    first: &TestApp,
    sandbox: &herald::sandbox::RunningSandbox,
    clock: std::sync::Arc<dyn herald::clock::Clock>,
) -> TestApp {
    another_instance(first, sandbox, |_| {}, clock).await
}

/// The sandbox preset Herald is given for `sandbox`.
fn preset_of(sandbox: &herald::sandbox::RunningSandbox) -> herald::domain::presets::SandboxPreset {
    herald::domain::presets::SandboxPreset {
        base_url: sandbox.oauth.base_url.clone(),
        tenant: sandbox.oauth.tenant.clone(),
        smtp_host: sandbox.smtp_addr.ip().to_string(),
        smtp_port: sandbox.smtp_addr.port(),
        ca_pem: sandbox.ca.ca_pem().to_owned(),
    }
}

async fn another_instance(
    first: &TestApp,
    sandbox: &herald::sandbox::RunningSandbox,
    adjust: impl FnOnce(&mut BTreeMap<String, String>),
    clock: std::sync::Arc<dyn herald::clock::Clock>,
) -> TestApp {
    spawn_on(
        TestDb::Shared {
            url: first.db.url(),
        },
        Some(first._data_dir.path().to_owned()),
        |env| {
            env.insert("HERALD_DEV".into(), "true".into());
            adjust(env);
        },
        Some((preset_of(sandbox), sandbox.state.clone())),
        clock,
    )
    .await
}

async fn spawn_on(
    db: TestDb,
    shared_data_dir: Option<std::path::PathBuf>,
    adjust: impl FnOnce(&mut BTreeMap<String, String>),
    sandbox: Option<(
        herald::domain::presets::SandboxPreset,
        std::sync::Arc<herald::sandbox::SandboxState>,
    )>,
    clock: std::sync::Arc<dyn herald::clock::Clock>,
) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local address");
    let mut env = base_env(&db, shared_data_dir.as_deref().unwrap_or(data_dir.path()));
    env.insert("HERALD_PUBLIC_URL".into(), format!("http://{addr}"));
    adjust(&mut env);
    let config = Config::load(None, &env).expect("test configuration");
    let mut app = App::build_on(config, listener)
        .await
        .expect("build the app");
    if let Some((preset, state)) = sandbox {
        app = app.with_sandbox(preset, state);
    }
    app = app.with_outbox(clock, test_tuning());
    let state = app.state().clone();
    let (relay_addr, relay_tls_addr) = (app.relay_addr(), app.relay_tls_addr());
    let relay_sessions = app.relay_sessions();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.serve(async {
            let _ = rx.await;
        })
        .await
        .expect("server runs");
    });
    TestApp {
        relay_addr,
        relay_sessions,
        relay_tls_addr,
        base: format!("http://{addr}"),
        state,
        db,
        _data_dir: data_dir,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    pub fn store(&self) -> &Store {
        &self.state.access.store
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client that keeps cookies and does not follow redirects, like a browser seen step by step.
    pub fn browser(&self) -> reqwest::Client {
        crate::helpers::http_builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client")
    }

    /// A client without cookies, for API keys.
    pub fn client(&self) -> reqwest::Client {
        crate::helpers::http_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client")
    }

    pub async fn org(&self, name: &str) -> OrgId {
        services::create_org(
            self.store(),
            name,
            &Actor::cli(),
            herald::clock::system_now(),
        )
        .await
        .expect("create organization")
        .id
    }

    pub async fn user(&self, org: OrgId, email: &str, role: &str) -> User {
        services::create_user(
            self.store(),
            org,
            NewUserInput {
                email: email.into(),
                password: SecretString::from(PASSWORD),
                role: role.into(),
            },
            &Actor::cli(),
            herald::clock::system_now(),
        )
        .await
        .expect("create user")
    }

    /// A new API key's secret.
    pub async fn key(&self, org: OrgId, role: &str) -> String {
        let (_, token) = services::create_api_key(
            self.store(),
            org,
            "test key",
            role,
            &[],
            &Actor::cli(),
            herald::clock::system_now(),
        )
        .await
        .expect("create API key");
        token.expose().to_owned()
    }

    /// Signs in through the login form; answers the final response (a redirect on success).
    pub async fn sign_in(
        &self,
        browser: &reqwest::Client,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        let page = browser
            .get(self.url("/login"))
            .send()
            .await
            .expect("GET /login");
        assert_eq!(page.status(), 200);
        let csrf = hidden_field(&page.text().await.expect("login page"), "csrf_token");
        browser
            .post(self.url("/login"))
            .form(&[
                ("email", email),
                ("password", password),
                ("csrf_token", &csrf),
                ("next", "/"),
            ])
            .send()
            .await
            .expect("POST /login")
    }

    /// Signs in and returns the session's CSRF token, read from the home page.
    pub async fn signed_in(&self, email: &str) -> (reqwest::Client, String) {
        let browser = self.browser();
        let response = self.sign_in(&browser, email, PASSWORD).await;
        assert_eq!(response.status(), 303, "sign-in should redirect");
        let home = browser.get(self.url("/")).send().await.expect("GET /");
        assert_eq!(home.status(), 200);
        let csrf = hidden_field(&home.text().await.expect("home page"), "csrf_token");
        (browser, csrf)
    }

    /// Shuts the server down cleanly; the database and the data directory stay until what it
    /// returns is dropped.
    pub async fn stop(mut self) -> (TestDb, TempDir) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        // A test still holding a pooled connection would make close() wait for ever.
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.state.access.store.close(),
        )
        .await;
        assert!(
            closed.is_ok(),
            "the test still holds a database connection: drop it before stop()"
        );
        (self.db, self._data_dir)
    }
}

/// The value of a hidden form field in an HTML page.
pub fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no field {name} in page:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

/// Asserts a problem+json response and returns its body.
pub async fn problem(response: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: serde_json::Value = response.json().await.expect("problem body");
    assert_eq!(body["code"], code, "problem: {body}");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string() && body["detail"].is_string() && body["type"].is_string());
    body
}

/// Walks the sandbox's sign-in and consent pages like a browser: opens `auth_url`, signs in as
/// `user`, and answers the consent page with `decision` (`accept` or `cancel`). Returns the
/// final response, a redirect to the client on success.
pub async fn sandbox_consent(
    auth_url: &str,
    user: &str,
    password: &str,
    decision: &str,
) -> reqwest::Response {
    let browser = crate::helpers::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = browser
        .get(auth_url)
        .send()
        .await
        .expect("open the authorization URL");
    assert_eq!(page.status(), 200, "the sandbox shows its sign-in form");
    let html = page.text().await.unwrap();
    let txn = hidden_field(&html, "txn");
    let base = url::Url::parse(auth_url).unwrap();
    let tenant = base
        .path_segments()
        .and_then(|mut s| s.next())
        .unwrap()
        .to_owned();
    let consent = browser
        .post(base.join(&format!("/{tenant}/login")).unwrap())
        .form(&[
            ("txn", txn.as_str()),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(consent.contains("Permissions requested"), "{consent}");
    browser
        .post(base.join(&format!("/{tenant}/consent")).unwrap())
        .form(&[("txn", txn.as_str()), ("decision", decision)])
        .send()
        .await
        .unwrap()
}

/// A reqwest client builder for tests, after installing the process's TLS crypto provider
/// (Herald builds everything on ring and installs it once, as the product does).
pub fn http_builder() -> reqwest::ClientBuilder {
    herald::tls::install_crypto_provider();
    reqwest::Client::builder()
}

/// A Microsoft 365 OAuth2 mailbox created over the API (not authorized).
pub async fn mailbox(app: &TestApp, key: &str, name: &str, username: &str) -> MailboxId {
    let created = app
        .client()
        .post(app.url("/api/v1/mailboxes"))
        .bearer_auth(key)
        .json(&json!({
            "name": name,
            "auth": "oauth2",
            "provider": "microsoft",
            "tenant": "contoso.com",
            "username": username,
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": "abc8Q~Very.Secret_Value-0123456789xyz",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    body["id"].as_str().unwrap().parse().unwrap()
}

/// A page of the web UI: its status and HTML.
pub async fn page(browser: &reqwest::Client, app: &TestApp, path: &str) -> (u16, String) {
    let response = browser.get(app.url(path)).send().await.unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

/// The organization Contoso with an admin, a member and two mailboxes, Support and Billing.
pub struct Contoso {
    pub org: OrgId,
    pub support: MailboxId,
    pub billing: MailboxId,
}

pub async fn contoso(app: &TestApp) -> Contoso {
    let org = app.org("Contoso").await;
    app.user(org, "admin@contoso.com", "admin").await;
    app.user(org, "member@contoso.com", "member").await;
    let key = app.key(org, "admin").await;
    let support = mailbox(app, &key, "Support", "support@contoso.com").await;
    let billing = mailbox(app, &key, "Billing", "billing@contoso.com").await;
    Contoso {
        org,
        support,
        billing,
    }
}

/// Another instance of `first`'s installation, like [`spawn_instance_of`], with its environment
/// adjusted: for a setting that names a record made through `first` (`HERALD_DEFAULT_SENDER`).
pub async fn spawn_instance_with(
    first: &TestApp,
    sandbox: &herald::sandbox::RunningSandbox,
    adjust: impl FnOnce(&mut BTreeMap<String, String>),
) -> TestApp {
    another_instance(
        first,
        sandbox,
        adjust,
        std::sync::Arc::new(herald::clock::SystemClock),
    )
    .await
}

/// How long a test waits for something that should happen soon: generous, so that a loaded CI
/// machine is no failure, since a wait that succeeds ends as soon as the thing happens.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

/// Awaits `cond` until it holds, looking again every 20 ms; panics with `what` if it still
/// does not after [`PATIENCE`]. For what the test can only look at (the API, the database);
/// where the product announces a change, wait on that instead ([`within`]).
pub async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, PATIENCE, cond).await;
}

/// Like [`eventually`], with a patience of its own: for what takes long even on a quiet
/// machine (hundreds of messages to send).
pub async fn eventually_within<F, Fut>(what: &str, patience: std::time::Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + patience;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {patience:?} for {what}"
        );
        // The one pause of the tests: between looks at what announces no change.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Awaits `event`, or panics with `what` after [`PATIENCE`].
pub async fn within<T>(what: &str, event: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, event)
        .await
        .unwrap_or_else(|_| panic!("waited {PATIENCE:?} for {what}"))
}

/// Waits until the sandbox's state satisfies `cond` (it announces each change of its counters
/// and received mail), or panics with `what` after [`PATIENCE`].
pub async fn sandbox_until(
    sandbox: &herald::sandbox::SandboxState,
    what: &str,
    cond: impl Fn(&herald::sandbox::SandboxState) -> bool,
) {
    within(what, sandbox.wait_until(cond)).await;
}

/// Waits until a background job counting its passes in `passes` has completed `n` more than
/// it had when called. Two passes after something happened mean the job has looked at least
/// once since: the first may have begun before.
pub async fn passes(passes: &mut tokio::sync::watch::Receiver<u64>, n: u64, what: &str) {
    let from = *passes.borrow_and_update();
    within(what, passes.wait_for(|done| *done >= from + n))
        .await
        .expect("the job's counter is kept as long as the outbox");
}

/// Creates the organization "Contoso" and an admin API key called `key_name` directly in the
/// database, as the CLI would: for tests that run `herald serve` as a process of its own.
/// Answers the store and the key's token.
pub async fn contoso_in(database_url: &DatabaseUrl, key_name: &str) -> (Store, String) {
    let store = Store::connect(database_url).await.unwrap();
    let actor = Actor::cli();
    let now = herald::clock::system_now();
    let org = services::create_org(&store, "Contoso", &actor, now)
        .await
        .unwrap();
    let (_, key) = services::create_api_key(&store, org.id, key_name, "admin", &[], &actor, now)
        .await
        .unwrap();
    (store, key.expose().to_owned())
}

/// A sandbox on loopback ports at `http://localhost:{port}`: another site than Herald's
/// `127.0.0.1`, as Microsoft is to the browser. Answers it and its base URL.
pub async fn start_sandbox() -> (herald::sandbox::RunningSandbox, String) {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", http.local_addr().unwrap().port());
    let sandbox = herald::sandbox::RunningSandbox::start_on(http, smtp, &base)
        .await
        .unwrap();
    (sandbox, base)
}
