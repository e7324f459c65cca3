//! The public URL users reach Herald at, and the OAuth redirect URI built from it.

use super::Check;
use crate::config::Config;
use crate::net::{Reach, reach_of};

/// The public URL: over TLS unless it stays on this machine, and set when Herald listens
/// beyond loopback; then the redirect URI to register at the provider.
pub(super) fn check(config: &Config) -> Vec<Check> {
    let url = config.public_base();
    let host = config.public_url.host_str().unwrap_or_default();
    let loopback = reach_of(host) == Reach::Loopback;
    let public = if !config.public_url_explicit && !config.listen.ip().is_loopback() {
        Check::warn(
            "public URL",
            format!(
                "HERALD_PUBLIC_URL is not set, so links and the redirect URI use {url}, which only works on this machine"
            ),
            "set HERALD_PUBLIC_URL to the https:// address users open Herald at",
        )
    } else if config.is_https() {
        Check::ok("public URL", format!("{url}: cookies are Secure"))
    } else if loopback {
        Check::ok(
            "public URL",
            format!("{url}: http on this machine only (cookies are not Secure)"),
        )
    } else {
        let detail = format!(
            "{url} is plain http on a host other people reach: sign-in cookies and OAuth codes cross the network unencrypted, and cookies are not Secure"
        );
        let fix = "serve Herald over TLS (a reverse proxy with a certificate) and set HERALD_PUBLIC_URL to its https:// address";
        if config.dev {
            Check::warn("public URL", detail, fix)
        } else {
            Check::fail("public URL", detail, fix)
        }
    };
    let redirect = Check::ok(
        "redirect URI",
        format!(
            "{}: register exactly this URI in each OAuth app (Azure: App registrations › Authentication › Web › Redirect URIs)",
            config.redirect_uri()
        ),
    );
    vec![public, redirect]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::app::doctor::Outcome;

    fn outcome(vars: &[(&str, &str)]) -> (Outcome, String) {
        let env: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = Config::load(None, &env).expect("configuration");
        let checks = check(&config);
        (checks[0].outcome, checks[1].detail.clone())
    }

    #[test]
    fn plain_http_is_refused_beyond_loopback_and_https_passes() {
        let (o, redirect) = outcome(&[("HERALD_PUBLIC_URL", "http://herald.example.com")]);
        assert_eq!(o, Outcome::Fail);
        assert!(redirect.starts_with("http://herald.example.com/web/um/smtp/redirect"));
        let (o, _) = outcome(&[
            ("HERALD_PUBLIC_URL", "http://herald.example.com"),
            ("HERALD_DEV", "true"),
        ]);
        assert_eq!(o, Outcome::Warn);
        let (o, _) = outcome(&[("HERALD_PUBLIC_URL", "https://herald.example.com")]);
        assert_eq!(o, Outcome::Ok);
        let (o, _) = outcome(&[("HERALD_PUBLIC_URL", "http://127.0.0.1:8080")]);
        assert_eq!(o, Outcome::Ok);
        let (o, _) = outcome(&[("HERALD_LISTEN", "0.0.0.0:8080")]);
        assert_eq!(
            o,
            Outcome::Warn,
            "no public URL while listening beyond loopback"
        );
    }
}
