//! The deployment assets parse and say what they must (no cluster needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/command.rs"]
mod command;

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/deploy")
}

fn manifests() -> Vec<Yaml> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(deploy().join("kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        docs.extend(
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        );
    }
    docs
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn kubernetes_manifests_are_complete() {
    let docs = manifests();
    for k in [
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    ] {
        kind(&docs, k);
    }
    let deployment = kind(&docs, "Deployment");
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap() > 30,
        "longer than shutdown_grace"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["port"].as_str(),
        Some("admin")
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    // The Service exposes HTTPS only, never the admin listener.
    let service = kind(&docs, "Service");
    let ports = service["spec"]["ports"].as_vec().unwrap();
    assert!(ports
        .iter()
        .all(|p| p["targetPort"].as_str() != Some("admin")));

    // The embedded gateway configuration is valid for the gateway itself.
    let config = kind(&docs, "ConfigMap")["data"]["gateway.toml"]
        .as_str()
        .unwrap();
    let env: std::collections::HashMap<String, String> = [
        ("CHIME_GATEWAY_KEYS_POSTGRES_URL", "postgres://u@db/chime"),
        ("CHIME_GATEWAY_REDIS_URL", "redis://redis:6379"),
        ("CHIME_GATEWAY_ADMIN_TOKEN", "an-admin-token-of-some-length"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    chime_gateway::config::Config::from_toml(
        config,
        "configmap",
        Path::new("/etc/chime-gateway"),
        &env,
    )
    .unwrap();
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy().join("chime-gateway.service")).unwrap();
    for directive in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
        "ExecReload=",
    ] {
        assert!(unit.contains(directive), "{directive}");
    }
    let Ok(analyze) = which("systemd-analyze") else {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: systemd-analyze not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("chime-gateway.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/chime-gateway", command::GATEWAY),
    )
    .unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    command::assert_clean(&out, "systemd-analyze verify");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
