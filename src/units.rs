//! Sizes and durations as users write them: `500M`, `10G`, `2GiB`, `1024`
//! (powers of 1024), rates as sizes per second (`2M` is 2 MiB/s) and `90s`,
//! `30m`, `12h`, `7d`, `2w`. Parsing only; the
//! flags (clap value parsers) and environment variables that take them live in
//! [`crate::cli`]. Errors quote the value and say what was expected.

use std::num::NonZeroU64;
use std::time::Duration;

/// Why a size or duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("{0:?} is not a duration such as 90s, 30m, 12h, 7d or 2w")]
    NotADuration(String),
    #[error("{0:?}: the unit of a duration must be s, m, h, d or w")]
    DurationUnit(String),
    #[error("{0:?} is too long")]
    DurationTooLong(String),
    #[error("{0:?} is not a size such as 500M or 10G")]
    NotASize(String),
    #[error("{0:?}: the unit of a size must be K, M, G or T")]
    SizeUnit(String),
    #[error("{0:?} is out of range")]
    SizeOutOfRange(String),
    #[error("{0:?} is not a rate such as 500K or 2M (bytes per second)")]
    NotARate(String),
    #[error("{0:?} is no rate: give bytes per second above 0, such as 500K or 2M")]
    ZeroRate(String),
}

/// Parses `90s`, `30m`, `12h`, `7d`, `2w` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| UnitError::NotADuration(s.to_string()))?;
    let secs = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(UnitError::DurationUnit(s.to_string())),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| UnitError::DurationTooLong(s.to_string()))
}

/// Parses `500M`, `10G`, `1.5T`, `2GiB`, `3 MB`, `1024` (bytes); units are
/// powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| UnitError::NotASize(s.to_string()))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(UnitError::SizeUnit(s.to_string())),
    };
    let bytes = n * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(UnitError::SizeOutOfRange(s.to_string()));
    }
    Ok(bytes as u64)
}

/// Parses a rate in bytes per second, written as a size (`2M` is 2 MiB/s,
/// `1024` is 1 KiB/s); less than one byte per second is refused.
pub fn parse_rate(s: &str) -> Result<NonZeroU64, UnitError> {
    let bytes = parse_size(s).map_err(|e| match e {
        UnitError::NotASize(v) => UnitError::NotARate(v),
        other => other,
    })?;
    NonZeroU64::new(bytes).ok_or_else(|| UnitError::ZeroRate(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("2W"), Ok(Duration::from_secs(1_209_600)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration(" 12 h "), Ok(Duration::from_secs(43_200)));
        for bad in ["", "d", "7y", "-1d", "1.5h", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("7y"),
            Err(UnitError::DurationUnit("7y".into()))
        );
        assert_eq!(
            parse_duration("3000000000000000w"),
            Err(UnitError::DurationTooLong("3000000000000000w".into()))
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("3 MB"), Ok(3 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "G", "10X", "1e99T", "-5M"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("10X"), Err(UnitError::SizeUnit("10X".into())));
        assert_eq!(
            parse_size("99999999999T"),
            Err(UnitError::SizeOutOfRange("99999999999T".into()))
        );
    }

    #[test]
    fn rates() {
        let rate = |s| parse_rate(s).map(NonZeroU64::get);
        assert_eq!(rate("2M"), Ok(2 << 20));
        assert_eq!(rate("500K"), Ok(500 << 10));
        assert_eq!(rate("1g"), Ok(1 << 30));
        assert_eq!(rate("1T"), Ok(1 << 40));
        assert_eq!(rate("100"), Ok(100));
        assert_eq!(rate("1.5K"), Ok(1536));
        for zero in ["0", "0K", "0.1", " 0 "] {
            assert_eq!(rate(zero), Err(UnitError::ZeroRate(zero.into())), "{zero}");
        }
        for bad in ["", "fast", "-1M", "M"] {
            assert_eq!(rate(bad), Err(UnitError::NotARate(bad.into())), "{bad}");
        }
        assert_eq!(rate("2X"), Err(UnitError::SizeUnit("2X".into())));
        let e = parse_rate("0").unwrap_err().to_string();
        assert!(e.starts_with("\"0\" is no rate"), "{e}");
    }

    #[test]
    fn messages_quote_the_value() {
        let e = parse_size("lots").unwrap_err().to_string();
        assert_eq!(e, "\"lots\" is not a size such as 500M or 10G");
        let e = parse_duration("soon").unwrap_err().to_string();
        assert!(e.starts_with("\"soon\" is not a duration"), "{e}");
    }
}
