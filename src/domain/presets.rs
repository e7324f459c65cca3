//! Provider presets: what Herald fills in for a known provider (its endpoints, its SMTP server
//! and its scopes) unless the admin gives them.

use super::mailbox::{
    Cloud, CredentialKind, GOOGLE_MAIL_SCOPE, GOOGLE_SCOPES, MICROSOFT_SCOPES, Provider,
    TransportKind,
};

/// Where the sandbox provider runs, for the `sandbox` provider's preset. Only set while the
/// sandbox runs (`herald demo`, tests).
#[derive(Clone, Debug)]
pub struct SandboxPreset {
    pub base_url: String,
    pub tenant: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// The CA that signed the sandbox's SMTP certificate, trusted for sandbox mailboxes.
    pub ca_pem: String,
}

/// What a provider's preset fills in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preset {
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    /// The issuer a redirect's `iss` is held to, when it is known.
    pub issuer: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub scopes: Option<Vec<String>>,
    /// Microsoft Graph's base URL, for a provider that has Graph.
    pub graph_url: Option<String>,
    /// Microsoft's cloud, whose resources the scopes name (the sandbox stands in for the
    /// global one).
    pub cloud: Option<Cloud>,
}

fn scopes(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|s| s.to_string()).collect())
}

impl Preset {
    /// The preset of `provider`; `tenant` as given (Microsoft, the sandbox), `sandbox` while
    /// the sandbox runs. A custom provider has none.
    pub fn of(
        provider: Provider,
        cloud: Cloud,
        tenant: Option<&str>,
        sandbox: Option<&SandboxPreset>,
    ) -> Self {
        let login = cloud.login_host();
        match provider {
            Provider::Microsoft => Self {
                authorization_url: tenant
                    .map(|t| format!("https://{login}/{t}/oauth2/v2.0/authorize")),
                token_url: tenant.map(|t| format!("https://{login}/{t}/oauth2/v2.0/token")),
                // Entra's issuer names the tenant by its GUID, whatever was typed: a domain
                // gives no issuer to hold a redirect's `iss` to (rather than a wrong one).
                issuer: tenant
                    .filter(|t| uuid::Uuid::parse_str(t).is_ok())
                    .map(|t| format!("https://{login}/{}/v2.0", t.to_ascii_lowercase())),
                host: Some(cloud.smtp_host().to_owned()),
                port: Some(587),
                scopes: Some(cloud.delegated_scopes(false)),
                graph_url: Some(cloud.graph_url().to_owned()),
                cloud: Some(cloud),
            },
            Provider::Google => Self {
                authorization_url: Some("https://accounts.google.com/o/oauth2/v2/auth".to_owned()),
                token_url: Some("https://oauth2.googleapis.com/token".to_owned()),
                issuer: Some("https://accounts.google.com".to_owned()),
                host: Some("smtp.gmail.com".to_owned()),
                port: Some(587),
                scopes: scopes(GOOGLE_SCOPES),
                graph_url: None,
                cloud: None,
            },
            Provider::Sandbox => match (sandbox, tenant) {
                (Some(s), Some(t)) => Self {
                    authorization_url: Some(format!("{}/{t}/oauth2/v2.0/authorize", s.base_url)),
                    token_url: Some(format!("{}/{t}/oauth2/v2.0/token", s.base_url)),
                    issuer: None,
                    host: Some(s.smtp_host.clone()),
                    port: Some(s.smtp_port),
                    scopes: scopes(MICROSOFT_SCOPES),
                    graph_url: Some(s.base_url.clone()),
                    cloud: Some(Cloud::Global),
                },
                _ => Self::default(),
            },
            _ => Self::default(),
        }
    }

    /// The preset for sending through `transport` with `credential`: Graph asks for Graph's
    /// scope instead of SMTP's, and an app (client credentials) for the resource's `.default`.
    /// A Google service account asks for Gmail's scope alone: domain-wide delegation grants
    /// it, and nobody signs in for an ID token.
    pub fn for_access(mut self, transport: TransportKind, credential: CredentialKind) -> Self {
        let Some(cloud) = self.cloud else {
            if credential == CredentialKind::App && self.scopes == scopes(GOOGLE_SCOPES) {
                self.scopes = scopes(&[GOOGLE_MAIL_SCOPE]);
            }
            return self;
        };
        let graph = transport == TransportKind::Graph;
        self.scopes = Some(match credential {
            CredentialKind::App => vec![cloud.app_scope(graph)],
            _ => cloud.delegated_scopes(graph),
        });
        self
    }
}
