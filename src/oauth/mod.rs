//! Herald's OAuth 2.0 client: the authorization URL (state, PKCE S256, `login_hint`), the code
//! exchange and the refresh, through the `oauth2` crate over Herald's own guarded HTTP client
//! ([`http`]), with Microsoft's error bodies kept whole ([`errors`]; Google's in
//! [`google_errors`]), certificate credentials: key pairs, certificates and signed client
//! assertions ([`certificate`]); Google's service accounts sign a JWT bearer grant instead
//! ([`service_account`]); and the device authorization grant of RFC 8628 ([`device`]).

pub mod certificate;
pub mod device;
pub mod discovery;
pub mod errors;
pub mod google_errors;
pub mod http;
pub mod service_account;

use std::time::Duration;

use oauth2::basic::{
    BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthType, AuthUrl, ClientId, ClientSecret, EndpointNotSet, EndpointSet, ErrorResponse,
    ExtraTokenFields, RedirectUrl, StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use crate::domain::mailbox::{ClientAuth, Mailbox, Provider};

/// A provider's error body. Microsoft adds `error_codes`, `trace_id` and `correlation_id` to
/// RFC 6749's fields; Herald decides on the codes, never on the free text.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ProviderError {
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub error_uri: Option<String>,
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(d) = &self.error_description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl ErrorResponse for ProviderError {}

/// Token-response fields beyond RFC 6749 that Herald reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraFields {
    /// The OpenID Connect ID token, when `openid` was granted.
    #[serde(default)]
    pub id_token: Option<String>,
    /// Microsoft's outage extension of the access token's life: kept, never refreshed by.
    #[serde(default)]
    pub ext_expires_in: Option<u64>,
}

impl ExtraTokenFields for ExtraFields {}

pub type TokenResponse = StandardTokenResponse<ExtraFields, BasicTokenType>;

/// An `oauth2` client with the authorization and token endpoints set.
pub type Client = oauth2::Client<
    ProviderError,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// Why an `oauth2` client could not be built for a mailbox.
#[derive(Debug, thiserror::Error)]
#[error("the mailbox's OAuth settings are incomplete: {0}")]
pub struct ClientConfigError(pub String);

/// The mailbox's token endpoint.
fn token_url_of(mailbox: &Mailbox) -> Result<TokenUrl, ClientConfigError> {
    let url = mailbox
        .token_url
        .clone()
        .ok_or_else(|| ClientConfigError("token_url is not set".into()))?;
    TokenUrl::new(url).map_err(|e| ClientConfigError(e.to_string()))
}

/// The mailbox's app registration.
fn client_id_of(mailbox: &Mailbox) -> Result<ClientId, ClientConfigError> {
    let id = mailbox
        .client_id
        .clone()
        .ok_or_else(|| ClientConfigError("client_id is not set".into()))?;
    Ok(ClientId::new(id))
}

/// How the client authenticates at the token endpoint.
fn auth_type_of(mailbox: &Mailbox) -> AuthType {
    match mailbox.client_auth {
        ClientAuth::Secret | ClientAuth::Certificate => AuthType::RequestBody,
        ClientAuth::Basic => AuthType::BasicAuth,
    }
}

/// How a client proves who it is in one token request: its secret, or a client assertion
/// signed with its certificate's key (RFC 7523), or nothing (a public client).
#[derive(Default)]
pub struct Proof {
    pub secret: Option<ClientSecret>,
    pub assertion: Option<secrecy::SecretString>,
}

/// A token request that can carry a client assertion.
pub trait WithProof: Sized {
    fn add_param(self, name: &'static str, value: String) -> Self;

    /// Adds `client_assertion_type` and `client_assertion` when the proof is an assertion.
    fn with_assertion(self, proof: &Proof) -> Self {
        use secrecy::ExposeSecret as _;
        match &proof.assertion {
            Some(assertion) => self
                .add_param("client_assertion_type", certificate::ASSERTION_TYPE.into())
                .add_param("client_assertion", assertion.expose_secret().to_owned()),
            None => self,
        }
    }
}

macro_rules! with_proof {
    ($($request:ident),*) => {$(
        impl<'a, TE, TR> WithProof for oauth2::$request<'a, TE, TR>
        where
            TE: ErrorResponse + 'static,
            TR: oauth2::TokenResponse,
        {
            fn add_param(self, name: &'static str, value: String) -> Self {
                self.add_extra_param(name, value)
            }
        }
    )*};
}
with_proof!(
    CodeTokenRequest,
    RefreshTokenRequest,
    ClientCredentialsTokenRequest
);

/// The client for a mailbox's app registration.
pub fn client_for(
    mailbox: &Mailbox,
    client_secret: Option<ClientSecret>,
    redirect_uri: &str,
) -> Result<Client, ClientConfigError> {
    let auth_url = AuthUrl::new(
        mailbox
            .authorization_url
            .clone()
            .ok_or_else(|| ClientConfigError("authorization_url is not set".into()))?,
    )
    .map_err(|e| ClientConfigError(e.to_string()))?;
    let redirect =
        RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| ClientConfigError(e.to_string()))?;
    let mut client = oauth2::Client::new(client_id_of(mailbox)?)
        .set_auth_uri(auth_url)
        .set_token_uri(token_url_of(mailbox)?)
        .set_redirect_uri(redirect)
        .set_auth_type(auth_type_of(mailbox));
    if let Some(secret) = client_secret {
        client = client.set_client_secret(secret);
    }
    Ok(client)
}

/// An `oauth2` client with only the token endpoint: an app asking for its own token (client
/// credentials).
pub type AppClient = oauth2::Client<
    ProviderError,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The client with which a mailbox's app asks for its own token.
pub fn app_client_for(
    mailbox: &Mailbox,
    client_secret: Option<ClientSecret>,
) -> Result<AppClient, ClientConfigError> {
    let mut client = oauth2::Client::new(client_id_of(mailbox)?)
        .set_token_uri(token_url_of(mailbox)?)
        .set_auth_type(auth_type_of(mailbox));
    if let Some(secret) = client_secret {
        client = client.set_client_secret(secret);
    }
    Ok(client)
}

/// Extra authorization parameters a provider needs for a refresh token.
pub fn provider_extra_params(provider: Provider) -> &'static [(&'static str, &'static str)] {
    match provider {
        // Google issues a refresh token only offline, and again only with consent.
        Provider::Google => &[("access_type", "offline"), ("prompt", "consent")],
        _ => &[],
    }
}

/// How long an access token lives, from `expires_in`; one hour when the provider does not say.
pub fn lifetime(response: &TokenResponse) -> Duration {
    use oauth2::TokenResponse as _;
    response.expires_in().unwrap_or(Duration::from_secs(3600))
}

/// The accounts an ID token names (`preferred_username`, then `email`), read as
/// [`id_token_username`] reads them.
pub fn id_token_accounts(id_token: &str) -> Vec<String> {
    use base64::Engine as _;
    let Some(payload) = id_token.split('.').nth(1) else {
        return Vec::new();
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))
    else {
        return Vec::new();
    };
    let Ok(claims) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    ["preferred_username", "email", "upn"]
        .iter()
        .filter_map(|k| claims.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
        .collect()
}

/// The `preferred_username` (or `email`) claim of an ID token received straight from the token
/// endpoint over TLS, which OpenID Connect allows to read without checking its signature
/// (Core §3.1.3.7); Herald uses it only to tell the admin who signed in.
pub fn id_token_username(id_token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = id_token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims
        .get("preferred_username")
        .or_else(|| claims.get("email"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_token_username_is_read_from_its_payload() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"preferred_username":"ann@contoso.com"}"#);
        assert_eq!(
            id_token_username(&format!("h.{payload}.s")).as_deref(),
            Some("ann@contoso.com")
        );
        assert_eq!(id_token_username("garbage"), None);
    }

    #[test]
    fn microsoft_error_bodies_keep_their_codes() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000222: expired","error_codes":[7000222],"timestamp":"x","trace_id":"t","correlation_id":"c"}"#;
        let e: ProviderError = serde_json::from_str(body).unwrap();
        assert_eq!(e.error_codes, [7000222]);
        assert_eq!(e.correlation_id.as_deref(), Some("c"));
    }
}
