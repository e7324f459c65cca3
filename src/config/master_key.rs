//! The master key part: `HERALD_MASTER_KEY` (`master_key`), when the key is not kept in the
//! key file.

use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::ConfigError;
use super::source::Source;

/// The key given in the environment or the file, if any.
pub(super) fn resolve(src: &Source) -> Result<Option<MasterKeyMaterial>, ConfigError> {
    match src.text("HERALD_MASTER_KEY", &src.file.master_key) {
        Some(raw) => MasterKeyMaterial::from_base64(&raw)
            .map(Some)
            .map_err(|message| ConfigError::Invalid {
                setting: "HERALD_MASTER_KEY (master_key)",
                message,
            }),
        None => Ok(None),
    }
}

/// A 32-byte master key as given in `HERALD_MASTER_KEY`. Its bytes never reach `Debug`.
#[derive(Clone)]
pub struct MasterKeyMaterial(pub Zeroizing<[u8; 32]>);

impl MasterKeyMaterial {
    /// Decodes base64 (standard or URL-safe, padded or not) of exactly 32 bytes.
    pub fn from_base64(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(raw))
                .map_err(|_| {
                    "not valid base64; generate a key with `herald keys generate`".to_owned()
                })?,
        );
        let bytes: [u8; 32] = decoded.as_slice().try_into().map_err(|_| {
            format!(
                "decodes to {} bytes, but a master key is exactly 32 bytes; generate one with `herald keys generate`",
                decoded.len()
            )
        })?;
        Ok(Self(Zeroizing::new(bytes)))
    }
}

impl fmt::Debug for MasterKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKeyMaterial(REDACTED)")
    }
}
