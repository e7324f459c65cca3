//! The HTTP client for token endpoints: no redirects (a token request must not be forwarded),
//! timeouts, the installation's CA additions, and the [`HostPolicy`] checked against every
//! address a name resolves to, when connecting.

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
    #[error("the answer is larger than {0} bytes")]
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

const MAX_BODY: usize = 256 * 1024;

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
        let host = request.uri().host().unwrap_or_default().to_owned();
        // Literal addresses never reach the resolver: check them here.
        self.policy.check_host(&host).map_err(HttpError::Refused)?;
        let request =
            reqwest::Request::try_from(request).map_err(|e| HttpError::Transport(e.to_string()))?;
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
        // A throttled or failing endpoint says nothing about the grant: try again later.
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(HttpError::Transport(format!(
                "the token endpoint answered {status}"
            )));
        }
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        if body.len() > MAX_BODY {
            return Err(HttpError::TooLarge(MAX_BODY));
        }
        let mut out = oauth2::HttpResponse::new(body.to_vec());
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
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
