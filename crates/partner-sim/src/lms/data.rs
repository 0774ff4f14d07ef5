//! The LMS's courses: enrolments, line items and the gradebook. Plain data behind the one
//! `Shared::data` mutex; the HTTP handlers do the validation.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};

use super::{MockUser, RecordedScore};

/// A line item as stored: its number (the URL carries it) and its JSON fields without `id`.
#[derive(Debug, Clone)]
pub(crate) struct LineItem {
    pub num: u64,
    pub fields: Map<String, Value>,
    /// The client that created it through AGS; `None` for the LMS's own.
    pub owner: Option<String>,
}

impl LineItem {
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }
}

#[derive(Debug, Default)]
struct Course {
    members: Vec<MockUser>,
    items: Vec<LineItem>,
    /// Every score kept, in arrival order.
    gradebook: Vec<RecordedScore>,
    /// The latest kept score per (line item, user): what the results service shows.
    latest: BTreeMap<(u64, String), RecordedScore>,
    /// The timestamp of the result on record per (line item, user), for the vendors'
    /// out-of-order checks.
    stamps: HashMap<(u64, String), DateTime<FixedOffset>>,
}

#[derive(Debug, Default)]
pub(crate) struct Data {
    courses: BTreeMap<String, Course>,
    next_item: u64,
}

impl Data {
    fn course(&mut self, ctx: &str) -> &mut Course {
        self.courses.entry(ctx.to_owned()).or_default()
    }

    /// Whether the LMS knows the course (a launch, an enrolment or a line item made it).
    pub fn has_course(&self, ctx: &str) -> bool {
        self.courses.contains_key(ctx)
    }

    /// Enrol `user`, replacing an enrolment with the same `sub`.
    pub fn add_member(&mut self, ctx: &str, user: MockUser) {
        let course = self.course(ctx);
        match course.members.iter_mut().find(|m| m.sub == user.sub) {
            Some(existing) => *existing = user,
            None => course.members.push(user),
        }
    }

    /// Enrol `user` unless already enrolled (a launch does this).
    pub fn ensure_member(&mut self, ctx: &str, user: &MockUser) {
        let course = self.course(ctx);
        if !course.members.iter().any(|m| m.sub == user.sub) {
            course.members.push(user.clone());
        }
    }

    pub fn members(&self, ctx: &str) -> Vec<MockUser> {
        self.courses
            .get(ctx)
            .map(|c| c.members.clone())
            .unwrap_or_default()
    }

    pub fn member(&self, ctx: &str, sub: &str) -> Option<&MockUser> {
        self.courses.get(ctx)?.members.iter().find(|m| m.sub == sub)
    }

    pub fn create_item(
        &mut self,
        ctx: &str,
        fields: Map<String, Value>,
        owner: Option<String>,
    ) -> u64 {
        self.next_item += 1;
        let num = self.next_item;
        self.course(ctx).items.push(LineItem { num, fields, owner });
        num
    }

    pub fn items(&self, ctx: &str) -> &[LineItem] {
        self.courses.get(ctx).map_or(&[], |c| c.items.as_slice())
    }

    pub fn item(&self, ctx: &str, num: u64) -> Option<&LineItem> {
        self.items(ctx).iter().find(|i| i.num == num)
    }

    pub fn item_mut(&mut self, ctx: &str, num: u64) -> Option<&mut LineItem> {
        self.courses
            .get_mut(ctx)?
            .items
            .iter_mut()
            .find(|i| i.num == num)
    }

    /// Remove a line item and its results (the gradebook history stays, as a log).
    pub fn delete_item(&mut self, ctx: &str, num: u64) -> bool {
        let Some(course) = self.courses.get_mut(ctx) else {
            return false;
        };
        let before = course.items.len();
        course.items.retain(|i| i.num != num);
        course.latest.retain(|(n, _), _| *n != num);
        course.stamps.retain(|(n, _), _| *n != num);
        course.items.len() != before
    }

    /// The first line item bound to a resource link: the AGS claim's `lineitem`.
    pub fn item_for_link(&self, ctx: &str, link: &str) -> Option<u64> {
        self.items(ctx)
            .iter()
            .find(|i| i.str_field("resourceLinkId") == Some(link))
            .map(|i| i.num)
    }

    pub fn gradebook(&self, ctx: &str) -> Vec<RecordedScore> {
        self.courses
            .get(ctx)
            .map(|c| c.gradebook.clone())
            .unwrap_or_default()
    }

    /// The timestamp of the result on record.
    pub fn stamp(&self, ctx: &str, num: u64, user: &str) -> Option<DateTime<FixedOffset>> {
        self.courses
            .get(ctx)?
            .stamps
            .get(&(num, user.to_owned()))
            .copied()
    }

    /// Keep a score; `stamp` (when `Some`) becomes the timestamp on record.
    pub fn keep_score(
        &mut self,
        ctx: &str,
        num: u64,
        score: RecordedScore,
        stamp: Option<DateTime<FixedOffset>>,
    ) {
        let course = self.course(ctx);
        let key = (num, score.user_id.clone());
        if let Some(stamp) = stamp {
            course.stamps.insert(key.clone(), stamp);
        }
        course.latest.insert(key, score.clone());
        course.gradebook.push(score);
    }

    /// The latest kept score of each user for a line item, by user id.
    pub fn results(&self, ctx: &str, num: u64) -> Vec<RecordedScore> {
        self.courses
            .get(ctx)
            .map(|c| {
                c.latest
                    .iter()
                    .filter(|((n, _), _)| *n == num)
                    .map(|(_, s)| s.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}
