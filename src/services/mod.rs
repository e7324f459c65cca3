//! The operations the CLI and the web layer share. Each validates its input into domain types,
//! makes its change and records the audit event in one transaction, so no caller can forget
//! either half.

pub mod alerts;
pub mod authorization;
pub mod default_sender;
pub mod device;
pub mod lookup;
pub mod mailboxes;
pub mod messages;
pub mod relay;
pub mod send;
pub mod settings;
pub mod sign_in;
pub mod test_message;
pub mod views;
pub mod webhooks;

use secrecy::SecretString;
use time::{Duration, OffsetDateTime};

use crate::access::AccessError;
use crate::crypto;
use crate::domain::{
    Actor, ApiKey, ApiKeyId, ApiKeyName, ApiKeyToken, EmailAddress, FieldError, KeyRole,
    NewAuditEvent, NewPassword, OrgId, OrgName, Organization, User, UserId, UserRole,
};
use crate::store::{self, Store, StoreError};

/// How long a first-run setup link stays valid.
pub const SETUP_LINK_TTL: Duration = Duration::hours(1);

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("{}", .0.message)]
    Conflict(FieldError),
    /// Input refused for a reason with a code of its own (`duplicate_header`).
    #[error("{error}")]
    Rejected {
        code: &'static str,
        error: FieldError,
    },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Refused(&'static str),
    /// The caller may not do this (an API key limited to other mailboxes).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Herald's own failure; the cause is kept for the log, never shown.
    #[error("{0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A limit was reached (the organization's queue, the default sender's daily quota):
    /// nothing was stored, and the same request may succeed after `retry_after` seconds.
    #[error("{message}")]
    Limited {
        code: &'static str,
        message: String,
        retry_after: u64,
    },
}

impl ServiceError {
    /// Herald's own failure, keeping its cause.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(cause.into())
    }
}

impl From<AccessError> for ServiceError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(e) => Self::Store(e),
            AccessError::MailboxGone => Self::NotFound("mailbox"),
            other => Self::internal(other),
        }
    }
}

impl From<FieldError> for ServiceError {
    fn from(e: FieldError) -> Self {
        Self::Invalid(vec![e])
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// Collects every field's error instead of stopping at the first, so a form shows them all.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Whether a field already has an error.
    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }

    pub fn finish(self) -> ServiceResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Invalid(self.0))
        }
    }
}

async fn hash(password: NewPassword) -> ServiceResult<String> {
    // Only signed-in admins and the CLI set passwords: they wait their turn in the pool.
    crypto::hash_pool()
        .run(crypto::Wait::Always, move || {
            crypto::hash_password(password.secret())
        })
        .await
        .map_err(ServiceError::internal)?
        .map_err(ServiceError::internal)
}

fn conflict(e: StoreError, field: &'static str, message: String) -> ServiceError {
    match e {
        StoreError::Conflict(_) => ServiceError::Conflict(FieldError::new(field, message)),
        other => ServiceError::Store(other),
    }
}

/// Creates an organization.
pub async fn create_org(
    store: &Store,
    name: &str,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<Organization> {
    let name = OrgName::parse(name)?;
    let mut tx = store.begin().await?;
    let org = store::orgs::insert(&mut tx, &name, now)
        .await
        .map_err(|e| {
            conflict(
                e,
                "name",
                format!("an organization named \"{}\" already exists", name.as_str()),
            )
        })?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id: org.id,
            actor: actor.clone(),
            action: "organization.create",
            target_kind: "organization",
            target_id: org.id.to_string(),
            detail: serde_json::json!({ "name": org.name }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(org)
}

/// Finds an organization by id or name, for the CLI.
pub async fn find_org(store: &Store, id_or_name: &str) -> ServiceResult<Organization> {
    let mut conn = store.conn().await?;
    store::orgs::find(&mut conn, id_or_name)
        .await?
        .ok_or(ServiceError::NotFound("organization"))
}

/// A user to create, as given by a person.
pub struct NewUserInput {
    pub email: String,
    pub password: SecretString,
    pub role: String,
}

/// Creates a user in an organization.
pub async fn create_user(
    store: &Store,
    org_id: OrgId,
    input: NewUserInput,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<User> {
    let mut checks = Checks::default();
    let email = checks.take(EmailAddress::parse(&input.email));
    let password = checks.take(NewPassword::parse(input.password));
    let role = checks.take(UserRole::parse(&input.role));
    checks.finish()?;
    let (Some(email), Some(password), Some(role)) = (email, password, role) else {
        unreachable!("finish() fails when a field failed");
    };
    let hash = hash(password).await?;
    let mut tx = store.begin().await?;
    let user = store::users::insert(&mut tx, org_id, &email, &hash, role, now)
        .await
        .map_err(|e| {
            conflict(
                e,
                "email",
                format!("a user with the email {email} already exists"),
            )
        })?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "user.create",
            target_kind: "user",
            target_id: user.id.to_string(),
            detail: serde_json::json!({ "email": user.email, "role": role.as_str() }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(user)
}

/// A change to a user; absent fields stay as they are.
#[derive(Default)]
pub struct UserChange {
    pub role: Option<String>,
    pub password: Option<SecretString>,
}

/// Changes a user's role or password. An organization always keeps at least one admin, and a
/// new password signs the user out everywhere.
pub async fn update_user(
    store: &Store,
    org_id: OrgId,
    id: UserId,
    change: UserChange,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<User> {
    let mut checks = Checks::default();
    let role = change.role.and_then(|r| checks.take(UserRole::parse(&r)));
    let password = change
        .password
        .and_then(|p| checks.take(NewPassword::parse(p)));
    checks.finish()?;
    let hash = match password {
        Some(password) => Some(hash(password).await?),
        None => None,
    };
    let mut tx = store.begin().await?;
    store::orgs::lock(&mut tx, store.backend(), org_id).await?;
    let user = store::users::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("user"))?;
    let mut changed = Vec::new();
    if let Some(role) = role
        && role != user.role
    {
        if user.role == UserRole::Admin && store::users::count_admins(&mut tx, org_id).await? <= 1 {
            return Err(ServiceError::Conflict(FieldError::new(
                "role",
                "this is the organization's last admin; make another user admin first",
            )));
        }
        store::users::set_role(&mut tx, org_id, id, role, now).await?;
        changed.push("role");
    }
    if let Some(hash) = &hash {
        store::users::set_password_hash(&mut tx, org_id, id, hash, now).await?;
        store::sessions::delete_for_user(&mut tx, id).await?;
        changed.push("password");
    }
    if !changed.is_empty() {
        store::audit::record(
            &mut tx,
            &NewAuditEvent {
                org_id,
                actor: actor.clone(),
                action: "user.update",
                target_kind: "user",
                target_id: id.to_string(),
                detail: serde_json::json!({ "email": user.email, "changed": changed, "role": role.unwrap_or(user.role).as_str() }),
            },
            now,
        )
        .await?;
    }
    let user = store::users::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("user"))?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(user)
}

/// Deletes a user, except the organization's last admin.
pub async fn delete_user(
    store: &Store,
    org_id: OrgId,
    id: UserId,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<()> {
    let mut tx = store.begin().await?;
    store::orgs::lock(&mut tx, store.backend(), org_id).await?;
    let user = store::users::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("user"))?;
    if user.role == UserRole::Admin && store::users::count_admins(&mut tx, org_id).await? <= 1 {
        return Err(ServiceError::Refused(
            "this is the organization's last admin; make another user admin first",
        ));
    }
    store::users::delete(&mut tx, org_id, id).await?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "user.delete",
            target_kind: "user",
            target_id: id.to_string(),
            detail: serde_json::json!({ "email": user.email }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

/// Issues an API key, limited to `mailboxes` (ids or names of the organization's) when any
/// are given. The token is returned once and only its digest is stored.
pub async fn create_api_key(
    store: &Store,
    org_id: OrgId,
    name: &str,
    role: &str,
    mailboxes: &[String],
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<(ApiKey, ApiKeyToken)> {
    let mut checks = Checks::default();
    let name = checks.take(ApiKeyName::parse(name));
    let role = checks.take(KeyRole::parse(role));
    let mut limited_to = Vec::new();
    if role == Some(KeyRole::Admin) && !mailboxes.is_empty() {
        checks.push(FieldError::new(
            "mailboxes",
            "only sender keys can be limited to mailboxes: an admin key manages every mailbox",
        ));
    }
    {
        let mut conn = store.conn().await?;
        for (i, wanted) in mailboxes.iter().enumerate() {
            match store::mailboxes::find(&mut conn, org_id, wanted).await? {
                Some(m) if !limited_to.contains(&m.id) => limited_to.push(m.id),
                Some(_) => {}
                None => checks.push(FieldError::new(
                    format!("mailboxes[{i}]"),
                    format!("the organization has no mailbox called or with the id `{wanted}`"),
                )),
            }
        }
    }
    checks.finish()?;
    let (Some(name), Some(role)) = (name, role) else {
        unreachable!("finish() fails when a field failed");
    };
    let token = ApiKeyToken::from_random(&crypto::random_token());
    let mut tx = store.begin().await?;
    let key = store::api_keys::insert(&mut tx, org_id, &name, role, &token, now).await?;
    if !limited_to.is_empty() {
        store::api_keys::limit_to(&mut tx, key.id, &limited_to).await?;
    }
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "api_key.create",
            target_kind: "api_key",
            target_id: key.id.to_string(),
            detail: serde_json::json!({
                "name": key.name, "role": role.as_str(), "prefix": key.prefix,
                "mailboxes": limited_to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok((key, token))
}

/// Revokes an API key of the organization. Revoking twice is not an error.
pub async fn revoke_api_key(
    store: &Store,
    org_id: OrgId,
    id: ApiKeyId,
    actor: &Actor,
    now: OffsetDateTime,
) -> ServiceResult<ApiKey> {
    let mut tx = store.begin().await?;
    let key = store::api_keys::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("API key"))?;
    if store::api_keys::revoke(&mut tx, org_id, id, now).await? {
        store::audit::record(
            &mut tx,
            &NewAuditEvent {
                org_id,
                actor: actor.clone(),
                action: "api_key.revoke",
                target_kind: "api_key",
                target_id: id.to_string(),
                detail: serde_json::json!({ "name": key.name, "prefix": key.prefix }),
            },
            now,
        )
        .await?;
    }
    let key = store::api_keys::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("API key"))?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(key)
}

/// While the installation has no user, makes a new one-time setup token and returns it;
/// otherwise `None`. Earlier unused tokens stay valid until they expire, so that each of several
/// instances starting at once prints a link that works; the first one used ends setup.
pub async fn issue_setup_token(
    store: &Store,
    now: OffsetDateTime,
) -> ServiceResult<Option<String>> {
    let mut tx = store.begin().await?;
    if store::users::count_all(&mut tx).await? > 0 {
        return Ok(None);
    }
    let token = crypto::random_token();
    store::setup::replace(
        &mut tx,
        &crypto::token_digest(&token),
        now,
        now + SETUP_LINK_TTL,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(Some(token))
}

/// Whether a setup token may still be used.
pub async fn setup_token_is_valid(
    store: &Store,
    token: &str,
    now: OffsetDateTime,
) -> ServiceResult<bool> {
    let mut conn = store.conn().await?;
    Ok(store::users::count_all(&mut conn).await? == 0
        && store::setup::is_valid(&mut conn, &crypto::token_digest(token), now).await?)
}

/// What the first visitor fills in.
pub struct SetupInput {
    pub org_name: String,
    pub email: String,
    pub password: SecretString,
}

/// Creates the first organization and its admin with a one-time setup token.
pub async fn complete_setup(
    store: &Store,
    token: &str,
    input: SetupInput,
    source: &str,
    now: OffsetDateTime,
) -> ServiceResult<User> {
    let mut checks = Checks::default();
    let org_name = checks
        .take(OrgName::parse(&input.org_name).map_err(|e| FieldError::new("org_name", e.message)));
    let email = checks.take(EmailAddress::parse(&input.email));
    let password = checks.take(NewPassword::parse(input.password));
    checks.finish()?;
    let (Some(org_name), Some(email), Some(password)) = (org_name, email, password) else {
        unreachable!("finish() fails when a field failed");
    };
    // The page is public: a password is hashed only for a link that still works, so nobody
    // without one can keep the hashing pool busy (it is checked again below, atomically).
    let refused = || {
        ServiceError::Refused(
            "this setup link has expired or was already used; restart `herald serve` for a new one, or sign in",
        )
    };
    if !setup_token_is_valid(store, token, now).await? {
        return Err(refused());
    }
    let hash = hash(password).await?;
    let mut tx = store.begin().await?;
    if store::users::count_all(&mut tx).await? > 0
        || !store::setup::consume(&mut tx, &crypto::token_digest(token), now).await?
    {
        return Err(refused());
    }
    let org = store::orgs::insert(&mut tx, &org_name, now)
        .await
        .map_err(|e| {
            conflict(
                e,
                "org_name",
                format!(
                    "an organization named \"{}\" already exists",
                    org_name.as_str()
                ),
            )
        })?;
    let user = store::users::insert(&mut tx, org.id, &email, &hash, UserRole::Admin, now)
        .await
        .map_err(|e| {
            conflict(
                e,
                "email",
                format!("a user with the email {email} already exists"),
            )
        })?;
    let actor = Actor {
        kind: crate::domain::ActorKind::System,
        id: None,
        label: "first-run setup".into(),
        source: source.to_owned(),
    };
    for (action, target_kind, target_id, detail) in [
        (
            "organization.create",
            "organization",
            org.id.to_string(),
            serde_json::json!({ "name": org.name }),
        ),
        (
            "user.create",
            "user",
            user.id.to_string(),
            serde_json::json!({ "email": user.email, "role": "admin" }),
        ),
    ] {
        store::audit::record(
            &mut tx,
            &NewAuditEvent {
                org_id: org.id,
                actor: actor.clone(),
                action,
                target_kind,
                target_id,
                detail,
            },
            now,
        )
        .await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(user)
}
