//! Node-to-node calls: connections to another node's `advertise_url` (plain or TLS), the
//! signed hop header, and HTTP forwarding.
//!
//! A forwarded request carries `x-tessera-hop: FROM CLIENT UNIX SIG`, where SIG is
//! base64url(HMAC-SHA256(cluster.secret, "tessera-hop\nFROM\nCLIENT\nUNIX\nMETHOD\nPATH")).
//! The receiving node trusts CLIENT (the original client's address, `-` if unknown) for
//! its per-IP limits only when the signature holds and UNIX is within `HOP_MAX_AGE_SECS`,
//! and never forwards a hop request again.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use ring::hmac;
use tokio::io::{AsyncRead, AsyncWrite};
use warp::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

pub const HOP_HEADER: &str = "x-tessera-hop";
/// A signed hop older (or newer) than this is refused: replays stay short-lived.
pub const HOP_MAX_AGE_SECS: u64 = 60;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Whole forwarded HTTP exchanges; a WHIP answer on a loaded debug build takes a few s.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// What a request's hop header says.
#[derive(Clone, Debug, PartialEq)]
pub enum Hop {
    /// No header: a request from a client.
    None,
    /// A request forwarded by node `from` for a client at `client`.
    Valid {
        from: String,
        client: Option<SocketAddr>,
    },
    /// A header that does not verify; the reason in words.
    Invalid(String),
}

impl Hop {
    pub fn is_hop(&self) -> bool {
        !matches!(self, Hop::None)
    }
}

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

fn signed_text(from: &str, client: &str, unix: u64, method: &str, path: &str) -> String {
    format!("tessera-hop\n{from}\n{client}\n{unix}\n{method}\n{path}")
}

/// The hop header value for a request `method path` forwarded by `from` for `client`.
pub fn sign(
    secret: &str,
    from: &str,
    client: Option<SocketAddr>,
    method: &str,
    path: &str,
    unix: u64,
) -> String {
    let client = client.map_or_else(|| "-".to_string(), |a| a.to_string());
    let tag = hmac::sign(
        &key(secret),
        signed_text(from, &client, unix, method, path).as_bytes(),
    );
    format!(
        "{from} {client} {unix} {}",
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// Checks a hop header of a request `method path` at time `now_unix`.
pub fn verify(secret: &str, value: &str, method: &str, path: &str, now_unix: u64) -> Hop {
    let parts: Vec<&str> = value.split(' ').collect();
    let [from, client, unix, sig] = parts.as_slice() else {
        return Hop::Invalid("malformed hop header".into());
    };
    let Ok(unix) = unix.parse::<u64>() else {
        return Hop::Invalid("malformed hop header time".into());
    };
    if unix.abs_diff(now_unix) > HOP_MAX_AGE_SECS {
        return Hop::Invalid(format!(
            "hop header {} s old (clocks of the nodes apart?)",
            now_unix as i64 - unix as i64
        ));
    }
    let Ok(tag) = URL_SAFE_NO_PAD.decode(sig) else {
        return Hop::Invalid("malformed hop signature".into());
    };
    let text = signed_text(from, client, unix, method, path);
    if hmac::verify(&key(secret), text.as_bytes(), &tag).is_err() {
        return Hop::Invalid(
            "hop signature does not match (another cluster.secret on that node?)".into(),
        );
    }
    Hop::Valid {
        from: from.to_string(),
        client: client.parse().ok(),
    }
}

/// A node's base URL taken apart.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url:?} is not an http(s) URL"));
        };
        let rest = rest.trim_end_matches('/');
        let default = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (ip, tail) = v6
                .split_once(']')
                .ok_or(format!("{url:?}: bad IPv6 host"))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                None => default,
            };
            (ip.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                ),
                None => (rest.to_string(), default),
            }
        };
        Ok(Target { tls, host, port })
    }

    /// `host:port` as the Host header wants it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Certificates of https nodes are checked against the system's CA store
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR` point elsewhere).
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONNECTOR: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("CA store for https nodes: {e}");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "CA certificates for https nodes");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .unwrap_or_else(|_| {
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
        })
        .clone()
}

/// A byte stream to `t`, through TLS for https.
pub async fn connect(t: &Target) -> Result<Pin<Box<dyn Io>>, String> {
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| format!("connecting to {} timed out", t.authority()))?
    .map_err(|e| format!("cannot connect to {}: {e}", t.authority()))?;
    let _ = tcp.set_nodelay(true);
    if !t.tls {
        return Ok(Box::pin(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
        .map_err(|e| format!("{}: {e}", t.host))?;
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, tls_connector().connect(name, tcp))
        .await
        .map_err(|_| format!("TLS handshake with {} timed out", t.authority()))?
        .map_err(|e| format!("TLS with {}: {e}", t.authority()))?;
    Ok(Box::pin(tls))
}

/// One HTTP/1.1 exchange with the node at `base`; returns its response as warp's.
pub async fn request(
    base: &str,
    method: Method,
    path_and_query: &str,
    headers: &HeaderMap,
    hop: String,
    body: Bytes,
) -> Result<warp::reply::Response, String> {
    let t = Target::parse(base)?;
    let exchange = async {
        let io = connect(&t).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP with {}: {e}", t.authority()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, t.authority())
            .header(header::CONNECTION, "close")
            .header(HOP_HEADER, hop);
        for (name, value) in headers {
            if FORWARDED_REQUEST_HEADERS.contains(name) {
                req = req.header(name, value);
            }
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP with {}: {e}", t.authority()))?;
        let (parts, body) = resp.into_parts();
        let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer of {}: {e}", t.authority()))?
            .to_bytes();
        let mut out = Response::builder().status(parts.status);
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(name) {
                out = out.header(name, value);
            }
        }
        out.body(bytes.to_vec().into())
            .map_err(|e| format!("response: {e}"))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{} did not answer in time", t.authority()))?
}

const FORWARDED_REQUEST_HEADERS: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
    header::ACCEPT,
    header::IF_MATCH,
];

const HOP_BY_HOP: [header::HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::UPGRADE,
    header::TE,
];

/// A plain-text error response.
pub fn text(status: StatusCode, body: impl Into<String>) -> warp::reply::Response {
    let body: String = body.into();
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_hop_verifies_only_as_signed() {
        let client: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let v = sign(SECRET, "n1", Some(client), "GET", "/ws", 1000);
        assert_eq!(
            verify(SECRET, &v, "GET", "/ws", 1010),
            Hop::Valid {
                from: "n1".into(),
                client: Some(client)
            }
        );
        let check = |value: &str, method: &str, path: &str, now: u64| match verify(
            SECRET, value, method, path, now,
        ) {
            Hop::Invalid(_) => {}
            other => panic!("{value} {method} {path} {now}: {other:?}"),
        };
        check(&v, "GET", "/ws", 1000 + HOP_MAX_AGE_SECS + 1);
        check(&v, "POST", "/ws", 1000);
        check(&v, "GET", "/whip/r", 1000);
        check(&v.replace("10.1.2.3", "10.9.9.9"), "GET", "/ws", 1000);
        check("n1 - 1000", "GET", "/ws", 1000);
        check("n1 - x sig", "GET", "/ws", 1000);
        let other = sign(
            "another-secret-of-32-characters!",
            "n1",
            None,
            "GET",
            "/ws",
            1000,
        );
        check(&other, "GET", "/ws", 1000);
        let anon = sign(SECRET, "n1", None, "GET", "/ws", 1000);
        assert_eq!(
            verify(SECRET, &anon, "GET", "/ws", 1000),
            Hop::Valid {
                from: "n1".into(),
                client: None
            }
        );
    }

    #[test]
    fn base_urls_are_taken_apart() {
        let t = |u: &str| Target::parse(u);
        assert_eq!(
            t("http://127.0.0.1:8080"),
            Ok(Target {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080
            })
        );
        assert_eq!(
            t("https://n1.example.org/"),
            Ok(Target {
                tls: true,
                host: "n1.example.org".into(),
                port: 443
            })
        );
        assert_eq!(t("http://[::1]:9").unwrap().authority(), "[::1]:9");
        assert!(t("ftp://x").is_err());
        assert!(t("http://x:y").is_err());
    }
}
