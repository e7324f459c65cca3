//! No loss on a crash: `herald serve` runs as a process of its own, is killed with SIGKILL while
//! applications are sending through it, and is started again. Every message it answered 202
//! for arrives; the only duplicates are messages it was in the middle of sending.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::store::Store;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::helpers::{TestDb, eventually, eventually_within, http_builder, sandbox_until};

const MAILBOX: &str = "reports@contoso.com";
const PASSWORD: &str = "reports' sandbox password";

pub(crate) fn serve(env: &BTreeMap<String, String>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.arg("serve");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start herald serve")
}

pub(crate) async fn ready(base: &str) {
    let client = http_builder().build().unwrap();
    eventually(
        &format!("herald serve to become ready at {base}"),
        || async {
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;
}

async fn count(store: &Store, status: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE status = $1")
        .bind(status)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Posts numbered messages.
#[derive(Clone)]
struct Poster {
    client: reqwest::Client,
    key: String,
    url: String,
}

impl Poster {
    async fn post(&self, seq: usize) -> Option<reqwest::Response> {
        self.client
            .post(format!("{}/api/v1/messages", self.url))
            .bearer_auth(&self.key)
            .json(&json!({
                "to": "archive@example.com", "subject": format!("Report {seq}"),
                "text": "Numbers.", "headers": {"X-Seq": seq.to_string()},
            }))
            .send()
            .await
            .ok()
    }
}

/// A sandbox in this process and `herald serve` in another, with a Verified basic mailbox.
struct Rig {
    sandbox: herald::sandbox::RunningSandbox,
    _db: TestDb,
    _data: tempfile::TempDir,
    env: BTreeMap<String, String>,
    store: Store,
    key: String,
    client: reqwest::Client,
    herald_url: String,
    herald: Child,
}

impl Rig {
    async fn start() -> Self {
        // The provider, in this process, outlives the Herald it kills.
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let smtp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://localhost:{}", http.local_addr().unwrap().port());
        let sandbox = herald::sandbox::RunningSandbox::start_on(http, smtp, &base)
            .await
            .unwrap();
        sandbox
            .state
            .add_user(MAILBOX, SecretString::from(PASSWORD));
        let mut switches = sandbox.state.switches();
        switches.messages_per_minute = 1_000_000;
        sandbox.state.set_switches(switches);

        let db = TestDb::new().await;
        let data = tempfile::tempdir().unwrap();
        let ca = data.path().join("sandbox-ca.pem");
        std::fs::write(&ca, sandbox.ca.ca_pem()).unwrap();
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let herald_url = format!("http://127.0.0.1:{port}");
        let env = BTreeMap::from([
            ("HERALD_LISTEN".to_owned(), format!("127.0.0.1:{port}")),
            ("HERALD_PUBLIC_URL".to_owned(), herald_url.clone()),
            (
                "HERALD_DATA_DIR".to_owned(),
                data.path().display().to_string(),
            ),
            ("HERALD_DATABASE_URL".to_owned(), db.url()),
            ("HERALD_ALLOW_PRIVATE_HOSTS".to_owned(), "true".to_owned()),
            ("HERALD_SMTP_CA_FILE".to_owned(), ca.display().to_string()),
            ("HERALD_LOG".to_owned(), "warn".to_owned()),
        ]);
        let herald = serve(&env);
        ready(&herald_url).await;

        let (store, key) = crate::helpers::contoso_in(&db.database_url(), "reports").await;
        let client = http_builder().build().unwrap();
        let smtp_addr = sandbox.smtp_addr;
        let created: Value = client
            .post(format!("{herald_url}/api/v1/mailboxes"))
            .bearer_auth(&key)
            .json(&json!({
                "name": "Reports", "auth": "basic", "provider": "custom",
                "host": smtp_addr.ip().to_string(), "port": smtp_addr.port(), "security": "starttls",
                "username": MAILBOX, "password": PASSWORD, "default": true,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{created}"))
            .to_owned();
        let verified: Value = client
            .post(format!("{herald_url}/api/v1/mailboxes/{id}/verify"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(verified["status"], "verified", "{verified}");
        Self {
            sandbox,
            _db: db,
            _data: data,
            env,
            store,
            key,
            client,
            herald_url,
            herald,
        }
    }

    async fn restart(&mut self) {
        self.herald = serve(&self.env);
        ready(&self.herald_url).await;
    }

    fn poster(&self) -> Poster {
        Poster {
            client: self.client.clone(),
            key: self.key.clone(),
            url: self.herald_url.clone(),
        }
    }

    async fn stop(mut self) {
        self.herald.start_kill().ok();
        self.herald.wait().await.ok();
        self.store.close().await;
    }

    /// How often each X-Seq arrived.
    fn arrivals(&self) -> BTreeMap<String, usize> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for message in self.sandbox.state.messages() {
            let raw = String::from_utf8_lossy(&message.raw);
            let seq = raw
                .lines()
                .find_map(|l| l.strip_prefix("X-Seq: "))
                .expect("every message carries its X-Seq")
                .trim()
                .to_owned();
            *seen.entry(seq).or_default() += 1;
        }
        seen
    }

    /// Waits until nothing is left to send, then checks that at least the `accepted` messages
    /// were sent (a message can be committed before its 202 is cut off) and none failed.
    async fn wait_all_sent(&self, accepted: usize) {
        eventually_within("nothing left to send", Duration::from_secs(60), || async {
            count(&self.store, "queued").await + count(&self.store, "sending").await == 0
        })
        .await;
        assert_eq!(count(&self.store, "queued").await, 0, "nothing left queued");
        assert_eq!(
            count(&self.store, "sending").await,
            0,
            "nothing left claimed"
        );
        assert_eq!(count(&self.store, "failed").await, 0);
        assert!(count(&self.store, "sent").await >= accepted as i64);
    }
}

/// Sends `total` numbered messages from eight concurrent clients until done or until Herald
/// stops answering; answers the numbers answered 202.
fn load(rig: &Rig, total: usize) -> tokio::task::JoinHandle<BTreeSet<String>> {
    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let poster = rig.poster();
            let (accepted, next) = (accepted.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if seq >= total {
                        return;
                    }
                    match poster.post(seq).await {
                        Some(r) if r.status() == 202 => {
                            accepted.lock().unwrap().insert(seq.to_string());
                        }
                        // A request cut off by the kill was never answered 202.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        for sender in senders {
            sender.await.unwrap();
        }
        accepted.lock().unwrap().clone()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_and_duplicates_at_most_what_was_being_sent() {
    let mut rig = Rig::start().await;
    let senders = load(&rig, 400);
    // Kill once delivery is well under way.
    sandbox_until(&rig.sandbox.state, "40 messages delivered", |s| {
        s.messages().len() >= 40
    })
    .await;
    rig.herald.start_kill().unwrap();
    rig.herald.wait().await.unwrap();
    let accepted = senders.await.unwrap();
    let in_flight = count(&rig.store, "sending").await;
    let delivered_before = rig.sandbox.state.messages().len();
    assert!(
        accepted.len() > delivered_before,
        "the kill came with mail still queued ({} accepted, {delivered_before} delivered)",
        accepted.len()
    );

    rig.restart().await;
    rig.wait_all_sent(accepted.len()).await;
    let seen = rig.arrivals();
    for seq in &accepted {
        assert!(
            seen.contains_key(seq),
            "accepted message {seq} never arrived"
        );
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "accepted {}, delivered before the kill {delivered_before}, being sent at the kill {in_flight}, duplicates {duplicates}",
        accepted.len()
    );
    assert!(
        duplicates as i64 <= in_flight,
        "{duplicates} duplicates, but only {in_flight} messages were being sent at the kill"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_what_is_being_sent_and_leaves_the_rest_queued() {
    let mut rig = Rig::start().await;
    let accepted = load(&rig, 150).await.unwrap();
    assert_eq!(accepted.len(), 150);
    sandbox_until(&rig.sandbox.state, "10 messages delivered", |s| {
        s.messages().len() >= 10
    })
    .await;
    let pid = rig.herald.id().expect("running") as i32;
    // SIGTERM, as a service manager stops it.
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), rig.herald.wait())
        .await
        .expect("herald stops within its grace period")
        .unwrap();
    assert!(status.success(), "a clean exit: {status}");
    assert_eq!(
        count(&rig.store, "sending").await,
        0,
        "nothing is left claimed"
    );
    let queued = count(&rig.store, "queued").await;
    rig.restart().await;
    rig.wait_all_sent(accepted.len()).await;
    let seen = rig.arrivals();
    assert_eq!(seen.len(), 150, "all arrived");
    assert!(seen.values().all(|n| *n == 1), "and none twice");
    eprintln!("queued at the stop: {queued}");
    rig.stop().await;
}
