//! Reed-Solomon erasure coding of one segment into K data + M parity shards,
//! and its reconstruction from any K of them.

use borsh::{BorshDeserialize, BorshSerialize};
use reed_solomon_simd::{EncoderResult, ReedSolomonDecoder, ReedSolomonEncoder};

/// K data shards plus M parity shards; any K rebuild the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ErasureScheme {
    pub data: u16,
    pub parity: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErasureError {
    #[error("erasure scheme {data}+{parity} is not supported: need 1 to 128 data and 1 to 128 parity shards")]
    Scheme { data: u16, parity: u16 },
    #[error("segment is empty")]
    Empty,
    #[error("need {needed} distinct shards to rebuild, got {got}")]
    NotEnoughShards { needed: usize, got: usize },
    #[error("shard {index} is {len} bytes, expected {expected}")]
    ShardSize { index: usize, len: usize, expected: usize },
    #[error("shard index {0} is out of range")]
    ShardIndex(usize),
    #[error("reed-solomon: {0}")]
    Codec(String),
}

impl ErasureScheme {
    /// The devnet default (DESIGN.md section 3): 4 data + 2 parity.
    pub const DEVNET: ErasureScheme = ErasureScheme { data: 4, parity: 2 };

    pub fn validate(self) -> Result<(), ErasureError> {
        if self.data == 0 || self.parity == 0 || self.data > 128 || self.parity > 128 {
            return Err(ErasureError::Scheme { data: self.data, parity: self.parity });
        }
        Ok(())
    }

    pub fn total(self) -> usize {
        self.data as usize + self.parity as usize
    }

    /// Bytes per shard for a segment of `len` bytes: an even number (the codec
    /// works on 16-bit symbols), at least 2.
    pub fn shard_bytes(self, len: usize) -> usize {
        let per = len.div_ceil(self.data as usize).max(1);
        per + per % 2
    }
}

impl std::fmt::Display for ErasureScheme {
    /// `K+M`, for example `4+2`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.data, self.parity)
    }
}

impl std::str::FromStr for ErasureScheme {
    type Err = String;
    /// Parses and validates `K+M`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, m) = s.split_once('+').ok_or_else(|| format!("erasure scheme {s:?} must look like 4+2"))?;
        let scheme = ErasureScheme {
            data: k.trim().parse().map_err(|_| format!("{k:?} is not a number of data shards"))?,
            parity: m.trim().parse().map_err(|_| format!("{m:?} is not a number of parity shards"))?,
        };
        scheme.validate().map_err(|e| e.to_string())?;
        Ok(scheme)
    }
}

fn codec_err(e: impl std::fmt::Display) -> ErasureError {
    ErasureError::Codec(e.to_string())
}

/// The shards of one segment: K data shards then M parity shards.
/// Parity shards are read straight from the codec's work buffers: encoding
/// copies nothing it does not have to.
pub struct Shards<'a> {
    pub data: Vec<&'a [u8]>,
    parity: EncoderResult<'a>,
    parity_count: usize,
}

impl Shards<'_> {
    pub fn len(&self) -> usize {
        self.data.len() + self.parity_count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shard `i` in placement order (data first, then parity).
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        match i.checked_sub(self.data.len()) {
            None => Some(self.data[i]),
            Some(p) => self.parity.recovery(p),
        }
    }

    /// Owned copies of all shards, in placement order.
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        (0..self.len()).filter_map(|i| self.get(i)).map(<[u8]>::to_vec).collect()
    }
}

/// Reusable encoder and decoder for one scheme; keeps the codec's work
/// buffers between segments so a stream allocates them once.
pub struct SegmentCodec {
    scheme: ErasureScheme,
    encoder: Option<ReedSolomonEncoder>,
    decoder: Option<ReedSolomonDecoder>,
    padded: Vec<u8>,
    /// The largest piece the codec's buffers have been sized for.
    held_shard: usize,
}

/// Runs the (reused) encoder over `source`, K shards of `shard` bytes.
fn run_encoder<'a>(encoder: &'a mut Option<ReedSolomonEncoder>, scheme: ErasureScheme, source: &[u8], shard: usize) -> Result<EncoderResult<'a>, ErasureError> {
    let (k, m) = (scheme.data as usize, scheme.parity as usize);
    let encoder = match encoder {
        Some(e) => {
            e.reset(k, m, shard).map_err(codec_err)?;
            e
        }
        None => encoder.insert(ReedSolomonEncoder::new(k, m, shard).map_err(codec_err)?),
    };
    for piece in source.chunks_exact(shard) {
        encoder.add_original_shard(piece).map_err(codec_err)?;
    }
    encoder.encode().map_err(codec_err)
}

impl SegmentCodec {
    pub fn new(scheme: ErasureScheme) -> Result<SegmentCodec, ErasureError> {
        scheme.validate()?;
        Ok(SegmentCodec { scheme, encoder: None, decoder: None, padded: Vec::new(), held_shard: 0 })
    }

    pub fn scheme(&self) -> ErasureScheme {
        self.scheme
    }

    /// The largest piece size its work buffers have held (what keeping it costs).
    pub(crate) fn shard_bytes_held(&self) -> usize {
        self.held_shard
    }

    /// Encodes `segment` into `scheme.total()` shards: the K data shards (the
    /// segment split in order, the last zero-padded) then the M parity shards.
    /// Data shards borrow the segment when it splits evenly, so encoding copies
    /// no more than the parity it creates.
    pub fn encode<'a>(&'a mut self, segment: &'a [u8]) -> Result<Shards<'a>, ErasureError> {
        if segment.is_empty() {
            return Err(ErasureError::Empty);
        }
        let k = self.scheme.data as usize;
        let m = self.scheme.parity as usize;
        let shard = self.scheme.shard_bytes(segment.len());
        self.held_shard = self.held_shard.max(shard);
        let SegmentCodec { encoder, padded, scheme, .. } = self;
        let source: &'a [u8] = if segment.len() == shard * k {
            segment
        } else {
            padded.clear();
            padded.extend_from_slice(segment);
            padded.resize(shard * k, 0);
            padded
        };
        let parity = run_encoder(encoder, *scheme, source, shard)?;
        Ok(Shards { data: source.chunks_exact(shard).collect(), parity, parity_count: m })
    }

    /// Encodes in place: `shards` holds a segment's K data shards back to
    /// back (the segment zero-padded to `K * shard_bytes`) followed by room
    /// for the M parity shards, which are written there. What an upload
    /// needs in one buffer, without copying the data shards out.
    pub fn encode_into(&mut self, shards: &mut [u8], shard: usize) -> Result<(), ErasureError> {
        let k = self.scheme.data as usize;
        if shard == 0 || shards.len() != shard * self.scheme.total() {
            return Err(ErasureError::Empty);
        }
        self.held_shard = self.held_shard.max(shard);
        let (data, room) = shards.split_at_mut(shard * k);
        let parity = run_encoder(&mut self.encoder, self.scheme, data, shard)?;
        for (i, out) in room.chunks_exact_mut(shard).enumerate() {
            out.copy_from_slice(parity.recovery(i).ok_or_else(|| codec_err("a parity shard is missing"))?);
        }
        Ok(())
    }

    /// Rebuilds a segment of `len` bytes from any K distinct shards given as
    /// (index, bytes); indexes 0..K are data shards, K.. parity shards.
    pub fn decode(&mut self, len: usize, shards: &[(usize, &[u8])]) -> Result<Vec<u8>, ErasureError> {
        if len == 0 {
            return Err(ErasureError::Empty);
        }
        let k = self.scheme.data as usize;
        let shard = self.scheme.shard_bytes(len);
        self.held_shard = self.held_shard.max(shard);
        let mut data: Vec<Option<&[u8]>> = vec![None; k];
        let mut parity: Vec<(usize, &[u8])> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for &(index, bytes) in shards {
            if index >= self.scheme.total() {
                return Err(ErasureError::ShardIndex(index));
            }
            if bytes.len() != shard {
                return Err(ErasureError::ShardSize { index, len: bytes.len(), expected: shard });
            }
            if !seen.insert(index) {
                continue;
            }
            if index < k {
                data[index] = Some(bytes);
            } else {
                parity.push((index - k, bytes));
            }
        }
        if seen.len() < k {
            return Err(ErasureError::NotEnoughShards { needed: k, got: seen.len() });
        }
        let mut out = Vec::with_capacity(shard * k);
        if data.iter().all(Option::is_some) {
            for d in data.iter().flatten() {
                out.extend_from_slice(d);
            }
        } else {
            let decoder = match &mut self.decoder {
                Some(d) => {
                    d.reset(k, self.scheme.parity as usize, shard).map_err(codec_err)?;
                    d
                }
                None => self.decoder.insert(ReedSolomonDecoder::new(k, self.scheme.parity as usize, shard).map_err(codec_err)?),
            };
            for (i, d) in data.iter().enumerate() {
                if let Some(d) = d {
                    decoder.add_original_shard(i, d).map_err(codec_err)?;
                }
            }
            for (i, p) in &parity {
                decoder.add_recovery_shard(*i, p).map_err(codec_err)?;
            }
            let result = decoder.decode().map_err(codec_err)?;
            for (i, d) in data.iter().enumerate() {
                match d {
                    Some(d) => out.extend_from_slice(d),
                    None => out.extend_from_slice(
                        result.restored_original(i).ok_or_else(|| codec_err(format!("shard {i} not restored")))?,
                    ),
                }
            }
        }
        out.truncate(len);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut h = blake3::Hasher::new();
        h.update(&[seed]);
        h.finalize_xof().fill(&mut out);
        out
    }

    #[test]
    fn rejects_bad_schemes_and_short_input() {
        assert!(SegmentCodec::new(ErasureScheme { data: 0, parity: 2 }).is_err());
        assert!(SegmentCodec::new(ErasureScheme { data: 4, parity: 0 }).is_err());
        let mut c = SegmentCodec::new(ErasureScheme::DEVNET).unwrap();
        assert!(matches!(c.encode(&[]), Err(ErasureError::Empty)));
        let input = data(1000, 1);
        let shards = c.encode(&input).unwrap().to_vecs();
        let three: Vec<(usize, &[u8])> = shards.iter().take(3).enumerate().map(|(i, s)| (i, s.as_slice())).collect();
        assert!(matches!(c.decode(1000, &three), Err(ErasureError::NotEnoughShards { needed: 4, got: 3 })));
        let dup: Vec<(usize, &[u8])> = vec![(0, &shards[0]), (0, &shards[0]), (1, &shards[1]), (2, &shards[2])];
        assert!(matches!(c.decode(1000, &dup), Err(ErasureError::NotEnoughShards { .. })));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any K of the K+M shards rebuild the segment byte for byte.
        #[test]
        fn any_k_of_k_plus_m_rebuild(len in 1usize..20_000, k in 1u16..8, m in 1u16..5, seed: u8, keep in any::<u64>()) {
            let scheme = ErasureScheme { data: k, parity: m };
            let mut codec = SegmentCodec::new(scheme).unwrap();
            let original = data(len, seed);
            let shards = codec.encode(&original).unwrap().to_vecs();
            prop_assert_eq!(shards.len(), scheme.total());
            // Choose K distinct shard indexes from `keep`'s bits, deterministically.
            let mut indexes: Vec<usize> = (0..scheme.total()).collect();
            let mut state = keep;
            for i in (1..indexes.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                indexes.swap(i, (state >> 33) as usize % (i + 1));
            }
            let chosen: Vec<(usize, &[u8])> = indexes[..k as usize].iter().map(|&i| (i, shards[i].as_slice())).collect();
            prop_assert_eq!(codec.decode(len, &chosen).unwrap(), original);
        }
    }
}
