//! Business dates: days in China Standard Time (UTC+8), as Alipay's are.

/// Seconds east of UTC of China Standard Time.
pub const CST_OFFSET_SECONDS: i64 = 8 * 3600;
use ledger::NANOS_PER_SECOND;

use crate::units::Timestamp;

/// A calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// The CST date of a moment.
    pub fn of(moment: Timestamp) -> Date {
        Date::of_nanos(moment.nanos())
    }

    /// The CST date of a time in nanoseconds since the Unix epoch.
    pub fn of_nanos(nanos: u64) -> Date {
        let seconds = (nanos / NANOS_PER_SECOND) as i64 + CST_OFFSET_SECONDS;
        // Every u64 of nanoseconds is a second within the `time` crate's range.
        let date =
            time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH).date();
        Date::from(date)
    }

    /// `YYYY-MM-DD`, a date that exists.
    pub fn parse(text: &str) -> Option<Date> {
        // Four digits of year, no sign: what `[year]` alone would let through.
        if text.len() != 10 || !text.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format).ok().map(Date::from)
    }

    /// The first moment of the day (midnight CST), in nanoseconds since the
    /// Unix epoch (`None` before 1970).
    pub fn start_nanos(self) -> Option<u64> {
        let month = time::Month::try_from(self.month).ok()?;
        let date = time::Date::from_calendar_date(self.year, month, self.day).ok()?;
        let seconds = date.midnight().assume_utc().unix_timestamp() - CST_OFFSET_SECONDS;
        u64::try_from(seconds).ok()?.checked_mul(NANOS_PER_SECOND)
    }

    /// The day after.
    pub fn next_day(self) -> Option<Date> {
        let month = time::Month::try_from(self.month).ok()?;
        time::Date::from_calendar_date(self.year, month, self.day).ok()?.next_day().map(Date::from)
    }

    /// The first day of the month after this one.
    pub fn next_month(self) -> Date {
        if self.month == 12 {
            Date { year: self.year + 1, month: 1, day: 1 }
        } else {
            Date { year: self.year, month: self.month + 1, day: 1 }
        }
    }

    /// The month as one number (`year × 12 + month`), for monthly quotas.
    pub fn month_index(self) -> u32 {
        (self.year as u32) * 12 + u32::from(self.month)
    }
}

impl From<time::Date> for Date {
    fn from(date: time::Date) -> Date {
        Date { year: date.year(), month: u8::from(date.month()), day: date.day() }
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_eleven_midnight_in_beijing_is_still_the_tenth_in_utc() {
        // 2013-11-10T16:00:00Z is 2013-11-11T00:00:00+08:00.
        let nanos = 1_384_099_200 * NANOS_PER_SECOND;
        assert_eq!(Date::of_nanos(nanos), Date { year: 2013, month: 11, day: 11 });
        assert_eq!(Date::of_nanos(nanos - 1), Date { year: 2013, month: 11, day: 10 });
    }

    #[test]
    fn dates_far_apart_agree_with_the_civil_calendar() {
        // 1970-01-01 CST, midnight of 2000-03-01 CST (after a century's leap
        // day) and the second before it, and u64's last nanosecond.
        assert_eq!(Date::of_nanos(0), Date { year: 1970, month: 1, day: 1 });
        assert_eq!(Date::of_nanos(951_840_000 * NANOS_PER_SECOND), Date { year: 2000, month: 3, day: 1 });
        assert_eq!(Date::of_nanos(951_839_999 * NANOS_PER_SECOND), Date { year: 2000, month: 2, day: 29 });
        assert_eq!(Date::of_nanos(u64::MAX), Date { year: 2554, month: 7, day: 22 });
    }

    #[test]
    fn a_day_starts_at_midnight_in_beijing_and_months_roll_over() {
        let double_eleven = Date { year: 2013, month: 11, day: 11 };
        assert_eq!(double_eleven.start_nanos(), Some(1_384_099_200 * NANOS_PER_SECOND));
        assert_eq!(double_eleven.next_day(), Some(Date { year: 2013, month: 11, day: 12 }));
        assert_eq!(Date { year: 2013, month: 12, day: 31 }.next_day(), Some(Date { year: 2014, month: 1, day: 1 }));
        assert_eq!(double_eleven.next_month(), Date { year: 2013, month: 12, day: 1 });
        assert_eq!(Date { year: 2013, month: 12, day: 5 }.next_month(), Date { year: 2014, month: 1, day: 1 });
        assert_eq!(Date { year: 1970, month: 1, day: 1 }.start_nanos(), None, "before the epoch in UTC");
    }

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(Date::parse("2016-02-29"), Some(Date { year: 2016, month: 2, day: 29 }));
        for bad in ["2015-02-29", "2013-13-01", "2013-1-01", "2013-11-31", "", "x", "+2013-11-11", "2013-11-11 "] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert_eq!(Date::parse("2013-11-11").map(|d| d.to_string()).as_deref(), Some("2013-11-11"));
    }
}
