//! The banner of the organization's open alerts above every signed-in page, and its Dismiss
//! button for admins.
//!
//! The banner is read with the page's frame. It is a warning, not the page: when the alerts
//! cannot be read the page is shown without it and the cause goes to the log. Dismissing is a
//! plain form POST carrying the session's CSRF token, so it works without a script, and it
//! returns to the page it came from. Like `POST /api/v1/alerts/{id}/dismiss`, it only hides the
//! alert from the banner.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};

use super::extract::{ButtonForm, SignedForm};
use crate::domain::OrgId;
use crate::services::views;
use crate::web::AppState;
use crate::web::error::UiError;

/// The route of the Dismiss form; `{id}` is the alert's.
pub(super) const DISMISS_PATH: &str = "/settings/alerts/{id}/dismiss";

/// An open alert as the banner shows it.
pub(super) struct AlertView {
    pub id: String,
    pub title: String,
    pub detail: String,
    /// What to do about it.
    pub action: Option<String>,
}

/// The organization's open alerts, newest first; none when they cannot be read, so that a
/// failing query costs the banner and never the page.
pub(super) async fn banner(state: &AppState, org_id: OrgId) -> Vec<AlertView> {
    match views::open_alerts(&state.access.store, org_id).await {
        Ok(alerts) => alerts
            .into_iter()
            .map(|a| AlertView {
                id: a.id,
                title: a.title,
                detail: a.detail,
                action: a.action.filter(|action| !action.trim().is_empty()),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, org = %org_id, "could not read the alerts for the banner");
            Vec::new()
        }
    }
}

/// Hides an alert of the signed-in admin's organization from the banner and returns to the page
/// the form was on. Another organization's alert, or an unknown one, is a 404.
pub(super) async fn dismiss_alert(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm<ButtonForm>,
) -> Result<Response, UiError> {
    let actor = signed.admin("Only an admin of the organization can dismiss an alert.")?;
    let (session, form) = (&signed.session, &signed.form);
    if !crate::services::alerts::dismiss(
        &state.access.store,
        session.user.org_id,
        &id,
        &actor,
        state.access.now(),
    )
    .await?
    {
        return Err(UiError::NotFound);
    }
    // `Redirect::to` answers 303, so the browser GETs the page again.
    Ok(Redirect::to(&form.back_to()).into_response())
}
