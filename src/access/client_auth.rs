//! How the mailbox's app registration proves who it is at the token endpoint: its client
//! secret, or its certificate (a client assertion signed with the sealed private key).
//!
//! A certificate has a successor after **Renew certificate**: the renewed one waits beside the
//! one in use until Microsoft accepts it. Herald keeps signing with the certificate in use
//! while the token endpoint takes it; when it refuses it (the admin removed it from the app
//! registration, or it expired) and the renewed one works, the renewed one takes over and the
//! old one is forgotten. An expired certificate in use is not even tried.

use oauth2::ClientSecret;
use secrecy::{ExposeSecret, SecretString};

use super::{Access, AccessResult};
use crate::crypto;
use crate::domain::mailbox::{CertificateInfo, ClientAuth, Mailbox, StatusReason, secret_fields};
use crate::oauth::{Proof, ProviderError, certificate};
use crate::{keys, store};

/// One way the app can authenticate, loaded from the mailbox's sealed secrets.
#[derive(Clone)]
pub enum ClientCredential {
    /// A client secret (`None`: a public client, or none saved).
    Secret(Option<SecretString>),
    /// A certificate and its private key; `renewed` when it is the successor waiting to take
    /// over.
    Certificate {
        certificate: CertificateInfo,
        key: SecretString,
        renewed: bool,
    },
}

impl ClientCredential {
    /// The secret to give the `oauth2` client, if this is one.
    pub fn client_secret(&self) -> Option<ClientSecret> {
        match self {
            Self::Secret(secret) => secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose_secret().to_owned())),
            Self::Certificate { .. } => None,
        }
    }

    /// The proof for one token request: a certificate signs a fresh assertion each time (its
    /// `jti` is single-use).
    pub fn proof(&self, mailbox: &Mailbox, access: &Access) -> AccessResult<Proof> {
        Ok(match self {
            Self::Secret(_) => Proof {
                secret: self.client_secret(),
                assertion: None,
            },
            Self::Certificate {
                certificate, key, ..
            } => Proof {
                secret: None,
                assertion: Some(certificate::assertion(
                    certificate,
                    key,
                    mailbox.client_id.as_deref().unwrap_or_default(),
                    mailbox.token_url.as_deref().unwrap_or_default(),
                    access.now(),
                )?),
            },
        })
    }

    /// Whether this is the renewed certificate, which takes over once it works.
    pub fn renewed(&self) -> bool {
        matches!(self, Self::Certificate { renewed: true, .. })
    }

    /// A digest naming the credential, so that a wrong one never borrows a right one's token.
    pub fn digest(&self) -> String {
        match self {
            Self::Secret(secret) => crypto::token_digest(
                secret
                    .as_ref()
                    .map(|s| s.expose_secret())
                    .unwrap_or_default(),
            ),
            Self::Certificate { certificate, .. } => certificate.thumbprint_sha256.clone(),
        }
    }
}

/// The credentials to try, in order: the secret; or the certificate in use, then the renewed
/// one (the renewed one first when the one in use has expired).
pub async fn client_credentials(
    access: &Access,
    mailbox: &Mailbox,
) -> AccessResult<Result<Vec<ClientCredential>, StatusReason>> {
    let owner = mailbox.id.to_string();
    let mut conn = access.store.conn().await?;
    if mailbox.client_auth != ClientAuth::Certificate {
        let secret = keys::get_secret(
            &mut conn,
            &access.keys,
            &owner,
            secret_fields::CLIENT_SECRET,
        )
        .await?;
        return Ok(Ok(vec![ClientCredential::Secret(secret)]));
    }
    let mut found = Vec::new();
    for (certificate, field, renewed) in [
        (&mailbox.certificate, secret_fields::CERTIFICATE_KEY, false),
        (
            &mailbox.next_certificate,
            secret_fields::NEXT_CERTIFICATE_KEY,
            true,
        ),
    ] {
        if let Some(certificate) = certificate
            && let Some(key) = keys::get_secret(&mut conn, &access.keys, &owner, field).await?
        {
            found.push(ClientCredential::Certificate {
                certificate: certificate.clone(),
                key,
                renewed,
            });
        }
    }
    if found.is_empty() {
        return Ok(Err(StatusReason::new(
            "certificate_missing",
            "The mailbox is set to sign in with a certificate, but has none.",
            Some("Edit the mailbox and click Renew certificate to make one, then upload it to the app registration.".into()),
        )));
    }
    let now = access.now();
    if found.len() == 2
        && mailbox
            .certificate
            .as_ref()
            .is_some_and(|c| c.not_after <= now)
    {
        found.reverse();
    }
    Ok(Ok(found))
}

/// Whether the token endpoint refused the client's certificate (AADSTS700027: signature
/// invalid or key not registered; other servers: `invalid_client`), so that a renewed one is
/// worth a try.
pub fn certificate_refused(error: &ProviderError) -> bool {
    error.error == "invalid_client" || error.error_codes.contains(&700027)
}

/// The renewed certificate worked: it becomes the one in use, and the old one is forgotten.
pub async fn promote_renewed(access: &Access, mailbox: &Mailbox) -> AccessResult<()> {
    let owner = mailbox.id.to_string();
    let mut tx = access.store.begin().await?;
    let Some(mut current) = store::mailboxes::get(&mut tx, mailbox.org_id, mailbox.id).await?
    else {
        return Ok(());
    };
    let Some(next) = current.next_certificate.take() else {
        return Ok(());
    };
    let Some(key) = keys::get_secret(
        &mut tx,
        &access.keys,
        &owner,
        secret_fields::NEXT_CERTIFICATE_KEY,
    )
    .await?
    else {
        return Ok(());
    };
    let now = access.now();
    tracing::info!(
        mailbox = %mailbox.id,
        thumbprint = %next.thumbprint_sha1,
        "the renewed certificate works: it is now the one in use"
    );
    current.certificate = Some(next);
    current.updated_at = now;
    store::mailboxes::set_certificates(&mut tx, &current).await?;
    keys::put_secret(
        &mut tx,
        &access.keys,
        &owner,
        secret_fields::CERTIFICATE_KEY,
        &key,
        now,
    )
    .await?;
    store::secrets::delete(&mut tx, &owner, secret_fields::NEXT_CERTIFICATE_KEY).await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    Ok(())
}
