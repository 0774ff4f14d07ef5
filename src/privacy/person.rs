//! Everything held about one person at one partner: found by a platform user id or an
//! email, exported as JSON, or erased. Both are written to the audit log.
//!
//! A person's records are found from what the request names, widened by what they lead to:
//! the launches of the id (or whose context carries the email), every platform id those
//! launches name, the LTI person those ids belong to and that person's other identities
//! (a learner migrated from LTI 1.1 has two), and from all of them the scores posted for
//! the person, the webhook messages naming them, and their ledger events (by pseudonym).
//!
//! Erasing removes the personal fields: a launch keeps its row (id, partner, kind, times)
//! without its user, name and context, its sealed tokens and handoff codes are deleted,
//! scores and the jobs that sent them are deleted, LTI identities and person links are
//! deleted, webhook payloads (and the answers to them) are dropped, and the ledger rows are
//! relabelled with a random pseudonym: they still count as one subject, so meters and
//! issued statements are unchanged, and nothing leads from the person to them any more.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::store::{self, IdentityRow, LaunchRow, LedgerRow, MessageRow, ScoreRow};
use crate::db::Db;
use crate::metering::subject::Subjects;
use crate::time::{from_micros, rfc3339, to_micros};

/// Longest id or email a request may name.
pub const MAX_ID_LEN: usize = 1024;

/// Whom a request is about.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub partner: String,
    /// The person's id at the partner (an LTI `sub` or 1.1 `user_id`, a SMART `fhirUser`
    /// or `sub`, an SSO subject qualified by its connection: `acme-okta:00u1ada`).
    pub user_id: Option<String>,
    /// An email the partner sent for them (compared without case).
    pub email: Option<String>,
}

impl Lookup {
    /// What is wrong with the request, if anything.
    pub fn problem(&self) -> Option<String> {
        let blank = |v: &Option<String>| v.as_deref().is_none_or(|s| s.trim().is_empty());
        if blank(&self.user_id) && blank(&self.email) {
            return Some("name the person by user_id or email (or both)".into());
        }
        for (field, v) in [("user_id", &self.user_id), ("email", &self.email)] {
            if let Some(v) = v {
                if v.len() > MAX_ID_LEN {
                    return Some(format!("{field} is longer than {MAX_ID_LEN} bytes"));
                }
                if v.contains('\0') {
                    return Some(format!("{field} holds U+0000"));
                }
            }
        }
        if let Some(e) = &self.email
            && !e.contains('@')
        {
            return Some(format!("email {e:?} is not an email address"));
        }
        None
    }

    /// How the audit log names the person: a keyed hash of what was asked, never the
    /// value itself (an erased person's id must not outlive the erasure in the log), from
    /// which the operator holding the master key can show that a given request was made.
    pub fn audit_ref(&self, subjects: &Subjects) -> String {
        let asked = match (&self.user_id, &self.email) {
            (Some(u), Some(e)) => format!("audit user_id {u} email {}", e.to_lowercase()),
            (Some(u), None) => format!("audit user_id {u}"),
            (None, Some(e)) => format!("audit email {}", e.to_lowercase()),
            (None, None) => "audit".into(),
        };
        subjects.pseudonym(&self.partner, &asked)
    }
}

/// What was found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// Platform ids (LTI, SMART) of the person.
    pub user_ids: BTreeSet<String>,
    /// Sign-in subjects, qualified by their connection's namespace.
    pub sso_subjects: BTreeSet<String>,
    pub persons: BTreeSet<String>,
    pub pseudonyms: BTreeSet<String>,
    pub launches: Vec<LaunchRow>,
    pub identities: Vec<IdentityRow>,
    pub scores: Vec<ScoreRow>,
    pub messages: Vec<MessageRow>,
    pub ledger: Vec<LedgerRow>,
}

/// Find everything held about the person.
pub async fn find(db: &Db, subjects: &Subjects, q: &Lookup) -> anyhow::Result<Found> {
    let mut f = Found::default();
    if let Some(u) = q.user_id.as_deref().filter(|u| !u.is_empty()) {
        // An LTI or SMART id, or a sign-in's qualified subject (`connection:subject`).
        f.user_ids.insert(u.to_owned());
        f.sso_subjects.insert(u.to_owned());
    }
    let email = q.email.as_deref().filter(|e| !e.is_empty());
    // Two rounds: the launches an email finds name ids, whose LTI person may have more
    // identities, whose launches the email may not have found.
    let mut seen_launches = BTreeSet::new();
    for _ in 0..2 {
        let ids: Vec<String> = f.user_ids.iter().cloned().collect();
        let subs: Vec<String> = f.sso_subjects.iter().cloned().collect();
        for l in store::launches_of(db, &q.partner, &ids, &subs, email).await? {
            let ctx: Value = serde_json::from_str(&l.context).unwrap_or(Value::Null);
            match (l.kind.as_str(), ctx.get("subject").and_then(Value::as_str)) {
                // An IdP's bare subject is not the person's outside that IdP.
                ("sso", Some(s)) => {
                    f.sso_subjects.insert(s.to_owned());
                }
                ("sso", None) => {}
                _ => {
                    if let Some(u) = &l.user_id {
                        f.user_ids.insert(u.clone());
                    }
                }
            }
            if let Some(p) = ctx.pointer("/person/id").and_then(Value::as_str) {
                f.persons.insert(p.to_owned());
            }
            if seen_launches.insert(l.id.clone()) {
                f.launches.push(l);
            }
        }
        let ids: Vec<String> = f.user_ids.union(&f.persons).cloned().collect();
        f.identities = store::identities_of(db, &q.partner, &ids).await?;
        let before = f.user_ids.len();
        for (_, user, person) in &f.identities {
            f.user_ids.insert(user.clone());
            f.persons.insert(person.clone());
        }
        if f.user_ids.len() == before {
            break;
        }
    }
    // The ledger's subjects: the ids themselves (SMART, LTI scores), the LTI person, and
    // the sign-ins' qualified subjects.
    f.pseudonyms = f
        .user_ids
        .iter()
        .chain(&f.persons)
        .chain(&f.sso_subjects)
        .map(|s| subjects.pseudonym(&q.partner, s))
        .collect();
    let ids: Vec<String> = f.user_ids.iter().cloned().collect();
    let launch_ids: Vec<String> = f.launches.iter().map(|l| l.id.clone()).collect();
    f.scores = store::scores_of(db, &q.partner, &ids).await?;
    f.messages = store::messages_of(db, &q.partner, &ids, &launch_ids).await?;
    let pseudonyms: Vec<String> = f.pseudonyms.iter().cloned().collect();
    f.ledger = store::ledger_of(db, &q.partner, &pseudonyms).await?;
    Ok(f)
}

fn at(us: i64) -> String {
    rfc3339(from_micros(us))
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The export document: everything found, as JSON.
pub fn export_document(q: &Lookup, f: &Found, now: DateTime<Utc>) -> Value {
    json!({
        "partner": q.partner,
        "asked": { "user_id": q.user_id, "email": q.email },
        "generated_at": rfc3339(now),
        "identifiers": {
            "user_ids": f.user_ids,
            "sso_subjects": f.sso_subjects,
            "lti_persons": f.persons,
            "ledger_pseudonyms": f.pseudonyms,
        },
        "launches": f.launches.iter().map(|l| json!({
            "id": l.id, "kind": l.kind, "user_id": l.user_id, "user_name": l.user_name,
            "context": parsed(&l.context),
            "created_at": at(l.created_at_us), "expires_at": at(l.expires_at_us),
        })).collect::<Vec<_>>(),
        "lti_identities": f.identities.iter().map(|(ns, user, person)| json!({
            "namespace": ns, "user_id": user, "person_id": person,
        })).collect::<Vec<_>>(),
        "scores": f.scores.iter().map(|s| json!({
            "id": s.id, "launch_id": s.launch_id, "user_id": s.user_id,
            "score": parsed(&s.score), "status": s.status, "line_item": s.line_item,
            "last_error": s.last_error, "created_at": at(s.created_at_us),
            "delivered_at": s.delivered_at_us.map(at),
        })).collect::<Vec<_>>(),
        "webhook_messages": f.messages.iter().map(|m| json!({
            "id": m.id, "type": m.event_type, "created_at": at(m.created_at_us),
            "payload": parsed(&m.payload),
        })).collect::<Vec<_>>(),
        "ledger_events": f.ledger.iter().map(|e| json!({
            "source": e.source, "id": e.event_id, "type": e.event_type,
            "subject": e.subject, "time": at(e.time_us),
            "data": e.data.as_deref().map(parsed),
        })).collect::<Vec<_>>(),
    })
}

/// How many records of each kind an export found, or an erasure changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// Launches (SMART, LTI, SSO sign-ins): found, or stripped of user, name and context.
    pub launches: u64,
    pub scores: u64,
    /// LTI identities and person links.
    pub lti_identities: u64,
    /// Webhook messages naming the person: found, or their payloads dropped.
    pub webhook_messages: u64,
    /// Ledger events: found, or relabelled with a random pseudonym (still counted).
    pub ledger_events: u64,
}

impl Found {
    pub fn counts(&self) -> Counts {
        Counts {
            launches: self.launches.len() as u64,
            scores: self.scores.len() as u64,
            lti_identities: self.identities.len() as u64,
            webhook_messages: self.messages.len() as u64,
            ledger_events: self.ledger.len() as u64,
        }
    }
}

/// Who made the request, for the audit log.
pub type Actor = crate::audit::Who;

/// Record an export in the audit log; returns the entry's id.
pub async fn audit_export(
    db: &Db,
    subjects: &Subjects,
    actor: &Actor,
    q: &Lookup,
    f: &Found,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let detail = json!({ "found": f.counts() });
    let mut tx = db.begin().await?;
    let id = audit(&mut tx, subjects, actor, "privacy.export", q, &detail, now).await?;
    tx.commit().await?;
    Ok(id)
}

/// Write the audit entry of a request about `q`'s person.
async fn audit(
    tx: &mut crate::db::Tx,
    subjects: &Subjects,
    actor: &Actor,
    action: &str,
    q: &Lookup,
    detail: &Value,
    now: DateTime<Utc>,
) -> Result<String, sqlx::Error> {
    let subject_ref = q.audit_ref(subjects);
    let entry = actor.entry(action, Some(&q.partner), Some(&subject_ref), detail);
    crate::audit::store::insert(tx, &entry, to_micros(now)).await
}

/// Erase what was found, and record it in the audit log, in one transaction.
pub async fn erase(
    db: &Db,
    subjects: &Subjects,
    actor: &Actor,
    q: &Lookup,
    f: &Found,
    now: DateTime<Utc>,
) -> anyhow::Result<(Counts, String)> {
    let now_us = to_micros(now);
    let launch_ids: Vec<String> = f.launches.iter().map(|l| l.id.clone()).collect();
    let score_ids: Vec<String> = f.scores.iter().map(|s| s.id.clone()).collect();
    let message_ids: Vec<String> = f.messages.iter().map(|m| m.id.clone()).collect();
    let persons: Vec<String> = f.persons.iter().cloned().collect();
    let mut tx = db.begin().await?;
    let mut done = Counts {
        launches: store::scrub_launches(&mut tx, &launch_ids, now_us).await?,
        scores: store::delete_scores(&mut tx, &score_ids).await?,
        lti_identities: store::delete_people(&mut tx, &q.partner, &persons).await?,
        webhook_messages: store::scrub_messages(&mut tx, &message_ids, now_us).await?,
        ledger_events: 0,
    };
    store::delete_idempotency_for(&mut tx, &launch_ids).await?;
    let user_ids: Vec<String> = f.user_ids.iter().cloned().collect();
    store::delete_login_states(&mut tx, &user_ids).await?;
    for p in &f.pseudonyms {
        done.ledger_events +=
            crate::metering::store::relabel_subject(&mut tx, &q.partner, p, &Subjects::unlinked())
                .await?;
    }
    let detail = json!({
        "erased": done,
        "launch_ids": launch_ids,
        "score_ids": score_ids,
        "message_ids": message_ids,
    });
    let id = audit(&mut tx, subjects, actor, "privacy.erase", q, &detail, now).await?;
    tx.commit().await?;
    metrics::counter!("gateway_privacy_erasures_total").increment(1);
    Ok((done, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(user: Option<&str>, email: Option<&str>) -> Lookup {
        Lookup {
            partner: "p".into(),
            user_id: user.map(Into::into),
            email: email.map(Into::into),
        }
    }

    #[test]
    fn a_request_names_the_person_properly() {
        assert!(q(None, None).problem().is_some());
        assert!(q(Some(" "), None).problem().is_some());
        assert!(q(None, Some("not-an-email")).problem().is_some());
        assert!(q(Some("a\0b"), None).problem().is_some());
        assert!(
            q(Some(&"x".repeat(MAX_ID_LEN + 1)), None)
                .problem()
                .is_some()
        );
        assert!(q(Some("student-7"), None).problem().is_none());
        assert!(q(None, Some("ada@example.edu")).problem().is_none());
    }

    #[test]
    fn the_audit_names_a_person_by_a_keyed_hash_of_what_was_asked() {
        use base64::Engine;
        let master = crate::keys::crypto::MasterKey::from_base64(
            &base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
        )
        .unwrap();
        let s = Subjects::new(&master);
        let r = q(Some("student-7"), Some("Ada@Example.edu")).audit_ref(&s);
        assert!(!r.contains("student") && !r.contains("Ada"));
        assert_eq!(
            r,
            q(Some("student-7"), Some("ada@example.edu")).audit_ref(&s)
        );
        // Not the ledger's pseudonym of the same id.
        assert_ne!(
            q(Some("student-7"), None).audit_ref(&s),
            s.pseudonym("p", "student-7")
        );
    }
}
