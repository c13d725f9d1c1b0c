//! The file key store: users and key hashes in a TOML file.
//!
//! ```toml
//! [[user]]
//! name = "queue1-manager"
//! role = "manager"          # or "admin"
//! queues = [1]
//! tier = "default"
//!
//! [[key]]
//! user = "queue1-manager"
//! sha256 = "…64 hex…"       # SHA-256 of the lower-case GUID; never the key
//! created_at = "2026-11-21T00:00:00Z"
//! # expires_at, not_before (RFC 3339) and disabled = true are optional
//! ```
//!
//! The whole file is parsed and validated into an index before it replaces
//! the current one, so a broken file never empties the store.

pub mod edit;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{KeyStore, LookupFuture, StoreUnavailable};
use sha2::Digest;

use crate::auth::{Fingerprint, KeyHash, Principal, Role};
use crate::clock::Clock;

/// The key file as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Users.
    #[serde(default, rename = "user")]
    pub users: Vec<UserRecord>,
    /// Keys (hashes).
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyRecord>,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Queues a manager sees.
    #[serde(default)]
    pub queues: Vec<u32>,
    /// Rate-limit tier.
    #[serde(default = "default_tier")]
    pub tier: String,
}

fn default_tier() -> String {
    "default".to_owned()
}

/// One key, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Owner.
    pub user: String,
    /// SHA-256 of the canonical key, hex.
    pub sha256: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Refused from this instant on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Refused before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// Refused while set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct KeyFileError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug)]
struct Entry {
    principal: Principal,
    not_before: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    disabled: bool,
    /// Unix seconds of the last use by this instance; 0 = never.
    last_used: AtomicI64,
}

impl Entry {
    /// Records a use at `now`. Written only when the second changed: the
    /// workers' requests with one key do not take turns owning its cache
    /// line.
    fn mark_used(&self, now: Timestamp) {
        let secs = now.as_second();
        if self.last_used.load(Ordering::Relaxed) != secs {
            self.last_used.store(secs, Ordering::Relaxed);
        }
    }
}

/// A validated, immutable index of a key file.
#[derive(Debug, Default)]
struct Index {
    /// Keyed by hash with foldhash: a lookup's key is a SHA-256 digest, which
    /// no client can steer, and only the operator's keys are ever inserted.
    by_hash: HashMap<KeyHash, Entry, foldhash::fast::RandomState>,
}

impl KeyFile {
    /// Parses TOML text.
    pub fn parse(text: &str, file: &str) -> Result<KeyFile, KeyFileError> {
        toml::from_str(text).map_err(|e| KeyFileError {
            file: file.to_owned(),
            message: e.to_string(),
        })
    }

    fn index(&self, file: &str) -> Result<Index, KeyFileError> {
        let err = |message: String| KeyFileError {
            file: file.to_owned(),
            message,
        };
        let mut users = HashMap::new();
        for u in &self.users {
            if u.name.is_empty() || u.name.chars().any(|c| c.is_control()) {
                return Err(err(format!(
                    "user name `{}` is empty or has control characters",
                    u.name
                )));
            }
            if u.queues.contains(&0) || u.queues.iter().any(|&q| q > i32::MAX as u32) {
                return Err(err(format!(
                    "user `{}`: queue ids are positive 32-bit integers",
                    u.name
                )));
            }
            let principal = (
                Arc::<str>::from(u.name.as_str()),
                u.role,
                Arc::new(u.queues.iter().copied().collect::<BTreeSet<u32>>()),
                Arc::<str>::from(u.tier.as_str()),
            );
            if users.insert(u.name.as_str(), principal).is_some() {
                return Err(err(format!("user `{}` is defined twice", u.name)));
            }
        }
        let mut by_hash = HashMap::default();
        for (i, k) in self.keys.iter().enumerate() {
            let hash = KeyHash::from_hex(&k.sha256)
                .ok_or_else(|| err(format!("key #{}: sha256 is not 64 hex characters", i + 1)))?;
            let (user, role, queues, tier) = users
                .get(k.user.as_str())
                .ok_or_else(|| err(format!("key #{}: no user named `{}`", i + 1, k.user)))?;
            let entry = Entry {
                principal: Principal {
                    user: Arc::clone(user),
                    role: *role,
                    queues: Arc::clone(queues),
                    tier: Arc::clone(tier),
                    fingerprint: hash.fingerprint(),
                },
                not_before: k.not_before,
                expires_at: k.expires_at,
                disabled: k.disabled,
                last_used: AtomicI64::new(0),
            };
            if by_hash.insert(hash, entry).is_some() {
                return Err(err(format!(
                    "key #{} ({}) appears twice",
                    i + 1,
                    hash.fingerprint()
                )));
            }
        }
        Ok(Index { by_hash })
    }
}

/// Where the store's file comes from.
#[derive(Debug, Clone)]
enum Source {
    Path(PathBuf),
    Embedded,
}

/// What was last loaded: file metadata to notice a change cheaply, and the
/// content hash to skip reloads of identical content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
    content: [u8; 32],
}

impl Stamp {
    fn of(meta: (u64, Option<std::time::SystemTime>, u64), text: &str) -> Stamp {
        Stamp {
            len: meta.0,
            modified: meta.1,
            inode: meta.2,
            content: sha2::Sha256::digest(text.as_bytes()).into(),
        }
    }
}

fn metadata_stamp(meta: &std::fs::Metadata) -> (u64, Option<std::time::SystemTime>, u64) {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    (meta.len(), meta.modified().ok(), inode)
}

/// A key store backed by a TOML file.
#[derive(Debug)]
pub struct FileKeyStore {
    source: Source,
    clock: Arc<dyn Clock>,
    /// Swapped whole on reload; read without a lock or a shared count.
    index: ArcSwap<Index>,
    stamp: Mutex<Option<Stamp>>,
}

impl FileKeyStore {
    /// Loads the file at `path`.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, KeyFileError> {
        let (index, stamp) = read_index(path)?;
        Ok(FileKeyStore {
            source: Source::Path(path.to_owned()),
            clock,
            index: ArcSwap::from_pointee(index),
            stamp: Mutex::new(Some(stamp)),
        })
    }

    /// Uses key-file text compiled into the binary (demo mode).
    pub fn embedded(text: &str, clock: Arc<dyn Clock>) -> Result<Self, KeyFileError> {
        let index = KeyFile::parse(text, "<embedded>")?.index("<embedded>")?;
        Ok(FileKeyStore {
            source: Source::Embedded,
            clock,
            index: ArcSwap::from_pointee(index),
            stamp: Mutex::new(None),
        })
    }

    /// The file behind the store, if any.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::Path(p) => Some(p),
            Source::Embedded => None,
        }
    }

    /// Re-reads the file; on any error the previous keys stay in force.
    pub fn reload(&self) -> Result<usize, KeyFileError> {
        let Source::Path(path) = &self.source else {
            return Ok(self.key_count());
        };
        let (index, stamp) = read_index(path)?;
        Ok(self.install(index, stamp))
    }

    /// Reloads if the file changed since the last load: `Ok(Some(keys))`
    /// after a reload, `Ok(None)` when nothing changed. On error the
    /// previous keys stay in force (and the broken version is not retried
    /// until the file changes again).
    pub fn reload_if_changed(&self) -> Result<Option<usize>, KeyFileError> {
        let Source::Path(path) = &self.source else {
            return Ok(None);
        };
        let meta = metadata_stamp(&std::fs::metadata(path).map_err(|e| cannot_read(path, e))?);
        let previous = lock(&self.stamp).clone();
        if previous
            .as_ref()
            .is_some_and(|s| (s.len, s.modified, s.inode) == meta)
        {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path).map_err(|e| cannot_read(path, e))?;
        let stamp = Stamp::of(meta, &text);
        if previous.is_some_and(|s| s.content == stamp.content) {
            *lock(&self.stamp) = Some(stamp);
            return Ok(None);
        }
        // Remember this version even if it is broken, so it is reported once, not every tick.
        *lock(&self.stamp) = Some(stamp.clone());
        let file = path.display().to_string();
        let index = KeyFile::parse(&text, &file)?.index(&file)?;
        Ok(Some(self.install(index, stamp)))
    }

    fn install(&self, index: Index, stamp: Stamp) -> usize {
        let old = self.index.load_full();
        for (hash, entry) in &index.by_hash {
            if let Some(prev) = old.by_hash.get(hash) {
                entry
                    .last_used
                    .store(prev.last_used.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        let count = index.by_hash.len();
        self.index.store(Arc::new(index));
        *lock(&self.stamp) = Some(stamp);
        count
    }

    fn current(&self) -> arc_swap::Guard<Arc<Index>> {
        self.index.load()
    }

    /// The principal for `hash` if its key is valid now, recording the use
    /// (in whole seconds, so from the coarse clock).
    fn find(&self, hash: &KeyHash) -> Option<Principal> {
        let index = self.current();
        let entry = index
            .by_hash
            .get(hash)
            .filter(|e| super::usable(e.disabled, e.not_before, e.expires_at, &*self.clock))?;
        entry.mark_used(self.clock.now_coarse());
        Some(entry.principal.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn cannot_read(path: &Path, e: std::io::Error) -> KeyFileError {
    KeyFileError {
        file: path.display().to_string(),
        message: format!("cannot read: {e}"),
    }
}

fn read_index(path: &Path) -> Result<(Index, Stamp), KeyFileError> {
    let file = path.display().to_string();
    let meta = metadata_stamp(&std::fs::metadata(path).map_err(|e| cannot_read(path, e))?);
    let text = std::fs::read_to_string(path).map_err(|e| cannot_read(path, e))?;
    let stamp = Stamp::of(meta, &text);
    Ok((KeyFile::parse(&text, &file)?.index(&file)?, stamp))
}

impl KeyStore for FileKeyStore {
    fn lookup<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a> {
        Box::pin(std::future::ready(Ok(self.find(hash))))
    }

    fn lookup_now(&self, hash: &KeyHash) -> Option<Result<Option<Principal>, StoreUnavailable>> {
        Some(Ok(self.find(hash)))
    }

    fn key_count(&self) -> usize {
        self.current().by_hash.len()
    }

    fn touch(&self, hash: &KeyHash) {
        if let Some(e) = self.current().by_hash.get(hash) {
            e.mark_used(self.clock.now_coarse());
        }
    }

    fn last_used(&self) -> Vec<(Fingerprint, Timestamp)> {
        self.current()
            .by_hash
            .iter()
            .filter_map(|(hash, e)| {
                let secs = e.last_used.load(Ordering::Relaxed);
                let at = (secs > 0)
                    .then(|| Timestamp::from_second(secs).ok())
                    .flatten()?;
                Some((hash.fingerprint(), at))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ApiKey;
    use crate::clock::FixedClock;

    const DOC_KEY: &str = "b5c38d85-a042-4cef-8418-eb06752e346b";

    fn file_for(key: &str, extra: &str) -> String {
        let hash = ApiKey::parse(key).unwrap().hash().to_hex();
        format!(
            "[[user]]\nname = \"m1\"\nrole = \"manager\"\nqueues = [1, 3]\n\n\
             [[key]]\nuser = \"m1\"\nsha256 = \"{hash}\"\ncreated_at = \"2026-01-01T00:00:00Z\"\n{extra}"
        )
    }

    fn clock(at: &str) -> Arc<FixedClock> {
        Arc::new(FixedClock::new(at.parse().unwrap()))
    }

    async fn lookup(store: &FileKeyStore, key: &str) -> Option<Principal> {
        let hash = ApiKey::parse(key).unwrap().hash();
        let found = store.lookup(&hash).await.unwrap();
        // The request path asks without waiting; the key file always has
        // the answer at hand, and it is the same.
        assert_eq!(store.lookup_now(&hash).unwrap().unwrap(), found);
        found
    }

    #[tokio::test]
    async fn finds_principal_by_hash() {
        let store =
            FileKeyStore::embedded(&file_for(DOC_KEY, ""), clock("2026-06-01T00:00:00Z")).unwrap();
        let p = lookup(&store, DOC_KEY).await.unwrap();
        assert_eq!(&*p.user, "m1");
        assert_eq!(p.role, Role::Manager);
        assert!(p.may_see_queue(3) && !p.may_see_queue(2));
        assert_eq!(&*p.tier, "default");
        assert!(lookup(&store, "00000000-0000-0000-0000-000000000000")
            .await
            .is_none());
    }

    #[tokio::test]
    async fn validity_window_and_disabled() {
        let text = file_for(
            DOC_KEY,
            "not_before = \"2026-02-01T00:00:00Z\"\nexpires_at = \"2026-03-01T00:00:00Z\"\n",
        );
        let c = clock("2026-01-15T00:00:00Z");
        let store = FileKeyStore::embedded(&text, c.clone()).unwrap();
        assert!(lookup(&store, DOC_KEY).await.is_none(), "before not_before");
        c.set("2026-02-01T00:00:00Z".parse().unwrap());
        assert!(lookup(&store, DOC_KEY).await.is_some(), "at not_before");
        c.set("2026-03-01T00:00:00Z".parse().unwrap());
        assert!(lookup(&store, DOC_KEY).await.is_none(), "at expiry");
        let store = FileKeyStore::embedded(&file_for(DOC_KEY, "disabled = true\n"), c).unwrap();
        assert!(lookup(&store, DOC_KEY).await.is_none(), "disabled");
    }

    /// A lookup reads the precise clock only for a key with a time bound;
    /// its use is recorded from the coarse one.
    #[tokio::test]
    async fn only_a_key_with_a_time_bound_reads_the_precise_clock() {
        let clock = || Arc::new(FixedClock::new("2026-02-01T00:00:00Z".parse().unwrap()));
        let c = clock();
        let store = FileKeyStore::embedded(&file_for(DOC_KEY, ""), c.clone()).unwrap();
        assert!(lookup(&store, DOC_KEY).await.is_some());
        // Two lookups: `lookup` asks both ways.
        assert_eq!(c.readings(), (0, 2));
        let bounded = file_for(DOC_KEY, "expires_at = \"2026-03-01T00:00:00Z\"\n");
        let c = clock();
        let store = FileKeyStore::embedded(&bounded, c.clone()).unwrap();
        assert!(lookup(&store, DOC_KEY).await.is_some());
        assert_eq!(c.readings(), (2, 2));
        store.touch(&ApiKey::parse(DOC_KEY).unwrap().hash());
        assert_eq!(c.readings(), (2, 3));
    }

    #[tokio::test]
    async fn a_lookup_records_the_use_of_a_valid_key_only() {
        let text = file_for(DOC_KEY, "expires_at = \"2026-03-01T00:00:00Z\"\n");
        let c = clock("2026-02-01T00:00:00Z");
        let store = FileKeyStore::embedded(&text, c.clone()).unwrap();
        let fingerprint = ApiKey::parse(DOC_KEY).unwrap().hash().fingerprint();
        assert!(lookup(&store, "00000000-0000-0000-0000-000000000000")
            .await
            .is_none());
        assert!(store.last_used().is_empty(), "an unknown key is no use");
        assert!(lookup(&store, DOC_KEY).await.is_some());
        let at: Timestamp = "2026-02-01T00:00:00Z".parse().unwrap();
        assert_eq!(store.last_used(), vec![(fingerprint, at)]);
        c.set("2026-03-01T00:00:00Z".parse().unwrap());
        assert!(lookup(&store, DOC_KEY).await.is_none());
        assert_eq!(
            store.last_used(),
            vec![(fingerprint, at)],
            "an expired key's refusal is not a use"
        );
    }

    #[test]
    fn invalid_files_are_refused() {
        let cases = [
            ("[[key]]\nuser = \"ghost\"\nsha256 = \"00\"\ncreated_at = \"2026-01-01T00:00:00Z\"\n", "not 64 hex"),
            (&*file_for(DOC_KEY, "").replace("m1\"\nsha256", "ghost\"\nsha256"), "no user named"),
            ("[[user]]\nname = \"a\"\nrole = \"manager\"\nqueues = [0]\n", "positive"),
            ("[[user]]\nname = \"a\"\nrole = \"owner\"\n", "unknown variant"),
            ("[[user]]\nname = \"a\"\nrole = \"admin\"\n[[user]]\nname = \"a\"\nrole = \"admin\"\n", "twice"),
            ("[[user]]\nname = \"a\"\nrole = \"admin\"\ncolour = 1\n", "unknown field"),
        ];
        for (text, want) in cases {
            let e = KeyFile::parse(text, "k.toml")
                .and_then(|f| f.index("k.toml"))
                .unwrap_err();
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
        let one = file_for(DOC_KEY, "");
        let dup = format!("{one}{}", &one[one.find("[[key]]").unwrap()..]);
        assert!(KeyFile::parse(&dup, "k")
            .and_then(|f| f.index("k"))
            .is_err());
    }

    #[tokio::test]
    async fn last_use_is_tracked_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, file_for(DOC_KEY, "")).unwrap();
        let now = clock("2026-06-01T00:00:00Z");
        let store = FileKeyStore::open(&path, now.clone()).unwrap();
        assert!(store.last_used().is_empty());
        let hash = ApiKey::parse(DOC_KEY).unwrap().hash();
        store.touch(&hash);
        store.touch(&hash);
        let used = store.last_used();
        assert_eq!(
            used,
            vec![(hash.fingerprint(), "2026-06-01T00:00:00Z".parse().unwrap())]
        );
        std::fs::write(&path, file_for(DOC_KEY, "\n")).unwrap();
        assert_eq!(store.reload_if_changed().unwrap(), Some(1));
        assert_eq!(store.last_used(), used);
        // A later second is written (the same second is not written again).
        now.set("2026-06-01T00:00:07Z".parse().unwrap());
        store.touch(&hash);
        assert_eq!(
            store.last_used(),
            vec![(hash.fingerprint(), "2026-06-01T00:00:07Z".parse().unwrap())]
        );
    }

    #[tokio::test]
    async fn unchanged_files_are_not_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, file_for(DOC_KEY, "")).unwrap();
        let store = FileKeyStore::open(&path, clock("2026-06-01T00:00:00Z")).unwrap();
        assert_eq!(store.reload_if_changed().unwrap(), None);
        // Same content written again: metadata changes, content does not.
        std::fs::write(&path, file_for(DOC_KEY, "")).unwrap();
        assert_eq!(store.reload_if_changed().unwrap(), None);
        // A broken version is reported once, then left alone until the file changes.
        std::fs::write(&path, "broken = [").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert_eq!(store.reload_if_changed().unwrap(), None);
        assert_eq!(store.key_count(), 1);
    }

    #[tokio::test]
    async fn broken_reload_keeps_previous_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        std::fs::write(&path, file_for(DOC_KEY, "")).unwrap();
        let store = FileKeyStore::open(&path, clock("2026-06-01T00:00:00Z")).unwrap();
        std::fs::write(&path, "[[user]\nbroken").unwrap();
        assert!(store.reload().is_err());
        assert!(lookup(&store, DOC_KEY).await.is_some());
        assert_eq!(store.key_count(), 1);
    }
}
