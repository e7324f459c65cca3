//! Provider presets: what Herald fills in for a known provider.

/// Where the sandbox provider runs, for the `sandbox` provider's preset. Only set while the
/// sandbox runs (`herald demo`, tests).
#[derive(Clone, Debug)]
pub struct SandboxPreset {
    pub base_url: String,
    pub tenant: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// The CA that signed the sandbox's SMTP certificate, trusted for sandbox mailboxes.
    pub ca_pem: String,
}
