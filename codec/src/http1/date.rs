//! The `Date` header value (RFC 9110 §5.6.7, IMF-fixdate), cached per second.
//!
//! Written by hand rather than with a date crate: the only conversion we
//! need is unix seconds to a proleptic Gregorian UTC date, which is a dozen
//! lines (Howard Hinnant's `civil_from_days`), and the codec stays free of
//! clock access — the caller hands in the time.

use std::fmt::Write;

/// Bytes in an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE_BYTES: usize = 29;
/// The last second IMF-fixdate can express (9999-12-31T23:59:59Z). Later
/// times are clamped so the year keeps its four digits.
const UNIX_SECONDS_MAX: u64 = 253_402_300_799;
const SECONDS_PER_DAY: u64 = 86_400;

const WEEKDAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The current `Date` header value. Each data-plane shard keeps one and
/// calls [`update`](Self::update) with the time before writing responses;
/// the text is re-formatted only when the second changes.
#[derive(Debug, Clone)]
pub struct HttpDate {
    unix_seconds: u64,
    text: String,
}

impl HttpDate {
    /// A date set to the unix epoch until the first [`update`](Self::update).
    pub fn new() -> Self {
        let mut date = Self {
            unix_seconds: 0,
            text: String::with_capacity(IMF_FIXDATE_BYTES),
        };
        date.format();
        date
    }

    /// Sets the time, in seconds since the unix epoch.
    pub fn update(&mut self, unix_seconds: u64) {
        let unix_seconds = unix_seconds.min(UNIX_SECONDS_MAX);
        if unix_seconds != self.unix_seconds {
            self.unix_seconds = unix_seconds;
            self.format();
        }
    }

    /// The IMF-fixdate text, for example `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn format(&mut self) {
        let days = self.unix_seconds / SECONDS_PER_DAY;
        let second_of_day = self.unix_seconds % SECONDS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday.
        let weekday = WEEKDAY_NAMES[((days + 4) % 7) as usize];
        self.text.clear();
        // Writing to a String cannot fail, and the capacity is already there.
        let _ = write!(
            self.text,
            "{weekday}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
            MONTH_NAMES[(month - 1) as usize],
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
        );
        debug_assert_eq!(self.text.len(), IMF_FIXDATE_BYTES);
    }
}

impl Default for HttpDate {
    fn default() -> Self {
        Self::new()
    }
}

/// Year, month (1–12) and day (1–31) of the day `days` after 1970-01-01,
/// in the proleptic Gregorian calendar. From Howard Hinnant, "chrono-
/// Compatible Low-Level Date Algorithms", specialised to days ≥ 0.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year,
    // then split into 400-year eras of 146097 days.
    let shifted_days = days + 719_468;
    let era = shifted_days / 146_097;
    let day_of_era = shifted_days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 153 days per five months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(unix_seconds: u64, expect: &str) {
        let mut date = HttpDate::new();
        date.update(unix_seconds);
        assert_eq!(date.as_str(), expect, "unix time {unix_seconds}");
    }

    #[test]
    fn known_dates_format_as_imf_fixdate() {
        check(0, "Thu, 01 Jan 1970 00:00:00 GMT");
        check(784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT");
        check(951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT");
        check(978_307_199, "Sun, 31 Dec 2000 23:59:59 GMT");
        check(1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT");
        check(4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT");
        check(UNIX_SECONDS_MAX, "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn times_past_year_9999_are_clamped_not_panicking() {
        check(u64::MAX, "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn a_new_date_reads_the_epoch_and_updates_follow_the_clock() {
        let mut date = HttpDate::default();
        assert_eq!(date.as_str(), "Thu, 01 Jan 1970 00:00:00 GMT");
        date.update(784_111_777);
        date.update(784_111_778);
        assert_eq!(date.as_str(), "Sun, 06 Nov 1994 08:49:38 GMT");
        date.update(0);
        assert_eq!(date.as_str(), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn civil_from_days_agrees_with_counting_days_one_by_one() {
        // An independent oracle: walk the calendar a day at a time with the
        // Gregorian leap rule, from 1970 through 2400.
        let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
        for days in 0..157_000u64 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let month_days = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > month_days {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
