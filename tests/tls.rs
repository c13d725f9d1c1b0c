//! TLS termination and upstream TLS, with certificates generated per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chime_gateway::simulator::Simulator;
use harness::{report, Harness, MANAGER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A leaf for 127.0.0.1 and localhost: (cert PEM, key PEM, cert DER).
    fn leaf(&self) -> (String, String, CertificateDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().clone())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        roots
    }
}

fn write_leaf(dir: &Path, leaf: &(String, String, CertificateDer<'static>)) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &leaf.0).unwrap();
    std::fs::write(&key, &leaf.1).unwrap();
    (cert, key)
}

fn client_config(
    pki: &Pki,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only: a resumed session reports the old session's certificate.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn handshake(h: &Harness, config: Arc<rustls::ClientConfig>) -> Tls {
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn report_request() -> Request<Empty<Bytes>> {
    Request::get(report())
        .header("host", "localhost")
        .header("authorization", format!("Bearer {MANAGER}"))
        .body(Empty::new())
        .unwrap()
}

async fn tls_gateway(pki: &Pki, dir: &Path) -> (Harness, CertificateDer<'static>) {
    let leaf = pki.leaf();
    let (cert, key) = write_leaf(dir, &leaf);
    let h = Harness::start_with(|c| c.tls.files = Some((cert, key))).await;
    (h, leaf.2)
}

#[tokio::test]
async fn https_with_http1_and_http2_by_alpn() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = tls_gateway(&pki, dir.path()).await;
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12][..];

    let tls = handshake(&h, client_config(&pki, &[b"h2", b"http/1.1"], all)).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = report_request();
    *req.uri_mut() = format!("https://localhost{}", req.uri()).parse().unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=31536000"
    );

    let tls = handshake(
        &h,
        client_config(&pki, &[b"http/1.1"], &[&rustls::version::TLS12]),
    )
    .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(report_request()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"Date,QueueId"));
    // The upstream is told the client came over HTTPS.
    assert_eq!(h.sim.recorded()[1].headers["x-forwarded-proto"], "https");
}

/// A TLS 1.1 ClientHello (no supported_versions extension) gets a fatal
/// alert instead of a ServerHello.
#[tokio::test]
async fn tls_1_1_is_refused() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = tls_gateway(&pki, dir.path()).await;
    let mut body = vec![0x03, 0x02];
    body.extend([0x11; 32]);
    body.push(0x00); // no session id
    body.extend([0x00, 0x04, 0xc0, 0x2f, 0x00, 0x2f]);
    body.extend([0x01, 0x00]);
    let mut hello = vec![0x01, 0x00, 0x00, body.len() as u8];
    hello.extend(body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, hello.len() as u8];
    record.extend(hello);
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&record).await.unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    assert_eq!(
        answer.first(),
        Some(&0x15),
        "an alert record: {answer:02x?}"
    );
    assert_eq!(answer.get(5), Some(&2), "fatal: {answer:02x?}");
    assert!(
        matches!(answer.get(6), Some(40 | 70)),
        "handshake_failure or protocol_version: {answer:02x?}"
    );
}

#[tokio::test]
async fn certificates_rotate_without_dropping_connections() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (h, first) = tls_gateway(&pki, dir.path()).await;
    let config = client_config(&pki, &[b"http/1.1"], &[&rustls::version::TLS13]);
    let tls = handshake(&h, Arc::clone(&config)).await;
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], first);
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        open.send_request(report_request()).await.unwrap().status(),
        StatusCode::OK
    );

    let second = pki.leaf();
    write_leaf(dir.path(), &second);
    h.state.reload_tls(true);
    let tls = handshake(&h, Arc::clone(&config)).await;
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0],
        second.2,
        "new handshakes see the new cert"
    );
    let resp = open.send_request(report_request()).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the open connection keeps working"
    );

    std::fs::write(
        dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nbroken\n",
    )
    .unwrap();
    h.state.reload_tls(true);
    let tls = handshake(&h, config).await;
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0],
        second.2,
        "a broken file keeps the old cert"
    );
    let m = h.metrics_text();
    assert!(
        m.contains(r#"chime_gateway_tls_reloads_total{result="success"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_tls_reloads_total{result="failure"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn plain_http_listener_only_redirects() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let leaf = pki.leaf();
    let (cert, key) = write_leaf(dir.path(), &leaf);
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::start_with(|c| {
        c.tls.files = Some((cert, key));
        c.tls.redirect_from = Some(free);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(free).await.unwrap();
    s.write_all(b"GET /Chime/Report/X?queueId=1 HTTP/1.1\r\nHost: gw.example.com:80\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 308"), "{out}");
    assert!(
        out.contains(&format!(
            "location: https://gw.example.com:{}/Chime/Report/X?queueId=1",
            h.addr.port()
        )),
        "{out}"
    );
    // HTTP/2 (prior knowledge): the host is the target's authority, and
    // an answer to HEAD carries no DATA.
    let mut send = Harness::h2(free).await;
    for method in [http::Method::GET, http::Method::HEAD] {
        let req = Request::builder()
            .method(method)
            .uri("http://gw.example.com/Chime/Report/X?queueId=1")
            .body(Empty::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            resp.headers()["location"],
            format!(
                "https://gw.example.com:{}/Chime/Report/X?queueId=1",
                h.addr.port()
            )
            .as_str()
        );
        assert!(resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());
    }
    assert!(h.sim.recorded().is_empty());
}

/// A TLS terminator in front of the simulator: an HTTPS upstream.
async fn https_upstream(
    leaf: &(String, String, CertificateDer<'static>),
    sim: &Simulator,
) -> std::net::SocketAddr {
    https_upstream_offering(leaf, sim, None).await
}

/// [`https_upstream`], offering only `alpn` when given.
async fn https_upstream_offering(
    leaf: &(String, String, CertificateDer<'static>),
    sim: &Simulator,
    alpn: Option<&[&[u8]]>,
) -> std::net::SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_leaf(dir.path(), leaf);
    let resolver = Arc::new(chime_gateway::tls::CertResolver::new(&cert, &key).unwrap());
    let mut server = (*resolver.server_config().unwrap()).clone();
    if let Some(alpn) = alpn {
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = sim.addr();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                }
            });
        }
    });
    addr
}

/// A gateway in front of the HTTPS `upstream`, trusting the test CA (kept
/// in the returned directory).
async fn gateway_trusting(
    pki: &Pki,
    sim: Simulator,
    upstream: std::net::SocketAddr,
) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pki.ca.pem()).unwrap();
    let mut config = harness::base_config(&format!("https://{upstream}/Chime"));
    config.upstream.ca_file = Some(ca);
    (Harness::start_config(sim, config).await, dir)
}

/// HTTP/1.1 over TLS goes through the gateway's own HTTP/1 client: the
/// answer arrives whole, `Host` names the upstream, and the connection is
/// kept for the next request.
#[tokio::test]
async fn upstream_over_https_with_http1_only() {
    let pki = Pki::new();
    let sim = harness::simulator(&[MANAGER]).await;
    let upstream = https_upstream_offering(&pki.leaf(), &sim, Some(&[b"http/1.1"])).await;
    let (h, _dir) = gateway_trusting(&pki, sim, upstream).await;
    let first = h.get_as(MANAGER, &report()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let again = h.get_as(MANAGER, &report()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    assert!(!first.body.is_empty());
    let recorded = h.sim.recorded();
    assert_eq!(recorded.len(), 2);
    assert_eq!(recorded[0].version, http::Version::HTTP_11);
    assert_eq!(
        recorded[0].headers.get("host").unwrap(),
        &upstream.to_string()
    );
    assert!(h
        .metrics_text()
        .contains("chime_gateway_upstream_connections 1\n"));
}

#[tokio::test]
async fn upstream_over_https_with_a_custom_ca() {
    let pki = Pki::new();
    let sim = harness::simulator(&[MANAGER]).await;
    let upstream = https_upstream(&pki.leaf(), &sim).await;
    let (h, _dir) = gateway_trusting(&pki, sim, upstream).await;
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let recorded = h.sim.recorded();
    assert_eq!(recorded.len(), 1);
    // The upstream offered HTTP/2 by ALPN, so the pool used it, with the
    // authority in `:authority` rather than a `Host` header.
    assert_eq!(recorded[0].version, http::Version::HTTP_2);
    assert!(recorded[0].headers.get("host").is_none());
    // A second request shares the same HTTP/2 connection.
    let again = h.get_as(MANAGER, &report()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(h
        .metrics_text()
        .contains("chime_gateway_upstream_connections 1\n"));

    // Without the CA the upstream's certificate is not trusted: 502, nothing sent.
    let sim = harness::simulator(&[MANAGER]).await;
    let upstream = https_upstream(&pki.leaf(), &sim).await;
    let h = Harness::start_config(
        sim,
        harness::base_config(&format!("https://{upstream}/Chime")),
    )
    .await;
    let a = h.get_as(MANAGER, &report()).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_unavailable")
    );
    assert!(h.sim.recorded().is_empty());
    assert!(h
        .metrics_text()
        .contains(r#"chime_gateway_upstream_errors_total{kind="connect"} 1"#));
}
