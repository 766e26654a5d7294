//! Business dates: days in China Standard Time (UTC+8), as Alipay's are.

/// Seconds east of UTC of China Standard Time.
pub const CST_OFFSET_SECONDS: i64 = 8 * 3600;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// The CST date of a time in nanoseconds since the Unix epoch.
    pub fn of_nanos(nanos: u64) -> Date {
        let seconds = (nanos / NANOS_PER_SECOND) as i64 + CST_OFFSET_SECONDS;
        civil_from_days(seconds.div_euclid(86_400))
    }

    /// `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Date> {
        let mut parts = text.splitn(3, '-');
        let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
        if year.len() != 4 || month.len() != 2 || day.len() != 2 {
            return None;
        }
        let date = Date { year: year.parse().ok()?, month: month.parse().ok()?, day: day.parse().ok()? };
        (1..=12).contains(&date.month).then_some(())?;
        (date.day >= 1 && date.day <= days_in_month(date.year, date.month)).then_some(date)
    }

    /// The month as one number (`year × 12 + month`), for monthly quotas.
    pub fn month_index(self) -> u32 {
        (self.year as u32) * 12 + u32::from(self.month)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to a date.
fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u8;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u8;
    let year = (year_of_era + era * 400 + i64::from(month <= 2)) as i32;
    Date { year, month, day }
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
    fn dates_parse_strictly() {
        assert_eq!(Date::parse("2016-02-29"), Some(Date { year: 2016, month: 2, day: 29 }));
        for bad in ["2015-02-29", "2013-13-01", "2013-1-01", "2013-11-31", "", "x"] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        assert_eq!(Date::parse("2013-11-11").map(|d| d.to_string()).as_deref(), Some("2013-11-11"));
    }
}
