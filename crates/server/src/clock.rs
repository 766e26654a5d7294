//! The platform's clock, injected: real time by default, or simulated time
//! that only the admin moves (`POST /v1/admin/clock`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use platform::Timestamp;

pub enum Clock {
    Real,
    /// Nanoseconds since the Unix epoch.
    Simulated(AtomicU64),
}

impl Clock {
    pub fn simulated(start_nanos: u64) -> Clock {
        Clock::Simulated(AtomicU64::new(start_nanos))
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_nanos(match self {
            Clock::Real => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
            Clock::Simulated(now) => now.load(Ordering::SeqCst),
        })
    }

    pub fn is_simulated(&self) -> bool {
        matches!(self, Clock::Simulated(_))
    }

    /// Sets simulated time (never backwards); `None` for the real clock.
    pub fn set(&self, moment: Timestamp) -> Option<Timestamp> {
        let nanos = moment.nanos();
        match self {
            Clock::Real => None,
            Clock::Simulated(now) => Some(Timestamp::from_nanos(now.fetch_max(nanos, Ordering::SeqCst).max(nanos))),
        }
    }

    /// Moves simulated time forward; `None` for the real clock.
    pub fn advance(&self, nanos: u64) -> Option<Timestamp> {
        match self {
            Clock::Real => None,
            Clock::Simulated(now) => {
                Some(Timestamp::from_nanos(now.fetch_add(nanos, Ordering::SeqCst).saturating_add(nanos)))
            }
        }
    }
}

/// RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(moment: Timestamp) -> String {
    let nanos = moment.nanos();
    let seconds = (nanos / 1_000_000_000) as i64;
    let millis = (nanos / 1_000_000 % 1_000) as u32;
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(moment) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            moment.year(),
            u8::from(moment.month()),
            moment.day(),
            moment.hour(),
            moment.minute(),
            moment.second()
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Parses RFC 3339 (any offset) to nanoseconds since the Unix epoch,
/// clamped to what the clock can count (1970 to 2554).
pub fn parse_rfc3339_clamped(text: &str) -> Option<Timestamp> {
    let moment = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(Timestamp::from_nanos(u64::try_from(moment.unix_timestamp_nanos().max(0)).unwrap_or(u64::MAX)))
}

/// Parses RFC 3339 (any offset) to nanoseconds since the Unix epoch.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let moment = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(moment.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_eleven_in_beijing_formats_in_utc() {
        let nanos = parse_rfc3339("2013-11-11T00:00:00+08:00").unwrap_or(0);
        assert_eq!(rfc3339(Timestamp::from_nanos(nanos)), "2013-11-10T16:00:00.000Z");
        assert_eq!(parse_rfc3339("not a time"), None);
    }
}
