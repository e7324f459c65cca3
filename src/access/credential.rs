//! How a mailbox proves who it is: a signed-in user's delegated token (renewed with its
//! refresh token), the app's own token (client credentials), or a password. The transports
//! and the workers see only the [`Secret`] each gives.

use secrecy::SecretString;

use super::{Access, AccessResult, SendFailure, TokenFailure, access_token};
use crate::domain::mailbox::{
    AuthKind, CredentialKind, Mailbox, Provider, StatusReason, secret_fields,
};
use crate::domain::message::SmtpReply;
use crate::keys;

/// A mailbox's credential, loaded.
#[derive(Clone)]
pub enum Credential {
    /// A signed-in user's access token, refreshed ahead of expiry with the refresh token.
    Delegated,
    /// The app's own access token (OAuth 2.0 client credentials), shared by its mailboxes.
    App,
    /// The mailbox's password (basic auth); `None` until one is saved.
    Password(Option<SecretString>),
}

/// What a transport authenticates with.
#[derive(Clone)]
pub enum Secret {
    /// An OAuth 2.0 access token (SMTP: XOAUTH2).
    Bearer(SecretString),
    /// A password (SMTP: PLAIN or LOGIN).
    Password(SecretString),
}

impl Credential {
    /// Loads the mailbox's credential from its sealed secrets.
    pub async fn load(access: &Access, mailbox: &Mailbox) -> AccessResult<Self> {
        match (mailbox.auth, mailbox.credential) {
            (AuthKind::OAuth2, CredentialKind::App) => Ok(Self::App),
            (AuthKind::OAuth2, _) => Ok(Self::Delegated),
            (AuthKind::Basic, _) => {
                let mut conn = access.store.conn().await?;
                let password = keys::get_secret(
                    &mut conn,
                    &access.keys,
                    &mailbox.id.to_string(),
                    secret_fields::PASSWORD,
                )
                .await?;
                Ok(Self::Password(password))
            }
        }
    }

    /// The secret to authenticate with now. `rejected` is one the server just refused: a
    /// credential that can renew answers a new one (unless someone renewed it already).
    pub async fn secret(
        &self,
        access: &Access,
        mailbox: &Mailbox,
        rejected: Option<&Secret>,
    ) -> AccessResult<Result<Secret, SendFailure>> {
        match self {
            Self::Password(None) => Ok(Err(SendFailure::Refused(StatusReason::not_yet_verified(
                AuthKind::Basic,
            )))),
            Self::Password(Some(password)) => Ok(Ok(Secret::Password(password.clone()))),
            Self::Delegated | Self::App => {
                let rejected = match rejected {
                    Some(Secret::Bearer(token)) => Some(token),
                    _ => None,
                };
                let token = match self {
                    // Google has no client credentials grant: a service account signs for the
                    // mailbox.
                    Self::App if mailbox.provider == Provider::Google => {
                        super::service_account::token(access, mailbox, rejected).await?
                    }
                    Self::App => super::app_token::app_token(access, mailbox, rejected).await?,
                    _ => access_token(access, mailbox.org_id, mailbox.id, rejected).await?,
                };
                Ok(match token {
                    Ok(token) => Ok(Secret::Bearer(token)),
                    Err(TokenFailure::Refused(reason)) => Err(SendFailure::Refused(reason)),
                    Err(TokenFailure::Transient(text)) => Err(SendFailure::Transient(SmtpReply {
                        code: None,
                        enhanced: None,
                        text,
                    })),
                })
            }
        }
    }

    /// Whether a refused secret is worth one renewal and one more try (a token may have been
    /// revoked early; a password stays what it is).
    pub fn renews(&self) -> bool {
        matches!(self, Self::Delegated | Self::App)
    }
}
