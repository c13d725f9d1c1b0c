//! The command line: check-config's verdicts and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/command.rs"]
mod command;
#[path = "support/harness.rs"]
mod harness;

use command::{gateway, success_stdout};

#[test]
fn check_config_accepts_the_shipped_file_and_masks_secrets() {
    let out = gateway()
        .args(["check-config", "--config", "config/gateway.toml"])
        .env("CHIME_GATEWAY_LISTEN", "0.0.0.0:8443")
        .output()
        .unwrap();
    let text = success_stdout(out, "check-config of the shipped file");
    assert!(text.contains("OK"), "{text}");
    assert!(
        text.contains("address = \"0.0.0.0:8443\""),
        "env override applied: {text}"
    );
    assert!(text.contains("response_timeout = \"2m\""), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, "[upstream]\nauth = \"service\"\n").unwrap();
    let out = gateway()
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env(
            "CHIME_GATEWAY_UPSTREAM_SERVICE_KEY",
            "very-secret-service-key",
        )
        .output()
        .unwrap();
    let text = success_stdout(out, "check-config with a service key");
    assert!(!text.contains("very-secret"), "{text}");
    assert!(text.contains("***"), "{text}");
}

#[test]
fn check_config_names_file_and_key_when_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    for (text, key) in [
        (
            "[listen]\nidle_timeout = \"forever\"\n",
            "listen.idle_timeout",
        ),
        ("[upstream]\nbase_uri = \"http://x\"\n", "base_uri"),
    ] {
        std::fs::write(&path, text).unwrap();
        let out = gateway()
            .args(["check-config", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("broken.toml") && err.contains(key), "{err}");
    }
    let out = gateway()
        .args(["check-config", "--config", "/nonexistent/gw.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Runs `serve` on `dir/gw.toml` (listeners on port 0 plus `extra`), expects
/// it to refuse to start, and returns what it said.
fn serve_refuses(dir: &std::path::Path, extra: &str) -> String {
    std::fs::write(
        dir.join("gw.toml"),
        format!("[listen]\naddress = \"127.0.0.1:0\"\n[admin]\naddress = \"127.0.0.1:0\"\n{extra}"),
    )
    .unwrap();
    let out = gateway()
        .args(["serve", "--config", dir.join("gw.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8(out.stderr).unwrap()
}

fn owner_only(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn serve_refuses_a_world_readable_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(&keys, "").unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = serve_refuses(dir.path(), "");
    assert!(
        err.contains("readable by every user") && err.contains("chmod o-r"),
        "{err}"
    );
}

#[test]
fn serve_refuses_unreadable_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keys.toml"), "").unwrap();
    owner_only(&dir.path().join("keys.toml"));
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    let err = serve_refuses(
        dir.path(),
        "[tls]\nenabled = true\ncert_file = \"cert.pem\"\nkey_file = \"missing.pem\"\n",
    );
    assert!(err.contains("TLS") && err.contains("cert.pem"), "{err}");
}

#[test]
fn serve_refuses_to_start_on_a_broken_key_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("keys.toml"),
        "[[user]]\nname = \"a\"\nrole = \"nobody\"\n",
    )
    .unwrap();
    owner_only(&dir.path().join("keys.toml"));
    let err = serve_refuses(dir.path(), "");
    assert!(err.contains("keys.toml") && err.contains("nobody"), "{err}");
}

/// `probe` against a live gateway: exit 0 and the answer while it serves,
/// 1 (never Docker's reserved 2) once it has stopped or when the
/// configuration is unreadable. The admin address is given as a container
/// gives it, on every interface, and asked on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_0_while_the_gateway_serves_and_1_otherwise() {
    let mut h = harness::Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(&config, "").unwrap();
    let admin = format!("0.0.0.0:{}", h.admin.port());
    let probe = |config: &std::path::Path, extra: &[&str]| {
        let mut cmd = tokio::process::Command::from(gateway());
        cmd.args(["probe", "--config", config.to_str().unwrap()])
            .args(extra)
            .env("CHIME_GATEWAY_ADMIN_LISTEN", &admin)
            .env(
                "CHIME_GATEWAY_ADMIN_TOKEN",
                "0123456789abcdef0123456789abcdef",
            );
        async move { cmd.output().await.unwrap() }
    };

    let out = probe(&config, &[]).await;
    assert_eq!(success_stdout(out, "probe").trim(), r#"{"status":"ok"}"#);
    let out = probe(&config, &["--ready"]).await;
    let ready: serde_json::Value =
        serde_json::from_str(&success_stdout(out, "probe --ready")).unwrap();
    assert_eq!(ready["ready"], true, "{ready}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[listen]\nidle_timeout = \"forever\"\n").unwrap();
    let out = probe(&broken, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("listen.idle_timeout"), "{err}");

    h.begin_shutdown().await.unwrap();
    let out = probe(&config, &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot connect") && err.contains(&format!("127.0.0.1:{}", h.admin.port())),
        "{err}"
    );
}
