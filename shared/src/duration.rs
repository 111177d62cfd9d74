//! Human-readable durations in the configuration file (`"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`).
//!
//! Only whole numbers with one unit are accepted, so a value reads the same to every operator;
//! there is no fractional or compound form.

use std::time::Duration;

/// Parses `"<n><unit>"` where unit is `ms`, `s`, `m`, `h` or `d`.
///
/// # Errors
///
/// A message saying what form is expected, when `raw` is not of that form or overflows.
pub fn parse(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{raw}` has no unit; write e.g. \"30s\", \"500ms\", \"5m\", \"2h\", \"7d\""))?;
    let (digits, unit) = raw.split_at(split);
    let amount: u64 = digits.parse().map_err(|_| format!("`{raw}` does not start with a whole number"))?;
    let unit_millis: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!("`{raw}` has unknown unit `{unit}`; use ms, s, m, h or d"));
        }
    };
    amount.checked_mul(unit_millis).map(Duration::from_millis).ok_or_else(|| format!("`{raw}` is too large"))
}

/// Formats a duration in the largest unit that represents it exactly (inverse of [`parse`]).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis != 0 && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// Serde adapter: `#[serde(with = "inlet_shared::duration::serde_str")]`.
pub mod serde_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Deserializes from the string form.
    ///
    /// # Errors
    ///
    /// When the string is not a valid duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let raw = String::deserialize(deserializer)?;
        super::parse(&raw).map_err(serde::de::Error::custom)
    }

    /// Serializes to the string form.
    ///
    /// # Errors
    ///
    /// Only those of the serializer.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*value))
    }
}

/// Serde adapter for a list of durations (retry schedules).
pub mod serde_str_list {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    /// Deserializes a list of duration strings.
    ///
    /// # Errors
    ///
    /// When any element is not a valid duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
        let raw = Vec::<String>::deserialize(deserializer)?;
        raw.iter().map(|item| super::parse(item).map_err(serde::de::Error::custom)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["", "30", "s", "1.5s", "-1s", "3 weeks", "10y", "99999999999999999999d"] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn format_roundtrips() {
        for text in ["250ms", "30s", "5m", "2h", "7d", "1500ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
    }
}
