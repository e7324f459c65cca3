//! The device authorization grant (RFC 8628) as Entra ID offers it: `POST
//! /{tenant}/oauth2/v2.0/devicecode` gives a device code, a nine-character user code,
//! `verification_uri` = `{base}/devicelogin`, `expires_in` 900, `interval` 5 and a `message`
//! (no `verification_uri_complete`, as at Microsoft); `/devicelogin` is where a person enters
//! the code, then signs in and answers the consent page that the code flow uses; the token
//! endpoint's `urn:ietf:params:oauth:grant-type:device_code` answers `authorization_pending`
//! (AADSTS70016), `slow_down`, `authorization_declined`, `expired_token` (AADSTS70019) and
//! `bad_verification_code`, then issues tokens as for a code.
//!
//! Entra documents the error names; the AADSTS numbers of `authorization_declined` and
//! `bad_verification_code` are not documented, and the sandbox gives both AADSTS70000 (the
//! generic invalid-grant code), so Herald must decide on the names, as RFC 8628 says.

use askama::Template;
use axum::Form;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::super::Pending;
use super::super::devices::{Decision, PollAnswer};
use super::OAuthServer;
use super::errors::{tenant_not_found, token_error};
use super::issue::issue_tokens;
use super::pages::{KNOWN_SCOPES, SignInPage, render};
use crate::crypto;

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DeviceCodeForm {
    client_id: String,
    scope: String,
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`.
pub(super) async fn device_code(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
    Form(form): Form<DeviceCodeForm>,
) -> Response {
    let bad = |error, code, message: &str| {
        token_error(&server, StatusCode::BAD_REQUEST, error, code, message)
    };
    if tenant != server.tenant {
        return bad("invalid_request", 90002, &tenant_not_found(&tenant));
    }
    if form.client_id.is_empty() {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    if server.state.client(&form.client_id).is_none() {
        return bad(
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                form.client_id, server.tenant
            ),
        );
    }
    let scopes: Vec<String> = form.scope.split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    if let Some(unknown) = scopes
        .iter()
        .find(|s| !KNOWN_SCOPES.iter().any(|(k, _)| k == s))
    {
        return bad(
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope '{unknown}' does not exist."
            ),
        );
    }
    let switches = server.state.switches();
    let lifetime = switches.device_code_lifetime_secs.max(1);
    let (device_code, grant) = server.state.issue_device_code(
        &form.client_id,
        scopes,
        time::Duration::seconds(lifetime),
        switches.device_interval_secs,
    );
    let verification_uri = format!("{}/devicelogin", server.base_url);
    let body = json!({
        "user_code": grant.user_code,
        "device_code": device_code,
        "verification_uri": verification_uri,
        "expires_in": lifetime,
        "interval": grant.interval_secs,
        "message": format!(
            "To sign in, use a web browser to open the page {verification_uri} and enter the code {} to authenticate.",
            grant.user_code
        ),
    });
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "sandbox/devicelogin.html")]
struct CodePage {
    tenant: String,
    typed: String,
    error: Option<String>,
}

/// `GET /devicelogin`: the page where a person enters the code.
pub(super) async fn device_login(State(server): State<OAuthServer>) -> Response {
    render(&CodePage {
        tenant: server.tenant.clone(),
        typed: String::new(),
        error: None,
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CodeForm {
    otc: String,
}

/// `POST /devicelogin`: the code entered; on to the sign-in form of the code flow.
pub(super) async fn enter_code(
    State(server): State<OAuthServer>,
    Form(form): Form<CodeForm>,
) -> Response {
    let Some((digest, grant)) = server.state.device_by_user_code(&form.otc) else {
        return render(&CodePage {
            tenant: server.tenant.clone(),
            typed: form.otc,
            error: Some(
                "That code didn't work. Check the code and try again, or it may have expired."
                    .into(),
            ),
        });
    };
    let app_name = server
        .state
        .client(&grant.client_id)
        .map(|c| c.name)
        .unwrap_or_default();
    let txn = crypto::random_token();
    server.state.put_pending(
        txn.clone(),
        Pending {
            tenant: server.tenant.clone(),
            client_id: grant.client_id.clone(),
            redirect_uri: String::new(),
            scopes: grant.scopes.clone(),
            state: None,
            nonce: None,
            code_challenge: None,
            user: None,
            expires_at: grant.expires_at,
            device: Some(digest),
        },
    );
    render(&SignInPage {
        tenant: server.tenant.clone(),
        app_name,
        action: format!("/{}/login", server.tenant),
        txn,
        login_hint: String::new(),
        error: None,
    })
}

#[derive(Template)]
#[template(path = "sandbox/device_done.html")]
struct DonePage {
    tenant: String,
    heading: String,
    message: String,
}

/// The consent page's answer for a device code: recorded for the next poll, and a page that
/// says the person may close the window.
pub(super) fn consented(
    server: &OAuthServer,
    pending: &Pending,
    digest: &str,
    user: &str,
    accepted: bool,
) -> Response {
    let app_name = server
        .state
        .client(&pending.client_id)
        .map(|c| c.name)
        .unwrap_or_default();
    let (decision, heading, message) = if accepted {
        (
            Decision::Approved(user.to_owned()),
            "You're signed in".to_owned(),
            format!(
                "You have signed in to the {app_name} application on your device. You may now close this window."
            ),
        )
    } else {
        (
            Decision::Declined,
            "Sign-in declined".to_owned(),
            format!("You declined to sign in to {app_name}. You may now close this window."),
        )
    };
    server.state.decide_device(digest, decision);
    render(&DonePage {
        tenant: pending.tenant.clone(),
        heading,
        message,
    })
}

/// The token endpoint's device code grant, for an authenticated client.
pub(super) fn redeem_device_code(
    server: &OAuthServer,
    client_id: &str,
    device_code: Option<&str>,
) -> Response {
    let bad = |error, code, message: &str| {
        token_error(server, StatusCode::BAD_REQUEST, error, code, message)
    };
    let Some(device_code) = device_code.filter(|c| !c.is_empty()) else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'device_code'.",
        );
    };
    let slow_down = server.state.take_device_slow_down();
    match server.state.poll_device(device_code, client_id, slow_down) {
        PollAnswer::Approved { user, scopes } => {
            issue_tokens(server, client_id, &user, &scopes, None)
        }
        PollAnswer::Pending => bad(
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        ),
        PollAnswer::SlowDown => bad(
            "slow_down",
            70016,
            "OAuth 2.0 device flow error. The client is polling too often: wait 5 seconds longer between requests.",
        ),
        PollAnswer::Declined => bad(
            "authorization_declined",
            70000,
            "The end user denied the authorization request.",
        ),
        PollAnswer::Expired => bad("expired_token", 70019, "Verification code expired."),
        PollAnswer::Spent => bad(
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        ),
        PollAnswer::Unknown => bad(
            "bad_verification_code",
            70000,
            "The device code is not recognized.",
        ),
    }
}
