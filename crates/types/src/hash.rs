//! Fixed-size byte values written as hex: `Hash32` (block, transaction and app
//! hashes) and `PublicKey` (an ed25519 verification key).

use borsh::{BorshDeserialize, BorshSerialize};
use std::fmt;
use std::str::FromStr;

macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
        )]
        pub struct $name(pub [u8; $len]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let bad = || format!("{text:?} is not a {} ({} hex digits)", $what, $len * 2);
                let raw = hex::decode(text.trim()).map_err(|_| bad())?;
                let bytes: [u8; $len] = raw.try_into().map_err(|_| bad())?;
                Ok($name(bytes))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_bytes!(
    /// A 32-byte blake3 digest.
    Hash32, 32, "hash"
);
hex_bytes!(
    /// An ed25519 verification key.
    PublicKey, 32, "public key"
);

impl Hash32 {
    pub const ZERO: Hash32 = Hash32([0u8; 32]);

    pub fn blake3(data: &[u8]) -> Hash32 {
        Hash32(*blake3::hash(data).as_bytes())
    }

    /// blake3 of everything `reader` yields, read in 256 KiB steps, and its length.
    pub fn blake3_reader(mut reader: impl std::io::Read) -> std::io::Result<(Hash32, u64)> {
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut len = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            len += n as u64;
            hasher.update(&buf[..n]);
        }
        Ok((Hash32(*hasher.finalize().as_bytes()), len))
    }
}
