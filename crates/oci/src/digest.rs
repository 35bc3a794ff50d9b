use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Malformed(String),
    #[error("unsupported digest algorithm {0:?} (only sha256 is supported)")]
    UnsupportedAlgorithm(String),
}

/// A content digest of the bytes of a blob as stored or transferred (for a layer: the
/// *compressed* bytes). Always `sha256:<hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    bytes: [u8; 32],
}

impl Digest {
    pub fn from_sha256_bytes(bytes: [u8; 32]) -> Self {
        Digest { bytes }
    }

    /// Digest of a byte slice held in memory (configs, manifests: small blobs only).
    pub fn of(data: &[u8]) -> Self {
        let mut h = Sha256Hasher::new();
        h.update(data);
        h.finish()
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    pub fn sha256_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// The 64 hex digits, without the algorithm prefix.
    pub fn hex(&self) -> String {
        // Into a fixed buffer: `hex::encode` goes char by char, and a no-op rebuild formats
        // one digest per context file.
        let mut out = [0u8; 64];
        match hex::encode_to_slice(self.bytes, &mut out) {
            Ok(()) => String::from_utf8_lossy(&out).into_owned(),
            Err(_) => hex::encode(self.bytes),
        }
    }

    /// The first 12 hex digits, as docker shows image ids.
    pub fn short(&self) -> String {
        let mut h = self.hex();
        h.truncate(12);
        h
    }

    pub fn parse_hex(hex_digits: &str) -> Result<Self, DigestError> {
        let malformed = || DigestError::Malformed(hex_digits.to_string());
        if hex_digits.len() != 64 || hex_digits.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(malformed());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| malformed())?;
        Ok(Digest { bytes })
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, DigestError> {
        match s.split_once(':') {
            Some(("sha256", hex_digits)) => {
                Digest::parse_hex(hex_digits).map_err(|_| DigestError::Malformed(s.to_string()))
            }
            Some((alg, _)) if !alg.is_empty() => {
                Err(DigestError::UnsupportedAlgorithm(alg.to_string()))
            }
            _ => Err(DigestError::Malformed(s.to_string())),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Streaming sha256, the one hash every identifier in strata uses.
#[derive(Clone, Default)]
pub struct Sha256Hasher(sha2::Sha256);

impl Sha256Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(self) -> Digest {
        Digest::from_sha256_bytes(self.0.finalize().into())
    }
}

macro_rules! digest_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Digest);

        impl $name {
            pub fn digest(&self) -> &Digest {
                &self.0
            }
            pub fn hex(&self) -> String {
                self.0.hex()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = DigestError;
            fn from_str(s: &str) -> Result<Self, DigestError> {
                s.parse().map($name)
            }
        }
    };
}

digest_newtype!(
    /// The digest of a layer's *uncompressed* tar stream (`rootfs.diff_ids` in the config).
    DiffId
);
digest_newtype!(
    /// The identity of a stack of layers: `chain(L1) = diff(L1)`,
    /// `chain(L1..Ln) = sha256(chain(L1..Ln-1) + " " + diff(Ln))`. Names unpacked snapshots.
    ChainId
);

/// The chain id of every prefix of a layer stack, bottom first.
pub fn chain_ids(diff_ids: &[DiffId]) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => ChainId(diff.0.clone()),
            Some(parent) => ChainId(Digest::of(format!("{parent} {diff}").as_bytes())),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digest_of_empty_input_is_the_well_known_one() {
        assert_eq!(Digest::of(b"").to_string(), EMPTY);
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_input() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.short(), "e3b0c44298fc");
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(EMPTY.to_uppercase().parse::<Digest>().is_err());
        assert_eq!(
            "sha512:00".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm("sha512".into()))
        );
        assert!("nocolon".parse::<Digest>().is_err());
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a: DiffId = EMPTY.parse().unwrap();
        let b = DiffId(Digest::of(b"x"));
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0].0, a.0);
        assert_eq!(chain[1].0, Digest::of(format!("{} {}", a, b).as_bytes()));
    }
}
