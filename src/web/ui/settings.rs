//! Settings, as the seed's guide names them: `/settings` opens the **System** tab, which lists
//! what the system holds and offers **Outgoing Mail** at its upper right ("go to Settings >
//! System", "click Outgoing Mail in the upper right corner of the Settings tab").

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::extract::SignedIn;
use super::{Frame, render};
use crate::web::error::UiError;

#[derive(Template)]
#[template(path = "system.html")]
struct SystemPage {
    frame: Frame,
}

/// `/settings`: the first tab, System.
pub(super) async fn settings() -> Response {
    Redirect::to("/settings/system").into_response()
}

/// `/settings/system`: the System tab.
pub(super) async fn system_page(SignedIn { frame, .. }: SignedIn) -> Result<Response, UiError> {
    Ok(render(StatusCode::OK, &SystemPage { frame }))
}
