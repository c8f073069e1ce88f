//! Content addressing: a file is cut into segments, each segment erasure-coded
//! into pieces; the manifest lists every segment's plain hash and every piece's
//! hash and Merkle root, and the content id is the hash of the manifest.
//! [`SegmentReader`] does this over any `Read` in bounded memory: one segment
//! and its pieces at a time.

use borsh::{BorshDeserialize, BorshSerialize};
use std::fmt;
use std::io::Read;
use std::str::FromStr;
use tessera_types::{encode_versioned, Hash32};

use crate::erasure::{ErasureScheme, SegmentCodec};
use crate::merkle::PieceTree;

pub const MANIFEST_VERSION: u8 = 1;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PieceEntry {
    /// blake3 of the piece bytes: the piece's address in a provider's store.
    pub hash: Hash32,
    /// Root of the piece's Merkle tree, recorded in the storage deal.
    pub merkle_root: Hash32,
    pub len: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SegmentEntry {
    pub len: u64,
    /// blake3 of the segment's plain bytes, checked after decoding.
    pub hash: Hash32,
    /// K data pieces then M parity pieces.
    pub pieces: Vec<PieceEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Manifest {
    pub total_len: u64,
    pub segment_bytes: u64,
    pub scheme: ErasureScheme,
    pub segments: Vec<SegmentEntry>,
}

/// Content id: blake3 of the versioned manifest encoding, written `tcid1` + hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub struct Cid(pub Hash32);

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(MANIFEST_VERSION, self)
    }

    pub fn cid(&self) -> Cid {
        Cid(Hash32::blake3(&self.encode()))
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcid1{}", self.0)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Cid {
    type Err = String;
    fn from_str(s: &str) -> Result<Cid, String> {
        let hex = s.trim().strip_prefix("tcid1").ok_or_else(|| format!("content id {s:?} must start with tcid1"))?;
        Ok(Cid(hex.parse()?))
    }
}

/// One encoded segment: its manifest entry and its pieces' bytes.
pub struct EncodedSegment {
    pub index: u64,
    pub entry: SegmentEntry,
    pub pieces: Vec<Vec<u8>>,
}

/// Reads `segment_bytes` at a time from `reader` and yields encoded segments.
pub struct SegmentReader<R: Read> {
    reader: R,
    codec: SegmentCodec,
    segment_bytes: usize,
    buf: Vec<u8>,
    index: u64,
    total_len: u64,
    entries: Vec<SegmentEntry>,
    done: bool,
    /// The manifest the bytes must match (`again`): entries are taken from it.
    known: Option<Vec<SegmentEntry>>,
}

impl<R: Read> SegmentReader<R> {
    pub fn new(reader: R, scheme: ErasureScheme, segment_bytes: usize) -> Result<Self, crate::ErasureError> {
        Ok(SegmentReader {
            reader,
            codec: SegmentCodec::new(scheme)?,
            segment_bytes: segment_bytes.max(2),
            buf: Vec::new(),
            index: 0,
            total_len: 0,
            entries: Vec::new(),
            done: false,
            known: None,
        })
    }

    /// Encodes bytes already described by `manifest` again (to upload their
    /// pieces): each segment is checked by its length and plain hash, and its
    /// entry is the manifest's, so the per-piece hashes and Merkle trees are
    /// not computed twice. The pieces are a function of the segment's bytes;
    /// a segment that differs is an `InvalidData` error.
    pub fn again(reader: R, manifest: &Manifest) -> Result<Self, crate::ErasureError> {
        let mut r = SegmentReader::new(reader, manifest.scheme, manifest.segment_bytes as usize)?;
        r.known = Some(manifest.segments.clone());
        Ok(r)
    }

    /// The manifest of everything read; call after the iterator is exhausted.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            total_len: self.total_len,
            segment_bytes: self.segment_bytes as u64,
            scheme: self.codec.scheme(),
            segments: self.entries.clone(),
        }
    }

    /// Reads the next segment into `buf`, growing it only as far as the
    /// bytes that arrive (a small file never costs a whole segment's buffer).
    fn fill(&mut self) -> std::io::Result<()> {
        self.buf.clear();
        (&mut self.reader).take(self.segment_bytes as u64).read_to_end(&mut self.buf)?;
        Ok(())
    }
}

impl<R: Read> Iterator for SegmentReader<R> {
    type Item = std::io::Result<EncodedSegment>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Err(e) = self.fill() {
            self.done = true;
            return Some(Err(e));
        }
        if self.buf.is_empty() {
            self.done = true;
            return None;
        }
        let pieces = match self.codec.encode(&self.buf) {
            Ok(p) => p.to_vecs(),
            Err(e) => {
                self.done = true;
                return Some(Err(std::io::Error::other(e)));
            }
        };
        let entry = match &self.known {
            Some(known) => {
                match known.get(self.index as usize) {
                    Some(w) if w.len == self.buf.len() as u64 && w.hash == Hash32::blake3(&self.buf) => w.clone(),
                    _ => {
                        self.done = true;
                        return Some(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("segment {} differs from the manifest (the data changed)", self.index),
                        )));
                    }
                }
            }
            None => SegmentEntry {
                len: self.buf.len() as u64,
                hash: Hash32::blake3(&self.buf),
                pieces: pieces
                    .iter()
                    .map(|p| PieceEntry { hash: Hash32::blake3(p), merkle_root: PieceTree::build(p).root(), len: p.len() as u64 })
                    .collect(),
            },
        };
        self.total_len += self.buf.len() as u64;
        self.entries.push(entry.clone());
        let index = self.index;
        self.index += 1;
        Some(Ok(EncodedSegment { index, entry, pieces }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_encodes_to_a_stable_cid_and_rebuilds_from_any_k() {
        let data: Vec<u8> = (0..100_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut reader = SegmentReader::new(&data[..], ErasureScheme::DEVNET, 16 * 1024).unwrap();
        let segments: Vec<EncodedSegment> = reader.by_ref().collect::<Result<_, _>>().unwrap();
        let manifest = reader.manifest();
        assert_eq!(manifest.total_len, data.len() as u64);
        assert_eq!(segments.len(), 7);
        let again = SegmentReader::new(&data[..], ErasureScheme::DEVNET, 16 * 1024).unwrap();
        let mut again = again;
        let _ = again.by_ref().count();
        assert_eq!(again.manifest().cid(), manifest.cid());
        assert_eq!(manifest.cid().to_string().parse::<Cid>().unwrap(), manifest.cid());

        let mut codec = SegmentCodec::new(ErasureScheme::DEVNET).unwrap();
        let mut rebuilt = Vec::new();
        for s in &segments {
            // Lose two pieces (M = 2): data piece 0 and parity piece 5.
            let kept: Vec<(usize, &[u8])> =
                s.pieces.iter().enumerate().filter(|(i, _)| *i != 0 && *i != 5).map(|(i, p)| (i, p.as_slice())).collect();
            for (i, p) in &kept {
                assert_eq!(Hash32::blake3(p), s.entry.pieces[*i].hash);
            }
            let plain = codec.decode(s.entry.len as usize, &kept).unwrap();
            assert_eq!(Hash32::blake3(&plain), s.entry.hash);
            rebuilt.extend_from_slice(&plain);
        }
        assert_eq!(rebuilt, data);

        // Encoding again against the manifest gives the same pieces; changed bytes are refused.
        let again: Vec<EncodedSegment> = SegmentReader::again(&data[..], &manifest).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(again.iter().zip(&segments).all(|(a, s)| a.pieces == s.pieces && a.entry == s.entry));
        let mut changed = data.clone();
        changed[40_000] ^= 1;
        let err = SegmentReader::again(&changed[..], &manifest).unwrap().find_map(Result::err).expect("changed bytes are refused");
        assert!(err.to_string().contains("segment 2 differs"), "{err}");
    }

    #[test]
    fn empty_input_has_an_empty_manifest() {
        let mut reader = SegmentReader::new(&[][..], ErasureScheme::DEVNET, 1024).unwrap();
        assert_eq!(reader.by_ref().count(), 0);
        assert_eq!(reader.manifest().total_len, 0);
    }
}
