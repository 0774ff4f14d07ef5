//! LTI 1.1: the signed Basic LTI launch form (OAuth 1.0a, RFC 5849, HMAC-SHA1) and the
//! Basic Outcomes service (LTI 1.1 Implementation Guide §6; POX over HTTP signed with the
//! OAuth Request Body Hash extension).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};

use super::{
    MockUser, Shared, html_escape, html_unescape, lock, now_secs, parse_form, random_token,
};

pub(super) const OUTCOMES_PATH: &str = "/lti11/outcomes";
/// How far an `oauth_timestamp` may be from now (the LTI 1.1 guide's five minutes).
const MAX_SKEW_SECS: u64 = 300;
const POX_NS: &str = "http://www.imsglobal.org/services/ltiv1p1/xsd/imsoms_v1p0";

/// A `lis_result_sourcedid` the platform issued.
struct Issued {
    consumer_key: String,
}

#[derive(Default)]
pub(crate) struct State {
    issued: HashMap<String, Issued>,
    /// Grades by sourcedid, in the order first written.
    grades: Vec<(String, Option<f64>)>,
    /// `(consumer key, nonce)`s seen with their timestamps, to refuse replays.
    nonces: HashMap<(String, String), u64>,
}

impl State {
    pub fn grades(&self) -> Vec<(String, Option<f64>)> {
        self.grades.clone()
    }

    fn grade(&self, sourcedid: &str) -> Option<f64> {
        self.grades
            .iter()
            .find(|(id, _)| id == sourcedid)
            .and_then(|(_, g)| *g)
    }

    fn set_grade(&mut self, sourcedid: &str, grade: Option<f64>) {
        match self.grades.iter_mut().find(|(id, _)| id == sourcedid) {
            Some(entry) => entry.1 = grade,
            None => self.grades.push((sourcedid.to_owned(), grade)),
        }
    }
}

/// RFC 5849 §3.6: every byte but the unreserved characters as `%XX`, hex uppercase.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 5849 §3.4.1.2: scheme and host lowercase, the default port dropped, no query or
/// fragment.
fn base_string_uri(url: &url::Url) -> String {
    let scheme = url.scheme().to_ascii_lowercase();
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    let port = match (scheme.as_str(), url.port()) {
        (_, None) | ("http", Some(80)) | ("https", Some(443)) => String::new(),
        (_, Some(port)) => format!(":{port}"),
    };
    format!("{scheme}://{host}{port}{}", url.path())
}

/// RFC 5849 §3.4.1: `METHOD&uri&params`, the parameters (the request's query, form body
/// and `oauth_*` less `oauth_signature` and `realm`) encoded, sorted and joined.
pub fn signature_base_string(method: &str, url: &str, params: &[(String, String)]) -> String {
    let (uri, query) = match url::Url::parse(url) {
        Ok(parsed) => {
            let query: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            (base_string_uri(&parsed), query)
        }
        Err(_) => (url.to_owned(), Vec::new()),
    };
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .chain(query.iter())
        .filter(|(k, _)| k != "oauth_signature" && k != "realm")
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    pairs.sort();
    let normalized = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(&uri),
        percent_encode(&normalized)
    )
}

/// RFC 5849 §3.4.2: HMAC-SHA1 keyed with `secret&token_secret`, base64.
pub fn hmac_sha1_signature(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    let key = format!(
        "{}&{}",
        percent_encode(consumer_secret),
        percent_encode(token_secret)
    );
    match Hmac::<Sha1>::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(base_string.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; this arm is never reached.
        Err(_) => String::new(),
    }
}

/// The OAuth Request Body Hash: base64 of the body's SHA-1.
pub fn body_hash(body: &[u8]) -> String {
    STANDARD.encode(Sha1::digest(body))
}

fn secret_for(s: &Shared, consumer_key: &str) -> Option<String> {
    lock(&s.tools).iter().find_map(|t| match &t.tool.lti11 {
        Some((key, secret)) if key == consumer_key => Some(secret.clone()),
        _ => None,
    })
}

/// A LIS v2 role URI as LTI 1.1 names it: context roles by their short name (as Moodle
/// and Canvas send them), institution and system roles as URNs.
fn lti11_role(role: &str) -> String {
    const MEMBERSHIP: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership#";
    const MEMBERSHIP_SUB: &str = "http://purl.imsglobal.org/vocab/lis/v2/membership/";
    const INSTITUTION: &str = "http://purl.imsglobal.org/vocab/lis/v2/institution/person#";
    const SYSTEM: &str = "http://purl.imsglobal.org/vocab/lis/v2/system/person#";
    if let Some(short) = role.strip_prefix(MEMBERSHIP) {
        short.to_owned()
    } else if let Some(sub) = role.strip_prefix(MEMBERSHIP_SUB) {
        format!("urn:lti:role:ims/lis/{}", sub.replace('#', "/"))
    } else if let Some(short) = role.strip_prefix(INSTITUTION) {
        format!("urn:lti:instrole:ims/lis/{short}")
    } else if let Some(short) = role.strip_prefix(SYSTEM) {
        format!("urn:lti:sysrole:ims/lis/{short}")
    } else {
        role.to_owned()
    }
}

pub(super) fn launch(
    s: &Shared,
    tool_url: &str,
    consumer_key: &str,
    user: MockUser,
    ctx: &str,
    resource_link_id: &str,
) -> Vec<(String, String)> {
    lock(&s.data).ensure_member(ctx, &user);
    let sourcedid = format!(
        "{ctx}:{resource_link_id}:{}:{}",
        user.sub,
        &random_token()[..16]
    );
    lock(&s.lti11).issued.insert(
        sourcedid.clone(),
        Issued {
            consumer_key: consumer_key.to_owned(),
        },
    );
    let (given, family) = user.given_family();
    let roles = user
        .roles
        .iter()
        .map(|r| lti11_role(r))
        .collect::<Vec<_>>()
        .join(",");
    let mut params: Vec<(String, String)> = vec![
        ("lti_message_type".into(), "basic-lti-launch-request".into()),
        ("lti_version".into(), "LTI-1p0".into()),
        ("resource_link_id".into(), resource_link_id.into()),
        (
            "resource_link_title".into(),
            format!("Activity {resource_link_id}"),
        ),
        ("user_id".into(), user.lti11_user_id(s.personality)),
        ("roles".into(), roles),
        ("context_id".into(), ctx.into()),
        ("context_label".into(), format!("C-{ctx}")),
        ("context_title".into(), format!("Course {ctx}")),
        ("context_type".into(), "CourseSection".into()),
        ("lis_outcome_service_url".into(), s.url(OUTCOMES_PATH)),
        ("lis_result_sourcedid".into(), sourcedid),
        (
            "tool_consumer_info_product_family_code".into(),
            s.personality.product_family_code().into(),
        ),
        ("tool_consumer_info_version".into(), "1.0".into()),
        ("tool_consumer_instance_guid".into(), s.base.clone()),
        ("launch_presentation_locale".into(), "en-US".into()),
        (
            "launch_presentation_document_target".into(),
            "iframe".into(),
        ),
        (
            "launch_presentation_return_url".into(),
            format!("{}/lti/return/{}", s.base, super::path_segment(ctx)),
        ),
    ];
    if let Some(name) = &user.name {
        params.push(("lis_person_name_full".into(), name.clone()));
    }
    if let Some(given) = given {
        params.push(("lis_person_name_given".into(), given));
    }
    if let Some(family) = family {
        params.push(("lis_person_name_family".into(), family));
    }
    if let Some(email) = &user.email {
        params.push(("lis_person_contact_email_primary".into(), email.clone()));
    }
    params.extend([
        ("oauth_consumer_key".into(), consumer_key.to_owned()),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), now_secs().to_string()),
        ("oauth_nonce".into(), random_token()),
        ("oauth_version".into(), "1.0".into()),
        ("oauth_callback".into(), "about:blank".into()),
    ]);
    // An unknown key is signed with an empty secret: the tool must refuse it.
    let secret = secret_for(s, consumer_key).unwrap_or_default();
    let base = signature_base_string("POST", tool_url, &params);
    params.push((
        "oauth_signature".into(),
        hmac_sha1_signature(&base, &secret, ""),
    ));
    params
}

/// The parameters of an `Authorization: OAuth ...` header, percent-decoded.
fn oauth_header(headers: &HeaderMap) -> Option<Vec<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("oauth") {
        return None;
    }
    let mut params = Vec::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
        let decode = |t: &str| {
            url::form_urlencoded::parse(format!("x={}", t.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
        };
        params.push((decode(k.trim())?, decode(v)?));
    }
    Some(params)
}

/// Verify the OAuth 1.0a signature, body hash, timestamp and nonce of an outcomes request;
/// returns the consumer key.
fn verify_request(
    s: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, String> {
    let params = oauth_header(headers).ok_or("no OAuth Authorization header")?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let key = get("oauth_consumer_key").ok_or("oauth_consumer_key is missing")?;
    if get("oauth_signature_method") != Some("HMAC-SHA1") {
        return Err("oauth_signature_method must be HMAC-SHA1".into());
    }
    if get("oauth_version").is_some_and(|v| v != "1.0") {
        return Err("oauth_version must be 1.0".into());
    }
    let secret = secret_for(s, key).ok_or("unknown oauth_consumer_key")?;
    let timestamp: u64 = get("oauth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or("oauth_timestamp is missing or not a number")?;
    let now = now_secs();
    if timestamp.abs_diff(now) > MAX_SKEW_SECS {
        return Err("oauth_timestamp is more than five minutes from now".into());
    }
    let nonce = get("oauth_nonce")
        .filter(|n| !n.is_empty())
        .ok_or("oauth_nonce is missing")?;
    let presented_hash = get("oauth_body_hash").ok_or("oauth_body_hash is missing")?;
    if presented_hash != body_hash(body) {
        return Err("oauth_body_hash does not match the body".into());
    }
    let signature = get("oauth_signature").ok_or("oauth_signature is missing")?;
    let url = format!("{}{}", s.base, uri);
    let mut signed = params.clone();
    let form_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| super::essence(v) == "application/x-www-form-urlencoded");
    if form_body {
        signed.extend(parse_form(body));
    }
    let expected = hmac_sha1_signature(&signature_base_string("POST", &url, &signed), &secret, "");
    // Compare digests so the time taken does not depend on where the signatures differ.
    if Sha1::digest(expected.as_bytes()) != Sha1::digest(signature.as_bytes()) {
        return Err("oauth_signature does not verify".into());
    }
    let mut state = lock(&s.lti11);
    state
        .nonces
        .retain(|_, ts| ts.saturating_add(2 * MAX_SKEW_SECS) >= now);
    let nonce_key = (key.to_owned(), nonce.to_owned());
    if state.nonces.contains_key(&nonce_key) {
        return Err("oauth_nonce was already used".into());
    }
    state.nonces.insert(nonce_key, timestamp);
    Ok(key.to_owned())
}

/// One tag of an XML document: local name (prefix dropped), kind, and byte span.
struct Tag<'a> {
    name: &'a str,
    closing: bool,
    self_closing: bool,
    start: usize,
    end: usize,
}

/// The element tags of `xml`, skipping declarations, comments and CDATA. Enough for the
/// POX messages tools send; not a general XML parser.
fn tags(xml: &str) -> Vec<Tag<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(offset) = xml[i..].find('<') {
        let start = i + offset;
        let rest = &xml[start..];
        let skip_to = |end: &str| rest.find(end).map(|e| start + e + end.len());
        let next = if rest.starts_with("<!--") {
            skip_to("-->")
        } else if rest.starts_with("<![CDATA[") {
            skip_to("]]>")
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            skip_to(">")
        } else {
            rest.find('>').map(|e| {
                let inner = &rest[1..e];
                let closing = inner.starts_with('/');
                let self_closing = inner.ends_with('/');
                let raw = inner
                    .trim_start_matches('/')
                    .split(|c: char| c.is_whitespace() || c == '/')
                    .next()
                    .unwrap_or("");
                let name = raw.rsplit(':').next().unwrap_or(raw);
                out.push(Tag {
                    name,
                    closing,
                    self_closing,
                    start,
                    end: start + e + 1,
                });
                start + e + 1
            })
        };
        match next {
            Some(n) => i = n,
            None => break,
        }
    }
    out
}

/// The text of the first element named `name` (entities decoded, trimmed).
fn element_text(xml: &str, name: &str) -> Option<String> {
    let all = tags(xml);
    let open = all
        .iter()
        .position(|t| t.name == name && !t.closing && !t.self_closing)?;
    let content_start = all.get(open)?.end;
    let close = all[open + 1..]
        .iter()
        .find(|t| t.name == name && t.closing)?;
    Some(html_unescape(xml.get(content_start..close.start)?.trim()))
}

/// The operation element inside `imsx_POXBody`, e.g. `replaceResultRequest`.
fn operation(xml: &str) -> Option<String> {
    let all = tags(xml);
    let body = all
        .iter()
        .position(|t| t.name == "imsx_POXBody" && !t.closing)?;
    all.get(body + 1)
        .filter(|t| !t.closing)
        .map(|t| t.name.to_owned())
}

fn pox_response(
    status: StatusCode,
    code_major: &str,
    description: &str,
    message_ref: &str,
    operation: &str,
    body: &str,
) -> Response {
    let severity = if code_major == "success" {
        "status"
    } else {
        "error"
    };
    let op_ref = operation.strip_suffix("Request").unwrap_or(operation);
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <imsx_POXEnvelopeResponse xmlns=\"{POX_NS}\">\n\
         <imsx_POXHeader><imsx_POXResponseHeaderInfo>\
         <imsx_version>V1.0</imsx_version>\
         <imsx_messageIdentifier>{id}</imsx_messageIdentifier>\
         <imsx_statusInfo>\
         <imsx_codeMajor>{code_major}</imsx_codeMajor>\
         <imsx_severity>{severity}</imsx_severity>\
         <imsx_description>{description}</imsx_description>\
         <imsx_messageRefIdentifier>{message_ref}</imsx_messageRefIdentifier>\
         <imsx_operationRefIdentifier>{op_ref}</imsx_operationRefIdentifier>\
         </imsx_statusInfo>\
         </imsx_POXResponseHeaderInfo></imsx_POXHeader>\n\
         <imsx_POXBody>{body}</imsx_POXBody>\n\
         </imsx_POXEnvelopeResponse>\n",
        id = &random_token()[..16],
        description = html_escape(description),
        message_ref = html_escape(message_ref),
        op_ref = html_escape(op_ref),
    );
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}

pub(super) async fn outcomes(
    AxumState(s): AxumState<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let xml = String::from_utf8_lossy(&body).into_owned();
    let message_ref = element_text(&xml, "imsx_messageIdentifier").unwrap_or_default();
    let op = operation(&xml).unwrap_or_default();
    let consumer_key = match verify_request(&s, &uri, &headers, &body) {
        Ok(key) => key,
        Err(e) => {
            return pox_response(
                StatusCode::UNAUTHORIZED,
                "failure",
                &e,
                &message_ref,
                &op,
                "",
            );
        }
    };
    let fail = |description: &str| {
        pox_response(
            StatusCode::OK,
            "failure",
            description,
            &message_ref,
            &op,
            "",
        )
    };
    if !matches!(
        op.as_str(),
        "replaceResultRequest" | "readResultRequest" | "deleteResultRequest"
    ) {
        return pox_response(
            StatusCode::OK,
            "unsupported",
            &format!("{op} is not supported"),
            &message_ref,
            &op,
            "",
        );
    }
    let Some(sourcedid) = element_text(&xml, "sourcedId").filter(|id| !id.is_empty()) else {
        return fail("sourcedId is missing");
    };
    let owner = lock(&s.lti11)
        .issued
        .get(&sourcedid)
        .map(|i| i.consumer_key.clone());
    match owner {
        Some(key) if key == consumer_key => {}
        Some(_) => return fail("sourcedId belongs to another consumer key"),
        None => return fail("sourcedId is unknown"),
    }
    match op.as_str() {
        "replaceResultRequest" => {
            let text = element_text(&xml, "textString").unwrap_or_default();
            let score = match text.parse::<f64>() {
                Ok(score) if score.is_finite() && (0.0..=1.0).contains(&score) => score,
                _ => return fail(&format!("score {text:?} is not a number from 0.0 to 1.0")),
            };
            // Faults in the order queued: a held post, else a refusal.
            let hold = super::ags::take_hold(&s);
            if hold.is_none() && super::ags::take_not_gradable(&s) {
                return fail("The user is not gradable in this course");
            }
            if let Some((delay, false)) = hold {
                tokio::time::sleep(delay).await;
                return (StatusCode::GATEWAY_TIMEOUT, "injected fault: not kept").into_response();
            }
            lock(&s.lti11).set_grade(&sourcedid, Some(score));
            if let Some((delay, true)) = hold {
                tokio::time::sleep(delay).await;
            }
            pox_response(
                StatusCode::OK,
                "success",
                &format!("Score for {sourcedid} is now {score}"),
                &message_ref,
                &op,
                "<replaceResultResponse/>",
            )
        }
        "readResultRequest" => {
            let text = lock(&s.lti11)
                .grade(&sourcedid)
                .map(|g| g.to_string())
                .unwrap_or_default();
            pox_response(
                StatusCode::OK,
                "success",
                &format!("Result read for {sourcedid}"),
                &message_ref,
                &op,
                &format!(
                    "<readResultResponse><result><resultScore><language>en</language>\
                     <textString>{text}</textString></resultScore></result></readResultResponse>"
                ),
            )
        }
        _ => {
            lock(&s.lti11).set_grade(&sourcedid, None);
            pox_response(
                StatusCode::OK,
                "success",
                &format!("Result deleted for {sourcedid}"),
                &message_ref,
                &op,
                "<deleteResultResponse/>",
            )
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn percent_encoding_follows_rfc5849() {
        assert_eq!(percent_encode("a b+c/~_.-"), "a%20b%2Bc%2F~_.-");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    /// The worked example of RFC 5849 §3.4.1.1 (less the token, which LTI does not use).
    #[test]
    fn base_string_sorts_and_encodes() {
        let params = vec![
            (
                "oauth_consumer_key".to_owned(),
                "9djdj82h48djs9d2".to_owned(),
            ),
            ("oauth_signature_method".to_owned(), "HMAC-SHA1".to_owned()),
            ("oauth_timestamp".to_owned(), "137131201".to_owned()),
            ("oauth_nonce".to_owned(), "7d8f3e4a".to_owned()),
            ("c2".to_owned(), String::new()),
            ("a3".to_owned(), "2 q".to_owned()),
        ];
        let base = signature_base_string(
            "post",
            "HTTP://Example.com:80/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b",
            &params,
        );
        assert_eq!(
            base,
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201"
        );
    }

    /// The example of the OAuth 1.0 specification, Appendix A.5.
    #[test]
    fn hmac_sha1_matches_the_oauth_core_example() {
        let params: Vec<(String, String)> = [
            ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
            ("oauth_token", "nnch734d00sl2jdk"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1191242096"),
            ("oauth_nonce", "kllo9940pd9333jh"),
            ("oauth_version", "1.0"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let base = signature_base_string(
            "GET",
            "http://photos.example.net/photos?file=vacation.jpg&size=original",
            &params,
        );
        assert_eq!(
            base,
            "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg\
             %26oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3Dkllo9940pd9333jh\
             %26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1191242096\
             %26oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26size%3Doriginal"
        );
        assert_eq!(
            hmac_sha1_signature(&base, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00"),
            "tR3+Ty81lMeYAr/Fid0kMTYa/WM="
        );
    }

    /// The example of the OAuth Request Body Hash draft.
    #[test]
    fn body_hash_is_base64_sha1() {
        assert_eq!(body_hash(b"Hello World!"), "Lve95gjOVATpfV8EL5X4nxwjKHE=");
    }

    #[test]
    fn pox_elements_are_found_with_or_without_prefixes() {
        let xml = "<?xml version=\"1.0\"?><x:imsx_POXEnvelopeRequest xmlns:x=\"n\">\
                   <x:imsx_POXBody><x:replaceResultRequest><x:sourcedId> a&amp;b </x:sourcedId>\
                   </x:replaceResultRequest></x:imsx_POXBody></x:imsx_POXEnvelopeRequest>";
        assert_eq!(operation(xml).as_deref(), Some("replaceResultRequest"));
        assert_eq!(element_text(xml, "sourcedId").as_deref(), Some("a&b"));
    }

    #[test]
    fn roles_map_to_lti11_names() {
        assert_eq!(lti11_role(super::super::ROLE_LEARNER), "Learner");
        assert_eq!(
            lti11_role(
                "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
            ),
            "urn:lti:role:ims/lis/Instructor/TeachingAssistant"
        );
        assert_eq!(
            lti11_role(super::super::ROLE_INSTITUTION_ADMIN),
            "urn:lti:instrole:ims/lis/Administrator"
        );
    }
}
