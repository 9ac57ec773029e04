//! Webhook signatures: [Standard Webhooks](https://www.standardwebhooks.com/) v1.
//!
//! Every request carries three headers:
//!
//! - `webhook-id`: the alert's id (the same value as `ce-id`; retries and replays reuse it);
//! - `webhook-timestamp`: unix seconds when this attempt was signed;
//! - `webhook-signature` (only when `crm.secret` is set): `v1,` + base64 of
//!   HMAC-SHA256(key, `"{webhook-id}.{webhook-timestamp}.{body}"`).
//!
//! The id, the timestamp and the body are all signed, so neither a captured request replayed with
//! a fresh timestamp nor a body moved under another id verifies. Receivers reject timestamps
//! outside a tolerance window (e.g. 5 minutes) and de-duplicate by the id. Each attempt (retries
//! included) is signed anew with its own timestamp.
//!
//! The key: a secret of the form `whsec_<base64>` (what Standard Webhooks tooling generates and
//! verifies) is the base64-decoded bytes after the prefix; any other secret is used as its UTF-8
//! bytes. The official Standard Webhooks libraries (`standardwebhooks` for Python, JavaScript,
//! Go, Rust, …) verify these requests with a `whsec_` secret.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header holding the message id (the alert id).
pub const ID_HEADER: &str = "webhook-id";
/// Header holding the unix time (seconds) the request was signed at.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Header holding the signature(s): space-separated `v1,<base64>` entries.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Version prefix of a signature entry.
pub const SCHEME: &str = "v1,";
/// Prefix of a base64-encoded secret.
pub const SECRET_PREFIX: &str = "whsec_";

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key of a configured secret: `whsec_<base64>` is decoded, anything else is taken as
/// its bytes. An empty key or a `whsec_` secret that is not base64 is an error (named, without
/// the secret).
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let key = match secret.strip_prefix(SECRET_PREFIX) {
        Some(b64) => BASE64.decode(b64.trim()).map_err(|e| {
            format!("crm.secret starts with `{SECRET_PREFIX}` but the rest is not base64 ({e})")
        })?,
        None => secret.as_bytes().to_vec(),
    };
    if key.is_empty() {
        return Err("crm.secret gives an empty signing key".into());
    }
    Ok(key)
}

/// Lower-case hex of HMAC-SHA256(`key`, `message`).
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = keyed(key);
    mac.update(message);
    hex(&mac.finalize().into_bytes())
}

fn signed(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = keyed(key);
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value for `body` of message `id` sent at `timestamp` (unix seconds):
/// `v1,` + base64 HMAC-SHA256(key, `"{id}.{timestamp}.{body}"`).
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = signed(key, id, timestamp, body);
    format!("{SCHEME}{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Why a signature was not accepted by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no `v1,<base64>` signature in the header")]
    Malformed,
    #[error("timestamp {timestamp} is more than {tolerance_s} s away from now ({now})")]
    Stale {
        timestamp: i64,
        now: i64,
        tolerance_s: i64,
    },
    #[error("signature mismatch")]
    Mismatch,
}

/// Receiver side of [`sign`]: checks the timestamp is within `tolerance_s` of `now` and that one
/// of the header's space-separated `v1,` signatures matches (constant-time comparison; entries
/// of other versions are ignored, as the specification says).
pub fn verify(
    key: &[u8],
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let given: Vec<Vec<u8>> = header
        .split_whitespace()
        .filter_map(|e| e.strip_prefix(SCHEME))
        .filter_map(|b| BASE64.decode(b).ok())
        .collect();
    if given.is_empty() {
        return Err(VerifyError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_s.unsigned_abs() {
        return Err(VerifyError::Stale {
            timestamp,
            now,
            tolerance_s,
        });
    }
    let mac = signed(key, id, timestamp, body);
    if given.iter().any(|g| mac.clone().verify_slice(g).is_ok()) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length (longer ones are hashed first), so this cannot fail.
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test cases 1 and 2 (HMAC-SHA-256).
    #[test]
    fn rfc4231_test_vectors() {
        assert_eq!(
            hmac_sha256_hex(&[0x0b; 20], b"Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// The Standard Webhooks reference vector (the official libraries' test suites use it;
    /// recomputed with Python's hmac and base64 modules).
    #[test]
    fn standard_webhooks_reference_vector() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("key");
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_whsec_is_decoded_anything_else_is_bytes() {
        assert_eq!(signing_key("s3cret"), Ok(b"s3cret".to_vec()));
        assert_eq!(signing_key("whsec_aGVsbG8="), Ok(b"hello".to_vec()));
        let bad = signing_key("whsec_not base64!").expect_err("not base64");
        assert!(
            bad.contains("whsec_") && !bad.contains("not base64!"),
            "{bad}"
        );
        assert!(signing_key("whsec_").is_err(), "empty key");
    }

    #[test]
    fn verify_accepts_fresh_and_rejects_tampered_stale_or_malformed() {
        let body = b"{\"id\":\"x\"}";
        let sig = sign(b"k", "a1", 1000, body);
        assert_eq!(verify(b"k", "a1", 1000, body, &sig, 1100, 300), Ok(()));
        let tampered = b"{\"id\":\"y\"}";
        assert_eq!(
            verify(b"k", "a1", 1000, tampered, &sig, 1000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"other", "a1", 1000, body, &sig, 1000, 300),
            Err(VerifyError::Mismatch)
        );
        // The id is signed: the same body and signature under another id do not verify.
        assert_eq!(
            verify(b"k", "a2", 1000, body, &sig, 1000, 300),
            Err(VerifyError::Mismatch)
        );
        // Replaying the body with a new timestamp breaks the signature.
        assert_eq!(
            verify(b"k", "a1", 1200, body, &sig, 1200, 300),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(b"k", "a1", 1000, body, &sig, 2000, 300),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(
            verify(b"k", "a1", 1000, body, "sha256=00", 1000, 300),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(b"k", "a1", 1000, body, "v1,***", 1000, 300),
            Err(VerifyError::Malformed)
        );
        // Several signatures (key rotation): any v1 match passes, other versions are skipped.
        let rotated = format!("v1a,abc v1,{} {sig}", BASE64.encode([0u8; 32]));
        assert_eq!(verify(b"k", "a1", 1000, body, &rotated, 1000, 300), Ok(()));
    }
}
