//! Which database the store opens: [`DatabaseUrl`], parsed from `sqlite://PATH` or a
//! PostgreSQL URL, and shown in logs and messages without its secrets.

use std::fmt;
use std::path::PathBuf;

use url::Url;

/// Which database backs the store.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file at this path.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses `sqlite://PATH`, `sqlite:PATH`, `postgres://…` or `postgresql://…`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(path) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(
                    "an SQLite URL needs a file path, e.g. sqlite://./herald-data/herald.db (in-memory databases lose all mail on restart)"
                        .into(),
                );
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            let url = Url::parse(raw).map_err(|e| format!("not a valid PostgreSQL URL: {e}"))?;
            // The driver ignores a parameter it does not know, logging its value: refuse it
            // here, naming only the key (it may be `sslpassword`).
            if let Some((key, _)) = url
                .query_pairs()
                .find(|(key, _)| !POSTGRES_PARAMS.contains(&&**key) && !key.starts_with("options["))
            {
                return Err(format!(
                    "Herald's PostgreSQL driver does not read the parameter `{key}`; remove it (it reads {})",
                    POSTGRES_PARAMS.join(", ")
                ));
            }
            return Ok(Self::Postgres(raw.to_owned()));
        }
        let scheme = raw.split(':').next().unwrap_or_default();
        Err(format!(
            "unsupported database `{scheme}`; use sqlite://PATH or postgres://USER@HOST/DATABASE"
        ))
    }

    /// The backend's name, for messages.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    // A PostgreSQL URL may carry a password: show only where it points.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(raw) => write!(f, "{}", redact_url(raw)),
        }
    }
}

/// The query parameters of a PostgreSQL URL that its driver (sqlx) reads, besides `options[…]`.
const POSTGRES_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The driver's parameters whose values hold a secret or could (`options` passes anything to
/// the server): redacted in logs. Every other parameter the driver reads says where and how
/// Herald connects, and is logged as it is; an unknown one is redacted too.
const SECRET_PARAMS: &[&str] = &["password", "options"];

fn shown_param(key: &str) -> bool {
    POSTGRES_PARAMS.contains(&key) && !SECRET_PARAMS.contains(&key)
}

/// A URL fit for logs and error messages: the password of its user information and the value
/// of every query parameter but those `shown_param` allows read `REDACTED`, so `?password=` or
/// `?sslpassword=` never reach a log while host, database and `sslmode` still help the reader.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("REDACTED"));
            }
            if url.query().is_some() {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if shown_param(&key) {
                            value.into_owned()
                        } else {
                            "REDACTED".to_owned()
                        };
                        (key.into_owned(), value)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => "<unparseable URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_password_is_redacted_in_debug() {
        let url = DatabaseUrl::parse("postgres://herald:hunter2@db/herald").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
