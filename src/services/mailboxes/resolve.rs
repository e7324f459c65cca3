//! A mailbox as given, resolved: presets filled, every field validated (including the guards
//! against SSRF and header injection), all errors at once.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use url::Url;

use super::*;
use crate::domain::mailbox::{
    AuthKind, ClientAuth, Cloud, CredentialKind, ExpirySource, Mailbox, MailboxStatus, Provider,
    Security, StatusReason, TransportKind, parse_tenant,
};
use crate::domain::presets::Preset;
use crate::domain::{EmailAddress, FieldError, MailboxId, OrgId};
use crate::net::{Reach, reach_of};
use crate::services::{Checks, ServiceResult};

const MAX_SIGNATURE: usize = 10_000;

pub(super) fn blank_to_none(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Refuses CR, LF and other control characters: these fields end up in headers or commands.
pub(super) fn single_line(
    checks: &mut Checks,
    field: &'static str,
    value: &str,
    max: usize,
) -> bool {
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
pub(super) fn host_allowed(policy: &Policy<'_>, host: &str) -> Result<(), String> {
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

pub(super) fn check_host(checks: &mut Checks, policy: &Policy<'_>, raw: &str) -> Option<String> {
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

pub(super) fn check_email(checks: &mut Checks, field: &'static str, raw: &str) -> Option<String> {
    checks
        .take(EmailAddress::parse_field(field, raw))
        .map(|e| e.as_str().to_owned())
}

/// The mailbox settings a draft resolves to, with its secrets.
pub struct Resolved {
    pub mailbox: Mailbox,
    pub client_secret: Option<SecretString>,
    /// A second secret, kept to take over when the current one is refused.
    pub next_client_secret: Option<SecretString>,
    pub password: Option<SecretString>,
    /// An uploaded certificate and key, to use instead of the one in use (or instead of
    /// making one).
    pub new_certificate: Option<crate::oauth::certificate::KeyPair>,
}

/// Fills presets and validates a whole mailbox. `existing` carries what a PATCH keeps
/// (including whether secrets are already stored).
pub(super) fn resolve(
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
    let cloud = match blank_to_none(draft.cloud) {
        None => Some(Cloud::Global),
        Some(raw) => match raw.trim().parse::<Cloud>() {
            Ok(cloud) if cloud != Cloud::Global && provider != Some(Provider::Microsoft) => {
                checks.push(FieldError::new(
                    "cloud",
                    "a national cloud is Microsoft 365's: choose the Microsoft provider, or leave cloud out",
                ));
                None
            }
            Ok(cloud) => Some(cloud),
            Err(e) => {
                checks.push(FieldError::new("cloud", e));
                None
            }
        },
    };

    let credential = match (auth, draft.credential.as_deref().map(str::trim)) {
        (None, _) => None,
        (Some(AuthKind::Basic), None | Some("")) => Some(CredentialKind::Password),
        (Some(AuthKind::OAuth2), None | Some("")) => Some(CredentialKind::Delegated),
        (Some(auth), Some(raw)) => match raw.parse::<CredentialKind>() {
            Ok(CredentialKind::Password) if auth == AuthKind::OAuth2 => {
                checks.push(FieldError::new(
                    "credential",
                    "an OAuth2 mailbox signs in as a person (delegated) or as the app (app); a password is for basic",
                ));
                None
            }
            Ok(CredentialKind::Delegated | CredentialKind::App) if auth == AuthKind::Basic => {
                checks.push(FieldError::new(
                    "credential",
                    "a basic mailbox uses its password: choose OAuth2 for delegated or app-only access",
                ));
                None
            }
            Ok(kind) => Some(kind),
            Err(e) => {
                checks.push(FieldError::new("credential", e));
                None
            }
        },
    };
    if credential == Some(CredentialKind::App)
        && matches!(provider, Some(Provider::Microsoft | Provider::Sandbox))
        && tenant.as_deref().is_some_and(|t| {
            ["common", "organizations", "consumers"].contains(&t.to_ascii_lowercase().as_str())
        })
    {
        checks.push(FieldError::new(
            "tenant",
            "app-only access needs the Directory (tenant) ID or a domain such as contoso.com: Microsoft issues no app tokens for /common or /organizations (AADSTS9001023)",
        ));
    }
    let transport = match draft.transport.as_deref().map(str::trim) {
        None | Some("") => Some(TransportKind::Smtp),
        Some(raw) => checks.take(
            raw.parse::<TransportKind>()
                .map_err(|e| FieldError::new("transport", e)),
        ),
    };
    // Presets: the provider's endpoints, server and scopes, unless the caller gave them.
    let preset = provider
        .map(|p| {
            Preset::of(
                p,
                cloud.unwrap_or(Cloud::Global),
                tenant.as_deref(),
                policy.sandbox,
            )
            .for_access(
                transport.unwrap_or(TransportKind::Smtp),
                credential.unwrap_or(CredentialKind::Delegated),
            )
        })
        .unwrap_or_default();
    let graph_url = match transport {
        Some(TransportKind::Graph) => {
            if auth == Some(AuthKind::Basic) {
                checks.push(FieldError::new(
                    "transport",
                    "Microsoft Graph takes OAuth2 only: choose OAuth2, or send with SMTP",
                ));
            }
            if preset.graph_url.is_none() {
                checks.push(FieldError::new(
                    "transport",
                    "Microsoft Graph is Microsoft 365's: choose the Microsoft provider, or send with SMTP",
                ));
            }
            preset.graph_url.clone()
        }
        _ => None,
    };
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
    let host = match blank_to_none(draft.host).or(preset.host) {
        Some(h) => check_host(&mut checks, policy, &h),
        None => {
            checks.push(FieldError::new(
                "host",
                "must not be empty: give the SMTP server, e.g. smtp.office365.com",
            ));
            None
        }
    };
    let port = match draft.port.or(preset.port.map(i64::from)) {
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
        None | Some("") => Some(ClientAuth::Secret),
        Some(raw) => checks.take(
            ClientAuth::parse_field(raw)
                .map_err(|e| FieldError::new("client_auth", e.replace("post, ", ""))),
        ),
    };
    let with_certificate = client_auth == Some(ClientAuth::Certificate);
    if with_certificate && auth == Some(AuthKind::Basic) {
        checks.push(FieldError::new(
            "client_auth",
            "a certificate signs in to an OAuth 2.0 token endpoint: choose OAuth2, or leave client_auth out",
        ));
    }
    let new_certificate = super::certificates::check_upload(
        &mut checks,
        with_certificate,
        (&draft.certificate_pem, &draft.private_key_pem),
    );
    let google_key = super::service_account::read(
        &mut checks,
        provider,
        credential,
        draft.client_secret.as_ref(),
    );
    if auth == Some(AuthKind::OAuth2) {
        authorization_url =
            match blank_to_none(draft.authorization_url).or(preset.authorization_url) {
                Some(u) => check_url(&mut checks, policy, "authorization_url", &u),
                // An app asks for its own token: nobody is sent to sign in.
                None if credential == Some(CredentialKind::App) => None,
                None => {
                    checks.push(FieldError::new(
                        "authorization_url",
                        "must not be empty: copy the OAuth 2.0 authorization endpoint (v2)",
                    ));
                    None
                }
            };
        token_url = match blank_to_none(draft.token_url)
            .or(google_key.as_ref().map(|k| k.token_uri.clone()))
            .or(preset.token_url)
        {
            Some(u) => check_url(&mut checks, policy, "token_url", &u),
            None => {
                checks.push(FieldError::new(
                    "token_url",
                    "must not be empty: copy the OAuth 2.0 token endpoint (v2)",
                ));
                None
            }
        };
        client_id = match blank_to_none(draft.client_id).or(google_key.map(|k| k.client_id)) {
            Some(c) => single_line(&mut checks, "client_id", &c, 200).then_some(c),
            None => {
                checks.push(FieldError::new(
                    "client_id",
                    "must not be empty: copy the Application (client) ID",
                ));
                None
            }
        };
        let preset_scopes = draft.scopes.is_none();
        scopes = draft.scopes.or(preset.scopes).unwrap_or_default();
        // Sending as a shared mailbox through Graph takes Mail.Send.Shared as well.
        if preset_scopes
            && transport == Some(TransportKind::Graph)
            && credential == Some(CredentialKind::Delegated)
            && sign_in_account.is_some()
            && sign_in_account != username
        {
            scopes.push(preset.cloud.unwrap_or(Cloud::Global).graph_shared_scope());
        }
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
            .or(preset.issuer)
            .and_then(|i| check_url(&mut checks, policy, "issuer", &i));
        let secrets = [
            ("client_secret", &draft.client_secret),
            ("next_client_secret", &draft.next_client_secret),
        ];
        if with_certificate {
            for (field, _) in secrets.iter().filter(|(_, s)| s.is_some()) {
                checks.push(FieldError::new(
                    *field,
                    "is not used with a certificate: leave it empty, or choose client_auth \"secret\"",
                ));
            }
        } else {
            if !has_secret.0 && draft.client_secret.is_none() {
                checks.push(super::service_account::missing(provider, credential));
            }
            // A Google service account's "secret" is its key, checked as such.
            let google_app = super::service_account::applies(provider, credential);
            for (field, secret) in secrets {
                if let Some(secret) = secret.as_ref().filter(|_| !google_app) {
                    check_secret(&mut checks, field, secret);
                }
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
    let credential = credential.expect("checked");
    let status_reason = Some(match credential {
        CredentialKind::App => StatusReason::new(
            "verification_required",
            "This mailbox has not been verified yet.",
            Some(
                "Click Verify: Herald asks for the app's own token and checks that it may send as the mailbox.".into(),
            ),
        ),
        _ => StatusReason::not_yet_verified(auth),
    });
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
            client_secret_expiry_source: ExpirySource::Typed,
            status: MailboxStatus::NotVerified,
            status_reason,
            verified_at: None,
            token_expires_at: None,
            created_at: now,
            updated_at: now,
            limits: limits.unwrap_or_default(),
            transport: transport.expect("checked"),
            graph_url,
            save_to_sent_items: draft.save_to_sent_items.unwrap_or(true),
            credential,
            certificate: None,
            next_certificate: None,
            cloud: cloud.expect("checked"),
        },
        client_secret: draft.client_secret,
        next_client_secret: draft.next_client_secret,
        password: draft.password,
        new_certificate,
    })
}
