//! TLS termination on the public listener.
//!
//! rustls with its safe defaults (TLS 1.2 and 1.3 only), ALPN `h2` and
//! `http/1.1`. The certificate chain and key come from PEM files and are
//! served through a resolver whose certificate can be swapped atomically:
//! a reload (files changed, or SIGHUP) affects new handshakes only, open
//! connections keep theirs, and a broken new file keeps the old
//! certificate (logged and counted).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate that cannot be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CertError {
    /// The file at fault.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: &Path, message: impl Into<String>) -> CertError {
    CertError {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Loads a chain and its key, checking that they belong together.
pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| err(cert_file, format!("cannot read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert_file, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(err(cert_file, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| err(key_file, format!("no usable private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| err(cert_file, format!("certificate and key do not match: {e}")))?;
    Ok(Arc::new(certified))
}

/// Serves the current certificate; swapped by [`CertResolver::reload`].
#[derive(Debug)]
pub struct CertResolver {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    stamp: Mutex<Option<(std::time::SystemTime, std::time::SystemTime)>>,
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl CertResolver {
    /// Loads the files now (start-up fails on error).
    pub fn new(cert_file: &Path, key_file: &Path) -> Result<Self, CertError> {
        let certified = load(cert_file, key_file)?;
        Ok(CertResolver {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: ArcSwap::new(certified),
            stamp: Mutex::new(modified(cert_file).zip(modified(key_file))),
        })
    }

    /// Loads the files again; on error the current certificate stays.
    pub fn reload(&self) -> Result<(), CertError> {
        let stamp = modified(&self.cert_file).zip(modified(&self.key_file));
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        let certified = load(&self.cert_file, &self.key_file)?;
        self.current.store(certified);
        Ok(())
    }

    /// Reloads when either file's modification time changed: `Ok(true)` after a reload.
    pub fn reload_if_changed(&self) -> Result<bool, CertError> {
        let stamp = modified(&self.cert_file).zip(modified(&self.key_file));
        if *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) == stamp {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// The server configuration: TLS 1.2/1.3, ALPN h2 then http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
