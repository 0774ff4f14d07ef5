//! The parties a statement is between, from config: the company (`[statements]`) and each
//! partner (`[partners.billing]`). A statement keeps them as they were when it was issued,
//! so a later change of address does not change what a partner received.

use std::path::Path;

use serde::Deserialize;

use super::model::{Parties, Party};
use crate::config::{Config, PartnerConfig, StatementsConfig};

/// A partner's legal details for statements (`[partners.billing]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// The registered name statements are addressed to.
    pub legal_name: String,
    #[serde(default)]
    pub address: Vec<String>,
    /// VAT, GST or tax registration number.
    #[serde(default)]
    pub tax_id: Option<String>,
    /// A reference to the payment details on file ("bank account ending 4821", a supplier
    /// number in the payables system): never an account number itself.
    #[serde(default)]
    pub payment_details: Option<String>,
    /// The locale its statements are formatted in (BCP 47: "en-US", "de", "pl", "ja").
    #[serde(default)]
    pub locale: Option<String>,
}

/// Longest logo file accepted (a logo is a few KB; this is a guard, not a target).
pub const LOGO_MAX_BYTES: u64 = 1024 * 1024;

pub fn company(c: &StatementsConfig) -> Party {
    Party {
        legal_name: c.company_name.trim().to_owned(),
        address: lines(&c.company_address),
        tax_id: text(c.company_tax_id.as_deref()),
        contact: lines(&c.company_contact),
        payment_details: None,
        locale: None,
    }
}

/// The partner's party: its billing details, or its display name when it has none.
pub fn partner(p: &PartnerConfig) -> Party {
    match &p.billing {
        Some(b) => Party {
            legal_name: b.legal_name.trim().to_owned(),
            address: lines(&b.address),
            tax_id: text(b.tax_id.as_deref()),
            contact: Vec::new(),
            payment_details: text(b.payment_details.as_deref()),
            locale: text(b.locale.as_deref()),
        },
        None => Party {
            legal_name: p.name.clone(),
            ..Party::default()
        },
    }
}

pub fn parties(config: &Config, partner_id: &str) -> Parties {
    Parties {
        company: company(&config.statements),
        partner: config.partner(partner_id).map_or_else(
            || Party {
                legal_name: partner_id.to_owned(),
                ..Party::default()
            },
            partner,
        ),
    }
}

fn text(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn lines(v: &[String]) -> Vec<String> {
    v.iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What `check-config` says about the parties.
pub fn problems(config: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(path) = &config.statements.company_logo
        && let Err(e) = load_logo(path)
    {
        out.push(("statements.company_logo".into(), e));
    }
    for (i, p) in config.partners.iter().enumerate() {
        let Some(b) = &p.billing else { continue };
        let f = |name: &str| format!("partners[{i}].billing.{name}");
        if b.legal_name.trim().is_empty() {
            out.push((
                f("legal_name"),
                "must not be empty: statements are addressed to it".into(),
            ));
        }
        if let Some(tag) = &b.locale
            && let Err(e) = check_locale(tag)
        {
            out.push((f("locale"), e));
        }
        if let Some(details) = &b.payment_details
            && looks_like_an_account_number(details)
        {
            out.push((
                f("payment_details"),
                "looks like a full account number or IBAN: give a reference to the details on file (\"bank account ending 4821\"), which is printed on every statement".into(),
            ));
        }
    }
    out
}

/// A BCP 47 tag the formatter reads ("en-US", "de", "pl", "zh-Hant-TW").
pub fn check_locale(tag: &str) -> Result<(), String> {
    tag.parse::<icu_locale_core::Locale>()
        .map(|_| ())
        .map_err(|_| {
            format!(
                "{tag:?} is not a BCP 47 locale tag such as \"en-US\", \"de\", \"pl\" or \"ja\""
            )
        })
}

/// Ten or more digits in a row (after dropping spaces): an IBAN or account number.
fn looks_like_an_account_number(s: &str) -> bool {
    let mut run = 0;
    for c in s.chars().filter(|c| !c.is_whitespace()) {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 10 {
            return true;
        }
    }
    false
}

/// The logo's bytes, checked: a PNG or JPEG file of at most [`LOGO_MAX_BYTES`] (SVG is
/// not drawn: see `pdf::Logo`).
pub fn read_logo(path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if meta.len() > LOGO_MAX_BYTES {
        return Err(format!(
            "{shown} is {} bytes; a logo must be at most {LOGO_MAX_BYTES}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
    let jpeg = bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
    if !(png || jpeg) {
        return Err(format!("{shown} is not a PNG or JPEG image"));
    }
    Ok(bytes)
}

/// The logo, read, checked and decoded (what `check-config` and every PDF use).
pub fn load_logo(path: &Path) -> Result<super::pdf::Logo, String> {
    super::pdf::Logo::from_file_bytes(read_logo(path)?, path)
}

/// The statement's letterhead logo from config, if one is set and readable, loaded once at
/// start (`AppState::statement_logo`). `check-config` refuses a bad file; one that went
/// missing between the check and the start is logged, and statements drawn without it.
pub fn logo(config: &StatementsConfig) -> Option<super::pdf::Logo> {
    let path = config.company_logo.as_ref()?;
    load_logo(path)
        .map_err(|e| tracing::warn!(error = %e, "statement logo not drawn"))
        .ok()
}

/// The locale a statement is drawn in: the partner's, as issued, else English.
pub fn locale(doc: &super::model::Document) -> &str {
    doc.parties
        .as_ref()
        .and_then(|p| p.partner.locale.as_deref())
        .unwrap_or("en")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_bcp47_tags() {
        for ok in ["en", "en-US", "de-DE", "pl", "ja", "zh-Hant-TW", "fr-CA"] {
            assert!(check_locale(ok).is_ok(), "{ok}");
        }
        for bad in ["en--US", "en_US_POSIX!", "", "12"] {
            assert!(check_locale(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn account_numbers_are_refused_and_references_accepted() {
        assert!(looks_like_an_account_number("DE89 3704 0044 0532 0130 00"));
        assert!(looks_like_an_account_number("acct 1234567890"));
        assert!(!looks_like_an_account_number("Bank account ending 4821"));
        assert!(!looks_like_an_account_number("Supplier no. V-20931"));
    }

    #[test]
    fn logos_are_checked_for_size_and_format() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("logo.png");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\nrest").unwrap();
        assert!(read_logo(&png).is_ok());
        // A PNG signature with nothing behind it does not decode.
        assert!(load_logo(&png).unwrap_err().contains("PNG"));
        let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/logo.png");
        assert!(load_logo(&sample).is_ok());
        let svg = dir.path().join("logo.svg");
        std::fs::write(&svg, b"<svg/>").unwrap();
        assert!(read_logo(&svg).unwrap_err().contains("not a PNG or JPEG"));
        let missing = dir.path().join("nope.png");
        assert!(read_logo(&missing).unwrap_err().contains("cannot read"));
        let big = dir.path().join("big.png");
        std::fs::write(&big, vec![0u8; (LOGO_MAX_BYTES + 1) as usize]).unwrap();
        assert!(read_logo(&big).unwrap_err().contains("at most"));
    }
}
