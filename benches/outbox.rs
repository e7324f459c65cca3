//! The outbox's benchmark: `cargo bench --bench outbox`.
//!
//! For SQLite, then PostgreSQL (`BENCH_POSTGRES_URL`, default the local server's `test`
//! database, in which a database of its own is made and dropped), against one local XOAUTH2
//! sink (the sandbox's SMTP server, in this process), Herald (`herald serve`, a process of its
//! own) with one OAuth2 mailbox, throttling off:
//!
//! - **(a) accept**: `BENCH_MESSAGES` messages (default 10,000) POSTed to `/api/v1/messages` by
//!   `BENCH_CLIENTS` concurrent clients (default 32), every other one with an
//!   `Idempotency-Key`; each `202` comes after the durable commit. Delivery is paused meanwhile
//!   (the mailbox backs off, as after a rate-limit reply), so the queue fills. Messages per
//!   second, and the latency's p50 and p99.
//! - **(b) delivery** from that pre-filled queue: the back-off is lifted and one more message
//!   POSTed wakes the outbox; from that POST until the sink has every message. Beside a direct
//!   client sending as many messages to the same (emptied) sink over as many sessions as
//!   Herald's lanes (`BENCH_LANES`, default 10), once before Herald's run and once after (the
//!   mean of both), as a ratio.
//! - **CPU**: Herald's user + system time over (a) and (b), per message.
//! - **(c) tokens**: the token requests Herald made during the run, per mailbox.
//!
//! The figures are also written to `target/bench/outbox.json`. `BENCH_HERALD_BIN` runs another
//! build of Herald (an earlier commit's, to compare before and after).

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use serde_json::json;

use common::{Herald, USER, env_usize, wait_for_sink};

struct Figures {
    accept_rate: f64,
    p50: Duration,
    p99: Duration,
    delivery_rate: f64,
    direct_rate: f64,
    direct_before: f64,
    direct_after: f64,
    token_requests: u64,
    cpu_per_message: f64,
}

impl Figures {
    fn json(&self) -> serde_json::Value {
        json!({
            "accept_per_second": self.accept_rate.round(),
            "accept_p50_ms": self.p50.as_secs_f64() * 1000.0,
            "accept_p99_ms": self.p99.as_secs_f64() * 1000.0,
            "delivery_per_second": self.delivery_rate.round(),
            "direct_per_second": self.direct_rate.round(),
            "direct_before_per_second": self.direct_before.round(),
            "direct_after_per_second": self.direct_after.round(),
            "delivery_ratio": self.delivery_rate / self.direct_rate,
            "cpu_ms_per_message": self.cpu_per_message,
            "token_requests": self.token_requests,
        })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The limit: a client sending `messages + 1` messages (as many as Herald delivers) straight
/// to the emptied sink over `sessions` sessions, with a token the sandbox issued. Messages per
/// second.
async fn direct_rate(
    sandbox: &herald::sandbox::RunningSandbox,
    client_id: &str,
    messages: usize,
    sessions: usize,
) -> f64 {
    let direct = common::direct(sandbox, client_id);
    sandbox.state.clear_messages();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..sessions)
        .map(|_| {
            let (direct, next) = (direct.clone(), next.clone());
            tokio::spawn(async move {
                let mut conn = direct.session().await;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i > messages {
                        let _ = conn.quit().await;
                        return;
                    }
                    let envelope = Envelope::new(
                        Some(USER.parse().unwrap()),
                        vec!["archive@example.com".parse().unwrap()],
                    )
                    .unwrap();
                    let body = format!(
                        "From: {USER}\r\nTo: archive@example.com\r\nSubject: Report {i}\r\nMessage-ID: <direct-{i}@contoso.com>\r\n\r\n{}",
                        "The numbers of the day, in a line of text.\r\n".repeat(20)
                    );
                    conn.send(&envelope, body.as_bytes()).await.expect("250");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    wait_for_sink(sandbox, messages + 1).await;
    (messages + 1) as f64 / started.elapsed().as_secs_f64()
}

/// Holds or lets go the mailbox's delivery, as a rate-limit reply's back-off does: the
/// dispatcher starts no lane for a mailbox backing off.
async fn back_off(herald: &Herald, until_ms: i64) {
    let store = herald::store::Store::connect(
        &herald::store::DatabaseUrl::parse(&herald.database).unwrap(),
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO mailbox_throttle (mailbox_id, backoff_until) VALUES ($1, $2) \
         ON CONFLICT (mailbox_id) DO UPDATE SET backoff_until = $2",
    )
    .bind(&herald.mailbox)
    .bind(until_ms)
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;
}

async fn post(http: &reqwest::Client, herald: &Herald, i: usize, keyed: bool) {
    let mut request = http
        .post(format!("{}/api/v1/messages", herald.url))
        .bearer_auth(&herald.api_key)
        .json(&json!({
            "to": "archive@example.com",
            "subject": format!("Report {i}"),
            "text": "The numbers of the day, in a line of text.\n".repeat(20),
        }));
    if keyed {
        request = request.header("Idempotency-Key", format!("bench-{i}"));
    }
    let response = request.send().await.expect("POST");
    assert_eq!(
        response.status(),
        202,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

async fn run(
    sandbox: &herald::sandbox::RunningSandbox,
    sandbox_url: &str,
    database: Option<String>,
    messages: usize,
    clients: usize,
    lanes: usize,
) -> Figures {
    let herald =
        Arc::new(Herald::start(sandbox, sandbox_url, database, lanes as u32, |_| Vec::new()).await);
    let tokens_before = sandbox.state.token_requests();
    // The direct client before and after Herald, and the mean of both: whatever the machine
    // is busy with around Herald's run (its database settling) weighs on both sides alike.
    let direct_before = direct_rate(sandbox, &herald.client_id, messages, lanes).await;
    let (cpu_before, _, _) = common::usage(herald.pid);
    let hour_ahead =
        (herald::clock::system_now() + time::Duration::hours(1)).unix_timestamp() * 1000;
    back_off(&herald, hour_ahead).await;

    // (a) the accepts, into a paused queue (and a sink emptied of earlier runs).
    sandbox.state.clear_messages();
    let before = 0;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, next, herald) = (http.clone(), next.clone(), herald.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= messages {
                        return latencies;
                    }
                    let t = Instant::now();
                    post(&http, &herald, i, i % 2 == 0).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(messages);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let accepted_in = started.elapsed();
    latencies.sort_unstable();
    assert_eq!(
        sandbox.state.message_count(),
        before,
        "delivery was to wait until the queue was full"
    );

    // (b) delivery from the full queue: the back-off ends, and one more message wakes it.
    back_off(&herald, 0).await;
    let started = Instant::now();
    post(&http, &herald, messages, false).await;
    wait_for_sink(sandbox, before + messages + 1).await;
    let delivered_in = started.elapsed();
    let (cpu_after, _, _) = common::usage(herald.pid);
    let token_requests = sandbox.state.token_requests() - tokens_before;
    let direct_after = direct_rate(sandbox, &herald.client_id, messages, lanes).await;
    Arc::into_inner(herald)
        .expect("the clients are done")
        .stop()
        .await;
    Figures {
        accept_rate: messages as f64 / accepted_in.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        delivery_rate: (messages + 1) as f64 / delivered_in.as_secs_f64(),
        direct_rate: (direct_before + direct_after) / 2.0,
        direct_before,
        direct_after,
        token_requests,
        cpu_per_message: (cpu_after - cpu_before).as_secs_f64() * 1000.0 / (messages + 1) as f64,
    }
}

/// A PostgreSQL database of the benchmark's own, or why there is none.
async fn postgres_database() -> Result<(String, String, String), String> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let admin = std::env::var("BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .map_err(|e| format!("{admin}: {e}"))?;
    let name = format!("herald_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let mut url = url::Url::parse(&admin).map_err(|e| e.to_string())?;
    url.set_path(&name);
    Ok((url.to_string(), admin, name))
}

async fn drop_database(admin: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::AnyConnection::connect(admin).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    herald::tls::install_crypto_provider();
    let messages = env_usize("BENCH_MESSAGES", 10_000);
    let clients = env_usize("BENCH_CLIENTS", 32);
    let lanes = env_usize("BENCH_LANES", 10);
    let (sandbox, sandbox_url) = common::sink().await;

    println!(
        "Outbox benchmark: {messages} messages, {clients} concurrent API clients, {lanes} lanes; one XOAUTH2 sink."
    );
    println!(
        "machine: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!();
    println!(
        "{:<11} {:>12} {:>9} {:>9} {:>14} {:>26} {:>7} {:>15} {:>16}",
        "database",
        "accept msg/s",
        "p50",
        "p99",
        "delivery msg/s",
        "direct msg/s (before/after)",
        "ratio",
        "herald CPU/msg",
        "token requests"
    );
    let print = |name: &str, f: &Figures| {
        println!(
            "{name:<11} {:>12.0} {:>9.1?} {:>9.1?} {:>14.0} {:>26} {:>6.2}x {:>12.3} ms {:>16}",
            f.accept_rate,
            f.p50,
            f.p99,
            f.delivery_rate,
            format!(
                "{:.0} ({:.0}/{:.0})",
                f.direct_rate, f.direct_before, f.direct_after
            ),
            f.delivery_rate / f.direct_rate,
            f.cpu_per_message,
            format!("{} (1 mailbox)", f.token_requests),
        );
    };
    let mut figures = serde_json::Map::new();
    figures.insert(
        "setup".into(),
        json!({"messages": messages, "clients": clients, "lanes": lanes, "keyed": "every other request",
               "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)}),
    );
    let sqlite = run(&sandbox, &sandbox_url, None, messages, clients, lanes).await;
    print("SQLite", &sqlite);
    figures.insert("sqlite".into(), sqlite.json());
    match postgres_database().await {
        Ok((url, admin, name)) => {
            let postgres = run(&sandbox, &sandbox_url, Some(url), messages, clients, lanes).await;
            print("PostgreSQL", &postgres);
            figures.insert("postgres".into(), postgres.json());
            drop_database(&admin, &name).await;
        }
        Err(why) => println!("PostgreSQL is left out of this run: {why}"),
    }
    common::write_figures("outbox", serde_json::Value::Object(figures));
}
