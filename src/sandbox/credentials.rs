//! An app registration's client secrets, as Certificates & secrets › Client secrets lists
//! them: each has a Value (shown once, when made), a Secret ID (`keyId`), a description, an
//! end date, and the hint Graph shows (the Value's first three characters). A Value past its
//! end date is refused with AADSTS7000222; one that matches no secret with AADSTS7000215.
//!
//! The sandbox also records the `scope` of each refresh request, so that tests can see what a
//! client sent (Microsoft asks clients to send the scopes they were granted).

use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use super::{SandboxClient, SandboxState, entra_like_secret};
use crate::crypto;

/// Graph's application permission to read every app registration (its secrets' end dates).
pub const APP_APPLICATION_READ_ALL: &str = "Application.Read.All";
/// The delegated Graph scope to read app registrations as the signed-in (admin) user.
pub const GRAPH_APPLICATION_READ_ALL_SCOPE: &str =
    "https://graph.microsoft.com/Application.Read.All";
/// How long a client secret lives unless told otherwise: the portal's recommended 180 days.
pub const DEFAULT_SECRET_LIFETIME: Duration = Duration::days(180);

/// One client secret of an app registration (a `passwordCredential`).
#[derive(Clone)]
pub struct PasswordCredential {
    /// The Secret ID: a GUID, which is *not* the secret.
    pub key_id: String,
    pub display_name: String,
    /// The Value's first three characters, as Graph shows them.
    pub hint: String,
    pub end: OffsetDateTime,
    value: SecretString,
}

impl PasswordCredential {
    /// The Value, as the portal shows it once.
    pub fn value(&self) -> &SecretString {
        &self.value
    }
}

impl std::fmt::Debug for PasswordCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCredential")
            .field("key_id", &self.key_id)
            .field("display_name", &self.display_name)
            .field("hint", &self.hint)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// What the token endpoint makes of a client secret.
pub(super) enum SecretCheck {
    Accepted,
    /// It matches a secret whose end date has passed (AADSTS7000222).
    Expired,
    /// It matches none (AADSTS7000215).
    Unknown,
}

/// The client secrets of every app registration, and the refresh requests' scopes.
#[derive(Default)]
pub(super) struct CredentialsInner {
    passwords: HashMap<String, Vec<PasswordCredential>>,
    refresh_scopes: Vec<Option<String>>,
}

fn credential(
    value: SecretString,
    key_id: String,
    name: &str,
    end: OffsetDateTime,
) -> PasswordCredential {
    PasswordCredential {
        key_id,
        display_name: name.to_owned(),
        hint: value.expose_secret().chars().take(3).collect(),
        end,
        value,
    }
}

impl SandboxState {
    /// Records the secret a registration was made with, valid for the default lifetime.
    pub(super) fn record_first_secret(&self, client: &SandboxClient) {
        let end = self.now() + DEFAULT_SECRET_LIFETIME;
        self.inner()
            .credentials
            .passwords
            .entry(client.client_id.clone())
            .or_default()
            .push(credential(
                client.secret.clone(),
                client.secret_id.clone(),
                "Herald",
                end,
            ));
    }

    /// **New client secret**: answers it (its Value is shown this once), or `None` for an
    /// unknown client.
    pub fn add_client_secret(
        &self,
        client_id: &str,
        description: &str,
        end: OffsetDateTime,
    ) -> Option<PasswordCredential> {
        self.client(client_id)?;
        let made = credential(
            SecretString::from(entra_like_secret()),
            uuid::Uuid::new_v4().to_string(),
            description,
            end,
        );
        self.inner()
            .credentials
            .passwords
            .entry(client_id.to_owned())
            .or_default()
            .push(made.clone());
        Some(made)
    }

    /// Deletes a client secret, by its Secret ID.
    pub fn remove_client_secret(&self, client_id: &str, key_id: &str) {
        if let Some(list) = self.inner().credentials.passwords.get_mut(client_id) {
            list.retain(|p| p.key_id != key_id);
        }
    }

    /// Moves a client secret's end date (a test's way to let it expire).
    pub fn set_client_secret_end(&self, client_id: &str, key_id: &str, end: OffsetDateTime) {
        if let Some(list) = self.inner().credentials.passwords.get_mut(client_id) {
            for p in list.iter_mut().filter(|p| p.key_id == key_id) {
                p.end = end;
            }
        }
    }

    /// The app registration's client secrets.
    pub fn client_secrets(&self, client_id: &str) -> Vec<PasswordCredential> {
        self.inner()
            .credentials
            .passwords
            .get(client_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `value` is one of the client's secrets, and still valid.
    pub(super) fn check_client_secret(&self, client_id: &str, value: &str) -> SecretCheck {
        let now = self.now();
        let found = self
            .client_secrets(client_id)
            .into_iter()
            .find(|p| crypto::constant_time_eq(value, p.value.expose_secret()));
        match found {
            Some(p) if p.end <= now => SecretCheck::Expired,
            Some(_) => SecretCheck::Accepted,
            None => SecretCheck::Unknown,
        }
    }

    /// Records the `scope` a refresh request sent (`None`: it sent none).
    pub(super) fn record_refresh_scope(&self, scope: Option<&str>) {
        self.inner()
            .credentials
            .refresh_scopes
            .push(scope.map(str::to_owned));
    }

    /// The `scope` of each refresh request so far, oldest first.
    pub fn refresh_scopes(&self) -> Vec<Option<String>> {
        self.inner().credentials.refresh_scopes.clone()
    }
}
