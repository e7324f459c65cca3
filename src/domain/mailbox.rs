//! Mailboxes: the accounts an organization sends from, with how Herald reaches and
//! authenticates to them, and whether they work (Verified / Not Verified, with the reason in
//! plain words).

use time::{Date, OffsetDateTime};

use super::limits::{LimitOverrides, Limits};
pub use super::provider::Cloud;
pub use super::provider::{
    GOOGLE_MAIL_SCOPE, GOOGLE_SCOPES, MICROSOFT_GRAPH_APP_SCOPE, MICROSOFT_GRAPH_SCOPES,
    MICROSOFT_GRAPH_SHARED_SCOPE, MICROSOFT_GRAPH_URL, MICROSOFT_SCOPES, MICROSOFT_SMTP_APP_SCOPE,
    Provider,
};
use super::{FieldError, MailboxId, OrgId};

string_enum!(
    /// How Herald authenticates to the SMTP server.
    AuthKind { OAuth2 = "oauth2", Basic = "basic" }
);

string_enum!(
    /// Who the mailbox's access belongs to.
    CredentialKind {
        /// A person signs in once (Authorize); Herald keeps the refresh token alive.
        Delegated = "delegated",
        /// The app itself, with its own secret (OAuth 2.0 client credentials): no person
        /// signs in and no refresh token can die. Microsoft: app-only access.
        App = "app",
        /// A username and password (basic auth).
        Password = "password",
    }
);

string_enum!(
    /// How Herald hands a mailbox's messages to the provider.
    TransportKind {
        /// SMTP submission (with STARTTLS or TLS), authenticated with XOAUTH2 or a password.
        Smtp = "smtp",
        /// Microsoft Graph `sendMail`: works where SMTP AUTH is turned off.
        Graph = "graph",
    }
);

string_enum!(
    /// How the SMTP connection is protected.
    Security {
        /// Plain connection upgraded with STARTTLS, which is required (no silent downgrade).
        StartTls = "starttls",
        /// TLS from the first byte (port 465).
        Tls = "tls",
        /// No TLS at all: development only.
        None = "none",
    }
);

string_enum!(
    /// How the client authenticates at the token endpoint.
    ClientAuth {
        /// A client secret in the form body (`client_secret_post`).
        Secret = "secret",
        /// A client secret in HTTP Basic (`client_secret_basic`), for servers that want it.
        Basic = "basic",
        /// A certificate: a JWT signed with the mailbox's private key (`private_key_jwt`).
        Certificate = "certificate",
    }
);

impl ClientAuth {
    /// Reads the API's value; `post`, the earlier name of `secret`, is still understood.
    pub fn parse_field(raw: &str) -> Result<Self, String> {
        match raw.trim() {
            "post" => Ok(Self::Secret),
            other => other.parse(),
        }
    }
}

/// A certificate the app registration holds for a mailbox (`private_key_jwt`); the private
/// key is sealed with the mailbox's other secrets.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertificateInfo {
    /// The certificate, PEM: what the admin uploads to the app registration.
    pub pem: String,
    /// Base64url SHA-256 of the DER: the assertion's `x5t#S256`.
    pub thumbprint_sha256: String,
    /// Hex SHA-1 of the DER: the Thumbprint the Azure portal lists.
    pub thumbprint_sha1: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

impl CertificateInfo {
    /// The certificate's DER bytes: what a `.cer` file holds.
    pub fn der(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let body: String = self
            .pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD.decode(body).ok()
    }
}

string_enum!(
    /// Where a client secret's expiry date came from.
    ExpirySource {
        /// An admin typed it.
        Typed = "typed",
        /// Herald read it from the app registration (Microsoft Graph, `passwordCredentials`).
        Microsoft = "microsoft",
    }
);

string_enum!(
    /// Whether the mailbox works, as the list shows it.
    MailboxStatus { Verified = "verified", NotVerified = "not_verified" }
);

/// Requests Microsoft Graph takes at once per app and mailbox.
pub const GRAPH_CONCURRENT_REQUESTS: u32 = 4;

/// Why a mailbox is Not Verified, in words an admin can act on.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StatusReason {
    /// Stable code, e.g. `client_secret_expired`, `smtp_auth_disabled`.
    pub code: String,
    /// What happened.
    pub message: String,
    /// What to do about it.
    pub action: Option<String>,
}

impl StatusReason {
    pub fn new(code: &str, message: impl Into<String>, action: Option<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            action,
        }
    }

    /// A new mailbox, or one whose identity changed: it must be authorized (OAuth2) or verified.
    pub fn not_yet_verified(auth: AuthKind) -> Self {
        match auth {
            AuthKind::OAuth2 => Self::new(
                "authorization_required",
                "This mailbox has not been authorized yet.",
                Some("Click Authorize, sign in as the mailbox's account and click Accept.".into()),
            ),
            AuthKind::Basic => Self::new(
                "verification_required",
                "This mailbox has not been verified yet.",
                Some(
                    "Click Verify to log in to the SMTP server with the username and password."
                        .into(),
                ),
            ),
        }
    }

    /// A server refused one message (the mailbox itself works): in words for the replies
    /// Herald knows, e.g. High Volume Email's `550 5.5.105` for an external recipient.
    pub fn message_rejected(reply: &super::smtp::SmtpReply) -> Self {
        match (reply.code, reply.enhanced.as_deref()) {
            (Some(550), Some("5.5.105")) => Self::new(
                "hve_internal_only",
                format!(
                    "High Volume Email sends only to recipients inside the organization, and refused an outside one: {}",
                    reply.line()
                ),
                Some("Send mail for outside recipients through a regular mailbox (or Azure Communication Services for bulk mail); keep the HVE account for internal mail.".into()),
            ),
            _ => Self::new(
                "message_rejected",
                format!("The server refused this message: {}", reply.line()),
                Some("Check the recipients and the message; the mailbox itself works.".into()),
            ),
        }
    }

    /// The sign-in identity changed, so earlier tokens no longer apply.
    pub fn reauthorization_required() -> Self {
        Self::new(
            "reauthorization_required",
            "The mailbox's account, app registration or server changed, so its earlier authorization no longer applies.",
            Some("Click Authorize again and sign in as the mailbox's account.".into()),
        )
    }
}

/// A stored mailbox. Its secrets (client secret, password, tokens) live sealed elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub id: MailboxId,
    pub org_id: OrgId,
    pub name: String,
    pub auth: AuthKind,
    pub provider: Provider,
    pub tenant: Option<String>,
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The mailbox address: SASL `user=` and From.
    pub username: String,
    pub from_name: Option<String>,
    /// The account that signs in (`login_hint`); differs for a shared mailbox.
    pub sign_in_account: String,
    pub reply_to: Option<String>,
    pub signature: Option<String>,
    pub is_default: bool,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_auth: ClientAuth,
    pub scopes: Vec<String>,
    pub issuer: Option<String>,
    /// The authorization server said (in its discovery document) that it sends `iss` on every
    /// redirect (RFC 9207): a redirect without it is refused.
    pub iss_required: bool,
    pub client_secret_expires_at: Option<Date>,
    /// Whether `client_secret_expires_at` was typed or read from Microsoft.
    pub client_secret_expiry_source: ExpirySource,
    pub status: MailboxStatus,
    pub status_reason: Option<StatusReason>,
    pub verified_at: Option<OffsetDateTime>,
    pub token_expires_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Overrides of the provider's sending limits.
    pub limits: LimitOverrides,
    /// SMTP or Microsoft Graph.
    pub transport: TransportKind,
    /// Microsoft Graph's base URL (`https://graph.microsoft.com`), when it sends through Graph.
    pub graph_url: Option<String>,
    /// Graph keeps a copy of each message in the mailbox's Sent Items.
    pub save_to_sent_items: bool,
    /// Delegated, app-only or a password.
    pub credential: CredentialKind,
    /// The certificate in use, when `client_auth` is `certificate`.
    pub certificate: Option<CertificateInfo>,
    /// A renewed certificate waiting to take over once Microsoft accepts it.
    pub next_certificate: Option<CertificateInfo>,
    /// Microsoft's cloud (global or national); `global` for other providers.
    pub cloud: Cloud,
}

impl Mailbox {
    /// The sending limits in force: the provider's (High Volume Email's on its endpoint), with
    /// this mailbox's overrides.
    pub fn effective_limits(&self) -> Limits {
        let mut limits = if super::limits::is_hve(&self.host) {
            self.limits.over_limits(Limits::hve())
        } else {
            self.limits
                .over(super::limits::limits_provider(self.provider, &self.host))
        };
        // Graph takes 4 requests at once per app and mailbox (SMTP: 3 connections); its
        // 10,000 requests in 10 minutes are above Exchange's 30 messages a minute.
        if self.transport == TransportKind::Graph && self.limits.connections.is_none() {
            limits.connections = GRAPH_CONCURRENT_REQUESTS;
        }
        limits
    }

    /// Whether the mailbox could send with Microsoft Graph instead: OAuth2 with a provider
    /// that has Graph.
    pub fn graph_capable(&self) -> bool {
        self.auth == AuthKind::OAuth2
            && matches!(self.provider, Provider::Microsoft | Provider::Sandbox)
    }

    /// The fields whose change invalidates an earlier authorization.
    pub fn identity(&self) -> impl PartialEq + '_ {
        (
            &self.username,
            &self.sign_in_account,
            &self.client_id,
            &self.tenant,
            &self.authorization_url,
            &self.token_url,
            &self.scopes,
            &self.host,
            self.transport,
            self.credential,
        )
    }
}

/// What a credential's expiry date calls for today, as both the alerts and the list say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiryWarning {
    /// It expires today or has expired: the day it ends, Microsoft refuses it.
    Expired,
    /// It expires in this many days (1 to 30).
    ExpiresIn(i64),
}

/// The warning for a credential ending on `expires`, seen on `today` (the application clock's
/// date): none more than 30 days ahead.
pub fn expiry_warning(expires: Date, today: Date) -> Option<ExpiryWarning> {
    match (expires - today).whole_days() {
        i64::MIN..=0 => Some(ExpiryWarning::Expired),
        left @ 1..=30 => Some(ExpiryWarning::ExpiresIn(left)),
        _ => None,
    }
}

/// A mailbox credential whose end is known: the one the list and the expiry alerts speak of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialExpiry<'a> {
    /// A client secret, by the date recorded for it (typed, or read from Microsoft).
    Secret(Date),
    /// The certificate in use, by its own `notAfter`.
    Certificate(&'a CertificateInfo),
}

impl CredentialExpiry<'_> {
    pub fn date(&self) -> Date {
        match self {
            Self::Secret(date) => *date,
            Self::Certificate(c) => c.not_after.date(),
        }
    }

    /// What expires, in words: `client secret` or `certificate`.
    pub fn what(&self) -> &'static str {
        match self {
            Self::Secret(_) => "client secret",
            Self::Certificate(_) => "certificate",
        }
    }
}

impl Mailbox {
    /// When the credential the mailbox signs in with expires, when that is known: its
    /// certificate's end, or its client secret's recorded date.
    pub fn credential_expiry(&self) -> Option<CredentialExpiry<'_>> {
        match (self.client_auth, &self.certificate) {
            (ClientAuth::Certificate, Some(c)) => Some(CredentialExpiry::Certificate(c)),
            (ClientAuth::Certificate, None) => None,
            _ => self.client_secret_expires_at.map(CredentialExpiry::Secret),
        }
    }
}

/// Names of the sealed secrets a mailbox owns.
pub mod secret_fields {
    pub const CLIENT_SECRET: &str = "client_secret";
    /// The client secret waiting to take over when the current one is refused (rotation).
    pub const NEXT_CLIENT_SECRET: &str = "next_client_secret";
    pub const PASSWORD: &str = "password";
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    /// The private key of the certificate in use (PKCS#8 PEM).
    pub const CERTIFICATE_KEY: &str = "certificate_key";
    /// The private key of the renewed certificate.
    pub const NEXT_CERTIFICATE_KEY: &str = "next_certificate_key";
}

/// Microsoft's tenant: a GUID, a verified domain, or `organizations` / `common`.
pub fn parse_tenant(raw: &str) -> Result<String, FieldError> {
    let tenant = raw.trim();
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if tenant.is_empty() {
        return Err(FieldError::new(
            "tenant",
            "must not be empty: give the Directory (tenant) ID or a domain such as contoso.com",
        ));
    }
    if tenant.len() > 253 || !tenant.chars().all(ok_char) {
        return Err(FieldError::new(
            "tenant",
            "must be a Directory (tenant) ID (a GUID) or a domain such as contoso.com",
        ));
    }
    Ok(tenant.to_ascii_lowercase())
}

/// Whether a pasted client secret has the shape of a GUID, which is what Azure shows as the
/// secret's *Secret ID*, not its Value.
pub fn looks_like_secret_id(secret: &str) -> bool {
    uuid::Uuid::parse_str(secret.trim()).is_ok()
}

/// A Microsoft OAuth2 mailbox for unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::{
        AuthKind, ClientAuth, CredentialKind, Mailbox, MailboxStatus, Provider, Security,
        TransportKind,
    };
    use crate::domain::{MailboxId, OrgId};

    pub(crate) fn mailbox() -> Mailbox {
        Mailbox {
            id: MailboxId::new(),
            org_id: OrgId::new(),
            name: "m".into(),
            auth: AuthKind::OAuth2,
            provider: Provider::Microsoft,
            tenant: Some("contoso.com".into()),
            host: "smtp.office365.com".into(),
            port: 587,
            security: Security::StartTls,
            username: "a@contoso.com".into(),
            from_name: None,
            sign_in_account: "a@contoso.com".into(),
            reply_to: None,
            signature: None,
            is_default: false,
            authorization_url: None,
            token_url: None,
            client_id: Some("cid".into()),
            client_auth: ClientAuth::Secret,
            scopes: vec![],
            issuer: None,
            iss_required: false,
            client_secret_expires_at: None,
            status: MailboxStatus::NotVerified,
            status_reason: None,
            verified_at: None,
            token_expires_at: None,
            created_at: time::macros::datetime!(2026-11-28 00:00 UTC),
            updated_at: time::macros::datetime!(2026-11-28 00:00 UTC),
            limits: Default::default(),
            transport: TransportKind::Smtp,
            graph_url: None,
            save_to_sent_items: true,
            credential: CredentialKind::Delegated,
            certificate: None,
            next_certificate: None,
            cloud: crate::domain::mailbox::Cloud::Global,
            client_secret_expiry_source: crate::domain::mailbox::ExpirySource::Typed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_text() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>().unwrap(), *p);
        }
        assert!(
            "exchange"
                .parse::<Provider>()
                .unwrap_err()
                .contains("microsoft, google, custom, sandbox")
        );
    }

    #[test]
    fn a_guid_shaped_secret_is_spotted() {
        assert!(looks_like_secret_id("8c3a4a9e-2f4b-4f1e-9a6e-3b1f0c2d4e5f"));
        assert!(!looks_like_secret_id(
            "abc8Q~AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
        ));
    }

    #[test]
    fn high_volume_email_refusing_an_outside_recipient_says_why() {
        let hve = StatusReason::message_rejected(&super::super::smtp::SmtpReply::new(
            Some(550),
            "5.5.105 External recipients are not allowed",
        ));
        assert_eq!(hve.code, "hve_internal_only");
        let other = StatusReason::message_rejected(&super::super::smtp::SmtpReply::new(
            Some(550),
            "5.1.1 User unknown",
        ));
        assert_eq!(other.code, "message_rejected");
    }

    #[test]
    fn tenants_are_ids_or_domains() {
        assert_eq!(parse_tenant(" Contoso.com ").unwrap(), "contoso.com");
        assert!(parse_tenant("contoso.com/evil").is_err());
        assert!(parse_tenant("").is_err());
    }
}
