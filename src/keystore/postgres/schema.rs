//! The PostgreSQL schema, embedded and applied by `chime-gateway migrate`
//! (or at start-up with `keys.migrate_on_start`). Idempotent: each version
//! runs once, under an advisory lock so concurrent migrations queue.

use tokio_postgres::Client;

/// Migrations, in order; `{s}` is the schema name.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
CREATE TABLE {s}.users (
    name text PRIMARY KEY CHECK (name <> ''),
    role text NOT NULL CHECK (role IN ('admin', 'manager')),
    tier text NOT NULL DEFAULT 'default',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {s}.user_queues (
    user_name text NOT NULL REFERENCES {s}.users (name) ON DELETE CASCADE ON UPDATE CASCADE,
    queue_id integer NOT NULL CHECK (queue_id > 0),
    PRIMARY KEY (user_name, queue_id)
);
CREATE TABLE {s}.keys (
    sha256 bytea PRIMARY KEY CHECK (octet_length(sha256) = 32),
    user_name text NOT NULL REFERENCES {s}.users (name) ON DELETE CASCADE ON UPDATE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    not_before timestamptz,
    disabled boolean NOT NULL DEFAULT false,
    last_used timestamptz
);
CREATE INDEX keys_user_name ON {s}.keys (user_name);

-- Every change that can alter a verdict is announced, so each gateway drops
-- its cached verdicts at once, whoever made the change (CLI, admin API or
-- plain SQL). last_used is not in the list: it changes on every use.
CREATE FUNCTION {s}.announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' OR TG_TABLE_NAME <> 'keys' THEN
        PERFORM pg_notify('{s}_keys', 'all');
    ELSE
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            PERFORM pg_notify('{s}_keys', 'key:' || encode(OLD.sha256, 'hex'));
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
            PERFORM pg_notify('{s}_keys', 'key:' || encode(NEW.sha256, 'hex'));
        END IF;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER keys_changed
    AFTER INSERT OR DELETE OR UPDATE OF sha256, user_name, expires_at, not_before, disabled
    ON {s}.keys FOR EACH ROW EXECUTE FUNCTION {s}.announce_change();
CREATE TRIGGER users_changed
    AFTER INSERT OR DELETE OR UPDATE ON {s}.users FOR EACH ROW EXECUTE FUNCTION {s}.announce_change();
CREATE TRIGGER user_queues_changed
    AFTER INSERT OR DELETE OR UPDATE ON {s}.user_queues FOR EACH ROW EXECUTE FUNCTION {s}.announce_change();
CREATE TRIGGER keys_truncated AFTER TRUNCATE ON {s}.keys FOR EACH STATEMENT EXECUTE FUNCTION {s}.announce_change();
CREATE TRIGGER users_truncated AFTER TRUNCATE ON {s}.users FOR EACH STATEMENT EXECUTE FUNCTION {s}.announce_change();
CREATE TRIGGER user_queues_truncated AFTER TRUNCATE ON {s}.user_queues FOR EACH STATEMENT EXECUTE FUNCTION {s}.announce_change();
"#,
)];

/// Whether `name` is a safe schema identifier (it is interpolated into SQL).
pub fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && name.len() <= 48
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
}

/// The notification channel for `schema`.
pub fn channel(schema: &str) -> String {
    format!("{schema}_keys")
}

/// Applies the migrations not yet applied; returns the versions applied now.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("chime-gateway:{schema}")],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                &format!("SELECT 1 FROM {schema}.schema_migrations WHERE version = $1"),
                &[version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        tx.batch_execute(&sql.replace("{s}", schema)).await?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"),
            &[version],
        )
        .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_identifiers() {
        for ok in ["chime_gateway", "_x", "t1_abc"] {
            assert!(valid_schema(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "Chime",
            "a-b",
            "a;drop",
            "a b",
            "a\"b",
            &"x".repeat(49),
        ] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
