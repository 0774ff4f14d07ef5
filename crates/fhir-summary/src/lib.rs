//! A small summary of a FHIR Patient (name, birth date, gender, identifiers), read with
//! `fhir-sdk`'s typed R4B models (which read R4 Patients: the resource did not change), or
//! from raw JSON when typed parsing is not possible (a server's R4 quirks, a version the
//! models refuse). Both paths give the same shape.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientSummary {
    pub id: Option<String>,
    /// The display name: the `official` name (else `usual`, else the first), as text or
    /// given names then family.
    pub name: Option<String>,
    pub given: Vec<String>,
    pub family: Option<String>,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    pub identifiers: Vec<Identifier>,
    /// `typed` (fhir-sdk models) or `raw` (JSON fallback).
    pub parsed_with: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identifier {
    pub system: Option<String>,
    pub value: Option<String>,
    #[serde(rename = "type")]
    pub type_text: Option<String>,
    #[serde(rename = "use")]
    pub use_: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAPatient(pub String);

impl std::fmt::Display for NotAPatient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotAPatient {}

/// Summarize with the typed models.
pub fn typed(body: &[u8]) -> Result<PatientSummary, NotAPatient> {
    use fhir_sdk::r4b::resources::Patient;
    #[derive(serde::Deserialize)]
    struct Kind {
        #[serde(rename = "resourceType")]
        resource_type: Option<String>,
    }
    let kind: Kind =
        serde_json::from_slice(body).map_err(|e| NotAPatient(format!("not JSON: {e}")))?;
    if kind.resource_type.as_deref() != Some("Patient") {
        return Err(NotAPatient("the resource is not a Patient".into()));
    }
    let p: Patient = serde_json::from_slice(body)
        .map_err(|e| NotAPatient(format!("not an R4 Patient the typed models accept: {e}")))?;
    let names: Vec<NameParts> = p
        .name
        .iter()
        .flatten()
        .map(|n| {
            (
                n.r#use.as_ref().map(|u| code_text(&format!("{u:?}"))),
                n.text.clone(),
                n.given.iter().flatten().cloned().collect(),
                n.family.clone(),
            )
        })
        .collect();
    let (text, given, family) = pick_name(&names);
    let identifiers = p
        .identifier
        .iter()
        .flatten()
        .map(|i| Identifier {
            system: i.system.clone(),
            value: i.value.clone(),
            type_text: i.r#type.as_ref().and_then(|t| {
                t.text.clone().or_else(|| {
                    t.coding
                        .iter()
                        .flatten()
                        .find_map(|c| c.display.clone().or_else(|| c.code.clone()))
                })
            }),
            use_: i.r#use.as_ref().map(|u| code_text(&format!("{u:?}"))),
        })
        .collect();
    Ok(PatientSummary {
        id: p.id.clone(),
        name: text,
        given,
        family,
        birth_date: p
            .birth_date
            .as_ref()
            .and_then(|d| serde_json::to_value(d).ok())
            .and_then(|v| v.as_str().map(str::to_owned)),
        gender: p.gender.as_ref().map(|g| code_text(&format!("{g:?}"))),
        identifiers,
        parsed_with: "typed",
    })
}

/// Summarize from raw JSON.
pub fn raw(body: &[u8]) -> Result<PatientSummary, NotAPatient> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| NotAPatient(format!("not JSON: {e}")))?;
    if v.get("resourceType").and_then(Value::as_str) != Some("Patient") {
        return Err(NotAPatient("the resource is not a Patient".into()));
    }
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let names: Vec<_> = v
        .get("name")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|n| {
            (
                s(n, "use"),
                s(n, "text"),
                n.get("given")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect(),
                s(n, "family"),
            )
        })
        .collect();
    let (text, given, family) = pick_name(&names);
    let identifiers = v
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|i| Identifier {
            system: s(i, "system"),
            value: s(i, "value"),
            type_text: i.get("type").and_then(|t| {
                s(t, "text").or_else(|| {
                    t.get("coding")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find_map(|c| s(c, "display").or_else(|| s(c, "code")))
                })
            }),
            use_: s(i, "use"),
        })
        .collect();
    Ok(PatientSummary {
        id: s(&v, "id"),
        name: text,
        given,
        family,
        birth_date: s(&v, "birthDate"),
        gender: s(&v, "gender"),
        identifiers,
        parsed_with: "raw",
    })
}

/// `Official` -> `official`; fhir-sdk's code enums print their variant names.
fn code_text(debug: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

type NameParts = (Option<String>, Option<String>, Vec<String>, Option<String>);

fn pick_name(names: &[NameParts]) -> (Option<String>, Vec<String>, Option<String>) {
    let chosen = names
        .iter()
        .find(|n| n.0.as_deref() == Some("official"))
        .or_else(|| names.iter().find(|n| n.0.as_deref() == Some("usual")))
        .or_else(|| names.first());
    let Some((_, text, given, family)) = chosen else {
        return (None, Vec::new(), None);
    };
    let display = text.clone().or_else(|| {
        let mut parts: Vec<String> = given.clone();
        parts.extend(family.clone());
        (!parts.is_empty()).then(|| parts.join(" "))
    });
    (display, given.clone(), family.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PATIENT: &str = r#"{
      "resourceType": "Patient", "id": "erXuFYUfucBZaryVksYEcMg3",
      "identifier": [
        {"use": "usual", "type": {"text": "EPI"}, "system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0", "value": "E4007"},
        {"use": "usual", "type": {"coding": [{"code": "MR", "display": "Medical record number"}]}, "system": "urn:mrn", "value": "203713"}
      ],
      "name": [
        {"use": "usual", "text": "Cami Lopez", "family": "Lopez", "given": ["Cami"]},
        {"use": "official", "text": "Camila Maria Lopez", "family": "Lopez", "given": ["Camila", "Maria"]}
      ],
      "gender": "female", "birthDate": "1987-09-12"
    }"#;

    #[test]
    fn typed_and_raw_summaries_agree() {
        let t = typed(PATIENT.as_bytes()).unwrap();
        let r = raw(PATIENT.as_bytes()).unwrap();
        assert_eq!(t.name.as_deref(), Some("Camila Maria Lopez"));
        assert_eq!(t.birth_date.as_deref(), Some("1987-09-12"));
        assert_eq!(t.gender.as_deref(), Some("female"));
        assert_eq!(t.identifiers.len(), 2);
        assert_eq!(
            t.identifiers[1].type_text.as_deref(),
            Some("Medical record number")
        );
        assert_eq!(
            PatientSummary {
                parsed_with: "raw",
                ..t
            },
            r
        );
    }

    #[test]
    fn a_resource_that_is_not_a_patient_is_refused() {
        assert!(typed(br#"{"resourceType":"Observation","status":"final","code":{}}"#).is_err());
        assert!(raw(br#"{"resourceType":"Observation"}"#).is_err());
    }
}
