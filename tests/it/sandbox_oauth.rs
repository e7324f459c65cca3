//! The sandbox's Entra-shaped authorization server, driven over real HTTP by the `oauth2` crate
//! (an independent OAuth client) and a plain HTTP "browser": the whole authorization-code flow
//! with PKCE and `iss`, refresh-token rotation, the sandbox's own error pages, and every
//! token-endpoint switch's exact Entra error.

use herald::sandbox::{RunningSandbox, SMTP_SEND_SCOPE, SandboxClient, Switches};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::helpers::hidden_field;

const REDIRECT: &str = "http://127.0.0.1:8080/web/um/smtp/redirect";
const ANN: &str = "ann@contoso.com";
const ANN_PASSWORD: &str = "ann's sandbox password";

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

struct Fixture {
    sandbox: RunningSandbox,
    app: SandboxClient,
    base: String,
}

impl Fixture {
    async fn start() -> Self {
        // Another host name than Herald's, as Microsoft is another site to the browser.
        let (sandbox, base) = crate::helpers::start_sandbox().await;
        sandbox
            .state
            .add_user(ANN, SecretString::from(ANN_PASSWORD));
        let app = sandbox
            .state
            .register_client("Herald", vec![REDIRECT.into()]);
        Self { sandbox, app, base }
    }

    fn client(&self, auth_type: AuthType) -> Client {
        BasicClient::new(ClientId::new(self.app.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.app.secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(AuthUrl::new(self.sandbox.oauth.authorization_endpoint()).unwrap())
            .set_token_uri(TokenUrl::new(self.sandbox.oauth.token_endpoint()).unwrap())
            .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap())
            .set_auth_type(auth_type)
    }

    fn switch(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.sandbox.state.switches();
        change(&mut switches);
        self.sandbox.state.set_switches(switches);
    }
}

fn http() -> oauth2::reqwest::Client {
    oauth2::reqwest::ClientBuilder::new()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn browser() -> reqwest::Client {
    crate::helpers::http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn scopes() -> Vec<Scope> {
    [
        SMTP_SEND_SCOPE,
        "offline_access",
        "openid",
        "profile",
        "email",
    ]
    .into_iter()
    .map(|s| Scope::new(s.into()))
    .collect()
}

/// The query parameters of a redirect's Location.
fn location_params(response: &reqwest::Response) -> Vec<(String, String)> {
    let location = response
        .headers()
        .get("location")
        .expect("a redirect")
        .to_str()
        .unwrap();
    assert!(location.starts_with(REDIRECT), "redirected to {location}");
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Signs in on the sandbox's form and answers the consent page with `decision`.
async fn walk(fx: &Fixture, auth_url: &str, decision: &str) -> reqwest::Response {
    let browser = browser();
    let page = browser.get(auth_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("value=\"{ANN}\"")),
        "login_hint pre-fills the form: {html}"
    );
    let txn = hidden_field(&html, "txn");
    let wrong = browser
        .post(format!("{}/sandbox/login", fx.base))
        .form(&[
            ("txn", txn.as_str()),
            ("username", ANN),
            ("password", "wrong"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(wrong.contains("Your account or password is incorrect."));
    let consent = browser
        .post(format!("{}/sandbox/login", fx.base))
        .form(&[
            ("txn", txn.as_str()),
            ("username", ANN),
            ("password", ANN_PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        consent.contains("Permissions requested")
            && consent.contains("Send emails from mailboxes using SMTP AUTH."),
        "{consent}"
    );
    assert!(consent.contains(">Accept<") && consent.contains(">Cancel<"));
    browser
        .post(format!("{}/sandbox/consent", fx.base))
        .form(&[("txn", txn.as_str()), ("decision", decision)])
        .send()
        .await
        .unwrap()
}

/// Runs authorize → sign-in → Accept and returns the code and the PKCE verifier.
async fn authorize(fx: &Fixture, client: &Client) -> (String, PkceCodeVerifier) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes())
        .set_pkce_challenge(challenge)
        .add_extra_param("login_hint", ANN)
        .url();
    let response = walk(fx, url.as_str(), "accept").await;
    assert_eq!(response.status(), 303);
    let params = location_params(&response);
    assert_eq!(param(&params, "state"), Some(csrf.secret().as_str()));
    assert_eq!(
        param(&params, "iss"),
        Some(fx.sandbox.oauth.issuer().as_str()),
        "RFC 9207 iss"
    );
    (param(&params, "code").expect("a code").to_owned(), verifier)
}

#[tokio::test]
async fn the_oauth2_crate_completes_authorize_code_token_and_refresh() {
    let fx = Fixture::start().await;
    for auth_type in [AuthType::RequestBody, AuthType::BasicAuth] {
        let client = fx.client(auth_type);
        let (code, verifier) = authorize(&fx, &client).await;
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(verifier)
            .request_async(&http())
            .await
            .expect("code redeemed");
        assert!(token.expires_in().unwrap().as_secs() > 3000);
        assert_eq!(token.scopes().unwrap()[0].as_str(), SMTP_SEND_SCOPE);
        let first_refresh = token
            .refresh_token()
            .expect("offline_access gives a refresh token")
            .clone();

        let refreshed = client
            .exchange_refresh_token(&first_refresh)
            .request_async(&http())
            .await
            .expect("refresh");
        let second_refresh = refreshed
            .refresh_token()
            .expect("a rotated refresh token")
            .clone();
        assert_ne!(
            second_refresh.secret(),
            first_refresh.secret(),
            "rotated on every use"
        );
        assert_ne!(
            refreshed.access_token().secret(),
            token.access_token().secret()
        );
        // The old refresh token stays valid, as in Entra.
        client
            .exchange_refresh_token(&first_refresh)
            .request_async(&http())
            .await
            .expect("old refresh token still works");

        // The access token opens SMTP AUTH XOAUTH2 for the signed-in user.
        let record = fx
            .sandbox
            .state
            .access_token(
                refreshed.access_token().secret(),
                herald::clock::system_now(),
            )
            .unwrap();
        assert_eq!(record.user, ANN);
        assert!(record.scopes.iter().any(|s| s == SMTP_SEND_SCOPE));
    }
    assert_eq!(fx.sandbox.state.token_requests(), 6);
}

#[tokio::test]
async fn the_id_token_is_signed_with_the_published_key_and_names_the_user() {
    let fx = Fixture::start().await;
    let client = fx.client(AuthType::RequestBody);
    let (code, verifier) = authorize(&fx, &client).await;
    let raw: Value = browser()
        .post(fx.sandbox.oauth.token_endpoint())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.secret()),
            ("client_id", fx.app.client_id.as_str()),
            ("client_secret", fx.app.secret.expose_secret()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(raw["token_type"], "Bearer");
    assert!(raw["ext_expires_in"].is_number());
    let discovery: Value = browser()
        .get(format!(
            "{}/.well-known/openid-configuration",
            fx.sandbox.oauth.issuer()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], fx.sandbox.oauth.issuer());
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        true
    );
    let jwks: Value = browser()
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = &jwks["keys"][0];
    let key = jsonwebtoken::DecodingKey::from_rsa_components(
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[fx.app.client_id.as_str()]);
    validation.set_issuer(&[fx.sandbox.oauth.issuer()]);
    let claims =
        jsonwebtoken::decode::<Value>(raw["id_token"].as_str().unwrap(), &key, &validation)
            .expect("valid ID token")
            .claims;
    assert_eq!(claims["preferred_username"], ANN);
}

#[tokio::test]
async fn cancel_at_consent_returns_access_denied_with_aadsts65004() {
    let fx = Fixture::start().await;
    let client = fx.client(AuthType::RequestBody);
    let (url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes())
        .add_extra_param("login_hint", ANN)
        .url();
    let response = walk(&fx, url.as_str(), "cancel").await;
    assert_eq!(response.status(), 303);
    let params = location_params(&response);
    assert_eq!(param(&params, "error"), Some("access_denied"));
    assert!(
        param(&params, "error_description")
            .unwrap()
            .starts_with("AADSTS65004: User declined to consent to access the app.")
    );
    assert_eq!(param(&params, "state"), Some(csrf.secret().as_str()));
    assert!(param(&params, "code").is_none());
}

#[tokio::test]
async fn an_unregistered_redirect_uri_or_unknown_client_ends_on_the_sandbox_error_page() {
    let fx = Fixture::start().await;
    let endpoint = fx.sandbox.oauth.authorization_endpoint();
    let wrong_redirect = browser()
        .get(&endpoint)
        .query(&[
            ("client_id", fx.app.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", "http://127.0.0.1:9999/elsewhere"),
            ("scope", "openid"),
            ("state", "s"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_redirect.status(), 400);
    assert!(
        wrong_redirect.headers().get("location").is_none(),
        "never redirected to the client"
    );
    let html = wrong_redirect.text().await.unwrap();
    assert!(
        html.contains("AADSTS50011: The redirect URI")
            && html.contains("http://127.0.0.1:9999/elsewhere"),
        "{html}"
    );
    assert!(
        html.contains("does not match the redirect URIs configured for the application"),
        "{html}"
    );

    let unknown = browser()
        .get(&endpoint)
        .query(&[
            ("client_id", "00000000-0000-0000-0000-000000000000"),
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    assert!(unknown.headers().get("location").is_none());
    assert!(
        unknown
            .text()
            .await
            .unwrap()
            .contains("AADSTS700016: Application with identifier")
    );
}

/// The error body of a failed token request, as the oauth2 crate parsed it, plus the raw JSON.
async fn raw_token_error(fx: &Fixture, form: &[(&str, &str)]) -> (u16, Value) {
    let response = browser()
        .post(fx.sandbox.oauth.token_endpoint())
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn assert_entra_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("AADSTS{code}: ")),
        "{body}"
    );
    assert_eq!(body["error_codes"][0], code, "{body}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} missing: {body}");
    }
}

#[tokio::test]
async fn a_code_cannot_be_redeemed_twice() {
    let fx = Fixture::start().await;
    let client = fx.client(AuthType::RequestBody);
    let (code, verifier) = authorize(&fx, &client).await;
    let verifier_text = verifier.secret().clone();
    client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .unwrap();
    let err = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier_text.clone()))
        .request_async(&http())
        .await
        .unwrap_err();
    match err {
        RequestTokenError::ServerResponse(e) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("unexpected {other:?}"),
    }
    let (status, body) = raw_token_error(
        &fx,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier_text),
            ("client_id", &fx.app.client_id),
            ("client_secret", fx.app.secret.expose_secret()),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_grant", 54005);
}

#[tokio::test]
async fn a_wrong_code_verifier_is_refused() {
    let fx = Fixture::start().await;
    let client = fx.client(AuthType::RequestBody);
    let (code, _) = authorize(&fx, &client).await;
    let (_, wrong) = PkceCodeChallenge::new_random_sha256();
    let (status, body) = raw_token_error(
        &fx,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", wrong.secret()),
            ("client_id", &fx.app.client_id),
            ("client_secret", fx.app.secret.expose_secret()),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_entra_error(&body, "invalid_grant", 501481);
}

#[tokio::test]
async fn client_secret_switches_give_entras_invalid_client_errors() {
    let fx = Fixture::start().await;
    let form = |secret: &str| {
        vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("refresh_token".to_owned(), "1.whatever".to_owned()),
            ("client_id".to_owned(), fx.app.client_id.clone()),
            ("client_secret".to_owned(), secret.to_owned()),
        ]
    };
    let endpoint = fx.sandbox.oauth.token_endpoint();
    let post = |form: Vec<(String, String)>| {
        let endpoint = endpoint.clone();
        async move {
            let response = browser().post(endpoint).form(&form).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    // The Secret ID is not the secret: Entra answers 7000215.
    let (status, body) = post(form(&fx.app.secret_id)).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 7000215);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not the client secret ID")
    );

    let (status, body) = post(form("")).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 7000218);

    fx.switch(|s| s.client_secret_expired = true);
    let (status, body) = post(form(fx.app.secret.expose_secret())).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 7000222);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("are expired")
    );

    fx.switch(|s| {
        s.client_secret_expired = false;
        s.client_secret_invalid = true;
    });
    let (status, body) = post(form(fx.app.secret.expose_secret())).await;
    assert_eq!(status, 401);
    assert_entra_error(&body, "invalid_client", 7000215);
}

#[tokio::test]
async fn refresh_switches_give_entras_grant_errors() {
    let fx = Fixture::start().await;
    let client = fx.client(AuthType::RequestBody);
    let (code, verifier) = authorize(&fx, &client).await;
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&http())
        .await
        .unwrap();
    let refresh = token.refresh_token().unwrap().secret().clone();
    type Case = (fn(&mut Switches), &'static str, u64);
    let cases: [Case; 4] = [
        (|s| s.refresh_token_expired = true, "invalid_grant", 700082),
        (|s| s.grant_revoked = true, "invalid_grant", 50173),
        (|s| s.consent_required = true, "invalid_grant", 65001),
        (|s| s.mfa_required = true, "interaction_required", 50076),
    ];
    for (set, error, code) in cases {
        fx.sandbox.state.set_switches(Switches::default());
        fx.switch(set);
        let (status, body) = raw_token_error(
            &fx,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &fx.app.client_id),
                ("client_secret", fx.app.secret.expose_secret()),
            ],
        )
        .await;
        assert_eq!(status, 400);
        assert_entra_error(&body, error, code);
    }
    fx.sandbox.state.set_switches(Switches::default());
    client
        .exchange_refresh_token(&RefreshToken::new(refresh))
        .request_async(&http())
        .await
        .expect("works again once the switch is off");
}

#[tokio::test]
async fn the_control_api_sets_switches_and_shows_counters() {
    let fx = Fixture::start().await;
    let switches = Switches {
        smtp_auth_disabled: true,
        access_token_lifetime_secs: 60,
        ..Switches::default()
    };
    let put = browser()
        .put(format!("{}/_sandbox/switches", fx.base))
        .json(&switches)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(fx.sandbox.state.switches(), switches);
    let unknown = browser()
        .put(format!("{}/_sandbox/switches", fx.base))
        .json(&serde_json::json!({"no_such_switch": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    let counters: Value = browser()
        .get(format!("{}/_sandbox/counters", fx.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["token_requests"], 0);
    let ca = browser()
        .get(format!("{}/_sandbox/ca.pem", fx.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
}
