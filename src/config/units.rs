//! Quantities written as strings with units: sizes, durations, percentages.

use super::error::{ConfigValue, ValueError};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A size in bytes, written with a unit: "512MiB", "8GiB", "1.5GiB", "100GB".
///
/// Binary units B, KiB, MiB, GiB, TiB (powers of 1024) and decimal units kB,
/// MB, GB, TB (powers of 1000). A decimal fraction is allowed when the result
/// is a whole number of bytes. Displayed with the largest binary unit that
/// divides it exactly ("1.5GiB" displays as "1536MiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

impl Size {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = |reason: &str| ValueError::new("size", s, reason);
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        let (number, unit) = s.split_at(split);
        let unit = unit.trim_start_matches(' ');
        let (_, mult) = SIZE_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .ok_or_else(|| err(&format!("unknown unit {unit:?}")))?;
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("expected a number before the unit"));
        }
        let int: u128 = int.parse().map_err(|_| err("number too large"))?;
        let frac_num: u128 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| err("bad fraction"))?
        };
        let scale = 10u128.pow(frac.len() as u32);
        let frac_bytes = frac_num * u128::from(*mult);
        if frac_bytes % scale != 0 {
            return Err(err("not a whole number of bytes"));
        }
        let total = int * u128::from(*mult) + frac_bytes / scale;
        u64::try_from(total).map(Size).map_err(|_| err("too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 != 0 && self.0 % mult == 0 {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl ConfigValue for Size {
    const HINT: &'static str =
        "write a number and a unit, e.g. \"512MiB\", \"8GiB\" or \"1.5TiB\" \
        (units: B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)";
}

/// A duration written with units: "500ms", "90s", "10m", "1h30m", "2d".
///
/// One or more `<integer><unit>` parts, units ms, s, m, h, d, largest first
/// by convention (any order is accepted). Displayed in the canonical
/// largest-first form, "0s" for zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

const DURATION_UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl FromStr for HumanDuration {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let err = |reason: &str| ValueError::new("duration", s, reason);
        if s.is_empty() {
            return Err(err("empty"));
        }
        let mut rest = s;
        let mut millis: u64 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(err("expected a whole number before each unit"));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            if unit.is_empty() {
                return Err(err("missing unit"));
            }
            let (_, mult) = DURATION_UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .ok_or_else(|| err(&format!("unknown unit {unit:?}")))?;
            millis = n
                .checked_mul(*mult)
                .and_then(|v| millis.checked_add(v))
                .ok_or_else(|| err("too large"))?;
            rest = &rest[unit_len..];
        }
        Ok(HumanDuration(Duration::from_millis(millis)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return write!(f, "0s");
        }
        for (unit, mult) in DURATION_UNITS {
            if millis >= *mult {
                write!(f, "{}{unit}", millis / mult)?;
                millis %= mult;
            }
        }
        Ok(())
    }
}

impl ConfigValue for HumanDuration {
    const HINT: &'static str =
        "write whole numbers with units ms, s, m, h, d, e.g. \"500ms\", \"90s\", \"10m\" or \"1h30m\"";
}

/// A whole-number percentage: "60%".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(pub u32);

impl FromStr for Percent {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let digits = s
            .strip_suffix('%')
            .ok_or_else(|| ValueError::new("percentage", s, "missing '%'"))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValueError::new(
                "percentage",
                s,
                "expected a whole number before '%'",
            ));
        }
        digits
            .parse()
            .map(Percent)
            .map_err(|_| ValueError::new("percentage", s, "too large"))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl ConfigValue for Percent {
    const HINT: &'static str = "write a whole number followed by %, e.g. \"60%\"";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_round_trip() {
        let cases = [
            ("8GiB", 8u64 << 30, "8GiB"),
            ("512MiB", 512 << 20, "512MiB"),
            ("1.5GiB", 1536 << 20, "1536MiB"),
            ("100GB", 100_000_000_000, "97656250KiB"),
            ("4 KiB", 4096, "4KiB"),
            ("0B", 0, "0B"),
            ("1TiB", 1 << 40, "1TiB"),
            ("3kB", 3000, "3000B"),
        ];
        for (text, bytes, shown) in cases {
            let size: Size = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(size.bytes(), bytes, "{text}");
            assert_eq!(size.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<Size>(), Ok(size), "{shown} round trip");
        }
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for text in [
            "8",
            "8GiBs",
            "8gb",
            "GiB",
            "",
            "0.1B",
            "1.2.3GiB",
            "99999999999TiB",
            "-1GiB",
        ] {
            assert!(text.parse::<Size>().is_err(), "{text:?} should fail");
        }
        let err = "8Gb".parse::<Size>().unwrap_err();
        assert_eq!(err.to_string(), "invalid size \"8Gb\": unknown unit \"Gb\"");
    }

    #[test]
    fn durations_parse_and_round_trip() {
        let cases = [
            ("90s", 90_000u64, "1m30s"),
            ("10m", 600_000, "10m"),
            ("1h30m", 5_400_000, "1h30m"),
            ("500ms", 500, "500ms"),
            ("2d", 172_800_000, "2d"),
            ("0s", 0, "0s"),
            ("1s500ms", 1500, "1s500ms"),
        ];
        for (text, millis, shown) in cases {
            let d: HumanDuration = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(d.0, Duration::from_millis(millis), "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
            assert_eq!(shown.parse::<HumanDuration>(), Ok(d), "{shown} round trip");
        }
        for text in ["", "10", "s", "1.5s", "10 m", "5y", "m10"] {
            assert!(
                text.parse::<HumanDuration>().is_err(),
                "{text:?} should fail"
            );
        }
    }

    #[test]
    fn percents_parse_and_round_trip() {
        assert_eq!("60%".parse::<Percent>(), Ok(Percent(60)));
        assert_eq!(Percent(250).to_string(), "250%");
        assert_eq!("250%".parse::<Percent>(), Ok(Percent(250)));
        for text in ["60", "%", "6.5%", "-1%", "x%"] {
            assert!(text.parse::<Percent>().is_err(), "{text:?} should fail");
        }
    }
}
