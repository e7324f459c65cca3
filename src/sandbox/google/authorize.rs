//! Google's authorize endpoint and the pages behind it: a bad client or redirect URI ends on
//! Google's own error page, as do `org_internal` and `admin_policy_enforced`; Cancel redirects
//! with `error=access_denied`; Accept redirects with the code, `scope` and `iss`.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::SecretString;
use serde::Deserialize;
use time::Duration;

use super::super::oauth::{ConsentForm, SignInForm, consent_form, redirect_with, sign_in_form};
use super::super::{IssuedCode, Pending};
use super::{Code, GOOGLE_MAIL_SCOPE, GoogleServer, Request, error_page};
use crate::crypto;

const CODE_LIFETIME: Duration = Duration::minutes(10);
const TENANT: &str = "google";

/// The scopes the Google personality knows, with what its consent page says of them.
const KNOWN_SCOPES: &[(&str, &str)] = &[
    (
        GOOGLE_MAIL_SCOPE,
        "Read, compose, send, and permanently delete all your email from Gmail",
    ),
    ("openid", "Associate you with your personal info on Google"),
    ("email", "See your primary Google Account email address"),
    ("profile", "See your personal info"),
];

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct AuthorizeQuery {
    client_id: String,
    response_type: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: String,
    access_type: String,
    prompt: String,
}

pub(super) async fn authorize(
    State(server): State<GoogleServer>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    let Some(client) = server.state.client(&q.client_id) else {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    };
    if !client.redirect_uris.iter().any(|u| u == &q.redirect_uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri_mismatch",
            &format!(
                "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 policy. If you're the app developer, register the redirect URI in the Google Cloud Console. Request details: redirect_uri={}",
                q.redirect_uri
            ),
        );
    }
    if q.response_type != "code" {
        return error_page(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            &format!("Unsupported response_type: {}", q.response_type),
        );
    }
    let scopes: Vec<String> = q.scope.split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: scope",
        );
    }
    let unknown: Vec<&String> = scopes
        .iter()
        .filter(|s| !KNOWN_SCOPES.iter().any(|(k, _)| k == s))
        .collect();
    if !unknown.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!("Some requested scopes were invalid. {{invalid={unknown:?}}}"),
        );
    }
    let code_challenge = match (
        q.code_challenge.as_deref(),
        q.code_challenge_method.as_deref(),
    ) {
        (None, _) => None,
        (Some(c), Some("S256")) => Some(format!("S256:{c}")),
        (Some(c), None | Some("plain")) => Some(format!("plain:{c}")),
        (Some(_), Some(other)) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("Invalid code_challenge_method: {other}"),
            );
        }
    };
    let txn = crypto::random_token();
    server.state.put_pending(
        txn.clone(),
        Pending {
            tenant: TENANT.into(),
            client_id: client.client_id.clone(),
            redirect_uri: q.redirect_uri.clone(),
            scopes,
            state: q.state.clone(),
            nonce: q.nonce.clone(),
            code_challenge,
            user: None,
            expires_at: server.state.now() + CODE_LIFETIME,
            device: None,
        },
    );
    server.state.google().requests.insert(
        txn.clone(),
        Request {
            offline: q.access_type == "offline",
            prompt_consent: q.prompt.split_whitespace().any(|p| p == "consent"),
        },
    );
    sign_in_form(
        TENANT,
        client.name,
        "/google/login".into(),
        txn,
        q.login_hint,
        None,
    )
}

fn expired_request() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "This sign-in request is unknown or has expired. Start again from the application.",
    )
}

pub(super) async fn sign_in(
    State(server): State<GoogleServer>,
    Form(form): Form<SignInForm>,
) -> Response {
    let Some(pending) = server
        .state
        .pending(&form.txn)
        .filter(|p| p.tenant == TENANT)
    else {
        return expired_request();
    };
    let app_name = server
        .state
        .client(&pending.client_id)
        .map(|c| c.name)
        .unwrap_or_default();
    if !server.state.is_google_user(&form.username)
        || !server
            .state
            .check_password(&form.username, &SecretString::from(form.password))
    {
        return sign_in_form(
            TENANT,
            app_name,
            "/google/login".into(),
            form.txn,
            form.username,
            Some("Wrong password, or Couldn't find your Google Account. Try again.".into()),
        );
    }
    let switches = server.state.switches();
    let user = form.username.to_lowercase();
    let domain = user.rsplit('@').next().unwrap_or_default();
    if switches.google_org_internal && !domain.eq_ignore_ascii_case(&switches.google_org_domain) {
        return error_page(
            StatusCode::FORBIDDEN,
            "org_internal",
            &format!(
                "{app_name} can only be used within its organization. This client is restricted to users within its organization."
            ),
        );
    }
    if switches.google_admin_policy_enforced {
        return error_page(
            StatusCode::BAD_REQUEST,
            "admin_policy_enforced",
            "Your administrator has blocked this app. Access to your account data is restricted by policies within your organization.",
        );
    }
    server.state.sign_in_pending(&form.txn, &user);
    let permissions = pending
        .scopes
        .iter()
        .filter_map(|s| KNOWN_SCOPES.iter().find(|(k, _)| k == s).map(|(_, d)| *d))
        .collect();
    consent_form(
        TENANT,
        app_name,
        user,
        permissions,
        "/google/consent".into(),
        form.txn,
    )
}

pub(super) async fn consent(
    State(server): State<GoogleServer>,
    Form(form): Form<ConsentForm>,
) -> Response {
    let Some(pending) = server
        .state
        .take_pending(&form.txn)
        .filter(|p| p.tenant == TENANT)
    else {
        return expired_request();
    };
    let request = server
        .state
        .google()
        .requests
        .remove(&form.txn)
        .unwrap_or_default();
    let Some(user) = pending.user.clone() else {
        return expired_request();
    };
    let issuer = server.issuer();
    let mut params: Vec<(&str, &str)> = Vec::new();
    if form.decision != "accept" {
        params.push(("error", "access_denied"));
        if let Some(state) = pending.state.as_deref() {
            params.push(("state", state));
        }
        params.push(("iss", issuer.as_str()));
        return redirect_with(&pending.redirect_uri, &params);
    }
    let code = format!("4/0A{}", crypto::random_token());
    server.state.google().codes.insert(
        crypto::token_digest(&code),
        Code {
            issued: IssuedCode {
                client_id: pending.client_id.clone(),
                redirect_uri: pending.redirect_uri.clone(),
                user,
                scopes: pending.scopes.clone(),
                nonce: pending.nonce.clone(),
                code_challenge: pending.code_challenge.clone(),
                expires_at: server.state.now() + CODE_LIFETIME,
                redeemed: false,
            },
            request,
        },
    );
    let scope = pending.scopes.join(" ");
    params.push(("code", code.as_str()));
    if let Some(state) = pending.state.as_deref() {
        params.push(("state", state));
    }
    params.push(("scope", scope.as_str()));
    params.push(("authuser", "0"));
    params.push(("prompt", "consent"));
    params.push(("iss", issuer.as_str()));
    redirect_with(&pending.redirect_uri, &params)
}
