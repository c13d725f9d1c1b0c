//! Listeners: the public gateway and the admin endpoint.
//!
//! The public listener serves HTTP/1.1 and HTTP/2 (hyper-util auto) with a
//! header read timeout, header size and count limits, HTTP/2 stream and
//! reset limits, an idle timeout (no request in flight and no bytes moved),
//! and at most `max_connections` open connections (further ones wait in the
//! kernel's accept backlog). On shutdown it stops accepting, marks the
//! instance not ready, asks every connection to close after its in-flight
//! requests (long CSV streams included) and waits up to `shutdown_grace`.

mod balance;
mod conn;
mod idle;
mod side;
mod watchdog;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use http::Request;
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::admin::Admin;
use crate::body;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::stack::{self, Stack};
use crate::state::{AppState, StartError};
use crate::workers::Workers;
use balance::{Balance, Handoff, Inbox, Open};
use conn::{Builders, Conn};
use idle::Limits;

/// A bound, not yet running gateway.
#[derive(Debug)]
pub struct Gateway {
    state: Arc<AppState>,
    public: TcpListener,
    admin: TcpListener,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Gateway {
    /// Builds the state from `config` and binds both listeners.
    pub async fn bind(config: Config) -> Result<Gateway, StartError> {
        let state = AppState::build(config, Arc::new(SystemClock)).await?;
        Self::bind_state(state).await
    }

    /// Binds both listeners for an already built state.
    pub async fn bind_state(state: AppState) -> Result<Gateway, StartError> {
        let public = bind(state.config.listen.address).await?;
        if let Some(addr) = state.config.tls.redirect_from {
            *state.redirect.lock().unwrap_or_else(|p| p.into_inner()) = Some(bind(addr).await?);
        }
        let admin = bind(state.config.admin.address).await?;
        Ok(Gateway {
            state: Arc::new(state),
            public,
            admin,
        })
    }

    /// The public listener's address.
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .unwrap_or(self.state.config.listen.address)
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .unwrap_or(self.state.config.admin.address)
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains.
    ///
    /// The public listener is served by `listen.workers` threads
    /// ([`crate::workers`]); the admin listener and background upkeep run
    /// on the caller's runtime.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Gateway {
            state,
            public,
            admin,
        } = self;
        let tls = match &state.tls {
            None => None,
            Some(resolver) => match resolver.server_config() {
                Ok(config) => Some(tokio_rustls::TlsAcceptor::from(config)),
                Err(e) => {
                    tracing::error!(error = %e, "TLS configuration refused; not serving");
                    return;
                }
            },
        };
        let address = public.local_addr().ok();
        let (stop_tx, stop) = watch::channel(false);
        let max = state.config.listen.max_connections;
        let slots = Arc::new(Semaphore::new(max));
        let n = state.config.listen.workers;
        let workers = public
            .into_std()
            .and_then(|l| {
                (0..n)
                    .map(|_| l.try_clone())
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .and_then(|listeners| {
                let (balance, inboxes) = Balance::new(&state.metrics.worker_connections, n);
                let seats = listeners
                    .into_iter()
                    .zip(inboxes)
                    .map(|(listener, inbox)| Some(Seat { listener, inbox }))
                    .collect();
                let accept = Arc::new(Accept {
                    state: Arc::clone(&state),
                    slots: Arc::clone(&slots),
                    tls,
                    stop,
                    seats: std::sync::Mutex::new(seats),
                    balance,
                });
                Workers::start(n, move |i| Arc::clone(&accept).serve(i))
            });
        let workers = match workers {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the worker threads; not serving");
                return;
            }
        };
        let admin_task = tokio::spawn(serve_admin(admin, Admin::new(Arc::clone(&state))));
        let maintenance = spawn_maintenance(&state);
        let redirect_task = self_redirect(&state, address);
        tracing::info!(
            address = %address.map(|a| a.to_string()).unwrap_or_default(),
            workers = n,
            "gateway listening"
        );

        shutdown.await;
        state.readiness.start_draining();
        // Each worker closes its listener and asks its connections to close.
        let _ = stop_tx.send(true);
        let grace = state.config.listen.shutdown_grace;
        tracing::info!(grace = ?grace, open = state.metrics.connections.get(), "draining connections");
        // Every connection holds a slot: all slots free means all closed.
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                open = state.metrics.connections.get(),
                "shutdown grace period over; closing remaining connections"
            );
        }
        workers.stop().await;
        // Lines of the last moments are written before the process ends.
        state.audit.flush().await;
        admin_task.abort();
        if let Some(task) = redirect_task {
            task.abort();
        }
        for task in maintenance {
            task.abort();
        }
        tracing::info!("gateway stopped");
    }
}

/// What every worker's accept loop shares.
struct Accept {
    state: Arc<AppState>,
    /// One per open connection, `listen.max_connections` in all.
    slots: Arc<Semaphore>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Becomes true at shutdown.
    stop: watch::Receiver<bool>,
    /// Worker `i`'s seat, taken by it.
    seats: std::sync::Mutex<Vec<Option<Seat>>>,
    /// Which worker serves an accepted connection.
    balance: Arc<Balance>,
}

/// What one worker accepts and is handed connections through.
struct Seat {
    /// Its handle on the public socket.
    listener: std::net::TcpListener,
    /// Connections other workers accepted for it.
    inbox: Inbox,
}

/// What a worker's connections share.
struct Worker {
    builders: Arc<Builders>,
    svc: Stack,
}

/// Resolves once `stop` is true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Accept {
    /// Worker `me`'s accept loop: serves the connections it accepts or is
    /// handed until the stop, then closes its handle on the listener (the
    /// socket closes with the last).
    async fn serve(self: Arc<Self>, me: usize) {
        let seat = self
            .seats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(me)
            .and_then(Option::take);
        let Some(Seat {
            listener,
            mut inbox,
        }) = seat
        else {
            return;
        };
        let public = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "a worker cannot listen");
                return;
            }
        };
        let worker = Worker {
            builders: Arc::new(Builders::new(&self.state.config.listen)),
            svc: stack::build(&self.state, me),
        };
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                Some(h) = inbox.recv() => match tokio::net::TcpStream::from_std(h.stream) {
                    Ok(stream) => self.start(&worker, stream, h.peer, h.slot, h.open),
                    Err(e) => tracing::warn!(error = %e, "a handed-over connection is lost"),
                },
                Some((accepted, slot)) = self.accept(&public) => match accepted {
                    Ok((stream, peer)) => self.place(&worker, me, stream, peer, slot),
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        drop(slot);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = stopped(&mut stop) => break,
            }
        }
    }

    /// Serves a connection worker `me` accepted, or hands it to the worker
    /// with the fewest open connections.
    fn place(
        &self,
        worker: &Worker,
        me: usize,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
    ) {
        let _ = stream.set_nodelay(true);
        let (to, open) = self.balance.place(me);
        if to == me {
            self.start(worker, stream, peer, slot, open);
            return;
        }
        match stream.into_std() {
            Ok(stream) => {
                let handoff = Handoff {
                    stream,
                    peer,
                    slot,
                    open,
                };
                // Refused only once that worker has stopped: the
                // connection closes, as at shutdown.
                let _ = self.balance.hand_over(to, handoff);
            }
            Err(e) => tracing::warn!(error = %e, "an accepted connection is lost"),
        }
    }

    /// The next connection on `public`, once there is a slot for it;
    /// `None` if the slots were closed (they are not).
    async fn accept(
        &self,
        public: &TcpListener,
    ) -> Option<(
        std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
        OwnedSemaphorePermit,
    )> {
        let slot = Arc::clone(&self.slots).acquire_owned().await.ok()?;
        Some((public.accept().await, slot))
    }

    /// Serves one connection on this worker, in a task of its own.
    fn start(
        &self,
        worker: &Worker,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        open: Open,
    ) {
        let state = &self.state;
        let conn = Conn {
            builders: Arc::clone(&worker.builders),
            peer,
            limits: Limits {
                idle: state.config.listen.idle_timeout,
                stall: state.config.listen.stall_timeout,
                head: Some(state.config.listen.header_read_timeout),
            },
            park_after: state.config.listen.park_after,
            parked: state.metrics.parked_connections.clone(),
            stop: self.stop.clone(),
            tls: self.tls.is_some(),
        };
        let svc = worker.svc.clone();
        let metrics = Arc::clone(&state.metrics);
        let handshake_timeout = state.config.listen.header_read_timeout;
        metrics.connections.inc();
        let closed = move || {
            metrics.connections.dec();
            drop((slot, open));
        };
        match self.tls.clone() {
            // Not an async block around `conn.serve(..).await`: that keeps
            // room for what it captured (the connection, its socket) beside
            // the future made of them, for the connection's whole life.
            None => {
                tokio::spawn(conn.serve(svc, stream, false).map(move |()| closed()));
            }
            // Boxed: the handshake's state takes no room in plain
            // connections' tasks.
            Some(acceptor) => {
                let handshake_then_serve = Box::pin(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            conn.serve(svc, tls, h2).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                });
                tokio::spawn(handshake_then_serve.map(move |()| closed()));
            }
        }
    }
}

/// Background upkeep: key-file watching, reload on SIGHUP, and pruning of
/// the failed-authentication tracker.
fn spawn_maintenance(state: &Arc<AppState>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if state.key_file.is_some() || state.tls.is_some() {
        let s = Arc::clone(state);
        let every = s
            .config
            .keys
            .watch_interval
            .min(s.config.tls.watch_interval);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                s.reload_keys(false);
                s.reload_tls(false);
            }
        }));
        #[cfg(unix)]
        {
            let s = Arc::clone(state);
            tasks.push(tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP; files are still watched");
                    return;
                };
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the key file and the TLS certificate");
                    s.reload_keys(true);
                    s.reload_tls(true);
                }
            }));
        }
    }
    let every = state.config.catalog.refresh_interval;
    if state.config.catalog.refresh_key.is_some() && !every.is_zero() {
        let s = Arc::clone(state);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                // Failures are logged and counted inside; the catalog in force stays.
                let _ = s.refresh_catalog().await;
            }
        }));
    }
    let s = Arc::clone(state);
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            s.auth_throttle.prune();
            s.ratelimiter.prune();
        }
    }));
    tasks
}

/// The plain-HTTP listener that only redirects to HTTPS, when configured.
fn self_redirect(
    state: &Arc<AppState>,
    https: Option<SocketAddr>,
) -> Option<tokio::task::JoinHandle<()>> {
    let listener = state
        .redirect
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()?;
    let port = https.map_or(443, |a| a.port());
    let handler: side::Handler =
        Arc::new(move |req| Box::pin(std::future::ready(redirect_to_https(&req, port))));
    Some(tokio::spawn(side::serve(
        listener,
        side::Bounds::REDIRECT,
        handler,
    )))
}

/// 308 to the same host and target over HTTPS; a malformed Host gets 400.
fn redirect_to_https<B>(req: &Request<B>, https_port: u16) -> body::Response {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        // HTTP/2 names the host in the target's authority instead.
        .or_else(|| req.uri().authority().map(http::uri::Authority::as_str))
        .map(|h| {
            h.rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(name, _)| name)
        })
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':')
                })
        });
    let Some(host) = host else {
        let mut resp = body::Response::new(body::full("a Host header is required\n"));
        *resp.status_mut() = http::StatusCode::BAD_REQUEST;
        return resp;
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut resp = body::Response::new(body::empty());
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp
}

async fn serve_admin(listener: TcpListener, admin: Admin) {
    let admin = Arc::new(admin);
    let handler: side::Handler = Arc::new(move |req| {
        let admin = Arc::clone(&admin);
        Box::pin(async move { admin.handle(req).await })
    });
    side::serve(listener, side::Bounds::ADMIN, handler).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{ApiKey, Role};
    use crate::config::KeySource;
    use crate::keystore::file::KeyFile;

    /// The watcher picks up a changed key file within one second, on tokio's
    /// paused clock: a new key is accepted and a revoked one refused.
    #[tokio::test(start_paused = true)]
    async fn key_file_changes_are_live_within_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let now = jiff::Timestamp::now();
        let mut f = KeyFile::default();
        f.add_user("m1", Role::Manager, vec![1], "default").unwrap();
        let old = f.generate("m1", now, None, None).unwrap().key;
        f.save(&path).unwrap();
        let mut config = Config::defaults();
        config.keys.source = KeySource::File(path.clone());
        let state = Arc::new(
            AppState::build(config, Arc::new(SystemClock))
                .await
                .unwrap(),
        );
        let tasks = spawn_maintenance(&state);
        let valid = |key: &ApiKey| {
            let state = Arc::clone(&state);
            let hash = key.hash();
            async move { state.keys.lookup(&hash).await.unwrap().is_some() }
        };
        assert!(valid(&old).await);

        let new = f
            .generate("m1", now, Some(Duration::ZERO), None)
            .unwrap()
            .key;
        f.save(&path).unwrap();
        assert!(valid(&old).await, "not reloaded before the watcher ran");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(valid(&new).await);
        assert!(!valid(&old).await);
        for t in tasks {
            t.abort();
        }
    }
}
