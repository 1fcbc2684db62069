//! Amounts of money: exact decimals with a currency, rounded to the currency's minor unit.

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};

/// Currencies without minor units (ISO 4217 exponent 0) among those contracts use.
const NO_MINOR_UNIT: &[&str] = &["JPY", "KRW", "ISK", "CLP", "VND", "UGX", "XOF", "XAF"];

/// The number of decimals of a currency's minor unit.
pub fn minor_digits(currency: &str) -> u32 {
    if NO_MINOR_UNIT.contains(&currency) {
        0
    } else {
        2
    }
}

/// Round an amount to the currency's minor unit, half to even.
pub fn round(value: Decimal, currency: &str) -> Decimal {
    value.round_dp_with_strategy(
        minor_digits(currency),
        RoundingStrategy::MidpointNearestEven,
    )
}

/// Parse an amount written `"123.45 USD"` or `"123.45"` (the currency is checked by the contract
/// compiler); None when it is not a decimal.
pub fn parse_amount(text: &str) -> Option<Decimal> {
    let number = text.split_whitespace().next()?;
    Decimal::from_str(number).ok()
}

/// Parse a share written `"25 %"` or `"25%"` as a fraction (0.25).
pub fn parse_share(text: &str) -> Option<Decimal> {
    let number = text.trim().trim_end_matches('%').trim();
    Decimal::from_str(number)
        .ok()
        .map(|d| d / Decimal::from(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    #[test]
    fn rounding_is_half_even_to_the_minor_unit() {
        assert_eq!(round(d("10.125"), "USD"), d("10.12"));
        assert_eq!(round(d("10.135"), "USD"), d("10.14"));
        assert_eq!(round(d("10.1251"), "EUR"), d("10.13"));
        assert_eq!(round(d("1250.5"), "JPY"), d("1250"));
        assert_eq!(round(d("1251.5"), "JPY"), d("1252"));
    }

    #[test]
    fn amounts_and_shares_parse() {
        assert_eq!(parse_amount("425000.00 USD"), Some(d("425000.00")));
        assert_eq!(parse_amount("17.5"), Some(d("17.5")));
        assert_eq!(parse_amount("USD"), None);
        assert_eq!(parse_share("23.1 %"), Some(d("0.231")));
        assert_eq!(parse_share("100%"), Some(d("1")));
    }
}
