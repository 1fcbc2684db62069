//! Order-preserving byte encodings of index values, and parsing of the values they come from:
//! dates as millisecond ranges by precision, decimals as exact scaled integers with their implicit
//! precision, and strings folded for case- and accent-insensitive matching.
//!
//! Index keys compare bytewise, so every encoding here sorts like the value it encodes.

use rust_decimal::Decimal;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};
use unicode_normalization::UnicodeNormalization;

/// Separator between a token's code and its system in an encoded token (`code \x01 system`).
pub const TOKEN_SEP: u8 = 0x01;

/// Scale of encoded decimals: values are stored as integers of 10^-18.
const SCALE: u32 = 18;

/// Encode an i64 so that byte order equals numeric order.
pub fn enc_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// Decode [`enc_i64`].
pub fn dec_i64(b: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

/// Encode an i128 so that byte order equals numeric order.
pub fn enc_i128(v: i128) -> [u8; 16] {
    ((v as u128) ^ (1 << 127)).to_be_bytes()
}

/// Decode [`enc_i128`].
pub fn dec_i128(b: &[u8]) -> Option<i128> {
    let arr: [u8; 16] = b.get(..16)?.try_into().ok()?;
    Some((u128::from_be_bytes(arr) ^ (1 << 127)) as i128)
}

/// A decimal as an integer count of 10^-18 (saturating beyond about ±1.7e20).
pub fn scaled(d: Decimal) -> i128 {
    let mantissa = d.mantissa();
    let scale = d.scale();
    if scale <= SCALE {
        mantissa.saturating_mul(10i128.pow(SCALE - scale))
    } else {
        mantissa / 10i128.pow(scale - SCALE)
    }
}

/// A decimal value written in a search or a resource, with the half-width of its implicit
/// precision range (`100` → 0.5, `5.40` → 0.005, `1e2` → 50).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number {
    /// The exact value.
    pub value: Decimal,
    /// Half the unit of the last significant digit.
    pub half_width: Decimal,
}

/// Parse a FHIR decimal (`-12.50`, `1e2`, `1.5E-3`).
pub fn parse_number(s: &str) -> Option<Number> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(p) => (&s[..p], s[p + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let body = mantissa.strip_prefix(['-', '+']).unwrap_or(mantissa);
    if body.is_empty()
        || !body.chars().all(|c| c.is_ascii_digit() || c == '.')
        || body.matches('.').count() > 1
        || body.starts_with('.')
        || body.ends_with('.')
        || !(-28..=28).contains(&exp)
    {
        return None;
    }
    let decimals = body.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    let mut value: Decimal = mantissa.parse().ok()?;
    let ten = Decimal::from(10);
    let pow = |n: i32| -> Option<Decimal> {
        let mut p = Decimal::ONE;
        for _ in 0..n.unsigned_abs() {
            p = if n >= 0 {
                p.checked_mul(ten)?
            } else {
                p.checked_div(ten)?
            };
        }
        Some(p)
    };
    if exp != 0 {
        value = value.checked_mul(pow(exp)?)?;
    }
    let half_width = pow(exp - decimals)?.checked_mul(Decimal::new(5, 1))?;
    Some(Number { value, half_width })
}

/// Parse a JSON number or numeric string as an exact decimal (index side: a point).
pub fn json_decimal(v: &serde_json::Value) -> Option<Decimal> {
    match v {
        serde_json::Value::Number(n) => parse_number(&n.to_string()).map(|n| n.value),
        serde_json::Value::String(s) => parse_number(s).map(|n| n.value),
        _ => None,
    }
}

/// A time range in milliseconds since the epoch, half-open: `[low, high)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First millisecond in the range.
    pub low: i64,
    /// First millisecond after the range.
    pub high: i64,
}

/// Lowest representable instant (an open Period start).
pub const MIN_MS: i64 = i64::MIN / 2;
/// Highest representable instant (an open Period end).
pub const MAX_MS: i64 = i64::MAX / 2;

fn two(s: &str, at: usize) -> Option<u8> {
    let b = s.as_bytes();
    let d1 = b.get(at)?.checked_sub(b'0').filter(|d| *d < 10)?;
    let d2 = b.get(at + 1)?.checked_sub(b'0').filter(|d| *d < 10)?;
    Some(d1 * 10 + d2)
}

fn ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn add_months(date: Date, months: i32) -> Option<Date> {
    let total = date.year() * 12 + (date.month() as i32 - 1) + months;
    let (y, m) = (total.div_euclid(12), total.rem_euclid(12) as u8 + 1);
    Date::from_calendar_date(y, Month::try_from(m).ok()?, 1).ok()
}

/// Parse a FHIR date, dateTime or instant (or a search value of those forms, where seconds may
/// be left out) into the range it denotes by its precision. A time without a zone is taken as
/// UTC; a date without a time is the UTC calendar period.
pub fn parse_date_range(s: &str) -> Option<Range> {
    let s = s.trim();
    if s.len() < 4 || !s.is_ascii() {
        return None;
    }
    let year: i32 = s
        .get(..4)?
        .parse()
        .ok()
        .filter(|_| s[..4].bytes().all(|b| b.is_ascii_digit()))?;
    if s.len() == 4 {
        let start = Date::from_calendar_date(year, Month::January, 1).ok()?;
        let end = Date::from_calendar_date(year + 1, Month::January, 1).ok()?;
        return Some(Range {
            low: ms(start.midnight().assume_utc()),
            high: ms(end.midnight().assume_utc()),
        });
    }
    if s.as_bytes().get(4) != Some(&b'-') {
        return None;
    }
    let month = Month::try_from(two(s, 5)?).ok()?;
    if s.len() == 7 {
        let start = Date::from_calendar_date(year, month, 1).ok()?;
        let end = add_months(start, 1)?;
        return Some(Range {
            low: ms(start.midnight().assume_utc()),
            high: ms(end.midnight().assume_utc()),
        });
    }
    if s.as_bytes().get(7) != Some(&b'-') {
        return None;
    }
    let date = Date::from_calendar_date(year, month, two(s, 8)?).ok()?;
    if s.len() == 10 {
        let start = date.midnight().assume_utc();
        return Some(Range {
            low: ms(start),
            high: ms(start) + 86_400_000,
        });
    }
    if s.as_bytes().get(10) != Some(&b'T') {
        return None;
    }
    let rest = &s[11..];
    // split the zone off: Z, +hh:mm or -hh:mm
    let (clock, offset) = if let Some(c) = rest.strip_suffix('Z') {
        (c, UtcOffset::UTC)
    } else if let Some(p) = rest.rfind(['+', '-']) {
        let z = &rest[p..];
        if z.len() != 6 || z.as_bytes()[3] != b':' {
            return None;
        }
        let (h, m) = (two(z, 1)? as i8, two(z, 4)? as i8);
        if h > 14 || m > 59 {
            return None;
        }
        let sign = if z.starts_with('-') { -1 } else { 1 };
        (&rest[..p], UtcOffset::from_hms(sign * h, sign * m, 0).ok()?)
    } else {
        (rest, UtcOffset::UTC)
    };
    let hour = two(clock, 0)?;
    if clock.as_bytes().get(2) != Some(&b':') {
        return None;
    }
    let minute = two(clock, 3)?;
    let (second, frac, width_ms): (u8, &str, i64) = match clock.len() {
        5 => (0, "", 60_000),
        8 if clock.as_bytes()[5] == b':' => (two(clock, 6)?, "", 1000),
        n if n > 9 && clock.as_bytes()[5] == b':' && clock.as_bytes()[8] == b'.' => {
            let f = &clock[9..];
            if !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let w = match f.len() {
                1 => 100,
                2 => 10,
                _ => 1,
            };
            (two(clock, 6)?, f, w)
        }
        _ => return None,
    };
    let mut millis: u16 = 0;
    for (i, b) in frac.bytes().take(3).enumerate() {
        millis += u16::from(b - b'0') * [100, 10, 1][i];
    }
    let time = Time::from_hms_milli(hour, minute, second.min(59), millis).ok()?;
    let t = PrimitiveDateTime::new(date, time).assume_offset(offset);
    let low = ms(t);
    Some(Range {
        low,
        high: low + width_ms,
    })
}

/// Fold a string for matching: Unicode decomposition with combining marks removed, lower case,
/// and runs of whitespace collapsed to one space.
pub fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.nfd() {
        if unicode_normalization::char::is_combining_mark(c) {
            continue;
        }
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Replace bytes that would break key framing (NUL and the token separator).
pub fn clean(s: &str) -> Vec<u8> {
    s.bytes()
        .map(|b| if b == 0 || b == TOKEN_SEP { b' ' } else { b })
        .collect()
}

/// Encode a token value: `code \x01 system` (an empty system when the value has none).
pub fn enc_token(system: &str, code: &str) -> Vec<u8> {
    let mut v = clean(code);
    v.push(TOKEN_SEP);
    v.extend(clean(system));
    v
}

/// Split an encoded token into (system, code).
pub fn dec_token(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&x| x == TOKEN_SEP) {
        Some(p) => (&b[p + 1..], &b[..p]),
        None => (&[][..], b),
    }
}

/// Encode a date range for the by-start index: `low high`.
pub fn enc_range_low(r: Range) -> Vec<u8> {
    let mut v = enc_i64(r.low).to_vec();
    v.extend(enc_i64(r.high));
    v
}

/// Encode a date range for the by-end index: `high low`.
pub fn enc_range_high(r: Range) -> Vec<u8> {
    let mut v = enc_i64(r.high).to_vec();
    v.extend(enc_i64(r.low));
    v
}

/// Decode a by-start encoded range.
pub fn dec_range_low(b: &[u8]) -> Option<Range> {
    Some(Range {
        low: dec_i64(b)?,
        high: dec_i64(b.get(8..)?)?,
    })
}

/// Encode a quantity entry: `unit-key \0 value`.
pub fn enc_quantity(unit_key: &str, value: Decimal) -> Vec<u8> {
    let mut v = clean(unit_key);
    v.push(0);
    v.extend(enc_i128(scaled(value)));
    v
}

/// Split a quantity entry into (unit key, scaled value).
pub fn dec_quantity(b: &[u8]) -> Option<(&[u8], i128)> {
    if b.len() < 17 {
        return None;
    }
    let split = b.len() - 17;
    if b[split] != 0 {
        return None;
    }
    Some((&b[..split], dec_i128(&b[split + 1..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_precision() {
        let n = parse_number("100").expect("n");
        assert_eq!(n.half_width, Decimal::new(5, 1));
        let n = parse_number("5.40").expect("n");
        assert_eq!(n.value, Decimal::new(540, 2));
        assert_eq!(n.half_width, Decimal::new(5, 3));
        let n = parse_number("1e2").expect("n");
        assert_eq!(n.value, Decimal::from(100));
        assert_eq!(n.half_width, Decimal::from(50));
        let n = parse_number("1.5E-3").expect("n");
        assert_eq!(n.value, Decimal::new(15, 4));
        for bad in ["", "1.", ".5", "1..2", "abc", "1e", "--1", "1e99"] {
            assert!(parse_number(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn encodings_sort_like_values() {
        let vals = [-5i64, -1, 0, 1, 1_000_000];
        let enc: Vec<_> = vals.iter().map(|v| enc_i64(*v)).collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        let d: Vec<_> = ["-3.5", "-0.001", "0", "0.001", "7.2", "100"]
            .iter()
            .map(|s| enc_i128(scaled(parse_number(s).expect("n").value)))
            .collect();
        assert!(d.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(dec_i128(&enc_i128(-42)), Some(-42));
    }

    #[test]
    fn date_ranges_follow_precision_and_zone() {
        let y = parse_date_range("2020").expect("y");
        assert_eq!(y.high - y.low, 366 * 86_400_000);
        let m = parse_date_range("2021-02").expect("m");
        assert_eq!(m.high - m.low, 28 * 86_400_000);
        let d = parse_date_range("2020-01-01").expect("d");
        assert_eq!(d.low, 1_577_836_800_000);
        let t = parse_date_range("2020-01-01T02:00:00+02:00").expect("t");
        assert_eq!((t.low, t.high - t.low), (1_577_836_800_000, 1000));
        let t = parse_date_range("2020-01-01T00:00Z").expect("t");
        assert_eq!(t.high - t.low, 60_000);
        let t = parse_date_range("2020-01-01T00:00:00.5Z").expect("t");
        assert_eq!((t.low - 1_577_836_800_000, t.high - t.low), (500, 100));
        for bad in [
            "20",
            "2020-13",
            "2020-02-30",
            "2020-01-01T25:00",
            "2020-01-01X",
            "abcd",
        ] {
            assert!(parse_date_range(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn folding_ignores_case_accents_and_spacing() {
        assert_eq!(
            fold("  Müller-Lüdenscheidt  Ève "),
            "muller-ludenscheidt eve"
        );
        assert_eq!(fold("ÅNGSTRÖM"), "angstrom");
    }

    #[test]
    fn tokens_and_quantities_split_back() {
        let t = enc_token("http://loinc.org", "4548-4");
        assert_eq!(dec_token(&t), (&b"http://loinc.org"[..], &b"4548-4"[..]));
        let q = enc_quantity("ucum|%", Decimal::new(72, 1));
        let (u, v) = dec_quantity(&q).expect("q");
        assert_eq!(u, b"ucum|%");
        assert_eq!(v, 7_200_000_000_000_000_000);
    }
}
