//! The servers the mailboxes send through: each SMTP server resolved (as the host policy
//! allows), connected to, and its TLS (STARTTLS or implicit) set up with the certificate
//! verified, then left with QUIT, never AUTH, so the doctor signs in nowhere; each Microsoft
//! Graph host reached over HTTPS. Servers shared by several mailboxes are checked once.
//!
//! The SMTP conversation is lettre's, as in [`crate::smtp`]; it stops before AUTH, which
//! `smtp::verify` cannot.

use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use time::OffsetDateTime;
use url::Url;

use super::{Check, DEADLINE};
use crate::config::Config;
use crate::domain::mailbox::{Mailbox, Security, TransportKind};
use crate::net::HostPolicy;

const SMTP: &str = "smtp";
const GRAPH: &str = "graph";

/// A certificate expiring sooner than this is worth a warning.
const CERT_WARNING: time::Duration = time::Duration::days(14);

/// Where mail leaves: an SMTP server, or Microsoft Graph's host.
#[derive(Clone, PartialEq, Eq)]
enum Server {
    Smtp {
        host: String,
        port: u16,
        security: Security,
    },
    Graph(Url),
}

pub(super) async fn check(
    config: &Config,
    mailboxes: &[Mailbox],
    now: OffsetDateTime,
) -> Vec<Check> {
    let mut servers: Vec<(Server, Vec<String>)> = Vec::new();
    let mut unusable = Vec::new();
    for m in mailboxes {
        let server = match m.transport {
            TransportKind::Smtp => Server::Smtp {
                host: m.host.clone(),
                port: m.port,
                security: m.security,
            },
            TransportKind::Graph => {
                let raw = m
                    .graph_url
                    .as_deref()
                    .unwrap_or(crate::domain::mailbox::MICROSOFT_GRAPH_URL);
                match Url::parse(raw) {
                    Ok(url) => Server::Graph(url),
                    Err(e) => {
                        unusable.push(Check::fail(
                            GRAPH,
                            format!("mailbox {}: its Graph URL {raw} is not a URL: {e}", m.name),
                            "choose the mailbox's cloud again (Edit), so that Herald sets its Graph URL",
                        ));
                        continue;
                    }
                }
            }
        };
        match servers.iter_mut().find(|(s, _)| *s == server) {
            Some((_, names)) => names.push(m.name.clone()),
            None => servers.push((server, vec![m.name.clone()])),
        }
    }
    if mailboxes.is_empty() {
        return vec![Check::ok("mailboxes", "none yet: no server to reach")];
    }
    let roots = match &config.smtp_ca_file {
        Some(path) => match std::fs::read(path) {
            Ok(pem) => vec![pem],
            Err(e) => {
                return vec![Check::fail(
                    SMTP,
                    format!("cannot read HERALD_SMTP_CA_FILE {}: {e}", path.display()),
                    "point HERALD_SMTP_CA_FILE at a readable file of PEM certificates, or unset it",
                )];
            }
        },
        None => Vec::new(),
    };
    let policy = HostPolicy {
        dev: config.dev,
        allow_private: config.allow_private_hosts,
    };
    let http = super::skew::http(config);
    // Every server at once: each has its deadline, so the whole takes about one.
    let mut tasks = tokio::task::JoinSet::new();
    for (n, (server, names)) in servers.into_iter().enumerate() {
        let (roots, http) = (roots.clone(), http.clone());
        tasks.spawn(async move {
            let check = match &server {
                Server::Smtp {
                    host,
                    port,
                    security,
                } => smtp(policy, &roots, host, *port, *security, now).await,
                Server::Graph(url) => match &http {
                    Ok(http) => graph(http, url).await,
                    Err(check) => check.clone(),
                },
            };
            let mut check = check;
            check.detail = format!("{} (mailboxes: {})", check.detail, names.join(", "));
            (n, check)
        });
    }
    let mut checks: Vec<(usize, Check)> = tasks.join_all().await;
    checks.sort_by_key(|(n, _)| *n);
    checks.into_iter().map(|(_, c)| c).chain(unusable).collect()
}

async fn graph(http: &crate::oauth::http::TokenHttp, url: &Url) -> Check {
    match super::skew::head(http, url).await {
        Ok(_) => Check::ok(GRAPH, format!("{url} answers over HTTPS")),
        Err(e) => Check::fail(
            GRAPH,
            format!("cannot reach {url}: {e}"),
            "check that this machine resolves and reaches the host over HTTPS (DNS, firewall, proxy); for a private CA, add it to HERALD_HTTP_CA_FILE",
        ),
    }
}

/// Resolves, connects, sets up TLS and says QUIT.
async fn smtp(
    policy: HostPolicy,
    roots: &[Vec<u8>],
    host: &str,
    port: u16,
    security: Security,
    now: OffsetDateTime,
) -> Check {
    let target = format!("{host}:{port} ({})", security.as_str());
    if security == Security::None && !policy.dev {
        return Check::fail(
            SMTP,
            format!("{target}: SMTP without TLS is refused outside development mode"),
            "set the mailbox's security to STARTTLS (port 587) or TLS (port 465)",
        );
    }
    let addrs = match tokio::time::timeout(DEADLINE, policy.resolve(host, port)).await {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) if e.starts_with("cannot resolve") => {
            return Check::fail(
                SMTP,
                format!("{target}: {e}"),
                "check the mailbox's Host Name for typos (Microsoft 365: smtp.office365.com) and that this machine's DNS resolver answers",
            );
        }
        Ok(Err(e)) => {
            return Check::fail(
                SMTP,
                format!("{target}: {e}"),
                "for a server on your own network set HERALD_ALLOW_PRIVATE_HOSTS=true; otherwise correct the mailbox's Host Name",
            );
        }
        Err(_) => {
            return Check::fail(
                SMTP,
                format!(
                    "{target}: the name did not resolve within {} s",
                    DEADLINE.as_secs()
                ),
                "check this machine's DNS resolver",
            );
        }
    };
    let addr = std::net::SocketAddr::new(addrs[0].ip(), port);
    let unreachable = |why: String| {
        Check::fail(
            SMTP,
            format!("{target}: cannot connect to {addr}: {why}"),
            format!(
                "check the mailbox's port (587 for STARTTLS, 465 for TLS) and that no firewall blocks outgoing connections to port {port}"
            ),
        )
    };
    let tcp = match tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return unreachable(e.to_string()),
        Err(_) => return unreachable(format!("no answer within {} s", DEADLINE.as_secs())),
    };
    let tls = match tls_parameters(host, roots) {
        Ok(tls) => tls,
        Err(e) => {
            return Check::fail(
                SMTP,
                format!("{target}: {e}"),
                "HERALD_SMTP_CA_FILE must hold PEM certificates",
            );
        }
    };
    let hello = ClientId::default();
    let session = async {
        let mut conn = match security {
            Security::Tls => {
                // lettre opens implicit TLS on a connection of its own.
                drop(tcp);
                AsyncSmtpConnection::connect_tokio1(addr, Some(DEADLINE), &hello, Some(tls), None)
                    .await
                    .map_err(|e| Stage::Tls(chain(&e)))?
            }
            _ => {
                let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
                    .await
                    .map_err(|e| Stage::Greeting(chain(&e)))?;
                if security == Security::StartTls {
                    if !conn.can_starttls() {
                        conn.abort().await;
                        return Err(Stage::NoStartTls);
                    }
                    conn.starttls(tls, &hello)
                        .await
                        .map_err(|e| Stage::Tls(chain(&e)))?;
                }
                conn
            }
        };
        let expiry = conn.peer_certificate().ok().and_then(|der| not_after(&der));
        let _ = conn.quit().await;
        conn.abort().await;
        Ok(expiry)
    };
    match tokio::time::timeout(DEADLINE, session).await {
        Err(_) => Check::fail(
            SMTP,
            format!(
                "{target}: the server at {addr} did not finish the greeting and TLS within {} s",
                DEADLINE.as_secs()
            ),
            "check that the port is the server's submission port (587 STARTTLS, 465 TLS) and that nothing in between holds the connection",
        ),
        Ok(Err(Stage::Greeting(e))) => Check::fail(
            SMTP,
            format!("{target}: {addr} accepted the connection but did not speak SMTP: {e}"),
            "check the mailbox's port and security: 587 with STARTTLS, or 465 with TLS",
        ),
        Ok(Err(Stage::NoStartTls)) => Check::fail(
            SMTP,
            format!("{target}: the server does not offer STARTTLS, which the mailbox requires"),
            "use port 465 with security TLS if the server offers it, or have the server's admin enable STARTTLS",
        ),
        Ok(Err(Stage::Tls(e))) => Check::fail(
            SMTP,
            format!("{target}: TLS with {addr} failed: {e}"),
            format!(
                "the server's certificate must be valid for {host} and issued by a trusted authority: correct the Host Name to the name on the certificate, or, for a private CA, add its certificate to HERALD_SMTP_CA_FILE"
            ),
        ),
        Ok(Ok(expiry)) => {
            let tls = match security {
                Security::None => "no TLS (development only)".to_owned(),
                Security::StartTls => "STARTTLS, certificate verified".to_owned(),
                Security::Tls => "TLS, certificate verified".to_owned(),
            };
            let detail = format!("{target}: {addr} answers, {tls}");
            match expiry {
                Some(at) if at - now < CERT_WARNING => Check::warn(
                    SMTP,
                    format!("{detail}, but the certificate expires {}", at.date()),
                    "the server's admin must renew its certificate before then, or sending stops",
                ),
                _ if security == Security::None => {
                    Check::warn(SMTP, detail, "use STARTTLS or TLS outside development")
                }
                _ => Check::ok(SMTP, detail),
            }
        }
    }
}

/// Where the SMTP conversation stopped.
enum Stage {
    Greeting(String),
    NoStartTls,
    Tls(String),
}

fn tls_parameters(host: &str, roots: &[Vec<u8>]) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_owned());
    for pem in roots {
        let cert = Certificate::from_pem(pem)
            .map_err(|e| format!("HERALD_SMTP_CA_FILE is not a valid certificate: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("cannot set up TLS: {e}"))
}

/// When a DER certificate expires.
fn not_after(der: &[u8]) -> Option<OffsetDateTime> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.to_datetime())
}

/// An error with its causes, each once: lettre's own message often hides the certificate's,
/// or repeats its own words ("Connection error: Connection error: …").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    let mut parts: Vec<&str> = text.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_chain_says_each_thing_once() {
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let outer = std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            format!("Connection error: Connection error: {inner}"),
        );
        assert_eq!(
            super::chain(&outer),
            "Connection error: invalid peer certificate: UnknownIssuer"
        );
    }
}
