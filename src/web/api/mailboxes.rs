//! `/api/v1/mailboxes`: the accounts an organization sends from. Secrets (client secret,
//! password) are write-only: no response ever carries them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::ListParams;
use crate::domain::MailboxId;
use crate::domain::mailbox::{
    AuthKind, CertificateInfo, ClientAuth, Cloud, CredentialKind, ExpirySource, Mailbox,
    MailboxStatus, Provider, Security, StatusReason, TransportKind, secret_fields,
};
use crate::domain::message::{LimitOverrides, Limits};
use crate::services::mailboxes::{self, MailboxDraft, MailboxPatch, Policy};
use crate::services::views;
use crate::web::AppState;
use crate::web::auth::Principal;
use crate::web::error::{ApiError, Problem};
use crate::web::extract::{ApiJson, ApiQuery};

/// A mailbox as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct MailboxOut {
    pub id: String,
    pub name: String,
    pub auth: AuthKind,
    pub provider: Provider,
    pub tenant: Option<String>,
    /// The SMTP server ("Host Name").
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The mailbox address: the SASL user and the From address.
    pub username: String,
    pub from_name: Option<String>,
    /// The account that signs in at the provider (sent as `login_hint`).
    pub sign_in_account: String,
    pub reply_to: Option<String>,
    pub signature: Option<String>,
    /// The organization's default mailbox.
    pub default: bool,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_auth: ClientAuth,
    pub scopes: Vec<String>,
    pub issuer: Option<String>,
    /// The client secret's expiry (`YYYY-MM-DD`); null when unknown, as after a new secret
    /// given without its date.
    pub client_secret_expires_at: Option<String>,
    /// Where the expiry came from: `typed`, or `microsoft` (read from the app registration
    /// with Application.Read.All); null without a date.
    pub client_secret_expiry_source: Option<ExpirySource>,
    /// Whether a client secret is stored (the secret itself is never shown); for a Google
    /// mailbox with `credential: app`, the service account's JSON key.
    pub has_client_secret: bool,
    /// Whether a next client secret waits to take over when the current one is refused.
    pub has_next_client_secret: bool,
    /// Whether a password is stored (the password itself is never shown).
    pub has_password: bool,
    /// The Redirect URI to register in the app: one for the whole installation.
    pub redirect_uri: String,
    pub status: MailboxStatus,
    pub status_reason: Option<StatusReason>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub verified_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub token_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// This mailbox's overrides of the provider's sending limits.
    pub limits: LimitOverrides,
    /// The limits Herald sends under: the provider's, with the overrides.
    pub effective_limits: Limits,
    /// How messages reach the provider: `smtp` or `graph` (Microsoft Graph `sendMail`, which
    /// works where SMTP AUTH is turned off).
    pub transport: TransportKind,
    /// Microsoft Graph's address, when the mailbox sends with Graph.
    pub graph_url: Option<String>,
    /// Graph keeps a copy of each message in Sent Items.
    pub save_to_sent_items: bool,
    /// `delegated` (a person signs in: Authorize), `app` (the app's own token, OAuth 2.0 client
    /// credentials: Verify, no sign-in) or `password`.
    pub credential: CredentialKind,
    /// Microsoft's cloud: `global`, `usgov`, `dod` or `china`.
    pub cloud: Cloud,
    /// The certificate the app signs in with, when `client_auth` is `certificate`: upload it to
    /// the app registration (download: `GET …/certificate`). Its private key never leaves Herald.
    pub certificate: Option<CertificateOut>,
    /// A renewed certificate waiting to take over (`POST …/certificate/renew`; download:
    /// `GET …/certificate?renewed=true`).
    pub next_certificate: Option<CertificateOut>,
}

/// A certificate as the API shows it (public: no key).
#[derive(Serialize, ToSchema)]
pub struct CertificateOut {
    /// The SHA-1 thumbprint in hex, as the Azure portal lists it under Certificates.
    pub thumbprint: String,
    /// The SHA-256 thumbprint (base64url), sent as the assertion's `x5t#S256`.
    pub thumbprint_sha256: String,
    pub subject: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// When Microsoft stops accepting it; Herald warns 30, 7 and 1 days ahead.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl From<&CertificateInfo> for CertificateOut {
    fn from(c: &CertificateInfo) -> Self {
        Self {
            thumbprint: c.thumbprint_sha1.clone(),
            thumbprint_sha256: c.thumbprint_sha256.clone(),
            subject: c.subject.clone(),
            not_before: c.not_before,
            expires_at: c.not_after,
        }
    }
}

/// `{ items, next_cursor }` of mailboxes.
#[derive(Serialize, ToSchema)]
pub struct MailboxList {
    pub items: Vec<MailboxOut>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

pub(super) async fn render(state: &AppState, mailbox: Mailbox) -> Result<MailboxOut, ApiError> {
    let owner = mailbox.id.to_string();
    let has_client_secret =
        views::has_secret(&state.access.store, &owner, secret_fields::CLIENT_SECRET).await?;
    let has_password =
        views::has_secret(&state.access.store, &owner, secret_fields::PASSWORD).await?;
    let has_next_client_secret = views::has_secret(
        &state.access.store,
        &owner,
        secret_fields::NEXT_CLIENT_SECRET,
    )
    .await?;
    let effective_limits = mailbox.effective_limits();
    Ok(MailboxOut {
        id: owner,
        name: mailbox.name,
        auth: mailbox.auth,
        provider: mailbox.provider,
        tenant: mailbox.tenant,
        host: mailbox.host,
        port: mailbox.port,
        security: mailbox.security,
        username: mailbox.username,
        from_name: mailbox.from_name,
        sign_in_account: mailbox.sign_in_account,
        reply_to: mailbox.reply_to,
        signature: mailbox.signature,
        default: mailbox.is_default,
        authorization_url: mailbox.authorization_url,
        token_url: mailbox.token_url,
        client_id: mailbox.client_id,
        client_auth: mailbox.client_auth,
        scopes: mailbox.scopes,
        issuer: mailbox.issuer,
        client_secret_expires_at: mailbox.client_secret_expires_at.map(|d| d.to_string()),
        client_secret_expiry_source: mailbox
            .client_secret_expires_at
            .map(|_| mailbox.client_secret_expiry_source),
        has_client_secret,
        has_next_client_secret,
        has_password,
        redirect_uri: state.access.config.redirect_uri(),
        status: mailbox.status,
        status_reason: mailbox.status_reason,
        verified_at: mailbox.verified_at,
        token_expires_at: mailbox.token_expires_at,
        created_at: mailbox.created_at,
        updated_at: mailbox.updated_at,
        effective_limits,
        limits: mailbox.limits,
        transport: mailbox.transport,
        graph_url: mailbox.graph_url,
        save_to_sent_items: mailbox.save_to_sent_items,
        credential: mailbox.credential,
        cloud: mailbox.cloud,
        certificate: mailbox.certificate.as_ref().map(CertificateOut::from),
        next_certificate: mailbox.next_certificate.as_ref().map(CertificateOut::from),
    })
}

/// A new mailbox. Provider presets fill what is left out: Microsoft 365 from `tenant`
/// (endpoints, `smtp.office365.com:587` STARTTLS, the SMTP.Send scopes), Google, or the sandbox.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Sales", "auth": "basic", "host": "smtp.example.com", "port": 587, "security": "starttls", "username": "sales@example.com", "password": "an app password"}))]
pub struct CreateMailbox {
    pub name: Option<String>,
    /// `oauth2` or `basic`.
    pub auth: Option<String>,
    /// `microsoft`, `google`, `custom` or `sandbox` (while the sandbox runs). Default `custom`.
    pub provider: Option<String>,
    pub tenant: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    /// `starttls` (default), `tls` or `none` (development only).
    pub security: Option<String>,
    pub username: Option<String>,
    pub from_name: Option<String>,
    pub sign_in_account: Option<String>,
    pub reply_to: Option<String>,
    pub signature: Option<String>,
    pub default: Option<bool>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    /// The client secret's Value (not its Secret ID). Write-only.
    #[schema(value_type = Option<String>, format = Password)]
    pub client_secret: Option<SecretString>,
    /// A second secret's Value, kept beside the current one during a rotation: Herald switches
    /// to it when Microsoft refuses the current one (expired or removed). Write-only.
    #[schema(value_type = Option<String>, format = Password)]
    pub next_client_secret: Option<SecretString>,
    /// Google with `credential: app`: the service account's JSON key (the downloaded file's
    /// text), with domain-wide delegation for `https://mail.google.com/`. It fills `client_id`
    /// and `token_url`. Write-only, sealed in the client secret's place.
    #[schema(value_type = Option<String>, format = Password)]
    pub service_account_key: Option<SecretString>,
    /// How the app proves itself at the token endpoint: `secret` (default: the client secret in
    /// the request body), `basic` (the secret in HTTP Basic) or `certificate` (`private_key_jwt`:
    /// Herald makes a key pair and a certificate to upload to the app registration, or takes
    /// `certificate_pem` with `private_key_pem`). `post` is read as `secret`.
    pub client_auth: Option<String>,
    /// An existing certificate (PEM) to sign in with, instead of one Herald makes.
    pub certificate_pem: Option<String>,
    /// Microsoft's cloud, for the Microsoft provider: `global` (default), `usgov` (GCC High),
    /// `dod` or `china` (21Vianet). It sets the sign-in host, Graph's host, the SMTP host and
    /// the scopes' resources together.
    pub cloud: Option<String>,
    /// The certificate's private key: unencrypted PKCS#8 PEM (`BEGIN PRIVATE KEY`), RSA 2048
    /// bits or more. Write-only.
    #[schema(value_type = Option<String>, format = Password)]
    pub private_key_pem: Option<SecretString>,
    /// The scopes to ask for; the preset's when left out. Adding
    /// `https://graph.microsoft.com/Application.Read.All` (a delegated permission an admin
    /// consents to) lets Herald read the client secret's expiry from the app registration
    /// instead of having it typed; app-only mailboxes need the application permission instead.
    pub scopes: Option<Vec<String>>,
    pub issuer: Option<String>,
    /// `YYYY-MM-DD`.
    pub client_secret_expires_at: Option<String>,
    /// For basic mailboxes. Write-only.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// Overrides of the provider's sending limits; a limit left out keeps the provider's.
    pub limits: Option<LimitOverrides>,
    /// `smtp` (default) or `graph`: Microsoft Graph `sendMail`, for the Microsoft provider
    /// with OAuth2. Graph asks for the scope `https://graph.microsoft.com/Mail.Send`.
    pub transport: Option<String>,
    /// Graph keeps a copy of each message in Sent Items (default true).
    pub save_to_sent_items: Option<bool>,
    /// `delegated` (OAuth2's default: a person signs in with Authorize), `app` (app-only: the
    /// app's own token with its client secret, for the Microsoft provider a tenant ID or domain
    /// and the application permission Mail.Send (Graph) or SMTP.SendAsApp (SMTP); Verify, no
    /// sign-in), or `password` (basic's).
    pub credential: Option<String>,
}

/// Accepts `null` as "clear" and absence as "keep".
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change: absent fields stay; `null` clears an optional one. A secret left out is kept.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PatchMailbox {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub tenant: Option<Option<String>>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub security: Option<String>,
    pub username: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub from_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub sign_in_account: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub reply_to: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub signature: Option<Option<String>>,
    pub default: Option<bool>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    /// A new client secret: Herald tries it at the token endpoint before keeping it, and
    /// answers 422 when Microsoft refuses it (the old one stays). Clears the recorded expiry
    /// unless `client_secret_expires_at` comes with it.
    #[schema(value_type = Option<String>, format = Password)]
    pub client_secret: Option<SecretString>,
    /// The next client secret, waiting to take over (write-only).
    #[schema(value_type = Option<String>, format = Password)]
    pub next_client_secret: Option<SecretString>,
    /// A new service account JSON key (Google, `credential: app`). Write-only.
    #[schema(value_type = Option<String>, format = Password)]
    pub service_account_key: Option<SecretString>,
    /// `secret`, `basic` or `certificate`. Turning to `certificate` makes a certificate (unless
    /// one is given) that must be uploaded before the mailbox works again.
    pub client_auth: Option<String>,
    /// A certificate (PEM) to use instead of the one in use, with `private_key_pem`.
    pub certificate_pem: Option<String>,
    /// `global`, `usgov`, `dod` or `china`: the endpoints, SMTP host and scopes follow.
    pub cloud: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    pub private_key_pem: Option<SecretString>,
    /// The scopes to ask for; the preset's when left out. Adding
    /// `https://graph.microsoft.com/Application.Read.All` (a delegated permission an admin
    /// consents to) lets Herald read the client secret's expiry from the app registration
    /// instead of having it typed; app-only mailboxes need the application permission instead.
    pub scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub issuer: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub client_secret_expires_at: Option<Option<String>>,
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    /// Replaces every override; `{}` returns to the provider's limits.
    pub limits: Option<LimitOverrides>,
    /// `smtp` or `graph`. Changing it asks for the other transport's scopes: the mailbox must
    /// be authorized again.
    pub transport: Option<String>,
    pub save_to_sent_items: Option<bool>,
    /// `delegated` or `app`; changing it asks for the other scopes.
    pub credential: Option<String>,
}

/// Reads the saved mailbox's discovery document (`services::mailboxes::discover`), except for
/// Microsoft 365, whose tenant document is read when the admin clicks Authorize: a save then
/// never waits on Microsoft, and the tests, which save Microsoft mailboxes, reach no network.
async fn discover_on_save(
    state: &AppState,
    mailbox: crate::domain::mailbox::Mailbox,
) -> Result<crate::domain::mailbox::Mailbox, ApiError> {
    if mailbox.provider == crate::domain::mailbox::Provider::Microsoft {
        return Ok(mailbox);
    }
    Ok(mailboxes::discover(
        &state.access.store,
        &state.access.http,
        &policy(state),
        mailbox,
    )
    .await?)
}

pub(super) fn policy(state: &AppState) -> Policy<'_> {
    Policy {
        dev: state.access.config.dev,
        allow_private_hosts: state.access.config.allow_private_hosts,
        sandbox: state.access.sandbox.as_deref(),
    }
}

pub(super) fn parse_mailbox_id(raw: &str) -> Result<MailboxId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("mailbox"))
}

/// The organization's mailboxes, each Verified or Not Verified with the reason. A sender key
/// sees them too (to choose one to send through), and a key limited to some mailboxes sees
/// only those. No response carries a secret.
#[utoipa::path(get, path = "/api/v1/mailboxes", tag = "mailboxes", params(ListParams),
    responses((status = 200, body = MailboxList), (status = 403, body = Problem)))]
pub async fn list_mailboxes(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<MailboxList>, ApiError> {
    let (limit, after) = (params.limit()?, params.after()?);
    let page = {
        views::mailboxes(
            &state.access.store,
            principal.org_id,
            after.as_deref(),
            limit,
        )
        .await?
    };
    let next_cursor = page.next_cursor.as_deref().map(super::encode_cursor);
    let mut items = Vec::with_capacity(page.items.len());
    for mailbox in page.items {
        if principal.may_use(mailbox.id) {
            items.push(render(&state, mailbox).await?);
        }
    }
    Ok(Json(MailboxList { items, next_cursor }))
}

/// Adds a mailbox. Admins only. It starts Not Verified: authorize (OAuth2) or verify (basic).
#[utoipa::path(post, path = "/api/v1/mailboxes", tag = "mailboxes", request_body = CreateMailbox,
    responses((status = 201, body = MailboxOut), (status = 409, body = Problem), (status = 422, body = Problem), (status = 403, body = Problem)))]
pub async fn create_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateMailbox>,
) -> Result<(StatusCode, Json<MailboxOut>), ApiError> {
    principal.require_admin()?;
    let draft = MailboxDraft {
        name: body.name,
        auth: body.auth,
        provider: body.provider,
        tenant: body.tenant,
        host: body.host,
        port: body.port,
        security: body.security,
        username: body.username,
        from_name: body.from_name,
        sign_in_account: body.sign_in_account,
        reply_to: body.reply_to,
        signature: body.signature,
        default: body.default,
        authorization_url: body.authorization_url,
        token_url: body.token_url,
        client_id: body.client_id,
        client_auth: body.client_auth,
        scopes: body.scopes,
        issuer: body.issuer,
        client_secret_expires_at: body.client_secret_expires_at,
        client_secret: body.service_account_key.or(body.client_secret),
        next_client_secret: body.next_client_secret,
        password: body.password,
        limits: body.limits,
        transport: body.transport,
        save_to_sent_items: body.save_to_sent_items,
        credential: body.credential,
        certificate_pem: body.certificate_pem,
        private_key_pem: body.private_key_pem,
        cloud: body.cloud,
    };
    let mailbox = mailboxes::create(
        &state.access,
        &policy(&state),
        principal.org_id,
        draft,
        &principal.actor,
    )
    .await?;
    let mailbox = discover_on_save(&state, mailbox).await?;
    Ok((StatusCode::CREATED, Json(render(&state, mailbox).await?)))
}

/// One mailbox of the organization.
#[utoipa::path(get, path = "/api/v1/mailboxes/{id}", tag = "mailboxes", params(("id" = String, Path)),
    responses((status = 200, body = MailboxOut), (status = 404, body = Problem)))]
pub async fn get_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<MailboxOut>, ApiError> {
    let id = parse_mailbox_id(&id)?;
    let mailbox = {
        views::mailbox(&state.access.store, principal.org_id, id)
            .await?
            .filter(|m| principal.may_use(m.id))
            .ok_or_else(|| ApiError::not_found("mailbox"))?
    };
    Ok(Json(render(&state, mailbox).await?))
}

/// Changes a mailbox. Admins only. Changing the account, app registration, endpoints, scopes or
/// server drops the stored tokens: the mailbox must be authorized again.
#[utoipa::path(patch, path = "/api/v1/mailboxes/{id}", tag = "mailboxes", params(("id" = String, Path)), request_body = PatchMailbox,
    responses((status = 200, body = MailboxOut), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchMailbox>,
) -> Result<Json<MailboxOut>, ApiError> {
    principal.require_admin()?;
    let id = parse_mailbox_id(&id)?;
    let patch = MailboxPatch {
        name: body.name,
        tenant: body.tenant,
        host: body.host,
        port: body.port,
        security: body.security,
        username: body.username,
        from_name: body.from_name,
        sign_in_account: body.sign_in_account,
        reply_to: body.reply_to,
        signature: body.signature,
        default: body.default,
        authorization_url: body.authorization_url,
        token_url: body.token_url,
        client_id: body.client_id,
        client_auth: body.client_auth,
        scopes: body.scopes,
        issuer: body.issuer,
        client_secret_expires_at: body.client_secret_expires_at,
        client_secret: body.service_account_key.or(body.client_secret),
        next_client_secret: body.next_client_secret,
        password: body.password,
        limits: body.limits,
        transport: body.transport,
        save_to_sent_items: body.save_to_sent_items,
        credential: body.credential,
        certificate_pem: body.certificate_pem,
        private_key_pem: body.private_key_pem,
        cloud: body.cloud,
    };
    let mailbox = mailboxes::update(
        &state.access,
        &policy(&state),
        principal.org_id,
        id,
        patch,
        &principal.actor,
    )
    .await?;
    let mailbox = if mailbox.issuer.is_none() || !mailbox.iss_required {
        discover_on_save(&state, mailbox).await?
    } else {
        mailbox
    };
    Ok(Json(render(&state, mailbox).await?))
}

/// Deletes a mailbox and its stored secrets. Admins only.
#[utoipa::path(delete, path = "/api/v1/mailboxes/{id}", tag = "mailboxes", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let id = parse_mailbox_id(&id)?;
    mailboxes::delete(&state.access, principal.org_id, id, &principal.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks the mailbox against its SMTP server (connect, EHLO, STARTTLS, AUTH, QUIT) and sets
/// its status by the outcome. Admins only.
#[utoipa::path(post, path = "/api/v1/mailboxes/{id}/verify", tag = "mailboxes", params(("id" = String, Path)),
    responses((status = 200, body = MailboxOut), (status = 404, body = Problem)))]
pub async fn verify_mailbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<MailboxOut>, ApiError> {
    principal.require_admin()?;
    let id = parse_mailbox_id(&id)?;
    let mailbox =
        crate::services::authorization::verify(&state.access, principal.org_id, id).await?;
    Ok(Json(render(&state, mailbox).await?))
}
