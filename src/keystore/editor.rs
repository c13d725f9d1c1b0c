//! Changing users and keys: the one place both the `keys`/`users` commands
//! and the admin API go through. A key file is rewritten atomically (mode
//! 0600), one edit at a time: within this process by a mutex, and across
//! processes (a `keys` command while a gateway's admin API edits the same
//! file) by an exclusive lock on the folder it is in.
//! PostgreSQL edits run in one transaction under an advisory lock and reach
//! every gateway through the change triggers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;

use crate::auth::KeyHash;
use crate::config::KeySource;
use crate::keystore::file::edit::folder_of;
use crate::keystore::file::{KeyFile, KeyRecord};
use crate::keystore::postgres::admin::PgAdmin;
use crate::BoxError;

/// An edit of keys compiled into the binary.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("this gateway's keys are compiled in and cannot be changed; configure keys.store")]
pub struct ReadOnlyStore;

/// Where edits apply.
#[derive(Debug)]
pub enum KeyEditor {
    /// A key file.
    File {
        /// Its path.
        path: PathBuf,
        /// Serialises read-modify-write cycles within this process.
        lock: Arc<tokio::sync::Mutex<()>>,
    },
    /// The PostgreSQL key store.
    Postgres {
        /// Connection URL.
        url: String,
        /// Schema.
        schema: String,
    },
    /// Keys compiled into the binary (the demo's, tests'): read, never edited.
    Embedded(&'static str),
}

impl KeyEditor {
    /// An editor for a key file.
    pub fn file(path: PathBuf) -> KeyEditor {
        KeyEditor::File {
            path,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// An editor for the configured store.
    pub fn for_source(source: &KeySource) -> KeyEditor {
        match source {
            KeySource::File(path) => KeyEditor::file(path.clone()),
            KeySource::Postgres(pg) => KeyEditor::Postgres {
                url: pg.url.expose().to_owned(),
                schema: pg.schema.clone(),
            },
            KeySource::Embedded(text) => KeyEditor::Embedded(text),
        }
    }

    /// `file`, `postgres` or `embedded`.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyEditor::File { .. } => "file",
            KeyEditor::Postgres { .. } => "postgres",
            KeyEditor::Embedded(_) => "embedded",
        }
    }

    /// Whether [`Self::edit`] can succeed.
    pub fn is_editable(&self) -> bool {
        !matches!(self, KeyEditor::Embedded(_))
    }

    /// Every user and key (hashes only).
    pub async fn read(&self) -> Result<KeyFile, BoxError> {
        match self {
            KeyEditor::File { path, .. } => load(path.clone()).await,
            KeyEditor::Postgres { url, schema } => {
                PgAdmin::connect(url, schema).await?.load().await
            }
            KeyEditor::Embedded(text) => Ok(KeyFile::parse(text, "<embedded>")?),
        }
    }

    /// Applies `op` and persists the result, or nothing if `op` fails.
    pub async fn edit<R>(
        &self,
        op: impl FnOnce(&mut KeyFile) -> Result<R, BoxError>,
    ) -> Result<R, BoxError> {
        match self {
            KeyEditor::File { path, lock } => {
                let one_at_a_time = lock.clone().lock_owned().await;
                let path = path.clone();
                let path = off_thread(move || where_it_lies(&path)).await?;
                let across_processes = lock_folder_of(&path).await?;
                let mut file = load(path.clone()).await?;
                // Only the change itself runs here: it is work in memory.
                let out = op(&mut file)?;
                off_thread(move || {
                    // Both locks are held until the file is saved, even when
                    // the edit's caller goes away meanwhile (an admin client
                    // that disconnects): the next edit reads what this one
                    // wrote, never the file from before it.
                    let _held = (one_at_a_time, across_processes);
                    Ok(file.save(&path)?)
                })
                .await?;
                Ok(out)
            }
            KeyEditor::Postgres { url, schema } => {
                PgAdmin::connect(url, schema).await?.edit(op).await
            }
            KeyEditor::Embedded(_) => Err(ReadOnlyStore.into()),
        }
    }

    /// Last use by fingerprint as the gateways recorded it (PostgreSQL
    /// only: a file store's times live in each running gateway).
    pub async fn recorded_last_use(&self) -> Result<Option<HashMap<String, String>>, BoxError> {
        let KeyEditor::Postgres { url, schema } = self else {
            return Ok(None);
        };
        let by_hash = PgAdmin::connect(url, schema).await?.last_used().await?;
        Ok(Some(
            by_hash
                .into_iter()
                .filter_map(|(h, t)| {
                    Some((
                        KeyHash::from_hex(&h)?.fingerprint().as_str().to_owned(),
                        t.to_string(),
                    ))
                })
                .collect(),
        ))
    }
}

/// Where the key file named `path` is (or is to be made), with every
/// symbolic link resolved. A key file reached through a link is edited
/// where it lies: saving onto the link would replace it with a file and
/// leave the real one stale, and editors that name it by different links
/// must take the same lock. A link to a file not made yet makes it where
/// the link points, so the link then leads to it.
fn where_it_lies(path: &Path) -> Result<PathBuf, BoxError> {
    // As many links in a chain as Linux follows (its `MAXSYMLINKS`).
    const MAX_LINKS: usize = 40;
    let mut path = path.to_owned();
    for _ in 0..=MAX_LINKS {
        if let Ok(real) = std::fs::canonicalize(&path) {
            return Ok(real);
        }
        match std::fs::read_link(&path) {
            // Relative to the link's own folder.
            Ok(target) => path = folder_of(&path).join(target),
            // Not there, and not a link: it is made here, in its folder as
            // resolved (when that exists; else saving says it is missing).
            Err(_) => {
                let folder = std::fs::canonicalize(folder_of(&path));
                return Ok(match (folder, path.file_name()) {
                    (Ok(folder), Some(name)) => folder.join(name),
                    _ => path,
                });
            }
        }
    }
    Err(format!(
        "the key path {} goes through more than {MAX_LINKS} symbolic links",
        path.display()
    )
    .into())
}

/// [`KeyFile::load`] of `path`, off the runtime's thread.
async fn load(path: PathBuf) -> Result<KeyFile, BoxError> {
    off_thread(move || Ok(KeyFile::load(&path)?)).await
}

/// Runs `work` (the key file's reads, writes and fsyncs) on tokio's
/// blocking pool, so that a slow disk or a key path on a stalled network
/// mount holds up only this edit, not the runtime that also serves the
/// admin API and the gateway's upkeep.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work).await?
}

/// How long an edit waits for another process's edit of the same file
/// (edits take milliseconds; a holder this slow is stuck).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits, at most [`LOCK_WAIT`], for the exclusive lock on `path`'s folder
/// (on a blocking thread); held until the returned handle is dropped.
async fn lock_folder_of(path: &Path) -> Result<std::fs::File, BoxError> {
    lock_within(path, LOCK_WAIT).await
}

async fn lock_within(path: &Path, wait: std::time::Duration) -> Result<std::fs::File, BoxError> {
    // The key file itself cannot carry the lock, as each save replaces it; a
    // lock file beside it would need the key file's owner, which root's
    // first edit cannot know when the owner is changed afterwards. Anyone
    // who may edit the key file can read its folder, as saving writes there.
    let dir = folder_of(path).to_owned();
    let shown = dir.display().to_string();
    let waiting = tokio::task::spawn_blocking(move || {
        let folder = std::fs::File::open(&dir)?;
        folder.lock().map(|()| folder)
    });
    // On a timeout the blocking thread still gets the lock eventually, and
    // lets go at once, since nobody takes the handle.
    match tokio::time::timeout(wait, waiting).await {
        Ok(locked) => Ok(locked?.map_err(|e| format!("cannot lock the key file's folder {shown}: {e}"))?),
        Err(_) => Err(format!(
            "the key file's folder {shown} is locked by another edit for over {wait:?}; nothing changed, try again"
        )
        .into()),
    }
}

/// `active`, `revoked`, `expired` or `not yet valid`.
pub fn key_status(k: &KeyRecord, now: Timestamp) -> &'static str {
    if k.disabled {
        "revoked"
    } else if k.expires_at.is_some_and(|t| now >= t) {
        "expired"
    } else if k.not_before.is_some_and(|t| now < t) {
        "not yet valid"
    } else {
        "active"
    }
}

/// One row per key (and one per user without keys), as `keys list --json`
/// and the admin API show them: never the key, only its fingerprint.
pub fn key_rows(
    file: &KeyFile,
    now: Timestamp,
    last_used: Option<&HashMap<String, String>>,
) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for u in &file.users {
        let queues = u
            .queues
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let keys: Vec<_> = file.keys.iter().filter(|k| k.user == u.name).collect();
        if keys.is_empty() {
            rows.push(serde_json::json!({
                "user": u.name, "role": u.role.as_str(), "queues": queues, "tier": u.tier,
                "fingerprint": null, "created": null, "expires": null, "status": "no key", "last_used": null,
            }));
        }
        for k in keys {
            let fp = k
                .fingerprint()
                .map(|f| f.as_str().to_owned())
                .unwrap_or_default();
            let status = key_status(k, now);
            rows.push(serde_json::json!({
                "user": u.name, "role": u.role.as_str(), "queues": queues, "tier": u.tier,
                "fingerprint": fp, "created": k.created_at.to_string(),
                "expires": k.expires_at.map(|t| t.to_string()), "status": status,
                "last_used": last_used.and_then(|m| m.get(&fp)).cloned(),
            }));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::auth::Role;

    /// The edit the tests make: admin `a` added.
    fn add_a(f: &mut KeyFile) -> Result<(), BoxError> {
        Ok(f.add_user("a", Role::Admin, vec![], "default")?)
    }

    /// Two editors of one file stand for two processes (`keys` and a
    /// gateway's admin API): each has its own in-process mutex, so only the
    /// folder's lock keeps their edits apart.
    #[tokio::test]
    async fn an_edit_waits_for_another_process_holding_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        KeyFile::default().save(&path).unwrap();
        let held = lock_folder_of(&path).await.unwrap();
        let other = KeyEditor::file(path.clone());
        let add = |name: &'static str| {
            move |f: &mut KeyFile| Ok(f.add_user(name, Role::Admin, vec![], "default")?)
        };
        let mut waiting = Box::pin(other.edit(add("second")));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut waiting)
                .await
                .is_err(),
            "the edit went ahead while another process held the lock"
        );
        // The holder does its own read-modify-write, then lets go.
        let mut file = KeyFile::load(&path).unwrap();
        file.add_user("first", Role::Admin, vec![], "default")
            .unwrap();
        file.save(&path).unwrap();
        drop(held);
        waiting.await.unwrap();
        let names: Vec<String> = KeyFile::load(&path)
            .unwrap()
            .users
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["first", "second"], "neither edit lost");
    }

    /// A key file that is slow to read (here a named pipe, fed only when
    /// the test says so) holds up only its edit: the runtime, with one
    /// thread, goes on running the test meanwhile. Were the file read on
    /// the runtime's thread, the test could not say so, and the feeder
    /// would find it stalled after 2 s (and feed the pipe anyway, so that
    /// the test fails rather than hangs).
    #[cfg(unix)]
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_key_file_does_not_stall_the_runtime() {
        use std::io::Write as _;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let made = std::process::Command::new("mkfifo")
            .args(["-m", "600"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let (at_pipe, reader_waits) = tokio::sync::oneshot::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let feeder = {
            let path = path.clone();
            std::thread::spawn(move || {
                // Opening a pipe for writing returns once a reader has it open.
                let mut pipe = std::fs::File::options().write(true).open(&path).unwrap();
                at_pipe.send(()).unwrap();
                let stalled = wait.recv_timeout(Duration::from_secs(2)).is_err();
                pipe.write_all(b"").unwrap();
                stalled
            })
        };
        let editor = KeyEditor::file(path.clone());
        let edit = tokio::spawn(async move { editor.edit(add_a).await });
        tokio::time::timeout(Duration::from_secs(5), reader_waits)
            .await
            .expect("the edit never read the key file")
            .unwrap();
        // The edit is waiting on the pipe, and this task runs.
        let _ = go.send(());
        edit.await.unwrap().unwrap();
        assert!(
            !feeder.join().unwrap(),
            "the runtime stalled while the key file was read"
        );
        assert_eq!(KeyFile::load(&path).unwrap().users.len(), 1);
    }

    /// An edit through a symbolic link changes the file it points to, in
    /// its own folder, and leaves the link in place.
    #[cfg(unix)]
    #[tokio::test]
    async fn an_edit_through_a_link_changes_the_linked_file() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("state").join("keys.toml");
        std::fs::create_dir(real.parent().unwrap()).unwrap();
        KeyFile::default().save(&real).unwrap();
        let link = dir.path().join("keys.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        KeyEditor::file(link.clone()).edit(add_a).await.unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(KeyFile::load(&real).unwrap().users.len(), 1);
        // The temporary file went to the real file's folder, and is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert_eq!(
            std::fs::read_dir(real.parent().unwrap()).unwrap().count(),
            1
        );
    }

    /// A link to a key file not made yet: the edit makes the file where
    /// the link points, through a chain of links, and leaves the links.
    #[cfg(unix)]
    #[tokio::test]
    async fn an_edit_through_a_dangling_link_makes_the_file_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let real = state.join("keys.toml");
        let middle = dir.path().join("middle.toml");
        std::os::unix::fs::symlink("state/keys.toml", &middle).unwrap();
        let link = dir.path().join("keys.toml");
        std::os::unix::fs::symlink(&middle, &link).unwrap();
        KeyEditor::file(link.clone()).edit(add_a).await.unwrap();
        for l in [&link, &middle] {
            let kind = std::fs::symlink_metadata(l).unwrap().file_type();
            assert!(kind.is_symlink(), "{} was replaced", l.display());
        }
        assert_eq!(KeyFile::load(&real).unwrap().users.len(), 1);
        assert_eq!(KeyFile::load(&link).unwrap().users.len(), 1);
    }

    /// Links that lead back to themselves are an error, not a loop.
    #[cfg(unix)]
    #[test]
    fn a_circle_of_links_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let err = where_it_lies(&a).unwrap_err().to_string();
        assert!(err.contains("more than 40 symbolic links"), "{err}");
    }

    /// A key file not made yet is made where named, in its folder as
    /// resolved: named through a linked folder, it goes into the real one.
    #[cfg(unix)]
    #[test]
    fn a_new_key_file_is_made_where_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let linked = dir.path().join("etc");
        std::os::unix::fs::symlink(&state, &linked).unwrap();
        let real = std::fs::canonicalize(&state).unwrap().join("keys.toml");
        assert_eq!(where_it_lies(&linked.join("keys.toml")).unwrap(), real);
        assert_eq!(where_it_lies(&state.join("keys.toml")).unwrap(), real);
    }

    /// (A paused clock cannot run the wait out: tokio does not advance it
    /// while a blocking task is in flight. So the wait is short and real.)
    #[tokio::test]
    async fn a_stuck_holder_gives_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let held = std::fs::File::open(dir.path()).unwrap();
        held.lock().unwrap();
        let err = lock_within(&path, Duration::from_millis(50))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("locked by another edit"), "{err}");
        drop(held);
    }
}
