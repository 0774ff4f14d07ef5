//! The mock's FHIR data: sample Patients and Practitioners like the vendors' sandbox ones,
//! seeded Observations, and the large Binary. Resources are kept serialized beside their
//! JSON so a read answers with a cheap clone of the bytes.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::body::Bytes;
use serde_json::{Value, json};

use super::{ORACLE_SANDBOX_TENANT, Vendor};

/// Size of `Binary/large`.
pub(super) const LARGE_BINARY_LEN: usize = 4 * 1024 * 1024;

/// `Binary/large`: byte `i` is `i % 251` (a prime, so the pattern does not line up with
/// chunk or page sizes and a misplaced chunk shows).
pub(super) fn large_binary() -> Bytes {
    static LARGE: OnceLock<Bytes> = OnceLock::new();
    LARGE
        .get_or_init(|| {
            (0..LARGE_BINARY_LEN)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>()
                .into()
        })
        .clone()
}

/// A stored resource: its JSON and the same serialized.
#[derive(Clone)]
pub(crate) struct Stored {
    pub resource: Value,
    pub bytes: Bytes,
    pub version: u64,
}

impl Stored {
    fn new(resource: Value, version: u64) -> Stored {
        let bytes = Bytes::from(serde_json::to_vec(&resource).unwrap_or_default());
        Stored {
            resource,
            bytes,
            version,
        }
    }
}

pub(crate) struct FhirData {
    vendor: Vendor,
    default_patient: String,
    default_practitioner: String,
    patients: RwLock<HashMap<String, Stored>>,
    practitioners: RwLock<HashMap<String, Stored>>,
    observations: RwLock<HashMap<String, Stored>>,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn by_id(resources: Vec<Value>) -> HashMap<String, Stored> {
    resources
        .into_iter()
        .filter_map(|r| {
            let id = r.get("id")?.as_str()?.to_owned();
            Some((id, Stored::new(r, 1)))
        })
        .collect()
}

impl FhirData {
    pub fn new(vendor: Vendor) -> FhirData {
        let (patients, practitioners) = match vendor {
            Vendor::Epic => (epic_patients(), epic_practitioners()),
            Vendor::Oracle => (oracle_patients(), oracle_practitioners()),
            Vendor::Generic => (generic_patients(), generic_practitioners()),
        };
        let default_patient = first_id(&patients);
        let default_practitioner = first_id(&practitioners);
        let observations = patients
            .iter()
            .filter_map(|p| p.get("id").and_then(Value::as_str))
            .enumerate()
            .flat_map(|(n, patient)| seed_observations(n, patient))
            .collect();
        FhirData {
            vendor,
            default_patient,
            default_practitioner,
            patients: RwLock::new(by_id(patients)),
            practitioners: RwLock::new(by_id(practitioners)),
            observations: RwLock::new(by_id(observations)),
        }
    }

    pub fn default_patient(&self) -> &str {
        &self.default_patient
    }

    pub fn default_practitioner(&self) -> &str {
        &self.default_practitioner
    }

    /// Make sure a Patient a launch names can be read: tests launch with ids of their own.
    pub fn ensure_patient(&self, id: &str) {
        if id.is_empty() || read(&self.patients).contains_key(id) {
            return;
        }
        let patient = json!({
            "resourceType": "Patient",
            "id": id,
            "identifier": [{
                "use": "usual",
                "type": { "text": "MRN" },
                "system": "urn:oid:2.16.840.1.113883.3.0.0.1",
                "value": format!("MOCK-{id}")
            }],
            "active": true,
            "name": [{ "use": "official", "text": format!("Test Patient {id}"), "family": "Patient", "given": ["Test"] }],
            "gender": "unknown",
            "birthDate": "1970-01-01"
        });
        write(&self.patients)
            .entry(id.to_owned())
            .or_insert_with(|| Stored::new(patient, 1));
    }

    /// Make sure a Practitioner a launch names can be read (it is the id_token's fhirUser).
    pub fn ensure_practitioner(&self, id: &str) {
        if id.is_empty() || read(&self.practitioners).contains_key(id) {
            return;
        }
        let practitioner = practitioner(id, "Test", "Practitioner", "MD");
        write(&self.practitioners)
            .entry(id.to_owned())
            .or_insert_with(|| Stored::new(practitioner, 1));
    }

    pub fn patient(&self, id: &str) -> Option<Bytes> {
        read(&self.patients).get(id).map(|s| s.bytes.clone())
    }

    pub fn patient_resource(&self, id: &str) -> Option<Value> {
        read(&self.patients).get(id).map(|s| s.resource.clone())
    }

    pub fn patients_with_identifier(&self, system: Option<&str>, value: &str) -> Vec<Value> {
        let mut found: Vec<Value> = read(&self.patients)
            .values()
            .filter(|s| {
                s.resource
                    .get("identifier")
                    .and_then(Value::as_array)
                    .is_some_and(|ids| {
                        ids.iter().any(|i| {
                            i.get("value").and_then(Value::as_str) == Some(value)
                                && system.is_none_or(|sys| {
                                    i.get("system").and_then(Value::as_str) == Some(sys)
                                })
                        })
                    })
            })
            .map(|s| s.resource.clone())
            .collect();
        found.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        found
    }

    pub fn practitioner(&self, id: &str) -> Option<Bytes> {
        read(&self.practitioners).get(id).map(|s| s.bytes.clone())
    }

    /// Given and family name of a practitioner, for id_token name claims.
    pub fn practitioner_name(&self, id: &str) -> Option<(String, String)> {
        let practitioners = read(&self.practitioners);
        let name = practitioners.get(id)?.resource.get("name")?.get(0)?;
        let family = name.get("family")?.as_str()?.to_owned();
        let given = name.get("given")?.get(0)?.as_str()?.to_owned();
        Some((given, family))
    }

    /// Oracle's `username` token member: the user's login name.
    pub fn username(&self, id: &str) -> String {
        match self.practitioner_name(id) {
            Some((_, family)) if self.vendor == Vendor::Oracle => family.to_lowercase(),
            _ => id.to_owned(),
        }
    }

    pub fn observation(&self, id: &str) -> Option<Stored> {
        read(&self.observations).get(id).cloned()
    }

    /// Observations of `patient`, optionally of one category (`code` or `system|code`).
    pub fn search_observations(&self, patient: &str, category: Option<&str>) -> Vec<Value> {
        let subject = format!("Patient/{patient}");
        let (system, code) = match category.map(|c| c.split_once('|')) {
            Some(Some((system, code))) => (Some(system), Some(code)),
            Some(None) => (None, category),
            None => (None, None),
        };
        let mut found: Vec<Value> = read(&self.observations)
            .values()
            .filter(|s| s.resource["subject"]["reference"].as_str() == Some(subject.as_str()))
            .filter(|s| {
                code.is_none_or(|code| {
                    s.resource["category"].as_array().is_some_and(|cats| {
                        cats.iter().any(|cat| {
                            cat["coding"].as_array().is_some_and(|codings| {
                                codings.iter().any(|c| {
                                    c["code"].as_str() == Some(code)
                                        && system.is_none_or(|sys| {
                                            sys.is_empty() || c["system"].as_str() == Some(sys)
                                        })
                                })
                            })
                        })
                    })
                })
            })
            .map(|s| s.resource.clone())
            .collect();
        found.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        found
    }

    /// Store an Observation under `id`; returns the stored copy and whether it is new.
    pub fn put_observation(&self, id: &str, mut resource: Value) -> (Stored, bool) {
        let mut observations = write(&self.observations);
        let version = observations.get(id).map_or(1, |s| s.version + 1);
        if let Value::Object(map) = &mut resource {
            map.insert("id".into(), id.into());
            map.insert(
                "meta".into(),
                json!({
                    "versionId": version.to_string(),
                    "lastUpdated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                }),
            );
        }
        let stored = Stored::new(resource, version);
        observations.insert(id.to_owned(), stored.clone());
        (stored, version == 1)
    }

    pub fn delete_observation(&self, id: &str) -> bool {
        write(&self.observations).remove(id).is_some()
    }
}

fn first_id(resources: &[Value]) -> String {
    resources
        .first()
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn practitioner(id: &str, given: &str, family: &str, suffix: &str) -> Value {
    json!({
        "resourceType": "Practitioner",
        "id": id,
        "identifier": [{
            "use": "usual",
            "type": { "text": "NPI" },
            "system": "http://hl7.org/fhir/sid/us-npi",
            "value": "1627363736"
        }],
        "active": true,
        "name": [{
            "use": "usual",
            "text": format!("{given} {family}, {suffix}"),
            "family": family,
            "given": [given],
            "suffix": [suffix]
        }]
    })
}

/// Epic's sandbox patients, with Epic's identifier habits: `type.text` only, OIDs as
/// systems, and an INTERNAL id padded with spaces.
fn epic_patients() -> Vec<Value> {
    let oid = |suffix: &str| format!("urn:oid:1.2.840.114350.1.13.0.1.7.{suffix}");
    vec![
        json!({
            "resourceType": "Patient",
            "id": "erXuFYUfucBZaryVksYEcMg3",
            "identifier": [
                { "use": "usual", "type": { "text": "CEID" }, "system": oid("3.688884.100"), "value": "FHRCMXB7K4BJNRB" },
                { "use": "usual", "type": { "text": "EPIC" }, "system": oid("5.737384.0"), "value": "E4007" },
                { "use": "usual", "type": { "text": "EXTERNAL" }, "system": oid("2.698084"), "value": "Z6129" },
                { "use": "usual", "type": { "text": "FHIR" }, "system": "http://open.epic.com/FHIR/StructureDefinition/patient-dstu2-fhir-id", "value": "TnOZ.elPXC6zcBNFMcFA7A5KZbYxo2.4T-LylRk4GoW4B" },
                { "use": "usual", "type": { "text": "FHIR STU3" }, "system": "http://open.epic.com/FHIR/StructureDefinition/patient-fhir-id", "value": "erXuFYUfucBZaryVksYEcMg3" },
                { "use": "usual", "type": { "text": "INTERNAL" }, "system": oid("2.698084"), "value": "     Z6129" },
                { "use": "usual", "type": { "text": "MRN" }, "system": oid("5.737384.14"), "value": "203713" }
            ],
            "active": true,
            "name": [
                { "use": "official", "text": "Camila Maria Lopez", "family": "Lopez", "given": ["Camila", "Maria"] },
                { "use": "nickname", "text": "Cami", "given": ["Cami"] }
            ],
            "telecom": [
                { "system": "phone", "value": "469-555-5555", "use": "home" },
                { "system": "email", "value": "camila.lopez@example.com", "rank": 1 }
            ],
            "gender": "female",
            "birthDate": "1987-09-12",
            "address": [{
                "use": "home", "line": ["3268 West Johnson St.", "Apt 117"], "city": "GARLAND",
                "district": "DALLAS", "state": "TX", "postalCode": "75043", "country": "US"
            }],
            "maritalStatus": { "text": "Married" },
            "communication": [{
                "language": { "coding": [{ "system": "urn:ietf:bcp:47", "code": "en", "display": "English" }], "text": "English" },
                "preferred": true
            }],
            "generalPractitioner": [{
                "reference": "Practitioner/eM5CWtq15N0WJeuCet5bJlQ3",
                "type": "Practitioner",
                "display": "Physician Family Medicine, MD"
            }]
        }),
        json!({
            "resourceType": "Patient",
            "id": "eq081-VQEgP8drUUqCWzHfw3",
            "identifier": [
                { "use": "usual", "type": { "text": "EPIC" }, "system": oid("5.737384.0"), "value": "E4005" },
                { "use": "usual", "type": { "text": "FHIR STU3" }, "system": "http://open.epic.com/FHIR/StructureDefinition/patient-fhir-id", "value": "eq081-VQEgP8drUUqCWzHfw3" },
                { "use": "usual", "type": { "text": "MRN" }, "system": oid("5.737384.14"), "value": "203711" }
            ],
            "active": true,
            "name": [
                { "use": "official", "text": "Derrick Lin", "family": "Lin", "given": ["Derrick"] },
                { "use": "nickname", "text": "Rick", "given": ["Rick"] }
            ],
            "gender": "male",
            "birthDate": "1973-06-03"
        }),
    ]
}

fn epic_practitioners() -> Vec<Value> {
    vec![practitioner(
        "eM5CWtq15N0WJeuCet5bJlQ3",
        "Physician",
        "Family Medicine",
        "MD",
    )]
}

/// Oracle's sandbox patients, with Oracle's identifier habits: coded types, an MRN whose
/// system is absent (data-absent-reason) and whose rendered value is zero-padded.
fn oracle_patients() -> Vec<Value> {
    let code_set = format!("https://fhir.cerner.com/{ORACLE_SANDBOX_TENANT}/codeSet/4");
    let patient = |id: &str, mrn: &str, given: &str, nickname: &str, gender: &str, born: &str| {
        json!({
            "resourceType": "Patient",
            "id": id,
            "identifier": [
                {
                    "use": "usual",
                    "type": {
                        "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical record number", "userSelected": false }],
                        "text": "MRN"
                    },
                    "_system": { "extension": [{ "valueCode": "unknown", "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason" }] },
                    "value": mrn,
                    "_value": { "extension": [{ "valueString": format!("{mrn:0>14}"), "url": "http://hl7.org/fhir/StructureDefinition/rendered-value" }] }
                },
                {
                    "use": "usual",
                    "type": {
                        "coding": [{ "system": code_set, "code": "2553236785", "display": "Federated Person Principal", "userSelected": true }],
                        "text": "Federated Person Principal"
                    },
                    "system": "urn:oid:2.16.840.1.113883.3.13.6",
                    "value": format!("URN:CERNER:IDENTITY-FEDERATION:REALM:{ORACLE_SANDBOX_TENANT}:PRINCIPAL:{id}")
                },
                {
                    "use": "usual",
                    "type": {
                        "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "AN", "display": "Account number", "userSelected": false }],
                        "text": "Community Medical Record Number"
                    },
                    "system": "urn:oid:2.16.840.1.113883.3.787.0.0",
                    "value": format!("CMRN{mrn}")
                }
            ],
            "active": true,
            "name": [
                {
                    "use": "official",
                    "text": format!("SMART, {}", given.to_uppercase()),
                    "family": "SMART",
                    "given": [given.to_uppercase()],
                    "period": { "start": "2015-01-06T20:31:41.000Z" }
                },
                { "use": "nickname", "text": nickname, "given": [nickname] }
            ],
            "gender": gender,
            "birthDate": born
        })
    };
    vec![
        patient(
            "12724066",
            "10002701",
            "Nancy",
            "Nan",
            "female",
            "1990-09-15",
        ),
        patient("12724065", "10002700", "Joe", "Joey", "male", "1976-04-01"),
    ]
}

fn oracle_practitioners() -> Vec<Value> {
    vec![practitioner("12742069", "Portal", "Portal", "MD")]
}

/// The SMART sample patients (US Core examples).
fn generic_patients() -> Vec<Value> {
    vec![
        json!({
            "resourceType": "Patient",
            "id": "87a339d0-8cae-418e-89c7-8651e6aab3c6",
            "identifier": [
                {
                    "use": "usual",
                    "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical Record Number" }], "text": "Medical Record Number" },
                    "system": "http://hospital.smarthealthit.org",
                    "value": "1032702"
                },
                {
                    "use": "official",
                    "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "DL", "display": "Driver's license number" }], "text": "Driver's license" },
                    "system": "urn:oid:2.16.840.1.113883.4.3.25",
                    "value": "S99985931"
                }
            ],
            "active": true,
            "name": [
                { "use": "official", "family": "Shaw", "given": ["Amy", "V."], "period": { "start": "2016-12-06", "end": "2020-07-22" } },
                { "use": "nickname", "given": ["Amy"] }
            ],
            "gender": "female",
            "birthDate": "1987-02-20"
        }),
        json!({
            "resourceType": "Patient",
            "id": "smart-1288992",
            "identifier": [{
                "use": "usual",
                "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR" }], "text": "Medical Record Number" },
                "system": "http://hospital.smarthealthit.org",
                "value": "1288992"
            }],
            "active": true,
            "name": [
                { "use": "official", "family": "Adams", "given": ["Daniel", "X."] },
                { "use": "nickname", "given": ["Dan"] }
            ],
            "gender": "male",
            "birthDate": "1925-12-23"
        }),
    ]
}

fn generic_practitioners() -> Vec<Value> {
    vec![practitioner(
        "smart-Practitioner-71482713",
        "Susan",
        "Clark",
        "MD",
    )]
}

/// Three Observations per patient: two vital signs and a lab result.
fn seed_observations(n: usize, patient: &str) -> Vec<Value> {
    let category = |code: &str, display: &str| {
        json!([{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": code,
                "display": display
            }],
            "text": display
        }])
    };
    let observation = |k: usize,
                       cat: Value,
                       loinc: &str,
                       text: &str,
                       value: f64,
                       unit: &str,
                       ucum: &str| {
        json!({
            "resourceType": "Observation",
            "id": format!("obs-{n}-{k}"),
            "meta": { "versionId": "1", "lastUpdated": "2026-01-15T09:30:00Z" },
            "status": "final",
            "category": cat,
            "code": { "coding": [{ "system": "http://loinc.org", "code": loinc, "display": text }], "text": text },
            "subject": { "reference": format!("Patient/{patient}") },
            "effectiveDateTime": "2026-01-15T09:30:00Z",
            "valueQuantity": { "value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": ucum }
        })
    };
    vec![
        observation(
            1,
            category("vital-signs", "Vital Signs"),
            "8867-4",
            "Heart rate",
            72.0,
            "beats/minute",
            "/min",
        ),
        observation(
            2,
            category("vital-signs", "Vital Signs"),
            "29463-7",
            "Body weight",
            61.2,
            "kg",
            "kg",
        ),
        observation(
            3,
            category("laboratory", "Laboratory"),
            "2339-0",
            "Glucose [Mass/volume] in Blood",
            95.0,
            "mg/dL",
            "mg/dL",
        ),
    ]
}
