//! One person across LTI versions. Each launch comes with a platform identity: a 1.3 `sub`
//! (unique under its issuer) or a 1.1 `user_id` (unique under its consumer key). During a
//! migration the same learner has one of each, and the LMS says so in the 1.3 launch's
//! verified `lti1p1` claim (`super::migration`). The gateway keeps which identities belong
//! to which person (`lti_identities`) and hands the app, and the ledger, the person:
//! `lti.launch` events carry the person id as their subject, so a learner launching through
//! both versions in one month is one active learner.
//!
//! A person is named by the platform id the ledger used before (the first identity's own
//! id), so without a migration claim nothing is metered differently: identities with equal
//! ids share a person, as the ledger always counted them (Moodle gives a user the same id in
//! both versions; Canvas gives 1.1 tools an opaque id of its own, which only the claim ties
//! to the 1.3 `sub`). The rules of [`decide`]:
//!
//! - A launch with a verified claim belongs to the person of the 1.1 identity it names; the
//!   1.3 identity joins that person (and is moved there if it had been seen alone before:
//!   launches already metered keep their subject).
//! - A claim naming a 1.1 identity never seen joins it to the 1.3 identity's person, or
//!   makes a person for both, named by the 1.1 id (what the learner's 1.1 launches were
//!   metered under).
//! - Without a claim, an identity is its own person, as before.
//!
//! Grades follow the person too: each launch notes itself as the person's newest launch of
//! its resource link (for a migrated link, the LTI 1.1 link id the claim names, so both
//! versions name the same link), and a score the app posts on an older launch of that link
//! goes through the newest one ([`score_launch`]): the 1.3 line item once the learner has
//! launched the migrated link through 1.3, `replaceResult` while they have only launched it
//! through 1.1. The same score posted again on the other version's launch is the score
//! already accepted, not a second delivery (`ags::accept_score`).

use crate::db::Tx;

/// A platform identity: the namespace its id is unique in, and the id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub namespace: String,
    pub user_id: String,
}

impl Identity {
    pub fn lti13(issuer: &str, sub: &str) -> Identity {
        Identity {
            namespace: format!("lti13 {issuer}"),
            user_id: sub.to_owned(),
        }
    }

    pub fn lti11(consumer_key: &str, user_id: &str) -> Identity {
        Identity {
            namespace: format!("lti11 {consumer_key}"),
            user_id: user_id.to_owned(),
        }
    }
}

/// What to do with the identities of a launch, given the persons they already have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The launch's person is known; link these identities to it (none, one or both).
    Known {
        person: String,
        link_launch: bool,
        link_legacy: bool,
    },
    /// The person named `person` (new, or already named so by an identity with an equal id);
    /// link the launch's identity (and the legacy one, when there is one).
    New { person: String },
}

/// `launch`: the person of the launch's own identity, if stored. `legacy`: for a launch
/// with a verified claim, the 1.1 identity's id and its stored person.
pub fn decide(
    launch_id: &str,
    launch: Option<&str>,
    legacy: Option<(&str, Option<&str>)>,
) -> Decision {
    match (launch, legacy) {
        (launch, Some((_, Some(l)))) => Decision::Known {
            person: l.to_owned(),
            link_launch: launch != Some(l),
            link_legacy: false,
        },
        (Some(p), Some((_, None))) => Decision::Known {
            person: p.to_owned(),
            link_launch: false,
            link_legacy: true,
        },
        (None, Some((legacy_id, None))) => Decision::New {
            person: legacy_id.to_owned(),
        },
        (Some(p), None) => Decision::Known {
            person: p.to_owned(),
            link_launch: false,
            link_legacy: false,
        },
        (None, None) => Decision::New {
            person: launch_id.to_owned(),
        },
    }
}

/// The person of a launch's identity (`launch`) and, with a verified migration claim, of the
/// 1.1 identity it names (`legacy`), recorded in the launch's transaction. Serialised per
/// partner (an advisory lock on PostgreSQL; SQLite has one writer), so two instances
/// linking the same learner at once agree.
pub async fn resolve(
    tx: &mut Tx,
    partner: &str,
    launch: &Identity,
    legacy: Option<&Identity>,
    now_us: i64,
) -> Result<String, sqlx::Error> {
    use super::store::{identity_person, link_identity};
    tx.lock_named(&format!("lti-people:{partner}")).await?;
    let own = identity_person(tx, partner, &launch.namespace, &launch.user_id).await?;
    let old = match legacy {
        Some(l) => Some((
            l.user_id.as_str(),
            identity_person(tx, partner, &l.namespace, &l.user_id).await?,
        )),
        None => None,
    };
    let decision = decide(
        &launch.user_id,
        own.as_deref(),
        old.as_ref().map(|(id, p)| (*id, p.as_deref())),
    );
    let (person, link_launch, link_legacy) = match decision {
        Decision::Known {
            person,
            link_launch,
            link_legacy,
        } => (person, link_launch, link_legacy),
        Decision::New { person } => (person, true, legacy.is_some()),
    };
    if link_launch {
        if own.is_some() {
            tracing::info!(
                partner_id = partner,
                "an LTI 1.3 identity joined its LTI 1.1 person (migration claim)"
            );
        }
        link_identity(
            tx,
            partner,
            &launch.namespace,
            &launch.user_id,
            &person,
            now_us,
        )
        .await?;
    }
    if let (true, Some(l)) = (link_legacy, legacy) {
        link_identity(tx, partner, &l.namespace, &l.user_id, &person, now_us).await?;
    }
    Ok(person)
}

/// Resolve the launch's person in its transaction (before the launch is inserted): the
/// `lti.launch` event is metered under the person, and the app sees the person with every
/// platform id it has (`context.person`).
pub async fn attach(
    tx: &mut Tx,
    launch: &mut crate::launches::Launch,
    event: &mut crate::metering::UsageEvent,
    own: &Identity,
    legacy: Option<&Identity>,
    link: Option<&str>,
    now_us: i64,
) -> Result<(), sqlx::Error> {
    let partner = launch.partner_id.clone();
    let person = resolve(tx, &partner, own, legacy, now_us).await?;
    if let Some(link) = link {
        super::store::note_person_link(tx, &partner, &person, link, &launch.id, now_us).await?;
    }
    let ids = super::store::person_identities(tx, &partner, &person).await?;
    let identities: Vec<serde_json::Value> = ids
        .iter()
        .map(|(ns, user)| {
            let (version, within) = ns.split_once(' ').unwrap_or((ns.as_str(), ""));
            match version {
                "lti11" => serde_json::json!({"lti_version": "1.1", "consumer_key": within, "user_id": user}),
                _ => serde_json::json!({"lti_version": "1.3", "iss": within, "sub": user}),
            }
        })
        .collect();
    launch.context.insert(
        "person".into(),
        serde_json::json!({"id": person, "identities": identities, "link": link}),
    );
    event.subject = Some(person);
    Ok(())
}

/// The launch a score posted on `launch` goes through: the person's newest launch of the same
/// resource link, when that is another launch (the learner launched the migrated link again
/// through the other LTI version) that is live and takes scores. `None`: the launch itself.
/// Only the launch's own learner's scores are routed (not a score an instructor's launch
/// posts for someone else), and not one naming its line item.
pub async fn score_launch(
    db: &crate::db::Db,
    launch: &crate::launches::Launch,
    user_id: &str,
    line_item: Option<&str>,
) -> anyhow::Result<Option<crate::launches::Launch>> {
    use serde_json::Value;
    if line_item.is_some() || launch.user_id.as_deref() != Some(user_id) {
        return Ok(None);
    }
    let (Some(person), Some(link)) = (
        launch.ctx("/person/id").and_then(Value::as_str),
        launch.ctx("/person/link").and_then(Value::as_str),
    ) else {
        return Ok(None);
    };
    let Some(newest) =
        super::store::newest_person_link(db, &launch.partner_id, person, link).await?
    else {
        return Ok(None);
    };
    if newest == launch.id {
        return Ok(None);
    }
    let Some(other) = crate::launches::find_launch(db, &newest).await? else {
        return Ok(None);
    };
    let usable = other.kind == crate::launches::LaunchKind::Lti
        && other.partner_id == launch.partner_id
        && other.is_live(chrono::Utc::now())
        && other.context.get("grade_passback") == Some(&Value::Bool(true));
    Ok(usable.then_some(other))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(person: &str, link_launch: bool, link_legacy: bool) -> Decision {
        Decision::Known {
            person: person.into(),
            link_launch,
            link_legacy,
        }
    }

    #[test]
    fn without_a_claim_an_identity_is_its_own_person() {
        assert_eq!(
            decide("sub-1", None, None),
            Decision::New {
                person: "sub-1".into()
            }
        );
        assert_eq!(decide("sub-1", Some("p"), None), known("p", false, false));
    }

    #[test]
    fn a_claim_joins_the_lti11_person() {
        // The learner launched through 1.1 before: the 1.3 identity joins that person.
        assert_eq!(
            decide("sub-1", None, Some(("u-11", Some("u-11")))),
            known("u-11", true, false)
        );
        // Already joined: nothing to write.
        assert_eq!(
            decide("sub-1", Some("u-11"), Some(("u-11", Some("u-11")))),
            known("u-11", false, false)
        );
        // Seen alone through 1.3 first, then claimed: moved to the 1.1 person.
        assert_eq!(
            decide("sub-1", Some("sub-1"), Some(("u-11", Some("u-11")))),
            known("u-11", true, false)
        );
    }

    #[test]
    fn a_claim_naming_an_unseen_lti11_user_makes_one_person_for_both() {
        assert_eq!(
            decide("sub-1", None, Some(("u-11", None))),
            Decision::New {
                person: "u-11".into()
            }
        );
        assert_eq!(
            decide("sub-1", Some("sub-1"), Some(("u-11", None))),
            known("sub-1", false, true)
        );
    }
}
