//! The authorize endpoint and the pages behind it: the sign-in form and the consent page
//! with **Accept**, ending in a redirect with the code (or an error) to the client, or, for a
//! device code, on a page of the sandbox's own (see `device`).

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use secrecy::SecretString;
use serde::Deserialize;
use time::Duration;

use super::super::{IssuedCode, Pending};
use super::OAuthServer;
use super::errors::{error_page, redirect_error, redirect_with, tenant_not_found};
use super::pages::{KNOWN_SCOPES, SignInPage, render};
use crate::crypto;

const CODE_LIFETIME: Duration = Duration::minutes(10);

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
}

pub(super) async fn authorize(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
    Query(q): Query<AuthorizeQuery>,
) -> Response {
    if tenant != server.tenant {
        return error_page(&server, &tenant, 90002, &tenant_not_found(&tenant));
    }
    if q.client_id.is_empty() {
        return error_page(
            &server,
            &tenant,
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    let Some(client) = server.state.client(&q.client_id) else {
        return error_page(
            &server,
            &tenant,
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                q.client_id, server.tenant
            ),
        );
    };
    if !client
        .redirect_uris
        .iter()
        .any(|uri| uri == &q.redirect_uri)
    {
        return error_page(
            &server,
            &tenant,
            50011,
            &format!(
                "The redirect URI '{}' specified in the request does not match the redirect URIs configured for the application '{}'. Make sure the redirect URI sent in the request matches one added to your application in the Azure portal. Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to fix this.",
                q.redirect_uri, client.client_id
            ),
        );
    }
    let state = q.state.as_deref();
    if q.response_type != "code" {
        return redirect_error(
            &server,
            &q.redirect_uri,
            state,
            "unsupported_response_type",
            700054,
            &format!(
                "response_type '{}' is not enabled for the application.",
                q.response_type
            ),
        );
    }
    let scopes: Vec<String> = q.scope.split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() {
        return redirect_error(
            &server,
            &q.redirect_uri,
            state,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    if let Some(unknown) = scopes
        .iter()
        .find(|s| !KNOWN_SCOPES.iter().any(|(k, _)| k == s))
    {
        return redirect_error(
            &server,
            &q.redirect_uri,
            state,
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope '{unknown}' does not exist."
            ),
        );
    }
    let code_challenge = match (
        q.code_challenge.as_deref(),
        q.code_challenge_method.as_deref(),
    ) {
        (None, _) => None,
        (Some(c), Some("S256")) if (43..=128).contains(&c.len()) => Some(format!("S256:{c}")),
        (Some(c), None | Some("plain")) if (43..=128).contains(&c.len()) => {
            Some(format!("plain:{c}"))
        }
        _ => {
            return redirect_error(
                &server,
                &q.redirect_uri,
                state,
                "invalid_request",
                501491,
                "Invalid size of Code_Challenge parameter.",
            );
        }
    };
    let txn = crypto::random_token();
    server.state.put_pending(
        txn.clone(),
        Pending {
            tenant: tenant.clone(),
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
    render(&SignInPage {
        tenant: tenant.clone(),
        app_name: client.name,
        action: format!("/{tenant}/login"),
        txn,
        login_hint: q.login_hint,
        error: None,
    })
}

fn expired_request(server: &OAuthServer, tenant: &str) -> Response {
    error_page(
        server,
        tenant,
        50058,
        "A silent sign-in request was sent but no user is signed in. Start again from the application: this sign-in request is unknown or has expired.",
    )
}

/// The sign-in page's form (Entra's and Google's pages alike).
#[derive(Deserialize)]
pub(crate) struct SignInForm {
    #[serde(default)]
    pub(crate) txn: String,
    #[serde(default)]
    pub(crate) username: String,
    #[serde(default)]
    pub(crate) password: String,
}

#[derive(Template)]
#[template(path = "sandbox/consent.html")]
struct ConsentPage {
    tenant: String,
    app_name: String,
    user: String,
    permissions: Vec<&'static str>,
    action: String,
    txn: String,
}

pub(super) async fn sign_in(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
    Form(form): Form<SignInForm>,
) -> Response {
    let Some(pending) = server
        .state
        .pending(&form.txn)
        .filter(|p| p.tenant == tenant)
    else {
        return expired_request(&server, &tenant);
    };
    let app_name = server
        .state
        .client(&pending.client_id)
        .map(|c| c.name)
        .unwrap_or_default();
    if !server
        .state
        .check_password(&form.username, &SecretString::from(form.password))
    {
        return render(&SignInPage {
            tenant: tenant.clone(),
            app_name,
            action: format!("/{tenant}/login"),
            txn: form.txn,
            login_hint: form.username,
            error: Some("Your account or password is incorrect. If you don't remember your password, reset it now.".into()),
        });
    }
    server.state.sign_in_pending(&form.txn, &form.username);
    let permissions = pending
        .scopes
        .iter()
        .filter_map(|s| KNOWN_SCOPES.iter().find(|(k, _)| k == s).map(|(_, d)| *d))
        .collect();
    render(&ConsentPage {
        tenant: tenant.clone(),
        app_name,
        user: form.username.to_lowercase(),
        permissions,
        action: format!("/{tenant}/consent"),
        txn: form.txn,
    })
}

/// The consent page's form: Accept or Cancel (Entra's and Google's pages alike).
#[derive(Deserialize)]
pub(crate) struct ConsentForm {
    #[serde(default)]
    pub(crate) txn: String,
    #[serde(default)]
    pub(crate) decision: String,
}

pub(super) async fn consent(
    State(server): State<OAuthServer>,
    Path(tenant): Path<String>,
    Form(form): Form<ConsentForm>,
) -> Response {
    let Some(pending) = server
        .state
        .take_pending(&form.txn)
        .filter(|p| p.tenant == tenant)
    else {
        return expired_request(&server, &tenant);
    };
    let Some(user) = pending.user.clone() else {
        return expired_request(&server, &tenant);
    };
    if let Some(device) = &pending.device {
        let accepted = form.decision == "accept";
        return super::device::consented(&server, &pending, device, &user, accepted);
    }
    if form.decision != "accept" {
        return redirect_error(
            &server,
            &pending.redirect_uri,
            pending.state.as_deref(),
            "access_denied",
            65004,
            "User declined to consent to access the app.",
        );
    }
    let code = format!("0.{}", crypto::random_token());
    server.state.put_code(
        &code,
        IssuedCode {
            client_id: pending.client_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            user,
            scopes: pending.scopes.clone(),
            nonce: pending.nonce.clone(),
            code_challenge: pending.code_challenge.clone(),
            expires_at: server.state.now() + CODE_LIFETIME,
            redeemed: false,
        },
    );
    let issuer = server.issuer();
    let session_state = uuid::Uuid::new_v4().to_string();
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = pending.state.as_deref() {
        params.push(("state", state));
    }
    params.push(("session_state", session_state.as_str()));
    params.push(("iss", issuer.as_str()));
    redirect_with(&pending.redirect_uri, &params)
}

/// The sign-in form, for the sandbox's other personality (Google's), which posts it to
/// `action`.
pub(crate) fn sign_in_form(
    tenant: &str,
    app_name: String,
    action: String,
    txn: String,
    login_hint: String,
    error: Option<String>,
) -> Response {
    render(&SignInPage {
        tenant: tenant.to_owned(),
        app_name,
        action,
        txn,
        login_hint,
        error,
    })
}

/// The consent page with **Accept** and **Cancel**, for the sandbox's other personality.
pub(crate) fn consent_form(
    tenant: &str,
    app_name: String,
    user: String,
    permissions: Vec<&'static str>,
    action: String,
    txn: String,
) -> Response {
    render(&ConsentPage {
        tenant: tenant.to_owned(),
        app_name,
        user,
        permissions,
        action,
        txn,
    })
}
