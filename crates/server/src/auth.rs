//! Bearer tokens and their scopes: who may ingest, who may look up which Mailer IDs.

use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A tokens file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The file is not TOML of the expected shape.
    #[error("{path}: {error}")]
    Syntax {
        /// The file.
        path: String,
        /// What the parser said.
        error: Box<toml::de::Error>,
    },
    /// A token's entry is wrong.
    #[error("token {id:?}: {problem}")]
    Entry {
        /// The token's id.
        id: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// Push scans (`POST /v1/scans`).
    Ingest,
    /// Read `/metrics` (a monitoring system's token).
    Metrics,
    /// Look up pieces and summaries of these Mailer IDs only.
    Mailer(Vec<u32>),
}

impl Scope {
    /// Parses `admin`, `ingest`, `metrics` or `mailer:<MID>,<MID>…` (6 or 9-digit Mailer IDs).
    pub fn parse(text: &str) -> Result<Scope, String> {
        match text {
            "admin" => Ok(Scope::Admin),
            "ingest" => Ok(Scope::Ingest),
            "metrics" => Ok(Scope::Metrics),
            _ => {
                let list = text.strip_prefix("mailer:").ok_or_else(|| {
                    format!("scope {text:?} is not admin, ingest, metrics or mailer:<MID>,…")
                })?;
                let mids = list
                    .split(',')
                    .map(|mid| parse_mailer_id(mid.trim()))
                    .collect::<Result<Vec<u32>, String>>()?;
                Ok(Scope::Mailer(mids))
            }
        }
    }
}

/// A Mailer ID: 6 digits (not starting with 9) or 9 digits starting with 9
/// ([`imbtrack_barcode::parse_mailer_id`], the rule barcodes' Mailer IDs are read by too).
pub fn parse_mailer_id(text: &str) -> Result<u32, String> {
    imbtrack_barcode::parse_mailer_id(text).ok_or_else(|| {
        format!("{text:?} is not a Mailer ID (6 digits, or 9 digits starting with 9)")
    })
}

/// Who is asking, once their token checked out (or a node vouched for them,
/// [`crate::cluster`]: hence the serde derives, which only a voucher's checked claims use).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    /// The token's id (`local` when the server runs without tokens).
    pub id: String,
    admin: bool,
    ingest: bool,
    metrics: bool,
    mailers: Vec<u32>,
}

impl Caller {
    /// The caller of a server without tokens: bound to loopback, trusted with everything.
    pub fn local() -> Caller {
        Caller {
            id: "local".into(),
            admin: true,
            ingest: true,
            metrics: true,
            mailers: Vec::new(),
        }
    }

    fn from_scopes(id: &str, scopes: &[Scope]) -> Caller {
        let mut caller = Caller {
            id: id.to_string(),
            admin: false,
            ingest: false,
            metrics: false,
            mailers: Vec::new(),
        };
        for scope in scopes {
            match scope {
                Scope::Admin => caller.admin = true,
                Scope::Ingest => caller.ingest = true,
                Scope::Metrics => caller.metrics = true,
                Scope::Mailer(mids) => caller.mailers.extend(mids),
            }
        }
        caller
    }

    /// Whether the caller may push scans.
    pub fn may_ingest(&self) -> bool {
        self.admin || self.ingest
    }

    /// Whether the caller may read `/metrics`.
    pub fn may_read_metrics(&self) -> bool {
        self.admin || self.metrics
    }

    /// Whether the caller may look anything up at all.
    pub fn may_look_up(&self) -> bool {
        self.admin || !self.mailers.is_empty()
    }

    /// Whether the caller may see a piece filed under `mailer_id` (or under none).
    pub fn sees(&self, mailer_id: Option<u32>) -> bool {
        self.admin || mailer_id.is_some_and(|mid| self.mailers.contains(&mid))
    }
}

/// Why a request's credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that matches no entry.
    Unknown,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    id: String,
    sha256: String,
    scopes: Vec<String>,
}

struct Token {
    hash: [u8; 32],
    caller: Caller,
}

/// The tokens a server accepts: SHA-256 hashes (tokens are random, so a fast hash is enough;
/// the file never holds a usable secret), each with its caller.
pub struct Tokens {
    tokens: Vec<Token>,
}

/// SHA-256 of a token, as hex: what a tokens file stores.
pub fn token_hash_hex(token: &str) -> String {
    to_hex(&Sha256::digest(token.as_bytes()))
}

/// Lower-case hex of `bytes` (token hashes, the audit key and its barcode hashes).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes written as hex digits in `hex`, if that is what it is.
pub(crate) fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// The 32 bytes written as 64 hex digits in `hex`, if that is what it is.
pub(crate) fn bytes32_from_hex(hex: &str) -> Option<[u8; 32]> {
    from_hex(hex)?.try_into().ok()
}

fn parse_hash(id: &str, hex: &str) -> Result<[u8; 32], TokensError> {
    bytes32_from_hex(hex).ok_or_else(|| TokensError::Entry {
        id: id.to_string(),
        problem: format!("sha256 {hex:?} is not 64 hex digits"),
    })
}

impl Tokens {
    /// Reads a tokens file:
    ///
    /// ```toml
    /// [[tokens]]
    /// id = "plant-0451"
    /// sha256 = "<64 hex digits: SHA-256 of the token>"
    /// scopes = ["ingest"]
    /// ```
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokensError::Io {
            path: path.display().to_string(),
            error,
        })?;
        Tokens::parse(&text).map_err(|e| match e {
            TokensError::Syntax { error, .. } => TokensError::Syntax {
                path: path.display().to_string(),
                error,
            },
            other => other,
        })
    }

    /// [`Tokens::load`] from text.
    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let file: TokensFile = toml::from_str(text).map_err(|error| TokensError::Syntax {
            path: String::new(),
            error: Box::new(error),
        })?;
        let mut tokens: Vec<Token> = Vec::with_capacity(file.tokens.len());
        for entry in file.tokens {
            let entry_error = |problem: String| TokensError::Entry {
                id: entry.id.clone(),
                problem,
            };
            if tokens.iter().any(|t| t.caller.id == entry.id) {
                return Err(entry_error("the id is used twice".into()));
            }
            if entry.scopes.is_empty() {
                return Err(entry_error("no scopes".into()));
            }
            let scopes = entry
                .scopes
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<Vec<Scope>, String>>()
                .map_err(entry_error)?;
            let hash = parse_hash(&entry.id, &entry.sha256)?;
            // One token under two ids would be whichever came last: refuse the ambiguity.
            if let Some(first) = tokens.iter().find(|t| t.hash == hash) {
                return Err(entry_error(format!(
                    "the same token hash as {:?}",
                    first.caller.id
                )));
            }
            tokens.push(Token {
                hash,
                caller: Caller::from_scopes(&entry.id, &scopes),
            });
        }
        Ok(Tokens { tokens })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller of the token with this id, if the file has it.
    pub fn caller(&self, id: &str) -> Option<&Caller> {
        self.tokens
            .iter()
            .map(|t| &t.caller)
            .find(|caller| caller.id == id)
    }

    /// The caller a bearer token stands for. Every entry is compared, in constant time, so the
    /// time taken tells nothing about which hash (or how much of one) matched.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, AuthFailure> {
        let token = authorization
            .and_then(|value| value.strip_prefix(b"Bearer "))
            .map(|t| t.trim_ascii())
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::Missing)?;
        let hash: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for entry in &self.tokens {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(&entry.caller);
            }
        }
        found.cloned().ok_or(AuthFailure::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let text = format!(
            "[[tokens]]\nid = \"ops\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\n\
             [[tokens]]\nid = \"plant\"\nsha256 = \"{}\"\nscopes = [\"ingest\"]\n\n\
             [[tokens]]\nid = \"acme\"\nsha256 = \"{}\"\nscopes = [\"mailer:123456,900000001\"]\n",
            token_hash_hex("ops-secret"),
            token_hash_hex("plant-secret"),
            token_hash_hex("acme-secret")
        );
        Tokens::parse(&text).unwrap()
    }

    #[test]
    fn tokens_map_to_their_scopes() {
        let tokens = tokens();
        assert_eq!(tokens.len(), 3);
        let ops = tokens.authenticate(Some(b"Bearer ops-secret")).unwrap();
        assert!(ops.may_ingest() && ops.may_look_up() && ops.sees(Some(1)) && ops.sees(None));
        let plant = tokens.authenticate(Some(b"Bearer plant-secret")).unwrap();
        assert!(plant.may_ingest() && !plant.may_look_up() && !plant.sees(Some(123456)));
        assert!(!plant.may_read_metrics() && ops.may_read_metrics());
        let acme = tokens.authenticate(Some(b"Bearer acme-secret")).unwrap();
        assert_eq!(acme.id, "acme");
        assert!(!acme.may_ingest() && acme.may_look_up());
        assert!(acme.sees(Some(123456)) && acme.sees(Some(900000001)));
        assert!(!acme.sees(Some(123457)) && !acme.sees(None));
    }

    #[test]
    fn bad_credentials_are_refused() {
        let tokens = tokens();
        assert_eq!(tokens.authenticate(None), Err(AuthFailure::Missing));
        assert_eq!(
            tokens.authenticate(Some(b"Basic b3BzOnNlY3JldA==")),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            tokens.authenticate(Some(b"Bearer ")),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            tokens.authenticate(Some(b"Bearer ops-secreT")),
            Err(AuthFailure::Unknown)
        );
        // The stored hash itself is no credential.
        let hash = format!("Bearer {}", token_hash_hex("ops-secret"));
        assert_eq!(
            tokens.authenticate(Some(hash.as_bytes())),
            Err(AuthFailure::Unknown)
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let entry = |scopes: &str, hash: &str| {
            format!("[[tokens]]\nid = \"x\"\nsha256 = \"{hash}\"\nscopes = {scopes}\n")
        };
        let good_hash = token_hash_hex("t");
        for (text, expected) in [
            (entry("[\"root\"]", &good_hash), "not admin, ingest"),
            (entry("[\"mailer:12345\"]", &good_hash), "not a Mailer ID"),
            (entry("[\"mailer:912345\"]", &good_hash), "not a Mailer ID"),
            (entry("[]", &good_hash), "no scopes"),
            (entry("[\"admin\"]", "abc"), "not 64 hex digits"),
            (
                format!(
                    "{}{}",
                    entry("[\"admin\"]", &good_hash),
                    entry("[\"admin\"]", &good_hash)
                ),
                "used twice",
            ),
            (
                format!(
                    "{}{}",
                    entry("[\"admin\"]", &good_hash),
                    entry("[\"mailer:123456\"]", &good_hash).replace("\"x\"", "\"y\"")
                ),
                "the same token hash as \"x\"",
            ),
            ("tokens = 3".to_string(), "invalid type"),
        ] {
            let error = Tokens::parse(&text).err().unwrap().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
        assert!(Tokens::parse("").unwrap().is_empty());
    }
}
