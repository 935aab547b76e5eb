//! The schema: SQL migrations applied in order at start, recorded in `receipt_schema_version`.

use postgres::Client;

use crate::store::{store_err, StoreError};

/// The migrations, in order: `MIGRATIONS[i]` brings the schema from version `i` to `i + 1`.
/// Append only: a migration that shipped is never edited.
const MIGRATIONS: &[&str] = &[include_str!("migrations/0001_init.sql")];

/// The schema version this server writes and the newest it reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Lock key of the migration (a transaction advisory lock): servers starting at once on one
/// database migrate one after the other.
const MIGRATION_LOCK: i64 = 0x7265_6365_6970_7401;

/// Creates the schema or brings it to [`SCHEMA_VERSION`], in one transaction. A database whose
/// schema is newer than this server knows is refused by name, untouched.
pub fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(store_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).map_err(store_err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS receipt_schema_version (version integer NOT NULL)").map_err(store_err)?;
    let stored: i32 = tx.query_one("SELECT coalesce(max(version), 0) FROM receipt_schema_version", &[]).map_err(store_err)?.get(0);
    if stored > SCHEMA_VERSION {
        return Err(StoreError(format!(
            "the PostgreSQL database was written by a newer server (schema version {stored}; this server knows versions up to {SCHEMA_VERSION}): run that server's version or newer, or restore a backup"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(stored as usize) {
        tx.batch_execute(sql).map_err(|e| StoreError(format!("schema migration {}: {e}", i + 1)))?;
    }
    if stored < SCHEMA_VERSION {
        tx.execute("DELETE FROM receipt_schema_version", &[]).map_err(store_err)?;
        tx.execute("INSERT INTO receipt_schema_version (version) VALUES ($1)", &[&SCHEMA_VERSION]).map_err(store_err)?;
        log::info!("PostgreSQL schema migrated from version {stored} to {SCHEMA_VERSION}");
    }
    tx.commit().map_err(store_err)
}
