//! Users, who sign in to the web UI, and API keys, which applications present.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::{ApiKeyId, FieldError, OrgId, UserId, check_len, reject_control_chars};

/// An email address, syntax-checked and with its domain lower-cased. At most 254 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub const MAX_LEN: usize = 254;

    /// Parses an address for the given field name, for error messages.
    pub fn parse_field(field: &'static str, raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        check_len(field, raw, Self::MAX_LEN)?;
        reject_control_chars(field, raw)?;
        let address = lettre::Address::from_str(raw).map_err(|_| {
            FieldError::new(
                field,
                format!("`{raw}` is not an email address such as name@example.com"),
            )
        })?;
        Ok(Self(format!(
            "{}@{}",
            address.user(),
            address.domain().to_ascii_lowercase()
        )))
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::parse_field("email", raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form used to find an account: sign-in ignores case in the whole address.
    pub fn login_key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user may do in their organization.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Manages everything in the organization.
    Admin,
    /// Sees mailboxes and the message log; changes nothing.
    Member,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw.trim() {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            other => Err(FieldError::new(
                "role",
                format!("`{other}` is not a user role; use admin or member"),
            )),
        }
    }
}

/// What an API key may do in its organization.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Manages everything in the organization.
    Admin,
    /// Sends mail and reads what it sent; changes no settings.
    Sender,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Sender => "sender",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw.trim() {
            "admin" => Ok(Self::Admin),
            "sender" => Ok(Self::Sender),
            other => Err(FieldError::new(
                "role",
                format!("`{other}` is not an API key role; use admin or sender"),
            )),
        }
    }
}

/// A new password chosen by a person: 12 to 1024 characters. The upper bound keeps a request
/// from making argon2 hash megabytes.
pub struct NewPassword(SecretString);

impl NewPassword {
    pub const MIN_LEN: usize = 12;
    pub const MAX_LEN: usize = 1024;

    pub fn parse(raw: SecretString) -> Result<Self, FieldError> {
        let len = raw.expose_secret().chars().count();
        if len == 0 {
            return Err(FieldError::new("password", "must not be empty"));
        }
        if len < Self::MIN_LEN {
            return Err(FieldError::new(
                "password",
                format!("is too short: use at least {} characters", Self::MIN_LEN),
            ));
        }
        if len > Self::MAX_LEN {
            return Err(FieldError::new(
                "password",
                format!("is too long: at most {} characters", Self::MAX_LEN),
            ));
        }
        Ok(Self(raw))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(REDACTED)")
    }
}

/// A stored user. The password hash stays in the store layer.
#[derive(Clone, Debug)]
pub struct User {
    pub id: UserId,
    pub org_id: OrgId,
    pub email: String,
    pub role: UserRole,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An API key's label: 1–100 characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyName(String);

impl ApiKeyName {
    pub const MAX_LEN: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        super::parse_label("name", raw, Self::MAX_LEN).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The secret an application presents: `hk_` followed by 43 base64url characters (256 bits).
/// Only its SHA-256 digest and its first characters are stored.
pub struct ApiKeyToken(SecretString);

impl ApiKeyToken {
    pub const PREFIX: &'static str = "hk_";
    const BODY_LEN: usize = 43;
    /// How many leading characters are kept to tell keys apart in lists.
    const DISPLAY_LEN: usize = 11;

    /// A new key around `random`, 43 random URL-safe characters (`crypto::random_token`).
    pub fn from_random(random: &str) -> Self {
        Self(SecretString::from(format!("{}{random}", Self::PREFIX)))
    }

    /// Checks the shape of a presented key, so that a pasted fragment gets a clear message
    /// instead of a lookup.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let Some(body) = raw.strip_prefix(Self::PREFIX) else {
            return Err("an API key starts with `hk_`");
        };
        if body.len() != Self::BODY_LEN
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("an API key is `hk_` followed by 43 letters, digits, `-` or `_`");
        }
        Ok(Self(SecretString::from(raw.to_owned())))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The leading characters shown in lists (`hk_AbCdEfGh`).
    pub fn display_prefix(&self) -> String {
        self.expose()[..Self::DISPLAY_LEN].to_owned()
    }
}

impl fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyToken(REDACTED)")
    }
}

/// A stored API key, without its secret.
#[derive(Clone, Debug)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    pub name: String,
    pub role: KeyRole,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_domain_is_lowercased_and_garbage_refused() {
        assert_eq!(
            EmailAddress::parse(" Ann@Contoso.COM ").unwrap().as_str(),
            "Ann@contoso.com"
        );
        assert!(EmailAddress::parse("not-an-address").is_err());
        assert!(EmailAddress::parse("a@b.com\r\nBcc: x@y.z").is_err());
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(
            EmailAddress::parse(&long)
                .unwrap_err()
                .message
                .contains("too long")
        );
    }

    #[test]
    fn empty_and_short_passwords_are_refused() {
        assert_eq!(
            NewPassword::parse(SecretString::from(""))
                .unwrap_err()
                .message,
            "must not be empty"
        );
        assert!(NewPassword::parse(SecretString::from("short")).is_err());
        assert!(NewPassword::parse(SecretString::from("long enough password")).is_ok());
    }

    #[test]
    fn api_keys_have_a_checkable_shape() {
        let key = ApiKeyToken::from_random("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ");
        assert!(ApiKeyToken::parse(key.expose()).is_ok());
        assert_eq!(key.display_prefix().len(), 11);
        assert!(ApiKeyToken::parse("hk_short").is_err());
        assert!(ApiKeyToken::parse("Bearer hk_x").is_err());
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
