//! Key lifecycle through the command line, against a key file on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/command.rs"]
mod command;
#[path = "support/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use chime_gateway::auth::ApiKey;
use chime_gateway::clock::FixedClock;
use chime_gateway::keystore::file::{FileKeyStore, KeyFile};
use chime_gateway::keystore::KeyStore;

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(admin: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("gateway.toml"),
            format!("[admin]\naddress = \"{admin}\"\n"),
        )
        .unwrap();
        Site { dir }
    }

    fn keys_path(&self) -> PathBuf {
        self.dir.path().join("keys.toml")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    /// The gateway's binary with `args` and this site's `--config`.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = command::gateway();
        cmd.args(args)
            .arg("--config")
            .arg(self.dir.path().join("gateway.toml"));
        cmd
    }

    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        command::run(&mut self.command(args), stdin)
    }

    fn ok(&self, args: &[&str]) -> String {
        command::success_stdout(self.run(args), &format!("{args:?}"))
    }

    fn store_at(&self, at: jiff::Timestamp) -> FileKeyStore {
        FileKeyStore::open(&self.keys_path(), Arc::new(FixedClock::new(at))).unwrap()
    }
}

fn printed_key(stdout: &str) -> ApiKey {
    stdout
        .lines()
        .find_map(ApiKey::parse)
        .unwrap_or_else(|| panic!("no key in: {stdout}"))
}

async fn valid(store: &FileKeyStore, key: &ApiKey) -> bool {
    store.lookup(&key.hash()).await.unwrap().is_some()
}

fn all_text_under(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&p).unwrap()).to_lowercase());
        }
    }
    text
}

#[tokio::test]
async fn generate_stores_only_a_hash_and_refuses_a_second_key() {
    let site = Site::new("127.0.0.1:1");
    site.ok(&["users", "add", "m1", "--role", "manager", "--queues", "1,3"]);
    let out = site.ok(&["keys", "generate", "m1"]);
    let key = printed_key(&out);
    assert!(out.contains(key.hash().fingerprint().as_str()));

    let on_disk = all_text_under(site.dir.path());
    for form in [key.expose().to_owned(), key.expose().replace('-', "")] {
        assert!(!on_disk.contains(&form), "plaintext key on disk");
    }
    assert!(on_disk.contains(&key.hash().to_hex()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(site.keys_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let store = site.store_at(jiff::Timestamp::now());
    let p = store.lookup(&key.hash()).await.unwrap().unwrap();
    assert_eq!((&*p.user, p.queues.len()), ("m1", 2));

    let again = site.run(&["keys", "generate", "m1"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--rotate"));
    let ghost = site.run(&["keys", "generate", "ghost"]);
    assert!(String::from_utf8_lossy(&ghost.stderr).contains("no user named `ghost`"));
}

#[tokio::test]
async fn rotation_with_and_without_grace() {
    let site = Site::new("127.0.0.1:1");
    site.ok(&["users", "add", "m1", "--role", "manager", "--queues", "1"]);
    let first = printed_key(&site.ok(&["keys", "generate", "m1"]));

    // Without a terminal, rotation needs --yes.
    let refused = site.run(&["keys", "generate", "m1", "--rotate"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));

    let out = site.ok(&[
        "keys", "generate", "m1", "--rotate", "--grace", "10m", "--yes",
    ]);
    let second = printed_key(&out);
    assert!(out.contains(&format!(
        "Old key {} stops working at",
        first.hash().fingerprint()
    )));
    let file = KeyFile::load(&site.keys_path()).unwrap();
    let expiry = file.keys[0].expires_at.expect("old key expires");
    let store = site.store_at(expiry - jiff::SignedDuration::from_secs(1));
    assert!(valid(&store, &first).await, "old key valid during grace");
    assert!(valid(&store, &second).await);
    let store = site.store_at(expiry);
    assert!(!valid(&store, &first).await, "old key refused after grace");
    assert!(valid(&store, &second).await);

    let third = printed_key(&site.ok(&["keys", "generate", "m1", "--rotate", "--yes"]));
    let store = site.store_at(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1));
    assert!(!valid(&store, &second).await, "immediate rotation");
    assert!(valid(&store, &third).await);
}

// Multi-threaded: the gateway must answer `keys list` while this thread waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_import_and_list() {
    let h = harness::Harness::start().await;
    let site = Site::new(&h.admin.to_string());
    site.ok(&[
        "users", "add", "ops", "--role", "admin", "--tier", "internal",
    ]);
    site.ok(&["users", "add", "m2", "--role", "manager", "--queues", "2"]);
    site.ok(&["users", "set", "m2", "--queues", "2,4", "--tier", "partner"]);
    let doc_key = ApiKey::parse(harness::MANAGER).unwrap();
    let out = site.run_with_stdin(
        &["keys", "import", "m2", "-"],
        Some(&format!("{}\n", harness::MANAGER)),
    );
    command::assert_success(&out, "keys import m2 -");
    let ops_key = printed_key(&site.ok(&["keys", "generate", "ops"]));

    // The running gateway (demo keys) has used the doc key once.
    h.get_as(
        harness::MANAGER,
        &format!(
            "/Chime/Report/InboundVsAnsweredChats?{}",
            harness::DOC_QUERY
        ),
    )
    .await;
    let list = site.ok(&["keys", "list"]);
    assert!(
        !list.contains(harness::MANAGER) && !list.contains(ops_key.expose()),
        "{list}"
    );
    let m2 = list.lines().find(|l| l.starts_with("m2")).unwrap();
    assert!(
        m2.contains("2,4") && m2.contains("partner") && m2.contains("active"),
        "{list}"
    );
    assert!(m2.contains(doc_key.hash().fingerprint().as_str()));
    let year = jiff::Timestamp::now().strftime("%Y").to_string();
    assert!(
        m2.trim_end().ends_with('Z') && m2.contains(&year),
        "last used shown: {m2}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&site.ok(&["keys", "list", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    let fp = ops_key.hash().fingerprint();
    assert!(site
        .ok(&["keys", "revoke", fp.as_str()])
        .contains(fp.as_str()));
    let store = site.store_at(jiff::Timestamp::now());
    assert!(!valid(&store, &ops_key).await);
    assert!(valid(&store, &doc_key).await);
    assert!(site
        .ok(&["keys", "list"])
        .lines()
        .any(|l| l.starts_with("ops") && l.contains("revoked")));
    let again = site.run(&["keys", "revoke", "ops"]);
    assert!(!again.status.success());
}

#[test]
fn list_says_when_the_gateway_is_not_running() {
    let site = Site::new("127.0.0.1:1");
    site.ok(&["users", "add", "m1", "--role", "manager", "--queues", "1"]);
    let list = site.ok(&["keys", "list"]);
    assert!(list.contains("m1") && list.contains("no key"), "{list}");
    assert!(list.contains("last used: unknown"), "{list}");
}

/// An owner who is not a member of the key file's group (one root gave it)
/// can still edit it: the edit cannot keep that group, so the file becomes
/// owner-only rather than open to the owner's own group.
#[cfg(unix)]
#[tokio::test]
async fn an_owner_outside_the_files_group_still_edits_it() {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let site = Site::new("127.0.0.1:1");
    site.ok(&["users", "add", "m1", "--role", "manager", "--queues", "1"]);
    let keys = site.keys_path();
    // Only root can give files away, so only root can set this up.
    if let Err(e) = chown(site.dir.path(), Some(NOBODY), Some(NOBODY)) {
        eprintln!("skipped: needs root to give the files to another user: {e}");
        return;
    }
    chown(&keys, Some(NOBODY), Some(4343)).unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();

    let out = command::run(
        site.command(&["keys", "generate", "m1"])
            .uid(NOBODY)
            .gid(NOBODY),
        None,
    );
    let said = command::success_stdout(out, "keys generate as the file's owner");
    let key = printed_key(&said);
    let m = std::fs::metadata(&keys).unwrap();
    assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY));
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    let store = site.store_at(jiff::Timestamp::now());
    assert!(valid(&store, &key).await);
}
