//! The database: reachable, at this binary's schema (migrations are reported, never applied),
//! and whether a `herald serve` reports in.

use time::OffsetDateTime;

use super::{Check, DEADLINE};
use crate::config::Config;
use crate::store::instances::HEARTBEAT_STALE;
use crate::store::{self, DatabaseUrl, Store};

const NAME: &str = "database";

/// Connects and compares the schema with this binary's migrations. Answers the store only when
/// the schema is current, for the checks that read it.
pub(super) async fn check(config: &Config) -> (Check, Option<Store>) {
    let url = &config.database_url;
    if let DatabaseUrl::Sqlite(path) = url
        && !path.exists()
    {
        // Connecting would create it: the doctor changes nothing.
        return (
            Check::fail(
                NAME,
                format!("{url:?}: there is no database file"),
                "run `herald migrate` to create it (`herald serve` does too), or point HERALD_DATABASE_URL (or HERALD_DATA_DIR) at the existing database",
            ),
            None,
        );
    }
    let store = match tokio::time::timeout(DEADLINE, Store::connect(url)).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => return (unreachable(url, &e.to_string()), None),
        Err(_) => return (unreachable(url, "no answer within 10 s"), None),
    };
    let state = match tokio::time::timeout(DEADLINE, store::schema::state(&store)).await {
        Ok(Ok(state)) => state,
        Ok(Err(e)) => {
            store.close().await;
            return (unreachable(url, &e.to_string()), None);
        }
        Err(_) => {
            store.close().await;
            return (unreachable(url, "no answer within 10 s"), None);
        }
    };
    let at = format!(
        "schema at migration {} ({} of {} applied)",
        state.latest_applied.unwrap_or(0),
        state.applied,
        state.known
    );
    let versions = |v: &[i64]| match v {
        [first, .., last] if v.len() > 4 => format!("{first} to {last}"),
        _ => v
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    };
    let check = if !state.unknown.is_empty() {
        Check::fail(
            NAME,
            format!(
                "{url:?}: a newer Herald migrated this database (migration {} is unknown to this binary, whose latest is {})",
                versions(&state.unknown),
                state.latest_known.unwrap_or(0)
            ),
            "run the Herald version that migrated this database, or a newer one: an older binary must not write to it",
        )
    } else if !state.failed.is_empty() {
        Check::fail(
            NAME,
            format!(
                "{url:?}: migration {} began but did not finish",
                versions(&state.failed)
            ),
            "restore the database from the backup taken before the upgrade, then run `herald migrate` and read its error",
        )
    } else if !state.changed.is_empty() {
        Check::fail(
            NAME,
            format!(
                "{url:?}: migration {} was applied from another text than this binary's",
                versions(&state.changed)
            ),
            "run the Herald build this database was migrated with: `herald serve` refuses a database whose migrations differ",
        )
    } else if !state.pending.is_empty() {
        Check::fail(
            NAME,
            format!(
                "{url:?}: {at}, {} pending ({})",
                state.pending.len(),
                versions(&state.pending)
            ),
            "run `herald migrate` (`herald serve` also applies them when it starts)",
        )
    } else {
        Check::ok(NAME, format!("{url:?}, {at}"))
    };
    if state.is_current() {
        (check, Some(store))
    } else {
        store.close().await;
        (check, None)
    }
}

fn unreachable(url: &DatabaseUrl, cause: &str) -> Check {
    Check::fail(
        NAME,
        format!("cannot open {url:?}: {cause}"),
        match url {
            DatabaseUrl::Sqlite(_) => {
                "check that the file and its directory are readable and writable by the user Herald runs as"
            }
            DatabaseUrl::Postgres(_) => {
                "check HERALD_DATABASE_URL (host, port, user, password, database, sslmode) and that the PostgreSQL server runs and accepts connections from this machine"
            }
        },
    )
}

/// Whether a `herald serve` reports in: information, since the command line works without
/// one, but nothing is delivered until one runs.
pub(super) async fn instances(store: &Store, now: OffsetDateTime) -> Check {
    const NAME: &str = "herald serve";
    let reported = async {
        let mut conn = store.conn().await?;
        store::instances::reported(&mut conn).await
    };
    let instances = match reported.await {
        Ok(instances) => instances,
        Err(e) => {
            return Check::warn(
                NAME,
                format!("cannot read the instances: {e}"),
                "check the database",
            );
        }
    };
    let alive: Vec<String> = instances
        .iter()
        .filter(|i| i.heartbeat_at >= now - HEARTBEAT_STALE)
        .map(|i| {
            format!(
                "pid {} on {}, heard from {} s ago",
                i.pid,
                i.hostname,
                (now - i.heartbeat_at).whole_seconds().max(0)
            )
        })
        .collect();
    if alive.is_empty() {
        Check::warn(
            NAME,
            format!(
                "no instance has reported in the last {} s: accepted mail waits until one runs",
                HEARTBEAT_STALE.whole_seconds()
            ),
            "start `herald serve` (or check why it stopped: its log, the service manager)",
        )
    } else {
        Check::ok(NAME, format!("running: {}", alive.join("; ")))
    }
}
