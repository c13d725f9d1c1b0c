//! `chime-gateway keys …`, `users …` and `migrate`: key lifecycle on the
//! configured key store (or `--store PATH|postgres://…`). File writes are
//! atomic and owner-only, and a running gateway notices them within
//! `keys.watch_interval`; PostgreSQL edits run in one locked transaction and
//! reach every gateway through the change triggers.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use jiff::Timestamp;

use crate::auth::{ApiKey, Role};
use crate::config::{Config, KeySource, ProcessEnv};
use crate::keystore::editor::{key_rows, KeyEditor};
use crate::keystore::file::KeyFile;
use crate::keystore::postgres::admin::PgAdmin;
use crate::BoxError;

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "admin" => Ok(Role::Admin),
        "manager" => Ok(Role::Manager),
        other => Err(format!("`{other}` is not a role (admin, manager)")),
    }
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key for a user and print it once.
    Generate {
        /// The user.
        user: String,
        /// Replace the user's active key(s).
        #[arg(long)]
        rotate: bool,
        /// With --rotate: the old key keeps working this long (e.g. 10m).
        #[arg(long, value_parser = parse_duration, requires = "rotate")]
        grace: Option<Duration>,
        /// The new key expires after this long (e.g. 90d).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<Duration>,
        /// Do not ask for confirmation of a rotation.
        #[arg(long)]
        yes: bool,
    },
    /// Revoke every active key of a user, or one key by fingerprint.
    Revoke {
        /// User name or key fingerprint.
        who: String,
    },
    /// List users and keys (never the keys themselves).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Register an existing Chime key for a user (`-` reads it from stdin),
    /// or merge every user and key of a key file (`--from-file`).
    Import {
        /// The user.
        #[arg(required_unless_present = "from_file")]
        user: Option<String>,
        /// The key GUID, or `-`.
        #[arg(required_unless_present = "from_file")]
        key: Option<String>,
        /// A key file (TOML, hashes) whose users and keys are merged in.
        #[arg(long, conflicts_with_all = ["user", "key"])]
        from_file: Option<PathBuf>,
    },
    /// Print every user and key (hashes only) as a key file.
    Export,
}

/// User commands.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user.
    Add {
        /// User name.
        name: String,
        /// admin or manager.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Queues a manager sees, comma-separated.
        #[arg(long, value_delimiter = ',')]
        queues: Vec<u32>,
        /// Rate-limit tier.
        #[arg(long, default_value = "default")]
        tier: String,
    },
    /// Change a user's role, queues or tier.
    Set {
        /// User name.
        name: String,
        /// admin or manager.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Queues, comma-separated (replaces the list).
        #[arg(long, value_delimiter = ',')]
        queues: Option<Vec<u32>>,
        /// Rate-limit tier.
        #[arg(long)]
        tier: Option<String>,
    },
}

fn resolve(config: &Path, store: Option<&str>) -> Result<(KeyEditor, Config), BoxError> {
    let cfg = match (Config::load(config, &ProcessEnv), store) {
        (Ok(cfg), _) => cfg,
        // With an explicit --store, a missing config file only means defaults.
        (Err(_), Some(_)) if !config.exists() => Config::defaults(),
        (Err(e), _) => return Err(e.into()),
    };
    let store = match store {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let schema = match &cfg.keys.source {
                KeySource::Postgres(pg) => pg.schema.clone(),
                _ => "chime_gateway".to_owned(),
            };
            KeyEditor::Postgres {
                url: url.to_owned(),
                schema,
            }
        }
        Some(path) => KeyEditor::file(PathBuf::from(path)),
        None => KeyEditor::for_source(&cfg.keys.source),
    };
    Ok((store, cfg))
}

/// Applies `op` to the store (see [`KeyEditor::edit`]).
fn edit<R>(
    store: &KeyEditor,
    op: impl FnOnce(&mut KeyFile) -> Result<R, BoxError>,
) -> Result<R, BoxError> {
    block_on(store.edit(op))
}

fn block_on<T>(fut: impl std::future::Future<Output = Result<T, BoxError>>) -> Result<T, BoxError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

/// Last use by fingerprint: as the gateways wrote it (PostgreSQL), or from
/// the running gateway's admin listener (file).
fn last_used(store: &KeyEditor, cfg: &Config) -> Result<HashMap<String, String>, String> {
    match block_on(store.recorded_last_use()) {
        Ok(Some(map)) => Ok(map),
        Ok(None) => fetch_last_used(cfg),
        Err(e) => Err(e.to_string()),
    }
}

/// `chime-gateway migrate`: applies the PostgreSQL schema.
pub(super) fn run_migrate(config: &Path, store: Option<&str>) -> Result<String, BoxError> {
    match resolve(config, store)?.0 {
        KeyEditor::Postgres { url, schema } => block_on(async {
            let applied = PgAdmin::connect(&url, &schema).await?.migrate().await?;
            Ok(if applied.is_empty() {
                format!("Schema {schema} is up to date.\n")
            } else {
                format!("Schema {schema}: applied migrations {applied:?}.\n")
            })
        }),
        KeyEditor::File { .. } | KeyEditor::Embedded(_) => Err("migrate applies to the PostgreSQL key store (keys.store = \"postgres\" or --store postgres://...)".into()),
    }
}

/// Merges a key file into `file`: users added or updated, unknown keys added.
fn merge(file: &mut KeyFile, from: KeyFile) -> Result<String, BoxError> {
    let (mut users, mut keys) = (0, 0);
    for u in from.users {
        if file.users.iter().any(|x| x.name == u.name) {
            file.set_user(&u.name, Some(u.role), Some(u.queues), Some(&u.tier))?;
        } else {
            file.add_user(&u.name, u.role, u.queues, &u.tier)?;
        }
        users += 1;
    }
    for k in from.keys {
        if !file
            .keys
            .iter()
            .any(|x| x.sha256.eq_ignore_ascii_case(&k.sha256))
        {
            file.keys.push(k);
            keys += 1;
        }
    }
    Ok(format!("Merged {users} users and {keys} new keys.\n"))
}

fn confirm_rotation(user: &str, grace: Duration) -> Result<(), BoxError> {
    let when = if grace.is_zero() {
        "immediately".to_owned()
    } else {
        format!("in {}", humantime::format_duration(grace))
    };
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "rotating stops {user}'s current key {when}; confirm with --yes when not at a terminal"
        )
        .into());
    }
    eprint!("Rotating stops {user}'s current key {when}. Type the user name to confirm: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() == user {
        Ok(())
    } else {
        Err("not confirmed; nothing changed".into())
    }
}

/// Runs a `keys` command; returns what to print.
pub(super) fn run_keys(
    config: &Path,
    store: Option<&str>,
    command: KeysCommand,
) -> Result<String, BoxError> {
    let (store, cfg) = resolve(config, store)?;
    // Whole seconds: the file is read by people.
    let now = Timestamp::from_second(Timestamp::now().as_second())?;
    match command {
        KeysCommand::Generate {
            user,
            rotate,
            grace,
            expires_in,
            yes,
        } => {
            let rotate = rotate.then(|| grace.unwrap_or(Duration::ZERO));
            if let Some(grace) = rotate {
                if !yes
                    && block_on(store.read())?
                        .active_keys(&user, now)
                        .next()
                        .is_some()
                {
                    confirm_rotation(&user, grace)?;
                }
            }
            let expires_at = expires_in
                .map(|d| jiff::SignedDuration::try_from(d).and_then(|d| now.checked_add(d)))
                .transpose()?;
            let generated = edit(&store, |file| {
                Ok(file.generate(&user, now, rotate, expires_at)?)
            })?;
            let mut out = format!(
                "New key for {user} (fingerprint {}). It is shown only this once:\n{}\n",
                generated.key.hash().fingerprint(),
                generated.key.expose()
            );
            for (fp, until) in generated.retired {
                out.push_str(&format!("Old key {fp} stops working at {until}.\n"));
            }
            Ok(out)
        }
        KeysCommand::Revoke { who } => {
            let revoked = edit(&store, |file| Ok(file.revoke(&who, now)?))?;
            let list: Vec<_> = revoked.iter().map(|f| f.as_str()).collect();
            Ok(format!("Revoked {}.\n", list.join(", ")))
        }
        KeysCommand::Import {
            from_file: Some(path),
            ..
        } => {
            let from = KeyFile::load(&path)?;
            edit(&store, |file| merge(file, from))
        }
        KeysCommand::Import { user, key, .. } => {
            let (Some(user), Some(key)) = (user, key) else {
                return Err("give USER and KEY, or --from-file PATH".into());
            };
            let raw = if key == "-" {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                line.trim().to_owned()
            } else {
                key
            };
            let key = ApiKey::parse(&raw)
                .ok_or("the key must be a GUID (e.g. b5c38d85-a042-4cef-8418-eb06752e346b)")?;
            let fp = edit(&store, |file| Ok(file.import(&user, &key, now)?))?;
            Ok(format!("Imported a key for {user} (fingerprint {fp}).\n"))
        }
        KeysCommand::Export => Ok(block_on(store.read())?.to_toml()?),
        KeysCommand::List { json } => {
            let file = block_on(store.read())?;
            let last_used = last_used(&store, &cfg);
            Ok(render_list(
                &file,
                now,
                last_used.as_ref().ok(),
                json,
                last_used.as_ref().err(),
            ))
        }
    }
}

/// Runs a `users` command.
pub(super) fn run_users(
    config: &Path,
    store: Option<&str>,
    command: UsersCommand,
) -> Result<String, BoxError> {
    let (store, _) = resolve(config, store)?;
    match command {
        UsersCommand::Add {
            name,
            role,
            queues,
            tier,
        } => {
            edit(
                &store,
                |file| Ok(file.add_user(&name, role, queues, &tier)?),
            )?;
            Ok(format!("Added user {name}.\n"))
        }
        UsersCommand::Set {
            name,
            role,
            queues,
            tier,
        } => {
            edit(&store, |file| {
                Ok(file.set_user(&name, role, queues, tier.as_deref())?)
            })?;
            Ok(format!("Updated user {name}.\n"))
        }
    }
}

/// Asks the running gateway's admin listener when keys were last used.
fn fetch_last_used(cfg: &Config) -> Result<HashMap<String, String>, String> {
    let admin = cfg.admin.address;
    let body = block_on(async move {
        Ok(crate::probe::get(admin, "/keys/last-used", Duration::from_secs(1)).await?)
    })
    .map_err(|e| e.to_string())?;
    let doc: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}"))?;
    let mut map = HashMap::new();
    for k in doc["keys"].as_array().into_iter().flatten() {
        if let (Some(fp), Some(at)) = (k["fingerprint"].as_str(), k["last_used"].as_str()) {
            map.insert(fp.to_owned(), at.to_owned());
        }
    }
    Ok(map)
}

fn render_list(
    file: &KeyFile,
    now: Timestamp,
    last_used: Option<&HashMap<String, String>>,
    json: bool,
    note: Option<&String>,
) -> String {
    let rows = key_rows(file, now, last_used);
    if json {
        return format!("{}\n", serde_json::Value::Array(rows));
    }
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) if !s.is_empty() => s.clone(),
        _ => "-".to_owned(),
    };
    let cols = [
        "user",
        "role",
        "queues",
        "tier",
        "fingerprint",
        "created",
        "expires",
        "status",
        "last_used",
    ];
    let mut table: Vec<Vec<String>> = vec![cols.iter().map(|c| c.to_uppercase()).collect()];
    for r in &rows {
        table.push(cols.iter().map(|c| cell(&r[*c])).collect());
    }
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if let Some(note) = note {
        out.push_str(&format!("(last used: unknown; {note})\n"));
    }
    out
}
