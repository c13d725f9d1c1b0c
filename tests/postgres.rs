//! The PostgreSQL key store against the real server at
//! CHIME_GATEWAY_TEST_POSTGRES, each test in a schema of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/command.rs"]
mod command;
#[path = "support/cut_proxy.rs"]
mod cut_proxy;
#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use chime_gateway::auth::{ApiKey, Role};
use chime_gateway::config::{KeySource, Secret, UpstreamAuth};
use chime_gateway::keystore::postgres::admin::PgAdmin;
use chime_gateway::keystore::postgres::PgSettings;
use cut_proxy::CutProxy;
use harness::{report, Harness};
use http::StatusCode;

/// A fresh schema, dropped when the test ends.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    async fn new() -> Option<Schema> {
        let url = harness::service_url("CHIME_GATEWAY_TEST_POSTGRES")?;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        PgAdmin::connect(&url, &name)
            .await
            .unwrap()
            .migrate()
            .await
            .unwrap();
        Some(Schema { url, name })
    }

    async fn admin(&self) -> PgAdmin {
        PgAdmin::connect(&self.url, &self.name).await.unwrap()
    }

    async fn sql(&self, statement: &str) {
        let client = chime_gateway::keystore::postgres::connect(&self.url)
            .await
            .unwrap();
        client
            .batch_execute(&statement.replace("{s}", &self.name))
            .await
            .unwrap();
    }

    /// Sets `assignments` (SQL) on `key`'s row, as an operator might by hand.
    async fn set_on_key(&self, key: &ApiKey, assignments: &str) {
        self.sql(&format!(
            "UPDATE {{s}}.keys SET {assignments} WHERE sha256 = decode('{}', 'hex')",
            key.hash().to_hex()
        ))
        .await;
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) = chime_gateway::keystore::postgres::connect(&url).await {
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A gateway on the schema (through `url`, which may be a cut proxy).
async fn gateway(url: &str, schema: &str, cache_ttl: Duration) -> Harness {
    let sim = harness::simulator(&["service-key-123"]).await;
    let mut config = harness::base_config(&sim.base_url());
    config.upstream.auth = UpstreamAuth::Service(Secret::new("service-key-123"));
    config.keys.source = KeySource::Postgres(PgSettings {
        url: Secret::new(url),
        schema: schema.to_owned(),
        pool_size: 4,
        timeout: Duration::from_millis(500),
        migrate_on_start: false,
        last_used_flush: Duration::from_millis(50),
    });
    config.keys.cache_ttl = cache_ttl;
    config.keys.resurrect_ttl = Duration::from_secs(300);
    Harness::start_config(sim, config).await
}

async fn new_key(admin: &mut PgAdmin, user: &str) -> ApiKey {
    let user = user.to_owned();
    admin
        .edit(move |f| {
            if !f.users.iter().any(|u| u.name == user) {
                f.add_user(&user, Role::Manager, vec![1], "default")?;
            }
            Ok(
                f.generate(&user, jiff::Timestamp::now(), Some(Duration::ZERO), None)?
                    .key,
            )
        })
        .await
        .unwrap()
}

/// Polls `h` with `key` until it is refused; returns how long that took.
async fn refused_within(h: &Harness, key: &ApiKey, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if h.get_as(key.expose(), &report()).await.status == StatusCode::UNAUTHORIZED {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "key still accepted after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn revocations_reach_every_instance_within_a_second() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let mut admin = schema.admin().await;
    let key = new_key(&mut admin, "m1").await;
    let a = gateway(&schema.url, &schema.name, Duration::from_secs(30)).await;
    let b = gateway(&schema.url, &schema.name, Duration::from_secs(30)).await;
    // Both instances have the key cached.
    for h in [&a, &b] {
        assert_eq!(
            h.get_as(key.expose(), &report()).await.status,
            StatusCode::OK
        );
    }
    // Revoked through the CLI's code path: both refuse within a second.
    let fp = key.hash().fingerprint();
    admin
        .edit(move |f| Ok(f.revoke(fp.as_str(), jiff::Timestamp::now())?))
        .await
        .unwrap();
    assert!(refused_within(&b, &key, Duration::from_secs(1)).await < Duration::from_secs(1));
    assert!(refused_within(&a, &key, Duration::from_secs(1)).await < Duration::from_secs(1));

    // A change made with plain SQL propagates too.
    let second = new_key(&mut admin, "m1").await;
    assert_eq!(
        b.get_as(second.expose(), &report()).await.status,
        StatusCode::OK
    );
    schema.set_on_key(&second, "disabled = true").await;
    refused_within(&b, &second, Duration::from_secs(1)).await;

    // Scope changes too: the user loses queue 1.
    let third = new_key(&mut admin, "m1").await;
    assert_eq!(
        a.get_as(third.expose(), &report()).await.status,
        StatusCode::OK
    );
    schema
        .sql("UPDATE {s}.user_queues SET queue_id = 7 WHERE user_name = 'm1'")
        .await;
    let started = Instant::now();
    loop {
        if a.get_as(third.expose(), &report()).await.status == StatusCode::FORBIDDEN {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "scope change not applied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Last use reaches the database in batches.
    let started = Instant::now();
    while schema.admin().await.last_used().await.unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "last_used never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A key is refused outside its window, `not_before` to `expires_at`, as
/// the key file's are: set with plain SQL, each reaches the gateway.
#[tokio::test]
async fn keys_outside_their_window_are_refused() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let mut admin = schema.admin().await;
    let h = gateway(&schema.url, &schema.name, Duration::from_secs(30)).await;
    for (column, moved) in [
        ("expires_at", "now() - interval '1 minute'"),
        ("not_before", "now() + interval '1 hour'"),
    ] {
        let key = new_key(&mut admin, "m1").await;
        assert_eq!(
            h.get_as(key.expose(), &report()).await.status,
            StatusCode::OK
        );
        schema
            .set_on_key(&key, &format!("{column} = {moved}"))
            .await;
        refused_within(&h, &key, Duration::from_secs(1)).await;
    }
    // A window around now lets it in.
    let key = new_key(&mut admin, "m1").await;
    schema
        .set_on_key(
            &key,
            "not_before = now() - interval '1 minute', expires_at = now() + interval '1 hour'",
        )
        .await;
    assert_eq!(
        h.get_as(key.expose(), &report()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn database_outage_serves_known_keys_and_refuses_unknown_with_503() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let target: std::net::SocketAddr = {
        let cfg = chime_gateway::keystore::postgres::pg_config(&schema.url).unwrap();
        let host = match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[allow(unreachable_patterns)]
            _ => panic!("CHIME_GATEWAY_TEST_POSTGRES must use TCP"),
        };
        let host = if host == "localhost" {
            "127.0.0.1".to_owned()
        } else {
            host
        };
        format!(
            "{host}:{}",
            cfg.get_ports().first().copied().unwrap_or(5432)
        )
        .parse()
        .unwrap()
    };
    let proxy = CutProxy::start(target).await;
    let via_proxy = {
        let (scheme_user, rest) = schema.url.split_once('@').unwrap();
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        format!("{scheme_user}@{}/{path}", proxy.addr)
    };
    let mut admin = schema.admin().await;
    let known = new_key(&mut admin, "m1").await;
    // cache_ttl 0: every request asks the database, so the outage is felt at once.
    let h = gateway(&via_proxy, &schema.name, Duration::ZERO).await;
    assert_eq!(
        h.get_as(known.expose(), &report()).await.status,
        StatusCode::OK
    );

    proxy.cut();
    let a = h.get_as(known.expose(), &report()).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "a known key keeps working: {}",
        a.text()
    );
    let unknown = ApiKey::generate();
    let a = h.get_as(unknown.expose(), &report()).await;
    assert_eq!(
        (a.status, a.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "key_store_unavailable")
    );
    assert!(a.headers.contains_key("retry-after"));
    let ready = h.admin_get("/readyz").await;
    assert_eq!(ready.json()["key_store_degraded"], true, "{}", ready.text());
    let m = h.metrics_text();
    assert!(m.contains("chime_gateway_key_store_up 0"), "{m}");
    assert!(
        !m.contains("chime_gateway_key_store_stale_served_total 0"),
        "{m}"
    );

    // Recovery without a restart: a key created during the outage works.
    let fresh = new_key(&mut admin, "m2").await;
    proxy.restore();
    let started = Instant::now();
    loop {
        let a = h.get_as(fresh.expose(), &report()).await;
        if a.status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no recovery: {} {}",
            a.status,
            a.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        h.admin_get("/readyz").await.json()["key_store_degraded"],
        false
    );
}

#[tokio::test]
async fn key_commands_work_against_postgres() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\naddress = \"127.0.0.1:1\"\n[keys]\nstore = \"postgres\"\npostgres_schema = \"{}\"\n",
            schema.name
        ),
    )
    .unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let out = command::run(
            command::gateway()
                .args(args)
                .arg("--config")
                .arg(&config)
                .env("CHIME_GATEWAY_KEYS_POSTGRES_URL", &schema.url),
            stdin,
        );
        command::success_stdout(out, &format!("{args:?}"))
    };
    assert!(
        run(&["migrate"], None).contains("up to date"),
        "already migrated by the test"
    );
    run(
        &["users", "add", "m1", "--role", "manager", "--queues", "1,3"],
        None,
    );
    run(&["users", "set", "m1", "--tier", "partner"], None);
    let out = run(&["keys", "generate", "m1"], None);
    let key = out.lines().find_map(ApiKey::parse).unwrap();
    run(
        &["keys", "import", "m1", "-"],
        Some("b5c38d85-a042-4cef-8418-eb06752e346b\n"),
    );
    let list = run(&["keys", "list"], None);
    assert!(
        list.contains(key.hash().fingerprint().as_str())
            && list.contains("partner")
            && list.contains("1,3"),
        "{list}"
    );
    assert!(!list.contains(key.expose()));
    let export = run(&["keys", "export"], None);
    assert!(export.contains(&key.hash().to_hex()) && !export.contains(key.expose()));
    run(&["keys", "revoke", key.hash().fingerprint().as_str()], None);
    assert!(run(&["keys", "list"], None).contains("revoked"));

    // Export from one store, import into another (here: a fresh schema via --store).
    let Some(other) = Schema::new().await else {
        return;
    };
    let file = dir.path().join("export.toml");
    std::fs::write(&file, &export).unwrap();
    std::fs::write(
        &config,
        format!(
            "[keys]\nstore = \"postgres\"\npostgres_schema = \"{}\"\n",
            other.name
        ),
    )
    .unwrap();
    let out = command::gateway()
        .args(["keys", "import", "--from-file"])
        .arg(&file)
        .arg("--config")
        .arg(&config)
        .env("CHIME_GATEWAY_KEYS_POSTGRES_URL", &other.url)
        .output()
        .unwrap();
    let said = command::success_stdout(out, "keys import --from-file");
    assert!(said.contains("Merged 1 users and 2 new keys"), "{said}");
    let loaded = other.admin().await.load().await.unwrap();
    assert_eq!(loaded.keys.len(), 2);
    assert_eq!(loaded.users[0].queues, vec![1, 3]);
}

#[tokio::test]
async fn the_admin_api_manages_keys_in_postgres() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let h = gateway(&schema.url, &schema.name, Duration::from_secs(60)).await;
    let call = |method: http::Method, path: &'static str, body: Option<serde_json::Value>| {
        h.admin_call(method, path, body, &[])
    };
    let session = call(http::Method::GET, "/api/session", None).await;
    assert_eq!(session.json()["store"], "postgres");
    let add = serde_json::json!({"name": "pg-ops", "role": "manager", "queues": [1]});
    assert_eq!(
        call(http::Method::POST, "/api/users", Some(add))
            .await
            .status,
        StatusCode::CREATED
    );
    let g = call(
        http::Method::POST,
        "/api/users/pg-ops/keys",
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.text());
    let first = ApiKey::parse(g.json()["key"].as_str().unwrap()).unwrap();
    assert_eq!(
        h.get_as(first.expose(), &report()).await.status,
        StatusCode::OK
    );

    let r = call(
        http::Method::POST,
        "/api/users/pg-ops/keys",
        Some(serde_json::json!({"rotate": true})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let second = r.json()["key"].as_str().unwrap().to_owned();
    // The old key dies through the change trigger and the listener.
    refused_within(&h, &first, Duration::from_secs(1)).await;
    assert_eq!(h.get_as(&second, &report()).await.status, StatusCode::OK);

    let list = call(http::Method::GET, "/api/users", None).await;
    let user = list.json()["users"][0].clone();
    assert_eq!(user["name"], "pg-ops");
    let mut states: Vec<&str> = user["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    // Both keys were created in the same second: PostgreSQL's order between
    // them is the hashes', so compare as a set.
    states.sort_unstable();
    assert_eq!(states, ["active", "expired"]);
    let explain = serde_json::json!({"user": "pg-ops", "target": report()});
    let doc = call(http::Method::POST, "/api/explain", Some(explain))
        .await
        .json();
    assert_eq!(doc["decision"], "allow");
}
