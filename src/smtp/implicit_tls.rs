//! Implicit TLS (SMTPS, port 465) on a socket Herald opened itself, so that it carries
//! `TCP_NODELAY` as the plain and STARTTLS paths do: lettre's own implicit-TLS connect leaves
//! Nagle's algorithm on, and a command or the message's final dot then waits up to 40 ms for
//! the server's delayed ACK. The TLS session is verified against the system's roots and the
//! extra CAs (`HERALD_SMTP_CA_FILE`, the sandbox's), with the same provider and versions lettre
//! uses, and handed to lettre as the stream to speak SMTP over.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A verified TLS session over a TCP socket with `TCP_NODELAY`.
pub struct ImplicitTls(TlsStream<TcpStream>);

/// The verification a handshake will do: the trusted roots and the name to check.
pub struct Handshake {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl ImplicitTls {
    /// What a session with `host` verifies against, set up before connecting: a host name
    /// TLS cannot carry or an extra CA that does not parse is a fault of the settings.
    pub fn prepare(host: &str, extra_roots: &[Vec<u8>]) -> Result<Handshake, String> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| format!("{host} is not a valid host name for TLS"))?;
        Ok(Handshake {
            connector: TlsConnector::from(client_config(extra_roots)?),
            name,
        })
    }

    /// Performs the TLS handshake over `tcp`, after setting `TCP_NODELAY` on it. An error that
    /// carries a [`rustls::Error`] is a refusal of the server's certificate or protocol.
    pub async fn connect(handshake: Handshake, tcp: TcpStream) -> io::Result<Self> {
        tcp.set_nodelay(true)?;
        Ok(Self(
            handshake.connector.connect(handshake.name, tcp).await?,
        ))
    }

    /// Whether the socket under the session sends small writes at once.
    #[cfg(test)]
    fn nodelay(&self) -> bool {
        self.0.get_ref().0.nodelay().unwrap_or(false)
    }
}

/// The system's trusted roots, read once: reading and parsing the system store costs
/// milliseconds, which every new session would otherwise pay.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        store
    })
}

fn client_config(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = system_roots().clone();
    for pem in extra_roots {
        for cert in CertificateDer::pem_slice_iter(pem) {
            cert.map_err(|e| e.to_string())
                .and_then(|cert| roots.add(cert).map_err(|e| e.to_string()))
                .map_err(|e| format!("an extra CA certificate is not valid: {e}"))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(rustls::ALL_VERSIONS)
    .map_err(|e| format!("cannot set up TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

impl fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ImplicitTls")
            .field(&self.0.get_ref().0.peer_addr().ok())
            .finish()
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS server on loopback that answers the first line it reads with a greeting.
    async fn server(ca: &crate::tls::LocalCa) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"220 ready\r\n").await;
                        let _ = tls.flush().await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_session_is_verified_and_sends_small_writes_at_once() {
        crate::tls::install_crypto_provider();
        let ca = crate::tls::LocalCa::generate("Test", &["localhost".to_owned()]).unwrap();
        let addr = server(&ca).await;
        let roots = vec![ca.ca_pem().as_bytes().to_vec()];

        let connect = |host: &'static str, roots: Vec<Vec<u8>>| async move {
            let handshake = ImplicitTls::prepare(host, &roots).unwrap();
            let tcp = TcpStream::connect(addr).await.unwrap();
            ImplicitTls::connect(handshake, tcp).await
        };
        let mut tls = connect("localhost", roots.clone()).await.unwrap();
        assert!(tls.nodelay(), "TCP_NODELAY on the implicit-TLS socket");
        assert_eq!(AsyncTokioStream::peer_addr(&tls).unwrap(), addr);
        let mut greeting = [0u8; 11];
        tls.read_exact(&mut greeting).await.unwrap();
        assert_eq!(&greeting, b"220 ready\r\n");

        // Without the CA, or for another name, the handshake is refused.
        let untrusted = connect("localhost", vec![]).await.unwrap_err();
        assert!(untrusted.to_string().contains("certificate"), "{untrusted}");
        let other = connect("smtp.contoso.com", roots).await.unwrap_err();
        assert!(other.to_string().contains("certificate"), "{other}");
        // A CA that does not parse is a fault of the settings, found before connecting.
        let bad = ImplicitTls::prepare(
            "localhost",
            &[b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec()],
        );
        assert!(bad.is_err_and(|e| e.contains("extra CA")));
    }
}
