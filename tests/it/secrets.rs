//! Sealed secrets in the database: no plaintext at rest, tamper and mix-up detection, the
//! start-up key check, and key rotation (including an interrupted one).

use base64::Engine as _;
use herald::app::App;
use herald::config::Config;
use herald::keys::{self, KeyError};
use herald::secrets::{KeyRing, MasterKey};
use herald::store::{self, Store};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers::{TestDb, base_env};

const SECRET: &str = "Zx8~Q.client-secret-value.7Hq~";

struct Env {
    db: TestDb,
    data_dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Self {
        Self {
            db: TestDb::new().await,
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self, extra: &[(&str, &str)]) -> Config {
        let mut env = base_env(&self.db, self.data_dir.path());
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        Config::load(None, &env).unwrap()
    }

    async fn store(&self) -> Store {
        let store = Store::connect(&self.db.database_url()).await.unwrap();
        store.migrate().await.unwrap();
        store
    }
}

async fn put(store: &Store, ring: &KeyRing, owner: &str, field: &str, value: &str) {
    let mut conn = store.conn().await.unwrap();
    keys::put_secret(
        &mut conn,
        ring,
        owner,
        field,
        &SecretString::from(value),
        herald::clock::system_now(),
    )
    .await
    .unwrap();
}

async fn get(
    store: &Store,
    ring: &KeyRing,
    owner: &str,
    field: &str,
) -> Result<Option<SecretString>, KeyError> {
    let mut conn = store.conn().await.unwrap();
    keys::get_secret(&mut conn, ring, owner, field).await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_stored_secret_round_trips_and_the_database_never_holds_its_plaintext() {
    let env = Env::new().await;
    let config = env.config(&[]);
    let store = env.store().await;
    let (ring, _) = keys::unlock(&config, &store, herald::clock::system_now())
        .await
        .unwrap();

    put(&store, &ring, "mailbox-1", "client_secret", SECRET).await;
    let opened = get(&store, &ring, "mailbox-1", "client_secret")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(opened.expose_secret(), SECRET);

    store.close().await;
    let raw = env.db.raw_bytes().await;
    assert!(!raw.is_empty());
    assert!(
        !contains(&raw, SECRET.as_bytes()),
        "plaintext found in the database"
    );
    assert!(
        !contains(&raw, b"client-secret-value"),
        "part of the plaintext found in the database"
    );
    // The sealed form is there, naming its key.
    assert!(contains(
        &raw,
        format!("v1.{}.", ring.active().id()).as_bytes()
    ));
}

#[tokio::test]
async fn a_tampered_or_moved_secret_does_not_open() {
    let env = Env::new().await;
    let config = env.config(&[]);
    let store = env.store().await;
    let (ring, _) = keys::unlock(&config, &store, herald::clock::system_now())
        .await
        .unwrap();
    put(&store, &ring, "mailbox-1", "client_secret", SECRET).await;
    put(&store, &ring, "mailbox-2", "client_secret", "other secret").await;

    let mut conn = store.conn().await.unwrap();
    let sealed = store::secrets::get(&mut conn, "mailbox-1", "client_secret")
        .await
        .unwrap()
        .unwrap();

    // Copied onto another record, or another field of the same record.
    sqlx::query("UPDATE secrets SET sealed = $1 WHERE owner_id = 'mailbox-2'")
        .bind(&sealed)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO secrets (owner_id, field, key_id, sealed, updated_at) VALUES ('mailbox-1', 'password', $1, $2, 0)")
        .bind(ring.active().id().as_str())
        .bind(&sealed)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert!(matches!(
        get(&store, &ring, "mailbox-2", "client_secret").await,
        Err(KeyError::Unreadable { .. })
    ));
    assert!(matches!(
        get(&store, &ring, "mailbox-1", "password").await,
        Err(KeyError::Unreadable { .. })
    ));

    // One character changed.
    let mut chars: Vec<char> = sealed.chars().collect();
    let last = chars.len() - 2;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let mut conn = store.conn().await.unwrap();
    sqlx::query(
        "UPDATE secrets SET sealed = $1 WHERE owner_id = 'mailbox-1' AND field = 'client_secret'",
    )
    .bind(&tampered)
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    assert!(matches!(
        get(&store, &ring, "mailbox-1", "client_secret").await,
        Err(KeyError::Unreadable { .. })
    ));
    store.close().await;
}

#[tokio::test]
async fn a_secret_does_not_open_under_another_key() {
    let env = Env::new().await;
    let config = env.config(&[]);
    let store = env.store().await;
    let (ring, _) = keys::unlock(&config, &store, herald::clock::system_now())
        .await
        .unwrap();
    put(&store, &ring, "mailbox-1", "client_secret", SECRET).await;
    let stranger = KeyRing::new(MasterKey::generate());
    assert!(matches!(
        get(&store, &stranger, "mailbox-1", "client_secret").await,
        Err(KeyError::Unreadable { .. })
    ));
    store.close().await;
}

#[tokio::test]
async fn start_up_fails_clearly_with_a_wrong_or_missing_master_key() {
    let env = Env::new().await;
    let key = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
    let first = App::build(env.config(&[("HERALD_MASTER_KEY", &key)]))
        .await
        .unwrap();
    first.state().access.store.close().await;
    drop(first);

    let other = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
    let err = App::build(env.config(&[("HERALD_MASTER_KEY", &other)]))
        .await
        .err()
        .expect("wrong key refused");
    let message = format!("{err:#}");
    assert!(message.contains("wrong master key"), "{message}");
    assert!(message.contains("HERALD_MASTER_KEY"), "{message}");

    // No env key and no key file: refused, not replaced by a fresh key.
    let err = App::build(env.config(&[]))
        .await
        .err()
        .expect("missing key refused");
    let message = format!("{err:#}");
    assert!(message.contains("no master key"), "{message}");
    assert!(
        !env.data_dir.path().join("master.key").exists(),
        "a new key file must not hide the old one"
    );

    let again = App::build(env.config(&[("HERALD_MASTER_KEY", &key)])).await;
    assert!(again.is_ok(), "the right key still works");
}

#[tokio::test]
async fn after_rotation_everything_opens_under_the_new_key_and_nothing_under_the_old() {
    let env = Env::new().await;
    let config = env.config(&[]);
    let store = env.store().await;
    let (old_ring, _) = keys::unlock(&config, &store, herald::clock::system_now())
        .await
        .unwrap();
    for i in 0..5 {
        put(
            &store,
            &old_ring,
            &format!("mailbox-{i}"),
            "refresh_token",
            &format!("token-{i}"),
        )
        .await;
    }

    let rotation = keys::rotate(&config, &store, None, false, herald::clock::system_now())
        .await
        .unwrap();
    assert_eq!(rotation.resealed, 6, "five secrets and the key check");
    assert_eq!(rotation.old_key_ids, vec![old_ring.active().id().clone()]);

    // The key file holds the new key alone.
    let (new_ring, _) = keys::configured_ring(&config).unwrap().unwrap();
    assert_eq!(new_ring.active().id(), rotation.new_key.id());
    assert!(new_ring.older().is_empty());

    for i in 0..5 {
        let value = get(&store, &new_ring, &format!("mailbox-{i}"), "refresh_token")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value.expose_secret(), format!("token-{i}"));
        assert!(
            get(&store, &old_ring, &format!("mailbox-{i}"), "refresh_token")
                .await
                .is_err()
        );
    }
    let mut conn = store.conn().await.unwrap();
    for row in store::secrets::all(&mut conn).await.unwrap() {
        assert_eq!(row.key_id, rotation.new_key.id().as_str());
        assert!(
            old_ring
                .open(&row.owner_id, &row.field, &row.sealed)
                .is_err()
        );
    }
    drop(conn);
    // And the service starts with it.
    store.close().await;
    App::build(config).await.unwrap();
}

#[tokio::test]
async fn an_interrupted_rotation_leaves_every_secret_readable() {
    let env = Env::new().await;
    let config = env.config(&[]);
    let store = env.store().await;
    let (ring, _) = keys::unlock(&config, &store, herald::clock::system_now())
        .await
        .unwrap();
    put(&store, &ring, "mailbox-1", "client_secret", SECRET).await;
    // A value the rotation cannot open makes it fail half-way through its transaction.
    let mut conn = store.conn().await.unwrap();
    sqlx::query("INSERT INTO secrets (owner_id, field, key_id, sealed, updated_at) VALUES ('zz-broken', 'x', $1, 'v1.garbage', 0)")
        .bind(ring.active().id().as_str())
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let err = keys::rotate(&config, &store, None, false, herald::clock::system_now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("zz-broken"), "{err}");

    // The key file now lists the new key first and the old one after it; every value, still
    // sealed under the old key, opens with what is configured, including after a restart.
    let (configured, _) = keys::configured_ring(&config).unwrap().unwrap();
    assert_eq!(configured.older().len(), 1);
    let value = get(&store, &configured, "mailbox-1", "client_secret")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(value.expose_secret(), SECRET);
    let mut conn = store.conn().await.unwrap();
    sqlx::query("DELETE FROM secrets WHERE owner_id = 'zz-broken'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let (restarted, _) = keys::unlock(&config, &store, herald::clock::system_now())
        .await
        .unwrap();
    assert_eq!(
        get(&store, &restarted, "mailbox-1", "client_secret")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        SECRET
    );

    // Running the rotation again completes it.
    let rotation = keys::rotate(&config, &store, None, false, herald::clock::system_now())
        .await
        .unwrap();
    let (ring, _) = keys::configured_ring(&config).unwrap().unwrap();
    assert_eq!(ring.active().id(), rotation.new_key.id());
    assert!(ring.older().is_empty());
    assert_eq!(
        get(&store, &ring, "mailbox-1", "client_secret")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        SECRET
    );
    store.close().await;
}

#[tokio::test]
async fn two_instances_with_different_keys_cannot_both_start_on_a_new_database() {
    let env = Env::new().await;
    let store = env.store().await;
    let one = base64::engine::general_purpose::STANDARD.encode([3u8; 32]);
    let two = base64::engine::general_purpose::STANDARD.encode([4u8; 32]);
    let (config_one, config_two) = (
        env.config(&[("HERALD_MASTER_KEY", &one)]),
        env.config(&[("HERALD_MASTER_KEY", &two)]),
    );
    let (a, b) = tokio::join!(
        keys::unlock(&config_one, &store, herald::clock::system_now()),
        keys::unlock(&config_two, &store, herald::clock::system_now())
    );
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one key may win: {:?} / {:?}",
        a.err(),
        b.err()
    );
    store.close().await;
}

#[tokio::test]
async fn rotation_is_refused_while_herald_is_serving() {
    let app = crate::helpers::spawn_app().await;
    let env = std::collections::BTreeMap::from([
        (
            "HERALD_DATA_DIR".to_owned(),
            app.state.access.config.data_dir.display().to_string(),
        ),
        ("HERALD_DATABASE_URL".to_owned(), app.db.url()),
    ]);
    let config = Config::load(None, &env).unwrap();
    let err = keys::rotate(
        &config,
        app.store(),
        None,
        false,
        herald::clock::system_now(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, KeyError::InstancesRunning(_)), "{err}");
    assert!(
        err.to_string().contains("stop every `herald serve`"),
        "{err}"
    );
    // Once it has stopped, the rotation runs.
    let _kept = app.stop().await;
    let store = Store::connect(&config.database_url).await.unwrap();
    keys::rotate(&config, &store, None, false, herald::clock::system_now())
        .await
        .expect("no instance left");
    store.close().await;
}
