//! The authorization server's own description of itself (OpenID Connect Discovery 1.0, RFC
//! 8414): the issuer it names itself by, and whether it sends `iss` on every redirect (RFC
//! 9207). Read through the guarded token client, so the same address rules, redirect refusal
//! and 256 KiB limit apply.

use serde::Deserialize;

use super::http::{HttpError, TokenHttp};

/// What Herald takes from a discovery document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    /// `authorization_response_iss_parameter_supported`: every redirect carries `iss`.
    pub iss_parameter_supported: bool,
    /// `device_authorization_endpoint` (RFC 8628 §4), when the server offers device codes.
    pub device_authorization_endpoint: Option<String>,
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
}

/// Why a discovery document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the discovery document could not be fetched: {0}")]
    Http(#[from] HttpError),
    #[error("the discovery document answered {0}")]
    Status(u16),
    #[error("the discovery document is not valid JSON with an issuer: {0}")]
    Invalid(String),
    #[error("the discovery document names the issuer {issuer}, which is not on {host}")]
    ForeignIssuer { issuer: String, host: String },
}

/// Fetches the document at `url`. Its issuer must be an http(s) URL on the same host as the
/// document, without query or fragment (RFC 8414 §2).
pub async fn fetch(http: &TokenHttp, url: &str) -> Result<Discovery, DiscoveryError> {
    let target = url::Url::parse(url).map_err(|e| DiscoveryError::Invalid(e.to_string()))?;
    let request = oauth2::http::Request::builder()
        .method(oauth2::http::Method::GET)
        .uri(url)
        .header(oauth2::http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| DiscoveryError::Invalid(e.to_string()))?;
    let response = http.execute(request).await?;
    if !response.status().is_success() {
        return Err(DiscoveryError::Status(response.status().as_u16()));
    }
    let document: Document = serde_json::from_slice(response.body())
        .map_err(|e| DiscoveryError::Invalid(e.to_string()))?;
    let issuer = url::Url::parse(&document.issuer)
        .map_err(|e| DiscoveryError::Invalid(format!("issuer: {e}")))?;
    if !matches!(issuer.scheme(), "https" | "http")
        || issuer.query().is_some()
        || issuer.fragment().is_some()
        || document.issuer.chars().any(char::is_control)
        // Entra's multi-tenant documents (`common`, `organizations`) name a template,
        // `…/{tenantid}/v2.0`, which no redirect carries.
        || document.issuer.contains('{')
    {
        return Err(DiscoveryError::Invalid(format!(
            "`{}` is not an issuer URL",
            document.issuer
        )));
    }
    if issuer.host_str() != target.host_str() {
        return Err(DiscoveryError::ForeignIssuer {
            issuer: document.issuer,
            host: target.host_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(Discovery {
        issuer: document.issuer,
        iss_parameter_supported: document.authorization_response_iss_parameter_supported,
        device_authorization_endpoint: document.device_authorization_endpoint,
    })
}
