//! API keys: the `--auth-keys` file, which holds each key's SHA-256 hash,
//! subject and role, never a key itself; and the lookup of a presented key.
//!
//! A presented key is hashed and its hash compared with every stored one in
//! constant time, without stopping at a match, so that neither the answer's
//! time nor its content tells how close a guess came, or whether it matched.

use std::path::Path;
use std::sync::Arc;

use ring::digest::{digest, SHA256};
use serde::Deserialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::principal::{Principal, Role};
use super::SetupError;

/// The longest key looked up; anything longer is no key of ours.
const MAX_KEY_LEN: usize = 512;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    subject: String,
    role: Role,
    /// The key's SHA-256, 64 hex digits.
    sha256: String,
}

/// The known keys' hashes and whose they are.
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
    principals: Vec<Principal>,
}

impl ApiKeys {
    /// Reads the keys file; any unreadable or malformed entry stops the server.
    pub fn load(path: &Path) -> Result<Self, SetupError> {
        let bad = |reason: String| SetupError::KeysFile {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|error| bad(error.to_string()))?;
        let file: KeysFile = toml::from_str(&text).map_err(|error| bad(error.message().to_owned()))?;
        let mut keys = ApiKeys {
            hashes: Vec::new(),
            principals: Vec::new(),
        };
        for entry in file.key {
            if entry.subject.is_empty() {
                return Err(bad("a key has an empty subject".to_owned()));
            }
            let hash = parse_hash(&entry.sha256)
                .ok_or_else(|| bad(format!("the sha256 of {:?}'s key is not 64 hex digits", entry.subject)))?;
            if keys.hashes.contains(&hash) {
                return Err(bad(format!("{:?}'s key is listed twice", entry.subject)));
            }
            keys.hashes.push(hash);
            keys.principals.push(Principal {
                subject: Arc::from(entry.subject),
                role: entry.role,
            });
        }
        if keys.hashes.is_empty() {
            return Err(bad("it lists no [[key]]".to_owned()));
        }
        Ok(keys)
    }

    /// The principal whose key this is, if any.
    pub fn find(&self, key: &str) -> Option<&Principal> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return None;
        }
        let presented = digest(&SHA256, key.as_bytes());
        let mut found = 0u32;
        let mut any = subtle::Choice::from(0);
        for (index, stored) in self.hashes.iter().enumerate() {
            let equal = stored.as_slice().ct_eq(presented.as_ref());
            found.conditional_assign(&(index as u32), equal);
            any |= equal;
        }
        bool::from(any).then(|| &self.principals[found as usize])
    }
}

/// 64 hex digits as 32 bytes.
fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(hex.chunks(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn keys(entries: &[(&str, &str)]) -> ApiKeys {
        let dir = std::env::temp_dir().join(format!("jobcast-keys-{}", uuid::Uuid::new_v4()));
        let text: String = entries
            .iter()
            .map(|(subject, key)| {
                format!(
                    "[[key]]\nsubject = \"{subject}\"\nrole = \"user\"\nsha256 = \"{}\"\n",
                    hex(digest(&SHA256, key.as_bytes()).as_ref())
                )
            })
            .collect();
        std::fs::write(&dir, text).unwrap();
        let keys = ApiKeys::load(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        keys
    }

    #[test]
    fn a_key_is_found_by_its_hash_and_nothing_else_is() {
        let keys = keys(&[("alice", "alice-key-0123456789"), ("bob", "bob-key-0123456789")]);
        assert_eq!(&*keys.find("bob-key-0123456789").unwrap().subject, "bob");
        assert_eq!(&*keys.find("alice-key-0123456789").unwrap().subject, "alice");
        for wrong in ["", "bob-key-012345678", "bob-key-01234567890", &"x".repeat(100_000)] {
            assert!(keys.find(wrong).is_none(), "{wrong:.20}");
        }
        let hash_itself = hex(digest(&SHA256, b"bob-key-0123456789").as_ref());
        assert!(keys.find(&hash_itself).is_none(), "the stored hash is not a key");
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65)] {
            assert!(parse_hash(bad).is_none(), "{bad}");
        }
        assert_eq!(parse_hash(&"0f".repeat(32)), Some([0x0f; 32]));
    }
}
