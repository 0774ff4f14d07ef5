//! Names and Role Provisioning Services 2.0: the membership container of a course (§2.2),
//! paged with `Link: <...>; rel="next"` (§2.4.2) and filterable by `role` (§2.4.1).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ags::{accepts, page_of, problem, with_next_link};
use super::token::bearer;
use super::{
    MockUser, Personality, Shared, UrlCtx, claim, json_response, lock, media_type, parse_form,
};

pub(super) async fn memberships(
    State(s): State<Arc<Shared>>,
    Path(params): Path<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let token = match bearer(&s, &headers, &[claim::SCOPE_NRPS]) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let ctx = params.get("ctx").map(String::as_str).unwrap_or("");
    if ctx.is_empty() || !lock(&s.data).has_course(ctx) {
        return problem(&s, StatusCode::NOT_FOUND, "Context not found");
    }
    if !accepts(&headers, media_type::MEMBERSHIP_CONTAINER) {
        return problem(
            &s,
            StatusCode::NOT_ACCEPTABLE,
            &format!("Accept must admit {}", media_type::MEMBERSHIP_CONTAINER),
        );
    }
    let query = parse_form(uri.query().unwrap_or("").as_bytes());
    let get = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let limit = match get("limit") {
        None => s.page_size,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return problem(
                    &s,
                    StatusCode::BAD_REQUEST,
                    "limit must be a positive integer",
                );
            }
        },
    };
    let page = match get("page") {
        None => 1,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return problem(
                    &s,
                    StatusCode::BAD_REQUEST,
                    "page must be a positive integer",
                );
            }
        },
    };
    let role = get("role");

    let default = s.default_url_ctx();
    let at = UrlCtx {
        type_id: params
            .get("type")
            .and_then(|t| t.parse().ok())
            .or_else(|| s.tool(&token.client_id).map(|t| t.type_id))
            .unwrap_or(default.type_id),
        deployment: params.get("dep").cloned().unwrap_or(default.deployment),
    };
    let url = s.memberships_url(ctx, &at);
    let members: Vec<Value> = lock(&s.data)
        .members(ctx)
        .iter()
        .filter(|m| role.is_none_or(|r| has_role(m, r)))
        .map(|m| member_json(s.personality, m))
        .collect();
    let (page_members, next) = page_of(&members, Some(limit), page, &url, &query);
    let body = json!({
        "id": url,
        "context": {
            "id": ctx,
            "label": format!("C-{ctx}"),
            "title": format!("Course {ctx}"),
        },
        "members": page_members,
    });
    with_next_link(
        json_response(StatusCode::OK, media_type::MEMBERSHIP_CONTAINER, &body),
        next,
    )
}

/// NRPS §2.4.1: `role` is a full URI or a simple name of a context role.
fn has_role(user: &MockUser, role: &str) -> bool {
    user.roles
        .iter()
        .any(|r| r == role || r.rsplit_once('#').is_some_and(|(_, simple)| simple == role))
}

fn member_json(p: Personality, user: &MockUser) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), json!("Active"));
    m.insert("user_id".into(), json!(user.sub));
    m.insert("roles".into(), json!(user.roles));
    if let Some(name) = &user.name {
        m.insert("name".into(), json!(name));
        let (given, family) = user.given_family();
        if let Some(given) = given {
            m.insert("given_name".into(), json!(given));
        }
        if let Some(family) = family {
            m.insert("family_name".into(), json!(family));
        }
    }
    if let Some(email) = &user.email {
        m.insert("email".into(), json!(email));
    }
    match p {
        Personality::Canvas => {
            m.insert(
                "lti11_legacy_user_id".into(),
                json!(format!(
                    "{:x}",
                    <sha2::Sha256 as sha2::Digest>::digest(user.sub.as_bytes())
                )),
            );
        }
        Personality::Moodle | Personality::Blackboard => {
            m.insert("lis_person_sourcedid".into(), json!(user.sub));
        }
        Personality::D2l | Personality::Generic => {}
    }
    Value::Object(m)
}
