//! Asking the admin listener of the gateway on this host: `chime-gateway
//! probe` asks whether it is alive (`/healthz`) or ready for traffic
//! (`/readyz`), so that a container's health check needs no HTTP client in
//! the image (the answer's body is the probe's output, which the container
//! engine keeps beside the verdict), and `keys list` asks when keys were
//! last used (`/keys/last-used`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;

/// The most of an answer's body the probe reads: the gateway's health
/// answers are a few hundred bytes.
const MAX_BODY: usize = 16 * 1024;

/// What the probe asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `/healthz`: the process serves its admin listener.
    Alive,
    /// `/readyz`: keys loaded, upstream not dead, not draining.
    Ready,
}

impl Check {
    /// The admin path that answers it.
    pub fn path(self) -> &'static str {
        match self {
            Check::Alive => "/healthz",
            Check::Ready => "/readyz",
        }
    }
}

/// Why the gateway was not found healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect to the admin listener at {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("the admin listener at {0} broke off the exchange: {1}")]
    Exchange(SocketAddr, hyper::Error),
    #[error("the admin listener at {addr} answered {path} with {status}: {body}")]
    Status {
        addr: SocketAddr,
        path: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("no answer from the admin listener at {0} within {1:?}")]
    TimedOut(SocketAddr, Duration),
}

/// Where to ask a listener bound to `admin`: an unspecified address (every
/// interface) is asked on the loopback address of its family.
pub fn target(admin: SocketAddr) -> SocketAddr {
    let ip = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, admin.port())
}

/// `GET path` from the admin listener bound to `admin`: the answer's body
/// when it says 200, within `timeout` in all.
pub async fn get(
    admin: SocketAddr,
    path: &'static str,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let addr = target(admin);
    match tokio::time::timeout(timeout, exchange(addr, path)).await {
        Ok(answer) => answer,
        Err(_) => Err(ProbeError::TimedOut(addr, timeout)),
    }
}

async fn exchange(addr: SocketAddr, path: &'static str) -> Result<String, ProbeError> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Connect(addr, e))?;
    let broke = |e| ProbeError::Exchange(addr, e);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(broke)?;
    let driver = tokio::spawn(conn);
    let mut request = http::Request::new(Empty::new());
    *request.uri_mut() = http::Uri::from_static(path);
    if let Ok(host) = http::HeaderValue::from_str(&addr.to_string()) {
        request.headers_mut().insert(http::header::HOST, host);
    }
    let answer = async {
        let response = sender.send_request(request).await.map_err(broke)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY).collect().await;
        // A body cut short or too long still leaves the status to report.
        let body = body.map(|b| b.to_bytes()).unwrap_or_default();
        let body = String::from_utf8_lossy(&body).trim().to_owned();
        if status == StatusCode::OK {
            Ok(body)
        } else {
            Err(ProbeError::Status {
                addr,
                path,
                status,
                body,
            })
        }
    }
    .await;
    driver.abort();
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_is_asked_on_loopback() {
        for (bound, asked) in [
            ("0.0.0.0:9090", "127.0.0.1:9090"),
            ("[::]:9090", "[::1]:9090"),
            ("127.0.0.1:9091", "127.0.0.1:9091"),
            ("10.1.2.3:9090", "10.1.2.3:9090"),
            ("[fd00::1]:9090", "[fd00::1]:9090"),
        ] {
            assert_eq!(
                target(bound.parse().unwrap()),
                asked.parse::<SocketAddr>().unwrap(),
                "{bound}"
            );
        }
    }

    /// A listener that answers every connection with `answer` once it has
    /// read a request head (`None`: accepts and never answers), and the
    /// request lines it read.
    async fn listener(
        answer: Option<&'static str>,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (asked, heard) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = socket.accept().await.unwrap();
                let asked = asked.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let _ = asked.send(text.lines().next().unwrap_or_default().to_owned());
                    match answer {
                        Some(answer) => {
                            let _ = stream.write_all(answer.as_bytes()).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        (addr, heard)
    }

    #[tokio::test]
    async fn a_200_is_healthy_and_its_body_the_output() {
        let (addr, mut heard) = listener(Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}",
        ))
        .await;
        let body = get(addr, Check::Alive.path(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(body, "{\"status\":\"ok\"}");
        assert_eq!(heard.recv().await.unwrap(), "GET /healthz HTTP/1.1");
    }

    #[tokio::test]
    async fn any_other_status_is_unhealthy_and_says_why() {
        let (addr, mut heard) = listener(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 16\r\n\r\n{\"ready\":false}\n",
        ))
        .await;
        let e = get(addr, Check::Ready.path(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(heard.recv().await.unwrap(), "GET /readyz HTTP/1.1");
        assert!(
            matches!(e, ProbeError::Status { status, path: "/readyz", .. } if status == 503),
            "{e}"
        );
        let said = e.to_string();
        assert!(
            said.contains("503") && said.contains("{\"ready\":false}"),
            "{said}"
        );
    }

    #[tokio::test]
    async fn a_garbled_answer_is_unhealthy() {
        let (addr, _) = listener(Some("SSH-2.0-OpenSSH\r\n\r\n")).await;
        let e = get(addr, Check::Alive.path(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Exchange(..)), "{e}");
    }

    #[tokio::test]
    async fn nobody_listening_is_unhealthy() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: nothing accepts on that port now.
        let e = get(addr, Check::Alive.path(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, ProbeError::Connect(a, _) if a == addr), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_listener_that_never_answers_times_out() {
        let (addr, _) = listener(None).await;
        let e = get(addr, Check::Alive.path(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ProbeError::TimedOut(_, d) if d == Duration::from_secs(2)),
            "{e}"
        );
    }
}
