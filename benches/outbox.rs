//! The outbox's benchmark: `cargo bench --bench outbox`.
//!
//! For SQLite, then PostgreSQL (`BENCH_POSTGRES_URL`, default the local server's `test`
//! database, in which a database of its own is made and dropped), against one local XOAUTH2
//! sink (the sandbox's SMTP server, in this process), Herald (`herald serve`, a process of its
//! own) with one OAuth2 mailbox, throttling off:
//!
//! - **(a) accept**: `BENCH_MESSAGES` messages (default 5,000) POSTed to `/api/v1/messages` by
//!   `BENCH_CLIENTS` concurrent clients (default 32); each `202` comes after the durable
//!   commit. Messages per second, and the latency's p50 and p99.
//! - **(b) delivery**: from the first POST until the sink has every message, side by side with a
//!   direct client sending the same number of messages to the sink over as many sessions as
//!   Herald's lanes (`BENCH_LANES`, default 10), as a ratio.
//! - **(c) tokens**: the token requests Herald made during the run, per mailbox.

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
    token_requests: u64,
    cpu_per_message: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(
    sandbox: &herald::sandbox::RunningSandbox,
    sandbox_url: &str,
    database: Option<String>,
    messages: usize,
    clients: usize,
    lanes: usize,
) -> Figures {
    let herald = Herald::start(sandbox, sandbox_url, database, lanes as u32, |_| Vec::new()).await;
    let tokens_before = sandbox.state.token_requests();
    let (cpu_before, _, _) = common::usage(herald.pid);

    // (a) and (b): the accepts, and the deliveries they start.
    let before = sandbox.state.messages().len();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, next) = (http.clone(), next.clone());
            let url = format!("{}/api/v1/messages", herald.url);
            let key = herald.api_key.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= messages {
                        return latencies;
                    }
                    let t = Instant::now();
                    let response = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&json!({
                            "to": "archive@example.com",
                            "subject": format!("Report {i}"),
                            "text": "The numbers of the day, in a line of text.\n".repeat(20),
                        }))
                        .send()
                        .await
                        .expect("POST");
                    assert_eq!(
                        response.status(),
                        202,
                        "{}",
                        response.text().await.unwrap_or_default()
                    );
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
    wait_for_sink(sandbox, before + messages).await;
    let delivered_in = started.elapsed();
    let (cpu_after, _, _) = common::usage(herald.pid);
    let token_requests = sandbox.state.token_requests() - tokens_before;
    latencies.sort_unstable();

    // The direct client: the same number of messages over as many sessions as Herald's lanes.
    let direct = common::direct(sandbox, &herald.client_id);
    let before = sandbox.state.messages().len();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..lanes)
        .map(|_| {
            let (direct, next) = (direct.clone(), next.clone());
            tokio::spawn(async move {
                let mut conn = direct.session().await;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= messages {
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
    wait_for_sink(sandbox, before + messages).await;
    let direct_rate = messages as f64 / started.elapsed().as_secs_f64();
    herald.stop().await;
    Figures {
        accept_rate: messages as f64 / accepted_in.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        delivery_rate: messages as f64 / delivered_in.as_secs_f64(),
        direct_rate,
        token_requests,
        cpu_per_message: (cpu_after - cpu_before).as_secs_f64() * 1000.0 / messages as f64,
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
    let messages = env_usize("BENCH_MESSAGES", 5_000);
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
        "{:<11} {:>12} {:>9} {:>9} {:>14} {:>12} {:>7} {:>15} {:>16}",
        "database",
        "accept msg/s",
        "p50",
        "p99",
        "delivery msg/s",
        "direct msg/s",
        "ratio",
        "herald CPU/msg",
        "token requests"
    );
    let print = |name: &str, f: &Figures| {
        println!(
            "{name:<11} {:>12.0} {:>9.1?} {:>9.1?} {:>14.0} {:>12.0} {:>6.2}x {:>12.3} ms {:>16}",
            f.accept_rate,
            f.p50,
            f.p99,
            f.delivery_rate,
            f.direct_rate,
            f.delivery_rate / f.direct_rate,
            f.cpu_per_message,
            format!("{} (1 mailbox)", f.token_requests),
        );
    };
    let sqlite = run(&sandbox, &sandbox_url, None, messages, clients, lanes).await;
    print("SQLite", &sqlite);
    match postgres_database().await {
        Ok((url, admin, name)) => {
            let postgres = run(&sandbox, &sandbox_url, Some(url), messages, clients, lanes).await;
            print("PostgreSQL", &postgres);
            drop_database(&admin, &name).await;
        }
        Err(why) => println!("PostgreSQL is left out of this run: {why}"),
    }
}
