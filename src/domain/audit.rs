//! The audit log: who changed what, when, and from where.

use time::OffsetDateTime;

use super::{AuditEventId, OrgId};

/// Who acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A signed-in user.
    User,
    /// An application with an API key.
    ApiKey,
    /// An operator at the command line.
    Cli,
    /// Herald itself (first-run setup, background jobs).
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::ApiKey => "api_key",
            Self::Cli => "cli",
            Self::System => "system",
        }
    }

    pub fn parse(raw: &str) -> Self {
        match raw {
            "user" => Self::User,
            "api_key" => Self::ApiKey,
            "cli" => Self::Cli,
            _ => Self::System,
        }
    }
}

/// The actor of an audited change, with where the change came from.
#[derive(Clone, Debug)]
pub struct Actor {
    pub kind: ActorKind,
    /// The user's or key's id, when there is one.
    pub id: Option<String>,
    /// A readable name: the user's email, the key's name, the operator's login.
    pub label: String,
    /// The client's address, or `cli` for the command line.
    pub source: String,
}

impl Actor {
    /// The operator running a `herald` command on this machine.
    pub fn cli() -> Self {
        let login = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            kind: ActorKind::Cli,
            id: None,
            label: format!("herald CLI ({login})"),
            source: "cli".into(),
        }
    }
}

/// A change to record.
#[derive(Clone, Debug)]
pub struct NewAuditEvent {
    pub org_id: OrgId,
    pub actor: Actor,
    /// Dotted verb such as `user.create`, `api_key.revoke`.
    pub action: &'static str,
    pub target_kind: &'static str,
    pub target_id: String,
    /// Extra facts as JSON (never a secret).
    pub detail: serde_json::Value,
}

/// A recorded change.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub id: AuditEventId,
    pub org_id: OrgId,
    pub actor_kind: ActorKind,
    pub actor_id: Option<String>,
    pub actor_label: String,
    pub source: String,
    pub action: String,
    pub target_kind: String,
    pub target_id: String,
    pub detail: serde_json::Value,
    pub at: OffsetDateTime,
}
