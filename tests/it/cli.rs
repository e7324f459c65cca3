//! The `herald` command, run as a real process against a database and a data directory of its
//! own: help, organizations, users, API keys, configuration errors, `serve`, and the master key
//! (its file, a wrong or missing key, rotation with a key file and with `HERALD_MASTER_KEY`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use herald::config::Config;
use herald::crypto::{token_digest, verify_password};
use herald::domain::{ApiKeyToken, EmailAddress, KeyRole, OrgId, UserRole};
use herald::keys::{self, KeySource};
use herald::secrets::KeyRing;
use herald::store::{self, Store};
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::Row as _;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::helpers::{self, PASSWORD, TestDb};

/// How long any one `herald` run, or any one line from `herald serve`, may take.
const TIMEOUT: Duration = Duration::from_secs(30);

const SECRET_OWNER: &str = "mailbox-1";
const SECRET_FIELD: &str = "password";
const SECRET_TEXT: &str = "the mailbox password, sealed";

/// A `herald` command with exactly the `HERALD_*` variables of `env`: every inherited one is
/// removed, since Herald refuses variables it does not know.
fn herald(env: &BTreeMap<String, String>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args);
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
    cmd
}

/// What a finished `herald` run printed and how it ended.
struct Run {
    command: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "`herald {}` exited with {}\n--- stdout\n{}--- stderr\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }

    /// Asserts success and answers stdout.
    fn succeeds(&self) -> &str {
        assert!(
            self.status.success(),
            "expected success: {}",
            self.describe()
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.describe());
        &self.stdout
    }

    /// Asserts a clean failure (non-zero, no panic) whose stderr holds every one of `needles`.
    fn fails_with(&self, needles: &[&str]) {
        assert!(
            !self.status.success(),
            "expected failure: {}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("panicked"),
            "herald panicked: {}",
            self.describe()
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr should mention {needle:?}: {}",
                self.describe()
            );
        }
    }

    /// Asserts the refusal of a bad configuration: exit status 2, naming `needles`.
    fn refuses_configuration(&self, needles: &[&str]) {
        self.fails_with(needles);
        assert_eq!(self.status.code(), Some(2), "{}", self.describe());
        assert!(self.stdout.is_empty(), "{}", self.describe());
    }
}

/// Runs `herald args` to completion, writing `stdin` (if any) to its standard input.
async fn run(env: &BTreeMap<String, String>, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = herald(env, args);
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("start herald");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // The command may exit without reading (a refused configuration): ignore a broken pipe.
        let _ = pipe.write_all(input.as_bytes()).await;
        drop(pipe);
    }
    let command = args.join(" ");
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`herald {command}` did not finish within {TIMEOUT:?}"))
        .expect("wait for herald");
    Run {
        command,
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// `herald serve` running as a child process, killed when dropped.
struct Server {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl Server {
    /// Starts `herald serve` and waits for its `Herald is listening on …` line.
    async fn start(env: &BTreeMap<String, String>) -> (Self, String) {
        let mut child = herald(env, &["serve"]).spawn().expect("start herald serve");
        let stdout = child.stdout.take().expect("stdout pipe");
        let mut server = Self {
            child,
            lines: BufReader::new(stdout).lines(),
            port: 0,
        };
        let first = server.next_line().await;
        let rest = first
            .strip_prefix("Herald is listening on http://127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected first line from herald serve: {first:?}"));
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        server.port = digits
            .parse()
            .unwrap_or_else(|_| panic!("no port in {first:?}"));
        assert_ne!(server.port, 0, "{first}");
        (server, first)
    }

    /// The next line of stdout; fails when the server exits or stays silent for too long.
    async fn next_line(&mut self) -> String {
        match tokio::time::timeout(TIMEOUT, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let _ = self.child.start_kill();
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = tokio::time::timeout(
                        TIMEOUT,
                        tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut stderr),
                    )
                    .await;
                }
                panic!("herald serve closed its output; stderr:\n{stderr}");
            }
            Ok(Err(e)) => panic!("cannot read herald serve's output: {e}"),
            Err(_) => panic!("herald serve printed nothing within {TIMEOUT:?}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Stops the server as an operator would (SIGTERM), so that it shuts down cleanly.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// A fresh database and data directory, and the environment pointing `herald` at them.
struct Setup {
    db: TestDb,
    data_dir: TempDir,
    env: BTreeMap<String, String>,
}

impl Setup {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let data_dir = tempfile::tempdir().expect("temporary directory");
        let env = helpers::base_env(&db, data_dir.path());
        Self { db, data_dir, env }
    }

    async fn run(&self, args: &[&str]) -> Run {
        run(&self.env, args, None).await
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run(&self.env, args, Some(stdin)).await
    }

    /// The environment with one variable changed.
    fn env_with(&self, name: &str, value: &str) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.insert(name.to_owned(), value.to_owned());
        env
    }

    /// A connection to the same database, for checking what the commands did.
    async fn store(&self) -> Store {
        let store = Store::connect(&self.db.database_url())
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate");
        store
    }

    fn key_file(&self) -> PathBuf {
        self.data_dir.path().join("master.key")
    }

    /// Creates an organization through the CLI and answers its id.
    async fn org(&self, name: &str) -> OrgId {
        let out = self.run(&["org", "add", name]).await;
        out.succeeds()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not an organization id: {}", out.describe()))
    }
}

/// The configuration the library builds from `env`, as the child process did.
fn config(env: &BTreeMap<String, String>) -> Config {
    Config::load(None, env).expect("test configuration")
}

/// The key ring `env` configures (the environment's key, or the key file).
fn ring(env: &BTreeMap<String, String>) -> (KeyRing, KeySource) {
    keys::configured_ring(&config(env))
        .expect("read the master key")
        .expect("a master key is configured")
}

/// The keys in a key file: its non-empty lines that are not comments.
fn keys_in(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn mode_of(file: &Path) -> u32 {
    std::fs::metadata(file)
        .unwrap_or_else(|e| panic!("stat {}: {e}", file.display()))
        .permissions()
        .mode()
        & 0o777
}

async fn generate_key() -> String {
    let out = run(&BTreeMap::new(), &["keys", "generate"], None).await;
    let key = out.succeeds().trim().to_owned();
    keys::parse_key(&key).unwrap_or_else(|e| panic!("`keys generate` printed a bad key: {e}"));
    key
}

async fn user_count(store: &Store) -> i64 {
    let mut conn = store.conn().await.expect("connection");
    store::users::count_all(&mut conn)
        .await
        .expect("count users")
}

async fn put_test_secret(store: &Store, ring: &KeyRing) {
    let mut conn = store.conn().await.expect("connection");
    keys::put_secret(
        &mut conn,
        ring,
        SECRET_OWNER,
        SECRET_FIELD,
        &SecretString::from(SECRET_TEXT),
        herald::clock::system_now(),
    )
    .await
    .expect("store a sealed secret");
}

/// Opens the test secret with `ring`.
async fn open_test_secret(store: &Store, ring: &KeyRing) -> String {
    let mut conn = store.conn().await.expect("connection");
    keys::get_secret(&mut conn, ring, SECRET_OWNER, SECRET_FIELD)
        .await
        .expect("the secret opens")
        .expect("the secret is stored")
        .expose_secret()
        .to_owned()
}

async fn sealed_rows(store: &Store) -> Vec<store::secrets::SealedRow> {
    let mut conn = store.conn().await.expect("connection");
    store::secrets::all(&mut conn).await.expect("read secrets")
}

fn http() -> reqwest::Client {
    crate::helpers::http_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

// --- help ---------------------------------------------------------------------------------

#[tokio::test]
async fn help_is_printed_for_the_command_and_every_subcommand() {
    let env = BTreeMap::new();
    let out = run(&env, &["--help"], None).await;
    let text = out.succeeds();
    assert!(text.contains("Usage: herald"), "{}", out.describe());
    for sub in ["serve", "migrate", "org", "user", "apikey", "keys"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(sub)),
            "`herald --help` should list {sub}: {}",
            out.describe()
        );
    }

    let cases: &[(&[&str], &str)] = &[
        (&["serve"], "Run the service"),
        (&["migrate"], "Apply pending database migrations"),
        (&["org"], "Manage organizations"),
        (&["org", "add"], "<NAME>"),
        (&["org", "list"], "List organizations"),
        (&["user"], "Manage users"),
        (&["user", "add"], "--password-stdin"),
        (&["apikey"], "Manage API keys"),
        (&["apikey", "add"], "--role"),
        (&["apikey", "list"], "--org"),
        (&["apikey", "revoke"], "<ID>"),
        (&["keys"], "Manage the master key"),
        (&["keys", "rotate"], "--new-key-stdin"),
        (&["keys", "generate"], "Print a new random master key"),
    ];
    for (words, expected) in cases {
        let mut args = words.to_vec();
        args.push("--help");
        let out = run(&env, &args, None).await;
        let text = out.succeeds();
        let usage = format!("Usage: herald {}", words.join(" "));
        assert!(
            text.contains(&usage),
            "expected {usage:?}: {}",
            out.describe()
        );
        assert!(
            text.contains(expected),
            "expected {expected:?}: {}",
            out.describe()
        );
    }

    // No command at all is a usage error, not a crash.
    let out = run(&env, &[], None).await;
    out.fails_with(&["Usage: herald"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());
}

// --- organizations ------------------------------------------------------------------------

#[tokio::test]
async fn org_add_prints_only_the_new_id_and_org_list_shows_it() {
    let setup = Setup::new().await;
    let out = setup.run(&["org", "add", "Contoso"]).await;
    let stdout = out.succeeds();
    assert_eq!(stdout.lines().count(), 1, "{}", out.describe());
    let id: OrgId = stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a UUID: {}", out.describe()));
    assert_eq!(stdout, format!("{id}\n"));

    let second = setup.org("Fabrikam").await;
    let out = setup.run(&["org", "list"]).await;
    let lines: Vec<&str> = out.succeeds().lines().collect();
    assert_eq!(
        lines,
        [format!("{id}\tContoso"), format!("{second}\tFabrikam")],
        "{}",
        out.describe()
    );

    let store = setup.store().await;
    let mut conn = store.conn().await.unwrap();
    let found = store::orgs::find(&mut conn, "contoso").await.unwrap();
    assert_eq!(found.map(|o| o.id), Some(id));
}

#[tokio::test]
async fn org_add_refuses_a_name_that_exists_in_any_case() {
    let setup = Setup::new().await;
    let id = setup.org("Contoso").await;
    for name in ["Contoso", "CONTOSO", "contoso"] {
        let out = setup.run(&["org", "add", name]).await;
        out.fails_with(&[&format!("an organization named \"{name}\" already exists")]);
        assert!(out.stdout.is_empty(), "{}", out.describe());
    }
    let out = setup.run(&["org", "list"]).await;
    assert_eq!(out.succeeds(), format!("{id}\tContoso\n"));
}

// --- users --------------------------------------------------------------------------------

#[tokio::test]
async fn user_add_reads_the_password_from_stdin_and_creates_the_user() {
    let setup = Setup::new().await;
    let org = setup.org("Contoso").await;
    let org_id = org.to_string();

    let input = format!("{PASSWORD}\n");
    let out = setup
        .run_with_stdin(
            &[
                "user",
                "add",
                "--org",
                &org_id,
                "--email",
                "alice@example.com",
                "--role",
                "admin",
                "--password-stdin",
            ],
            &input,
        )
        .await;
    let stdout = out.succeeds();
    assert!(
        stdout.contains("Created admin user alice@example.com in Contoso"),
        "{}",
        out.describe()
    );
    assert!(!stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD));

    // The organization may also be named, in any case; a password without a final newline
    // is read too.
    let out = setup
        .run_with_stdin(
            &[
                "user",
                "add",
                "--org",
                "contoso",
                "--email",
                "bob@example.com",
                "--role",
                "member",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .await;
    assert!(
        out.succeeds()
            .contains("Created member user bob@example.com in Contoso"),
        "{}",
        out.describe()
    );

    let store = setup.store().await;
    let mut conn = store.conn().await.unwrap();
    for (email, role) in [
        ("alice@example.com", UserRole::Admin),
        ("bob@example.com", UserRole::Member),
    ] {
        let (user, hash) =
            store::users::find_for_login(&mut conn, &EmailAddress::parse(email).unwrap())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{email} was not created"));
        assert_eq!(user.org_id, org);
        assert_eq!(user.role, role);
        assert!(!hash.contains(PASSWORD));
        assert!(
            verify_password(&SecretString::from(PASSWORD), &hash),
            "{email} signs in with the password given on stdin"
        );
        assert!(!verify_password(
            &SecretString::from("another password"),
            &hash
        ));
    }
    assert_eq!(store::users::count_all(&mut conn).await.unwrap(), 2);
}

#[tokio::test]
async fn user_add_refuses_bad_input_and_writes_nothing() {
    let setup = Setup::new().await;
    setup.org("Contoso").await;
    let password = format!("{PASSWORD}\n");
    let add = |email: &'static str, role: &'static str, org: &'static str| {
        [
            "user",
            "add",
            "--org",
            org,
            "--email",
            email,
            "--role",
            role,
            "--password-stdin",
        ]
    };
    setup
        .run_with_stdin(&add("alice@example.com", "admin", "Contoso"), &password)
        .await
        .succeeds();
    let store = setup.store().await;
    assert_eq!(user_count(&store).await, 1);

    // The same email, in another case.
    let out = setup
        .run_with_stdin(&add("ALICE@example.com", "member", "Contoso"), &password)
        .await;
    out.fails_with(&["a user with the email ALICE@example.com already exists"]);
    assert_eq!(user_count(&store).await, 1);

    // An empty password, with or without the line break.
    for empty in ["\n", ""] {
        let out = setup
            .run_with_stdin(&add("carol@example.com", "member", "Contoso"), empty)
            .await;
        out.fails_with(&["password", "must not be empty"]);
        assert_eq!(user_count(&store).await, 1);
    }

    let out = setup
        .run_with_stdin(&add("carol@example.com", "member", "Contoso"), "short\n")
        .await;
    out.fails_with(&["password", "too short"]);
    assert_eq!(user_count(&store).await, 1);

    let out = setup
        .run_with_stdin(&add("carol@example.com", "owner", "Contoso"), &password)
        .await;
    out.fails_with(&["role", "`owner`"]);
    assert_eq!(user_count(&store).await, 1);

    let out = setup
        .run_with_stdin(&add("not-an-email", "member", "Contoso"), &password)
        .await;
    out.fails_with(&["email", "not-an-email"]);
    assert_eq!(user_count(&store).await, 1);

    let out = setup
        .run_with_stdin(
            &add("carol@example.com", "member", "Nowhere Inc"),
            &password,
        )
        .await;
    out.fails_with(&["organization", "not found"]);
    assert_eq!(user_count(&store).await, 1);

    // Without --password-stdin and with no terminal to prompt at.
    let out = setup
        .run(&[
            "user",
            "add",
            "--org",
            "Contoso",
            "--email",
            "carol@example.com",
            "--role",
            "member",
        ])
        .await;
    out.fails_with(&["--password-stdin"]);
    assert_eq!(user_count(&store).await, 1);

    let mut conn = store.conn().await.unwrap();
    let carol = EmailAddress::parse("carol@example.com").unwrap();
    assert!(
        store::users::find_for_login(&mut conn, &carol)
            .await
            .unwrap()
            .is_none()
    );
}

// --- API keys -----------------------------------------------------------------------------

/// Runs `apikey add` and answers the key printed on the last line.
async fn add_key(setup: &Setup, org: &str, role: &str, name: &str) -> String {
    let out = setup
        .run(&[
            "apikey", "add", "--org", org, "--role", role, "--name", name,
        ])
        .await;
    let stdout = out.succeeds();
    let key = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output: {}", out.describe()))
        .to_owned();
    assert_eq!(
        stdout.matches(key.as_str()).count(),
        1,
        "the key is printed once: {}",
        out.describe()
    );
    key
}

/// The lines of `apikey list`, split at tabs.
async fn list_keys(setup: &Setup, org: &str) -> (Vec<Vec<String>>, String) {
    let out = setup.run(&["apikey", "list", "--org", org]).await;
    let stdout = out.succeeds().to_owned();
    let rows = stdout
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect();
    (rows, stdout)
}

#[tokio::test]
async fn apikey_add_prints_the_key_last_and_stores_only_its_digest() {
    let setup = Setup::new().await;
    let org = setup.org("Contoso").await;
    let out = setup
        .run(&[
            "apikey", "add", "--org", "Contoso", "--role", "sender", "--name", "app",
        ])
        .await;
    let stdout = out.succeeds();
    let lines: Vec<&str> = stdout.lines().collect();
    let key = *lines.last().expect("output");
    let body = key
        .strip_prefix("hk_")
        .unwrap_or_else(|| panic!("the last line is not a key: {}", out.describe()));
    assert_eq!(body.len(), 43, "{key}");
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{key}"
    );
    assert!(
        lines[0].contains("Created sender API key \"app\"") && lines[0].contains("Contoso"),
        "{}",
        out.describe()
    );
    assert_eq!(stdout.matches(body).count(), 1, "{}", out.describe());
    assert!(!out.stderr.contains(body), "{}", out.describe());

    let store = setup.store().await;
    let digest = token_digest(key);
    let rows = sqlx::query("SELECT id, org_id, name, role, prefix, digest FROM api_keys")
        .fetch_all(store.pool())
        .await
        .expect("read api_keys");
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<String, _>("digest"), digest);
    assert_eq!(row.get::<String, _>("org_id"), org.to_string());
    assert_eq!(row.get::<String, _>("prefix"), key[..11]);
    for column in ["id", "org_id", "name", "role", "prefix", "digest"] {
        let value: String = row.get(column);
        assert!(!value.contains(body), "api_keys.{column} holds the key");
    }
    let mut conn = store.conn().await.unwrap();
    let live = store::api_keys::find_live_by_token(&mut conn, &ApiKeyToken::parse(key).unwrap())
        .await
        .unwrap()
        .expect("the printed key is live");
    assert_eq!(live.name, "app");
    assert_eq!(live.role, KeyRole::Sender);
    assert_eq!(live.org_id, org);
    drop(conn);
    store.close().await;

    // Nowhere in the database's files: only the digest is.
    let raw = setup.db.raw_bytes().await;
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(
        contains(digest.as_bytes()),
        "the digest should be on disk (is the scan reading the right files?)"
    );
    assert!(!contains(body.as_bytes()), "the key is stored on disk");

    // A bad role is named and creates nothing.
    let out = setup
        .run(&[
            "apikey", "add", "--org", "Contoso", "--role", "member", "--name", "app2",
        ])
        .await;
    out.fails_with(&["role", "`member`"]);
    let (listed, _) = list_keys(&setup, "Contoso").await;
    assert_eq!(listed.len(), 1);
}

#[tokio::test]
async fn apikey_list_hides_the_key_and_revoke_locks_it_out_of_the_api() {
    let setup = Setup::new().await;
    let org = setup.org("Contoso").await;
    let key = add_key(&setup, &org.to_string(), "sender", "app").await;

    let (rows, listing) = list_keys(&setup, "contoso").await;
    assert_eq!(rows.len(), 1, "{listing}");
    let row = &rows[0];
    let id = row[0].clone();
    assert_eq!(row[1], format!("{}…", &key[..11]), "{listing}");
    assert_eq!(&row[2..], ["sender", "live", "app"], "{listing}");
    assert!(!listing.contains(&key[3..]), "the list shows the key");

    let (server, _) = Server::start(&setup.env).await;
    let client = http();
    let me = client
        .get(server.url("/api/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET /api/v1/me");
    assert_eq!(me.status(), 200);
    let body: serde_json::Value = me.json().await.unwrap();
    assert_eq!(body["organization"]["name"], "Contoso");
    assert_eq!(body["access"], "sender");

    let out = setup.run(&["apikey", "revoke", &id]).await;
    let stdout = out.succeeds();
    assert!(
        stdout.contains("Revoked API key \"app\"") && stdout.contains(&key[..11]),
        "{}",
        out.describe()
    );
    assert!(!stdout.contains(&key[3..]));

    let me = client
        .get(server.url("/api/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("GET /api/v1/me");
    assert_eq!(me.status(), 401, "a revoked key is refused at once");
    server.stop().await;

    let (rows, listing) = list_keys(&setup, "Contoso").await;
    assert_eq!(rows[0][3], "revoked", "{listing}");
    let store = setup.store().await;
    let mut conn = store.conn().await.unwrap();
    let token = ApiKeyToken::parse(&key).unwrap();
    assert!(
        store::api_keys::find_live_by_token(&mut conn, &token)
            .await
            .unwrap()
            .is_none()
    );

    // Revoking again is not an error.
    setup.run(&["apikey", "revoke", &id]).await.succeeds();
}

#[tokio::test]
async fn apikey_revoke_refuses_a_malformed_or_unknown_id() {
    let setup = Setup::new().await;
    setup.org("Contoso").await;
    let key = add_key(&setup, "Contoso", "admin", "ops").await;

    let out = setup.run(&["apikey", "revoke", "not-a-key-id"]).await;
    out.fails_with(&["`not-a-key-id` is not an API key id"]);

    let out = setup.run(&["apikey", "revoke", &key]).await;
    out.fails_with(&["is not an API key id"]);

    let unknown = uuid::Uuid::now_v7().to_string();
    let out = setup.run(&["apikey", "revoke", &unknown]).await;
    out.fails_with(&["no API key has the id", &unknown]);

    let (rows, listing) = list_keys(&setup, "Contoso").await;
    assert_eq!(rows.len(), 1, "{listing}");
    assert_eq!(rows[0][3], "live", "{listing}");
}

// --- configuration errors -----------------------------------------------------------------

#[tokio::test]
async fn a_malformed_config_file_is_refused_naming_the_file() {
    let setup = Setup::new().await;
    let file = setup.data_dir.path().join("broken.toml");
    std::fs::write(&file, "listen = \n").unwrap();
    let path = file.display().to_string();
    let out = setup.run(&["--config", &path, "migrate"]).await;
    out.refuses_configuration(&[&path, "is not valid"]);

    // The same through HERALD_CONFIG.
    let out = run(&setup.env_with("HERALD_CONFIG", &path), &["migrate"], None).await;
    out.refuses_configuration(&[&path]);

    let missing = setup.data_dir.path().join("missing.toml");
    let missing = missing.display().to_string();
    let out = setup.run(&["--config", &missing, "migrate"]).await;
    out.refuses_configuration(&["cannot read the configuration file", &missing]);
}

#[tokio::test]
async fn an_unknown_key_in_the_config_file_is_named() {
    let setup = Setup::new().await;
    let file = setup.data_dir.path().join("herald.toml");
    std::fs::write(&file, "listn = \"127.0.0.1:9000\"\n").unwrap();
    let path = file.display().to_string();
    let out = setup.run(&["--config", &path, "org", "list"]).await;
    out.refuses_configuration(&["listn", &path]);
}

#[tokio::test]
async fn an_unknown_herald_environment_variable_is_named() {
    let setup = Setup::new().await;
    let out = run(
        &setup.env_with("HERALD_LISTN", "127.0.0.1:9000"),
        &["migrate"],
        None,
    )
    .await;
    out.refuses_configuration(&["unknown environment variable HERALD_LISTN"]);
}

#[tokio::test]
async fn an_unsupported_database_url_is_refused() {
    let setup = Setup::new().await;
    let out = run(
        &setup.env_with("HERALD_DATABASE_URL", "mysql://x/y"),
        &["migrate"],
        None,
    )
    .await;
    out.refuses_configuration(&["HERALD_DATABASE_URL", "unsupported database `mysql`"]);
}

/// A server on loopback that declines TLS, as a PostgreSQL server without certificates does:
/// with sslmode=verify-full a connection fails at once (a closed port would be retried for
/// 30 seconds), and the error names the URL. Answers its port.
async fn tls_declining_server() -> u16 {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = server.accept().await {
            let mut ssl_request = [0u8; 8];
            if tokio::io::AsyncReadExt::read_exact(&mut conn, &mut ssl_request)
                .await
                .is_ok()
            {
                let _ = conn.write_all(b"N").await;
            }
        }
    });
    port
}

fn assert_secrets_absent(out: &Run, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !out.stderr.contains(secret) && !out.stdout.contains(secret),
            "{secret:?} was printed: {}",
            out.describe()
        );
    }
}

#[tokio::test]
async fn a_database_url_s_passwords_never_reach_the_output_while_its_address_does() {
    let setup = Setup::new().await;
    let port = tls_declining_server().await;
    let mut env = setup.env_with(
        "HERALD_DATABASE_URL",
        &format!(
            "postgres://herald:userinfo-secret@127.0.0.1:{port}/herald?password=hunter2-secret&sslmode=verify-full"
        ),
    );
    env.insert("HERALD_LOG".into(), "debug".into());
    let out = run(&env, &["migrate"], None).await;
    // The operator still sees where Herald tried to connect, and how.
    out.fails_with(&[
        &format!("postgres://herald:REDACTED@127.0.0.1:{port}/herald"),
        "password=REDACTED",
        "sslmode=verify-full",
    ]);
    assert_secrets_absent(&out, &["userinfo-secret", "hunter2-secret"]);
}

#[tokio::test]
async fn a_database_url_parameter_the_driver_ignores_is_refused_without_printing_its_value() {
    let setup = Setup::new().await;
    let env = setup.env_with(
        "HERALD_DATABASE_URL",
        &format!(
            "postgres://herald@127.0.0.1:{}/herald?sslmode=verify-full&sslpassword=hunter2-secret",
            tls_declining_server().await
        ),
    );
    let out = run(&env, &["migrate"], None).await;
    out.refuses_configuration(&["HERALD_DATABASE_URL", "`sslpassword`", "remove it"]);
    assert_secrets_absent(&out, &["hunter2-secret"]);
}

#[tokio::test]
async fn serve_logs_its_database_without_the_password_in_the_url() {
    if std::env::var(helpers::POSTGRES_ENV).is_ok_and(|v| !v.is_empty()) {
        let setup = Setup::new().await;
        // The test server trusts loopback, so the passwords given here are not checked.
        let mut url = url::Url::parse(&setup.db.url()).unwrap();
        url.set_password(Some("userinfo-secret")).unwrap();
        url.query_pairs_mut()
            .append_pair("password", "hunter2-secret")
            .append_pair("sslmode", "disable");
        let mut env = setup.env_with("HERALD_DATABASE_URL", url.as_str());
        env.insert("HERALD_LOG".into(), "debug".into());
        let (mut server, _) = Server::start(&env).await;
        let mut stderr = server.child.stderr.take().expect("stderr pipe");
        server.stop().await;
        let mut log = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut log)
            .await
            .unwrap();
        assert!(log.contains("Herald is starting"), "{log}");
        assert!(log.contains("password=REDACTED&sslmode=disable"), "{log}");
        for secret in ["userinfo-secret", "hunter2-secret"] {
            assert!(!log.contains(secret), "{secret:?} was logged: {log}");
        }
    } else {
        // On SQLite the URL holds no password; the PostgreSQL run of the suite covers this.
        println!("needs {}: skipped", helpers::POSTGRES_ENV);
    }
}

#[tokio::test]
async fn a_master_key_that_is_not_base64_is_refused() {
    let setup = Setup::new().await;
    let out = run(
        &setup.env_with("HERALD_MASTER_KEY", "notbase64!!"),
        &["serve"],
        None,
    )
    .await;
    out.refuses_configuration(&["HERALD_MASTER_KEY", "is not valid", "base64"]);
    assert!(!out.stderr.contains("notbase64!!"), "{}", out.describe());
    assert!(!setup.key_file().exists());
}

// --- serve --------------------------------------------------------------------------------

#[tokio::test]
async fn serve_on_an_empty_database_prints_its_address_and_a_setup_link() {
    let setup = Setup::new().await;
    let (mut server, first) = Server::start(&setup.env).await;
    // Without HERALD_PUBLIC_URL, the public URL follows the port actually bound.
    let base = server.url("");
    assert_eq!(
        first,
        format!("Herald is listening on {base} (public URL {base})")
    );
    let mut link = None;
    for _ in 0..2 {
        let line = server.next_line().await;
        if let Some(at) = line.find("/setup?token=") {
            link = Some(line.trim().to_owned());
            assert!(
                line.trim().starts_with(&format!("{base}/setup?token=")),
                "{line}"
            );
            let token = &line[at + "/setup?token=".len()..];
            assert_eq!(token.trim().len(), 43, "{line}");
            break;
        }
        assert!(line.contains("No user exists yet"), "{line}");
    }
    let link = link.expect("a setup link");

    let client = http();
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let page = client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("csrf_token"));
    let wrong = client
        .get(server.url("/setup?token=not-the-token"))
        .send()
        .await
        .unwrap();
    assert_ne!(wrong.status(), 200);
    server.stop().await;
}

// --- master key ---------------------------------------------------------------------------

#[tokio::test]
async fn keys_generate_prints_a_new_key_each_time() {
    let first = generate_key().await;
    let second = generate_key().await;
    assert_ne!(first, second);
    assert_ne!(
        keys::parse_key(&first).unwrap().id(),
        keys::parse_key(&second).unwrap().id()
    );
}

#[tokio::test]
async fn the_first_serve_creates_a_private_key_file_and_other_keys_are_refused() {
    let setup = Setup::new().await;
    let (server, _) = Server::start(&setup.env).await;
    server.stop().await;

    let file = setup.key_file();
    assert_eq!(mode_of(&file), 0o600, "the key file is private");
    assert_eq!(keys_in(&file).len(), 1);
    let (ring, source) = ring(&setup.env);
    assert_eq!(source, KeySource::File(file.clone()));
    let store = setup.store().await;
    put_test_secret(&store, &ring).await;
    assert_eq!(open_test_secret(&store, &ring).await, SECRET_TEXT);

    // Another key: migrating needs no key, serving is refused.
    let other = generate_key().await;
    let with_other = setup.env_with("HERALD_MASTER_KEY", &other);
    let out = run(&with_other, &["migrate"], None).await;
    assert!(out.succeeds().contains("database is up to date"));
    let out = run(&with_other, &["serve"], None).await;
    out.fails_with(&["wrong master key", ring.active().id().as_str()]);
    assert!(!out.stdout.contains("listening"), "{}", out.describe());

    // No key at all, with secrets in the database.
    std::fs::remove_file(&file).unwrap();
    let out = setup.run(&["serve"]).await;
    out.fails_with(&["no master key", &file.display().to_string()]);
    assert!(
        !file.exists(),
        "a new key file must not replace the lost one"
    );

    // The database still opens with the right key.
    assert_eq!(open_test_secret(&store, &ring).await, SECRET_TEXT);
}

#[tokio::test]
async fn keys_rotate_with_the_key_file_reseals_everything_and_retires_the_old_key() {
    let setup = Setup::new().await;
    let (server, _) = Server::start(&setup.env).await;
    server.stop().await;
    let file = setup.key_file();
    let before = keys_in(&file);
    assert_eq!(before.len(), 1);
    let (old_ring, _) = ring(&setup.env);
    let store = setup.store().await;
    put_test_secret(&store, &old_ring).await;

    let out = setup.run(&["keys", "rotate"]).await;
    let stdout = out.succeeds();
    assert!(
        stdout.contains("Re-sealed 2 secret(s)"),
        "{}",
        out.describe()
    );
    assert!(
        stdout.contains(old_ring.active().id().as_str()),
        "the retired key is named: {}",
        out.describe()
    );
    assert!(
        !stdout.contains(&before[0]),
        "the key itself is not printed"
    );

    let after = keys_in(&file);
    assert_eq!(after.len(), 1, "the key file holds the new key alone");
    assert_ne!(after, before);
    assert_eq!(mode_of(&file), 0o600);

    let (new_ring, _) = ring(&setup.env);
    assert_ne!(new_ring.active().id(), old_ring.active().id());
    assert!(new_ring.older().is_empty());
    assert_eq!(open_test_secret(&store, &new_ring).await, SECRET_TEXT);
    let rows = sealed_rows(&store).await;
    assert_eq!(rows.len(), 2, "the key check and the test secret");
    for row in &rows {
        assert_eq!(row.key_id, new_ring.active().id().as_str());
        assert!(
            old_ring
                .open(&row.owner_id, &row.field, &row.sealed)
                .is_err(),
            "the old key still opens {}/{}",
            row.owner_id,
            row.field
        );
        new_ring
            .open(&row.owner_id, &row.field, &row.sealed)
            .expect("the new key opens every value");
    }

    // Herald starts with the rotated key file.
    let (server, _) = Server::start(&setup.env).await;
    server.stop().await;
}

#[tokio::test]
async fn keys_rotate_with_an_environment_key_needs_the_new_key_on_stdin() {
    let mut setup = Setup::new().await;
    let old_key = generate_key().await;
    setup
        .env
        .insert("HERALD_MASTER_KEY".into(), old_key.clone());

    let out = setup.run(&["keys", "rotate"]).await;
    out.fails_with(&["--new-key-stdin"]);
    let (old_ring, source) = ring(&setup.env);
    assert_eq!(source, KeySource::Environment);
    let store = setup.store().await;
    put_test_secret(&store, &old_ring).await;

    // Refused new keys change nothing.
    let out = setup
        .run_with_stdin(&["keys", "rotate", "--new-key-stdin"], "notbase64!!\n")
        .await;
    out.fails_with(&["the new key", "base64"]);
    let out = setup
        .run_with_stdin(
            &["keys", "rotate", "--new-key-stdin"],
            &format!("{old_key}\n"),
        )
        .await;
    out.fails_with(&["already in use"]);
    for row in sealed_rows(&store).await {
        assert_eq!(row.key_id, old_ring.active().id().as_str());
    }

    let new_key = generate_key().await;
    let out = setup
        .run_with_stdin(
            &["keys", "rotate", "--new-key-stdin"],
            &format!("{new_key}\n"),
        )
        .await;
    let stdout = out.succeeds();
    assert!(
        stdout.contains("Re-sealed 2 secret(s)"),
        "{}",
        out.describe()
    );
    assert!(
        stdout.contains("Set HERALD_MASTER_KEY"),
        "{}",
        out.describe()
    );
    assert!(!stdout.contains(&new_key) && !stdout.contains(&old_key));
    assert!(
        !setup.key_file().exists(),
        "an environment key never writes a key file"
    );

    let with_new = setup.env_with("HERALD_MASTER_KEY", &new_key);
    let (new_ring, _) = ring(&with_new);
    assert_eq!(open_test_secret(&store, &new_ring).await, SECRET_TEXT);
    for row in sealed_rows(&store).await {
        assert!(
            old_ring
                .open(&row.owner_id, &row.field, &row.sealed)
                .is_err()
        );
    }

    let (server, first) = Server::start(&with_new).await;
    assert!(first.starts_with("Herald is listening on"));
    server.stop().await;

    let out = setup.run(&["serve"]).await;
    out.fails_with(&["wrong master key", new_ring.active().id().as_str()]);
}

// --- demo ---------------------------------------------------------------------------------

/// `herald demo` running as a child process, with what it printed as `label: value` lines.
struct Demo {
    child: Child,
    facts: BTreeMap<String, String>,
}

impl Demo {
    async fn start(data_dir: &Path) -> Self {
        Self::start_logging(data_dir, "warn").await
    }

    async fn start_logging(data_dir: &Path, log: &str) -> Self {
        let env = BTreeMap::from([
            ("HERALD_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("HERALD_SANDBOX_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            (
                "HERALD_SANDBOX_SMTP_LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            ("HERALD_LOG".to_owned(), log.to_owned()),
        ]);
        let mut child = herald(
            &env,
            &["demo", "--data-dir", &data_dir.display().to_string()],
        )
        .spawn()
        .expect("start herald demo");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut facts = BTreeMap::new();
        loop {
            let line = tokio::time::timeout(TIMEOUT, lines.next_line())
                .await
                .expect("herald demo prints its facts in time")
                .expect("readable output")
                .expect("herald demo keeps running");
            if let Some((label, value)) = line.split_once(": ") {
                facts.insert(label.to_owned(), value.to_owned());
            }
            if line.starts_with("Data directory: ") {
                break;
            }
        }
        Self { child, facts }
    }

    fn fact(&self, label: &str) -> &str {
        self.facts
            .get(label)
            .unwrap_or_else(|| panic!("herald demo did not print {label:?}: {:?}", self.facts))
    }

    /// The first word of a fact (URLs and ids come first, notes after them).
    fn word(&self, label: &str) -> &str {
        self.fact(label).split_whitespace().next().unwrap()
    }
}

#[tokio::test]
async fn demo_runs_herald_and_the_sandbox_ready_for_the_whole_flow() {
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    use oauth2::basic::BasicClient;
    use oauth2::{
        AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
        RedirectUrl, Scope, TokenResponse, TokenUrl,
    };

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let mut demo = Demo::start(&data).await;

    // Herald serves, and the admin can sign in.
    let herald_url = demo.fact("Herald URL").to_owned();
    let client = http();
    assert_eq!(
        client
            .get(format!("{herald_url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (admin, admin_password) = demo.fact("Admin sign-in").split_once(" / ").unwrap();
    let browser = crate::helpers::http_builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = browser
        .get(format!("{herald_url}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = helpers::hidden_field(&login, "csrf_token");
    let signed_in = browser
        .post(format!("{herald_url}/login"))
        .form(&[
            ("email", admin),
            ("password", admin_password),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let me: serde_json::Value = browser
        .get(format!("{herald_url}/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["organization"]["name"], "Contoso");

    // The sandbox is another site, and its app registration holds Herald's redirect URI.
    let sandbox_url = demo.word("Sandbox URL").to_owned();
    assert!(
        sandbox_url.starts_with("http://localhost:"),
        "{sandbox_url}"
    );
    assert_eq!(
        demo.fact("Redirect URI"),
        format!("{herald_url}/web/um/smtp/redirect")
    );
    let oauth = BasicClient::new(ClientId::new(demo.fact("Sandbox app client ID").to_owned()))
        .set_client_secret(ClientSecret::new(
            demo.word("Sandbox app client secret").to_owned(),
        ))
        .set_auth_uri(AuthUrl::new(demo.fact("Authorization URL").to_owned()).unwrap())
        .set_token_uri(TokenUrl::new(demo.fact("Token URL").to_owned()).unwrap())
        .set_redirect_uri(RedirectUrl::new(demo.fact("Redirect URI").to_owned()).unwrap());
    let (mailbox, mailbox_password) = demo.fact("Sandbox user sign-in").split_once(" / ").unwrap();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _) = oauth
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("https://outlook.office.com/SMTP.Send".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();
    let redirect =
        helpers::sandbox_consent(auth_url.as_str(), mailbox, mailbox_password, "accept").await;
    let location = url::Url::parse(redirect.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let http = oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = oauth
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();

    // The token sends mail through the sandbox's SMTP server, trusting the exported CA.
    let smtp = demo.word("Sandbox SMTP").to_owned();
    let (host, port) = smtp.rsplit_once(':').unwrap();
    let ca_file = demo
        .fact("Sandbox SMTP")
        .split("CA certificate ")
        .nth(1)
        .unwrap()
        .trim_end_matches(')')
        .to_owned();
    let ca = std::fs::read(&ca_file).expect("the CA certificate file exists");
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&ca).unwrap())
        .build_rustls()
        .unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port.parse().unwrap())
        .tls(Tls::Required(tls))
        .credentials(Credentials::new(
            mailbox.into(),
            token.access_token().secret().clone(),
        ))
        .authentication(vec![Mechanism::Xoauth2])
        .build();
    let message = Message::builder()
        .from(mailbox.parse().unwrap())
        .to("someone@example.com".parse().unwrap())
        .subject("Demo")
        .body(String::from("Sent through the sandbox"))
        .unwrap();
    transport
        .send(message)
        .await
        .expect("the sandbox accepts the message");
    let received: serde_json::Value = client
        .get(format!("{sandbox_url}/_sandbox/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(received["items"][0]["user"], mailbox);
    assert_eq!(received["items"][0]["mechanism"], "XOAUTH2");

    // A second demo refuses a data directory that is in use.
    let again = run(
        &BTreeMap::from([("HERALD_LOG".to_owned(), "warn".to_owned())]),
        &["demo", "--data-dir", &data.display().to_string()],
        None,
    )
    .await;
    again.fails_with(&["is not empty"]);

    if let Some(pid) = demo.child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let status = tokio::time::timeout(TIMEOUT, demo.child.wait())
        .await
        .expect("demo stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn demo_refuses_switches_it_does_not_know() {
    let dir = tempfile::tempdir().unwrap();
    let env = BTreeMap::from([
        ("HERALD_LOG".to_owned(), "warn".to_owned()),
        (
            "HERALD_SANDBOX_SWITCHES".to_owned(),
            r#"{"smtp_auth_disabld": true}"#.to_owned(),
        ),
    ]);
    let out = run(
        &env,
        &[
            "demo",
            "--data-dir",
            &dir.path().join("d").display().to_string(),
        ],
        None,
    )
    .await;
    out.fails_with(&[
        "HERALD_SANDBOX_SWITCHES",
        "unknown field `smtp_auth_disabld`",
    ]);
}

#[tokio::test]
async fn no_secret_reaches_the_debug_log_the_api_or_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let mut demo = Demo::start_logging(&data, "debug,sqlx=debug,herald=trace").await;
    // Drain stderr as it comes, so the pipe never fills.
    let mut stderr = demo.child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    });

    let herald_url = demo.fact("Herald URL").to_owned();
    let (admin, admin_password) = demo
        .fact("Admin sign-in")
        .split_once(" / ")
        .map(|(a, p)| (a.to_owned(), p.to_owned()))
        .unwrap();
    let (mailbox, mailbox_password) = demo
        .fact("Sandbox user sign-in")
        .split_once(" / ")
        .map(|(a, p)| (a.to_owned(), p.to_owned()))
        .unwrap();
    let client_secret = demo.word("Sandbox app client secret").to_owned();
    let browser = helpers::http_builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = browser
        .get(format!("{herald_url}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = helpers::hidden_field(&login, "csrf_token");
    browser
        .post(format!("{herald_url}/login"))
        .form(&[
            ("email", admin.as_str()),
            ("password", admin_password.as_str()),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let home = browser
        .get(format!("{herald_url}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = helpers::hidden_field(&home, "csrf_token");

    let created = browser
        .post(format!("{herald_url}/api/v1/mailboxes"))
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({
            "name": "Support", "auth": "oauth2", "provider": "sandbox", "username": mailbox,
            "client_id": demo.fact("Sandbox app client ID"), "client_secret": client_secret,
        }))
        .send()
        .await
        .unwrap();
    let created_text = created.text().await.unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&created_text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started: serde_json::Value = browser
        .post(format!("{herald_url}/api/v1/mailboxes/{id}/authorize"))
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let redirect = helpers::sandbox_consent(
        started["authorization_url"].as_str().unwrap(),
        &mailbox,
        &mailbox_password,
        "accept",
    )
    .await;
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    browser.get(&location).send().await.unwrap();
    let shown = browser
        .get(format!("{herald_url}/api/v1/mailboxes/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shown.contains("\"status\":\"verified\""), "{shown}");
    let sent = browser
        .post(format!("{herald_url}/api/v1/mailboxes/{id}/test-message"))
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({"to": "someone@example.com"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    if let Some(pid) = demo.child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let _ = tokio::time::timeout(TIMEOUT, demo.child.wait()).await;
    let log = tokio::time::timeout(TIMEOUT, log).await.unwrap().unwrap();
    assert!(
        log.contains("DEBUG") || log.contains("TRACE"),
        "debug logging was on"
    );

    let secrets = [&client_secret, &admin_password, &mailbox_password, &code];
    for (place, text) in [
        ("log", &log),
        ("mailbox response", &created_text),
        ("mailbox view", &shown),
        ("test-message response", &sent),
    ] {
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "a secret ({}…) is in the {place}",
                &secret[..4]
            );
        }
        assert!(!text.contains("sbx."), "an access token is in the {place}");
        assert!(
            !has_token_shape(text, "1."),
            "a refresh token is in the {place}"
        );
    }
    let mut raw = std::fs::read(data.join("herald.db")).unwrap();
    raw.extend(std::fs::read(data.join("herald.db-wal")).unwrap_or_default());
    let contains = |needle: &[u8]| raw.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(client_secret.as_bytes()),
        "the client secret is in the database file"
    );
    assert!(
        !contains(b"sbx."),
        "an access token is in the database file"
    );
    assert!(!contains(admin_password.as_bytes()));
}

/// Whether `text` holds `prefix` followed by 43 base64url characters: the shape of the
/// sandbox's refresh tokens (`1.`) and codes (`0.`).
fn has_token_shape(text: &str, prefix: &str) -> bool {
    text.match_indices(prefix).any(|(at, _)| {
        let rest = &text.as_bytes()[at + prefix.len()..];
        rest.len() >= 43
            && rest[..43]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    })
}

#[tokio::test]
async fn the_operator_allows_and_denies_the_default_sender_per_organization() {
    let setup = Setup::new().await;
    let fabrikam = setup.org("Fabrikam").await;
    let allowed = |store: Store| async move {
        let mut conn = store.conn().await.unwrap();
        let org = store::orgs::get(&mut conn, fabrikam)
            .await
            .unwrap()
            .unwrap();
        drop(conn);
        store.close().await;
        org.default_sender_allowed
    };
    assert!(
        !allowed(setup.store().await).await,
        "nobody is listed at first"
    );
    // By name or by id, as the other organization commands.
    let out = setup
        .run(&["org", "set", "fabrikam", "--default-sender", "allow"])
        .await;
    assert!(out.succeeds().contains("now sends for Fabrikam"));
    assert!(allowed(setup.store().await).await);
    let id = fabrikam.to_string();
    setup
        .run(&["org", "set", &id, "--default-sender", "deny"])
        .await
        .succeeds();
    assert!(!allowed(setup.store().await).await);
    setup
        .run(&["org", "set", "Nowhere", "--default-sender", "allow"])
        .await
        .fails_with(&["organization"]);
    setup
        .run(&["org", "set", "Fabrikam", "--default-sender", "maybe"])
        .await
        .fails_with(&["allow", "deny"]);
}
