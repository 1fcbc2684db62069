//! Calendar days: the unit every contract window is counted in.
//!
//! A day is the number of days since 1970-01-01. A clinical timestamp counts on the calendar date
//! it carries in its own offset (`2025-06-30T23:30:00-05:00` is 30 June): that is the patient's
//! local date, which is what a clinician and a contract mean by "day 180". Partial dates count on
//! their first day (`2025-06` is 1 June).

use time::{Date, Month};

/// Days since 1970-01-01.
pub type Day = i32;

/// Julian day number of 1970-01-01.
const EPOCH_JULIAN: i32 = 2_440_588;

/// The day of a calendar date.
pub fn from_date(d: Date) -> Day {
    d.to_julian_day() - EPOCH_JULIAN
}

/// The calendar date of a day.
pub fn to_date(day: Day) -> Option<Date> {
    Date::from_julian_day(day + EPOCH_JULIAN).ok()
}

/// The civil date (year, month, day) of a day (proleptic Gregorian; H. Hinnant's
/// days-from-civil inverse, exact for every representable day).
fn civil(day: Day) -> (i64, u32, u32) {
    let z = i64::from(day) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD` of a day (on the hot path of evidence notes: no formatting machinery).
pub fn format(day: Day) -> String {
    let (y, m, d) = civil(day);
    if !(0..=9999).contains(&y) {
        return String::new();
    }
    let push2 = |out: &mut String, v: u32| {
        out.push(char::from(b'0' + (v / 10 % 10) as u8));
        out.push(char::from(b'0' + (v % 10) as u8));
    };
    let mut out = String::with_capacity(10);
    push2(&mut out, y as u32 / 100);
    push2(&mut out, y as u32 % 100);
    out.push('-');
    push2(&mut out, m);
    out.push('-');
    push2(&mut out, d);
    out
}

fn digits(s: &str) -> Option<i32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The local calendar day of a FHIR date, dateTime or instant (partial dates: their first day).
pub fn parse(s: &str) -> Option<Day> {
    let date = s.get(..10.min(s.len()))?;
    let mut parts = date.split('-');
    let year = digits(parts.next()?)?;
    let month = match parts.next() {
        Some(m) => digits(m)?,
        None => 1,
    };
    let day = match parts.next() {
        Some(d) => digits(d.get(..2)?)?,
        None => 1,
    };
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let d = Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()?;
    Some(from_date(d))
}

/// A strict `YYYY-MM-DD` date (contract definitions).
pub fn parse_full(s: &str) -> Option<Day> {
    if s.len() != 10 || s.as_bytes().get(4) != Some(&b'-') || s.as_bytes().get(7) != Some(&b'-') {
        return None;
    }
    parse(s)
}

/// The instant of a FHIR date/dateTime in ms since the epoch (for ordering within a day; dates
/// without a time are midnight UTC).
pub fn instant_ms(s: &str) -> Option<i64> {
    crate::search::values::parse_date_range(s).map(|r| r.low)
}

/// The day an instant (ms since the epoch) falls on in UTC.
pub fn day_of_ms(ms: i64) -> Day {
    ms.div_euclid(86_400_000) as Day
}

/// Full years from `birth` to `on` (the age on a day).
pub fn age_on(birth: Day, on: Day) -> Option<i32> {
    let (b, o) = (to_date(birth)?, to_date(on)?);
    let mut years = o.year() - b.year();
    if (o.month() as u8, o.day()) < (b.month() as u8, b.day()) {
        years -= 1;
    }
    Some(years)
}

/// Today (UTC).
pub fn today() -> Day {
    day_of_ms(crate::clock::now_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_dates_and_ages() {
        let d = parse("2025-06-30T23:30:00-05:00").expect("day");
        assert_eq!(format(d), "2025-06-30");
        assert_eq!(parse("2025-06"), parse("2025-06-01"));
        assert_eq!(parse("1970-01-01"), Some(0));
        assert!(parse("2025-13-01").is_none());
        assert!(parse_full("2025-1-01").is_none());
        let b = parse("2000-02-29").expect("b");
        assert_eq!(age_on(b, parse("2018-02-28").expect("d")), Some(17));
        assert_eq!(age_on(b, parse("2018-03-01").expect("d")), Some(18));
        assert_eq!(day_of_ms(-1), -1);
        // the fast formatter agrees with the calendar everywhere it is used
        for day in (-719_000..2_900_000).step_by(997) {
            let d = to_date(day).expect("date");
            assert_eq!(
                format(day),
                format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day()),
                "{day}"
            );
        }
        assert_eq!(
            format(from_date(time::macros::date!(2000 - 02 - 29))),
            "2000-02-29"
        );
    }
}
