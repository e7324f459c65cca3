//! Who a page is for. Every page of a signed-in user takes [`SignedIn`]; every form that acts
//! with the session takes [`SignedForm`], which also checks the form's CSRF token and the
//! request's origin. Their rejections are pages: the way to sign in, or "Request not verified".

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum_extra::extract::CookieJar;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Frame, frame_of, safe_next};
use crate::crypto;
use crate::domain::{Actor, ActorKind, UserRole};
use crate::web::AppState;
use crate::web::auth::{self, SessionUser};
use crate::web::error::UiError;

/// A page for a signed-in user: their session and the frame around the page, whose path is the
/// request's. Without a session the browser is sent to sign in, and back here afterwards.
pub(super) struct SignedIn {
    pub session: SessionUser,
    pub frame: Frame,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, UiError> {
        let jar = CookieJar::from_headers(&parts.headers);
        let path = parts.uri.path();
        let Some(session) = auth::session_user(state, &jar).await? else {
            // The landing page is where sign-in leads anyway, so it is not named.
            let next = (path != "/").then(|| path.to_owned());
            return Err(UiError::SignIn { next });
        };
        let frame = frame_of(state, &session, path).await?;
        Ok(Self { session, frame })
    }
}

/// A form posted with the session: what it carries, and where its refusal page leads.
pub(super) trait VerifiedForm {
    /// What the refusal page calls the request: "This request did not come from…".
    const REQUEST: &'static str = "request";

    /// The CSRF token the form carries (`csrf_token`).
    fn csrf_token(&self) -> &str;

    /// Where the refusal page links back to, and the link's words.
    fn back(&self) -> (String, &'static str);
}

/// A form posted by a signed-in user from Herald's own page: the session's CSRF token matches
/// and the `Origin`, when sent, is Herald's. Without a session the browser is sent to sign in.
pub(super) struct SignedForm<T> {
    pub session: SessionUser,
    pub form: T,
}

impl<T> FromRequest<AppState> for SignedForm<T>
where
    T: DeserializeOwned + VerifiedForm + Send,
{
    type Rejection = UiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, UiError> {
        let jar = CookieJar::from_headers(req.headers());
        let same_origin = auth::origin_ok(&state.access.config, req.headers());
        // The body is read first: a body that is not a form is refused as axum refuses it.
        let Form(form) = Form::<T>::from_request(req, state).await?;
        let Some(session) = auth::session_user(state, &jar).await? else {
            return Err(UiError::SignIn { next: None });
        };
        if !same_origin || !crypto::constant_time_eq(form.csrf_token(), &session.csrf_token()) {
            let (back, back_text) = form.back();
            return Err(UiError::NotVerified {
                request: T::REQUEST,
                back,
                back_text,
            });
        }
        Ok(Self { session, form })
    }
}

/// A form that is only a button acting on what its URL names: the session's CSRF token, and the
/// page it was on, where the browser returns.
#[derive(Deserialize)]
pub(super) struct ButtonForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    back: String,
}

impl ButtonForm {
    /// The page the form was on, if it is Herald's.
    pub(super) fn back_to(&self) -> String {
        safe_next(&self.back)
    }
}

impl VerifiedForm for ButtonForm {
    fn csrf_token(&self) -> &str {
        &self.csrf_token
    }

    fn back(&self) -> (String, &'static str) {
        (self.back_to(), "Back")
    }
}

impl SignedForm<ButtonForm> {
    /// The signed-in admin as the actor of what the button does; anyone else is refused with
    /// `refusal` and a way back.
    pub(super) fn admin(&self, refusal: &'static str) -> Result<Actor, UiError> {
        let user = &self.session.user;
        if user.role != UserRole::Admin {
            return Err(UiError::AdminsOnly {
                message: refusal,
                back: self.form.back_to(),
            });
        }
        Ok(Actor {
            kind: ActorKind::User,
            id: Some(user.id.to_string()),
            label: user.email.clone(),
            source: "web".into(),
        })
    }
}
