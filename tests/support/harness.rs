//! Starts the real gateway on 127.0.0.1:0 in front of the simulated Chime.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use chime_gateway::clock::SystemClock;
use chime_gateway::config::{Config, KeySource};
use chime_gateway::demo::{ADMIN_KEY, DEMO_KEYS, MANAGER_KEY};
use chime_gateway::server::Gateway;
use chime_gateway::simulator::{Simulator, SimulatorConfig};
use chime_gateway::state::AppState;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const MANAGER: &str = MANAGER_KEY;
pub const ADMIN: &str = ADMIN_KEY;

pub const DOC_QUERY: &str =
    "queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true";

/// The documented report request: queue 1, November 2020, as CSV.
pub fn report() -> String {
    format!("/Chime/Report/InboundVsAnsweredChats?{DOC_QUERY}")
}

/// A change to the test configuration.
pub type Tweak = fn(&mut Config);

/// The two ways an upstream answer reaches its client, for the tests of
/// answers to run under both: through a flight (coalescing on, the default
/// here), and straight from the upstream connection (coalescing and the
/// cache off, as `benches/compare.sh` runs it).
pub const ANSWER_PATHS: [(&str, Tweak); 2] = [
    ("flight", |_| {}),
    ("alone", |c| {
        c.cache.enabled = false;
        c.cache.coalesce = false;
    }),
];

pub struct Harness {
    pub sim: Simulator,
    pub addr: std::net::SocketAddr,
    pub admin: std::net::SocketAddr,
    pub state: Arc<AppState>,
    pub client: Client<HttpConnector, Empty<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// A shared service's URL from `var`, or None after saying (past the test
/// harness's capture) that the test is skipped. Under
/// CHIME_GATEWAY_REQUIRE_SERVICES=1 a missing variable fails the test.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) => Some(url),
        Err(_) if std::env::var("CHIME_GATEWAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!("CHIME_GATEWAY_REQUIRE_SERVICES=1 but {var} is not set")
        }
        Err(_) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipped: set {var} to run this test");
            None
        }
    }
}

/// A simulated Chime accepting `keys`, with the stock reports.
pub async fn simulator(keys: &[&str]) -> Simulator {
    Simulator::start(SimulatorConfig {
        record: true,
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        reports: chime_gateway::catalog::builtin(),
    })
    .await
    .expect("simulator")
}

pub fn base_config(upstream: &str) -> Config {
    let toml = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n\
         [upstream]\nbase_url = \"{upstream}\"\n"
    );
    let mut c = Config::from_toml(
        &toml,
        "<test>",
        Path::new("."),
        &std::collections::HashMap::new(),
    )
    .expect("test config");
    c.keys.source = KeySource::Embedded(DEMO_KEYS);
    // Audit lines on stdout would bypass the test harness's capture.
    c.audit.target = chime_gateway::audit::AuditTarget::Off;
    // Tests of other concerns assert what reached the simulator for each
    // request, so repeated requests must not be answered from the response
    // cache. tests/cache.rs turns it on.
    c.cache.enabled = false;
    // Generous budgets: tests of other concerns send many requests as one
    // user. tests/ratelimit.rs sets its own tiers.
    c.ratelimit.tiers = vec![
        chime_gateway::ratelimit::Tier::new("default", 60_000, 10_000, 64),
        chime_gateway::ratelimit::Tier::new("internal", 60_000, 10_000, 64),
    ];
    c
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Harness {
        let sim = simulator(&[MANAGER, ADMIN, "service-key-123"]).await;
        let mut config = base_config(&sim.base_url());
        tweak(&mut config);
        Self::start_config(sim, config).await
    }

    pub async fn start_config(sim: Simulator, config: Config) -> Harness {
        let state = AppState::build(config, Arc::new(SystemClock))
            .await
            .expect("state");
        let gw = Gateway::bind_state(state).await.expect("bind");
        let addr = gw.public_addr();
        let admin = gw.admin_addr();
        let state = Arc::clone(gw.state());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gw.run(async move {
            let _ = stopped.await;
        }));
        Harness {
            sim,
            addr,
            admin,
            state,
            client: Client::builder(TokioExecutor::new()).build_http(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, target: &str) -> String {
        format!("http://{}{target}", self.addr)
    }

    pub async fn send(&self, method: Method, target: &str, headers: &[(&str, &str)]) -> Answer {
        self.send_to(method, &self.url(target), headers).await
    }

    /// `send` to any URL: the simulated Chime's, say, to compare with
    /// what the gateway passed on.
    pub async fn send_to(&self, method: Method, url: &str, headers: &[(&str, &str)]) -> Answer {
        let (parts, body) = self.open_to(method, url, headers).await.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// The response to a request, as soon as its head has arrived: the
    /// body is left to the caller to read (or not).
    pub async fn open_to(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> http::Response<hyper::body::Incoming> {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.client
            .request(req.body(Empty::new()).unwrap())
            .await
            .expect("request")
    }

    /// `target` with `key`, opened through the gateway ([`Self::open_to`]).
    pub async fn open_as(&self, key: &str, target: &str) -> http::Response<hyper::body::Incoming> {
        let auth = format!("Bearer {key}");
        self.open_to(Method::GET, &self.url(target), &[("authorization", &auth)])
            .await
    }

    pub async fn get(&self, target: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, target, headers).await
    }

    /// `target` with `key`, asked of the simulated Chime directly.
    pub async fn upstream_get_as(&self, key: &str, target: &str) -> Answer {
        let auth = format!("Bearer {key}");
        let url = format!("http://{}{target}", self.sim.addr());
        self.send_to(Method::GET, &url, &[("authorization", &auth)])
            .await
    }

    pub async fn get_as(&self, key: &str, target: &str) -> Answer {
        let auth = format!("Bearer {key}");
        self.get(target, &[("authorization", &auth)]).await
    }

    pub async fn admin_get(&self, path: &str) -> Answer {
        self.admin_call(Method::GET, path, None, &[]).await
    }

    /// An admin API call as the key page makes it (with the CSRF header),
    /// plus `headers`; `body` is sent as JSON.
    pub async fn admin_call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin))
            .header("x-chime-gateway-admin", "1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body.map_or_else(Vec::new, |b| serde_json::to_vec(&b).unwrap());
        let client =
            Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
        let resp = client
            .request(
                req.body(http_body_util::Full::new(Bytes::from(body)))
                    .unwrap(),
            )
            .await
            .expect("admin request");
        let (parts, body) = resp.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    /// An HTTP/2 connection (prior knowledge) to `addr`, for requests with
    /// absolute targets.
    pub async fn h2(
        addr: std::net::SocketAddr,
    ) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
        let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    }

    /// Writes raw bytes on a fresh connection and reads until the server closes it.
    pub async fn raw(&self, request: &[u8]) -> String {
        String::from_utf8_lossy(&self.raw_bytes(request).await).into_owned()
    }

    /// [`Harness::raw`], the answer's bytes as they came.
    pub async fn raw_bytes(&self, request: &[u8]) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    }

    /// Waits (polling, at most 5 s) until /metrics contains `line`.
    pub async fn wait_for_metric(&self, line: &str) {
        let started = std::time::Instant::now();
        while !self.metrics_text().contains(line) {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "never saw {line}\n{}",
                self.metrics_text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn metrics_text(&self) -> String {
        String::from_utf8(chime_gateway::metrics::render(&self.state.registry)).unwrap()
    }

    /// Triggers shutdown and returns the gateway's task, which ends after draining.
    pub fn begin_shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().expect("running")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
