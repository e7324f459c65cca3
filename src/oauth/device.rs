//! The device authorization grant (RFC 8628) on the client side: where a mailbox's provider
//! takes device authorization requests, the `oauth2` client that asks there, and the HTTP
//! client the token endpoint is polled through.
//!
//! `oauth2`'s poller sends one prepared request again and again. A client assertion is
//! single-use (its `jti`), so [`PollHttp`] signs a fresh one for each poll; it also keeps the
//! last answer's body, because the poller reads errors as RFC 8628's codes only and Herald
//! decides on Microsoft's `error_codes`.

use std::sync::Mutex;

use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse};
use oauth2::{
    DeviceAuthorizationUrl, EndpointNotSet, EndpointSet, ErrorResponse, StandardRevocableToken,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use super::http::{HttpError, TokenHttp};
use super::{ClientConfigError, ProviderError, TokenResponse, WithProof, certificate};
use crate::domain::mailbox::{Mailbox, Provider};

/// RFC 8628's grant type, as the token endpoint receives it.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What Microsoft adds to RFC 8628's device authorization response: a sentence to show.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct DeviceFields {
    #[serde(default)]
    pub message: Option<String>,
}

impl oauth2::ExtraDeviceAuthorizationFields for DeviceFields {}

pub type DeviceAuthorization = oauth2::DeviceAuthorizationResponse<DeviceFields>;

/// An `oauth2` client with the device authorization and token endpoints set.
pub type DeviceClient = oauth2::Client<
    ProviderError,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// The device authorization endpoint of an Entra-shaped token URL
/// (`…/{tenant}/oauth2/v2.0/token` → `…/devicecode`), which Microsoft's clouds and the sandbox
/// share.
pub fn entra_device_endpoint(token_url: &str) -> Option<String> {
    let url = url::Url::parse(token_url).ok()?;
    if url.query().is_some() || !url.path().ends_with("/oauth2/v2.0/token") {
        return None;
    }
    Some(format!(
        "{}devicecode",
        token_url.strip_suffix("token")?.trim_end_matches('?')
    ))
}

/// Where the mailbox's provider takes device authorization requests, when Herald knows it
/// without asking: Microsoft and the sandbox. `None` for the others (a custom provider's
/// discovery document may say).
pub fn known_device_endpoint(mailbox: &Mailbox) -> Option<String> {
    match mailbox.provider {
        Provider::Microsoft | Provider::Sandbox => {
            entra_device_endpoint(mailbox.token_url.as_deref()?)
        }
        _ => None,
    }
}

/// The client that asks for a device code and then polls for the tokens.
pub fn device_client_for(
    mailbox: &Mailbox,
    client_secret: Option<oauth2::ClientSecret>,
    device_endpoint: &str,
) -> Result<DeviceClient, ClientConfigError> {
    let device = DeviceAuthorizationUrl::new(device_endpoint.to_owned())
        .map_err(|e| ClientConfigError(e.to_string()))?;
    let mut client = oauth2::Client::new(super::client_id_of(mailbox)?)
        .set_device_authorization_url(device)
        .set_token_uri(super::token_url_of(mailbox)?)
        .set_auth_type(super::auth_type_of(mailbox));
    if let Some(secret) = client_secret {
        client = client.set_client_secret(secret);
    }
    Ok(client)
}

impl<TE: ErrorResponse + 'static> WithProof for oauth2::DeviceAuthorizationRequest<'_, TE> {
    fn add_param(self, name: &'static str, value: String) -> Self {
        self.add_extra_param(name, value)
    }
}

/// Signs a fresh client assertion for one request, or says there is none to sign (a secret).
pub type Signer = Box<dyn Fn() -> Result<Option<SecretString>, String> + Send + Sync>;

/// The guarded HTTP client for polling: each request gets a fresh client assertion when the
/// app proves itself with a certificate, and the last answer's body is kept.
pub struct PollHttp<'a> {
    http: &'a TokenHttp,
    sign: Signer,
    last_body: Mutex<Vec<u8>>,
    polls: std::sync::atomic::AtomicU32,
}

impl<'a> PollHttp<'a> {
    pub fn new(http: &'a TokenHttp, sign: Signer) -> Self {
        Self {
            http,
            sign,
            last_body: Mutex::new(Vec::new()),
            polls: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// How many polls were sent.
    pub fn polls(&self) -> u32 {
        self.polls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The last error answer read whole, with Microsoft's `error_codes`; `None` when it is not
    /// one (the poller then says what it read).
    pub fn last_error(&self) -> Option<ProviderError> {
        let body = self.last_body.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::from_slice(&body).ok()
    }

    async fn send(
        &self,
        mut request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, HttpError> {
        self.polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(assertion) = (self.sign)().map_err(HttpError::Refused)? {
            let mut body = request.body().clone();
            let extra = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("client_assertion_type", certificate::ASSERTION_TYPE)
                .append_pair("client_assertion", assertion.expose_secret())
                .finish();
            if !body.is_empty() {
                body.push(b'&');
            }
            body.extend_from_slice(extra.as_bytes());
            *request.body_mut() = body;
        }
        let response = self.http.execute(request).await?;
        *self.last_body.lock().unwrap_or_else(|e| e.into_inner()) = response.body().clone();
        Ok(response)
    }
}

impl<'c> oauth2::AsyncHttpClient<'c> for PollHttp<'_> {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_device_endpoint_sits_beside_an_entra_shaped_token_endpoint() {
        assert_eq!(
            entra_device_endpoint("https://login.microsoftonline.us/contoso.com/oauth2/v2.0/token")
                .as_deref(),
            Some("https://login.microsoftonline.us/contoso.com/oauth2/v2.0/devicecode")
        );
        assert_eq!(
            entra_device_endpoint("http://localhost:8081/sandbox/oauth2/v2.0/token").as_deref(),
            Some("http://localhost:8081/sandbox/oauth2/v2.0/devicecode")
        );
        assert_eq!(
            entra_device_endpoint("https://oauth2.googleapis.com/token"),
            None
        );
        assert_eq!(
            entra_device_endpoint("https://login.example/t/oauth2/v2.0/token?x=1"),
            None
        );
    }
}
