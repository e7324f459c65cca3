//! Herald's domain: the types and rules of organizations, users, API keys and the audit log.
//!
//! Nothing here performs I/O or knows about HTTP, SQL or SMTP. Values are built through
//! `parse` and cannot hold an invalid value, so the layers above never re-check them.

/// A closed set of values stored and shown as text, with `as_str`, `FromStr` and serde.
/// `$text` is matched as a token tree, not a `literal` fragment: utoipa's derive reads
/// `#[serde(rename = …)]` only from a bare literal token, and would otherwise document the
/// variants' Rust names instead of the text the API sends.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:tt),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;

            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                match raw {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "`{other}` is not one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod audit;
pub mod ids;
pub mod limits;
pub mod mailbox;
pub mod message;
pub mod org;
pub mod presets;
pub mod provider;
pub mod relay;
pub mod smtp;
pub mod user;

pub use audit::{Actor, ActorKind, AuditEvent, NewAuditEvent};
pub use ids::{ApiKeyId, AuditEventId, MailboxId, OrgId, UserId};
pub use org::{OrgName, Organization};
pub use user::{
    ApiKey, ApiKeyName, ApiKeyToken, EmailAddress, KeyRole, NewPassword, User, UserRole,
};

/// One field's problem with the input, in words a user can act on.
#[derive(Clone, Debug)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// The limit the value went over, when that is the problem: a protocol that answers each
    /// limit with a code of its own (the relay's SMTP replies) reads it here, not in the words.
    pub exceeded: Option<Exceeded>,
}

/// A limit an input can go over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// Recipients per message.
    Recipients,
    /// The size of a message.
    Size,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            exceeded: None,
        }
    }

    /// A value over `limit`.
    pub fn over(field: impl Into<String>, message: impl Into<String>, limit: Exceeded) -> Self {
        Self {
            exceeded: Some(limit),
            ..Self::new(field, message)
        }
    }
}

/// Two errors are the same when they say the same about the same field.
impl PartialEq for FieldError {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field && self.message == other.message
    }
}

impl Eq for FieldError {}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Rejects control characters (CR, LF, NUL, …) which would let a value break out of a header,
/// a log line or a protocol command.
pub(crate) fn reject_control_chars(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters such as line breaks",
        ));
    }
    Ok(())
}

/// A trimmed, non-empty, single-line label of at most `max` characters: the shape of every
/// name a person types (organization, API key).
pub(crate) fn parse_label(
    field: &'static str,
    raw: &str,
    max: usize,
) -> Result<String, FieldError> {
    let label = raw.trim();
    if label.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    check_len(field, label, max)?;
    reject_control_chars(field, label)?;
    Ok(label.to_owned())
}

/// Checks a length limit in characters.
pub(crate) fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), FieldError> {
    let len = value.chars().count();
    if len > max {
        return Err(FieldError::new(
            field,
            format!("is too long: {len} characters, at most {max} allowed"),
        ));
    }
    Ok(())
}
