//! The shared state built once at start-up: config, key store, catalog,
//! metrics registry, readiness and the upstream proxy.

use std::sync::Arc;

use prometheus::Registry;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::config::{Config, KeysConfig};
use crate::keystore::file::{FileKeyStore, KeyFileError};
use crate::keystore::KeyStore;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, TlsSetupError};
use crate::readiness::Readiness;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key file is unusable.
    #[error("key store: {0}")]
    Keys(#[from] KeyFileError),
    /// Upstream TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything a running gateway shares.
#[derive(Debug)]
pub struct AppState {
    /// The validated configuration.
    pub config: Config,
    /// Metrics registry served on `/metrics`.
    pub registry: Registry,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness state.
    pub readiness: Arc<Readiness>,
    /// Key store.
    pub keys: Arc<dyn KeyStore>,
    /// Report catalog.
    pub catalog: Arc<Catalog>,
    /// Upstream proxy.
    pub proxy: Proxy,
}

impl AppState {
    /// Builds the state from `config`, loading keys and setting up the upstream client.
    pub fn build(config: Config, clock: Arc<dyn Clock>) -> Result<AppState, StartError> {
        let registry = Registry::new();
        let metrics = Arc::new(Metrics::register(&registry)?);
        let readiness = Arc::new(Readiness::default());
        let keys: Arc<dyn KeyStore> = match &config.keys {
            KeysConfig::File(path) => Arc::new(FileKeyStore::open(path, clock)?),
            KeysConfig::Embedded(text) => Arc::new(FileKeyStore::embedded(text, clock)?),
        };
        readiness.set_keys_loaded(true);
        let catalog = Arc::new(Catalog::new(&config.catalog.report));
        let proxy = Proxy::new(
            &config.upstream,
            Arc::clone(&metrics),
            Arc::clone(&readiness),
        )?;
        Ok(AppState {
            config,
            registry,
            metrics,
            readiness,
            keys,
            catalog,
            proxy,
        })
    }
}
