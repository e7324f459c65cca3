//! How the mailbox's app registration proves who it is at the token endpoint: its client
//! secret, or its certificate (a client assertion signed with the sealed private key).
//!
//! A certificate has a successor after **Renew certificate**: the renewed one waits beside the
//! one in use until Microsoft accepts it. Herald keeps signing with the certificate in use
//! while the token endpoint takes it; when it refuses it (the admin removed it from the app
//! registration, or it expired) and the renewed one works, the renewed one takes over and the
//! old one is forgotten. An expired certificate in use is not even tried.
//!
//! A client secret has one too during a rotation: the **next client secret** waits beside the
//! one in use, and takes over (the old one forgotten, its expiry date with it) when Microsoft
//! refuses the one in use as expired (AADSTS7000222) or invalid (AADSTS7000215, removed from
//! the app registration). Either switch is logged and recorded in the audit log.

use oauth2::ClientSecret;
use secrecy::{ExposeSecret, SecretString};

use super::{Access, AccessResult};
use crate::crypto;
use crate::domain::mailbox::{
    CertificateInfo, ClientAuth, ExpirySource, Mailbox, StatusReason, secret_fields,
};
use crate::domain::{Actor, ActorKind, NewAuditEvent};
use crate::oauth::{Proof, ProviderError, certificate};
use crate::{keys, store};

/// One way the app can authenticate, loaded from the mailbox's sealed secrets.
#[derive(Clone)]
pub enum ClientCredential {
    /// A client secret (`None`: a public client, or none saved); `next` when it is the
    /// successor waiting to take over.
    Secret {
        secret: Option<SecretString>,
        next: bool,
    },
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
            Self::Secret { secret, .. } => secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose_secret().to_owned())),
            Self::Certificate { .. } => None,
        }
    }

    /// The proof for one token request: a certificate signs a fresh assertion each time (its
    /// `jti` is single-use).
    pub fn proof(&self, mailbox: &Mailbox, access: &Access) -> AccessResult<Proof> {
        Ok(match self {
            Self::Secret { .. } => Proof {
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

    /// Whether this is the successor (the renewed certificate, the next client secret), which
    /// takes over once it works.
    pub fn successor(&self) -> bool {
        matches!(
            self,
            Self::Certificate { renewed: true, .. } | Self::Secret { next: true, .. }
        )
    }

    /// A digest naming the credential, so that a wrong one never borrows a right one's token.
    pub fn digest(&self) -> String {
        match self {
            Self::Secret { secret, .. } => crypto::token_digest(
                secret
                    .as_ref()
                    .map(|s| s.expose_secret())
                    .unwrap_or_default(),
            ),
            Self::Certificate { certificate, .. } => certificate.thumbprint_sha256.clone(),
        }
    }
}

/// The credentials to try, in order: the secret in use, then the next one; or the certificate
/// in use, then the renewed one (the renewed one first when the one in use has expired).
pub async fn client_credentials(
    access: &Access,
    mailbox: &Mailbox,
) -> AccessResult<Result<Vec<ClientCredential>, StatusReason>> {
    let owner = mailbox.id.to_string();
    let mut conn = access.store.conn().await?;
    if mailbox.client_auth != ClientAuth::Certificate {
        let mut found = Vec::new();
        for (field, next) in [
            (secret_fields::CLIENT_SECRET, false),
            (secret_fields::NEXT_CLIENT_SECRET, true),
        ] {
            let secret = keys::get_secret(&mut conn, &access.keys, &owner, field).await?;
            if secret.is_some() || !next {
                found.push(ClientCredential::Secret { secret, next });
            }
        }
        return Ok(Ok(found));
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

/// Whether the token endpoint refused the client's credential, so that its successor is worth
/// a try: the certificate (AADSTS700027: signature invalid or key not registered), the secret
/// (AADSTS7000222 expired, AADSTS7000215 invalid), or, from other servers, `invalid_client`.
pub fn credential_refused(error: &ProviderError) -> bool {
    error.error == "invalid_client"
        || error
            .error_codes
            .iter()
            .any(|c| matches!(c, 700027 | 7000222 | 7000215))
}

/// The successor worked: it becomes the credential in use, and the old one is forgotten. The
/// switch is logged and recorded in the audit log.
pub async fn promote_successor(
    access: &Access,
    mailbox: &Mailbox,
    worked: &ClientCredential,
) -> AccessResult<()> {
    let mut tx = access.store.begin().await?;
    let Some(mut current) = store::mailboxes::get(&mut tx, mailbox.org_id, mailbox.id).await?
    else {
        return Ok(());
    };
    let detail = match worked {
        ClientCredential::Certificate { .. } => {
            promote_certificate(access, &mut tx, &mut current).await?
        }
        ClientCredential::Secret { secret, .. } => {
            promote_secret(access, &mut tx, &mut current, secret.as_ref()).await?
        }
    };
    let Some(detail) = detail else {
        return Ok(());
    };
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id: mailbox.org_id,
            actor: Actor {
                kind: ActorKind::System,
                id: None,
                label: "Herald".into(),
                source: "herald".into(),
            },
            action: "mailbox.credential_promoted",
            target_kind: "mailbox",
            target_id: mailbox.id.to_string(),
            detail,
        },
        access.now(),
    )
    .await?;
    tx.commit().await.map_err(store::StoreError::from)?;
    Ok(())
}

/// The renewed certificate replaces the one in use; `None` when there is none (any more).
async fn promote_certificate(
    access: &Access,
    tx: &mut store::Conn,
    current: &mut Mailbox,
) -> AccessResult<Option<serde_json::Value>> {
    let owner = current.id.to_string();
    let Some(next) = current.next_certificate.take() else {
        return Ok(None);
    };
    let Some(key) = keys::get_secret(
        tx,
        &access.keys,
        &owner,
        secret_fields::NEXT_CERTIFICATE_KEY,
    )
    .await?
    else {
        return Ok(None);
    };
    let now = access.now();
    tracing::info!(
        mailbox = %current.id,
        thumbprint = %next.thumbprint_sha1,
        "the renewed certificate works: it is now the one in use"
    );
    let detail = serde_json::json!({"name": current.name, "credential": "certificate", "thumbprint": next.thumbprint_sha1});
    current.certificate = Some(next);
    current.updated_at = now;
    store::mailboxes::set_certificates(tx, current).await?;
    keys::put_secret(
        tx,
        &access.keys,
        &owner,
        secret_fields::CERTIFICATE_KEY,
        &key,
        now,
    )
    .await?;
    store::secrets::delete(tx, &owner, secret_fields::NEXT_CERTIFICATE_KEY).await?;
    Ok(Some(detail))
}

/// The next client secret replaces the one in use, if it is still the one that worked; the old
/// secret's expiry date goes with it, and so do its expiry alerts.
async fn promote_secret(
    access: &Access,
    tx: &mut store::Conn,
    current: &mut Mailbox,
    worked: Option<&SecretString>,
) -> AccessResult<Option<serde_json::Value>> {
    let owner = current.id.to_string();
    let next =
        keys::get_secret(tx, &access.keys, &owner, secret_fields::NEXT_CLIENT_SECRET).await?;
    let (Some(next), Some(worked)) = (next, worked) else {
        return Ok(None);
    };
    if !crypto::constant_time_eq(next.expose_secret(), worked.expose_secret()) {
        // Replaced meanwhile: the new one has not been tried.
        return Ok(None);
    }
    let now = access.now();
    tracing::info!(
        mailbox = %current.id,
        "the client secret in use was refused and the next one works: it is now the one in use"
    );
    keys::put_secret(
        tx,
        &access.keys,
        &owner,
        secret_fields::CLIENT_SECRET,
        &next,
        now,
    )
    .await?;
    store::secrets::delete(tx, &owner, secret_fields::NEXT_CLIENT_SECRET).await?;
    current.client_secret_expires_at = None;
    current.client_secret_expiry_source = ExpirySource::Typed;
    store::mailboxes::set_secret_expiry(tx, current).await?;
    store::alerts::resolve_others(
        tx,
        current.id,
        &[
            super::alerts::kind::SECRET_EXPIRING,
            super::alerts::kind::SECRET_EXPIRED,
        ],
        "",
        now,
    )
    .await?;
    Ok(Some(
        serde_json::json!({"name": current.name, "credential": "client_secret"}),
    ))
}
