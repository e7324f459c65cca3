//! The HTTP server's accept loop: axum's router over hyper's HTTP/1.1 connections (the only
//! protocol `axum::serve` spoke here too), with the two defences `axum::serve` has no setting
//! for:
//!
//! - a header-read timeout, so a client that opens a connection and sends its headers a byte
//!   at a time (Slowloris), or leaves a keep-alive connection idle, is cut off;
//! - a cap on open connections. Past it, new connections are not accepted until one closes:
//!   they wait in the kernel's listen backlog (and the kernel refuses them once that is full).
//!   Waiting rather than refusing, because the timeout frees a slot within seconds and a
//!   browser shows a brief wait as a slow page but a reset as a broken site; refusing would
//!   also cost an accept and a write per refused connection, which is what a flood wants.
//!
//! Graceful shutdown is `axum::serve`'s: once `shutdown` completes, nothing new is accepted,
//! idle connections close, and requests in flight finish before [`serve`] returns, within
//! 30 seconds (then what is still open is dropped, unlike `axum::serve`, which waits forever).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::config::HttpSettings;

/// Serves `router` on `listener` until `shutdown` completes, then waits for the connections
/// still open to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    // Connections hold a receiver of `signal` and `closed`: the first tells them to stop when
    // its sender sees the receivers gone, the second tells this loop when they all have.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        shutdown.await;
        drop(signal_rx);
    });
    let (closed_tx, closed_rx) = watch::channel(());
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = signal_tx.closed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = signal_tx.closed() => break,
        };
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::extract::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        let service = TowerToHyperService::new(service);
        let (signal_tx, closed_rx) = (signal_tx.clone(), closed_rx.clone());
        let header_timeout = settings.header_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let mut connection = pin!(
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
            );
            let mut stopping = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(%peer, error = %e, "HTTP connection ended with an error");
                        }
                        break;
                    }
                    () = signal_tx.closed(), if !stopping => {
                        stopping = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(closed_rx);
        });
    }
    drop(closed_rx);
    drop(listener);
    // A client that holds a request open (a slow body, a response it does not read) must not
    // keep the instance from stopping: after this long, what is still open is dropped.
    if tokio::time::timeout(DRAIN_LIMIT, closed_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "HTTP connections still open {} s after shutdown began were dropped",
            DRAIN_LIMIT.as_secs()
        );
    }
}

/// How long requests in flight may take to finish once shutdown began.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A failed accept: a connection that went away before it was accepted is nothing; anything
/// else (out of file descriptors) is reported, and accepting pauses so as not to spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "HTTP accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
