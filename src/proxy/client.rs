//! The upstream connector: TCP through an http-or-https connector (rustls
//! with webpki or native roots plus an optional CA file, HTTP/2 offered by
//! ALPN), with the connect timeout from config, counting the connections
//! it opened. [`super::pool`] keeps the connections it makes.

use std::sync::Arc;

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use prometheus::IntGauge;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Roots, UpstreamConfig};

/// What makes upstream connections.
pub type Connector = HttpsConnector<Counting<HttpConnector>>;

/// A connector that keeps a gauge of the connections it opened and that are still open.
#[derive(Debug, Clone)]
pub struct Counting<C> {
    inner: C,
    open: IntGauge,
}

impl<C> tower::Service<Uri> for Counting<C>
where
    C: tower::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = CountedIo<C::Response>;
    type Error = C::Error;
    type Future = crate::BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let open = self.open.clone();
        Box::pin(async move {
            let io = connecting.await?;
            open.inc();
            Ok(CountedIo { inner: io, open })
        })
    }
}

pin_project_lite::pin_project! {
    /// A connection counted in the open-connections gauge until dropped.
    #[derive(Debug)]
    pub struct CountedIo<T> {
        #[pin]
        inner: T,
        open: IntGauge,
    }

    impl<T> PinnedDrop for CountedIo<T> {
        fn drop(this: Pin<&mut Self>) {
            this.open.dec();
        }
    }
}

impl<T: hyper::rt::Read> hyper::rt::Read for CountedIo<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write> hyper::rt::Write for CountedIo<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }
}

impl<T: Connection> Connection for CountedIo<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// The upstream TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file could not be read or holds no certificate.
    #[error("upstream.ca_file `{path}`: {message}")]
    CaFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("upstream TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate for mTLS cannot be used.
    #[error("upstream.client_cert_file: {0}")]
    ClientCert(String),
    /// The service key cannot be sent in a header (config validation
    /// refuses such keys first).
    #[error("the upstream service key cannot be sent in an Authorization header")]
    ServiceKey,
}

/// The verifier behind `danger_accept_invalid_certs`: checks signatures
/// on the handshake, but accepts any certificate.
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn root_store(cfg: &UpstreamConfig) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match cfg.roots {
        Roots::Webpki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::Native => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "could not load some native root certificates");
            }
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            tracing::info!(added, ignored, "loaded native root certificates");
        }
    }
    if let Some(path) = &cfg.ca_file {
        let err = |message: String| TlsSetupError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// Builds the connector; `open` counts the connections it opened that are
/// still open.
pub fn build(cfg: &UpstreamConfig, open: IntGauge) -> Result<Connector, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = if cfg.danger_accept_invalid_certs {
        tracing::warn!(
            "upstream.danger_accept_invalid_certs is on: the upstream's certificate is NOT verified; \
             anyone on the path can read and change report traffic"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
    } else {
        builder.with_root_certificates(root_store(cfg)?)
    };
    let tls = match &cfg.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certified = crate::tls::load(cert, key)
                .map_err(|e| TlsSetupError::ClientCert(e.to_string()))?;
            let chain = certified.cert.clone();
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsSetupError::ClientCert(e.to_string()))?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.connect_timeout));
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(Counting { inner: http, open }))
}
