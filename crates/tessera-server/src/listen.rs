//! The accept loop: plain HTTP, or HTTPS through rustls with the configured certificate or
//! one made at start (`server.tls_self_signed`). Each connection is served by hyper with
//! the warp routes, and every request carries the client's address (`ClientAddr`) for the
//! per-IP limits.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tessera_config::Config;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// The address of the client that sent a request.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// HTTPS settings made at start: the acceptor and, for a self-signed certificate, its PEM
/// (served at `/cert.pem` so users can check or import it) and SHA-256 fingerprint.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub self_signed_pem: Option<String>,
    pub fingerprint: String,
}

/// Why HTTPS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The HTTPS setup `cfg` asks for, or `None` for plain HTTP.
pub fn tls_from_config(cfg: &Config) -> Result<Option<Tls>, TlsError> {
    let s = &cfg.server;
    let (certs, key, pem) = if s.tls_self_signed {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let listen_ip = s
            .listen
            .parse::<SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified());
        names.extend(listen_ip.map(|ip| ip.to_string()));
        names.extend(cfg.network.host_ips.iter().cloned());
        if !cfg.network.public_ip.is_empty() {
            names.push(cfg.network.public_ip.clone());
        }
        names.sort();
        names.dedup();
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError(format!("cannot make a self-signed certificate: {e}")))?;
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(|e| TlsError(format!("self-signed key: {e}")))?;
        (vec![ck.cert.der().clone()], key, Some(ck.cert.pem()))
    } else if !s.tls_cert.is_empty() {
        let certs = CertificateDer::pem_file_iter(&s.tls_cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError(format!("server.tls_cert = {:?}: {e}", s.tls_cert)))?;
        if certs.is_empty() {
            return Err(TlsError(format!(
                "server.tls_cert = {:?}: no PEM certificate in the file",
                s.tls_cert
            )));
        }
        let key = PrivateKeyDer::from_pem_file(&s.tls_key)
            .map_err(|e| TlsError(format!("server.tls_key = {:?}: {e}", s.tls_key)))?;
        (certs, key, None)
    } else {
        return Ok(None);
    };
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, &certs[0])
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| TlsError(format!("server.tls_cert/tls_key: {e}")))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Tls {
        acceptor: TlsAcceptor::from(Arc::new(sc)),
        self_signed_pem: pem,
        fingerprint,
    }))
}

/// Adds `ClientAddr` to every request of one connection.
#[derive(Clone)]
struct WithAddr<S> {
    inner: S,
    addr: SocketAddr,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for WithAddr<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: warp::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(ClientAddr(self.addr));
        self.inner.call(req)
    }
}

type Request = warp::http::Request<hyper::body::Incoming>;

/// Accepts connections on `listener` until `shutdown` ends, serving `routes` (the warp
/// routes as a service) on each.
pub async fn accept_loop<S>(
    listener: tokio::net::TcpListener,
    routes: S,
    tls: Option<Tls>,
    shutdown: impl Future<Output = ()> + Send,
) where
    S: tower_service::Service<
            Request,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let svc = TowerToHyperService::new(WithAddr {
            inner: routes.clone(),
            addr,
        });
        let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
        tokio::spawn(async move {
            let builder = Builder::new(TokioExecutor::new());
            let result = match acceptor {
                None => {
                    builder
                        .http1_only()
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(s)) => {
                            builder
                                .http1_only()
                                .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                .await
                        }
                        Ok(Err(e)) => {
                            debug!(%addr, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            debug!(%addr, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                debug!(%addr, "connection: {e}");
            }
        });
    }
    info!("no longer accepting connections");
}
