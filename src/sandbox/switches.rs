//! The switches that make the sandbox reproduce Microsoft's failures (and, `google_…`, Google's).

/// Failures the sandbox can be told to reproduce, worded as Microsoft words them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Switches {
    /// `535 5.7.139`: SMTP AUTH disabled for the tenant.
    pub smtp_auth_disabled: bool,
    /// `550 5.7.30`: Basic authentication retired for client submission.
    pub basic_auth_retired: bool,
    /// Authenticated sessions allowed at once per mailbox before `432 4.3.2` (Exchange: 3).
    pub max_connections_per_mailbox: usize,
    /// Messages per minute per mailbox before the rate-limit reply (Exchange: 30).
    pub messages_per_minute: u32,
    /// Lifetime of new access tokens, in seconds (Entra: about an hour).
    pub access_token_lifetime_secs: i64,
    /// `401 invalid_client` AADSTS7000222: the client secret has expired.
    pub client_secret_expired: bool,
    /// `401 invalid_client` AADSTS7000215: every client secret is refused.
    pub client_secret_invalid: bool,
    /// `400 invalid_grant` AADSTS700082 on refresh: expired by inactivity.
    pub refresh_token_expired: bool,
    /// `400 invalid_grant` AADSTS50173 on refresh: the grant was revoked.
    pub grant_revoked: bool,
    /// `400 invalid_grant` AADSTS65001 on refresh: consent is required again.
    pub consent_required: bool,
    /// `400 interaction_required` AADSTS50076 on refresh: MFA is required.
    pub mfa_required: bool,
    /// Refuse bad XOAUTH2 tokens as Gmail does: `334` and base64 JSON, then `535 5.7.8`.
    pub google_style_auth_failure: bool,
    /// Answer this many token requests with `503 Service Unavailable` (an HTML page, as a
    /// front door does), then recover.
    pub token_outages: u32,
    /// How long the token endpoint takes to answer, in milliseconds (Entra's takes a few
    /// hundred): long enough for callers to overlap.
    pub token_latency_ms: u64,
    /// Answer this many submissions (DATA) with `451 4.3.2 Temporary server error`, then
    /// recover: a transient fault on Microsoft's side.
    pub submission_outages: u32,
    /// Recipients refused with Exchange's `550 5.1.10 RESOLVER.ADR.RecipientNotFound`.
    /// Graph accepts them (`202`) and delivers to the others only (Microsoft sends an NDR).
    pub unknown_recipients: Vec<String>,
    /// Graph: `{id}`s answered `404 ErrorInvalidUser`.
    pub graph_unknown_users: Vec<String>,
    /// Graph: mailboxes answered `404 MailboxNotEnabledForRESTAPI`.
    pub graph_disabled_mailboxes: Vec<String>,
    /// Graph: answer this many `sendMail` requests `429 ApplicationThrottled`, then recover.
    pub graph_throttled: u32,
    /// Graph: the `Retry-After` (seconds) of its 429s and 503s.
    pub graph_retry_after_secs: u64,
    /// Graph: answer this many `sendMail` requests `503 ServiceNotAvailable`, then recover.
    pub graph_outages: u32,
    /// Graph: answer this many upload-session chunks `503 ServiceNotAvailable`, then recover.
    /// A session's first chunk is always taken, so the failure comes half-way.
    pub graph_upload_outages: u32,
    /// Graph: drafts, attachments and upload sessions take Mail.ReadWrite (delegated scope or
    /// application permission), as at Microsoft (the default). Off, Mail.Send stands in for it.
    pub graph_drafts_need_mail_readwrite: bool,
    /// Google mode: `admin_policy_enforced`, a Workspace admin blocks the app (API controls),
    /// at the token endpoint and at sign-in.
    pub google_admin_policy_enforced: bool,
    /// Google mode: the app is Internal; accounts outside `google_org_domain` see Google's
    /// `Error 403: org_internal` page.
    pub google_org_internal: bool,
    /// Google mode: the Workspace domain an Internal app belongs to.
    pub google_org_domain: String,
    /// Google mode: the app is in "Testing" status, so refresh tokens older than 7 days on the
    /// sandbox's clock answer `invalid_grant` "Token has been expired or revoked.".
    pub google_testing_status: bool,
    /// Google mode: messages a day per user before `550 5.4.5 Daily user sending limit
    /// exceeded` (Workspace: 2,000).
    pub google_messages_per_day: u32,
    /// Device codes: the `interval` (seconds) clients are told to poll at (Entra: 5).
    pub device_interval_secs: u64,
    /// Device codes: how long one lives, in seconds (Entra: 900), then `expired_token`.
    pub device_code_lifetime_secs: i64,
    /// Device codes: answer this many polls `slow_down` (the client must wait 5 s more from
    /// then on, RFC 8628 §3.5), then go on as before.
    pub device_slow_down: u32,
}

impl Default for Switches {
    fn default() -> Self {
        Self {
            smtp_auth_disabled: false,
            basic_auth_retired: false,
            max_connections_per_mailbox: 3,
            messages_per_minute: 30,
            access_token_lifetime_secs: 3599,
            client_secret_expired: false,
            client_secret_invalid: false,
            refresh_token_expired: false,
            grant_revoked: false,
            consent_required: false,
            mfa_required: false,
            google_style_auth_failure: false,
            token_outages: 0,
            token_latency_ms: 0,
            submission_outages: 0,
            unknown_recipients: Vec::new(),
            graph_unknown_users: Vec::new(),
            graph_disabled_mailboxes: Vec::new(),
            graph_throttled: 0,
            graph_retry_after_secs: 1,
            graph_outages: 0,
            graph_upload_outages: 0,
            graph_drafts_need_mail_readwrite: true,
            google_admin_policy_enforced: false,
            google_org_internal: false,
            google_org_domain: String::new(),
            google_testing_status: false,
            google_messages_per_day: 2_000,
            device_interval_secs: 5,
            device_code_lifetime_secs: 900,
            device_slow_down: 0,
        }
    }
}
