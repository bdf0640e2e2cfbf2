//! The spelling of names that programs match on: kind names and error
//! codes. Both are an ASCII lowercase letter, then lowercase letters,
//! digits and some punctuation, at most [`MAX_NAME_LENGTH`] bytes. Which
//! punctuation is the caller's choice (error codes allow `_`, kind names
//! also `-` and `.`), and so is the message that refuses a name.

/// The longest name, in bytes (a name is ASCII).
pub const MAX_NAME_LENGTH: usize = 64;

/// Whether `name` is a lowercase letter, then lowercase letters, digits and
/// characters of `punctuation`, at most [`MAX_NAME_LENGTH`] long.
pub fn is_lowercase_name(name: &str, punctuation: &[char]) -> bool {
    name.len() <= MAX_NAME_LENGTH
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || punctuation.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_start_with_a_lowercase_letter_and_use_the_callers_punctuation() {
        for good in ["a", "disk_full", "x9", &"a".repeat(MAX_NAME_LENGTH)] {
            assert!(is_lowercase_name(good, &['_']), "{good} was refused");
        }
        for bad in [
            "",
            "_a",
            "9a",
            "Disk",
            "disk-full",
            "é",
            &"a".repeat(MAX_NAME_LENGTH + 1),
        ] {
            assert!(!is_lowercase_name(bad, &['_']), "{bad} was accepted");
        }
        assert!(is_lowercase_name("image.resize-v2", &['_', '-', '.']));
        assert!(!is_lowercase_name("-resize", &['_', '-', '.']));
    }
}
