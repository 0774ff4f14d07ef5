//! JSON Patch (RFC 6902) over `serde_json::Value`, with JSON Pointer paths (RFC 6901): what
//! FHIR's `PATCH` with `application/json-patch+json` applies.

use serde_json::Value;

/// Apply `patch` (an array of operations) to `doc`. All or nothing: on error `doc` is left
/// as it was.
pub(super) fn apply(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON Patch document is an array of operations")?;
    let mut work = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        apply_one(&mut work, op).map_err(|e| format!("operation {i}: {e}"))?;
    }
    *doc = work;
    Ok(())
}

fn apply_one(doc: &mut Value, op: &Value) -> Result<(), String> {
    let kind = op.get("op").and_then(Value::as_str).ok_or("no op")?;
    let path = parse_pointer(op.get("path").and_then(Value::as_str).ok_or("no path")?)?;
    let value = || op.get("value").cloned().ok_or("no value");
    let from = || -> Result<Vec<String>, String> {
        parse_pointer(op.get("from").and_then(Value::as_str).ok_or("no from")?)
    };
    match kind {
        "add" => add(doc, &path, value()?),
        "remove" => remove(doc, &path).map(drop),
        "replace" => {
            let target = get_mut(doc, &path)?;
            *target = value()?;
            Ok(())
        }
        "test" => {
            if get_mut(doc, &path)? == &value()? {
                Ok(())
            } else {
                Err("test failed".into())
            }
        }
        "move" => {
            let from = from()?;
            if path.len() > from.len() && path[..from.len()] == from[..] {
                return Err("cannot move a value into itself".into());
            }
            let moved = remove(doc, &from)?;
            add(doc, &path, moved)
        }
        "copy" => {
            let copied = get_mut(doc, &from()?)?.clone();
            add(doc, &path, copied)
        }
        other => Err(format!("unknown op {other}")),
    }
}

/// RFC 6901: `/a/b~1c` is `["a", "b/c"]`; the empty string is the whole document.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("{pointer} is not a JSON Pointer"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn index(array: &[Value], token: &str, allow_end: bool) -> Result<usize, String> {
    if allow_end && token == "-" {
        return Ok(array.len());
    }
    // Leading zeros are not array indexes (RFC 6901 §4).
    if token.len() > 1 && token.starts_with('0') {
        return Err(format!("bad array index {token}"));
    }
    let i: usize = token
        .parse()
        .map_err(|_| format!("bad array index {token}"))?;
    let limit = if allow_end {
        array.len()
    } else {
        array.len().saturating_sub(1)
    };
    if i > limit || (!allow_end && array.is_empty()) {
        return Err(format!("array index {i} out of range"));
    }
    Ok(i)
}

fn get_mut<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
    let mut current = doc;
    for token in path {
        current = match current {
            Value::Object(map) => map
                .get_mut(token)
                .ok_or_else(|| format!("no member {token}"))?,
            Value::Array(array) => {
                let i = index(array, token, false)?;
                &mut array[i]
            }
            _ => return Err(format!("cannot descend into a scalar at {token}")),
        };
    }
    Ok(current)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(array) => {
            let i = index(array, last, true)?;
            array.insert(i, value);
            Ok(())
        }
        _ => Err("the parent of the target is a scalar".into()),
    }
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let (last, parent) = path
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match get_mut(doc, parent)? {
        Value::Object(map) => map.remove(last).ok_or_else(|| format!("no member {last}")),
        Value::Array(array) => {
            let i = index(array, last, false)?;
            Ok(array.remove(i))
        }
        _ => Err("the parent of the target is a scalar".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn applies_the_rfc_6902_operations() {
        let mut doc = json!({ "status": "final", "a": { "b/c": 1 }, "list": [1, 2] });
        let patch = json!([
            { "op": "replace", "path": "/status", "value": "amended" },
            { "op": "add", "path": "/list/-", "value": 3 },
            { "op": "add", "path": "/list/0", "value": 0 },
            { "op": "remove", "path": "/list/1" },
            { "op": "copy", "from": "/a/b~1c", "path": "/copied" },
            { "op": "move", "from": "/copied", "path": "/moved" },
            { "op": "test", "path": "/moved", "value": 1 }
        ]);
        apply(&mut doc, &patch).unwrap();
        assert_eq!(
            doc,
            json!({ "status": "amended", "a": { "b/c": 1 }, "list": [0, 2, 3], "moved": 1 })
        );
    }

    #[test]
    fn a_failing_operation_leaves_the_document_unchanged() {
        let mut doc = json!({ "status": "final" });
        let patch = json!([
            { "op": "replace", "path": "/status", "value": "amended" },
            { "op": "test", "path": "/status", "value": "final" }
        ]);
        assert!(apply(&mut doc, &patch).is_err());
        assert_eq!(doc, json!({ "status": "final" }));
        assert!(apply(&mut doc, &json!([{ "op": "remove", "path": "/nope" }])).is_err());
        assert!(
            apply(
                &mut doc,
                &json!([{ "op": "add", "path": "/x/y", "value": 1 }])
            )
            .is_err()
        );
    }
}
