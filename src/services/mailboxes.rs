//! Creating, changing and deleting mailboxes: provider presets, validation (including the
//! guards against SSRF and header injection), sealed secrets, and the rule that a changed
//! identity drops the stored tokens.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use url::Url;

use super::{Checks, ServiceError, ServiceResult};
use crate::domain::mailbox::{
    AuthKind, ClientAuth, GOOGLE_SCOPES, MICROSOFT_SCOPES, Mailbox, MailboxStatus, Provider,
    Security, StatusReason, looks_like_secret_id, parse_tenant, secret_fields,
};
use crate::domain::message::LimitOverrides;
use crate::domain::presets::SandboxPreset;
use crate::domain::{Actor, EmailAddress, FieldError, MailboxId, NewAuditEvent, OrgId};
use crate::keys;
use crate::net::{HostPolicy, Reach, reach_of};
use crate::secrets::KeyRing;
use crate::store::{self, Store, StoreError};

/// What the installation allows.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// Development mode: `http://` and SMTP without TLS on loopback.
    pub dev: bool,
    /// Token URLs and SMTP hosts may be on private networks (on-premises servers).
    pub allow_private_hosts: bool,
    pub sandbox: Option<&'a SandboxPreset>,
}

impl Policy<'_> {
    /// The rule for outbound connections.
    pub fn hosts(&self) -> HostPolicy {
        HostPolicy {
            dev: self.dev,
            allow_private: self.allow_private_hosts,
        }
    }
}

/// A mailbox as given by a caller: everything optional, presets fill the rest.
#[derive(Default)]
pub struct MailboxDraft {
    pub name: Option<String>,
    pub auth: Option<String>,
    pub provider: Option<String>,
    pub tenant: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub security: Option<String>,
    pub username: Option<String>,
    pub from_name: Option<String>,
    pub sign_in_account: Option<String>,
    pub reply_to: Option<String>,
    pub signature: Option<String>,
    pub default: Option<bool>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_auth: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub issuer: Option<String>,
    pub client_secret_expires_at: Option<String>,
    pub client_secret: Option<SecretString>,
    pub password: Option<SecretString>,
    pub limits: Option<LimitOverrides>,
}

/// A change to a mailbox. `Some(None)` clears an optional field; `None` keeps it.
#[derive(Default)]
pub struct MailboxPatch {
    pub name: Option<String>,
    pub tenant: Option<Option<String>>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub security: Option<String>,
    pub username: Option<String>,
    pub from_name: Option<Option<String>>,
    pub sign_in_account: Option<Option<String>>,
    pub reply_to: Option<Option<String>>,
    pub signature: Option<Option<String>>,
    pub default: Option<bool>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_auth: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub issuer: Option<Option<String>>,
    pub client_secret_expires_at: Option<Option<String>>,
    pub client_secret: Option<SecretString>,
    pub password: Option<SecretString>,
    /// Replaces every override at once.
    pub limits: Option<LimitOverrides>,
}

const MAX_SIGNATURE: usize = 10_000;

fn blank_to_none(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Refuses CR, LF and other control characters: these fields end up in headers or commands.
fn single_line(checks: &mut Checks, field: &'static str, value: &str, max: usize) -> bool {
    if value.chars().any(char::is_control) {
        checks.push(FieldError::new(
            field,
            "must not contain line breaks or other control characters",
        ));
        return false;
    }
    if value.chars().count() > max {
        checks.push(FieldError::new(
            field,
            format!("is too long: at most {max} characters"),
        ));
        return false;
    }
    true
}

/// Checks that Herald may connect to `host` under the policy.
fn host_allowed(policy: &Policy<'_>, host: &str) -> Result<(), String> {
    policy.hosts().check_host(host)
}

pub(crate) fn check_url(
    checks: &mut Checks,
    policy: &Policy<'_>,
    field: &'static str,
    raw: &str,
) -> Option<String> {
    if !single_line(checks, field, raw, 2048) {
        return None;
    }
    let url = match Url::parse(raw.trim()) {
        Ok(url) => url,
        Err(_) => {
            checks.push(FieldError::new(field, format!("`{raw}` is not a URL")));
            return None;
        }
    };
    let Some(host) = url.host_str().map(str::to_owned) else {
        checks.push(FieldError::new(field, "has no host"));
        return None;
    };
    let loopback = reach_of(&host) == Reach::Loopback;
    match url.scheme() {
        "https" => {}
        "http" if policy.dev && loopback => {}
        "http" => {
            checks.push(FieldError::new(
                field,
                "must start with https:// (http:// only on loopback in development mode)",
            ));
            return None;
        }
        _ => {
            checks.push(FieldError::new(field, "must be an https:// URL"));
            return None;
        }
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        checks.push(FieldError::new(
            field,
            "must not carry a fragment or credentials",
        ));
        return None;
    }
    if let Err(message) = host_allowed(policy, &host) {
        checks.push(FieldError::new(field, message));
        return None;
    }
    Some(url.to_string())
}

fn check_host(checks: &mut Checks, policy: &Policy<'_>, raw: &str) -> Option<String> {
    let host = raw.trim().to_ascii_lowercase();
    if host.is_empty() {
        checks.push(FieldError::new(
            "host",
            "must not be empty: give the SMTP server, e.g. smtp.office365.com",
        ));
        return None;
    }
    if !single_line(checks, "host", &host, 253) {
        return None;
    }
    let is_ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok();
    let is_name = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
    });
    if !is_ip && !is_name {
        checks.push(FieldError::new(
            "host",
            format!("`{raw}` is not a host name: give the server alone, e.g. smtp.office365.com, without scheme or port"),
        ));
        return None;
    }
    if let Err(message) = host_allowed(policy, &host) {
        checks.push(FieldError::new("host", message));
        return None;
    }
    Some(host)
}

fn check_email(checks: &mut Checks, field: &'static str, raw: &str) -> Option<String> {
    checks
        .take(EmailAddress::parse_field(field, raw))
        .map(|e| e.as_str().to_owned())
}

/// The mailbox settings a draft resolves to, with its secrets.
pub struct Resolved {
    pub mailbox: Mailbox,
    pub client_secret: Option<SecretString>,
    pub password: Option<SecretString>,
}

/// Fills presets and validates a whole mailbox. `existing` carries what a PATCH keeps
/// (including whether secrets are already stored).
fn resolve(
    org_id: OrgId,
    id: MailboxId,
    draft: MailboxDraft,
    policy: &Policy<'_>,
    has_secret: (bool, bool),
    now: OffsetDateTime,
) -> ServiceResult<Resolved> {
    let mut checks = Checks::default();

    let name = blank_to_none(draft.name)
        .and_then(|n| checks.take(crate::domain::parse_label("name", &n, 100)));
    if name.is_none() && !checks.has("name") {
        checks.push(FieldError::new("name", "must not be empty"));
    }
    let auth = match draft.auth.as_deref().map(str::trim) {
        None | Some("") => {
            checks.push(FieldError::new("auth", "must be oauth2 or basic"));
            None
        }
        Some(raw) => checks.take(
            raw.parse::<AuthKind>()
                .map_err(|e| FieldError::new("auth", e)),
        ),
    };
    let provider = match draft.provider.as_deref().map(str::trim) {
        None | Some("") => Some(Provider::Custom),
        Some(raw) => checks.take(
            raw.parse::<Provider>()
                .map_err(|e| FieldError::new("provider", e)),
        ),
    };
    if provider == Some(Provider::Sandbox) && policy.sandbox.is_none() {
        checks.push(FieldError::new(
            "provider",
            "sandbox is only available while the sandbox provider runs (herald demo)",
        ));
    }
    let tenant = match (provider, blank_to_none(draft.tenant)) {
        (_, Some(t)) => checks.take(parse_tenant(&t)),
        (Some(Provider::Microsoft), None) if auth == Some(AuthKind::OAuth2) => {
            checks.push(FieldError::new(
                "tenant",
                "is required for Microsoft 365: the Directory (tenant) ID or a domain such as contoso.com",
            ));
            None
        }
        (Some(Provider::Sandbox), None) => policy.sandbox.map(|s| s.tenant.clone()),
        _ => None,
    };

    // Presets: the provider's endpoints, server and scopes, unless the caller gave them.
    let (
        mut preset_auth,
        mut preset_token,
        mut preset_issuer,
        mut preset_host,
        mut preset_port,
        mut preset_scopes,
    ) = (None, None, None, None, None, None::<Vec<String>>);
    match provider {
        Some(Provider::Microsoft) => {
            if let Some(t) = &tenant {
                preset_auth = Some(format!(
                    "https://login.microsoftonline.com/{t}/oauth2/v2.0/authorize"
                ));
                preset_token = Some(format!(
                    "https://login.microsoftonline.com/{t}/oauth2/v2.0/token"
                ));
                // Entra's issuer names the tenant by its GUID, whatever was typed: a domain
                // gives no issuer to hold a redirect's `iss` to (rather than a wrong one).
                preset_issuer = uuid::Uuid::parse_str(t).is_ok().then(|| {
                    format!(
                        "https://login.microsoftonline.com/{}/v2.0",
                        t.to_ascii_lowercase()
                    )
                });
            }
            preset_host = Some("smtp.office365.com".to_owned());
            preset_port = Some(587);
            preset_scopes = Some(MICROSOFT_SCOPES.iter().map(|s| s.to_string()).collect());
        }
        Some(Provider::Google) => {
            preset_auth = Some("https://accounts.google.com/o/oauth2/v2/auth".to_owned());
            preset_token = Some("https://oauth2.googleapis.com/token".to_owned());
            preset_issuer = Some("https://accounts.google.com".to_owned());
            preset_host = Some("smtp.gmail.com".to_owned());
            preset_port = Some(587);
            preset_scopes = Some(GOOGLE_SCOPES.iter().map(|s| s.to_string()).collect());
        }
        Some(Provider::Sandbox) => {
            if let (Some(s), Some(t)) = (policy.sandbox, &tenant) {
                preset_auth = Some(format!("{}/{t}/oauth2/v2.0/authorize", s.base_url));
                preset_token = Some(format!("{}/{t}/oauth2/v2.0/token", s.base_url));
                preset_host = Some(s.smtp_host.clone());
                preset_port = Some(i64::from(s.smtp_port));
                preset_scopes = Some(MICROSOFT_SCOPES.iter().map(|s| s.to_string()).collect());
            }
        }
        _ => {}
    }
    // The sandbox runs on plain http on loopback: allow exactly that, for its own preset.
    let sandbox_policy = Policy {
        dev: policy.dev || provider == Some(Provider::Sandbox),
        ..*policy
    };
    let policy = &sandbox_policy;

    let security = match draft.security.as_deref().map(str::trim) {
        None | Some("") => Some(Security::StartTls),
        Some(raw) => checks.take(
            raw.parse::<Security>()
                .map_err(|e| FieldError::new("security", e)),
        ),
    };
    if security == Some(Security::None) && !policy.dev {
        checks.push(FieldError::new(
            "security",
            "none (no TLS) is only allowed in development mode (HERALD_DEV)",
        ));
    }
    let host = match blank_to_none(draft.host).or(preset_host) {
        Some(h) => check_host(&mut checks, policy, &h),
        None => {
            checks.push(FieldError::new(
                "host",
                "must not be empty: give the SMTP server, e.g. smtp.office365.com",
            ));
            None
        }
    };
    let port = match draft.port.or(preset_port) {
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(_) => {
            checks.push(FieldError::new("port", "must be between 1 and 65535"));
            None
        }
        None => Some(match security {
            Some(Security::Tls) => 465,
            Some(Security::None) => 25,
            _ => 587,
        }),
    };
    let username = match blank_to_none(draft.username) {
        Some(u) => check_email(&mut checks, "username", &u),
        None => {
            checks.push(FieldError::new(
                "username",
                "must not be empty: give the mailbox address, e.g. support@contoso.com",
            ));
            None
        }
    };
    let sign_in_account = match blank_to_none(draft.sign_in_account) {
        Some(a) => check_email(&mut checks, "sign_in_account", &a),
        None => username.clone(),
    };
    let reply_to =
        blank_to_none(draft.reply_to).and_then(|r| check_email(&mut checks, "reply_to", &r));
    let from_name =
        blank_to_none(draft.from_name).filter(|f| single_line(&mut checks, "from_name", f, 100));
    let signature = draft
        .signature
        .map(|s| s.replace("\r\n", "\n"))
        .filter(|s| !s.trim().is_empty());
    if let Some(sig) = &signature {
        if sig
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            checks.push(FieldError::new(
                "signature",
                "must not contain control characters other than line breaks and tabs",
            ));
        }
        if sig.chars().count() > MAX_SIGNATURE {
            checks.push(FieldError::new(
                "signature",
                format!("is too long: at most {MAX_SIGNATURE} characters"),
            ));
        }
    }

    let mut authorization_url = None;
    let mut token_url = None;
    let mut client_id = None;
    let mut scopes = Vec::new();
    let mut issuer = None;
    let client_auth = match draft.client_auth.as_deref().map(str::trim) {
        None | Some("") => Some(ClientAuth::Post),
        Some(raw) => checks.take(
            raw.parse::<ClientAuth>()
                .map_err(|e| FieldError::new("client_auth", e)),
        ),
    };
    if auth == Some(AuthKind::OAuth2) {
        authorization_url = match blank_to_none(draft.authorization_url).or(preset_auth) {
            Some(u) => check_url(&mut checks, policy, "authorization_url", &u),
            None => {
                checks.push(FieldError::new(
                    "authorization_url",
                    "must not be empty: copy the OAuth 2.0 authorization endpoint (v2)",
                ));
                None
            }
        };
        token_url = match blank_to_none(draft.token_url).or(preset_token) {
            Some(u) => check_url(&mut checks, policy, "token_url", &u),
            None => {
                checks.push(FieldError::new(
                    "token_url",
                    "must not be empty: copy the OAuth 2.0 token endpoint (v2)",
                ));
                None
            }
        };
        client_id = match blank_to_none(draft.client_id) {
            Some(c) => single_line(&mut checks, "client_id", &c, 200).then_some(c),
            None => {
                checks.push(FieldError::new(
                    "client_id",
                    "must not be empty: copy the Application (client) ID",
                ));
                None
            }
        };
        scopes = draft.scopes.or(preset_scopes).unwrap_or_default();
        scopes.retain(|s| !s.trim().is_empty());
        if scopes.is_empty() {
            checks.push(FieldError::new("scopes", "must name at least one scope"));
        }
        if scopes
            .iter()
            .any(|s| s.chars().any(|c| c.is_whitespace() || c.is_control()) || s.len() > 200)
        {
            checks.push(FieldError::new(
                "scopes",
                "each scope is one word without spaces or control characters",
            ));
        }
        issuer = blank_to_none(draft.issuer)
            .or(preset_issuer)
            .and_then(|i| check_url(&mut checks, policy, "issuer", &i));
        if !has_secret.0 && draft.client_secret.is_none() {
            checks.push(FieldError::new(
                "client_secret",
                "must not be empty: copy the client secret's Value",
            ));
        }
        if let Some(secret) = &draft.client_secret {
            let text = secret.expose_secret();
            if text.trim().is_empty() {
                checks.push(FieldError::new(
                    "client_secret",
                    "must not be empty: copy the client secret's Value",
                ));
            } else if looks_like_secret_id(text) {
                checks.push(FieldError::new(
                    "client_secret",
                    "this looks like the Secret ID; paste the secret's Value (the other column in Certificates & secrets)",
                ));
            } else {
                single_line(&mut checks, "client_secret", text, 1000);
            }
        }
    }
    if auth == Some(AuthKind::Basic) {
        if !has_secret.1 && draft.password.is_none() {
            checks.push(FieldError::new("password", "must not be empty"));
        }
        if let Some(password) = &draft.password {
            if password.expose_secret().is_empty() {
                checks.push(FieldError::new("password", "must not be empty"));
            } else {
                single_line(&mut checks, "password", password.expose_secret(), 1000);
            }
        }
    }
    let client_secret_expires_at = blank_to_none(draft.client_secret_expires_at).and_then(|d| {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        checks.take(time::Date::parse(&d, &format).map_err(|_| {
            FieldError::new(
                "client_secret_expires_at",
                format!("`{d}` is not a date such as 2027-06-30"),
            )
        }))
    });
    let limits = draft.limits;
    if let Some(limits) = &limits {
        checks.take(limits.validate());
    }
    checks.finish()?;

    let auth = auth.expect("checked");
    let status_reason = Some(StatusReason::not_yet_verified(auth));
    Ok(Resolved {
        mailbox: Mailbox {
            id,
            org_id,
            name: name.expect("checked"),
            auth,
            provider: provider.expect("checked"),
            tenant,
            host: host.expect("checked"),
            port: port.expect("checked"),
            security: security.expect("checked"),
            username: username.expect("checked"),
            from_name,
            sign_in_account: sign_in_account.expect("checked"),
            reply_to,
            signature,
            is_default: draft.default.unwrap_or(false),
            authorization_url,
            token_url,
            client_id,
            client_auth: client_auth.expect("checked"),
            scopes,
            issuer,
            iss_required: false,
            client_secret_expires_at,
            status: MailboxStatus::NotVerified,
            status_reason,
            verified_at: None,
            token_expires_at: None,
            created_at: now,
            updated_at: now,
            limits: limits.unwrap_or_default(),
        },
        client_secret: draft.client_secret,
        password: draft.password,
    })
}

/// Seals and stores the secrets a create or update was given; absent ones stay as they are.
async fn store_secrets(
    conn: &mut store::Conn,
    keys: &KeyRing,
    (client_secret, password): (&Option<SecretString>, &Option<SecretString>),
    owner: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if let Some(secret) = client_secret {
        keys::put_secret(conn, keys, owner, secret_fields::CLIENT_SECRET, secret, now).await?;
    }
    if let Some(password) = password {
        keys::put_secret(conn, keys, owner, secret_fields::PASSWORD, password, now).await?;
    }
    Ok(())
}

fn conflict_on_name(e: StoreError, name: &str) -> ServiceError {
    match e {
        StoreError::Conflict(_) => ServiceError::Conflict(FieldError::new(
            "name",
            format!("a mailbox named \"{name}\" already exists in this organization"),
        )),
        other => ServiceError::Store(other),
    }
}

fn audit_detail(mailbox: &Mailbox) -> serde_json::Value {
    serde_json::json!({
        "name": mailbox.name,
        "auth": mailbox.auth.as_str(),
        "provider": mailbox.provider.as_str(),
        "username": mailbox.username,
        "host": mailbox.host,
    })
}

/// Creates a mailbox, Not Verified until it is authorized or verified.
pub async fn create(
    store: &Store,
    keys: &KeyRing,
    policy: &Policy<'_>,
    org_id: OrgId,
    draft: MailboxDraft,
    actor: &Actor,
) -> ServiceResult<Mailbox> {
    let now = OffsetDateTime::now_utc();
    let resolved = resolve(org_id, MailboxId::new(), draft, policy, (false, false), now)?;
    let mailbox = resolved.mailbox;
    let mut tx = store.begin().await?;
    if mailbox.is_default {
        store::mailboxes::clear_default(&mut tx, org_id).await?;
    }
    store::mailboxes::insert(&mut tx, &mailbox)
        .await
        .map_err(|e| conflict_on_name(e, &mailbox.name))?;
    let owner = mailbox.id.to_string();
    store_secrets(
        &mut tx,
        keys,
        (&resolved.client_secret, &resolved.password),
        &owner,
        now,
    )
    .await?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "mailbox.create",
            target_kind: "mailbox",
            target_id: owner,
            detail: audit_detail(&mailbox),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(mailbox)
}

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
        password: None,
        limits: Some(mailbox.limits),
    }
}

/// Applies a change. A new secret replaces the old; no secret keeps it. A changed identity
/// (account, app registration, endpoints, scopes or server) drops the stored tokens and makes
/// the mailbox Not Verified until it is authorized again.
pub async fn update(
    store: &Store,
    keys: &KeyRing,
    policy: &Policy<'_>,
    org_id: OrgId,
    id: MailboxId,
    patch: MailboxPatch,
    actor: &Actor,
) -> ServiceResult<Mailbox> {
    let now = OffsetDateTime::now_utc();
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
    set!(scopes);
    let patch_issuer = patch.issuer.clone();
    set_nullable!(issuer);
    set_nullable!(client_secret_expires_at);
    set!(limits);
    // The sign-in account follows the username unless it was set on its own.
    if username_changed
        && existing.sign_in_account == existing.username
        && !matches!(draft.sign_in_account, Some(ref a) if a != &existing.sign_in_account)
    {
        draft.sign_in_account = None;
    }
    // A Microsoft mailbox whose tenant changes gets the new tenant's endpoints.
    if existing.provider == Provider::Microsoft && draft.tenant != existing.tenant {
        draft.authorization_url = None;
        draft.token_url = None;
        draft.issuer = None;
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
    let reenter = if server_changed {
        match existing.auth {
            AuthKind::OAuth2 if has_secret.0 && patch.client_secret.is_none() => {
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
    draft.password = patch.password;
    let resolved = match (
        resolve(org_id, id, draft, policy, has_secret, existing.created_at),
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
        // A new client secret keeps the authorization: the refresh token stays valid.
        if secret_changed
            && !identity_changed
            && mailbox.auth == AuthKind::OAuth2
            && existing.status == MailboxStatus::Verified
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
    if mailbox.is_default && !existing.is_default {
        store::mailboxes::clear_default(&mut tx, org_id).await?;
    }
    store::mailboxes::update(&mut tx, &mailbox)
        .await
        .map_err(|e| conflict_on_name(e, &mailbox.name))?;
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
        (&resolved.client_secret, &resolved.password),
        &owner,
        now,
    )
    .await?;
    let mut detail = audit_detail(&mailbox);
    detail["tokens_dropped"] = serde_json::json!(identity_changed);
    detail["secret_replaced"] = serde_json::json!(secret_changed);
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
    Ok(mailbox)
}

/// Where the mailbox's authorization server describes itself: the Microsoft tenant's and the
/// sandbox's discovery documents, and a custom provider's given issuer. Google's issuer is
/// fixed and known.
fn discovery_urls(mailbox: &Mailbox, policy: &Policy<'_>) -> Vec<String> {
    if mailbox.auth != AuthKind::OAuth2 {
        return Vec::new();
    }
    let tenant = mailbox.tenant.as_deref();
    match mailbox.provider {
        Provider::Microsoft => tenant
            .map(|t| {
                format!(
                    "https://login.microsoftonline.com/{t}/v2.0/.well-known/openid-configuration"
                )
            })
            .into_iter()
            .collect(),
        Provider::Sandbox => policy
            .sandbox
            .zip(tenant)
            .map(|(s, t)| format!("{}/{t}/v2.0/.well-known/openid-configuration", s.base_url))
            .into_iter()
            .collect(),
        // OpenID Connect Discovery (under the issuer), then RFC 8414 (the path after it).
        Provider::Custom => mailbox
            .issuer
            .as_deref()
            .and_then(|i| url::Url::parse(i).ok())
            .map(|i| {
                let path = i.path().trim_end_matches('/');
                let origin = i.origin().ascii_serialization();
                vec![
                    format!("{origin}{path}/.well-known/openid-configuration"),
                    format!("{origin}/.well-known/oauth-authorization-server{path}"),
                ]
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Reads the mailbox's authorization server's discovery document and records its issuer and
/// whether every redirect carries `iss` (then one without it is refused). Called when a mailbox
/// is saved (not for Microsoft 365: see the API's `discover_on_save`) and before an
/// authorization that has no issuer yet: Entra's issuer carries the
/// tenant's GUID, which a domain typed in does not tell. Without an answer the mailbox keeps
/// what it had, and the redirect's `iss` is checked only if an issuer is known.
pub async fn discover(
    store: &Store,
    http: &crate::oauth::http::TokenHttp,
    policy: &Policy<'_>,
    mailbox: Mailbox,
) -> ServiceResult<Mailbox> {
    let mut found = None;
    for url in discovery_urls(&mailbox, policy) {
        let fetched = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            crate::oauth::discovery::fetch(http, &url),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::oauth::discovery::DiscoveryError::Invalid(
                "no answer within 5 seconds".into(),
            ))
        });
        match fetched {
            Ok(document) => {
                found = Some(document);
                break;
            }
            Err(e) => {
                tracing::info!(mailbox = %mailbox.id, %url, error = %e, "the authorization server's discovery document was not read here");
            }
        }
    }
    let Some(found) = found else {
        return Ok(mailbox);
    };
    // A custom provider's issuer is the admin's: the document must agree with it.
    if mailbox.provider == Provider::Custom
        && mailbox.issuer.as_deref().map(|i| i.trim_end_matches('/'))
            != Some(found.issuer.trim_end_matches('/'))
    {
        tracing::warn!(mailbox = %mailbox.id, issuer = %found.issuer, "the discovery document names another issuer than the mailbox's; ignored");
        return Ok(mailbox);
    }
    let mut conn = store.conn().await?;
    if store::mailboxes::set_discovery(
        &mut conn,
        &mailbox,
        &found.issuer,
        found.iss_parameter_supported,
    )
    .await?
    {
        return Ok(Mailbox {
            issuer: Some(found.issuer),
            iss_required: found.iss_parameter_supported,
            ..mailbox
        });
    }
    Ok(mailbox)
}

/// Deletes a mailbox and its sealed secrets.
pub async fn delete(
    store: &Store,
    org_id: OrgId,
    id: MailboxId,
    actor: &Actor,
) -> ServiceResult<()> {
    let now = OffsetDateTime::now_utc();
    let mut tx = store.begin().await?;
    let mailbox = store::mailboxes::get(&mut tx, org_id, id)
        .await?
        .ok_or(ServiceError::NotFound("mailbox"))?;
    let reason = StatusReason::new(
        "mailbox_deleted",
        format!(
            "The mailbox \"{}\" was deleted before this message was sent.",
            mailbox.name
        ),
        Some("Send the message again through another mailbox.".into()),
    );
    store::messages::fail_mailbox(&mut tx, id, &reason, now).await?;
    store::mailboxes::delete(&mut tx, org_id, id).await?;
    store::secrets::delete_owner(&mut tx, &id.to_string()).await?;
    // Its alerts have nothing left to act on.
    store::alerts::resolve_mailbox(&mut tx, id, now).await?;
    store::audit::record(
        &mut tx,
        &NewAuditEvent {
            org_id,
            actor: actor.clone(),
            action: "mailbox.delete",
            target_kind: "mailbox",
            target_id: id.to_string(),
            detail: audit_detail(&mailbox),
        },
        now,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy<'static> {
        Policy {
            dev: false,
            allow_private_hosts: false,
            sandbox: None,
        }
    }

    fn microsoft() -> MailboxDraft {
        MailboxDraft {
            name: Some("Support".into()),
            auth: Some("oauth2".into()),
            provider: Some("microsoft".into()),
            tenant: Some("contoso.com".into()),
            username: Some("support@contoso.com".into()),
            client_id: Some("11111111-2222-3333-4444-555555555555".into()),
            client_secret: Some(SecretString::from("abc8Q~secret.value")),
            ..MailboxDraft::default()
        }
    }

    fn resolve_ok(draft: MailboxDraft, policy: &Policy<'_>) -> Mailbox {
        resolve(
            OrgId::new(),
            MailboxId::new(),
            draft,
            policy,
            (false, false),
            OffsetDateTime::now_utc(),
        )
        .map(|r| r.mailbox)
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(draft: MailboxDraft, policy: &Policy<'_>) -> Vec<FieldError> {
        match resolve(
            OrgId::new(),
            MailboxId::new(),
            draft,
            policy,
            (false, false),
            OffsetDateTime::now_utc(),
        ) {
            Err(ServiceError::Invalid(errors)) => errors,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn the_microsoft_preset_fills_endpoints_server_and_scopes_from_the_tenant() {
        let m = resolve_ok(microsoft(), &policy());
        assert_eq!(
            m.authorization_url.as_deref(),
            Some("https://login.microsoftonline.com/contoso.com/oauth2/v2.0/authorize")
        );
        assert_eq!(
            m.token_url.as_deref(),
            Some("https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token")
        );
        // Entra's `iss` names the tenant by GUID: a domain gives no issuer, a GUID its own.
        assert_eq!(m.issuer, None);
        let guid = "72F988BF-86F1-41AF-91AB-2D7CD011DB47";
        let by_id = resolve_ok(
            MailboxDraft {
                tenant: Some(guid.into()),
                ..microsoft()
            },
            &policy(),
        );
        assert_eq!(
            by_id.issuer.as_deref(),
            Some("https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0")
        );
        assert_eq!(
            (m.host.as_str(), m.port, m.security),
            ("smtp.office365.com", 587, Security::StartTls)
        );
        assert_eq!(m.scopes, MICROSOFT_SCOPES);
        assert_eq!(m.sign_in_account, "support@contoso.com");
        assert_eq!(m.status, MailboxStatus::NotVerified);
    }

    #[test]
    fn a_custom_issuer_is_looked_up_as_openid_connect_then_rfc_8414_say() {
        let mut m = resolve_ok(microsoft(), &policy());
        assert_eq!(
            discovery_urls(&m, &policy()),
            ["https://login.microsoftonline.com/contoso.com/v2.0/.well-known/openid-configuration"]
        );
        m.provider = Provider::Custom;
        m.issuer = Some("https://idp.example.com/tenant/v2.0/".into());
        assert_eq!(
            discovery_urls(&m, &policy()),
            [
                "https://idp.example.com/tenant/v2.0/.well-known/openid-configuration",
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant/v2.0"
            ]
        );
        m.issuer = None;
        assert!(
            discovery_urls(&m, &policy()).is_empty(),
            "no issuer, no guess"
        );
    }

    #[test]
    fn the_google_preset_fills_its_endpoints() {
        let m = resolve_ok(
            MailboxDraft {
                provider: Some("google".into()),
                tenant: None,
                ..microsoft()
            },
            &policy(),
        );
        assert_eq!(
            m.token_url.as_deref(),
            Some("https://oauth2.googleapis.com/token")
        );
        assert_eq!(m.host, "smtp.gmail.com");
        assert_eq!(m.scopes, GOOGLE_SCOPES);
    }

    #[test]
    fn a_guid_shaped_secret_is_refused_as_the_secret_id() {
        let errors = errors(
            MailboxDraft {
                client_secret: Some(SecretString::from("8c3a4a9e-2f4b-4f1e-9a6e-3b1f0c2d4e5f")),
                ..microsoft()
            },
            &policy(),
        );
        assert_eq!(errors[0].field, "client_secret");
        assert!(errors[0].message.contains("looks like the Secret ID"));
    }

    #[test]
    fn http_and_private_token_urls_are_refused_outside_development() {
        let draft = || MailboxDraft {
            provider: Some("custom".into()),
            host: Some("smtp.example.com".into()),
            authorization_url: Some("https://idp.example.com/authorize".into()),
            scopes: Some(vec!["mail".into()]),
            ..microsoft()
        };
        let e = errors(
            MailboxDraft {
                token_url: Some("http://idp.example.com/token".into()),
                ..draft()
            },
            &policy(),
        );
        assert_eq!(e[0].field, "token_url");
        let e = errors(
            MailboxDraft {
                token_url: Some("https://10.0.0.5/token".into()),
                ..draft()
            },
            &policy(),
        );
        assert!(e[0].message.contains("private"), "{e:?}");
        let e = errors(
            MailboxDraft {
                token_url: Some("https://169.254.169.254/token".into()),
                ..draft()
            },
            &policy(),
        );
        assert_eq!(e[0].field, "token_url");
        let e = errors(
            MailboxDraft {
                token_url: Some("http://127.0.0.1:9/token".into()),
                ..draft()
            },
            &policy(),
        );
        assert_eq!(e[0].field, "token_url");
        // Development mode allows loopback over http; HERALD_ALLOW_PRIVATE_HOSTS allows private.
        let dev = Policy {
            dev: true,
            ..policy()
        };
        resolve_ok(
            MailboxDraft {
                token_url: Some("http://127.0.0.1:9/token".into()),
                ..draft()
            },
            &dev,
        );
        let private = Policy {
            allow_private_hosts: true,
            ..policy()
        };
        resolve_ok(
            MailboxDraft {
                token_url: Some("https://10.0.0.5/token".into()),
                ..draft()
            },
            &private,
        );
    }

    #[test]
    fn line_breaks_are_refused_in_every_header_field() {
        for field in [
            "name",
            "username",
            "from_name",
            "reply_to",
            "host",
            "client_id",
        ] {
            let mut draft = microsoft();
            let bad = Some("a\r\nBcc: x@example.com".to_owned());
            match field {
                "name" => draft.name = bad,
                "username" => draft.username = bad,
                "from_name" => draft.from_name = bad,
                "reply_to" => draft.reply_to = bad,
                "host" => draft.host = bad,
                _ => draft.client_id = bad,
            }
            let e = errors(draft, &policy());
            assert!(e.iter().any(|e| e.field == field), "{field}: {e:?}");
        }
    }

    #[test]
    fn security_none_needs_development_mode() {
        let e = errors(
            MailboxDraft {
                security: Some("none".into()),
                ..microsoft()
            },
            &policy(),
        );
        assert_eq!(e[0].field, "security");
    }

    #[test]
    fn a_microsoft_oauth_mailbox_needs_a_tenant_and_basic_needs_a_password() {
        let e = errors(
            MailboxDraft {
                tenant: None,
                ..microsoft()
            },
            &policy(),
        );
        assert!(e.iter().any(|e| e.field == "tenant"));
        let basic = MailboxDraft {
            auth: Some("basic".into()),
            tenant: None,
            client_secret: None,
            ..microsoft()
        };
        let e = errors(basic, &policy());
        assert_eq!(
            e.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["password"]
        );
    }
}
