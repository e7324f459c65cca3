//! Sealed secrets: client secrets, passwords and tokens are stored only as XChaCha20-Poly1305
//! ciphertext under a master key, never in plaintext.
//!
//! A sealed value is the text `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The
//! associated data binds the key id, the owning record's id and the field name, so a value
//! copied onto another record or field, or edited by one bit, does not open.
//!
//! The [`KeyRing`] holds the active key, which seals, and any older keys still needed to open
//! values during a rotation. Where keys come from (environment or key file) and how a rotation
//! proceeds is [`crate::keys`]'s business; this module only seals and opens.

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::crypto::random_bytes;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;

/// Why a sealed value did not open. None of these carry plaintext or key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value was sealed with master key {0}, which is not configured")]
    UnknownKey(KeyId),
    #[error(
        "the sealed value does not open with master key {0}: it was altered, or belongs to another record"
    )]
    Tampered(KeyId),
}

/// A short public fingerprint of a master key, recorded with every value it seals.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    fn of(key: &[u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"herald master key id\0");
        hasher.update(key);
        let digest = hasher.finalize();
        Self(hex(&digest[..8]))
    }

    /// Parses a key id as it appears in a sealed value.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 16
            && raw
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 256-bit master key. Its bytes are zeroed on drop and never printed.
#[derive(Clone)]
pub struct MasterKey {
    id: KeyId,
    bytes: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self {
            id: KeyId::of(&bytes),
            bytes,
        }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_bytes(Zeroizing::new(random_bytes::<32>()))
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The key as standard base64, for the key file or `HERALD_MASTER_KEY`.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_slice()))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(self.bytes.as_slice()).expect("master keys are 32 bytes")
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The active master key plus older keys that may still open values.
#[derive(Clone, Debug)]
pub struct KeyRing {
    active: MasterKey,
    older: Vec<MasterKey>,
}

impl KeyRing {
    pub fn new(active: MasterKey) -> Self {
        Self {
            active,
            older: Vec::new(),
        }
    }

    /// A ring whose first key seals and whose other keys only open.
    pub fn with_older(active: MasterKey, older: Vec<MasterKey>) -> Self {
        let older = older.into_iter().filter(|k| k.id != active.id).collect();
        Self { active, older }
    }

    pub fn active(&self) -> &MasterKey {
        &self.active
    }

    pub fn older(&self) -> &[MasterKey] {
        &self.older
    }

    pub fn contains(&self, id: &KeyId) -> bool {
        self.find(id).is_some()
    }

    fn find(&self, id: &KeyId) -> Option<&MasterKey> {
        std::iter::once(&self.active)
            .chain(&self.older)
            .find(|k| &k.id == id)
    }

    /// Seals `plaintext` as the value of `field` on the record `owner_id`.
    pub fn seal(&self, owner_id: &str, field: &str, plaintext: &[u8]) -> SealedValue {
        let key = &self.active;
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let nonce = XNonce::from(nonce_bytes);
        let aad = associated_data(&key.id, owner_id, field);
        let ciphertext = key
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        let mut body = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        body.extend_from_slice(&nonce_bytes);
        body.extend_from_slice(&ciphertext);
        SealedValue {
            key_id: key.id.clone(),
            text: format!(
                "{VERSION}.{}.{}",
                key.id,
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
            ),
        }
    }

    /// Opens a value sealed for `field` on the record `owner_id`.
    pub fn open(
        &self,
        owner_id: &str,
        field: &str,
        sealed: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (key_id, body) = parse_envelope(sealed)?;
        let key = self
            .find(&key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.clone()))?;
        if body.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce_bytes, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce_bytes).map_err(|_| SealError::Malformed)?;
        let aad = associated_data(&key.id, owner_id, field);
        key.cipher()
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered(key_id))
    }
}

/// A sealed value ready to store, with the id of the key that sealed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedValue {
    pub key_id: KeyId,
    pub text: String,
}

/// The id of the key a sealed value names, without opening it.
pub fn key_id_of(sealed: &str) -> Result<KeyId, SealError> {
    parse_envelope(sealed).map(|(id, _)| id)
}

fn parse_envelope(sealed: &str) -> Result<(KeyId, Vec<u8>), SealError> {
    let mut parts = sealed.splitn(3, '.');
    let (Some(VERSION), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SealError::Malformed);
    };
    let key_id = KeyId::parse(id).ok_or(SealError::Malformed)?;
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| SealError::Malformed)?;
    Ok((key_id, body))
}

fn associated_data(key_id: &KeyId, owner_id: &str, field: &str) -> Vec<u8> {
    // Length-prefixed so that no two (owner, field) pairs share an encoding.
    let mut aad = Vec::with_capacity(32 + owner_id.len() + field.len());
    aad.extend_from_slice(b"herald sealed v1\0");
    aad.extend_from_slice(key_id.as_str().as_bytes());
    for part in [owner_id, field] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(MasterKey::generate())
    }

    #[test]
    fn a_sealed_value_round_trips() {
        let ring = ring();
        let sealed = ring.seal("mbx_1", "client_secret", b"s3cr3t~value.x");
        assert_eq!(&sealed.key_id, ring.active().id());
        assert!(!sealed.text.contains("s3cr3t"));
        let opened = ring.open("mbx_1", "client_secret", &sealed.text).unwrap();
        assert_eq!(opened.as_slice(), b"s3cr3t~value.x");
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let ring = ring();
        let a = ring.seal("r", "f", b"same");
        let b = ring.seal("r", "f", b"same");
        assert_ne!(a.text, b.text);
    }

    #[test]
    fn a_tampered_value_does_not_open() {
        let ring = ring();
        let sealed = ring.seal("r", "f", b"secret").text;
        let (head, body) = sealed.rsplit_once('.').unwrap();
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!(
            "{head}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        assert!(matches!(
            ring.open("r", "f", &tampered),
            Err(SealError::Tampered(_))
        ));
    }

    #[test]
    fn a_value_does_not_open_under_another_record_or_field() {
        let ring = ring();
        let sealed = ring.seal("record-a", "password", b"secret").text;
        assert!(matches!(
            ring.open("record-b", "password", &sealed),
            Err(SealError::Tampered(_))
        ));
        assert!(matches!(
            ring.open("record-a", "client_secret", &sealed),
            Err(SealError::Tampered(_))
        ));
    }

    #[test]
    fn a_value_does_not_open_with_the_wrong_key() {
        let sealed = ring().seal("r", "f", b"secret").text;
        let other = ring();
        assert!(matches!(
            other.open("r", "f", &sealed),
            Err(SealError::UnknownKey(_))
        ));
        // Even a key ring that claims the id cannot open it without the key bytes.
        let forged = sealed.replacen(
            key_id_of(&sealed).unwrap().as_str(),
            other.active().id().as_str(),
            1,
        );
        assert!(matches!(
            other.open("r", "f", &forged),
            Err(SealError::Tampered(_))
        ));
    }

    #[test]
    fn older_keys_open_but_do_not_seal() {
        let old = MasterKey::generate();
        let sealed_old = KeyRing::new(old.clone()).seal("r", "f", b"x").text;
        let new = MasterKey::generate();
        let ring = KeyRing::with_older(new.clone(), vec![old]);
        assert_eq!(ring.open("r", "f", &sealed_old).unwrap().as_slice(), b"x");
        assert_eq!(&ring.seal("r", "f", b"y").key_id, new.id());
    }

    #[test]
    fn malformed_values_are_reported_as_such() {
        let ring = ring();
        for bad in [
            "",
            "v1",
            "v2.0123456789abcdef.AAAA",
            "v1.nothex.AAAA",
            "v1.0123456789abcdef.!!",
        ] {
            assert_eq!(ring.open("r", "f", bad), Err(SealError::Malformed), "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_key_bytes() {
        let key = MasterKey::generate();
        let b64 = key.to_base64();
        assert!(!format!("{key:?}").contains(b64.as_str()));
    }
}
