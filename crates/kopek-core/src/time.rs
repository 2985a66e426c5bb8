//! `Timestamp`: microseconds since the Unix epoch, with RFC 3339 formatting and parsing.
//!
//! The core never reads a clock: every timestamp arrives as an argument.

use std::fmt;

/// A UTC instant in whole microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// Years outside 0001..=9999 cannot be written in RFC 3339.
const MICROS_MIN: i64 = -62_135_596_800 * MICROS_PER_SECOND;
const MICROS_MAX: i64 = 253_402_300_799 * MICROS_PER_SECOND + 999_999;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeParseError(pub String);

impl fmt::Display for TimeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub fn from_unix_micros(micros: i64) -> Timestamp {
        Timestamp(micros.clamp(MICROS_MIN, MICROS_MAX))
    }

    pub fn as_unix_micros(self) -> i64 {
        self.0
    }

    pub fn add_seconds(self, seconds: u32) -> Timestamp {
        Timestamp::from_unix_micros(self.0.saturating_add(i64::from(seconds) * MICROS_PER_SECOND))
    }

    /// `2026-11-21T06:41:05.123456Z`: always six fractional digits, so strings sort as times.
    pub fn to_rfc3339(self) -> String {
        let seconds = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let days = seconds.div_euclid(SECONDS_PER_DAY);
        let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (hour, minute, second) =
            (second_of_day / 3_600, second_of_day % 3_600 / 60, second_of_day % 60);
        if !(0..=9_999).contains(&year) {
            return format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
            );
        }
        // Every event document carries several times: written digit by digit, not through
        // the formatting machinery.
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for place in (at..at + width).rev() {
                text[place] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, hour);
        put(14, 2, minute);
        put(17, 2, second);
        put(20, 6, micros);
        text.iter().map(|byte| char::from(*byte)).collect()
    }

    /// Parses `YYYY-MM-DD[T| ]HH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]`. A time without an offset
    /// is UTC. Fractions beyond microseconds are truncated.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimeParseError> {
        let error = || TimeParseError(format!("'{}' is not an RFC 3339 date-time", truncate(text)));
        let bytes = text.as_bytes();
        if bytes.len() < 19 || bytes.len() > 64 {
            return Err(error());
        }
        let number = |range: std::ops::Range<usize>| -> Result<i64, TimeParseError> {
            let part = &bytes[range];
            if part.iter().all(u8::is_ascii_digit) {
                Ok(part.iter().fold(0, |acc, digit| acc * 10 + i64::from(digit - b'0')))
            } else {
                Err(error())
            }
        };
        let separators_ok = bytes[4] == b'-'
            && bytes[7] == b'-'
            && matches!(bytes[10], b'T' | b't' | b' ')
            && bytes[13] == b':'
            && bytes[16] == b':';
        if !separators_ok {
            return Err(error());
        }
        let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
        let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
        if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(error());
        }
        // A leap second (60) is accepted and folded into the next second's start.
        if hour > 23 || minute > 59 || second > 60 {
            return Err(error());
        }
        let mut index = 19;
        let mut micros = 0;
        if index < bytes.len() && bytes[index] == b'.' {
            index += 1;
            let start = index;
            while index < bytes.len() && bytes[index].is_ascii_digit() {
                if index - start < 6 {
                    micros = micros * 10 + i64::from(bytes[index] - b'0');
                }
                index += 1;
            }
            let digits = index - start;
            if digits == 0 || digits > 9 {
                return Err(error());
            }
            for _ in digits..6 {
                micros *= 10;
            }
        }
        let offset_seconds = match &bytes[index..] {
            [] | [b'Z'] | [b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let hours = number(index + 1..index + 3)?;
                let minutes = number(index + 4..index + 6)?;
                if hours > 23 || minutes > 59 {
                    return Err(error());
                }
                let offset = hours * 3_600 + minutes * 60;
                if *sign == b'-' { -offset } else { offset }
            }
            _ => return Err(error()),
        };
        let days = days_from_civil(year, month, day);
        let seconds = days * SECONDS_PER_DAY + hour * 3_600 + minute * 60 + second - offset_seconds;
        let total = seconds * MICROS_PER_SECOND + micros;
        if !(MICROS_MIN..=MICROS_MAX).contains(&total) {
            return Err(error());
        }
        Ok(Timestamp(total))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_and_parses_known_instants() {
        let t = Timestamp::parse_rfc3339("2023-01-04T00:00:00").expect("naive time");
        assert_eq!(t.as_unix_micros(), 1_672_790_400_000_000);
        assert_eq!(t.to_rfc3339(), "2023-01-04T00:00:00.000000Z");
        let offset = Timestamp::parse_rfc3339("2023-01-04T02:30:00.5+02:30").expect("offset");
        assert_eq!(offset.as_unix_micros(), 1_672_790_400_500_000);
        let nanos = Timestamp::parse_rfc3339("2023-01-30T00:00:00.00000000").expect("nanos");
        assert_eq!(nanos.to_rfc3339(), "2023-01-30T00:00:00.000000Z");
        assert_eq!(Timestamp::EPOCH.to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        let before = Timestamp::from_unix_micros(-1);
        assert_eq!(before.to_rfc3339(), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn rejects_malformed_times() {
        for text in [
            "",
            "2023-01-04",
            "2023-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-01-04T24:00:00Z",
            "2023-01-04T00:00:00.Z",
            "2023-01-04T00:00:00.1234567890Z",
            "2023-01-04T00:00:00+0100",
            "2023-01-04T00:00:00Zjunk",
            "yyyy-01-04T00:00:00Z",
        ] {
            assert!(Timestamp::parse_rfc3339(text).is_err(), "{text:?} must be rejected");
        }
    }

    proptest! {
        #[test]
        fn rfc3339_round_trips(micros in MICROS_MIN..=MICROS_MAX) {
            let t = Timestamp::from_unix_micros(micros);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Ok(t));
        }
    }
}
