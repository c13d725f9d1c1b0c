//! Key lifecycle on PostgreSQL: the same operations as on a key file.
//!
//! An edit locks the schema's key data (an advisory lock, so concurrent
//! edits queue), loads it as a [`KeyFile`], applies the very same operation
//! the file backend uses ([`crate::keystore::file::edit`]), and writes back
//! only the rows that changed — whose triggers then tell every gateway.

use std::collections::HashMap;

use jiff::Timestamp;
use tokio_postgres::{Client, GenericClient};

use super::schema;
use crate::auth::{KeyHash, Role};
use crate::keystore::file::{KeyFile, KeyRecord, UserRecord};
use crate::BoxError;

/// A connection for key administration.
#[derive(Debug)]
pub struct PgAdmin {
    client: Client,
    schema: String,
}

async fn load<C: GenericClient>(client: &C, s: &str) -> Result<KeyFile, BoxError> {
    let mut queues: HashMap<String, Vec<u32>> = HashMap::new();
    for row in client
        .query(
            &format!("SELECT user_name, queue_id FROM {s}.user_queues ORDER BY queue_id"),
            &[],
        )
        .await?
    {
        let q: i32 = row.get(1);
        queues
            .entry(row.get(0))
            .or_default()
            .push(u32::try_from(q)?);
    }
    let mut file = KeyFile::default();
    for row in client
        .query(
            &format!("SELECT name, role, tier FROM {s}.users ORDER BY name"),
            &[],
        )
        .await?
    {
        let name: String = row.get(0);
        file.users.push(UserRecord {
            role: if row.get::<_, &str>(1) == "admin" {
                Role::Admin
            } else {
                Role::Manager
            },
            queues: queues.remove(&name).unwrap_or_default(),
            tier: row.get(2),
            name,
        });
    }
    for row in client
        .query(
            &format!(
                "SELECT user_name, sha256, created_at, expires_at, not_before, disabled
                 FROM {s}.keys ORDER BY created_at, sha256"
            ),
            &[],
        )
        .await?
    {
        let hash: Vec<u8> = row.get(1);
        file.keys.push(KeyRecord {
            user: row.get(0),
            sha256: hex::encode(hash),
            created_at: row.get(2),
            expires_at: row.get(3),
            not_before: row.get(4),
            disabled: row.get(5),
        });
    }
    Ok(file)
}

async fn save_changes<C: GenericClient>(
    client: &C,
    s: &str,
    before: &KeyFile,
    after: &KeyFile,
) -> Result<(), BoxError> {
    for user in &after.users {
        if before.users.iter().any(|u| u == user) {
            continue;
        }
        client
            .execute(
                &format!(
                    "INSERT INTO {s}.users (name, role, tier) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, tier = EXCLUDED.tier"
                ),
                &[&user.name, &user.role.as_str(), &user.tier],
            )
            .await?;
        client
            .execute(
                &format!("DELETE FROM {s}.user_queues WHERE user_name = $1"),
                &[&user.name],
            )
            .await?;
        for q in &user.queues {
            let q = i32::try_from(*q)?;
            client
                .execute(
                    &format!("INSERT INTO {s}.user_queues (user_name, queue_id) VALUES ($1, $2)"),
                    &[&user.name, &q],
                )
                .await?;
        }
    }
    for key in &after.keys {
        if before.keys.iter().any(|k| k == key) {
            continue;
        }
        let hash =
            KeyHash::from_hex(&key.sha256).ok_or("a stored hash is not 64 hex characters")?;
        client
            .execute(
                &format!(
                    "INSERT INTO {s}.keys (sha256, user_name, created_at, expires_at, not_before, disabled)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (sha256) DO UPDATE SET user_name = EXCLUDED.user_name,
                         expires_at = EXCLUDED.expires_at, not_before = EXCLUDED.not_before,
                         disabled = EXCLUDED.disabled"
                ),
                &[
                    &hash.as_bytes().as_slice(),
                    &key.user,
                    &key.created_at,
                    &key.expires_at,
                    &key.not_before,
                    &key.disabled,
                ],
            )
            .await?;
    }
    Ok(())
}

impl PgAdmin {
    /// Connects to `url` for the tables in `schema`.
    pub async fn connect(url: &str, schema: &str) -> Result<PgAdmin, BoxError> {
        if !schema::valid_schema(schema) {
            return Err(format!("`{schema}` is not a valid schema name").into());
        }
        Ok(PgAdmin {
            client: super::connect(url).await?,
            schema: schema.to_owned(),
        })
    }

    /// Applies pending migrations; returns the versions applied.
    pub async fn migrate(&mut self) -> Result<Vec<i32>, BoxError> {
        Ok(schema::migrate(&mut self.client, &self.schema).await?)
    }

    /// Everything, as a key file (hashes only).
    pub async fn load(&self) -> Result<KeyFile, BoxError> {
        load(&self.client, &self.schema).await
    }

    /// When each key was last used, by hash hex, as written by the gateways.
    pub async fn last_used(&self) -> Result<HashMap<String, Timestamp>, BoxError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT sha256, last_used FROM {}.keys WHERE last_used IS NOT NULL",
                    self.schema
                ),
                &[],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (hex::encode(r.get::<_, Vec<u8>>(0)), r.get(1)))
            .collect())
    }

    /// Applies `op` to the data under a lock and writes back what changed.
    pub async fn edit<R>(
        &mut self,
        op: impl FnOnce(&mut KeyFile) -> Result<R, BoxError>,
    ) -> Result<R, BoxError> {
        let s = self.schema.clone();
        let tx = self.client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("chime-gateway:{s}:keys")],
        )
        .await?;
        let before = load(&tx, &s).await?;
        let mut after = before.clone();
        let out = op(&mut after)?;
        save_changes(&tx, &s, &before, &after).await?;
        tx.commit().await?;
        Ok(out)
    }
}
