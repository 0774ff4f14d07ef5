//! Sessions and sign-in links, apart from HTTP: a session is a random secret in the
//! browser's cookie and its SHA-256 in the store (any instance serves any request); a link
//! is a random token shown once and its SHA-256 in the store, spent in the same transaction
//! that opens the session. Every sign-in, sign-out and link is in the audit log.

use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::role::Role;
use super::store::{self, LinkRow, SessionRow};
use crate::audit::Who;
use crate::config::ConsoleConfig;
use crate::db::Db;
use crate::time::to_micros;

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Someone about to be signed in: who they are and what they may do.
#[derive(Debug, Clone)]
pub struct Person {
    /// Stable across their sign-ins: `sso:{connection}:{subject}` or
    /// `email:{partner or staff}:{email}`.
    pub key: String,
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    /// The partner of a partner role; `None` for staff.
    pub partner: Option<String>,
    pub via: String,
}

/// The signed-in person a request comes from.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub id_hash: String,
    pub person: String,
    pub name: String,
    pub email: Option<String>,
    pub role: Role,
    pub partner: Option<String>,
    pub csrf: String,
    pub via: String,
    pub last_seen_us: i64,
}

impl Viewer {
    /// This person, for the audit log, acting from `origin`.
    pub fn who(&self, origin: &str) -> Who {
        Who {
            id: format!("con:{}", self.person),
            role: self.role.as_str().to_owned(),
            partner: self.partner.clone(),
            origin: origin.to_owned(),
        }
    }

    /// Whether this person may see partner `p`'s data: staff any, a partner user its own.
    pub fn may_see(&self, p: &str) -> bool {
        if self.role.is_partner() {
            self.partner.as_deref() == Some(p)
        } else {
            true
        }
    }
}

/// Why a session cookie opened nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapsed {
    /// No such session (never was, or a cookie from elsewhere).
    Unknown,
    /// Signed out (here or everywhere).
    Ended,
    /// Unused for longer than the idle timeout, or past the absolute one.
    Expired,
}

/// The session whose secret is `secret`, if it is open at `now`; it is marked used.
pub async fn open(
    db: &Db,
    cfg: &ConsoleConfig,
    secret: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Result<Viewer, Lapsed>> {
    let now_us = to_micros(now);
    let Some(row) = store::session(db, &hash(secret)).await? else {
        return Ok(Err(Lapsed::Unknown));
    };
    if row.ended_at_us.is_some() {
        return Ok(Err(Lapsed::Ended));
    }
    let idle_us = cfg.idle_timeout_secs as i64 * 1_000_000;
    if now_us >= row.expires_at_us || now_us >= row.last_seen_at_us + idle_us {
        return Ok(Err(Lapsed::Expired));
    }
    let Some(role) = Role::parse(&row.role) else {
        return Ok(Err(Lapsed::Unknown));
    };
    // One write a minute at most per session: every page view need not be a write.
    if now_us - row.last_seen_at_us > 60_000_000 {
        store::touch_session(db, &row.id_hash, now_us).await?;
    }
    Ok(Ok(Viewer {
        id_hash: row.id_hash,
        person: row.person,
        name: row.display_name,
        email: row.email,
        role,
        partner: row.partner_id,
        csrf: row.csrf,
        via: row.via,
        last_seen_us: row.last_seen_at_us,
    }))
}

/// A new session for `p`, with its audit entry, in one transaction; the cookie's secret.
pub async fn start(
    db: &Db,
    cfg: &ConsoleConfig,
    p: &Person,
    origin: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let mut tx = db.begin().await?;
    let secret = start_in(&mut tx, cfg, p, origin, now).await?;
    tx.commit().await?;
    Ok(secret)
}

async fn start_in(
    tx: &mut crate::db::Tx,
    cfg: &ConsoleConfig,
    p: &Person,
    origin: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let secret = crate::random::token(32);
    let now_us = to_micros(now);
    let row = SessionRow {
        id_hash: hash(&secret),
        person: p.key.clone(),
        display_name: p.name.clone(),
        email: p.email.clone(),
        role: p.role.as_str().to_owned(),
        partner_id: p.partner.clone(),
        via: p.via.clone(),
        csrf: crate::random::token(32),
        created_at_us: now_us,
        last_seen_at_us: now_us,
        expires_at_us: now_us + cfg.absolute_timeout_secs as i64 * 1_000_000,
        ended_at_us: None,
    };
    store::insert_session(tx, &row).await?;
    let who = Who {
        id: format!("con:{}", p.key),
        role: p.role.as_str().to_owned(),
        partner: p.partner.clone(),
        origin: origin.to_owned(),
    };
    let detail = json!({ "via": p.via });
    let entry = who.entry("console.signin", p.partner.as_deref(), None, &detail);
    crate::audit::store::insert(tx, &entry, now_us).await?;
    Ok(secret)
}

/// Sign out this session, or every session of its person.
pub async fn end(
    db: &Db,
    v: &Viewer,
    everywhere: bool,
    origin: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let now_us = to_micros(now);
    let mut tx = db.begin().await?;
    let n = if everywhere {
        store::end_sessions_of(&mut tx, &v.person, now_us).await?
    } else {
        u64::from(store::end_session(&mut tx, &v.id_hash, now_us).await?)
    };
    let action = if everywhere {
        "console.signout.everywhere"
    } else {
        "console.signout"
    };
    let detail = json!({ "sessions": n });
    let who = v.who(origin);
    let entry = who.entry(action, v.partner.as_deref(), None, &detail);
    crate::audit::store::insert(&mut tx, &entry, now_us).await?;
    tx.commit().await?;
    Ok(n)
}

/// What kind of sign-in link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A partner user's first sign-in, sent by an admin (or the partner's admin).
    Invitation,
    /// An admin's sign-in before any SSO is set up, made on the server's command line.
    BreakGlass,
}

impl LinkKind {
    fn as_str(self) -> &'static str {
        match self {
            LinkKind::Invitation => "invitation",
            LinkKind::BreakGlass => "break-glass",
        }
    }
}

/// A new link: its id and the token (shown once; only its hash is kept).
#[derive(Debug, Clone)]
pub struct NewLink {
    pub id: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Make a link for `role` (at `partner`, for `email`), with its audit entry.
#[allow(clippy::too_many_arguments)]
pub async fn create_link(
    db: &Db,
    cfg: &ConsoleConfig,
    kind: LinkKind,
    role: Role,
    partner: Option<&str>,
    email: Option<&str>,
    who: &Who,
    now: DateTime<Utc>,
) -> anyhow::Result<NewLink> {
    let token = crate::random::token(32);
    let ttl_secs = match kind {
        LinkKind::Invitation => cfg.invitation_ttl_hours * 3600,
        LinkKind::BreakGlass => cfg.link_ttl_secs,
    };
    let now_us = to_micros(now);
    let expires_at = now + chrono::Duration::seconds(ttl_secs as i64);
    let prefix = match kind {
        LinkKind::Invitation => "inv",
        LinkKind::BreakGlass => "lnk",
    };
    let row = LinkRow {
        id: crate::ids::new(prefix),
        token_hash: hash(&token),
        kind: kind.as_str().to_owned(),
        role: role.as_str().to_owned(),
        partner_id: partner.map(str::to_owned),
        email: email.map(str::to_owned),
        created_by: who.id.clone(),
        created_at_us: now_us,
        expires_at_us: to_micros(expires_at),
        used_at_us: None,
        revoked_at_us: None,
    };
    let mut tx = db.begin().await?;
    store::insert_link(&mut tx, &row).await?;
    let action = match kind {
        LinkKind::Invitation => "console.invitation.create",
        LinkKind::BreakGlass => "console.link.create",
    };
    let detail = json!({ "role": row.role, "email": email, "expires_at": expires_at });
    let entry = who.entry(action, partner, Some(&row.id), &detail);
    crate::audit::store::insert(&mut tx, &entry, now_us).await?;
    tx.commit().await?;
    Ok(NewLink {
        id: row.id,
        token,
        expires_at,
    })
}

/// Why a link opened nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    Unknown,
    Used,
    Expired,
    Revoked,
}

/// What a link would sign in as, before it is spent (the confirmation page says so).
pub async fn peek_link(
    db: &Db,
    token: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Result<LinkRow, LinkProblem>> {
    let Some(row) = store::link(db, &hash(token)).await? else {
        return Ok(Err(LinkProblem::Unknown));
    };
    Ok(if row.revoked_at_us.is_some() {
        Err(LinkProblem::Revoked)
    } else if row.used_at_us.is_some() {
        Err(LinkProblem::Used)
    } else if row.expires_at_us <= to_micros(now) {
        Err(LinkProblem::Expired)
    } else {
        Ok(row)
    })
}

/// An id's prefix and first characters (`lnk_0193e4c1`), enough to find it in the log.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Spend the link and open its session, in one transaction; the cookie's secret.
pub async fn redeem(
    db: &Db,
    cfg: &ConsoleConfig,
    token: &str,
    origin: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Result<(String, Person), LinkProblem>> {
    let row = match peek_link(db, token, now).await? {
        Ok(row) => row,
        Err(p) => return Ok(Err(p)),
    };
    let Some(role) = Role::parse(&row.role) else {
        return Ok(Err(LinkProblem::Unknown));
    };
    let scope = row.partner_id.as_deref().unwrap_or("staff");
    let email = row.email.clone();
    let key = match &email {
        Some(e) => format!("email:{scope}:{}", e.to_lowercase()),
        // A break-glass link names nobody: each is its own person.
        None => format!("link:{}", row.id),
    };
    let person = Person {
        key,
        // Named by the link, so the header, adjustment lines and "finalized by" say how.
        name: email
            .clone()
            .unwrap_or_else(|| format!("Break-glass link {}", short_id(&row.id))),
        email,
        role,
        partner: row.partner_id.clone(),
        via: format!("{} {}", row.kind, row.id),
    };
    let mut tx = db.begin().await?;
    if !store::spend_link(&mut tx, &row.token_hash, to_micros(now)).await? {
        // Spent by another browser a moment ago.
        return Ok(Err(LinkProblem::Used));
    }
    let secret = start_in(&mut tx, cfg, &person, origin, now).await?;
    tx.commit().await?;
    Ok(Ok((secret, person)))
}
