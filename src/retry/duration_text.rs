//! Durations written by people: `250us`, `10ms`, `1.5s`, `2m`; a bare number is milliseconds.
//! The same text in configuration files, through the serde adapters below.

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

/// Writes `duration` the way [`parse_duration`] reads it, in the largest unit that keeps it exact
/// to the microsecond (`10ms`, `1.5s`, `250us`).
pub fn format_duration(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros.is_multiple_of(1_000_000) && micros > 0 {
        format!("{}s", micros / 1_000_000)
    } else if micros >= 1_000_000 {
        format!("{}s", duration.as_secs_f64())
    } else if micros.is_multiple_of(1_000) {
        format!("{}ms", micros / 1_000)
    } else {
        format!("{micros}us")
    }
}

/// serde adapters: a duration is written as text (`"10ms"`); a bare number reads as milliseconds.
pub mod serde_duration {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Millis(f64),
    }

    fn parse<E: serde::de::Error>(text: Text) -> Result<Duration, E> {
        match text {
            Text::Text(text) => super::parse_duration(&text).ok_or_else(|| {
                E::custom(format!(
                    "{text:?} is not a duration (write it like 250us, 10ms, 1.5s, 2m)"
                ))
            }),
            Text::Millis(ms) => Duration::try_from_secs_f64(ms / 1e3)
                .map_err(|_| E::custom(format!("{ms} is not a duration in milliseconds"))),
        }
    }

    pub fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(Text::deserialize(d)?)
    }

    /// For `Option<Duration>` (`null` or absent is `None`).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<Text>::deserialize(d)?.map(parse).transpose()
        }
    }

    /// For `Vec<Duration>`.
    pub mod list {
        use super::*;

        pub fn serialize<S: Serializer>(durations: &[Duration], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(durations.iter().map(|d| super::super::format_duration(*d)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
            Vec::<Text>::deserialize(d)?
                .into_iter()
                .map(parse)
                .collect::<Result<_, D::Error>>()
                .map_err(D::Error::custom)
        }
    }
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
    fn formats_what_it_parses() {
        for ms in [1u64, 10, 250, 1000, 1500, 120_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Some(d), "{ms} ms");
        }
        assert_eq!(format_duration(Duration::from_micros(250)), "250us");
        assert_eq!(format_duration(Duration::from_millis(10)), "10ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
    }

    #[test]
    fn rejects_nonsense() {
        for text in ["", "-1", "NaN", "10 parsecs", "ms", "inf"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }
}
