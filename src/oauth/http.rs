//! The HTTP client for token endpoints (and every other URL a user chooses: alert webhooks):
//! no redirects (a token request must not be forwarded), timeouts, the installation's CA
//! additions, the [`HostPolicy`] checked against every address a name resolves to, when
//! connecting, and answers read only up to [`MAX_BODY`]: a hostile endpoint must not make
//! Herald hold hundreds of megabytes.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::net::HostPolicy;

/// Why a token request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Refused(String),
    #[error("the request failed: {0}")]
    Transport(String),
    #[error("the token endpoint answered more than {} KiB", .0 / 1024)]
    TooLarge(usize),
}

impl HttpError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transport(_))
    }
}

struct GuardedResolver(HostPolicy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = policy
                .resolve(name.as_str(), 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A guarded client. `extra_ca` (PEM) is trusted beside the system's roots.
#[derive(Clone)]
pub struct TokenHttp {
    client: reqwest::Client,
    policy: HostPolicy,
}

/// The largest answer read from an endpoint. A token response is a few kilobytes (an ID token
/// with many groups stays well under 64 KiB).
pub const MAX_BODY: usize = 256 * 1024;

impl TokenHttp {
    pub fn new(policy: HostPolicy, extra_ca: Option<&Path>) -> Result<Self, String> {
        crate::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            // A proxy would resolve names itself, past the address check.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(policy)));
        if let Some(path) = extra_ca {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { client, policy })
    }

    /// Sends one request for the `oauth2` crate.
    pub async fn execute(
        &self,
        request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, HttpError> {
        self.send(request, MAX_BODY, true).await
    }

    /// Sends one request to an API that answers its own errors (Microsoft Graph): every
    /// status comes back with its headers (`429` with `Retry-After`), and the answer is read up
    /// to `limit` bytes.
    pub async fn execute_api(
        &self,
        request: oauth2::HttpRequest,
        limit: usize,
    ) -> Result<oauth2::HttpResponse, HttpError> {
        self.send(request, limit, false).await
    }

    async fn send(
        &self,
        request: oauth2::HttpRequest,
        limit: usize,
        token_endpoint: bool,
    ) -> Result<oauth2::HttpResponse, HttpError> {
        let host = request.uri().host().unwrap_or_default().to_owned();
        // Literal addresses never reach the resolver: check them here.
        self.policy.check_host(&host).map_err(HttpError::Refused)?;
        let mut request =
            reqwest::Request::try_from(request).map_err(|e| HttpError::Transport(e.to_string()))?;
        // Part of a request's trace: the provider (or webhook) sees the same trace id.
        if let Some(trace) = crate::trace::current()
            && let Ok(value) = reqwest::header::HeaderValue::from_str(&trace.child().header())
        {
            request.headers_mut().insert("traceparent", value);
        }
        let response = self.client.execute(request).await.map_err(|e| {
            let text = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            if text.contains("refuses") {
                HttpError::Refused(text)
            } else {
                HttpError::Transport(e.to_string())
            }
        })?;
        let status = response.status();
        // A throttled or failing token endpoint says nothing about the grant: try again later.
        if token_endpoint
            && (status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
        {
            return Err(HttpError::Transport(format!(
                "the token endpoint answered {status}"
            )));
        }
        let headers = response.headers().clone();
        let body = read_limited(response, limit).await?;
        let mut out = oauth2::HttpResponse::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

/// Reads a body of at most `limit` bytes: refused by its `Content-Length` before anything is
/// read, and otherwise read chunk by chunk, stopping (and dropping the connection) as soon as
/// the limit is passed, so no more than `limit` bytes plus one chunk are ever held.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, HttpError> {
    let declared = response.content_length();
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(HttpError::TooLarge(limit));
    }
    let mut body = Vec::with_capacity(declared.map_or(8 * 1024, |len| len as usize));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError::Transport(e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(HttpError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl<'c> oauth2::AsyncHttpClient<'c> for TokenHttp {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.execute(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers one request with `len` bytes in 16 KiB chunks, with no length.
    async fn chunked_server(len: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/token",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let mut left = len;
            while left > 0 {
                let n = left.min(16 * 1024);
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                out.extend(std::iter::repeat_n(b'x', n));
                out.extend_from_slice(b"\r\n");
                left -= n;
            }
            out.extend_from_slice(b"0\r\n\r\n");
            let _ = stream.write_all(&out).await;
        });
        url
    }

    async fn fetch(url: &str) -> Result<oauth2::HttpResponse, HttpError> {
        let policy = HostPolicy {
            dev: true,
            allow_private: false,
        };
        let http = TokenHttp::new(policy, None).unwrap();
        let request = axum::http::Request::builder()
            .uri(url)
            .body(Vec::new())
            .unwrap();
        http.execute(request).await
    }

    #[tokio::test]
    async fn a_chunked_answer_is_read_up_to_the_limit_and_refused_past_it() {
        let exact = fetch(&chunked_server(MAX_BODY).await).await.unwrap();
        assert_eq!(exact.body().len(), MAX_BODY);
        let over = fetch(&chunked_server(MAX_BODY + 1).await).await;
        assert!(
            matches!(over, Err(HttpError::TooLarge(MAX_BODY))),
            "{over:?}"
        );
        assert_eq!(
            over.unwrap_err().to_string(),
            "the token endpoint answered more than 256 KiB"
        );
    }
}
