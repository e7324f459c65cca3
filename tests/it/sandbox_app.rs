//! The sandbox's app-only access (OAuth 2.0 client credentials), over real HTTP and SMTP: the
//! token endpoint's answers and each of Entra's errors, the application permissions granted
//! through the control API, and how Exchange scopes an app over Graph and over SMTP.

use herald::sandbox::{
    APP_MAIL_SEND, APP_SMTP_SEND_AS_APP, EXCHANGE_RESOURCE, GRAPH_MAIL_SEND_SCOPE, GRAPH_RESOURCE,
    RunningSandbox, SandboxClient, Switches,
};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const ANN: &str = "ann@contoso.com";
const SALES: &str = "sales@contoso.com";
const GRAPH_DEFAULT: &str = "https://graph.microsoft.com/.default";
const EXCHANGE_DEFAULT: &str = "https://outlook.office365.com/.default";

struct Fixture {
    sandbox: RunningSandbox,
    app: SandboxClient,
    base: String,
    http: reqwest::Client,
}

impl Fixture {
    async fn start() -> Self {
        let (sandbox, base) = crate::helpers::start_sandbox().await;
        sandbox
            .state
            .add_user(ANN, SecretString::from("ann's password"));
        let app = sandbox.state.register_client("Herald daemon", vec![]);
        let http = crate::helpers::http_builder().build().unwrap();
        Self {
            sandbox,
            app,
            base,
            http,
        }
    }

    fn secret(&self) -> String {
        self.app.secret.expose_secret().to_owned()
    }

    fn switch(&self, change: impl FnOnce(&mut Switches)) {
        let mut switches = self.sandbox.state.switches();
        change(&mut switches);
        self.sandbox.state.set_switches(switches);
    }

    /// A client credentials request (client_secret_post) to `tenant`'s token endpoint.
    async fn request(&self, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn token_response(&self, scope: &str) -> (u16, Value) {
        let secret = self.secret();
        self.request(
            "sandbox",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &self.app.client_id),
                ("client_secret", &secret),
                ("scope", scope),
            ],
        )
        .await
    }

    /// An app-only token for the `.default` scope, as a daemon gets it.
    async fn app_token(&self, scope: &str) -> String {
        let (status, body) = self.token_response(scope).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .put(format!(
                "{}/_sandbox/apps/{}/{path}",
                self.base, self.app.client_id
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    async fn send_graph(&self, path: &str, token: &str, from: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1.0/{path}/sendMail", self.base))
            .bearer_auth(token)
            .json(&json!({
                "message": {
                    "subject": "From the daemon",
                    "body": {"contentType": "Text", "content": "Hi"},
                    "from": {"emailAddress": {"address": from}},
                    "toRecipients": [{"emailAddress": {"address": "bob@example.com"}}],
                },
            }))
            .send()
            .await
            .unwrap()
    }

    async fn send_smtp(&self, user: &str, token: &str) -> Result<(), String> {
        let tls = TlsParameters::builder("localhost".into())
            .add_root_certificate(
                Certificate::from_pem(self.sandbox.ca.ca_pem().as_bytes()).unwrap(),
            )
            .build_rustls()
            .unwrap();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.sandbox.smtp_addr.port())
            .tls(Tls::Required(tls))
            .credentials(Credentials::new(user.into(), token.into()))
            .authentication(vec![Mechanism::Xoauth2])
            .build();
        let message = Message::builder()
            .from(user.parse().unwrap())
            .to("bob@example.com".parse().unwrap())
            .subject("From the daemon")
            .body(String::from("Hi Bob"))
            .unwrap();
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Asserts Entra's error shape and returns its `error` and first code.
fn entra_error(status: u16, body: &Value, expected_status: u16) -> (String, u64) {
    assert_eq!(status, expected_status, "{body}");
    let code = body["error_codes"][0].as_u64().unwrap();
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    for part in ["Trace ID: ", "Correlation ID: ", "Timestamp: "] {
        assert!(description.contains(part), "{description}");
    }
    for id in ["trace_id", "correlation_id"] {
        uuid::Uuid::parse_str(body[id].as_str().unwrap()).unwrap();
    }
    assert!(body["timestamp"].as_str().is_some());
    (body["error"].as_str().unwrap().to_owned(), code)
}

#[tokio::test]
async fn client_credentials_issue_a_token_for_each_resource_with_the_granted_roles() {
    let fx = Fixture::start().await;
    // Without any permission Entra still issues the token: it carries no roles.
    let (status, body) = fx.token_response(GRAPH_DEFAULT).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    let now = fx.sandbox.state.now();
    let record = fx
        .sandbox
        .state
        .access_token(body["access_token"].as_str().unwrap(), now)
        .unwrap();
    assert!(record.app_only);
    assert_eq!(record.audience, GRAPH_RESOURCE);
    assert!(record.roles.is_empty());
    assert_eq!(fx.sandbox.state.token_requests(), 1);

    // Admin consent through the control API; the roles are those of the token's resource.
    let app = fx
        .control("permissions", json!([APP_MAIL_SEND, APP_SMTP_SEND_AS_APP]))
        .await;
    assert_eq!(app["permissions"], json!(["Mail.Send", "SMTP.SendAsApp"]));
    let graph = fx.app_token(GRAPH_DEFAULT).await;
    let record = fx.sandbox.state.access_token(&graph, now).unwrap();
    assert_eq!(record.roles, [APP_MAIL_SEND]);

    // HTTP Basic (client_secret_basic) works too, for Exchange.
    let response = fx
        .http
        .post(fx.sandbox.oauth.token_endpoint())
        .basic_auth(&fx.app.client_id, Some(fx.secret()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", EXCHANGE_DEFAULT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let record = fx
        .sandbox
        .state
        .access_token(body["access_token"].as_str().unwrap(), now)
        .unwrap();
    assert_eq!(record.audience, EXCHANGE_RESOURCE);
    assert_eq!(record.roles, [APP_SMTP_SEND_AS_APP]);
    assert!(record.user.is_empty());
    assert_eq!(fx.sandbox.state.token_requests(), 3);

    // Unknown permissions are refused by the control API.
    let response = fx
        .http
        .put(format!(
            "{}/_sandbox/apps/{}/permissions",
            fx.base, fx.app.client_id
        ))
        .json(&json!(["Mail.ReadWrite.Everything"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn each_client_credentials_error_has_its_aadsts_code() {
    let fx = Fixture::start().await;
    let secret = fx.secret();
    let id = fx.app.client_id.clone();
    let ask = |tenant: &'static str, client_id: String, secret: String, scope: &'static str| {
        let fx = &fx;
        async move {
            fx.request(
                tenant,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id),
                    ("client_secret", &secret),
                    ("scope", scope),
                ],
            )
            .await
        }
    };

    for tenant in ["common", "organizations"] {
        let (status, body) = ask(tenant, id.clone(), secret.clone(), GRAPH_DEFAULT).await;
        assert_eq!(
            entra_error(status, &body, 400),
            ("invalid_request".into(), 9001023)
        );
    }
    let (status, body) = ask("fabrikam", id.clone(), secret.clone(), GRAPH_DEFAULT).await;
    assert_eq!(
        entra_error(status, &body, 400),
        ("invalid_request".into(), 90002)
    );
    let (status, body) = ask(
        "sandbox",
        uuid::Uuid::new_v4().to_string(),
        secret.clone(),
        GRAPH_DEFAULT,
    )
    .await;
    assert_eq!(
        entra_error(status, &body, 400),
        ("unauthorized_client".into(), 700016)
    );
    let (status, body) = ask("sandbox", id.clone(), "wrong".into(), GRAPH_DEFAULT).await;
    assert_eq!(
        entra_error(status, &body, 401),
        ("invalid_client".into(), 7000215)
    );
    for scope in [
        "https://graph.microsoft.com/Mail.Send",
        "https://graph.microsoft.com/.default https://outlook.office365.com/.default",
    ] {
        let (status, body) = ask("sandbox", id.clone(), secret.clone(), scope).await;
        assert_eq!(
            entra_error(status, &body, 400),
            ("invalid_scope".into(), 1002012)
        );
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("Client credential flows must have a scope value with /.default")
        );
    }

    let (status, body) = ask("sandbox", id.clone(), secret.clone(), "").await;
    assert_eq!(
        entra_error(status, &body, 400),
        ("invalid_request".into(), 900144)
    );
    let (status, body) = ask(
        "sandbox",
        id.clone(),
        secret.clone(),
        "api://contoso/.default",
    )
    .await;
    assert_eq!(
        entra_error(status, &body, 400),
        ("invalid_resource".into(), 500011)
    );
    // A client assertion that is no JWT at all (the certificate checks: tests/it/certificates.rs).
    let (status, body) = fx
        .request(
            "sandbox",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", "eyJ.eyJ.sig"),
                ("scope", GRAPH_DEFAULT),
            ],
        )
        .await;
    assert_eq!(
        entra_error(status, &body, 401),
        ("invalid_client".into(), 50027)
    );

    fx.switch(|s| s.client_secret_invalid = true);
    let (status, body) = ask("sandbox", id.clone(), secret.clone(), GRAPH_DEFAULT).await;
    assert_eq!(
        entra_error(status, &body, 401),
        ("invalid_client".into(), 7000215)
    );
    fx.switch(|s| {
        s.client_secret_invalid = false;
        s.client_secret_expired = true;
    });
    let (status, body) = ask("sandbox", id.clone(), secret.clone(), GRAPH_DEFAULT).await;
    assert_eq!(
        entra_error(status, &body, 401),
        ("invalid_client".into(), 7000222)
    );
    fx.switch(|s| s.client_secret_expired = false);

    let app = fx.control("disabled", json!(true)).await;
    assert_eq!(app["disabled"], true);
    let (status, body) = ask("sandbox", id.clone(), secret.clone(), GRAPH_DEFAULT).await;
    assert_eq!(
        entra_error(status, &body, 400),
        ("unauthorized_client".into(), 7000112)
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(&format!("Application '{id}'"))
    );
    fx.control("disabled", json!(false)).await;
    let (status, _) = ask("sandbox", id.clone(), secret.clone(), GRAPH_DEFAULT).await;
    assert_eq!(status, 200);
    // Every request was counted, refused or not.
    assert_eq!(fx.sandbox.state.token_requests(), 14);
}

#[tokio::test]
async fn graph_lets_an_app_with_mail_send_send_as_the_mailboxes_in_its_scope() {
    let fx = Fixture::start().await;
    let no_role = fx.app_token(GRAPH_DEFAULT).await;
    let response = fx.send_graph(&format!("users/{ANN}"), &no_role, ANN).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");
    assert_eq!(
        body["error"]["message"],
        "Access is denied. Check credentials and try again."
    );

    fx.control("permissions", json!([APP_MAIL_SEND])).await;
    let token = fx.app_token(GRAPH_DEFAULT).await;
    let response = fx.send_graph(&format!("users/{ANN}"), &token, ANN).await;
    assert_eq!(response.status(), 202);
    let messages = fx.sandbox.state.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].mechanism, "graph");
    assert_eq!(messages[0].user, ANN);
    assert_eq!(messages[0].mail_from, ANN);
    assert_eq!(messages[0].rcpt_to, ["bob@example.com"]);

    // /me has no meaning without a user.
    let response = fx.send_graph("me", &token, ANN).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "BadRequest");
    assert_eq!(
        body["error"]["message"],
        "/me request is only valid with delegated authentication flow."
    );

    // RBAC for Applications limits it to the sales mailbox.
    let app = fx.control("limited_to", json!([SALES])).await;
    assert_eq!(app["limited_to"], json!([SALES]));
    let response = fx.send_graph(&format!("users/{ANN}"), &token, ANN).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");
    assert_eq!(
        body["error"]["message"],
        "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings."
    );
    let response = fx
        .send_graph(&format!("users/{SALES}"), &token, SALES)
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(fx.sandbox.state.messages()[1].user, SALES);

    // The mailbox switches apply as for delegated tokens.
    fx.switch(|s| s.graph_disabled_mailboxes = vec![SALES.into()]);
    let response = fx
        .send_graph(&format!("users/{SALES}"), &token, SALES)
        .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "MailboxNotEnabledForRESTAPI");

    // An Exchange token is not for Graph.
    fx.control("permissions", json!([APP_SMTP_SEND_AS_APP]))
        .await;
    let exchange = fx.app_token(EXCHANGE_DEFAULT).await;
    let response = fx.send_graph(&format!("users/{ANN}"), &exchange, ANN).await;
    assert_eq!(response.status(), 401);
    assert_eq!(fx.sandbox.state.messages().len(), 2);
}

#[tokio::test]
async fn smtp_lets_an_app_in_only_to_the_mailboxes_its_service_principal_has() {
    let fx = Fixture::start().await;
    fx.control("permissions", json!([APP_MAIL_SEND, APP_SMTP_SEND_AS_APP]))
        .await;
    let token = fx.app_token(EXCHANGE_DEFAULT).await;

    // No Add-MailboxPermission yet.
    let err = fx.send_smtp(ANN, &token).await.unwrap_err();
    assert!(err.contains("5.7.3 Authentication unsuccessful"), "{err}");

    let app = fx.control("mailboxes", json!(["Ann@Contoso.com"])).await;
    assert_eq!(app["mailboxes"], json!([ANN]));
    fx.send_smtp(ANN, &token).await.unwrap();
    let messages = fx.sandbox.state.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].user, ANN);
    assert_eq!(messages[0].mechanism, "XOAUTH2");
    assert_eq!(messages[0].rcpt_to, ["bob@example.com"]);

    // Only that mailbox.
    let err = fx.send_smtp(SALES, &token).await.unwrap_err();
    assert!(err.contains("5.7.3"), "{err}");

    // A Graph token, app-only or delegated, is not for Exchange.
    let graph = fx.app_token(GRAPH_DEFAULT).await;
    let err = fx.send_smtp(ANN, &graph).await.unwrap_err();
    assert!(err.contains("5.7.3"), "{err}");
    let (delegated, _) = fx.sandbox.state.issue_access_token(
        ANN,
        &fx.app.client_id,
        vec![GRAPH_MAIL_SEND_SCOPE.into()],
        fx.sandbox.state.now(),
    );
    let err = fx
        .send_smtp(ANN, delegated.expose_secret())
        .await
        .unwrap_err();
    assert!(err.contains("5.7.3"), "{err}");

    // An Exchange token without SMTP.SendAsApp is refused even for a granted mailbox.
    fx.control("permissions", json!([APP_MAIL_SEND])).await;
    let no_role = fx.app_token(EXCHANGE_DEFAULT).await;
    let err = fx.send_smtp(ANN, &no_role).await.unwrap_err();
    assert!(err.contains("5.7.3"), "{err}");
    assert_eq!(fx.sandbox.state.messages().len(), 1);
}
