//! The command line: `serve`, `check-config`, `demo`, `simulate`, `keys`,
//! `users` and `migrate`.

mod keys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, LogConfig, LogFormat, ProcessEnv};
use crate::demo;
use crate::probe;
use crate::server::Gateway;

/// Authenticating, ACL-enforcing reverse proxy for Chime's reporting API.
#[derive(Debug, Parser)]
#[command(name = "chime-gateway", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a configuration file and print the effective settings (secrets masked).
    CheckConfig {
        /// Configuration file.
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Manage API keys in the configured key store.
    Keys {
        /// Configuration file (names the key store).
        #[arg(long, global = true, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Use this store instead: a key file path or a postgres:// URL.
        #[arg(long, global = true)]
        store: Option<String>,
        /// What to do.
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Manage users (role, queues, tier) in the configured key store.
    Users {
        /// Configuration file (names the key store).
        #[arg(long, global = true, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Use this store instead: a key file path or a postgres:// URL.
        #[arg(long, global = true)]
        store: Option<String>,
        /// What to do.
        #[command(subcommand)]
        command: keys::UsersCommand,
    },
    /// Apply the PostgreSQL key store's schema (idempotent).
    Migrate {
        /// Configuration file (names the key store).
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// A postgres:// URL instead of the configured store.
        #[arg(long)]
        store: Option<String>,
    },
    /// Ask this host's gateway, on its admin listener, whether it is alive:
    /// exit 0 if it is, 1 if not (a container's health check).
    Probe {
        /// Configuration file (names the admin listener).
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Ask whether it is ready for traffic (`/readyz`) instead of alive
        /// (`/healthz`).
        #[arg(long)]
        ready: bool,
        /// Give up after this long (`2s`).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Run the gateway in front of a built-in simulated Chime, with demo keys.
    Demo {
        /// Gateway address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
    /// Run only the simulated Chime (for benchmarks and trying a configuration).
    Simulate {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        /// Accepted bearer keys (default: the demo keys).
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Wait this long before each answer, like a busy Chime database (`100ms`).
        #[arg(long, value_parser = humantime::parse_duration)]
        latency: Option<std::time::Duration>,
        /// Answer every report with a CSV body of exactly this many bytes.
        #[arg(long, conflicts_with = "latency")]
        report_bytes: Option<u64>,
        /// Write that CSV in chunks of this many bytes, one row each (a
        /// Chime that flushes more often writes smaller ones).
        #[arg(long, requires = "report_bytes", default_value_t = 65536,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(64..))]
        report_chunk_bytes: usize,
        /// Send that CSV with a `Content-Length` instead of chunked.
        #[arg(long, requires = "report_bytes")]
        report_content_length: bool,
    },
}

/// Installs the tracing subscriber (`RUST_LOG` overrides the configured
/// level) and the hook that logs panics through it.
pub fn init_tracing(log: &LogConfig) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    crate::unwind::log_panics();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Key commands are synchronous and must not run inside the server runtime.
    let edited = match cli.command {
        Command::Keys {
            config,
            store,
            command,
        } => keys::run_keys(&config, store.as_deref(), command),
        Command::Users {
            config,
            store,
            command,
        } => keys::run_users(&config, store.as_deref(), command),
        Command::Migrate { config, store } => keys::run_migrate(&config, store.as_deref()),
        other => return serve_main(other),
    };
    match edited {
        Ok(out) => {
            print_out(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chime-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn print_out(text: &str) {
    print!("{text}");
}

fn serve_main(command: Command) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !matches!(command, Command::Simulate { .. }) {
        // The gateway's requests are served by its own worker threads
        // (`listen.workers`); this runtime only runs the admin listener,
        // background upkeep and (in the demo) the simulator.
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chime-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(command))
}

/// The exit status of `serve` and `check-config` for a configuration they
/// refuse (the systemd unit does not restart on it).
const REFUSED_CONFIG: u8 = 2;

/// The configuration at `path` with the process's environment over it; on
/// an error, says why and gives `refused` as the exit status.
fn load(path: &std::path::Path, refused: u8) -> Result<Config, ExitCode> {
    Config::load(path, &ProcessEnv).map_err(|e| {
        eprintln!("chime-gateway: invalid configuration: {e}");
        ExitCode::from(refused)
    })
}

#[allow(clippy::print_stdout)]
async fn run(command: Command) -> ExitCode {
    match command {
        Command::CheckConfig { config: path } => match load(&path, REFUSED_CONFIG) {
            Ok(c) => {
                println!("# {}: OK\n{}", path.display(), c.to_masked_toml());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve { config } => {
            let config = match load(&config, REFUSED_CONFIG) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_tracing(&config.log);
            match Gateway::bind(config).await {
                Ok(gw) => {
                    gw.run(shutdown_signal()).await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start");
                    eprintln!("chime-gateway: cannot start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Probe {
            config,
            ready,
            timeout,
        } => {
            // A health check's exit codes are 0 and 1 only (Docker keeps 2):
            // a configuration the probe cannot read is a failed check too.
            let config = match load(&config, 1) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let check = if ready {
                probe::Check::Ready
            } else {
                probe::Check::Alive
            };
            match probe::get(config.admin.address, check.path(), timeout).await {
                Ok(body) => {
                    println!("{body}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("chime-gateway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Keys { .. } | Command::Users { .. } | Command::Migrate { .. } => ExitCode::FAILURE,
        Command::Simulate {
            listen,
            keys,
            latency,
            report_bytes,
            report_chunk_bytes,
            report_content_length,
        } => {
            let keys = if keys.is_empty() {
                vec![demo::MANAGER_KEY.to_owned(), demo::ADMIN_KEY.to_owned()]
            } else {
                keys
            };
            let config = crate::simulator::SimulatorConfig {
                record: false,
                keys,
                reports: crate::catalog::builtin(),
            };
            match crate::simulator::Simulator::start_on(listen, config).await {
                Ok(sim) => {
                    if let Some(d) = latency {
                        sim.set_behavior(crate::simulator::Behavior::Slow(d));
                    }
                    if let Some(n) = report_bytes {
                        sim.set_chunk_bytes(report_chunk_bytes);
                        sim.set_announce_length(report_content_length);
                        sim.set_behavior(crate::simulator::Behavior::Large(n));
                    }
                    println!("simulated Chime on {}", sim.base_url());
                    shutdown_signal().await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("chime-gateway: cannot start the simulator: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { listen, admin } => {
            init_tracing(&LogConfig {
                format: LogFormat::Text,
                level: "info".into(),
            });
            match demo::start(listen, admin).await {
                Ok(d) => {
                    println!(
                        "{}",
                        demo::instructions(
                            d.gateway.public_addr(),
                            d.gateway.admin_addr(),
                            &d.simulator.base_url()
                        )
                    );
                    d.gateway.run(shutdown_signal()).await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("chime-gateway: cannot start the demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
