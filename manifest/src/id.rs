//! Session secrets and stream ids: the broadcaster holds a secret, viewers hold the public stream
//! id, which is the lowercase hex SHA-1 of the secret's bytes.

use sha1::{Digest, Sha1};
use std::fmt;

/// Shortest accepted session secret (22 URL-safe characters carry at least 128 bits).
pub const SECRET_MIN_LEN: usize = 22;
/// Longest accepted session secret.
pub const SECRET_MAX_LEN: usize = 128;

/// What was wrong with a session secret or a stream id. Never contains the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    /// The secret's length is outside 22..=128.
    SecretLength(usize),
    /// The secret has a character outside `[A-Za-z0-9_-]`.
    SecretCharacter,
    /// A stream id that is not exactly 40 lowercase hex digits.
    StreamIdShape,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::SecretLength(len) => write!(
                f,
                "the session secret is {len} characters long; it must be {SECRET_MIN_LEN} to {SECRET_MAX_LEN} URL-safe characters (at least 128 random bits)"
            ),
            IdError::SecretCharacter => f.write_str(
                "the session secret may only use the characters A-Z, a-z, 0-9, '_' and '-'",
            ),
            IdError::StreamIdShape => {
                f.write_str("a stream id is exactly 40 lowercase hexadecimal characters")
            }
        }
    }
}

impl std::error::Error for IdError {}

/// A validated session secret. Its `Debug` output hides the value so it cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionSecret(String);

impl SessionSecret {
    /// Checks the shape: 22..=128 characters of `[A-Za-z0-9_-]`.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if !(SECRET_MIN_LEN..=SECRET_MAX_LEN).contains(&text.len()) {
            return Err(IdError::SecretLength(text.chars().count()));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(IdError::SecretCharacter);
        }
        Ok(SessionSecret(text.to_owned()))
    }

    /// The public stream id of this secret.
    pub fn stream_id(&self) -> StreamId {
        let digest = Sha1::digest(self.0.as_bytes());
        StreamId(hex::encode(digest))
    }
}

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(..)")
    }
}

/// A public stream id: 40 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    /// Accepts exactly 40 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if text.len() == 40 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(StreamId(text.to_owned()))
        } else {
            Err(IdError::StreamIdShape)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex SHA-1 of some bytes (segment bodies are identified by it).
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_is_lowercase_hex_sha1_of_the_secret() {
        let secret = SessionSecret::parse("abcdefghijklmnopqrstuv").unwrap();
        // sha1("abcdefghijklmnopqrstuv"), computed independently with `sha1sum`.
        assert_eq!(secret.stream_id().as_str(), "c436f0485bf34625ff7764ead634bccd875b514d");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(StreamId::parse(secret.stream_id().as_str()).is_ok());
    }

    #[test]
    fn sha1_hex_is_forty_lowercase_digits_with_leading_zeros_kept() {
        // Bytes below 0x10 (0x0d, 0x07, 0x09 here) keep their leading zero; digits are lowercase.
        // Computed independently with `sha1sum`.
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            sha1_hex(b"The quick brown fox jumps over the lazy dog"),
            "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
        );
        for text in ["", "abc", "The quick brown fox jumps over the lazy dog"] {
            let hex = sha1_hex(text.as_bytes());
            assert_eq!(hex.len(), 40, "{text:?}");
            assert!(StreamId::parse(&hex).is_ok(), "{text:?}: {hex}");
        }
    }

    #[test]
    fn secrets_must_be_22_to_128_url_safe_characters() {
        assert!(SessionSecret::parse(&"a".repeat(22)).is_ok());
        assert!(SessionSecret::parse(&"A-_9".repeat(32)).is_ok());
        assert_eq!(SessionSecret::parse(&"a".repeat(21)), Err(IdError::SecretLength(21)));
        assert_eq!(SessionSecret::parse(&"a".repeat(129)), Err(IdError::SecretLength(129)));
        assert_eq!(SessionSecret::parse(&format!("{}.", "a".repeat(22))), Err(IdError::SecretCharacter));
        assert_eq!(SessionSecret::parse(&format!("{}%2F", "a".repeat(22))), Err(IdError::SecretCharacter));
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let text = "Zz9_secretsecretsecret!";
        let err = SessionSecret::parse(text).unwrap_err();
        assert!(!err.to_string().contains("secretsecret"));
        let ok = SessionSecret::parse("Zz9_secretsecretsecret").unwrap();
        assert!(!format!("{ok:?}").contains("secretsecret"));
    }

    #[test]
    fn stream_ids_are_exactly_40_lowercase_hex() {
        assert!(StreamId::parse(&"0".repeat(40)).is_ok());
        assert!(StreamId::parse(&"a".repeat(39)).is_err());
        assert!(StreamId::parse(&"A".repeat(40)).is_err());
        assert!(StreamId::parse(&"g".repeat(40)).is_err());
        assert!(StreamId::parse(&"a".repeat(41)).is_err());
    }
}
