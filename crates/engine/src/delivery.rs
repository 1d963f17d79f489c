//! The expected delivery day of mail, estimated as mailing-services vendors do: a piece whose
//! stop-the-clock scan came before 10:00 local time is very likely delivered that day, later
//! ones the next delivery day (op-codes.md §2). Local time is the scanning facility's, from its
//! state's time zone (the zone most of the state keeps, US daylight-saving rules); Sundays are
//! no delivery days, and federal holidays are not known here. An estimate, never a promise.

use imbtrack_feed::time::{civil_from_days, days_from_civil, DAY_MS};

/// Standard time's offset from UTC, minutes, of most of a state (or territory), and whether it
/// keeps US daylight-saving time.
fn zone_of(state: &str) -> Option<(i64, bool)> {
    let zone = match state {
        "CT" | "DE" | "DC" | "FL" | "GA" | "IN" | "KY" | "ME" | "MD" | "MA" | "MI" | "NH"
        | "NJ" | "NY" | "NC" | "OH" | "PA" | "RI" | "SC" | "VT" | "VA" | "WV" => (-300, true),
        "AL" | "AR" | "IL" | "IA" | "KS" | "LA" | "MN" | "MS" | "MO" | "NE" | "ND" | "OK"
        | "SD" | "TN" | "TX" | "WI" => (-360, true),
        "CO" | "ID" | "MT" | "NM" | "UT" | "WY" => (-420, true),
        "AZ" => (-420, false),
        "CA" | "NV" | "OR" | "WA" => (-480, true),
        "AK" => (-540, true),
        "HI" => (-600, false),
        "PR" | "VI" => (-240, false),
        "GU" | "MP" => (600, false),
        "AS" => (-660, false),
        _ => return None,
    };
    Some(zone)
}

/// Day of the week of a day since 1970-01-01 (a Thursday), 0 = Sunday.
fn weekday(days: i64) -> i64 {
    (days + 4).rem_euclid(7)
}

/// The `nth` (1-based) Sunday of a month, as days since the epoch.
fn nth_sunday(year: i64, month: u32, nth: i64) -> i64 {
    let first = days_from_civil(year, month, 1);
    first + (7 - weekday(first)) % 7 + 7 * (nth - 1)
}

/// Minutes east of UTC in `state` at `utc_ms`; `None` for a state not known here.
pub(crate) fn utc_offset_minutes(state: &str, utc_ms: i64) -> Option<i64> {
    let (standard, keeps_dst) = zone_of(state)?;
    if !keeps_dst {
        return Some(standard);
    }
    // Since 2007: from the second Sunday of March, 02:00 standard time, to the first Sunday of
    // November, 02:00 daylight time (01:00 standard).
    let (year, _, _) = civil_from_days((utc_ms + standard * 60_000).div_euclid(DAY_MS));
    let local_standard_ms = utc_ms + standard * 60_000;
    let starts = nth_sunday(year, 3, 2) * DAY_MS + 2 * 3_600_000;
    let ends = nth_sunday(year, 11, 1) * DAY_MS + 3_600_000;
    let summer = (starts..ends).contains(&local_standard_ms);
    Some(standard + if summer { 60 } else { 0 })
}

/// The day (days since the epoch) a piece with a stop-the-clock scan at `utc_ms`, at a facility
/// in `state`, is expected to be delivered: that local day before 10:00, else the next day
/// that is not a Sunday. A facility whose state is not known is taken to keep UTC.
pub fn expected_delivery_day(utc_ms: i64, state: &str) -> i64 {
    let local_ms = utc_ms + utc_offset_minutes(state, utc_ms).unwrap_or(0) * 60_000;
    let day = local_ms.div_euclid(DAY_MS);
    let before_ten = local_ms.rem_euclid(DAY_MS) < 10 * 3_600_000;
    let mut expected = if before_ten { day } else { day + 1 };
    if weekday(expected) == 0 {
        expected += 1;
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        days_from_civil(year, month, day) * DAY_MS + (hour * 60 + minute) * 60_000
    }

    #[test]
    fn offsets_follow_the_state_and_daylight_saving() {
        // 2025: DST from Sunday March 9 to Sunday November 2.
        assert_eq!(nth_sunday(2025, 3, 2), days_from_civil(2025, 3, 9));
        assert_eq!(nth_sunday(2025, 11, 1), days_from_civil(2025, 11, 2));
        assert_eq!(utc_offset_minutes("NY", at(2025, 1, 15, 12, 0)), Some(-300));
        assert_eq!(utc_offset_minutes("NY", at(2025, 7, 15, 12, 0)), Some(-240));
        // 02:00 EST on March 9 is 07:00 UTC: the minute before is standard time.
        assert_eq!(utc_offset_minutes("NY", at(2025, 3, 9, 6, 59)), Some(-300));
        assert_eq!(utc_offset_minutes("NY", at(2025, 3, 9, 7, 0)), Some(-240));
        // 02:00 EDT on November 2 is 06:00 UTC.
        assert_eq!(utc_offset_minutes("NY", at(2025, 11, 2, 5, 59)), Some(-240));
        assert_eq!(utc_offset_minutes("NY", at(2025, 11, 2, 6, 0)), Some(-300));
        assert_eq!(utc_offset_minutes("AZ", at(2025, 7, 15, 12, 0)), Some(-420));
        assert_eq!(utc_offset_minutes("CA", at(2025, 7, 15, 12, 0)), Some(-420));
        assert_eq!(utc_offset_minutes("ZZ", at(2025, 7, 15, 12, 0)), None);
    }

    #[test]
    fn before_ten_local_is_that_day_later_the_next_delivery_day() {
        // Wednesday 2025-01-15, New York (UTC−5): 09:59 local is that day, 10:00 the next.
        let wednesday = days_from_civil(2025, 1, 15);
        assert_eq!(
            expected_delivery_day(at(2025, 1, 15, 14, 59), "NY"),
            wednesday
        );
        assert_eq!(
            expected_delivery_day(at(2025, 1, 15, 15, 0), "NY"),
            wednesday + 1
        );
        // 03:00 UTC Thursday is still Wednesday evening in California: Thursday.
        assert_eq!(
            expected_delivery_day(at(2025, 1, 16, 3, 0), "CA"),
            wednesday + 1
        );
        // Saturday afternoon: Monday, no Sunday delivery.
        assert_eq!(
            expected_delivery_day(at(2025, 1, 18, 20, 0), "NY"),
            days_from_civil(2025, 1, 20)
        );
        // A Sunday morning scan: Monday.
        assert_eq!(
            expected_delivery_day(at(2025, 1, 19, 12, 0), "NY"),
            days_from_civil(2025, 1, 20)
        );
    }
}
