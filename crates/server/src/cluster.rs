//! Nodes vouching for their callers. A lookup one node forwards to another carries the caller's
//! identity and scopes, signed with the secret every node of the deployment shares; never the
//! caller's bearer token, which a node must not hand to whatever address it routes to.
//!
//! The voucher is the `x-imbtrack-forwarded` header:
//! `v1.<expires, ms since the epoch>.<caller as JSON, hex>.<HMAC-SHA-256, hex>`, the MAC taken
//! over `v1`, the method, the path and query, the expiry and the caller JSON, one per line. A
//! voucher is good for one request target and [`VOUCHER_LIFETIME_MS`], so one seen on the wire
//! cannot be spent on another piece or kept for later.

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth::{from_hex, to_hex, Caller};

/// How long a voucher is good for (also the clock difference between nodes it tolerates).
pub const VOUCHER_LIFETIME_MS: i64 = 30_000;

/// Fewest bytes a cluster secret may have.
pub const CLUSTER_SECRET_MIN_BYTES: usize = 32;

/// A cluster secret file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterKeyError {
    /// The file could not be read.
    #[error("cluster secret {path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The secret is too short to be one.
    #[error(
        "cluster secret {path}: {len} bytes; it needs at least {CLUSTER_SECRET_MIN_BYTES} \
         (e.g. `openssl rand -hex 32 > {path}`)"
    )]
    TooShort {
        /// The file.
        path: String,
        /// Its length, surrounding white space left out.
        len: usize,
    },
}

/// The secret the nodes of one deployment share: they sign forwarded callers and members
/// entries with it, and believe only what it signed.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why a forwarded request was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoucherError {
    /// Not `v1.<expiry>.<caller>.<mac>`.
    #[error("the x-imbtrack-forwarded header is malformed")]
    Malformed,
    /// The MAC is not the cluster secret's over this request.
    #[error(
        "the x-imbtrack-forwarded header is not signed with this cluster's secret for this request"
    )]
    BadSignature,
    /// Past its expiry, or expiring further ahead than a node would set.
    #[error("the x-imbtrack-forwarded header has expired (or the nodes' clocks differ by more than 30 s)")]
    Expired,
}

impl ClusterKey {
    /// Reads the secret from `path` (its bytes, surrounding white space left out).
    pub fn load(path: &Path) -> Result<ClusterKey, ClusterKeyError> {
        let bytes = std::fs::read(path).map_err(|error| ClusterKeyError::Io {
            path: path.display().to_string(),
            error,
        })?;
        ClusterKey::from_secret(bytes.trim_ascii()).map_err(|len| ClusterKeyError::TooShort {
            path: path.display().to_string(),
            len,
        })
    }

    /// A key from the secret's bytes; `Err(length)` when it is too short.
    pub fn from_secret(secret: &[u8]) -> Result<ClusterKey, usize> {
        if secret.len() < CLUSTER_SECRET_MIN_BYTES {
            return Err(secret.len());
        }
        Ok(ClusterKey(secret.to_vec()))
    }

    /// The secret, for the other parts of a node that sign with it (members entries).
    pub fn secret(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, method: &str, target: &str, expires_ms: i64, claims: &str) -> [u8; 32] {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(format!("v1\n{method}\n{target}\n{expires_ms}\n{claims}").as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The voucher for `caller` asking `method target` (path and query), at `now_ms`.
    pub(crate) fn vouch(&self, method: &str, target: &str, caller: &Caller, now_ms: i64) -> String {
        let claims = serde_json::to_string(caller).unwrap_or_default();
        let expires_ms = now_ms + VOUCHER_LIFETIME_MS;
        let mac = self.mac(method, target, expires_ms, &claims);
        format!(
            "v1.{expires_ms}.{}.{}",
            to_hex(claims.as_bytes()),
            to_hex(&mac)
        )
    }

    /// The caller a voucher stands for, if this key signed it for `method target` and it is
    /// current at `now_ms`.
    pub(crate) fn check(
        &self,
        voucher: &[u8],
        method: &str,
        target: &str,
        now_ms: i64,
    ) -> Result<Caller, VoucherError> {
        let text = std::str::from_utf8(voucher).map_err(|_| VoucherError::Malformed)?;
        let mut parts = text.split('.');
        let (Some("v1"), Some(expires), Some(claims), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(VoucherError::Malformed);
        };
        let expires_ms: i64 = expires.parse().map_err(|_| VoucherError::Malformed)?;
        let claims = from_hex(claims)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(VoucherError::Malformed)?;
        let mac = from_hex(mac).ok_or(VoucherError::Malformed)?;
        let expected = self.mac(method, target, expires_ms, &claims);
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return Err(VoucherError::BadSignature);
        }
        if expires_ms < now_ms || expires_ms > now_ms + 2 * VOUCHER_LIFETIME_MS {
            return Err(VoucherError::Expired);
        }
        serde_json::from_str(&claims).map_err(|_| VoucherError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Tokens;

    fn cluster_key(byte: u8) -> ClusterKey {
        ClusterKey::from_secret(&[byte; 32]).unwrap()
    }

    fn acme() -> Caller {
        let text = format!(
            "[[tokens]]\nid = \"acme\"\nsha256 = \"{}\"\nscopes = [\"mailer:123456\"]\n",
            crate::auth::token_hash_hex("t")
        );
        Tokens::parse(&text)
            .unwrap()
            .authenticate(Some(b"Bearer t"))
            .unwrap()
    }

    #[test]
    fn a_voucher_stands_for_its_caller_for_its_request_only() {
        let (key, caller, now) = (cluster_key(7), acme(), 1_700_000_000_000);
        let target = "/v1/pieces/00270123456789123456";
        let voucher = key.vouch("GET", target, &caller, now);
        assert_eq!(
            key.check(voucher.as_bytes(), "GET", target, now + 1_000),
            Ok(caller.clone())
        );
        // Another piece, another method, another cluster, later, tampered: refused.
        let other = "/v1/pieces/00270123456789123457";
        let refused = [
            key.check(voucher.as_bytes(), "GET", other, now),
            key.check(voucher.as_bytes(), "POST", target, now),
            cluster_key(8).check(voucher.as_bytes(), "GET", target, now),
            key.check(voucher.as_bytes(), "GET", target, now + 31_000),
            key.check(voucher.replace("v1.", "v2.").as_bytes(), "GET", target, now),
            key.check(b"1", "GET", target, now),
        ];
        assert_eq!(
            refused,
            [
                Err(VoucherError::BadSignature),
                Err(VoucherError::BadSignature),
                Err(VoucherError::BadSignature),
                Err(VoucherError::Expired),
                Err(VoucherError::Malformed),
                Err(VoucherError::Malformed),
            ]
        );
        // Widening the scopes breaks the signature.
        let claims = to_hex(serde_json::to_string(&caller).unwrap().as_bytes());
        let admin = serde_json::to_string(&Caller::local()).unwrap();
        let forged = voucher.replace(&claims, &to_hex(admin.as_bytes()));
        assert_eq!(
            key.check(forged.as_bytes(), "GET", target, now),
            Err(VoucherError::BadSignature)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(ClusterKey::from_secret(b"short").err(), Some(5));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{}\n", "ab".repeat(16))).unwrap();
        assert!(ClusterKey::load(&path).is_ok());
        std::fs::write(&path, "abc\n").unwrap();
        let error = ClusterKey::load(&path).unwrap_err().to_string();
        assert!(error.contains("3 bytes"), "{error}");
    }
}
