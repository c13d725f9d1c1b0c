//! The deployment assets parse and say what they must (no cluster needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/command.rs"]
mod command;

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

/// A file or folder of the repository.
fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn deploy() -> std::path::PathBuf {
    repo("config/deploy")
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

    // The embedded gateway configuration is valid for the gateway itself,
    // in the environment the pod gives it: the image's `ENV`, then the
    // container's `env` and the Secret's variables over it. Its listeners
    // are the ports the probes and the Service use.
    let mut env = image_env(&dockerfile().1);
    for var in container["env"].as_vec().unwrap() {
        env.insert(
            var["name"].as_str().unwrap().to_owned(),
            var["value"].as_str().unwrap().to_owned(),
        );
    }
    let secret = docs
        .iter()
        .find(|d| d["metadata"]["name"].as_str() == Some("chime-gateway-env"))
        .unwrap();
    assert_eq!(
        container["envFrom"][0]["secretRef"]["name"].as_str(),
        Some("chime-gateway-env")
    );
    for (name, value) in secret["stringData"].as_hash().unwrap() {
        env.insert(
            name.as_str().unwrap().to_owned(),
            value.as_str().unwrap().to_owned(),
        );
    }
    let config = kind(&docs, "ConfigMap")["data"]["gateway.toml"]
        .as_str()
        .unwrap();
    let config = chime_gateway::config::Config::from_toml(
        config,
        "configmap",
        Path::new("/etc/chime-gateway"),
        &env,
    )
    .unwrap();
    let container_port = |name: &str| {
        container["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    assert_eq!(
        i64::from(config.listen.address.port()),
        container_port("https")
    );
    assert_eq!(
        i64::from(config.admin.address.port()),
        container_port("admin")
    );
    assert!(config.tls.files.is_some(), "the Service exposes HTTPS only");
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy().join("chime-gateway.service")).unwrap();
    for directive in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=chime-gateway",
        "StateDirectory=chime-gateway",
        "RestartPreventExitStatus=2",
        "SystemCallErrorNumber=EPERM",
        "ExecReload=",
    ] {
        assert!(unit.contains(directive), "{directive}");
    }
    // The install steps in the header move the key file into the state
    // directory, the one place the unit lets the gateway write (the key page
    // edits the file): the shipped config, edited by their `sed`, says so.
    let sed = unit
        .lines()
        .find_map(|l| l.trim_start_matches(['#', ' ']).strip_prefix("sed 's#"))
        .expect("the header's sed");
    let (from, rest) = sed.split_once('#').unwrap();
    let (to, _) = rest.split_once('#').unwrap();
    let from = from.strip_prefix('^').unwrap();
    let shipped = std::fs::read_to_string(repo("config/gateway.toml")).unwrap();
    assert_eq!(shipped.lines().filter(|l| l.starts_with(from)).count(), 1);
    let installed: String = shipped
        .lines()
        .map(|l| match l.strip_prefix(from) {
            Some(rest) => format!("{to}{rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let config = chime_gateway::config::Config::from_toml(
        &installed,
        "gateway.toml",
        Path::new("/etc/chime-gateway"),
        &std::collections::HashMap::new(),
    )
    .unwrap();
    match config.keys.source {
        chime_gateway::config::KeySource::File(path) => {
            assert_eq!(path, Path::new("/var/lib/chime-gateway/keys.toml"));
        }
        other => panic!("{other:?}"),
    }
    assert!(unit.contains(
        "ExecStart=/usr/local/bin/chime-gateway serve --config /etc/chime-gateway/gateway.toml"
    ));
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

/// The Dockerfile's instructions, comments dropped and continued lines joined.
fn dockerfile() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let (part, continued) = match line.trim_end().strip_suffix('\\') {
            Some(part) => (part, true),
            None => (line, false),
        };
        current.push_str(part.trim());
        current.push(' ');
        if !continued {
            if !current.trim().is_empty() {
                instructions.push(current.trim().to_owned());
            }
            current.clear();
        }
    }
    (text, instructions)
}

/// The environment the image sets: the `ENV` among the Dockerfile's
/// `instructions`.
fn image_env(instructions: &[String]) -> std::collections::HashMap<String, String> {
    let mut env = std::collections::HashMap::new();
    for instruction in instructions {
        if let Some(pairs) = instruction.strip_prefix("ENV ") {
            for pair in pairs.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                env.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    env
}

/// `docker run` as the Dockerfile's header comment shows it, one string.
fn documented_run(text: &str) -> String {
    let mut run = String::new();
    for line in text
        .lines()
        .skip_while(|l| !l.starts_with("# Run:"))
        .map(|l| l.trim_start_matches('#').trim())
    {
        let part = line.trim_start_matches("Run:").trim();
        run.push_str(part.trim_end_matches('\\'));
        run.push(' ');
        if !part.ends_with('\\') {
            break;
        }
    }
    run
}

/// The image, run as its header comment says, starts: the configuration it
/// carries is valid with the environment the Dockerfile sets and the
/// variables the run line adds, the published ports are the ones it listens
/// on, and the health check is the gateway's probe of its own configuration.
#[test]
fn docker_image_runs_as_documented() {
    let (text, instructions) = dockerfile();
    let mut env = image_env(&instructions);
    let listen = env["CHIME_GATEWAY_LISTEN"].clone();
    let admin = env["CHIME_GATEWAY_ADMIN_LISTEN"].clone();
    assert!(listen.starts_with("0.0.0.0:") && admin.starts_with("0.0.0.0:"));
    let port = |address: &str| address.rsplit_once(':').unwrap().1.to_owned();

    let run = documented_run(&text);
    assert!(run.starts_with("docker run "), "{run}");
    let words: Vec<&str> = run.split_whitespace().collect();
    let flags = |flag: &str| -> Vec<String> {
        words
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].to_owned())
            .collect()
    };
    let published = flags("-p");
    assert!(
        published.contains(&format!("{0}:{0}", port(&listen))),
        "{run}"
    );
    // The admin listener is published on the host's loopback only.
    assert!(
        published.contains(&format!("127.0.0.1:{0}:{0}", port(&admin))),
        "{run}"
    );
    let expose = instructions
        .iter()
        .find_map(|i| i.strip_prefix("EXPOSE "))
        .unwrap();
    assert_eq!(
        expose.split_whitespace().collect::<Vec<_>>(),
        [port(&listen), port(&admin)]
    );
    // The health check is the gateway's own probe, reading the configuration
    // it serves (and so asking the admin listener checked below).
    let exec_form = |prefix: &str| -> Vec<String> {
        let i = instructions
            .iter()
            .find_map(|i| i.strip_prefix(prefix))
            .unwrap();
        serde_json::from_str(&i[i.find('[').unwrap()..]).unwrap()
    };
    let entrypoint = exec_form("ENTRYPOINT ");
    let serve = exec_form("CMD ");
    assert_eq!(serve[..2], ["serve", "--config"]);
    assert_eq!(
        exec_form("HEALTHCHECK "),
        [&entrypoint[0], "probe", "--config", &serve[2]]
    );

    // The configuration the image carries (the Dockerfile copies it there).
    assert!(instructions
        .iter()
        .any(|i| i.ends_with("config/gateway.toml /etc/chime-gateway/gateway.toml")));
    assert!(instructions.iter().any(|i| i.starts_with("COPY ")
        && i.contains("--chmod=0600")
        && i.ends_with("config/keys.toml /etc/chime-gateway/keys.toml")));
    let config = std::fs::read_to_string(repo("config/gateway.toml")).unwrap();
    let check = |env: &std::collections::HashMap<String, String>| {
        chime_gateway::config::Config::from_toml(
            &config,
            "gateway.toml",
            Path::new("/etc/chime-gateway"),
            env,
        )
    };
    // Without the run line's variables the admin API on every interface
    // has no token, and the gateway refuses to start.
    let refused = check(&env).unwrap_err().to_string();
    assert!(refused.contains("admin.api"), "{refused}");
    for assignment in flags("-e") {
        let (name, _) = assignment.split_once('=').unwrap();
        // The run line's values are shell expressions; any token will do.
        env.insert(name.to_owned(), "0123456789abcdef0123456789abcdef".into());
    }
    let config = check(&env).unwrap();
    assert_eq!(config.listen.address.to_string(), listen);
    assert_eq!(config.admin.address.to_string(), admin);
}
