//! A Google mailbox's app-only credential: the service account's JSON key, given as
//! `service_account_key` and sealed in the client secret's place (write-only, kept by a PATCH
//! without one). It names the OAuth client (`client_id`, for domain-wide delegation) and the
//! token endpoint (`token_uri`), which fill the mailbox unless given.

use secrecy::SecretString;

use crate::domain::FieldError;
use crate::domain::mailbox::{CredentialKind, Provider};
use crate::oauth::service_account::ServiceAccountKey;
use crate::services::Checks;

/// Whether the mailbox's credential is a Google service account.
pub(super) fn applies(provider: Option<Provider>, credential: Option<CredentialKind>) -> bool {
    provider == Some(Provider::Google) && credential == Some(CredentialKind::App)
}

/// The service account's key in the draft, read and checked.
pub(super) fn read(
    checks: &mut Checks,
    provider: Option<Provider>,
    credential: Option<CredentialKind>,
    key: Option<&SecretString>,
) -> Option<ServiceAccountKey> {
    let json = key.filter(|_| applies(provider, credential))?;
    checks.take(
        ServiceAccountKey::parse(json)
            .map_err(|e| FieldError::new("service_account_key", e.to_string())),
    )
}

/// The error for a mailbox without its secret: a service account's key, or a client secret.
pub(super) fn missing(
    provider: Option<Provider>,
    credential: Option<CredentialKind>,
) -> FieldError {
    if applies(provider, credential) {
        FieldError::new(
            "service_account_key",
            "must not be empty: upload the service account's JSON key (IAM & Admin › Service accounts › Keys › Add key › JSON)",
        )
    } else {
        FieldError::new(
            "client_secret",
            "must not be empty: copy the client secret's Value",
        )
    }
}
