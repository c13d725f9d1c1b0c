//! `chime-gateway demo`: the gateway in front of the built-in simulated
//! Chime, with two demo keys, so anyone can try it with one command.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::catalog;
use crate::clock::SystemClock;
use crate::config::{Config, KeySource, ProcessEnv};
use crate::server::Gateway;
use crate::simulator::{Simulator, SimulatorConfig};
use crate::state::AppState;
use crate::BoxError;

/// The demo key store (hashes only), compiled in.
pub const DEMO_KEYS: &str = include_str!("../config/demo-keys.toml");

/// The example key from Chime's documentation: a manager of queue 1 only.
pub const MANAGER_KEY: &str = "b5c38d85-a042-4cef-8418-eb06752e346b";

/// The demo admin's key.
pub const ADMIN_KEY: &str = "0f0e9a4c-2b7d-4c1e-9d3a-6b5f8e2a7c10";

/// A running demo: the simulator and the bound gateway in front of it.
#[derive(Debug)]
pub struct Demo {
    /// The simulated Chime (stops when dropped).
    pub simulator: Simulator,
    /// The gateway, bound and ready to run.
    pub gateway: Gateway,
    /// Holds the demo's key file (a copy of [`DEMO_KEYS`] the key page can
    /// edit); removed when the demo ends.
    pub keys_dir: tempfile::TempDir,
}

/// Starts the simulator and binds the gateway in front of it.
pub async fn start(listen: SocketAddr, admin: SocketAddr) -> Result<Demo, BoxError> {
    let simulator = Simulator::start(SimulatorConfig {
        record: false,
        keys: vec![MANAGER_KEY.to_owned(), ADMIN_KEY.to_owned()],
        reports: catalog::builtin(),
    })
    .await?;
    let toml = format!(
        "[listen]\naddress = \"{listen}\"\n[admin]\naddress = \"{admin}\"\n\
         [upstream]\nbase_url = \"{}\"\n[log]\nformat = \"text\"\n",
        simulator.base_url()
    );
    let mut config = Config::from_toml(&toml, "<demo>", Path::new("."), &ProcessEnv)?;
    let keys_dir = tempfile::tempdir()?;
    config.keys.source = KeySource::File(write_demo_keys(keys_dir.path())?);
    let gateway =
        Gateway::bind_state(AppState::build(config, Arc::new(SystemClock)).await?).await?;
    Ok(Demo {
        simulator,
        gateway,
        keys_dir,
    })
}

/// Writes the demo keys as an editable key file in `dir` (mode 0600,
/// through the key store's own writer) and returns its path.
pub fn write_demo_keys(dir: &Path) -> Result<std::path::PathBuf, BoxError> {
    let path = dir.join("keys.toml");
    crate::keystore::file::KeyFile::parse(DEMO_KEYS, "<demo>")?.save(&path)?;
    Ok(path)
}

/// What the demo prints: addresses, keys and ready-to-paste commands.
pub fn instructions(public: SocketAddr, admin: SocketAddr, upstream: &str) -> String {
    format!(
        "\
chime-gateway demo
  gateway        http://{public}
  admin          http://{admin}   (/healthz /readyz /metrics)
  key page       http://{admin}/   (users and keys; loopback only, no token needed)
  simulated Chime {upstream}

Demo keys:
  {MANAGER_KEY}  demo-manager (manager of queue 1 only; the key from Chime's docs)
  {ADMIN_KEY}  demo-admin (admin: every queue and tenant-wide report)

Allowed: queue 1's report as CSV (Chime's documented example, host changed):
  curl 'http://{public}/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true' -H 'Authorization: Bearer {MANAGER_KEY}'

Refused by the queue ACL (the manager does not manage queue 2): 403 queue_forbidden
  curl -i 'http://{public}/Chime/Report/InboundVsAnsweredChats?queueId=2&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true' -H 'Authorization: Bearer {MANAGER_KEY}'

Metrics:
  curl http://{admin}/metrics

Press Ctrl-C to stop.
"
    )
}
