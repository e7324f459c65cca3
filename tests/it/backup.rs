//! Keeping the data, as an operator does it from the README: `herald backup` while Herald
//! serves and accepts mail, `herald restore` into a new data directory (with the master key
//! kept beside the backup, or inside it with `--include-key`), and the refusals that keep a
//! live database safe. These run on SQLite whatever database the suite runs on: backups of a
//! PostgreSQL installation are `pg_dump`'s.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{self, PASSWORD, TestApp, spawn_beside};
use crate::outbox::{Outbox, SUPPORT, simple};

/// A finished `herald` command.
pub(crate) struct Ran {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ran {
    pub(crate) fn succeeds(&self) -> &str {
        assert!(
            self.ok,
            "expected success:\n{}\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    pub(crate) fn fails_with(&self, needles: &[&str]) {
        assert!(
            !self.ok,
            "expected failure:\n{}\n{}",
            self.stdout, self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "stderr should mention {needle:?}:\n{}",
                self.stderr
            );
        }
    }
}

/// Runs `herald args` with exactly the `HERALD_*` variables of `env`.
pub(crate) async fn herald(env: &BTreeMap<String, String>, args: &[&str]) -> Ran {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env).stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`herald {}` did not finish", args.join(" ")))
        .expect("run herald");
    Ran {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The environment of a `herald` command on the SQLite database in `data_dir`.
pub(crate) fn sqlite_env(data_dir: &Path) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("HERALD_DATA_DIR".into(), data_dir.display().to_string()),
        (
            "HERALD_DATABASE_URL".into(),
            format!("sqlite://{}", data_dir.join("herald.db").display()),
        ),
        ("HERALD_LOG".into(), "warn".into()),
    ])
}

/// Herald beside `sandbox`, on SQLite in `data_dir` (its key file there too), with `extra`
/// settings.
pub(crate) async fn on_sqlite(
    sandbox: &herald::sandbox::RunningSandbox,
    data_dir: &Path,
    extra: &[(&str, &str)],
) -> TestApp {
    spawn_beside(sandbox, |env| {
        env.extend(sqlite_env(data_dir));
        env.insert("HERALD_LOG".into(), "warn".into());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
    })
    .await
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"))
        .expect("manifest is JSON")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// The key lines of a key file.
fn keys_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("key file")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

async fn get(app: &TestApp, key: &str, path: &str) -> (u16, Value) {
    let response = app
        .client()
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_backup_taken_while_herald_serves_restores_into_a_new_data_dir_with_mail_and_secrets() {
    let (sandbox, _) = helpers::start_sandbox().await;
    let live = tempfile::tempdir().unwrap();
    let app = on_sqlite(&sandbox, live.path(), &[]).await;
    let o = Outbox::with(app, sandbox).await;
    let support = o.oauth_mailbox(&o.admin, "Support", SUPPORT).await;
    o.app.user(o.org, "admin@contoso.com", "admin").await;
    // Fabrikam has no mailbox yet: its mail is held.
    let fabrikam = o.app.org("Fabrikam").await;
    let fabrikam_key = o.app.key(fabrikam, "admin").await;
    let held = o
        .accepted(
            &fabrikam_key,
            simple("carol@example.com", "Held for Fabrikam"),
        )
        .await;
    assert_eq!(o.message(&fabrikam_key, &held).await["status"], "held");
    let mut before = vec![held.clone()];
    for i in 0..5 {
        before.push(
            o.accepted(&o.admin, simple("bob@example.com", &format!("Before #{i}")))
                .await,
        );
    }
    let key_id = o.app.state.access.keys.active().id().to_string();

    // The backup runs as its own process while this Herald keeps accepting mail.
    let env = sqlite_env(live.path());
    let backups = tempfile::tempdir().unwrap();
    let plain = backups.path().join("plain");
    let plain_arg = plain.display().to_string();
    let accepting = async {
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(
                o.accepted(&o.admin, simple("bob@example.com", &format!("During #{i}")))
                    .await,
            );
        }
        ids
    };
    let args = ["backup", plain_arg.as_str()];
    let (ran, during) = tokio::join!(herald(&env, &args), accepting);
    let out = ran.succeeds();
    assert!(out.contains(&key_id), "names the key to keep: {out}");
    assert!(!ran.stderr.contains("WARNING"), "{}", ran.stderr);
    let m = manifest(&plain);
    assert_eq!(m["format"], "herald-backup-1");
    assert_eq!(m["herald_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(m["key_ids"], serde_json::json!([key_id]));
    assert_eq!(m["includes_master_key"], false);
    assert_eq!(m["tables"]["mailboxes"], 1);
    assert_eq!(m["tables"]["organizations"], 2);
    let messages_copied = m["tables"]["messages"].as_i64().unwrap();
    assert!(
        (before.len() as i64..=(before.len() + during.len()) as i64).contains(&messages_copied),
        "{messages_copied} messages"
    );
    assert!(m["schema_version"].as_i64().unwrap() > 0);
    assert!(m["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(
        !plain.join("master.key").exists(),
        "no key without --include-key"
    );
    assert_eq!(mode(&plain), 0o700);
    assert_eq!(mode(&plain.join("herald.db")), 0o600);
    assert_eq!(mode(&plain.join("manifest.json")), 0o600);
    // A second backup to the same place needs --force.
    herald(&env, &["backup", &plain_arg])
        .await
        .fails_with(&["already exists", "--force"]);

    // With --include-key, the key comes along, loudly.
    let keyed = backups.path().join("keyed");
    let keyed_arg = keyed.display().to_string();
    let ran = herald(&env, &["backup", &keyed_arg, "--include-key"]).await;
    ran.succeeds();
    assert!(
        ran.stderr.contains("WARNING") && ran.stderr.contains("open every stored"),
        "{}",
        ran.stderr
    );
    assert_eq!(manifest(&keyed)["includes_master_key"], true);
    assert_eq!(mode(&keyed.join("master.key")), 0o600);
    assert_eq!(
        keys_in(&keyed.join("master.key")),
        keys_in(&live.path().join("master.key"))
    );

    // Restoring over the serving database is refused, with or without --force, and harms
    // nothing.
    herald(&env, &["restore", &plain_arg])
        .await
        .fails_with(&["Herald is running", "stop every `herald serve`"]);
    herald(&env, &["restore", &plain_arg, "--force"])
        .await
        .fails_with(&["open in another process"]);
    o.accepted(&o.admin, simple("bob@example.com", "After the refusals"))
        .await;

    // Into a new data directory: refused until the key is there, then restored.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_env = sqlite_env(fresh.path());
    herald(&fresh_env, &["restore", &plain_arg])
        .await
        .fails_with(&[&key_id, "master.key"]);
    assert!(!fresh.path().join("herald.db").exists());
    std::fs::copy(
        live.path().join("master.key"),
        fresh.path().join("master.key"),
    )
    .unwrap();
    let out = herald(&fresh_env, &["restore", &plain_arg]).await;
    assert!(out.succeeds().contains("Restored"), "{}", out.stdout);
    assert_eq!(mode(&fresh.path().join("herald.db")), 0o600);

    // The backup with its key restores into an empty data directory, key included.
    let bare = tempfile::tempdir().unwrap();
    let out = herald(&sqlite_env(bare.path()), &["restore", &keyed_arg]).await;
    assert!(out.succeeds().contains("master key"), "{}", out.stdout);
    assert_eq!(
        keys_in(&bare.path().join("master.key")),
        keys_in(&live.path().join("master.key"))
    );

    // Herald on the restored data: the mailbox, the key, the user, the mail, the secrets.
    let Outbox {
        app,
        sandbox,
        admin,
        ..
    } = o;
    app.stop().await;
    let restored = on_sqlite(&sandbox, fresh.path(), &[]).await;
    let (status, list) = get(&restored, &admin, "/api/v1/mailboxes").await;
    assert_eq!(status, 200, "the API key still works: {list}");
    assert!(list.to_string().contains("Support"), "{list}");
    for id in &before {
        let (status, _) = get(&restored, &admin, &format!("/api/v1/messages/{id}")).await;
        let fab = get(&restored, &fabrikam_key, &format!("/api/v1/messages/{id}"))
            .await
            .0;
        assert!(
            status == 200 || fab == 200,
            "message {id} accepted before the backup is restored"
        );
    }
    let (_, message) = get(
        &restored,
        &fabrikam_key,
        &format!("/api/v1/messages/{held}"),
    )
    .await;
    assert_eq!(message["status"], "held", "{message}");
    // The sealed tokens open with the restored key: the mailbox verifies against the sandbox.
    let verified: Value = restored
        .client()
        .post(restored.url(&format!("/api/v1/mailboxes/{support}/verify")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verified["status"], "verified", "{verified}");
    let browser = restored.browser();
    let signed_in = restored
        .sign_in(&browser, "admin@contoso.com", PASSWORD)
        .await;
    assert_eq!(
        signed_in.status(),
        303,
        "the user signs in on the restored data"
    );
    restored.stop().await;
}

#[tokio::test]
async fn restore_keeps_the_replaced_database_aside_and_refuses_what_it_cannot_use() {
    let data = tempfile::tempdir().unwrap();
    let env = sqlite_env(data.path());
    herald(&env, &["org", "add", "Contoso"]).await.succeeds();
    let backups = tempfile::tempdir().unwrap();
    let backup = backups.path().join("b1");
    let arg = backup.display().to_string();
    herald(&env, &["backup", &arg]).await.succeeds();
    herald(&env, &["org", "add", "Fabrikam"]).await.succeeds();

    // Restored over a stopped database: the later organization is gone, the old file kept.
    let out = herald(&env, &["restore", &arg]).await;
    assert!(out.succeeds().contains("kept at"), "{}", out.stdout);
    let orgs = herald(&env, &["org", "list"]).await;
    assert!(
        orgs.succeeds().contains("Contoso") && !orgs.stdout.contains("Fabrikam"),
        "{}",
        orgs.stdout
    );
    let aside: Vec<String> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("herald.db.before-restore-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = herald(
        &BTreeMap::from([
            ("HERALD_DATA_DIR".into(), data.path().display().to_string()),
            (
                "HERALD_DATABASE_URL".into(),
                format!("sqlite://{}", data.path().join(&aside[0]).display()),
            ),
            ("HERALD_LOG".into(), "warn".into()),
        ]),
        &["org", "list"],
    )
    .await;
    assert!(
        kept.succeeds().contains("Fabrikam"),
        "the replaced database is whole: {}",
        kept.stdout
    );

    // A backup from a newer Herald is refused.
    let newer = backups.path().join("newer");
    std::fs::create_dir(&newer).unwrap();
    for f in ["herald.db", "manifest.json"] {
        std::fs::copy(backup.join(f), newer.join(f)).unwrap();
    }
    {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&format!(
            "sqlite://{}",
            newer.join("herald.db").display()
        ))
        .await
        .unwrap();
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (99999, 'from the future', TRUE, x'00', 0)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    herald(&env, &["restore", &newer.display().to_string()])
        .await
        .fails_with(&["newer Herald", "99999"]);

    // A backup that does not match its manifest is refused.
    let mut m = manifest(&backup);
    m["tables"]["organizations"] = 7.into();
    std::fs::write(newer.join("manifest.json"), m.to_string()).unwrap();
    std::fs::copy(backup.join("herald.db"), newer.join("herald.db")).unwrap();
    herald(&env, &["restore", &newer.display().to_string()])
        .await
        .fails_with(&["does not match its manifest"]);

    // PostgreSQL is pg_dump's.
    let mut pg = env.clone();
    pg.insert(
        "HERALD_DATABASE_URL".into(),
        "postgres://herald@127.0.0.1:1/herald".into(),
    );
    herald(
        &pg,
        &["backup", &backups.path().join("pg").display().to_string()],
    )
    .await
    .fails_with(&["pg_dump"]);
    herald(&pg, &["restore", &arg])
        .await
        .fails_with(&["pg_restore"]);
}
