//! The Signal-protocol key directory (seed 000, "Encryption Key Management"): each
//! user's identity key, signed pre-key and one-time pre-keys, validated as libsignal
//! encodes them, and the [`KeyStore`] trait that keeps them. The server stores public
//! keys only; it never sees a private key or a message key.
//!
//! A one-time pre-key is handed out exactly once: [`KeyStore::take_pre_key`] removes
//! the key it returns in the same atomic step (a write transaction in the embedded
//! store; a compare-and-delete, i.e. an LWT `DELETE ... IF EXISTS`, in ScyllaDB).

use serde::{Deserialize, Serialize};

use crate::error::{ClientError, ErrorCode};

/// A Curve25519 public key as libsignal serialises it: the type byte `0x05` (DJB)
/// followed by the 32-byte key.
pub const PUBLIC_KEY_LEN: usize = 33;
/// libsignal's key type byte for Curve25519.
pub const DJB_TYPE: u8 = 0x05;
/// An XEdDSA signature.
pub const SIGNATURE_LEN: usize = 64;
/// Largest key id (libsignal's pre-key ids are 24-bit; signed pre-key ids fit too).
pub const MAX_KEY_ID: u32 = 0x00FF_FFFF;
/// One-time pre-keys per upload at most.
pub const MAX_PRE_KEYS_PER_UPLOAD: usize = 100;
/// One-time pre-keys stored per user at most.
pub const MAX_PRE_KEYS_TOTAL: usize = 1000;

/// An identity key (long-term).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IdentityKey {
    #[cfg_attr(feature = "openapi", schema(maximum = 16777215))]
    pub key_id: u32,
    /// Base64 of the 33-byte serialised public key.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^B[Q-Za-f][A-Za-z0-9+/_-]{42}$")
    )]
    pub identity_key: String,
}

/// A signed pre-key (medium-term, signed by the identity key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SignedPreKey {
    #[cfg_attr(feature = "openapi", schema(maximum = 16777215))]
    pub key_id: u32,
    /// Base64 of the 33-byte serialised public key.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^B[Q-Za-f][A-Za-z0-9+/_-]{42}$")
    )]
    pub public_key: String,
    /// Base64 of the 64-byte XEdDSA signature of `public_key` by the identity key.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9+/_-]{85}[AQgw](==)?$")
    )]
    pub signature: String,
}

/// A one-time pre-key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PreKey {
    #[cfg_attr(feature = "openapi", schema(maximum = 16777215))]
    pub key_id: u32,
    /// Base64 of the 33-byte serialised public key.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^B[Q-Za-f][A-Za-z0-9+/_-]{42}$")
    )]
    pub public_key: String,
}

fn invalid(field: &str, message: impl Into<String>) -> ClientError {
    ClientError::new(ErrorCode::InvalidField, message).on_field(field)
}

/// Decodes standard or URL-safe base64, padded or not.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        })
    }
    let trimmed = s.trim_end_matches('=');
    if s.len() - trimmed.len() > 2 || trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in trimmed.bytes() {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero (a canonical encoding).
    if acc != 0 {
        return None;
    }
    Some(out)
}

/// Encodes standard, padded base64 (the form clients usually send; used by tests and
/// tools that build keys).
pub fn encode_base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Checks a base64 Curve25519 public key in libsignal's encoding.
pub fn validate_public_key(field: &str, b64: &str) -> Result<(), ClientError> {
    match decode_base64(b64) {
        None => Err(invalid(field, format!("{field} must be base64"))),
        Some(bytes) if bytes.len() != PUBLIC_KEY_LEN || bytes[0] != DJB_TYPE => Err(invalid(
            field,
            format!(
                "{field} must be a Curve25519 public key as libsignal serialises it: {PUBLIC_KEY_LEN} bytes starting with 0x05"
            ),
        )),
        Some(_) => Ok(()),
    }
}

pub fn validate_key_id(field: &str, id: u32) -> Result<(), ClientError> {
    if id <= MAX_KEY_ID {
        Ok(())
    } else {
        Err(invalid(field, format!("{field} must be 0-{MAX_KEY_ID}")))
    }
}

pub fn validate_signature(field: &str, b64: &str) -> Result<(), ClientError> {
    match decode_base64(b64) {
        Some(bytes) if bytes.len() == SIGNATURE_LEN => Ok(()),
        Some(_) => Err(invalid(
            field,
            format!("{field} must be a {SIGNATURE_LEN}-byte XEdDSA signature"),
        )),
        None => Err(invalid(field, format!("{field} must be base64"))),
    }
}

/// The outcome of taking a one-time pre-key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The key handed out (and deleted), if any was left.
    pub key: Option<PreKey>,
    /// One-time pre-keys the owner has left after this.
    pub remaining: usize,
}

/// The result of storing a batch of one-time pre-keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreKeysStored {
    /// Stored; the owner now has this many.
    Stored { total: usize },
    /// Refused: the total would exceed `MAX_PRE_KEYS_TOTAL`; the owner has `current`.
    OverCap { current: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_both_alphabets_and_rejects_junk() {
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("+/8="), Some(vec![0xfb, 0xff]));
        assert_eq!(decode_base64("a"), None);
        assert_eq!(decode_base64("aGVsbG9="), None, "non-zero trailing bits");
        assert_eq!(decode_base64("aGV sbG8="), None);
        assert_eq!(decode_base64(""), Some(vec![]));
    }

    #[test]
    fn keys_are_checked_as_libsignal_encodes_them() {
        let mut key = vec![DJB_TYPE];
        key.extend([7u8; 32]);
        let b64 = encode_base64(&key);
        assert!(validate_public_key("k", &b64).is_ok());
        key[0] = 0x04;
        assert!(validate_public_key("k", &encode_base64(&key)).is_err());
        assert!(validate_public_key("k", &encode_base64(&[5u8; 32])).is_err());
        assert!(validate_public_key("k", "%%%").is_err());
        assert!(validate_signature("s", &encode_base64(&[1u8; 64])).is_ok());
        assert!(validate_signature("s", &encode_base64(&[1u8; 63])).is_err());
        assert!(validate_key_id("id", MAX_KEY_ID).is_ok());
        assert!(validate_key_id("id", MAX_KEY_ID + 1).is_err());
    }
}
