//! Key lifecycle on a key file: users, generate, rotate, revoke, import,
//! and the atomic, owner-only write back to disk.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::{KeyFile, KeyFileError, KeyRecord, UserRecord};
use crate::auth::{ApiKey, Fingerprint, KeyHash, Role};

/// A lifecycle operation that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// No such user.
    #[error("no user named `{0}`")]
    NoSuchUser(String),
    /// The user exists already.
    #[error("user `{0}` exists already")]
    UserExists(String),
    /// The user already has a working key.
    #[error(
        "user `{user}` already has an active key ({fingerprint}); pass --rotate to replace it"
    )]
    ActiveKeyExists {
        /// The user.
        user: String,
        /// The active key's fingerprint.
        fingerprint: Fingerprint,
    },
    /// The key is registered already.
    #[error("that key is already registered ({0})")]
    DuplicateKey(Fingerprint),
    /// Nothing matched a revoke.
    #[error("no active key belongs to a user or fingerprint `{0}`")]
    NothingToRevoke(String),
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
}

/// What a rotation or generation did.
#[derive(Debug)]
pub struct Generated {
    /// The new key: shown once, never stored.
    pub key: ApiKey,
    /// Keys that stop working, with the instant they do.
    pub retired: Vec<(Fingerprint, Timestamp)>,
}

impl KeyRecord {
    /// The key's fingerprint (from its stored hash).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        KeyHash::from_hex(&self.sha256).map(|h| h.fingerprint())
    }

    /// Whether the key works at `now`, or will later (not disabled, not expired).
    pub fn is_active(&self, now: Timestamp) -> bool {
        !self.disabled && self.expires_at.is_none_or(|t| now < t)
    }
}

fn check_user_name(name: &str) -> Result<(), EditError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(EditError::Invalid(format!(
            "user name `{name}`: use 1-64 of A-Z a-z 0-9 - _ . @"
        )))
    }
}

fn check_queues(queues: &[u32]) -> Result<(), EditError> {
    if queues.iter().any(|&q| q == 0 || q > i32::MAX as u32) {
        return Err(EditError::Invalid(
            "queue ids are positive 32-bit integers".into(),
        ));
    }
    Ok(())
}

impl KeyFile {
    /// Reads a key file for editing (a missing file is an empty store).
    pub fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let parsed = KeyFile::parse(&text, &file)?;
                parsed.index(&file)?;
                Ok(parsed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeyFile::default()),
            Err(e) => Err(KeyFileError {
                file,
                message: format!("cannot read: {e}"),
            }),
        }
    }

    /// Writes the file atomically (temporary file, fsync, rename). A new
    /// file gets mode 0600; a file replaced keeps its owner, its group and
    /// its owner and group read and write bits (at most 0660, never anything
    /// for other users), so that root editing the key file of a gateway that
    /// runs as its own user (the systemd unit's, the image's) leaves the
    /// gateway able to read it. An owner who is not in the file's group
    /// cannot give it that group, so their edit leaves it owner-only (0600).
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let file = path.display().to_string();
        let err = |what: &str, e: std::io::Error| KeyFileError {
            file: file.clone(),
            message: format!("{what}: {e}"),
        };
        let text = self.to_toml().map_err(|e| KeyFileError {
            file: file.clone(),
            message: e.message,
        })?;
        let dir = folder_of(path);
        let mut tmp = tempfile::Builder::new()
            .prefix(".keys-")
            .tempfile_in(dir)
            .map_err(|e| err("cannot create a temporary file", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let before = std::fs::metadata(path).ok();
            // Root's edit gives the file back; anyone else's that would
            // change the owner is refused here rather than leaving a file
            // its gateway cannot read. An owner outside the file's group
            // keeps the file but not its group, and then the group bits
            // would open it to the editor's own group: owner-only instead.
            let mode = match &before {
                None => 0o600,
                Some(m) => match give_to_owner_of(tmp.as_file(), m)
                    .map_err(|e| err("cannot keep the file's owner and group", e))?
                {
                    Group::Kept => m.mode() & 0o660,
                    Group::NotKept => m.mode() & 0o600,
                },
            };
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
                .map_err(|e| err("cannot set permissions", e))?;
        }
        tmp.write_all(text.as_bytes())
            .map_err(|e| err("cannot write", e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| err("cannot sync", e))?;
        tmp.persist(path)
            .map_err(|e| err("cannot replace the file", e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The key file as TOML, with its explanatory header.
    pub fn to_toml(&self) -> Result<String, KeyFileError> {
        let body = toml::to_string_pretty(self).map_err(|e| KeyFileError {
            file: "<key file>".into(),
            message: format!("cannot serialise: {e}"),
        })?;
        Ok(format!(
            "# chime-gateway key store. Written by `chime-gateway keys`/`users`; keys are\n\
             # stored only as SHA-256 hashes. Hand edits are fine: the gateway reloads on change.\n\n{body}"
        ))
    }

    fn user(&self, name: &str) -> Result<&UserRecord, EditError> {
        self.users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| EditError::NoSuchUser(name.to_owned()))
    }

    /// Adds a user.
    pub fn add_user(
        &mut self,
        name: &str,
        role: Role,
        queues: Vec<u32>,
        tier: &str,
    ) -> Result<(), EditError> {
        check_user_name(name)?;
        check_queues(&queues)?;
        if self.user(name).is_ok() {
            return Err(EditError::UserExists(name.to_owned()));
        }
        self.users.push(UserRecord {
            name: name.to_owned(),
            role,
            queues,
            tier: tier.to_owned(),
        });
        Ok(())
    }

    /// Changes a user's role, queues or tier.
    pub fn set_user(
        &mut self,
        name: &str,
        role: Option<Role>,
        queues: Option<Vec<u32>>,
        tier: Option<&str>,
    ) -> Result<(), EditError> {
        if let Some(q) = &queues {
            check_queues(q)?;
        }
        let user = self
            .users
            .iter_mut()
            .find(|u| u.name == name)
            .ok_or_else(|| EditError::NoSuchUser(name.to_owned()))?;
        if let Some(role) = role {
            user.role = role;
        }
        if let Some(queues) = queues {
            user.queues = queues;
        }
        if let Some(tier) = tier {
            user.tier = tier.to_owned();
        }
        Ok(())
    }

    /// The user's keys that work now or will later.
    pub fn active_keys<'a>(
        &'a self,
        user: &'a str,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a KeyRecord> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.user == user && k.is_active(now))
    }

    /// Generates a key for `user`. With an active key already present this
    /// fails unless `rotate` is given; rotation retires the old keys at
    /// `now + grace` (immediately for a zero grace).
    pub fn generate(
        &mut self,
        user: &str,
        now: Timestamp,
        rotate: Option<Duration>,
        expires_at: Option<Timestamp>,
    ) -> Result<Generated, EditError> {
        self.user(user)?;
        if let Some(active) = self.active_keys(user, now).next() {
            if rotate.is_none() {
                return Err(EditError::ActiveKeyExists {
                    user: user.to_owned(),
                    fingerprint: active
                        .fingerprint()
                        .ok_or_else(|| EditError::Invalid("stored hash is not valid hex".into()))?,
                });
            }
        }
        let mut retired = Vec::new();
        if let Some(grace) = rotate {
            let grace = SignedDuration::try_from(grace)
                .map_err(|e| EditError::Invalid(format!("grace period: {e}")))?;
            let until = now
                .checked_add(grace)
                .map_err(|e| EditError::Invalid(format!("grace period: {e}")))?;
            for k in self
                .keys
                .iter_mut()
                .filter(|k| k.user == user && k.is_active(now))
            {
                let until = k.expires_at.map_or(until, |e| e.min(until));
                k.expires_at = Some(until);
                if let Some(fp) = k.fingerprint() {
                    retired.push((fp, until));
                }
            }
        }
        let key = ApiKey::generate();
        self.keys.push(KeyRecord {
            user: user.to_owned(),
            sha256: key.hash().to_hex(),
            created_at: now,
            expires_at,
            not_before: None,
            disabled: false,
        });
        Ok(Generated { key, retired })
    }

    /// Registers an existing Chime key for `user`.
    pub fn import(
        &mut self,
        user: &str,
        key: &ApiKey,
        now: Timestamp,
    ) -> Result<Fingerprint, EditError> {
        self.user(user)?;
        let hash = key.hash();
        if self
            .keys
            .iter()
            .any(|k| KeyHash::from_hex(&k.sha256) == Some(hash))
        {
            return Err(EditError::DuplicateKey(hash.fingerprint()));
        }
        self.keys.push(KeyRecord {
            user: user.to_owned(),
            sha256: hash.to_hex(),
            created_at: now,
            expires_at: None,
            not_before: None,
            disabled: false,
        });
        Ok(hash.fingerprint())
    }

    /// Disables every active key of a user, or the key with a fingerprint.
    pub fn revoke(&mut self, who: &str, now: Timestamp) -> Result<Vec<Fingerprint>, EditError> {
        let mut revoked = Vec::new();
        for k in self.keys.iter_mut().filter(|k| k.is_active(now)) {
            let fp = k.fingerprint();
            if k.user == who || fp.as_ref().is_some_and(|f| f.as_str() == who) {
                k.disabled = true;
                revoked.extend(fp);
            }
        }
        if revoked.is_empty() {
            return Err(EditError::NothingToRevoke(who.to_owned()));
        }
        Ok(revoked)
    }
}

/// The folder the key file at `path` is in, where its saves write their
/// temporary file and whose lock keeps edits apart.
pub(crate) fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Whether [`give_to_owner_of`] gave the file its group as well as its owner.
#[cfg(unix)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Kept,
    /// The editor owns the file but is not a member of its group, so only
    /// root could give the group back; the file keeps the editor's own.
    NotKept,
}

/// Gives `file` the owner and group of the file `owner` describes, the key
/// file's, when they differ: root's edit of a file its gateway's own user
/// owns. When they are the same (the gateway editing its own file) it makes
/// no call at all, since the gateway's systemd unit filters out chown.
///
/// An owner who is not in the file's group may still edit it: the group is
/// then [`Group::NotKept`]. Anyone else whose file would change owner gets
/// the error (only root can give a file away).
#[cfg(unix)]
fn give_to_owner_of(file: &std::fs::File, owner: &std::fs::Metadata) -> std::io::Result<Group> {
    use std::os::unix::fs::MetadataExt;
    let made = file.metadata()?;
    if (made.uid(), made.gid()) == (owner.uid(), owner.gid()) {
        return Ok(Group::Kept);
    }
    match std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid())) {
        Ok(()) => Ok(Group::Kept),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && made.uid() == owner.uid() => {
            Ok(Group::NotKept)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn file() -> KeyFile {
        let mut f = KeyFile::default();
        f.add_user("m1", Role::Manager, vec![1], "default").unwrap();
        f
    }

    #[test]
    fn generate_refuses_a_second_key_without_rotate() {
        let mut f = file();
        let now = t("2026-01-01T00:00:00Z");
        f.generate("m1", now, None, None).unwrap();
        assert!(matches!(
            f.generate("m1", now, None, None),
            Err(EditError::ActiveKeyExists { .. })
        ));
        assert!(matches!(
            f.generate("ghost", now, None, None),
            Err(EditError::NoSuchUser(_))
        ));
    }

    #[test]
    fn rotation_retires_old_keys_after_the_grace() {
        let mut f = file();
        let now = t("2026-01-01T00:00:00Z");
        let old = f.generate("m1", now, None, None).unwrap().key;
        let g = f
            .generate("m1", now, Some(Duration::from_secs(600)), None)
            .unwrap();
        assert_eq!(
            g.retired,
            vec![(old.hash().fingerprint(), t("2026-01-01T00:10:00Z"))]
        );
        let active: Vec<_> = f.active_keys("m1", t("2026-01-01T00:10:00Z")).collect();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].sha256, g.key.hash().to_hex());
        // Without grace, every key still working is retired at once,
        // including one that was in its grace period.
        let g2 = f.generate("m1", now, Some(Duration::ZERO), None).unwrap();
        assert_eq!(
            g2.retired,
            vec![
                (old.hash().fingerprint(), now),
                (g.key.hash().fingerprint(), now)
            ]
        );
        assert_eq!(f.active_keys("m1", now).count(), 1);
    }

    #[test]
    fn revoke_by_user_or_fingerprint() {
        let mut f = file();
        let now = t("2026-01-01T00:00:00Z");
        let k = f.generate("m1", now, None, None).unwrap().key;
        let fp = k.hash().fingerprint();
        assert_eq!(f.revoke(fp.as_str(), now).unwrap(), vec![fp]);
        assert!(matches!(
            f.revoke("m1", now),
            Err(EditError::NothingToRevoke(_))
        ));
        f.generate("m1", now, None, None).unwrap();
        assert_eq!(f.revoke("m1", now).unwrap().len(), 1);
    }

    #[test]
    fn import_and_users() {
        let mut f = file();
        let now = t("2026-01-01T00:00:00Z");
        let key = ApiKey::parse("b5c38d85-a042-4cef-8418-eb06752e346b").unwrap();
        f.import("m1", &key, now).unwrap();
        assert!(matches!(
            f.import("m1", &key, now),
            Err(EditError::DuplicateKey(_))
        ));
        assert!(matches!(
            f.add_user("m1", Role::Admin, vec![], "x"),
            Err(EditError::UserExists(_))
        ));
        assert!(f.add_user("bad name", Role::Admin, vec![], "x").is_err());
        assert!(f.add_user("z", Role::Manager, vec![0], "x").is_err());
        f.set_user("m1", Some(Role::Admin), Some(vec![2, 3]), Some("partner"))
            .unwrap();
        assert_eq!(f.users[0].role, Role::Admin);
        assert_eq!(f.users[0].queues, vec![2, 3]);
        assert_eq!(f.users[0].tier, "partner");
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_folder() {
        assert_eq!(
            folder_of(Path::new("/etc/cg/keys.toml")),
            Path::new("/etc/cg")
        );
        assert_eq!(folder_of(Path::new("keys.toml")), Path::new("."));
    }

    #[test]
    fn saved_file_round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let mut f = file();
        let now = t("2026-01-01T00:00:00Z");
        let key = f
            .generate("m1", now, None, Some(t("2027-01-01T00:00:00Z")))
            .unwrap()
            .key;
        f.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(key.expose()));
        let back = KeyFile::load(&path).unwrap();
        assert_eq!(back.users, f.users);
        assert_eq!(back.keys, f.keys);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Only the key file is left in the directory: no temporary leftovers.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A gateway running as its own user reads a key file that root edits:
    /// the file keeps its owner, group and mode, but never gives other
    /// users any access.
    #[cfg(unix)]
    #[test]
    fn saving_over_a_file_keeps_its_owner_group_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let mut f = file();
        let now = t("2026-01-01T00:00:00Z");
        f.generate("m1", now, None, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        for (before, after) in [
            (0o640, 0o640),
            (0o600, 0o600),
            (0o644, 0o640),
            (0o4777, 0o660),
        ] {
            f.save(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(before)).unwrap();
            f.save(&path).unwrap();
            assert_eq!(mode(&path), after, "{before:o}");
        }
        // Owned by another user (only root can make it so, and only root
        // can then keep it so): that owner and group stay.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        match std::os::unix::fs::chown(&path, Some(4242), Some(4343)) {
            Ok(()) => {
                f.save(&path).unwrap();
                let m = std::fs::metadata(&path).unwrap();
                assert_eq!((m.uid(), m.gid()), (4242, 4343));
                assert_eq!(mode(&path), 0o600);
            }
            Err(e) => {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped the other owner: {e}");
            }
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
