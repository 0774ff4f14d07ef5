//! The one shape of every collection the API answers: `{"data": [...], "next_cursor": ...}`.
//!
//! A page holds at most `limit` items in a fixed order (each list documents it, and breaks
//! ties by id). `next_cursor` is null on the last page; otherwise the caller passes it back
//! as `cursor` (with the same filters) for the page after. A cursor is opaque to callers:
//! base64url of the list's name and the sort key of the last item given. Paging is by key,
//! not by offset, so items added or removed while a caller pages neither repeat nor shift
//! the others. A cursor is not a credential: it only says where to resume, and the filters
//! and the caller's own rights apply to every page as to the first.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ApiError;

/// The default and largest `limit` of every list (Stripe's are 10 and 100; ours lean to
/// finance exports and operators' scripts).
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// A page of a collection.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// Where a list request starts and how much it takes, checked.
#[derive(Debug, Clone)]
pub struct Paging {
    /// Which list the cursor must belong to.
    list: &'static str,
    pub limit: i64,
    after: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct CursorBody {
    /// The list it pages.
    l: String,
    /// The sort key of the last item of the page before.
    k: serde_json::Value,
}

impl Paging {
    /// `limit` defaults to [`DEFAULT_LIMIT`]; one outside 1..=[`MAX_LIMIT`], or a cursor
    /// that is not one of this list's, is a 400 naming the parameter.
    pub fn new(
        list: &'static str,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Paging, ApiError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and {MAX_LIMIT}; got {limit}"),
            ));
        }
        let after = match cursor {
            None => None,
            Some(c) => Some(decode(list, c)?),
        };
        Ok(Paging { list, limit, after })
    }

    /// The key of the last item already given, as the list wrote it; `None` on page one.
    pub fn after<K: DeserializeOwned>(&self) -> Result<Option<K>, ApiError> {
        self.after
            .clone()
            .map(|k| serde_json::from_value(k).map_err(|_| invalid_cursor(self.list)))
            .transpose()
    }

    /// How many rows a store should fetch: one more than the page, to know whether another
    /// page follows without a second query.
    pub fn fetch(&self) -> i64 {
        self.limit + 1
    }

    /// The page from rows fetched with [`Paging::fetch`] in list order; `key` gives an
    /// item's sort key, written into the cursor when more follow.
    pub fn page<T, K: Serialize>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> K) -> Page<T> {
        let more = rows.len() as i64 > self.limit;
        rows.truncate(self.limit as usize);
        let next_cursor = if more {
            rows.last().map(|last| encode(self.list, &key(last)))
        } else {
            None
        };
        Page {
            data: rows,
            next_cursor,
        }
    }

    /// Pages a whole collection held in memory (config-defined or small ones), in the
    /// order of `key`, which must be unique (end it with the id).
    pub fn page_sorted<T, K>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> K,
    ) -> Result<Page<T>, ApiError>
    where
        K: Serialize + DeserializeOwned + Ord,
    {
        let after: Option<K> = self.after()?;
        items.sort_by_key(|i| key(i));
        if let Some(a) = after {
            items.retain(|i| key(i) > a);
        }
        items.truncate(self.fetch() as usize);
        Ok(self.page(items, key))
    }
}

fn encode<K: Serialize>(list: &str, key: &K) -> String {
    let body = CursorBody {
        l: list.to_owned(),
        k: serde_json::to_value(key).unwrap_or(serde_json::Value::Null),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap_or_default())
}

fn decode(list: &'static str, cursor: &str) -> Result<serde_json::Value, ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| invalid_cursor(list))?;
    let body: CursorBody = serde_json::from_slice(&bytes).map_err(|_| invalid_cursor(list))?;
    if body.l != list {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            format!(
                "cursor belongs to another list ({}); pass the next_cursor this list answered",
                body.l
            ),
        ));
    }
    Ok(body.k)
}

fn invalid_cursor(list: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        format!("cursor is not one this list ({list}) gave; pass next_cursor as it was answered"),
    )
}

/// The OpenAPI schema of a page of `T`: each list's response type is `Page<T>` under a
/// name of its own, so the document shows one envelope everywhere.
#[macro_export]
macro_rules! page_schema {
    ($name:ident, $item:ty, $about:literal) => {
        #[doc = $about]
        #[derive(utoipa::ToSchema)]
        #[allow(dead_code)]
        pub struct $name {
            data: Vec<$item>,
            /// Pass as `cursor` for the next page; null on the last.
            next_cursor: Option<String>,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_one_another_without_repeats_or_gaps() {
        let items: Vec<i64> = (1..=25).collect();
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = Paging::new("numbers", Some(10), cursor.as_deref()).unwrap();
            let page = p.page_sorted(items.clone(), |i| *i).unwrap();
            seen.extend(page.data.iter().copied());
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, items);
    }

    #[test]
    fn an_exact_last_page_has_no_cursor() {
        let p = Paging::new("numbers", Some(5), None).unwrap();
        let page = p
            .page_sorted((1..=5).collect::<Vec<i64>>(), |i| *i)
            .unwrap();
        assert_eq!(page.data.len(), 5);
        assert!(page.next_cursor.is_none());
    }

    #[test]
    fn bad_limits_and_cursors_are_refused_by_name() {
        for limit in [0, -1, MAX_LIMIT + 1] {
            let e = Paging::new("numbers", Some(limit), None).unwrap_err();
            assert!(e.to_string().contains("limit"), "{e}");
        }
        for c in ["%%%", "bm90IGpzb24", ""] {
            let e = Paging::new("numbers", None, Some(c)).unwrap_err();
            assert!(e.to_string().contains("cursor"), "{c}: {e}");
        }
        let other = encode("letters", &"b");
        let e = Paging::new("numbers", None, Some(&other)).unwrap_err();
        assert!(e.to_string().contains("another list"), "{e}");
        // A cursor of this list whose key has the wrong type is refused when read.
        let p = Paging::new("numbers", None, Some(&encode("numbers", &"x"))).unwrap();
        assert!(p.after::<i64>().is_err());
    }
}
