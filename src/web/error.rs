//! The one error type of the HTTP API: every failure becomes `application/problem+json`
//! (RFC 9457) with a stable `code`, and field errors under `errors`. The cause chain goes to the
//! log, never to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::FieldError;
use crate::services::ServiceError;
use crate::services::views::StoreError;

/// An API failure, ready to render.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub retry_after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemFieldError {
    /// The input field at fault (`email`, `role`, `body`).
    pub field: String,
    pub message: String,
}

/// The body of every API error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`, `forbidden`, `not_found`.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemFieldError>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.as_slice() {
            [one] => format!("{one}"),
            _ => "Some fields are not valid; see errors.".into(),
        };
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "Invalid input",
                detail,
            )
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Bad request", detail)
    }

    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, "Not signed in", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            format!("No such {what}."),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Internal error",
            "Something went wrong on Herald's side; the details are in its log.",
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Unavailable",
            detail,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("urn:herald:problem:{}", self.code),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code.into(),
            errors: self
                .errors
                .into_iter()
                .map(|e| ProblemFieldError {
                    field: e.field,
                    message: e.message,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(errors) => Self::validation(errors),
            ServiceError::Conflict(error) => Self {
                detail: error.message.clone(),
                errors: vec![error],
                ..Self::new(StatusCode::CONFLICT, "conflict", "Conflict", "")
            },
            ServiceError::Rejected { code, error } => Self {
                code,
                ..Self::validation(vec![error])
            },
            ServiceError::NotFound(what) => Self::not_found(what),
            ServiceError::Refused(why) => {
                Self::new(StatusCode::CONFLICT, "refused", "Refused", why)
            }
            ServiceError::Forbidden(why) => Self::forbidden(why),
            ServiceError::Store(e) => e.into(),
            ServiceError::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                Self::internal()
            }
            ServiceError::Limited {
                code,
                message,
                retry_after,
            } => Self {
                retry_after: Some(retry_after),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    code,
                    "Too many requests",
                    message,
                )
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Connect { .. } => {
                tracing::error!(error = %e, "database unavailable");
                Self::unavailable("The database is not reachable; try again shortly.")
            }
            other => {
                tracing::error!(error = %other, "store error");
                Self::internal()
            }
        }
    }
}

/// A web UI failure, rendered as a page (the UI's counterpart of [`ApiError`]). An internal
/// error keeps its cause, which goes to the log once, when the page is rendered; the user sees
/// only "Something went wrong".
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No session: the browser goes to the sign-in page, which returns to `next` afterwards.
    #[error("not signed in")]
    SignIn { next: Option<String> },
    /// A form acting with the session came without its CSRF token or from another origin.
    /// `request` names it in the page ("sign-out request"); the page links to `back`.
    #[error("{request} not verified")]
    NotVerified {
        request: &'static str,
        back: String,
        back_text: &'static str,
    },
    /// The signed-in user is a member, and this is for admins: `message` says what.
    #[error("admins only")]
    AdminsOnly { message: &'static str, back: String },
    /// No page at this address (or not one of the user's organization).
    #[error("page not found")]
    NotFound,
    /// A form body that is not a form, answered as axum answers it.
    #[error(transparent)]
    Form(#[from] axum::extract::rejection::FormRejection),
    /// Herald's side failed.
    #[error("the web UI could not complete the request")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

macro_rules! ui_internal_from {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for UiError {
            fn from(e: $t) -> Self {
                Self::Internal(Box::new(e))
            }
        }
    )*};
}

ui_internal_from!(StoreError, ServiceError, crate::crypto::HashPoolError);

/// An error and its causes, each once: a cause already quoted by the error above it is not
/// repeated.
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        use axum::response::Redirect;

        use super::ui::page as ui;
        match self {
            Self::SignIn { next: None } => Redirect::to("/login").into_response(),
            Self::SignIn { next: Some(next) } => {
                Redirect::to(&format!("/login?next={next}")).into_response()
            }
            Self::NotVerified {
                request,
                back,
                back_text,
            } => ui::notice(
                StatusCode::FORBIDDEN,
                "Request not verified",
                &format!(
                    "This {request} did not come from Herald's own page. Go back, reload, and try again."
                ),
                &back,
                back_text,
            ),
            Self::AdminsOnly { message, back } => {
                ui::notice(StatusCode::FORBIDDEN, "Admins only", message, &back, "Back")
            }
            Self::NotFound => ui::not_found_page(),
            Self::Form(rejection) => rejection.into_response(),
            Self::Internal(e) => {
                tracing::error!(error = %cause_chain(e.as_ref()), "web UI error");
                ui::notice(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Herald could not complete this request; the details are in its log.",
                    "/",
                    "Back",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not save")]
    struct Wrapping(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("could not save: {0}")]
    struct Quoting(#[source] std::io::Error);

    fn disk_full() -> std::io::Error {
        std::io::Error::other("disk full")
    }

    #[test]
    fn the_logged_cause_chain_names_each_cause_once() {
        assert_eq!(
            cause_chain(&Wrapping(disk_full())),
            "could not save: disk full"
        );
        assert_eq!(
            cause_chain(&Quoting(disk_full())),
            "could not save: disk full"
        );
    }

    #[test]
    fn an_internal_ui_error_keeps_its_cause_and_shows_only_that_something_went_wrong() {
        let error = UiError::Internal(Box::new(Wrapping(disk_full())));
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("could not save"));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn without_a_session_a_page_sends_the_browser_to_sign_in_and_back() {
        let location = |e: UiError| {
            let response = e.into_response();
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(location(UiError::SignIn { next: None }), "/login");
        let next = Some("/settings/users".to_owned());
        assert_eq!(
            location(UiError::SignIn { next }),
            "/login?next=/settings/users"
        );
    }
}
