//! Small cryptographic helpers shared by the rest of Herald: random tokens, digests of random
//! tokens, constant-time comparison, and argon2id password hashing.
//!
//! Random tokens (API keys, session ids, setup links) carry 256 bits of entropy, so a plain
//! SHA-256 digest is enough to store them: a slow password hash is only for human passwords.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `N` bytes from the thread's cryptographically secure generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rand::fill(&mut buf[..]);
    buf
}

/// A random 256-bit token, base64url without padding (43 characters).
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Hex SHA-256 of a token, as stored in place of the token itself.
pub fn token_digest(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Hashes a human password with argon2id (default parameters: 19 MiB, 2 passes).
/// CPU-heavy: call from a blocking thread.
pub fn hash_password(password: &SecretString) -> Result<String, PasswordHashError> {
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|_| PasswordHashError)
}

/// Checks a password against a stored argon2 hash. A malformed hash never matches.
/// CPU-heavy: call from a blocking thread.
pub fn verify_password(password: &SecretString, hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.expose_secret().as_bytes(), &parsed)
        .is_ok()
}

/// A hash that costs as much to check as a real one, used when the account does not exist so
/// that sign-in time does not reveal which emails have accounts.
pub fn dummy_password_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(&SecretString::from(random_token())).unwrap_or_else(|_| String::new())
    })
}

/// Hashing failed; argon2 with default parameters only fails when out of memory.
#[derive(Debug, thiserror::Error)]
#[error("could not hash the password")]
pub struct PasswordHashError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password(&SecretString::from("correct horse battery")).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(
            &SecretString::from("correct horse battery"),
            &hash
        ));
        assert!(!verify_password(&SecretString::from("wrong"), &hash));
        assert!(!verify_password(
            &SecretString::from("x"),
            "not a phc string"
        ));
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert_eq!(token_digest("abc").len(), 64);
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
