//! Authentication at the edge: every refusal, canonical keys, the failure
//! throttle, reloads, and that no key ever leaks into logs, metrics or bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/harness.rs"]
mod harness;

use chime_gateway::auth::Role;
use chime_gateway::config::KeySource;
use chime_gateway::keystore::file::KeyFile;
use harness::{report, Harness, ADMIN, MANAGER};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn every_refusal_is_explained_and_nothing_is_forwarded() {
    let h = Harness::start().await;
    let target = report();
    let cases: Vec<(Vec<&str>, u16, &str)> = vec![
        (vec![], 401, "missing_credentials"),
        (vec!["Bearer"], 401, "malformed_credentials"),
        (vec!["Bearer "], 401, "malformed_credentials"),
        (vec!["Basic Zm9vOmJhcg=="], 401, "malformed_credentials"),
        (
            vec!["Bearer b5c38d85a0424cef8418eb06752e346b"],
            401,
            "malformed_credentials",
        ),
        (
            vec!["Bearer b5c38d85-a042-4cef-8418-eb06752e346"],
            401,
            "malformed_credentials",
        ),
        (
            vec!["Bearer {b5c38d85-a042-4cef-8418-eb06752e346b"],
            401,
            "malformed_credentials",
        ),
        (
            vec!["Bearer urn:uuid:b5c38d85-a042-4cef-8418-eb06752e346b"],
            401,
            "malformed_credentials",
        ),
        (
            vec!["b5c38d85-a042-4cef-8418-eb06752e346b"],
            401,
            "malformed_credentials",
        ),
        (
            vec!["Bearer 00000000-0000-0000-0000-000000000000"],
            401,
            "unknown_key",
        ),
    ];
    for (values, status, code) in cases {
        let headers: Vec<(&str, &str)> = values.iter().map(|v| ("authorization", *v)).collect();
        let a = h.get(&target, &headers).await;
        assert_eq!(
            (a.status.as_u16(), a.code().as_str()),
            (status, code),
            "{values:?}"
        );
        assert_eq!(
            a.headers["www-authenticate"], r#"Bearer realm="chime", error="invalid_token""#,
            "{values:?}"
        );
        assert!(!a.text().contains("b5c38d85"), "key echoed: {}", a.text());
        // A document of known size: sent with its length, not chunked.
        assert_eq!(a.headers["content-length"], a.text().len().to_string());
        assert!(a.headers.get("transfer-encoding").is_none());
    }
    // Two Authorization headers (even two valid ones) are a 400.
    let raw = format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MANAGER}\r\n\
         Authorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
    );
    let out = h.raw(raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("multiple_credentials"), "{out}");
    assert!(out.contains("content-length: "), "{out}");
    assert!(!out.contains("transfer-encoding"), "{out}");
    assert!(h.sim.recorded().is_empty());
    let m = h.metrics_text();
    assert!(
        m.contains(r#"chime_gateway_auth_failures_total{reason="malformed"} 8"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_auth_failures_total{reason="missing"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_auth_failures_total{reason="unknown"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_auth_failures_total{reason="multiple"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn canonical_forms_are_accepted_and_forwarded_canonically() {
    let h = Harness::start().await;
    for form in [
        MANAGER.to_uppercase(),
        format!("{{{MANAGER}}}"),
        format!("{{{}}}", MANAGER.to_uppercase()),
    ] {
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let a = h
                .get(&report(), &[("authorization", &format!("{scheme} {form}"))])
                .await;
            assert_eq!(a.status, StatusCode::OK, "{scheme} {form}");
        }
    }
    for r in h.sim.recorded() {
        assert_eq!(r.headers["authorization"], format!("Bearer {MANAGER}"));
    }
}

/// Sends a request from a chosen loopback source address.
async fn get_from(source: &str, addr: std::net::SocketAddr, target: &str, key: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn failed_authentications_are_throttled_per_address() {
    let h = Harness::start_with(|c| {
        c.auth.max_failures_per_minute = std::num::NonZeroU32::new(5).unwrap();
    })
    .await;
    let bad = "99999999-9999-9999-9999-999999999999";
    for i in 0..6 {
        let out = get_from("127.0.0.1", h.addr, &report(), bad).await;
        assert!(out.starts_with("HTTP/1.1 401"), "attempt {i}: {out}");
    }
    let out = get_from("127.0.0.1", h.addr, &report(), bad).await;
    assert!(out.starts_with("HTTP/1.1 429"), "{out}");
    assert!(out.contains("auth_throttled"), "{out}");
    let retry: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "retry after {retry}");
    // A blocked address is refused even with a valid key: no hit/miss oracle.
    let out = get_from("127.0.0.1", h.addr, &report(), MANAGER).await;
    assert!(out.starts_with("HTTP/1.1 429"), "{out}");
    // Another address is unaffected.
    let out = get_from("127.0.0.2", h.addr, &report(), MANAGER).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(h.sim.recorded().len(), 1);
    let m = h.metrics_text();
    assert!(
        m.contains(r#"chime_gateway_auth_failures_total{reason="throttled"} 2"#),
        "{m}"
    );
}

fn write_keys(path: &std::path::Path, f: &KeyFile) {
    f.save(path).unwrap();
}

#[tokio::test]
async fn key_file_changes_take_effect_and_broken_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let now = jiff::Timestamp::now();
    let mut f = KeyFile::default();
    f.add_user("m1", Role::Manager, vec![1], "default").unwrap();
    let first = f.generate("m1", now, None, None).unwrap().key;
    write_keys(&path, &f);
    // The simulated Chime does not know these keys: the gateway uses its service key.
    let h = Harness::start_with(|c| {
        c.keys.source = KeySource::File(path.clone());
        c.upstream.auth = chime_gateway::config::UpstreamAuth::Service(
            chime_gateway::config::Secret::new("service-key-123"),
        );
    })
    .await;
    let ok = |a: &harness::Answer| a.status == StatusCode::OK;
    assert!(ok(&h.get_as(first.expose(), &report()).await));

    // Rotate without grace and add a second user: after the reload the new
    // key works and the old one is refused.
    let second = f
        .generate("m1", now, Some(std::time::Duration::ZERO), None)
        .unwrap()
        .key;
    write_keys(&path, &f);
    h.state.reload_keys(false);
    assert!(ok(&h.get_as(second.expose(), &report()).await));
    let a = h.get_as(first.expose(), &report()).await;
    assert_eq!(a.code(), "unknown_key");

    // A broken file keeps the previous keys.
    std::fs::write(&path, "[[user]]\nname = \"m1\"\nrole = \"boss\"\n").unwrap();
    h.state.reload_keys(false);
    assert!(ok(&h.get_as(second.expose(), &report()).await));
    let m = h.metrics_text();
    assert!(
        m.contains(r#"chime_gateway_key_store_reloads_total{result="success"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"chime_gateway_key_store_reloads_total{result="failure"} 1"#),
        "{m}"
    );
    assert!(m.contains("chime_gateway_keys_loaded 2"), "{m}");

    // Revocation.
    f.revoke("m1", jiff::Timestamp::now()).unwrap();
    write_keys(&path, &f);
    h.state.reload_keys(false);
    assert_eq!(
        h.get_as(second.expose(), &report()).await.code(),
        "unknown_key"
    );
}
