//! Certificate credentials (`private_key_jwt`, RFC 7523): instead of a client secret, the app
//! proves who it is with a short-lived JWT signed by a private key whose certificate is
//! uploaded to the app registration. Herald makes the RSA key pair and a self-signed
//! certificate per mailbox (or takes an uploaded pair), seals the key, and signs one assertion
//! per token request: `RS256`, the certificate's SHA-256 thumbprint in `x5t#S256` (and its
//! SHA-1 one in `x5t`, which older Entra deployments read), `aud` the token endpoint,
//! `iss` = `sub` the client id, a fresh `jti` and five minutes of life.

use base64::Engine as _;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use crate::domain::mailbox::CertificateInfo;

/// How long a certificate Herald makes is valid: two years, as long as the longest client
/// secret Azure offers.
pub const VALIDITY: Duration = Duration::days(730);

/// How long an assertion is valid (Microsoft accepts at most ten minutes).
pub const ASSERTION_LIFETIME: Duration = Duration::minutes(5);

/// RSA modulus size of the keys Herald makes (Entra needs RSA, 2048 bits or more).
const KEY_BITS: usize = 2048;

/// The assertion type of RFC 7523 client authentication.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why a certificate or key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("the certificate is not a PEM X.509 certificate: {0}")]
    Certificate(String),
    #[error(
        "the private key is not an unencrypted PKCS#8 RSA key (PEM \"BEGIN PRIVATE KEY\"): {0}"
    )]
    Key(String),
    #[error("the private key does not belong to the certificate")]
    Mismatch,
    #[error("the key is {0} bits; Microsoft needs an RSA key of 2048 bits or more")]
    TooSmall(usize),
    #[error("cannot make the certificate: {0}")]
    Generate(String),
    #[error("cannot sign the client assertion: {0}")]
    Sign(String),
}

/// A certificate and its private key (PKCS#8 PEM), which is sealed before it is stored.
pub struct KeyPair {
    pub certificate: CertificateInfo,
    pub private_key: SecretString,
}

/// Makes a new RSA key pair and a self-signed certificate naming `subject`, valid from `now`
/// for [`VALIDITY`]. Key generation takes a moment: call it off the async threads.
pub fn generate(subject: &str, now: OffsetDateTime) -> Result<KeyPair, CertificateError> {
    let key = rsa::PrivateKey::new(&mut rand::rng(), KEY_BITS)
        .map_err(|e| CertificateError::Generate(e.to_string()))?;
    let pem = key
        .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| CertificateError::Generate(e.to_string()))?;
    let signer = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
        .map_err(|e| CertificateError::Generate(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| CertificateError::Generate(e.to_string()))?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, subject);
    params.distinguished_name = name;
    // A minute's allowance for a token endpoint whose clock is a little behind.
    params.not_before = now - Duration::minutes(1);
    params.not_after = now + VALIDITY;
    let certificate = params
        .self_signed(&signer)
        .map_err(|e| CertificateError::Generate(e.to_string()))?;
    Ok(KeyPair {
        certificate: describe(&certificate.pem())?,
        private_key: SecretString::from(pem.to_string()),
    })
}

/// Checks an uploaded certificate and private key belong together and suit Microsoft.
pub fn from_upload(certificate_pem: &str, key_pem: &str) -> Result<KeyPair, CertificateError> {
    let certificate = describe(certificate_pem)?;
    let key = rsa::PrivateKey::from_pkcs8_pem(key_pem.trim())
        .map_err(|e| CertificateError::Key(e.to_string()))?;
    let bits = rsa::traits::PublicKeyParts::size(&key) * 8;
    if bits < KEY_BITS {
        return Err(CertificateError::TooSmall(bits));
    }
    let public = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| CertificateError::Key(e.to_string()))?;
    if public.as_bytes() != spki_of(&certificate)?.as_slice() {
        return Err(CertificateError::Mismatch);
    }
    Ok(KeyPair {
        certificate,
        private_key: SecretString::from(key_pem.trim().to_owned() + "\n"),
    })
}

/// Reads a PEM certificate: its thumbprints, subject and validity.
pub fn describe(pem: &str) -> Result<CertificateInfo, CertificateError> {
    let der = der_of(pem)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CertificateError::Certificate(e.to_string()))?;
    let validity = parsed.validity();
    let at = |t: x509_parser::time::ASN1Time| t.to_datetime();
    Ok(CertificateInfo {
        pem: pem.trim().to_owned() + "\n",
        thumbprint_sha256: base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(&der)),
        thumbprint_sha1: hex_upper(&Sha1::digest(&der)),
        subject: parsed.subject().to_string(),
        not_before: at(validity.not_before),
        not_after: at(validity.not_after),
    })
}

/// The certificate's DER bytes (what a `.cer` download holds).
pub fn der_of(pem: &str) -> Result<Vec<u8>, CertificateError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|e| CertificateError::Certificate(e.to_string()))?;
    if block.label != "CERTIFICATE" {
        return Err(CertificateError::Certificate(format!(
            "the PEM block is \"{}\", not \"CERTIFICATE\"",
            block.label
        )));
    }
    Ok(block.contents)
}

fn spki_of(certificate: &CertificateInfo) -> Result<Vec<u8>, CertificateError> {
    let der = der_of(&certificate.pem)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CertificateError::Certificate(e.to_string()))?;
    Ok(parsed.public_key().raw.to_vec())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// A signed client assertion for one token request at `token_url`.
pub fn assertion(
    certificate: &CertificateInfo,
    private_key: &SecretString,
    client_id: &str,
    token_url: &str,
    now: OffsetDateTime,
) -> Result<SecretString, CertificateError> {
    let key = rsa::PrivateKey::from_pkcs8_pem(private_key.expose_secret().trim())
        .map_err(|e| CertificateError::Key(e.to_string()))?;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| CertificateError::Key(e.to_string()))?;
    let encoding = jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes());
    let certificate_der = der_of(&certificate.pem)?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.typ = Some("JWT".into());
    header.x5t_s256 = Some(certificate.thumbprint_sha256.clone());
    header.x5t = Some(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha1::digest(&certificate_der)),
    );
    let claims = Claims {
        aud: token_url,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now.unix_timestamp(),
        iat: now.unix_timestamp(),
        exp: (now + ASSERTION_LIFETIME).unix_timestamp(),
    };
    jsonwebtoken::encode(&header, &claims, &encoding)
        .map(SecretString::from)
        .map_err(|e| CertificateError::Sign(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_of(jwt: &str) -> (serde_json::Value, serde_json::Value) {
        let mut parts = jwt.split('.');
        let mut part = || {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts.next().unwrap())
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        };
        (part(), part())
    }

    #[test]
    fn a_generated_certificate_signs_assertions_its_public_key_verifies() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let pair = generate("Herald support@contoso.com", now).unwrap();
        let cert = &pair.certificate;
        assert!(cert.subject.contains("Herald support@contoso.com"));
        assert_eq!(cert.not_after, now + VALIDITY);
        assert_eq!(cert.thumbprint_sha1.len(), 40);

        let jwt = assertion(cert, &pair.private_key, "client-1", "https://t/token", now).unwrap();
        let (header, claims) = claims_of(jwt.expose_secret());
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t#S256"], cert.thumbprint_sha256.as_str());
        assert_eq!(claims["aud"], "https://t/token");
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            300
        );
        let other = assertion(cert, &pair.private_key, "client-1", "https://t/token", now).unwrap();
        assert_ne!(claims["jti"], claims_of(other.expose_secret()).1["jti"]);

        // The certificate's own public key verifies the signature.
        let der = der_of(&cert.pem).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        let spki = parsed.public_key().subject_public_key.data.to_vec();
        let key = jsonwebtoken::DecodingKey::from_rsa_der(&spki);
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&["https://t/token"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        jsonwebtoken::decode::<serde_json::Value>(jwt.expose_secret(), &key, &validation).unwrap();
    }

    #[test]
    fn an_upload_must_pair_a_key_with_its_certificate() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let a = generate("a", now).unwrap();
        let b = generate("b", now).unwrap();
        let ok = from_upload(&a.certificate.pem, a.private_key.expose_secret()).unwrap();
        assert_eq!(
            ok.certificate.thumbprint_sha256,
            a.certificate.thumbprint_sha256
        );
        assert!(matches!(
            from_upload(&a.certificate.pem, b.private_key.expose_secret()),
            Err(CertificateError::Mismatch)
        ));
        assert!(matches!(
            from_upload("not a pem", a.private_key.expose_secret()),
            Err(CertificateError::Certificate(_))
        ));
        assert!(matches!(
            from_upload(
                &a.certificate.pem,
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"
            ),
            Err(CertificateError::Key(_))
        ));
    }
}
