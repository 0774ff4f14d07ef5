//! How long one patient summary takes with the typed models, against the raw JSON reading of
//! the same Patient in the same run (the baseline): `cargo bench -p fhir-summary`. Used to
//! choose the crate's opt-level (Cargo.toml, `[profile.release.package.fhir-summary]`).

use std::time::Instant;

fn patient() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "resourceType": "Patient",
        "id": "erXuFYUfucBZaryVksYEcMg3",
        "meta": {"versionId": "1", "lastUpdated": "2026-11-30T10:00:00Z"},
        "identifier": [
            {"use": "usual", "type": {"text": "EPI"}, "system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0", "value": "E4007"},
            {"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR", "display": "Medical record number"}]}, "system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14", "value": "203713"}
        ],
        "active": true,
        "name": [
            {"use": "official", "text": "Camila Maria Lopez", "family": "Lopez", "given": ["Camila", "Maria"]},
            {"use": "usual", "text": "Camila Lopez", "family": "Lopez", "given": ["Camila"]}
        ],
        "telecom": [{"system": "phone", "value": "469-555-5555", "use": "home"}, {"system": "email", "value": "knixontestemail@epic.com", "rank": 1}],
        "gender": "female",
        "birthDate": "1987-09-12",
        "deceasedBoolean": false,
        "address": [{"use": "old", "line": ["3268 West Johnson St.", "Apt 117"], "city": "GARLAND", "district": "DALLAS", "state": "TX", "postalCode": "75043", "country": "US"}],
        "maritalStatus": {"text": "Married"},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en", "display": "English"}], "text": "English"}, "preferred": true}],
        "generalPractitioner": [{"reference": "Practitioner/eM5CWtq15N0WJeuCet5bJlQ3", "display": "Physician Family Medicine, MD"}]
    }))
    .unwrap_or_default()
}

fn per_call(n: u32, f: impl Fn() -> bool) -> f64 {
    let start = Instant::now();
    let mut ok = 0u32;
    for _ in 0..n {
        ok += u32::from(f());
    }
    assert_eq!(ok, n, "every call summarises the Patient");
    start.elapsed().as_secs_f64() / f64::from(n)
}

fn main() {
    let body = patient();
    let n = 20_000;
    // Warm up, then three runs each; the best of three.
    per_call(1000, || fhir_summary::typed(&body).is_ok());
    let best = |f: &dyn Fn() -> bool| (0..3).map(|_| per_call(n, f)).fold(f64::MAX, f64::min);
    let raw = best(&|| fhir_summary::raw(&body).is_ok());
    let typed = best(&|| fhir_summary::typed(&body).is_ok());
    println!(
        "patient summary, {} bytes, best of 3 x {n} calls",
        body.len()
    );
    println!("  raw JSON (baseline): {:>8.2} us", raw * 1e6);
    println!(
        "  typed models:        {:>8.2} us  ({:.2} x baseline)",
        typed * 1e6,
        typed / raw
    );
}
