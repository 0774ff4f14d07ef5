//! The event shapes statements read from the ledger: `revenue.recognized` from the billing
//! system and milestone events such as `referral.implementation_completed` (pure). Ingest
//! checks them with the same functions, so a malformed one is refused at the door instead
//! of being found when finance runs a statement.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::Value;

use super::money::Currency;

pub const REVENUE_RECOGNIZED: &str = "revenue.recognized";
pub const REFERRAL_PREFIX: &str = "referral.";

#[derive(Debug, Clone, PartialEq)]
pub struct Revenue {
    pub amount: Decimal,
    pub currency: String,
    pub customer: Option<String>,
    pub product: Option<String>,
    /// The billing system's invoice, for per-invoice detail on statements.
    pub invoice: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Milestone {
    pub contract_value: Option<Decimal>,
    pub currency: Option<String>,
    pub customer: Option<String>,
}

/// An amount written as a JSON string (`"1250.00"`) or an integer. A JSON float is refused:
/// it has already been through binary floating point by the time it is parsed.
fn amount(data: &Value, field: &str, required: bool) -> Result<Option<Decimal>, String> {
    match data.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(format!("data.{field} is required")),
        Some(Value::String(s)) => Decimal::from_str(s.trim())
            .map(Some)
            .map_err(|_| format!("data.{field} {s:?} is not a decimal amount")),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Decimal::from_str(&n.to_string())
            .map(Some)
            .map_err(|_| format!("data.{field} {n} is out of range")),
        Some(Value::Number(n)) => Err(format!(
            "data.{field} {n} is a JSON float; send amounts as strings (\"{n}\") so they stay exact"
        )),
        Some(_) => Err(format!(
            "data.{field} must be a decimal string such as \"1250.00\""
        )),
    }
}

fn currency(data: &Value, required: bool) -> Result<Option<String>, String> {
    match data.get("currency") {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err("data.currency is required (ISO 4217, e.g. USD)".into()),
        Some(Value::String(c)) if Currency::parse(c).is_some() => Ok(Some(c.clone())),
        Some(other) => Err(format!(
            "data.currency {other} is not an ISO 4217 code the gateway knows (e.g. USD, EUR, JPY)"
        )),
    }
}

fn text(data: &Value, field: &str) -> Result<Option<String>, String> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("data.{field} must be a string")),
    }
}

/// Read a `revenue.recognized` event's data.
pub fn revenue(data: &Value) -> Result<Revenue, String> {
    if !data.is_object() {
        return Err("data must be an object with amount and currency".into());
    }
    Ok(Revenue {
        amount: amount(data, "amount", true)?.unwrap_or_default(),
        currency: currency(data, true)?.unwrap_or_default(),
        customer: text(data, "customer")?,
        product: text(data, "product")?,
        invoice: text(data, "invoice")?,
    })
}

/// Read a milestone event's data (contract value optional: a fixed fee needs none).
pub fn referral(data: &Value) -> Result<Milestone, String> {
    if !data.is_object() && !data.is_null() {
        return Err("data must be an object".into());
    }
    Ok(Milestone {
        contract_value: amount(data, "contract_value", false)?,
        currency: currency(data, false)?,
        customer: text(data, "customer")?,
    })
}

/// The problem with an event's data, for the event types statements read; `None` for any
/// other type or a good event.
pub fn check(event_type: &str, data: Option<&Value>) -> Option<String> {
    let null = Value::Null;
    let data = data.unwrap_or(&null);
    if event_type == REVENUE_RECOGNIZED {
        revenue(data).err()
    } else if event_type.starts_with(REFERRAL_PREFIX) {
        referral(data).err()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn revenue_reads_string_and_integer_amounts_and_refunds() {
        let r =
            revenue(&json!({"amount": "-120.50", "currency": "USD", "product": "pro"})).unwrap();
        assert_eq!(r.amount, Decimal::from_str("-120.50").unwrap());
        assert_eq!(r.product.as_deref(), Some("pro"));
        assert_eq!(
            revenue(&json!({"amount": 300, "currency": "JPY"}))
                .unwrap()
                .amount,
            Decimal::from(300)
        );
    }

    #[test]
    fn float_amounts_unknown_currencies_and_missing_fields_are_refused() {
        let e = revenue(&json!({"amount": 0.1, "currency": "USD"})).unwrap_err();
        assert!(e.contains("float"), "{e}");
        let e = revenue(&json!({"amount": "10", "currency": "XYZ"})).unwrap_err();
        assert!(e.contains("ISO 4217"), "{e}");
        assert!(
            revenue(&json!({"currency": "USD"}))
                .unwrap_err()
                .contains("data.amount")
        );
        assert!(
            revenue(&json!({"amount": "1"}))
                .unwrap_err()
                .contains("data.currency")
        );
        assert!(check("revenue.recognized", None).is_some());
        assert!(check("lti.launch", None).is_none());
        assert!(
            check(
                "referral.implementation_completed",
                Some(&json!({"contract_value": "abc"}))
            )
            .is_some()
        );
    }
}
