//! Session secrets: 32 random bytes in base64url. The public stream id is derived from the
//! secret by `chalkstream_manifest::id`, the server's own rule.

use chalkstream_manifest::id::SessionSecret;

/// Encodes bytes as unpadded base64url (RFC 4648 §5).
pub fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The session secret for 32 random bytes.
pub fn session_secret(random: &[u8; 32]) -> String {
    base64url(random)
}

/// The public stream id of a session secret the extension made (manifest's derivation).
pub fn stream_id(session: &str) -> Result<String, String> {
    SessionSecret::parse(session)
        .map(|s| s.stream_id().to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn secret_is_43_url_safe_chars_and_id_is_sha1_hex() {
        let s = session_secret(&[7; 32]);
        assert_eq!(s.len(), 43);
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        // The server's rule accepts it, and the id is the SHA-1 of its bytes.
        assert_eq!(
            stream_id("abcdefghijklmnopqrstuv").unwrap(),
            "c436f0485bf34625ff7764ead634bccd875b514d"
        );
        assert_eq!(stream_id(&s).unwrap().len(), 40);
        assert!(stream_id("abc").is_err(), "too short to be a secret");
    }
}
