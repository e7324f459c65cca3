//! Certificate credentials, as Entra checks them: an app registration holds uploaded
//! certificates (Certificates & secrets › Certificates), and a client authenticates with a
//! JWT (`client_assertion`, RFC 7523) signed by one of their keys. Entra finds the key by the
//! header's `x5t#S256` (or the older `x5t`) thumbprint, checks the signature (RS256 or
//! PS256), `aud` (the token endpoint), `iss` = `sub` = the client id, the time range, and that
//! the `jti` was not used before.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::super::SandboxState;

/// A certificate uploaded to an app registration (its public half).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AppCertificate {
    /// Hex SHA-1, as the portal lists it.
    pub thumbprint: String,
    /// Base64url SHA-256: the assertion's `x5t#S256`.
    pub thumbprint_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Base64url SHA-1: the older `x5t`.
    #[serde(skip)]
    x5t: String,
    /// The RSA public key (PKCS#1 DER).
    #[serde(skip)]
    public_key: Vec<u8>,
}

impl AppCertificate {
    /// Reads an uploaded certificate: PEM or DER (`.cer`).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let der = match x509_parser::pem::parse_x509_pem(bytes) {
            Ok((_, pem)) if pem.label == "CERTIFICATE" => pem.contents,
            _ => bytes.to_vec(),
        };
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Ok(Self {
            thumbprint: Sha1::digest(&der)
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect(),
            thumbprint_sha256: b64(&Sha256::digest(&der)),
            expires_at: parsed.validity().not_after.to_datetime(),
            x5t: b64(&Sha1::digest(&der)),
            public_key: parsed.public_key().subject_public_key.data.to_vec(),
        })
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    jti: String,
    #[serde(default)]
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
}

/// Why an assertion is refused: Entra's code and words.
pub(super) struct Refused(pub u32, pub String);

/// Checks a client assertion for `client_id` at `token_url`.
pub(super) fn check(
    state: &SandboxState,
    client_id: &str,
    token_url: &str,
    assertion: &str,
    now: OffsetDateTime,
) -> Result<(), Refused> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| {
        Refused(
            50027,
            format!("JWT token is invalid or malformed. [Reason - {e}]"),
        )
    })?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(Refused(
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The algorithm {:?} is not supported; use RS256 or PS256.]",
                header.alg
            ),
        ));
    }
    let certificates = state.app_access(client_id).certificates;
    let Some(certificate) = certificates.iter().find(|c| {
        header.x5t_s256.as_deref() == Some(c.thumbprint_sha256.as_str())
            || header.x5t.as_deref() == Some(c.x5t.as_str())
    }) else {
        return Err(Refused(
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]",
                header.x5t_s256.or(header.x5t).unwrap_or_default()
            ),
        ));
    };
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[token_url]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["aud"]);
    let key = DecodingKey::from_rsa_der(&certificate.public_key);
    let claims = match jsonwebtoken::decode::<Claims>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => {
            return Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidAudience => Refused(
                    700023,
                    format!(
                        "Client assertion audience claim does not match Realm issuer. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials. [Expected audience: {token_url}]"
                    ),
                ),
                _ => Refused(
                    700027,
                    format!(
                        "Client assertion contains an invalid signature. [Reason - {e}, Thumbprint of key used by client: '{}']",
                        certificate.thumbprint
                    ),
                ),
            });
        }
    };
    if claims.iss != client_id || claims.sub != client_id {
        return Err(Refused(
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials.".into(),
        ));
    }
    let at = now.unix_timestamp();
    let skew = 300;
    if certificate.expires_at < now {
        return Err(Refused(
            700027,
            format!(
                "Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of key used by client: '{}']",
                certificate.thumbprint
            ),
        ));
    }
    if claims.exp == 0 || claims.exp + skew < at || claims.nbf.is_some_and(|nbf| nbf - skew > at) {
        return Err(Refused(
            700024,
            "Client assertion is not within its valid time range. Ensure that the access token is not expired before using it and that the time on the client is in sync with the server.".into(),
        ));
    }
    if claims.jti.is_empty() || !state.use_assertion_id(client_id, &claims.jti, claims.exp) {
        return Err(Refused(
            700027,
            "Client assertion contains an invalid signature. [Reason - The assertion's jti was already used: an assertion is single-use.]".into(),
        ));
    }
    Ok(())
}
