//! Relay credentials: issued with a generated username and password (shown once), each mapped
//! to mailboxes of its organization, optionally limited to client address ranges; or, for a
//! device that cannot log in, bound to private networks alone.

use secrecy::SecretString;
use time::OffsetDateTime;

use super::{Checks, ServiceError, ServiceResult};
use crate::clock::SharedClock;
use crate::config::OutboxSettings;
use crate::crypto;
use crate::domain::mailbox::Mailbox;
use crate::domain::relay::{FromPolicy, RelayCredential};
use crate::domain::{Actor, FieldError, NewAuditEvent, OrgId, parse_label};
use crate::store::{self, Store, StoreError};

pub use crate::store::auth_failures::{Exceeded, Reservation};

/// What to issue.
pub struct NewRelayCredential {
    pub name: String,
    /// Mailbox ids or names of the organization; the first is used unless MAIL FROM names
    /// another.
    pub mailboxes: Vec<String>,
    /// CIDR ranges or addresses the device may connect from; empty: anywhere.
    pub allowed_networks: Vec<String>,
    pub from_policy: Option<String>,
    pub keep_reply_to: Option<bool>,
    /// For a device that cannot log in: the client's network alone identifies it (no
    /// password); the networks must be given, and private or loopback.
    pub network_only: Option<bool>,
}

/// `len` characters from `[a-z0-9]` (username) or `[A-Za-z0-9]` (password), without bias.
fn random_text(len: usize, alphabet: &[u8]) -> String {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in crypto::random_bytes::<64>() {
            if (b as usize) < limit && out.len() < len {
                out.push(alphabet[b as usize % alphabet.len()] as char);
            }
        }
    }
    out
}

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const MIXED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The digest a relay password is kept as.
pub fn password_digest(password: &str) -> String {
    crypto::token_digest(password)
}

/// Issues a credential; answers it with its password, which is not kept.
pub async fn create(
    store: &Store,
    org_id: OrgId,
    input: NewRelayCredential,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<(RelayCredential, Option<SecretString>)> {
    let mut checks = Checks::default();
    let name = checks.take(parse_label("name", &input.name, 100));
    let from_policy = match input.from_policy.as_deref() {
        None => Some(FromPolicy::Rewrite),
        Some(raw) => checks.take(
            raw.parse::<FromPolicy>()
                .map_err(|e| FieldError::new("from_policy", e)),
        ),
    };
    let mut networks = Vec::new();
    for (i, raw) in input.allowed_networks.iter().enumerate() {
        let raw = raw.trim();
        match raw
            .parse::<ipnet::IpNet>()
            .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(net) => networks.push(net),
            Err(_) => checks.push(FieldError::new(
                format!("allowed_networks[{i}]"),
                format!("`{raw}` is not an address or a CIDR range such as 192.168.1.0/24"),
            )),
        }
    }
    let network_only = input.network_only.unwrap_or(false);
    if network_only {
        if input.allowed_networks.is_empty() {
            checks.push(FieldError::new(
                "allowed_networks",
                "a credential without a password needs the networks its devices connect from, e.g. 192.168.10.0/24",
            ));
        }
        for (i, net) in networks.iter().enumerate() {
            if !crate::domain::relay::private_network(net) {
                checks.push(FieldError::new(
                    format!("allowed_networks[{i}]"),
                    format!("`{net}` is not a private or loopback network: without a password, anyone there could send as the mailbox. Use addresses such as 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or fd00::/8"),
                ));
            }
        }
    }
    let mut mailboxes = Vec::new();
    if input.mailboxes.is_empty() {
        checks.push(FieldError::new(
            "mailboxes",
            "name at least one mailbox the device sends through",
        ));
    }
    {
        let mut conn = store.conn().await?;
        for (i, wanted) in input.mailboxes.iter().enumerate() {
            match store::mailboxes::find(&mut conn, org_id, wanted).await? {
                Some(m) if !mailboxes.contains(&m.id) => mailboxes.push(m.id),
                Some(_) => {}
                None => checks.push(FieldError::new(
                    format!("mailboxes[{i}]"),
                    format!("the organization has no mailbox called or with the id `{wanted}`"),
                )),
            }
        }
    }
    checks.finish()?;
    let (Some(name), Some(from_policy)) = (name, from_policy) else {
        unreachable!("finish() fails when a field failed");
    };
    let password = random_text(32, MIXED);
    let credential = RelayCredential {
        id: uuid::Uuid::now_v7().to_string(),
        org_id,
        name,
        username: format!("relay-{}", random_text(12, LOWER)),
        mailboxes,
        allowed_networks: networks,
        from_policy,
        keep_reply_to: input.keep_reply_to.unwrap_or(true),
        network_only,
        created_at: now,
        last_used_at: None,
    };
    let mut tx = store.begin().await?;
    store::relay::insert(&mut tx, &credential, &password_digest(&password)).await?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "relay_credential.create",
            target_kind: "relay_credential",
            target_id: credential.id.clone(),
            detail: serde_json::json!({
                "name": credential.name,
                "username": credential.username,
                "mailboxes": credential.mailboxes.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "from_policy": credential.from_policy.as_str(),
                "network_only": credential.network_only,
            }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    // A network-only credential has no password to give: the one stored is never told.
    Ok((
        credential.clone(),
        (!credential.network_only).then(|| SecretString::from(password)),
    ))
}

/// Deletes a credential of the organization: the device can no longer log in.
pub async fn delete(
    store: &Store,
    org_id: OrgId,
    id: &str,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<()> {
    let mut tx = store.begin().await?;
    let credential = store::relay::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("relay credential"))?;
    store::relay::delete(&mut tx, org_id, id).await?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "relay_credential.delete",
            target_kind: "relay_credential",
            target_id: id.to_owned(),
            detail: serde_json::json!({ "name": credential.name, "username": credential.username }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// What the SMTP relay asks of the core while a device logs in and sends: the login throttle,
/// its credentials and their mailboxes, and accepting its mail.
#[derive(Clone)]
pub struct RelayService {
    store: Store,
    clock: SharedClock,
}

impl RelayService {
    /// A count that changes whenever a relay credential, a mailbox or an organization changes,
    /// here or (on PostgreSQL) in another instance: what was read under another count may be
    /// out of date.
    pub fn changes_seen(&self) -> u64 {
        crate::store::changes::generation()
    }

    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    /// The time, as the application's clock tells it.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Records a login attempt under `scope` before the password is checked, unless `scope`
    /// already has `limit` attempts since `since`; see [`store::auth_failures::reserve`]. The
    /// record is a write: on SQLite it takes its turn.
    pub async fn reserve_login(
        &self,
        scope: &str,
        limit: i64,
        now: i64,
        since: i64,
    ) -> ServiceResult<Result<Reservation, Exceeded>> {
        let _turn = self.store.write_permit().await;
        let mut conn = self.store.conn().await?;
        Ok(
            store::auth_failures::reserve(&mut conn, &[(scope, limit)], now, since)
                .await
                .inspect_err(
                    |e| tracing::warn!(error = %e, "could not reserve a relay login attempt"),
                )?,
        )
    }

    /// Takes a reserved login attempt back. Every record is tried; the first failure is
    /// answered.
    pub async fn take_back_login(&self, reservation: Reservation) -> ServiceResult<()> {
        let _turn = self.store.write_permit().await;
        let mut conn = self.store.conn().await?;
        let mut result = Ok(());
        for id in &reservation.ids {
            result = result.and(store::auth_failures::forget(&mut conn, id).await);
        }
        Ok(result?)
    }

    /// The credential `username` names, if `password` is its password (compared in constant
    /// time).
    pub async fn check_login(
        &self,
        username: &str,
        password: &str,
    ) -> ServiceResult<Option<RelayCredential>> {
        let found = {
            let mut conn = self.store.conn().await?;
            store::relay::find_by_username(&mut conn, username).await?
        };
        let digest = password_digest(password);
        Ok(found
            .filter(|(_, stored)| crypto::constant_time_eq(&digest, stored))
            .map(|(credential, _)| credential))
    }

    /// Notes that the credential was used, to the minute: not a disk write for every login of a
    /// busy device. Best effort: a failure is ignored.
    pub async fn note_use(&self, credential: &RelayCredential, now: OffsetDateTime) {
        if credential
            .last_used_at
            .is_none_or(|t| now - t > time::Duration::minutes(1))
            && let Ok(mut conn) = self.store.relaxed_conn().await
        {
            let _ = store::relay::touch(&mut conn, &credential.id, now).await;
        }
    }

    /// The network-only credential for a client at `addr` that did not log in: the one whose
    /// network holds it most narrowly (the first issued on a tie).
    pub async fn by_network(
        &self,
        addr: std::net::IpAddr,
    ) -> ServiceResult<Option<RelayCredential>> {
        let all = {
            let mut conn = self.store.conn().await?;
            store::relay::network_only(&mut conn).await?
        };
        let mut best: Option<(u8, RelayCredential)> = None;
        for credential in all {
            if let Some(prefix) = credential.network_match(addr)
                && best.as_ref().is_none_or(|(b, _)| prefix > *b)
            {
                best = Some((prefix, credential));
            }
        }
        Ok(best.map(|(_, c)| c))
    }

    /// The credential `username` names and its mailboxes that still exist, in the credential's
    /// order; `None` when the credential was deleted.
    pub async fn credential_and_mailboxes(
        &self,
        username: &str,
    ) -> ServiceResult<Option<(RelayCredential, Vec<Mailbox>)>> {
        let mut conn = self.store.conn().await?;
        let Some((credential, _)) = store::relay::find_by_username(&mut conn, username).await?
        else {
            return Ok(None);
        };
        let mut mailboxes = Vec::new();
        for id in &credential.mailboxes {
            if let Some(m) = store::mailboxes::get(&mut conn, credential.org_id, *id).await? {
                mailboxes.push(m);
            }
        }
        Ok(Some((credential, mailboxes)))
    }

    /// Accepts a relayed message into the outbox: [`super::send::accept`].
    pub async fn accept(
        &self,
        settings: &OutboxSettings,
        caller: &super::send::Caller,
        submission: super::send::Submission,
        now: OffsetDateTime,
    ) -> ServiceResult<super::send::Accepted> {
        super::send::accept(&self.store, settings, caller, submission, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_text_uses_only_its_alphabet_and_length() {
        let password = random_text(32, MIXED);
        assert_eq!(password.len(), 32);
        assert!(password.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(password, random_text(32, MIXED));
        let user = random_text(12, LOWER);
        assert!(user.bytes().all(|b| LOWER.contains(&b)));
    }
}
