//! TLS for Herald's own listeners (the sandbox's SMTP server now, the relay later): a local
//! certificate authority made at start, a leaf certificate it signs, and the rustls server
//! configuration that presents it.
//!
//! The leaf is a separate certificate with `CA:FALSE`, because rustls refuses a self-signed
//! certificate that is its own CA (`CaUsedAsEndEntity`). The CA's PEM is exported so that
//! clients can trust it explicitly instead of turning verification off.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The process-wide rustls crypto provider: ring, installed once before any TLS use, so that
/// crates which could pick different providers never disagree.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A generated certificate authority and the server certificate it signed.
pub struct LocalCa {
    ca_pem: String,
    chain_pem: String,
    key_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl LocalCa {
    /// Makes a CA and a leaf valid for `names` (host names or IP addresses).
    pub fn generate(organization: &str, names: &[String]) -> Result<Self, TlsError> {
        install_crypto_provider();
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, organization);
        dn.push(DnType::CommonName, format!("{organization} local CA"));
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut leaf_params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, organization);
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "localhost".into()),
        );
        leaf_params.distinguished_name = dn;
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

        let chain_pem = format!("{}{}", leaf.pem(), ca.pem());
        let key_pem = leaf_key.serialize_pem();
        let chain = vec![leaf.der().clone(), ca.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Self {
            ca_pem: ca.pem(),
            chain_pem,
            key_pem,
            server: Arc::new(server),
        })
    }

    /// The CA certificate in PEM, for clients to trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server's certificate chain (leaf, then CA) in PEM, for a listener configured from
    /// files.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The server's private key in PEM (PKCS #8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A CA certificate in PEM, as DER (for a client's root store).
    pub fn ca_der_of(pem: &str) -> CertificateDer<'static> {
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .expect("a PEM certificate")
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        rustls::pki_types::pem::PemObject::from_pem_slice(self.ca_pem.as_bytes())
            .expect("the CA PEM was produced by rcgen")
    }

    /// The server configuration presenting the leaf certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }
}
