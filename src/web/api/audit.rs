//! `GET /api/v1/audit`: the organization's audit log, newest first. Admins only.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{ListParams, list_type};
use crate::domain::{ActorKind, AuditEvent};
use crate::services::views;
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::ApiQuery;

#[derive(Serialize, ToSchema)]
pub struct AuditActor {
    pub kind: ActorKind,
    pub id: Option<String>,
    /// The user's email, the key's name, or the operator's login.
    pub label: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditTarget {
    pub kind: String,
    pub id: String,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventOut {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// e.g. `user.create`, `api_key.revoke`.
    pub action: String,
    pub actor: AuditActor,
    pub target: AuditTarget,
    /// Where the change came from: the client's address, or `cli`.
    pub source: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<AuditEvent> for AuditEventOut {
    fn from(e: AuditEvent) -> Self {
        Self {
            id: e.id.to_string(),
            at: e.at,
            action: e.action,
            actor: AuditActor {
                kind: e.actor_kind,
                id: e.actor_id,
                label: e.actor_label,
            },
            target: AuditTarget {
                kind: e.target_kind,
                id: e.target_id,
            },
            source: e.source,
            detail: e.detail,
        }
    }
}

list_type!(AuditEventList, AuditEventOut);

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(ListParams),
    responses((status = 200, body = AuditEventList), (status = 403, body = Problem)))]
pub async fn list_audit_events(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<AuditEventList>, ApiError> {
    principal.require_admin()?;
    let (limit, before) = (params.limit()?, params.after()?);
    let page = views::audit_events(
        &state.access.store,
        principal.org_id,
        before.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(AuditEventList::from_page(page, AuditEventOut::from)))
}
