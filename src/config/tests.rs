use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", Path::new("/etc/cg"), &env(&[]))
}

#[test]
fn empty_file_gives_documented_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.listen.address, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.admin.address, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.upstream.response_timeout, Duration::from_secs(120));
    assert_eq!(c.upstream.auth, UpstreamAuth::Passthrough);
    assert_eq!(c.upstream.path_prefix(), "/Chime");
    assert!(matches!(&c.keys.source, KeySource::File(p) if p == Path::new("/etc/cg/keys.toml")));
    assert!(!c.catalog.report.is_empty());
    assert_eq!(
        c.listen.workers,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        "one worker per core unless set"
    );
    assert_eq!(parse("[listen]\nworkers = 3").unwrap().listen.workers, 3);
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let e = parse("[listen]\nadress = \"1.2.3.4:1\"\n").unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("test.toml: adress:"), "{s}");
    assert!(s.contains("unknown field"), "{s}");
    let e = parse("[upstreem]\n").unwrap_err();
    assert!(e.to_string().contains("upstreem"), "{e}");
}

#[test]
fn credentials_in_the_upstream_url_are_refused_without_echoing_them() {
    let err = parse("[upstream]\nbase_url = \"https://ops:hunter2@chime.example/Chime\"")
        .unwrap_err()
        .to_string();
    assert!(err.contains("upstream.base_url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("[listen]\nidle_timeout = \"soon\"", "listen.idle_timeout"),
        ("[listen]\naddress = \"nowhere\"", "listen.address"),
        ("[listen]\nmax_connections = 0", "listen.max_connections"),
        (
            "[listen]\nmax_header_bytes = 100",
            "listen.max_header_bytes",
        ),
        (
            "[upstream]\nbase_url = \"ftp://x/Chime\"",
            "upstream.base_url",
        ),
        (
            "[upstream]\nbase_url = \"http://x/Chime?a=1\"",
            "upstream.base_url",
        ),
        (
            "[upstream]\nbase_url = \"http://x/Chime{x}\"",
            "upstream.base_url",
        ),
        ("[upstream]\nroots = \"mine\"", "upstream.roots"),
        ("[upstream]\nauth = \"service\"", "upstream.auth"),
        ("[log]\nformat = \"xml\"", "log.format"),
        ("[keys]\nwatch_interval = \"0s\"", "keys.watch_interval"),
        ("[keys]\nstore = \"mysql\"", "keys.store"),
        ("[tls]\nredirect_from = \"0.0.0.0:80\"", "tls.redirect_from"),
        ("[tls]\nwatch_interval = \"0s\"", "tls.watch_interval"),
        ("[upstream]\nclient_cert_file = \"c.pem\"", "upstream.client_cert_file"),
        ("[keys]\nstore = \"postgres\"", "keys.postgres_url"),
        (
            "[keys]\nstore = \"postgres\"\npostgres_url = \"postgres://x/y\"\npostgres_schema = \"Bad-Name\"",
            "keys.postgres_schema",
        ),
        (
            "[auth]\nmax_failures_per_minute = 0",
            "auth.max_failures_per_minute",
        ),
        (
            "[request]\nend_parameter = \"finish\"",
            "request.end_parameter",
        ),
        ("[request]\nmax_window = \"0s\"", "request.max_window"),
        (
            "[request]\ndefault_start = \"last tuesday\"",
            "request.default_start",
        ),
        (
            "[request]\nmax_window_per_report = { \"A B\" = \"1d\" }",
            "request.max_window_per_report.A B",
        ),
        (
            "[[catalog.report]]\nname = \"A B\"\ncategory = \"queue_basic\"",
            "catalog.report",
        ),
    ];
    for (text, key) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
        assert_eq!(e.file, "test.toml");
    }
    let e = parse("[listen]\nmax_headers = \"many\"\n").unwrap_err();
    assert_eq!(e.key, "max_headers", "{e}");
}

#[test]
fn env_overrides_addresses() {
    let c = Config::from_toml(
        "",
        "t",
        Path::new("."),
        &env(&[
            ("CHIME_GATEWAY_LISTEN", "0.0.0.0:8443"),
            ("CHIME_GATEWAY_ADMIN_LISTEN", "127.0.0.1:1"),
            (
                "CHIME_GATEWAY_UPSTREAM_URL",
                "https://chime.example.com/Chime/",
            ),
            ("CHIME_GATEWAY_KEYS_FILE", "/run/keys.toml"),
        ]),
    )
    .unwrap();
    assert_eq!(c.listen.address.port(), 8443);
    assert_eq!(c.admin.address.port(), 1);
    assert_eq!(c.upstream.base_url.host(), Some("chime.example.com"));
    assert_eq!(c.upstream.path_prefix(), "/Chime");
    assert!(matches!(&c.keys.source, KeySource::File(p) if p == Path::new("/run/keys.toml")));
}

#[test]
fn service_key_from_env_is_masked_when_printed() {
    let c = Config::from_toml(
        "[upstream]\nauth = \"service\"\n",
        "t",
        Path::new("."),
        &env(&[("CHIME_GATEWAY_UPSTREAM_SERVICE_KEY", "s3cr3t-service-key")]),
    )
    .unwrap();
    assert_eq!(
        c.upstream.auth,
        UpstreamAuth::Service(Secret::new("s3cr3t-service-key"))
    );
    let printed = c.to_masked_toml();
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(printed.contains("***"), "{printed}");
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

#[test]
fn service_key_from_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svc.key"), "abc-123\n").unwrap();
    let c = Config::from_toml(
        "[upstream]\nauth = \"service\"\nservice_key_file = \"svc.key\"\n",
        "t",
        dir.path(),
        &env(&[]),
    )
    .unwrap();
    assert_eq!(
        c.upstream.auth,
        UpstreamAuth::Service(Secret::new("abc-123"))
    );
}

#[test]
fn shipped_example_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let c = Config::load(&dir.join("gateway.toml"), &env(&[])).unwrap();
    let d = Config::defaults();
    // The shipped file documents the defaults: it must not drift from them.
    assert_eq!(c.listen.address, d.listen.address);
    assert_eq!(c.listen.max_header_bytes, d.listen.max_header_bytes);
    assert_eq!(c.listen.idle_timeout, d.listen.idle_timeout);
    assert_eq!(c.listen.stall_timeout, d.listen.stall_timeout);
    assert_eq!(c.upstream.response_timeout, d.upstream.response_timeout);
    assert_eq!(c.upstream.connect_timeout, d.upstream.connect_timeout);
    assert_eq!(c.admin.address, d.admin.address);
    assert_eq!(c.admin.api, d.admin.api);
    assert_eq!(c.keys.watch_interval, d.keys.watch_interval);
    assert_eq!(c.keys.cache_ttl, d.keys.cache_ttl);
    assert_eq!(c.keys.negative_cache_ttl, d.keys.negative_cache_ttl);
    assert_eq!(c.keys.resurrect_ttl, d.keys.resurrect_ttl);
    assert_eq!(
        c.auth.max_failures_per_minute,
        d.auth.max_failures_per_minute
    );
    assert_eq!(c.auth.throttle_max_tracked, d.auth.throttle_max_tracked);
    assert_eq!(c.catalog.refresh_interval, d.catalog.refresh_interval);
    assert_eq!(c.request, d.request);
    assert_eq!(c.ratelimit, d.ratelimit);
    assert_eq!(c.audit.queue_capacity, d.audit.queue_capacity);
    assert_eq!(c.metrics, d.metrics);
    assert_eq!(c.cache, d.cache);
    assert_eq!(c.tls, d.tls);
    assert_eq!(
        c.upstream.danger_accept_invalid_certs,
        d.upstream.danger_accept_invalid_certs
    );
    assert_eq!(c.keys.allow_world_readable, d.keys.allow_world_readable);
    assert_eq!(c.catalog.refresh_queue_id, d.catalog.refresh_queue_id);
}

#[test]
fn the_admin_api_off_loopback_needs_a_token() {
    let off_loopback = "[admin]\naddress = \"0.0.0.0:9090\"\n";
    let err = Config::from_toml(off_loopback, "t", Path::new("."), &env(&[])).unwrap_err();
    assert_eq!(err.key, "admin.api");
    let with_token = Config::from_toml(
        off_loopback,
        "t",
        Path::new("."),
        &env(&[("CHIME_GATEWAY_ADMIN_TOKEN", "0123456789abcdef-token")]),
    )
    .unwrap();
    assert!(with_token.admin.token.is_some());
    let short = Config::from_toml(
        off_loopback,
        "t",
        Path::new("."),
        &env(&[("CHIME_GATEWAY_ADMIN_TOKEN", "short")]),
    )
    .unwrap_err();
    assert!(short.message.contains("16"), "{short:?}");
    let api_off = "[admin]\naddress = \"0.0.0.0:9090\"\napi = false\n";
    assert!(Config::from_toml(api_off, "t", Path::new("."), &env(&[])).is_ok());
    assert!(Config::from_toml("", "t", Path::new("."), &env(&[]))
        .unwrap()
        .admin
        .token
        .is_none());
}
