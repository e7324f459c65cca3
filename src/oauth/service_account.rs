//! Google Workspace service accounts with domain-wide delegation: the JSON key Google Cloud
//! downloads, and the JWT bearer grant (RFC 7523) it signs to get a user's token: `iss` the
//! `client_email`, `sub` the mailbox, `scope`, `aud` the `token_uri`, RS256, one hour. The
//! `oauth2` crate has no such grant, so the request is built here and sent over Herald's own
//! guarded HTTP client; the answer is read as any token response.

use oauth2::RequestTokenError;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;

use super::http::{HttpError, TokenHttp};
use super::{ProviderError, TokenResponse};

/// RFC 7523's grant type.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long an assertion lives: Google takes at most an hour.
const ASSERTION_LIFETIME: time::Duration = time::Duration::hours(1);

/// A service account's JSON key, as Google Cloud downloads it (Keys › Add key › JSON).
#[derive(Deserialize)]
pub struct ServiceAccountKey {
    #[serde(rename = "type", default)]
    kind: String,
    pub client_email: String,
    pub client_id: String,
    #[serde(default)]
    pub private_key_id: String,
    private_key: SecretString,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("client_id", &self.client_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServiceAccountError {
    #[error("is not a service account's JSON key: {0}")]
    Format(String),
    #[error("the service account's private key cannot sign: {0}")]
    Key(String),
}

impl ServiceAccountKey {
    /// Reads a JSON key; its private key must be an unencrypted PKCS#8 RSA key.
    pub fn parse(json: &SecretString) -> Result<Self, ServiceAccountError> {
        let key: Self = serde_json::from_str(json.expose_secret())
            .map_err(|e| ServiceAccountError::Format(strip_position(&e.to_string())))?;
        if key.kind != "service_account" {
            return Err(ServiceAccountError::Format(
                "its \"type\" is not \"service_account\" (an OAuth client's JSON is not a service account key)".into(),
            ));
        }
        if !key.client_email.contains('@') || key.client_id.trim().is_empty() {
            return Err(ServiceAccountError::Format(
                "it has no client_email or client_id".into(),
            ));
        }
        key.encoding_key()?;
        Ok(key)
    }

    fn encoding_key(&self) -> Result<jsonwebtoken::EncodingKey, ServiceAccountError> {
        let key = rsa::PrivateKey::from_pkcs8_pem(self.private_key.expose_secret().trim())
            .map_err(|e| ServiceAccountError::Key(e.to_string()))?;
        let der = key
            .to_pkcs1_der()
            .map_err(|e| ServiceAccountError::Key(e.to_string()))?;
        Ok(jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()))
    }

    /// The signed grant for `subject`'s token with `scopes` at `token_url`.
    pub fn assertion(
        &self,
        subject: &str,
        scopes: &[String],
        token_url: &str,
        now: OffsetDateTime,
    ) -> Result<SecretString, ServiceAccountError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(self.private_key_id.clone()).filter(|k| !k.is_empty());
        let claims = serde_json::json!({
            "iss": self.client_email,
            "sub": subject,
            "scope": scopes.join(" "),
            "aud": token_url,
            "iat": now.unix_timestamp(),
            "exp": (now + ASSERTION_LIFETIME).unix_timestamp(),
        });
        jsonwebtoken::encode(&header, &claims, &self.encoding_key()?)
            .map(SecretString::from)
            .map_err(|e| ServiceAccountError::Key(e.to_string()))
    }
}

/// serde's "at line 1 column 5" says nothing to someone who pasted a file.
fn strip_position(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}

/// The token request's answer, as the `oauth2` crate gives the other grants'.
pub type GrantResult = Result<TokenResponse, RequestTokenError<HttpError, ProviderError>>;

/// Sends the JWT bearer grant to `token_url` and reads Google's answer.
pub async fn request_token(
    http: &TokenHttp,
    token_url: &str,
    assertion: &SecretString,
) -> GrantResult {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", JWT_BEARER)
        .append_pair("assertion", assertion.expose_secret())
        .finish();
    let request = oauth2::http::Request::builder()
        .method(oauth2::http::Method::POST)
        .uri(token_url)
        .header(
            oauth2::http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(oauth2::http::header::ACCEPT, "application/json")
        .body(body.into_bytes())
        .map_err(|e| RequestTokenError::Other(e.to_string()))?;
    let response = http
        .execute(request)
        .await
        .map_err(RequestTokenError::Request)?;
    let status = response.status();
    let body = response.body();
    if status.is_success() {
        serde_json::from_slice::<TokenResponse>(body)
            .map_err(|e| RequestTokenError::Other(format!("the token response is not JSON: {e}")))
    } else {
        match serde_json::from_slice::<ProviderError>(body) {
            Ok(error) if status.is_client_error() => Err(RequestTokenError::ServerResponse(error)),
            _ => Err(RequestTokenError::Other(format!(
                "the token endpoint answered {status}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn key_json() -> SecretString {
        use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
        let key = rsa::PrivateKey::new(&mut rand::rng(), 2048).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        SecretString::from(
            serde_json::json!({
                "type": "service_account", "client_email": "herald@p.iam.gserviceaccount.com",
                "client_id": "1234", "private_key_id": "abcd", "private_key": pem.as_str(),
                "token_uri": "https://oauth2.googleapis.com/token",
            })
            .to_string(),
        )
    }

    #[test]
    fn the_grant_names_the_service_account_the_mailbox_the_scope_and_the_token_endpoint() {
        let key = ServiceAccountKey::parse(&key_json()).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let jwt = key
            .assertion(
                "support@example.org",
                &["https://mail.google.com/".into()],
                &key.token_uri,
                now,
            )
            .unwrap();
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        let decode = |p: &str| -> serde_json::Value {
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .unwrap(),
            )
            .unwrap()
        };
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "abcd");
        assert_eq!(claims["iss"], "herald@p.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], "support@example.org");
        assert_eq!(claims["scope"], "https://mail.google.com/");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
    }

    #[test]
    fn an_oauth_client_s_json_is_no_service_account_key() {
        let refused = ServiceAccountKey::parse(&SecretString::from(
            r#"{"web": {"client_id": "x.apps.googleusercontent.com"}}"#,
        ));
        assert!(refused.is_err());
        let debug = format!("{:?}", ServiceAccountKey::parse(&key_json()).unwrap());
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
}
