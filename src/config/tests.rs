//! Unit tests of the configuration: defaults, precedence, and the message of each refusal.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;

use super::*;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_need_no_setup() {
    let config = Config::load(None, &env(&[])).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.public_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(
        config.redirect_uri(),
        "http://127.0.0.1:8080/web/um/smtp/redirect"
    );
    assert_eq!(
        config.database_url,
        DatabaseUrl::Sqlite(PathBuf::from("./herald-data/herald.db"))
    );
    assert!(!config.dev);
    assert!(config.master_key.is_none());
}

#[test]
fn an_unset_public_url_follows_the_bound_address() {
    let mut config = Config::load(None, &env(&[("HERALD_LISTEN", "0.0.0.0:0")])).unwrap();
    config.adopt_bound_address("0.0.0.0:41234".parse().unwrap());
    assert_eq!(config.public_base(), "http://127.0.0.1:41234");
    let mut config = Config::load(
        None,
        &env(&[("HERALD_PUBLIC_URL", "https://mail.example.com")]),
    )
    .unwrap();
    config.adopt_bound_address("0.0.0.0:41234".parse().unwrap());
    assert_eq!(config.public_base(), "https://mail.example.com");
    let mut sandbox = Config::load(None, &env(&[])).unwrap().sandbox;
    assert_eq!(sandbox.public_url.as_str(), "http://localhost:8081/");
    sandbox.adopt_bound_address("127.0.0.1:5555".parse().unwrap());
    assert_eq!(sandbox.public_url.as_str(), "http://localhost:5555/");
}

#[test]
fn sandbox_switches_come_from_the_environment_or_the_file() {
    let config = Config::load(
        None,
        &env(&[("HERALD_SANDBOX_SWITCHES", r#"{"smtp_auth_disabled": true}"#)]),
    )
    .unwrap();
    assert_eq!(config.sandbox.switches.unwrap()["smtp_auth_disabled"], true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "[sandbox_switches]\nmessages_per_minute = 5\n").unwrap();
    let config = Config::load(Some(&path), &env(&[])).unwrap();
    assert_eq!(config.sandbox.switches.unwrap()["messages_per_minute"], 5);
    let err = Config::load(None, &env(&[("HERALD_SANDBOX_SWITCHES", "yes")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("HERALD_SANDBOX_SWITCHES"), "{err}");
}

#[test]
fn environment_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nlog = \"debug\"\n").unwrap();
    let config = Config::load(Some(&path), &env(&[("HERALD_LISTEN", "0.0.0.0:7000")])).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:7000");
    assert_eq!(config.log, "debug");
}

#[test]
fn unknown_file_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "listn = \"127.0.0.1:9000\"\n").unwrap();
    let err = Config::load(Some(&path), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("listn"), "{err}");
}

#[test]
fn unknown_environment_variable_is_named() {
    let err = Config::load(None, &env(&[("HERALD_LISTN", "x")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("HERALD_LISTN"), "{err}");
}

#[test]
fn unsupported_database_is_refused() {
    let err = Config::load(None, &env(&[("HERALD_DATABASE_URL", "mysql://x/y")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsupported database `mysql`"), "{err}");
}

#[test]
fn master_key_must_be_32_bytes() {
    let err = Config::load(None, &env(&[("HERALD_MASTER_KEY", "c2hvcnQ=")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly 32 bytes"), "{err}");
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let config = Config::load(None, &env(&[("HERALD_MASTER_KEY", &key)])).unwrap();
    assert_eq!(config.master_key.unwrap().0.as_slice(), &[7u8; 32]);
}

#[test]
fn master_key_never_reaches_debug_output() {
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let config = Config::load(None, &env(&[("HERALD_MASTER_KEY", &key)])).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(&key));
    assert!(debug.contains("REDACTED"));
}

#[test]
fn postgres_query_secrets_are_redacted_and_the_rest_still_shown() {
    let url = DatabaseUrl::parse(
        "postgres://herald:userinfo-secret@db.internal:5433/herald?password=hunter2&sslmode=verify-full&sslrootcert=/etc/ca.pem&options=-c%20x%3Dsecret&application_name=herald",
    )
    .unwrap();
    let shown = format!("{url:?}");
    for secret in ["userinfo-secret", "hunter2", "x%3Dsecret", "x=secret"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    assert_eq!(
        shown,
        "postgres://herald:REDACTED@db.internal:5433/herald?password=REDACTED&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&options=REDACTED&application_name=herald"
    );
    let config = Config::load(
        None,
        &env(&[(
            "HERALD_DATABASE_URL",
            "postgresql://db/herald?password=hunter2",
        )]),
    )
    .unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn an_unknown_postgres_parameter_is_refused_by_name_not_value() {
    let err = Config::load(
        None,
        &env(&[(
            "HERALD_DATABASE_URL",
            "postgres://db/herald?sslmode=verify-full&sslpassword=hunter2",
        )]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("HERALD_DATABASE_URL"), "{err}");
    assert!(err.contains("`sslpassword`"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(
        DatabaseUrl::parse(
            "postgres://db/herald?sslmode=verify-full&options[statement_timeout]=5s"
        )
        .is_ok()
    );
}

#[test]
fn trusted_proxies_accept_addresses_and_ranges() {
    let config = Config::load(
        None,
        &env(&[("HERALD_TRUSTED_PROXIES", "10.0.0.1, 192.168.0.0/16")]),
    )
    .unwrap();
    assert_eq!(config.trusted_proxies.len(), 2);
    assert!(
        Config::load(None, &env(&[("HERALD_TRUSTED_PROXIES", "nope")]))
            .unwrap_err()
            .to_string()
            .contains("HERALD_TRUSTED_PROXIES")
    );
}

#[test]
fn malformed_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "listen = \n").unwrap();
    let err = Config::load(Some(&path), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("herald.toml"), "{err}");
}

#[test]
fn organization_limits_have_defaults_and_are_checked() {
    let config = Config::load(None, &env(&[])).unwrap();
    assert_eq!(config.outbox.default_sender_orgs, DefaultSenderOrgs::Listed);
    assert_eq!(config.outbox.default_sender_daily, 1_000);
    assert_eq!(config.outbox.org_max_queued_bytes, 1 << 30);
    assert_eq!(config.outbox.org_max_queued_messages, 100_000);
    assert_eq!(config.api_rate_per_minute, 6_000);
    let config = Config::load(None, &env(&[("HERALD_DEFAULT_SENDER_ORGS", "all")])).unwrap();
    assert_eq!(config.outbox.default_sender_orgs, DefaultSenderOrgs::All);
    let err = Config::load(None, &env(&[("HERALD_DEFAULT_SENDER_ORGS", "some")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("HERALD_DEFAULT_SENDER_ORGS"), "{err}");
    let err = Config::load(
        None,
        &env(&[
            ("HERALD_MAX_MESSAGE_BYTES", "10000"),
            ("HERALD_ORG_MAX_QUEUED_BYTES", "5000"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("less than HERALD_MAX_MESSAGE_BYTES"), "{err}");
    let err = Config::load(None, &env(&[("HERALD_API_RATE_PER_MINUTE", "0")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("HERALD_API_RATE_PER_MINUTE"), "{err}");
}
