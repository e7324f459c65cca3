//! This machine's clock against each provider's: the `Date` header of the token endpoint of
//! every distinct provider the mailboxes sign in at. Microsoft refuses client assertions more
//! than 5 minutes off (AADSTS700024), and tokens' lifetimes are judged by the clock.

use time::OffsetDateTime;
use time::macros::format_description;
use url::Url;

use super::{Check, DEADLINE};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::mailbox::Mailbox;
use crate::net::HostPolicy;
use crate::oauth::http::TokenHttp;

const NAME: &str = "clock";

/// Past this, sign-ins fail.
const FAIL_AFTER: time::Duration = time::Duration::minutes(5);
/// Past this, the clock is drifting.
const WARN_AFTER: time::Duration = time::Duration::minutes(1);

const SYNC: &str = "synchronize this machine's clock with NTP (`timedatectl set-ntp true`, or chrony/ntpd): Microsoft refuses sign-ins more than 5 minutes off (AADSTS700024)";

pub(super) async fn check(
    config: &Config,
    mailboxes: &[Mailbox],
    clock: &SharedClock,
) -> Vec<Check> {
    let endpoints = token_endpoints(mailboxes);
    if endpoints.is_empty() {
        return vec![Check::ok(
            NAME,
            format!(
                "{}; no mailbox signs in at a provider to compare it with",
                http_date(clock.now())
            ),
        )];
    }
    let http = match http(config) {
        Ok(http) => http,
        Err(check) => return vec![check],
    };
    let mut checks = Vec::new();
    for url in endpoints {
        checks.push(compare(&http, &url, clock).await);
    }
    checks
}

/// The token HTTP client, as Herald uses it (host policy, extra CAs, no redirects).
pub(super) fn http(config: &Config) -> Result<TokenHttp, Check> {
    let policy = HostPolicy {
        dev: config.dev,
        allow_private: config.allow_private_hosts,
    };
    TokenHttp::new(policy, config.http_ca_file.as_deref()).map_err(|e| {
        Check::fail(
            "HTTP client",
            format!("HERALD_HTTP_CA_FILE: {e}"),
            "point HERALD_HTTP_CA_FILE at a readable file of PEM certificates, or unset it",
        )
    })
}

/// One token URL per provider (scheme, host and port).
fn token_endpoints(mailboxes: &[Mailbox]) -> Vec<Url> {
    let mut seen: Vec<Url> = Vec::new();
    for raw in mailboxes.iter().filter_map(|m| m.token_url.as_deref()) {
        let Ok(url) = Url::parse(raw) else { continue };
        if !seen.iter().any(|u| u.origin() == url.origin()) {
            seen.push(url);
        }
    }
    seen
}

/// Sends `HEAD url` within the deadline; answers the response's headers.
pub(super) async fn head(http: &TokenHttp, url: &Url) -> Result<oauth2::http::HeaderMap, String> {
    let request = oauth2::http::Request::builder()
        .method(oauth2::http::Method::HEAD)
        .uri(url.as_str())
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(DEADLINE, http.execute_api(request, 64 * 1024)).await {
        Ok(Ok(response)) => Ok(response.headers().clone()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", DEADLINE.as_secs())),
    }
}

async fn compare(http: &TokenHttp, url: &Url, clock: &SharedClock) -> Check {
    let host = url.host_str().unwrap_or_default();
    let before = clock.now();
    let headers = match head(http, url).await {
        Ok(headers) => headers,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot reach the token endpoint {url} to read its time: {e}"),
                "check that this machine resolves and reaches the host over HTTPS (DNS, firewall, proxy); for a private CA, add it to HERALD_HTTP_CA_FILE",
            );
        }
    };
    let after = clock.now();
    let Some(theirs) = headers
        .get(oauth2::http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
    else {
        return Check::warn(
            NAME,
            format!("{host} answered without a readable Date header: cannot compare clocks"),
            "nothing to do if sign-ins work; otherwise check this machine's clock",
        );
    };
    // The server read its clock somewhere between our two readings; its header has whole
    // seconds only.
    let ours = before + (after - before) / 2;
    let skew = ours - theirs;
    let off = describe(skew, host);
    let magnitude = skew.abs() - time::Duration::seconds(1);
    if magnitude > FAIL_AFTER {
        Check::fail(NAME, off, SYNC)
    } else if magnitude > WARN_AFTER {
        Check::warn(NAME, off, SYNC)
    } else {
        Check::ok(NAME, off)
    }
}

/// "3 min 12 s ahead of login.example.com".
fn describe(skew: time::Duration, host: &str) -> String {
    let secs = skew.whole_seconds();
    if secs == 0 {
        return format!("in step with {host}");
    }
    let abs = secs.unsigned_abs();
    let amount = if abs >= 60 {
        format!("{} min {} s", abs / 60, abs % 60)
    } else {
        format!("{abs} s")
    };
    let way = if secs > 0 { "ahead of" } else { "behind" };
    format!("this machine's clock is {amount} {way} {host}")
}

/// Parses an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's IMF-fixdate).
fn parse_http_date(raw: &str) -> Option<OffsetDateTime> {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(raw.trim(), format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

fn http_date(t: OffsetDateTime) -> String {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_read_and_skews_worded() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.unix_timestamp(), 784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(
            describe(time::Duration::seconds(-612), "login.example.com"),
            "this machine's clock is 10 min 12 s behind login.example.com"
        );
        assert_eq!(
            describe(time::Duration::seconds(5), "h"),
            "this machine's clock is 5 s ahead of h"
        );
    }
}
