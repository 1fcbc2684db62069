//! Days' supply arithmetic for adherence (proportion of days covered, PQA method) and
//! persistence (longest gap in supply).

use crate::days::Day;

/// A fill: the day it was dispensed and its days' supply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fill {
    /// Dispense day.
    pub day: Day,
    /// Days' supply.
    pub supply: u32,
}

/// Covered intervals (inclusive) of `fills`, sorted by day: a fill that starts while an earlier
/// supply lasts starts the day after that supply ends (early refills shift forward, PQA).
pub fn covered(fills: &[Fill]) -> Vec<(Day, Day)> {
    let mut sorted: Vec<Fill> = fills.iter().copied().filter(|f| f.supply > 0).collect();
    sorted.sort();
    let mut out: Vec<(Day, Day)> = Vec::new();
    let mut next_free = Day::MIN;
    for f in sorted {
        let start = f.day.max(next_free);
        let end = start.saturating_add(f.supply as i32 - 1);
        next_free = end.saturating_add(1);
        match out.last_mut() {
            Some(last) if last.1.saturating_add(1) >= start => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// Days of `[from, to]` covered by `intervals`.
pub fn days_covered(intervals: &[(Day, Day)], from: Day, to: Day) -> u32 {
    intervals
        .iter()
        .map(|(s, e)| {
            let (s, e) = ((*s).max(from), (*e).min(to));
            if e >= s {
                (e - s + 1) as u32
            } else {
                0
            }
        })
        .sum()
}

/// The longest run of uncovered days in `[from, to]` and the day it starts.
pub fn longest_gap(intervals: &[(Day, Day)], from: Day, to: Day) -> (u32, Day) {
    if to < from {
        return (0, from);
    }
    let mut best = (0u32, from);
    let mut cursor = from;
    for (s, e) in intervals {
        if *e < cursor {
            continue;
        }
        if *s > to {
            break;
        }
        if *s > cursor {
            let gap = (*s - cursor) as u32;
            if gap > best.0 {
                best = (gap, cursor);
            }
        }
        cursor = cursor.max(e.saturating_add(1));
        if cursor > to {
            return best;
        }
    }
    if cursor <= to {
        let gap = (to - cursor + 1) as u32;
        if gap > best.0 {
            best = (gap, cursor);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_refills_shift_forward() {
        // fills on day 0 (30 d) and day 20 (30 d): the second covers days 30..59
        let iv = covered(&[
            Fill { day: 0, supply: 30 },
            Fill {
                day: 20,
                supply: 30,
            },
        ]);
        assert_eq!(iv, vec![(0, 59)]);
        assert_eq!(days_covered(&iv, 0, 89), 60);
        assert_eq!(longest_gap(&iv, 0, 89), (30, 60));
    }

    #[test]
    fn gaps_between_fills_and_before_the_first() {
        let iv = covered(&[
            Fill {
                day: 10,
                supply: 10,
            },
            Fill { day: 40, supply: 5 },
        ]);
        assert_eq!(iv, vec![(10, 19), (40, 44)]);
        assert_eq!(days_covered(&iv, 0, 49), 15);
        assert_eq!(longest_gap(&iv, 0, 49), (20, 20));
        assert_eq!(longest_gap(&iv, 10, 19), (0, 10));
        assert_eq!(days_covered(&iv, 15, 42), 8);
    }
}
