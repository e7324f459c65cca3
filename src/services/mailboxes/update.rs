//! Changing a mailbox: a patch applied to what is stored and validated again; a changed
//! identity drops the stored tokens.

use super::*;
use secrecy::ExposeSecret;

use crate::access::{self, SecretCheck, alerts::kind as alert_kind};
use crate::domain::mailbox::{
    AuthKind, ClientAuth, ExpirySource, Mailbox, MailboxStatus, Provider, StatusReason,
    looks_like_secret_id, secret_fields,
};
use crate::domain::{Actor, FieldError, MailboxId, NewAuditEvent, OrgId};
use crate::services::{ServiceError, ServiceResult};
use crate::store::{self, StoreError};

/// Why a stored password or client secret must be typed again.
const SERVER_CHANGED: &str = "enter it again: the server changed, and Herald sends a stored secret only to the server it was entered for";

/// Where a mailbox's secrets are sent: its SMTP server and its authorization server.
fn server_of(draft: &MailboxDraft) -> impl PartialEq + '_ {
    (
        (&draft.host, draft.port, &draft.security),
        (
            &draft.authorization_url,
            &draft.token_url,
            &draft.client_auth,
        ),
        (&draft.provider, &draft.tenant),
    )
}

/// The draft a stored mailbox corresponds to, so a patch can be applied and re-validated.
fn draft_of(mailbox: &Mailbox) -> MailboxDraft {
    MailboxDraft {
        name: Some(mailbox.name.clone()),
        auth: Some(mailbox.auth.as_str().into()),
        provider: Some(mailbox.provider.as_str().into()),
        tenant: mailbox.tenant.clone(),
        host: Some(mailbox.host.clone()),
        port: Some(i64::from(mailbox.port)),
        security: Some(mailbox.security.as_str().into()),
        username: Some(mailbox.username.clone()),
        from_name: mailbox.from_name.clone(),
        sign_in_account: Some(mailbox.sign_in_account.clone()),
        reply_to: mailbox.reply_to.clone(),
        signature: mailbox.signature.clone(),
        default: Some(mailbox.is_default),
        authorization_url: mailbox.authorization_url.clone(),
        token_url: mailbox.token_url.clone(),
        client_id: mailbox.client_id.clone(),
        client_auth: Some(mailbox.client_auth.as_str().into()),
        scopes: Some(mailbox.scopes.clone()),
        issuer: mailbox.issuer.clone(),
        client_secret_expires_at: mailbox.client_secret_expires_at.map(|d| d.to_string()),
        client_secret: None,
        next_client_secret: None,
        password: None,
        limits: Some(mailbox.limits),
        transport: Some(mailbox.transport.as_str().into()),
        save_to_sent_items: Some(mailbox.save_to_sent_items),
        credential: Some(mailbox.credential.as_str().into()),
        certificate_pem: None,
        private_key_pem: None,
        cloud: Some(mailbox.cloud.as_str().into()),
    }
}

/// Applies a change. A new secret replaces the old; no secret keeps it. A changed identity
/// (account, app registration, endpoints, scopes or server) drops the stored tokens and makes
/// the mailbox Not Verified until it is authorized again.
pub async fn update(
    access: &Access,
    policy: &Policy<'_>,
    org_id: OrgId,
    id: MailboxId,
    patch: MailboxPatch,
    actor: &Actor,
) -> ServiceResult<Mailbox> {
    let (store, keys, now) = (&access.store, &*access.keys, access.now());
    // A mailbox that turns to a certificate without bringing one gets one made, before the
    // write transaction (key generation takes a moment).
    let made = match patch.client_auth.as_deref().map(ClientAuth::parse_field) {
        Some(Ok(ClientAuth::Certificate)) if patch.certificate_pem.is_none() => {
            let mut conn = store.conn().await?;
            match store::mailboxes::get(&mut conn, org_id, id).await? {
                Some(m) if m.certificate.is_none() => {
                    Some(certificates::generate(&m.name, &m.username, now).await?)
                }
                _ => None,
            }
        }
        _ => None,
    };
    let check = check_secret(access, org_id, id, &patch).await?;
    if let Some(SecretCheck::Refused(reason)) = &check {
        return Err(ServiceError::Invalid(vec![FieldError::new(
            "client_secret",
            access::refusal_message(reason),
        )]));
    }
    let accepted = matches!(check, Some(SecretCheck::Accepted));
    let expiry_given = patch.client_secret_expires_at.is_some();
    let mut tx = store.begin().await?;
    let existing = store::mailboxes::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    let owner = id.to_string();
    let has_secret = (
        store::secrets::get(&mut tx, &owner, secret_fields::CLIENT_SECRET)
            .await?
            .is_some(),
        store::secrets::get(&mut tx, &owner, secret_fields::PASSWORD)
            .await?
            .is_some(),
    );
    let mut draft = draft_of(&existing);
    let host_given = patch.host.is_some();
    let username_changed = patch.username.is_some();
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = patch.$field {
                draft.$field = Some(v);
            }
        };
    }
    macro_rules! set_nullable {
        ($field:ident) => {
            if let Some(v) = patch.$field {
                draft.$field = v;
            }
        };
    }
    set!(name);
    set_nullable!(tenant);
    set!(host);
    set!(port);
    set!(security);
    set!(username);
    set_nullable!(from_name);
    set_nullable!(sign_in_account);
    set_nullable!(reply_to);
    set_nullable!(signature);
    set!(default);
    set!(authorization_url);
    set!(token_url);
    set!(client_id);
    set!(client_auth);
    let scopes_given = patch.scopes.is_some();
    set!(scopes);
    let patch_issuer = patch.issuer.clone();
    set_nullable!(issuer);
    set_nullable!(client_secret_expires_at);
    set!(limits);
    let transport_changed = patch
        .transport
        .as_deref()
        .is_some_and(|t| t.trim() != existing.transport.as_str())
        || patch
            .credential
            .as_deref()
            .is_some_and(|c| c.trim() != existing.credential.as_str());
    set!(transport);
    set!(save_to_sent_items);
    set!(credential);
    let cloud_changed = patch
        .cloud
        .as_deref()
        .is_some_and(|c| c.trim() != existing.cloud.as_str());
    set!(cloud);
    // Another transport or credential asks for its own scopes: a preset's are filled in again.
    if transport_changed
        && !scopes_given
        && matches!(existing.provider, Provider::Microsoft | Provider::Sandbox)
    {
        draft.scopes = None;
    }
    // The sign-in account follows the username unless it was set on its own.
    if username_changed
        && existing.sign_in_account == existing.username
        && !matches!(draft.sign_in_account, Some(ref a) if a != &existing.sign_in_account)
    {
        draft.sign_in_account = None;
    }
    // A Microsoft mailbox whose tenant changes gets the new tenant's endpoints.
    if existing.provider == Provider::Microsoft
        && (draft.tenant != existing.tenant || cloud_changed)
    {
        draft.authorization_url = None;
        draft.token_url = None;
        draft.issuer = None;
    }
    // Another cloud has its own SMTP host and resources: what came from the old cloud's
    // preset is filled from the new one's.
    if existing.provider == Provider::Microsoft && cloud_changed {
        if !host_given && existing.host == existing.cloud.smtp_host() {
            draft.host = None;
        }
        if !scopes_given {
            draft.scopes = None;
        }
    }
    // A stored secret goes only to the server it was entered for: pointed elsewhere, the
    // mailbox must be given it again, or a Verify would hand it to the new host.
    let pristine = draft_of(&existing);
    let server_changed = server_of(&draft) != server_of(&pristine);
    // A preset's issuer is read again from the new server's discovery document.
    if server_changed
        && matches!(existing.provider, Provider::Microsoft | Provider::Sandbox)
        && patch_issuer.is_none()
    {
        draft.issuer = None;
    }
    let to_certificate = draft.client_auth.as_deref().map(ClientAuth::parse_field)
        == Some(Ok(ClientAuth::Certificate));
    let reenter = if server_changed {
        match existing.auth {
            AuthKind::OAuth2
                if has_secret.0 && patch.client_secret.is_none() && !to_certificate =>
            {
                Some(FieldError::new("client_secret", SERVER_CHANGED))
            }
            AuthKind::Basic if has_secret.1 && patch.password.is_none() => {
                Some(FieldError::new("password", SERVER_CHANGED))
            }
            _ => None,
        }
    } else {
        None
    };
    draft.client_secret = patch.client_secret;
    draft.next_client_secret = patch.next_client_secret;
    draft.password = patch.password;
    draft.certificate_pem = patch.certificate_pem;
    draft.private_key_pem = patch.private_key_pem;
    let resolved = match (
        resolve::resolve(org_id, id, draft, policy, has_secret, existing.created_at),
        reenter,
    ) {
        (Ok(resolved), None) => resolved,
        (Ok(_), Some(reenter)) => return Err(ServiceError::Invalid(vec![reenter])),
        (Err(ServiceError::Invalid(mut errors)), Some(reenter)) => {
            errors.push(reenter);
            return Err(ServiceError::Invalid(errors));
        }
        (Err(e), _) => return Err(e),
    };
    let mut mailbox = resolved.mailbox;
    // The expiry date belongs to the secret: a new secret without its date has none known.
    if resolved.client_secret.is_some() && !expiry_given {
        mailbox.client_secret_expires_at = None;
    }
    mailbox.client_secret_expiry_source = if expiry_given || resolved.client_secret.is_some() {
        ExpirySource::Typed
    } else {
        existing.client_secret_expiry_source
    };
    mailbox.certificate = existing.certificate.clone();
    mailbox.next_certificate = existing.next_certificate.clone();
    // A certificate given, or made because the mailbox turned to one, replaces the one in use.
    let new_certificate = match (resolved.new_certificate, made) {
        (Some(uploaded), _) => Some(uploaded),
        (None, made) if certificates::needs_certificate(&mailbox, false) => match made {
            Some(made) => Some(made),
            None => Some(certificates::generate(&mailbox.name, &mailbox.username, now).await?),
        },
        _ => None,
    };
    if let Some(pair) = &new_certificate {
        mailbox.certificate = Some(pair.certificate.clone());
        mailbox.next_certificate = None;
    }
    let certificate_changed = new_certificate.is_some()
        || (mailbox.client_auth != existing.client_auth
            && (mailbox.client_auth == ClientAuth::Certificate
                || existing.client_auth == ClientAuth::Certificate));
    mailbox.iss_required = existing.iss_required && !server_changed && patch_issuer.is_none();
    mailbox.created_at = existing.created_at;
    mailbox.updated_at = now;
    // An OAuth2 mailbox's access token goes to its SMTP server: a new port or security is a
    // new place to send it, so the tokens go too, as for a new host.
    let identity_changed = mailbox.identity() != existing.identity()
        || (existing.auth == AuthKind::OAuth2
            && (mailbox.port != existing.port || mailbox.security != existing.security));
    // A new port or security setting keeps the tokens but must be verified again.
    let secret_changed = resolved.client_secret.is_some()
        || resolved.password.is_some()
        || mailbox.port != existing.port
        || mailbox.security != existing.security;
    if identity_changed || secret_changed {
        mailbox.status = MailboxStatus::NotVerified;
        mailbox.status_reason = Some(if identity_changed && existing.auth == AuthKind::OAuth2 {
            StatusReason::reauthorization_required()
        } else {
            StatusReason::not_yet_verified(mailbox.auth)
        });
        mailbox.verified_at = None;
        mailbox.token_expires_at = if identity_changed {
            None
        } else {
            existing.token_expires_at
        };
        // A new client secret keeps the authorization: the refresh token stays valid. One
        // Microsoft just took keeps the status too, until the check below restores it.
        if secret_changed
            && !identity_changed
            && mailbox.auth == AuthKind::OAuth2
            && (existing.status == MailboxStatus::Verified || accepted)
        {
            mailbox.status = existing.status;
            mailbox.status_reason = existing.status_reason.clone();
            mailbox.verified_at = existing.verified_at;
        }
    } else {
        mailbox.status = existing.status;
        mailbox.status_reason = existing.status_reason.clone();
        mailbox.verified_at = existing.verified_at;
        mailbox.token_expires_at = existing.token_expires_at;
    }
    // A certificate must be uploaded to the app registration before it works: until the mailbox
    // is verified again its mail waits rather than fail.
    if certificate_changed && mailbox.client_auth == ClientAuth::Certificate {
        mailbox.status = MailboxStatus::NotVerified;
        mailbox.status_reason = Some(certificates::upload_reason(&mailbox));
        mailbox.verified_at = None;
    }
    if mailbox.is_default && !existing.is_default {
        store::mailboxes::clear_default(&mut tx, org_id).await?;
    }
    store::mailboxes::update(&mut tx, &mailbox)
        .await
        .map_err(|e| conflict_on_name(e, &mailbox.name))?;
    // Warnings about the old secret's date no longer hold; the next expiry pass raises what the
    // new date calls for.
    if mailbox.client_auth != ClientAuth::Certificate
        && (resolved.client_secret.is_some()
            || mailbox.client_secret_expires_at != existing.client_secret_expires_at)
    {
        store::alerts::resolve_others(
            &mut tx,
            id,
            &[alert_kind::SECRET_EXPIRING, alert_kind::SECRET_EXPIRED],
            "",
            now,
        )
        .await?;
    }
    // The next secret waits for the app and server it was given for, and goes nowhere else.
    if (identity_changed || server_changed) && resolved.next_client_secret.is_none() {
        store::secrets::delete(&mut tx, &owner, secret_fields::NEXT_CLIENT_SECRET).await?;
    }
    if identity_changed {
        store::secrets::delete(&mut tx, &owner, secret_fields::ACCESS_TOKEN).await?;
        store::secrets::delete(&mut tx, &owner, secret_fields::REFRESH_TOKEN).await?;
        // An authorization started under the old settings must not complete under the new.
        store::attempts::end_pending(&mut tx, id, &StatusReason::reauthorization_required(), now)
            .await?;
    }
    store_secrets(
        &mut tx,
        keys,
        (
            &resolved.client_secret,
            &resolved.next_client_secret,
            &resolved.password,
        ),
        &owner,
        now,
    )
    .await?;
    if let Some(pair) = &new_certificate {
        certificates::store_key(
            &mut tx,
            access,
            &mailbox,
            secret_fields::CERTIFICATE_KEY,
            &pair.private_key,
        )
        .await?;
        store::secrets::delete(&mut tx, &owner, secret_fields::NEXT_CERTIFICATE_KEY).await?;
    }
    let mut detail = audit_detail(&mailbox);
    detail["tokens_dropped"] = serde_json::json!(identity_changed);
    detail["secret_replaced"] = serde_json::json!(secret_changed);
    detail["certificate_replaced"] = serde_json::json!(new_certificate.is_some());
    detail["secret_checked"] = serde_json::json!(accepted);
    detail["next_secret_given"] = serde_json::json!(resolved.next_client_secret.is_some());
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "mailbox.update",
            target_kind: "mailbox",
            target_id: owner,
            detail,
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    if !accepted || identity_changed {
        return Ok(mailbox);
    }
    // Microsoft took the new secret: a mailbox that failed for its old one works again without
    // a new Authorize (its refresh token still does), once the transport agrees, as Verify
    // checks; and the new secret's expiry is read when the app may.
    let refused_secret = existing
        .status_reason
        .as_ref()
        .is_some_and(|r| r.code.starts_with("client_secret_"));
    let result = if existing.status != MailboxStatus::Verified && refused_secret {
        access::verify(access, org_id, id).await
    } else {
        access::read_secret_expiry(access, &mailbox).await
    };
    result.map_err(ServiceError::internal)
}

/// Whether a patch touches what a token request is made of (the app, its endpoints, the
/// account, the server): then a new secret is kept untried, as the tokens go anyway.
fn touches_app(patch: &MailboxPatch, m: &Mailbox) -> bool {
    let differs =
        |given: &Option<String>, stored: &str| given.as_deref().is_some_and(|g| g.trim() != stored);
    let differs_opt = |given: &Option<String>, stored: &Option<String>| {
        given
            .as_deref()
            .is_some_and(|g| Some(g.trim()) != stored.as_deref())
    };
    // A form sends every field, changed or not: only a value that differs touches the app.
    patch
        .tenant
        .as_ref()
        .is_some_and(|t| t.as_deref().map(str::trim) != m.tenant.as_deref())
        || differs(&patch.host, &m.host)
        || patch.port.is_some_and(|p| p != i64::from(m.port))
        || differs(&patch.security, m.security.as_str())
        || differs(&patch.username, &m.username)
        || patch.sign_in_account.as_ref().is_some_and(|a| {
            a.as_deref().map(str::trim).unwrap_or(&m.username) != m.sign_in_account
        })
        || differs_opt(&patch.authorization_url, &m.authorization_url)
        || differs_opt(&patch.token_url, &m.token_url)
        || differs_opt(&patch.client_id, &m.client_id)
        || patch
            .client_auth
            .as_deref()
            .is_some_and(|c| ClientAuth::parse_field(c) != Ok(m.client_auth))
        || patch.scopes.as_ref().is_some_and(|s| *s != m.scopes)
        || differs(&patch.transport, m.transport.as_str())
        || differs(&patch.credential, m.credential.as_str())
        || differs(&patch.cloud, m.cloud.as_str())
}

/// Tries a new client secret at the token endpoint before the write transaction (a network
/// call holds no transaction open). `None`: nothing to try.
async fn check_secret(
    access: &Access,
    org_id: OrgId,
    id: MailboxId,
    patch: &MailboxPatch,
) -> ServiceResult<Option<SecretCheck>> {
    let Some(secret) = patch.client_secret.as_ref() else {
        return Ok(None);
    };
    let text = secret.expose_secret();
    // A blank secret or a Secret ID is refused by its shape, with no request.
    if text.trim().is_empty() || looks_like_secret_id(text) {
        return Ok(None);
    }
    let existing = {
        let mut conn = access.store.conn().await?;
        store::mailboxes::get(&mut conn, org_id, id).await?
    };
    match existing {
        Some(m) if touches_app(patch, &m) => Ok(None),
        // A Google service account's key is no client secret: it is checked by Verify.
        Some(m)
            if m.auth == AuthKind::OAuth2
                && m.client_auth != ClientAuth::Certificate
                && !super::service_account::applies(Some(m.provider), Some(m.credential)) =>
        {
            Ok(Some(
                access::check_new_secret(access, &m, secret)
                    .await
                    .map_err(ServiceError::internal)?,
            ))
        }
        _ => Ok(None),
    }
}
