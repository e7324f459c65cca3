//! Where the sandbox runs: its web server's address and public URL, its SMTP server's address,
//! and the failures it reproduces from the start. Herald's configuration fills these in.

use std::net::SocketAddr;

use url::Url;

/// Where the sandbox provider runs, when it runs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub public_url: Url,
    /// Whether `public_url` was set, rather than derived from the address listened on.
    pub public_url_explicit: bool,
    pub smtp_listen: SocketAddr,
    /// Switches to set at start, as JSON; the sandbox checks their names.
    pub switches: Option<serde_json::Value>,
}

impl Settings {
    /// Once bound: an unset public URL follows the actual port, on the host name `localhost`
    /// (another site than Herald's `127.0.0.1` to the browser).
    pub fn adopt_bound_address(&mut self, addr: SocketAddr) {
        if !self.public_url_explicit {
            self.public_url =
                Url::parse(&format!("http://localhost:{}", addr.port())).expect("a valid URL");
        }
    }
}
