//! Settings › System › Outgoing Mail › Relay credentials: the usernames with which printers,
//! scanners and old programs send through the SMTP relay, and how a device reaches the relay.
//! Admins and members read the list; admins add and delete through
//! `/api/v1/relay-credentials` (the page's script sends the session's CSRF token), so the UI and
//! the API share one validation and one audit event. The page never holds a password: the API
//! answers it once, to the script that asked for it.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::SignedIn;
use super::{Frame, render, when};
use crate::config::RelaySettings;
use crate::domain::MailboxId;
use crate::domain::relay::{FromPolicy, RelayCredential};
use crate::services::views;
use crate::web::AppState;
use crate::web::error::UiError;

pub(super) const RELAY_PATH: &str = "/settings/system/outgoing-mail/relay";

/// Credentials and mailboxes read per query; an organization has far fewer.
const PAGE_SIZE: usize = 500;

/// What happens to a From that is not one of the credential's mailboxes, in the reader's words.
fn policy_words(policy: FromPolicy, keep_reply_to: bool) -> &'static str {
    match (policy, keep_reply_to) {
        (FromPolicy::Rewrite, true) => "Sent as the mailbox; the device's address becomes Reply-To",
        (FromPolicy::Rewrite, false) => "Sent as the mailbox",
        (FromPolicy::Refuse, _) => "Refused",
    }
}

/// A credential as the list shows it: every value already in words, and no secret.
struct CredentialRow {
    id: String,
    name: String,
    username: String,
    mailboxes: Vec<String>,
    networks: String,
    from_policy: &'static str,
    created: String,
    last_used: String,
}

fn row(c: RelayCredential, names: &HashMap<MailboxId, String>) -> CredentialRow {
    CredentialRow {
        mailboxes: c
            .mailboxes
            .iter()
            .map(|id| {
                names
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| "(a deleted mailbox)".into())
            })
            .collect(),
        networks: if c.allowed_networks.is_empty() {
            "Anywhere".into()
        } else {
            let list = c
                .allowed_networks
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            if c.network_only {
                format!("{list} (no login: known by its network)")
            } else {
                list
            }
        },
        from_policy: policy_words(c.from_policy, c.keep_reply_to),
        created: when(Some(c.created_at)),
        last_used: c
            .last_used_at
            .map(|t| when(Some(t)))
            .unwrap_or_else(|| "Never".into()),
        id: c.id,
        name: c.name,
        username: c.username,
    }
}

/// Where a device connects, from the relay's configuration.
struct Connection {
    host: String,
    /// "STARTTLS on port 2525", "TLS on port 465"; empty when the relay does not listen.
    ports: Vec<String>,
    /// How the device logs in.
    auth: &'static str,
}

impl Connection {
    fn of(relay: &RelaySettings) -> Option<Self> {
        let mut ports = Vec::new();
        if let Some(addr) = relay.listen {
            ports.push(format!("STARTTLS on port {}", addr.port()));
        }
        if let Some(addr) = relay.tls_listen {
            ports.push(format!("TLS on port {}", addr.port()));
        }
        if ports.is_empty() {
            return None;
        }
        let auth = match (relay.listen.is_some(), relay.tls_listen.is_some()) {
            (true, true) => {
                "AUTH PLAIN or LOGIN, after STARTTLS (or at once on the TLS port), with the credential's username and password"
            }
            (true, false) => {
                "AUTH PLAIN or LOGIN, after STARTTLS, with the credential's username and password"
            }
            _ => "AUTH PLAIN or LOGIN, over TLS, with the credential's username and password",
        };
        Some(Self {
            host: relay.hostname.clone(),
            ports,
            auth,
        })
    }
}

struct MailboxChoice {
    id: String,
    name: String,
    username: String,
}

#[derive(Template)]
#[template(path = "relay.html")]
struct RelayPage {
    frame: Frame,
    connection: Option<Connection>,
    credentials: Vec<CredentialRow>,
    /// The organization's mailboxes, for the Add window.
    mailboxes: Vec<MailboxChoice>,
}

/// The organization's relay credentials and how a device connects.
pub(super) async fn relay_credentials(
    State(state): State<AppState>,
    SignedIn { frame: f, .. }: SignedIn,
) -> Result<Response, UiError> {
    let mailboxes = views::mailboxes(&state.access.store, f.org_id, None, PAGE_SIZE)
        .await?
        .items;
    let credentials = views::relay_credentials(&state.access.store, f.org_id, None, PAGE_SIZE)
        .await?
        .items;
    let names: HashMap<MailboxId, String> =
        mailboxes.iter().map(|m| (m.id, m.name.clone())).collect();
    let page = RelayPage {
        connection: Connection::of(&state.access.config.relay),
        credentials: credentials.into_iter().map(|c| row(c, &names)).collect(),
        mailboxes: mailboxes
            .into_iter()
            .map(|m| MailboxChoice {
                id: m.id.to_string(),
                name: m.name,
                username: m.username,
            })
            .collect(),
        frame: f,
    };
    Ok(render(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_policy_reads_as_what_happens_to_the_mail() {
        assert_eq!(
            policy_words(FromPolicy::Rewrite, true),
            "Sent as the mailbox; the device's address becomes Reply-To"
        );
        assert_eq!(
            policy_words(FromPolicy::Rewrite, false),
            "Sent as the mailbox"
        );
        assert_eq!(policy_words(FromPolicy::Refuse, true), "Refused");
    }

    #[test]
    fn a_relay_without_listeners_has_no_connection_to_show() {
        let mut relay = RelaySettings {
            hostname: "mail.example.com".into(),
            ..Default::default()
        };
        assert!(Connection::of(&relay).is_none());
        relay.listen = Some("0.0.0.0:2525".parse().unwrap());
        relay.tls_listen = Some("0.0.0.0:465".parse().unwrap());
        let c = Connection::of(&relay).unwrap();
        assert_eq!(c.host, "mail.example.com");
        assert_eq!(c.ports, ["STARTTLS on port 2525", "TLS on port 465"]);
        assert!(c.auth.starts_with("AUTH PLAIN or LOGIN, after STARTTLS"));
    }
}
