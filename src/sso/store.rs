//! SQL for SSO: pending sign-in requests (single use, expiring), the SAML SP keys, SAML
//! assertion ids already used.

use super::saml::Published;
use crate::db::Db;
use crate::keys::crypto::MasterKey;
use crate::{with_db, with_tx};

/// An authorization request waiting for its callback.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub connection_id: String,
    pub partner_id: String,
    /// OIDC: the id_token's expected nonce and the PKCE verifier.
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub code_verifier: String,
    /// SAML: the AuthnRequest's ID, which the response's InResponseTo must name.
    #[serde(default)]
    pub request_id: Option<String>,
    /// A sign-in to the console (a session), not to the app (a launch and its code).
    #[serde(default)]
    pub console: bool,
}

pub use crate::launches::StateProblem;

/// Keep a pending sign-in, bound to the browser whose cookie secret hashes to
/// `binding_hash` (the answer must come back through that browser: no login CSRF).
pub async fn insert_state(
    db: &Db,
    master: &MasterKey,
    state_hash: &str,
    pending: &Pending,
    binding_hash: &str,
    now_us: i64,
    expires_at_us: i64,
) -> anyhow::Result<()> {
    let sealed = master.seal(state_hash, &serde_json::to_vec(pending)?)?;
    let mut tx = db.begin().await?;
    crate::launches::store::purge_states(&mut tx, "sso_states", now_us).await?;
    let sql = "INSERT INTO sso_states (state_hash, connection_id, partner_id, sealed, \
               created_at_us, expires_at_us, binding_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    with_tx!(&mut tx, c => {
        sqlx::query(sql)
            .bind(state_hash)
            .bind(&pending.connection_id)
            .bind(&pending.partner_id)
            .bind(&sealed)
            .bind(now_us)
            .bind(expires_at_us)
            .bind(binding_hash)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    tx.commit().await?;
    Ok(())
}

/// Spend a state: it works once, before it expires, and only for the browser whose
/// binding secret hashes to `binding_hash`, checked in the spending UPDATE itself: an
/// answer through another browser is refused and leaves the state to the right one.
pub async fn take_state(
    db: &Db,
    master: &MasterKey,
    state_hash: &str,
    binding_hash: Option<&str>,
    now_us: i64,
) -> anyhow::Result<Result<Pending, StateProblem>> {
    let spend = "UPDATE sso_states SET used_at_us = $2 \
                 WHERE state_hash = $1 AND used_at_us IS NULL AND expires_at_us > $2 \
                 AND binding_hash = $3 RETURNING sealed";
    let mut tx = db.begin().await?;
    let row: Option<Vec<u8>> = with_tx!(&mut tx, c => {
        sqlx::query_scalar(spend).bind(state_hash).bind(now_us).bind(binding_hash).fetch_optional(c).await
    })?;
    let outcome = match row {
        Some(sealed) => Ok(serde_json::from_slice(&master.open(state_hash, &sealed)?)?),
        None => {
            Err(
                crate::launches::store::state_problem(&mut tx, "sso_states", state_hash, now_us)
                    .await?,
            )
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The SP key pairs not retired, oldest first (`saml::signer` picks the one that signs),
/// each with what the metadata publishes it for; the private keys unsealed. Creates the
/// first one when there is none.
pub async fn sp_keys(
    db: &Db,
    master: &MasterKey,
    common_name: &str,
    now_us: i64,
) -> anyhow::Result<Vec<super::saml::SpKey>> {
    let sql = "SELECT kid, sealed_private_key, cert_der, published FROM sso_sp_keys \
               WHERE retire_at_us IS NULL OR retire_at_us > $1 ORDER BY created_at_us, kid";
    let load = || async {
        let rows: Vec<(String, Vec<u8>, Vec<u8>, String)> =
            with_db!(db, pool => sqlx::query_as(sql).bind(now_us).fetch_all(pool).await)?;
        rows.into_iter()
            .map(|(kid, sealed, cert, published)| {
                let published = Published::parse(&published).ok_or_else(|| {
                    anyhow::anyhow!("SAML SP key {kid}: unknown publication {published:?}")
                })?;
                let der = master.open(&kid, &sealed)?;
                super::saml::SpKey::from_der(kid, &der, cert, published)
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let keys = load().await?;
    if !keys.is_empty() {
        return Ok(keys);
    }
    let (der, cert) = super::saml::generate_sp_key(common_name)?;
    let kid = uuid::Uuid::new_v4().simple().to_string();
    let sealed = master.seal(&kid, &der)?;
    let insert = "INSERT INTO sso_sp_keys (kid, sealed_private_key, cert_der, created_at_us) \
                  VALUES ($1, $2, $3, $4)";
    // Instances signing someone in for the first time together: one creates the key.
    let mut tx = db.begin().await?;
    tx.lock_named("sso_sp_keys").await?;
    let count = "SELECT COUNT(*) FROM sso_sp_keys";
    let existing: i64 = with_tx!(&mut tx, c => sqlx::query_scalar(count).fetch_one(c).await)?;
    if existing == 0 {
        with_tx!(&mut tx, c => sqlx::query(insert).bind(&kid).bind(&sealed).bind(&cert).bind(now_us).execute(c).await.map(|r| r.rows_affected()))?;
        tracing::info!(kid = %kid, "SAML SP key and certificate created");
    }
    tx.commit().await?;
    load().await
}

/// How an SP key rollover proceeds (`keys rotate --saml-sp --stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollover {
    /// In one step: the new key is published for signing and encryption beside the old
    /// ones at once (and decrypts); the old ones keep signing AuthnRequests until they
    /// retire at `now + overlap`. The metadata carries two encryption certificates meanwhile.
    Both,
    /// First of two steps: the new key is published for signing only (it signs nothing
    /// yet); the current key stays the only encryption certificate and the signer.
    SigningOnly,
    /// Second step: the staged key becomes the only certificate published (signing and
    /// encryption) and signs; the keys it replaces are unpublished but decrypt until they
    /// retire at `now + overlap`, for IdPs still encrypting to them.
    Promote,
}

/// Why a rollover step cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloverProblem {
    /// A key is staged (published for signing only): promote it first.
    Staged(String),
    /// Nothing is staged to promote.
    NothingStaged,
    /// There is no current key to stage a successor to.
    NoCurrentKey,
}

impl std::fmt::Display for RolloverProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RolloverProblem::Staged(kid) => write!(
                f,
                "SAML SP key {kid} is staged (published for signing only); promote it first: keys rotate --saml-sp --stage promote"
            ),
            RolloverProblem::NothingStaged => write!(
                f,
                "no SAML SP key is staged; stage one first: keys rotate --saml-sp --stage signing-only"
            ),
            RolloverProblem::NoCurrentKey => write!(
                f,
                "there is no SAML SP key yet to roll over (one is created when SP metadata is first served); create it with keys rotate --saml-sp"
            ),
        }
    }
}

/// One step of an SP key rollover at `now_us` (see [`Rollover`]). Returns the id of the
/// key the step is about: the new key, or the one promoted.
pub async fn rotate_sp_key(
    db: &Db,
    master: &MasterKey,
    common_name: &str,
    now_us: i64,
    overlap_us: i64,
    step: Rollover,
) -> anyhow::Result<Result<String, RolloverProblem>> {
    let retire_at = now_us.saturating_add(overlap_us);
    let mut tx = db.begin().await?;
    // Two operators rolling over at once: one after the other.
    tx.lock_named("sso_sp_keys").await?;
    let live = "SELECT kid, published FROM sso_sp_keys \
                WHERE retire_at_us IS NULL ORDER BY created_at_us, kid";
    let keys: Vec<(String, String)> =
        with_tx!(&mut tx, c => sqlx::query_as(live).fetch_all(c).await)?;
    let staged = keys
        .iter()
        .find(|(_, p)| p == Published::Signing.as_str())
        .map(|(kid, _)| kid.clone());
    let current = keys.iter().any(|(_, p)| p == Published::Both.as_str());
    match (step, staged) {
        (Rollover::Promote, None) => return Ok(Err(RolloverProblem::NothingStaged)),
        (Rollover::Promote, Some(kid)) => {
            // Every other key still live, including any left retiring by an earlier
            // one-step rollover (they keep their own, earlier, retirement).
            let replaced = "UPDATE sso_sp_keys SET published = 'none', \
                            retire_at_us = COALESCE(retire_at_us, $1) \
                            WHERE kid <> $2 AND (retire_at_us IS NULL OR retire_at_us > $3)";
            with_tx!(&mut tx, c => sqlx::query(replaced).bind(retire_at).bind(&kid).bind(now_us).execute(c).await.map(|r| r.rows_affected()))?;
            let promote = "UPDATE sso_sp_keys SET published = 'both' WHERE kid = $1";
            with_tx!(&mut tx, c => sqlx::query(promote).bind(&kid).execute(c).await.map(|r| r.rows_affected()))?;
            tx.commit().await?;
            return Ok(Ok(kid));
        }
        (_, Some(kid)) => return Ok(Err(RolloverProblem::Staged(kid))),
        (Rollover::SigningOnly, None) if !current => {
            return Ok(Err(RolloverProblem::NoCurrentKey));
        }
        _ => {}
    }
    let (der, cert) = super::saml::generate_sp_key(common_name)?;
    let kid = uuid::Uuid::new_v4().simple().to_string();
    let sealed = master.seal(&kid, &der)?;
    let published = match step {
        Rollover::SigningOnly => Published::Signing,
        _ => {
            let retire = "UPDATE sso_sp_keys SET retire_at_us = $1 WHERE retire_at_us IS NULL";
            with_tx!(&mut tx, c => sqlx::query(retire).bind(retire_at).execute(c).await.map(|r| r.rows_affected()))?;
            Published::Both
        }
    };
    // Created after every key it replaces (even with a clock that went back), so it
    // sorts after them and signs only once they retire.
    let latest = "SELECT MAX(created_at_us) FROM sso_sp_keys";
    let max: Option<i64> = with_tx!(&mut tx, c => sqlx::query_scalar(latest).fetch_one(c).await)?;
    let created = max.map_or(now_us, |m| now_us.max(m + 1));
    let insert = "INSERT INTO sso_sp_keys (kid, sealed_private_key, cert_der, created_at_us, published) \
                  VALUES ($1, $2, $3, $4, $5)";
    with_tx!(&mut tx, c => sqlx::query(insert).bind(&kid).bind(&sealed).bind(&cert).bind(created).bind(published.as_str()).execute(c).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(Ok(kid))
}

/// Record a SAML assertion as used, in the sign-in's transaction. `false` when it was
/// used before (a replay).
pub async fn spend_assertion(
    tx: &mut crate::db::Tx,
    issuer: &str,
    assertion_id: &str,
    connection_id: &str,
    now_us: i64,
    expires_at_us: i64,
) -> anyhow::Result<bool> {
    // Kept an hour past their own expiry: a replay checked just before an assertion
    // expired, and recorded just after, still finds it (clocks of instances differ too).
    let purge = "DELETE FROM sso_saml_assertions WHERE expires_at_us < $1";
    with_tx!(tx, c => sqlx::query(purge).bind(now_us - 3_600_000_000).execute(c).await.map(|r| r.rows_affected()))?;
    let sql = "INSERT INTO sso_saml_assertions (issuer, assertion_id, connection_id, used_at_us, expires_at_us) \
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (issuer, assertion_id) DO NOTHING";
    let n = with_tx!(tx, c => {
        sqlx::query(sql)
            .bind(issuer)
            .bind(assertion_id)
            .bind(connection_id)
            .bind(now_us)
            .bind(expires_at_us)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(n == 1)
}

/// Connections created at runtime, optionally only the one with `id` or the one `domain`
/// routes to. Their definitions are unsealed and parsed as config would be.
pub async fn runtime_connections(
    db: &Db,
    master: &MasterKey,
    id: Option<&str>,
    domain: Option<&str>,
) -> anyhow::Result<Vec<super::Found>> {
    let sql = "SELECT c.id, c.partner_id, p.name, c.sealed_definition FROM sso_connections c \
               JOIN partners p ON p.id = c.partner_id \
               WHERE (CAST($1 AS TEXT) IS NULL OR c.id = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR c.id IN \
                    (SELECT connection_id FROM sso_connection_domains WHERE domain = $2)) \
               ORDER BY c.created_at_us, c.id";
    let rows: Vec<(String, String, String, Vec<u8>)> = with_db!(db, pool => {
        sqlx::query_as(sql).bind(id).bind(domain).fetch_all(pool).await
    })?;
    // A row that does not open (another master key) or no longer parses is logged and
    // left out, so one bad row does not take every sign-in down.
    Ok(rows
        .into_iter()
        .filter_map(|(id, partner_id, partner_name, sealed)| {
            let parsed = master
                .open(&format!("sso-connection:{id}"), &sealed)
                .and_then(|json| Ok(serde_json::from_slice(&json)?));
            match parsed {
                Ok(conn) => Some(super::Found {
                    partner_id,
                    partner_name,
                    conn: std::sync::Arc::new(conn),
                }),
                Err(e) => {
                    tracing::error!(connection = %id, error = %e, "a runtime SSO connection cannot be read; skipped");
                    None
                }
            }
        })
        .collect())
}

/// Why a runtime connection could not be saved.
#[derive(Debug)]
pub enum SaveProblem {
    IdTaken,
    DomainTaken(String),
}

/// Save a validated runtime connection (its definition as given, sealed) and its domains,
/// in one transaction.
pub async fn insert_connection(
    db: &Db,
    master: &MasterKey,
    conn: &super::connection::SsoConnection,
    partner_id: &str,
    definition: &[u8],
    now_us: i64,
    who: &crate::audit::Who,
) -> anyhow::Result<Result<(), SaveProblem>> {
    let sealed = master.seal(&format!("sso-connection:{}", conn.id), definition)?;
    let mut tx = db.begin().await?;
    let sql = "INSERT INTO sso_connections (id, partner_id, protocol, sealed_definition, created_at_us) \
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING";
    let n = with_tx!(&mut tx, c => {
        sqlx::query(sql)
            .bind(&conn.id)
            .bind(partner_id)
            .bind(conn.protocol.as_str())
            .bind(&sealed)
            .bind(now_us)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
    })?;
    if n == 0 {
        return Ok(Err(SaveProblem::IdTaken));
    }
    for d in &conn.domains {
        let sql = "INSERT INTO sso_connection_domains (domain, connection_id) VALUES ($1, $2) \
                   ON CONFLICT (domain) DO NOTHING";
        let n = with_tx!(&mut tx, c => sqlx::query(sql).bind(d).bind(&conn.id).execute(c).await.map(|r| r.rows_affected()))?;
        if n == 0 {
            // Dropping the transaction undoes the connection row too.
            return Ok(Err(SaveProblem::DomainTaken(d.clone())));
        }
    }
    let detail = serde_json::json!({
        "protocol": conn.protocol.as_str(),
        "domains": conn.domains,
        "console": conn.console.as_ref().map(|c| format!("{:?}", c.audience)),
    });
    let entry = who.entry(
        "sso.connection.create",
        Some(partner_id),
        Some(&conn.id),
        &detail,
    );
    crate::audit::store::insert(&mut tx, &entry, now_us).await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Delete a runtime connection and its domains; `false` when there was none.
pub async fn delete_connection(db: &Db, id: &str, who: &crate::audit::Who) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    let sql = "DELETE FROM sso_connection_domains WHERE connection_id = $1";
    with_tx!(&mut tx, c => sqlx::query(sql).bind(id).execute(c).await.map(|r| r.rows_affected()))?;
    let sql = "DELETE FROM sso_connections WHERE id = $1 RETURNING partner_id";
    let partner: Option<String> =
        with_tx!(&mut tx, c => sqlx::query_scalar(sql).bind(id).fetch_optional(c).await)?;
    let n = u64::from(partner.is_some());
    if let Some(p) = &partner {
        let detail = serde_json::json!({});
        let entry = who.entry("sso.connection.delete", Some(p), Some(id), &detail);
        crate::audit::store::insert(&mut tx, &entry, crate::time::now_micros()).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}
