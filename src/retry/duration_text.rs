//! Durations written by people: `250us`, `10ms`, `1.5s`, `2m`; a bare number is milliseconds.

use std::time::Duration;

/// Parses a human-written duration; `None` if it is not one (negative, NaN, unknown unit).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.trim().parse().ok()?;
    let seconds_per_unit = match unit.trim() {
        "" | "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "s" => 1.0,
        "m" | "min" => 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("10"), Some(Duration::from_millis(10)));
        assert_eq!(parse_duration("10ms"), Some(Duration::from_millis(10)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration(" 3 s "), Some(Duration::from_secs(3)));
    }

    #[test]
    fn rejects_nonsense() {
        for text in ["", "-1", "NaN", "10 parsecs", "ms", "inf"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }
}
