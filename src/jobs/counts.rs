//! Counts as JSON writes them: a whole number from 0 to 2^64 - 1, which a
//! client may spell `2` or `2.0` (JSON Schema calls both integers, so a
//! client validating against a schema sends either). Progress reports and
//! the demo's params read their counts through here; a lower cap on a
//! count is its caller's check.

use serde::de::Error;
use serde::{Deserialize, Deserializer};
use serde_json::Number;

/// A count, for serde's `deserialize_with`.
pub fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    count(Number::deserialize(deserializer)?)
}

/// A count that may be left out or `null`, for serde's `deserialize_with`.
pub fn optional_whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Option::<Number>::deserialize(deserializer)?.map(count).transpose()
}

fn count<E: Error>(number: Number) -> Result<u64, E> {
    if let Some(whole) = number.as_u64() {
        return Ok(whole);
    }
    match number.as_f64() {
        // 2^64 itself is the first float past u64::MAX.
        Some(float) if float.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&float) => Ok(float as u64),
        _ => Err(E::custom(format!(
            "{number} is not a whole number from 0 to {}",
            u64::MAX
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::whole_number;

    fn read(json: &str) -> Result<u64, serde_json::Error> {
        whole_number(&mut serde_json::Deserializer::from_str(json))
    }

    #[test]
    fn counts_are_whole_numbers_within_u64() {
        assert_eq!(read("2.0").unwrap(), 2);
        assert_eq!(read("1e3").unwrap(), 1000);
        assert_eq!(read("18446744073709551615").unwrap(), u64::MAX);
        for bad in [
            "18446744073709551616",
            "1.8446744073709552e19",
            "2.5",
            "-1",
            "\"3\"",
            "null",
        ] {
            assert!(read(bad).is_err(), "{bad} was accepted");
        }
    }
}
