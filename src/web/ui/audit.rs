//! Settings › Audit log: who changed what, when and from where.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::extract::SignedIn;
use super::{Frame, render, when};
use crate::services::views;
use crate::web::AppState;
use crate::web::error::UiError;

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    source: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    frame: Frame,
    events: Vec<AuditRow>,
}

/// The organization's audit log, newest first; admins only.
pub(super) async fn audit_page(
    State(state): State<AppState>,
    SignedIn { frame: f, .. }: SignedIn,
) -> Result<Response, UiError> {
    if !f.admin {
        return Err(UiError::AdminsOnly {
            message: "The audit log is for the organization's admins.",
            back: "/".into(),
        });
    }
    let events = views::audit_events(&state.access.store, f.org_id, None, 200)
        .await?
        .items;
    Ok(render(
        StatusCode::OK,
        &AuditPage {
            events: events
                .into_iter()
                .map(|e| {
                    let name = e
                        .detail
                        .get("name")
                        .or_else(|| e.detail.get("email"))
                        .and_then(|v| v.as_str())
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default();
                    AuditRow {
                        at: when(Some(e.at)),
                        actor: e.actor_label,
                        action: e.action,
                        target: format!("{}{name}", e.target_kind),
                        source: e.source,
                    }
                })
                .collect(),
            frame: f,
        },
    ))
}
