//! Money in integer minor units. There is no floating point anywhere in this service.

use std::fmt;

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err("must be an ISO 4217 code of three upper-case letters".into()),
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A non-negative amount of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Money {
    pub currency: Currency,
    pub minor: i64,
}

impl Money {
    /// A strictly positive amount, as every request amount must be.
    pub fn positive(currency: &str, minor: i64) -> Result<Self, Vec<(&'static str, String)>> {
        let mut violations = Vec::new();
        let currency = Currency::parse(currency).map_err(|e| violations.push(("currency_code", e)));
        if minor <= 0 {
            violations.push(("amount_minor", "must be greater than zero".to_string()));
        }
        match currency {
            Ok(currency) if violations.is_empty() => Ok(Self { currency, minor }),
            _ => Err(violations),
        }
    }

    pub fn new(currency: Currency, minor: i64) -> Self {
        Self { currency, minor }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(Currency::parse("USD").is_ok());
        for bad in ["usd", "US", "USDT", "U$D", "", "ÜSD"] {
            assert!(Currency::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn request_amounts_must_be_positive_and_report_every_problem() {
        assert!(Money::positive("EUR", 1).is_ok());
        assert_eq!(Money::positive("EUR", 0).unwrap_err().len(), 1);
        assert_eq!(Money::positive("eur", -5).unwrap_err().len(), 2);
    }
}
