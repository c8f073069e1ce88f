//! Content addressing: a file is cut into segments, each segment erasure-coded
//! into pieces; the manifest lists every segment's plain hash and every piece's
//! hash (the root of its Merkle tree), and the content id is the hash of the
//! manifest.
//! [`SegmentReader`] does this over any `Read` in bounded memory: one segment
//! and its pieces at a time.

use borsh::{BorshDeserialize, BorshSerialize};
use std::fmt;
use std::io::Read;
use std::str::FromStr;
use tessera_types::{encode_versioned, Hash32};

use crate::erasure::{ErasureScheme, SegmentCodec};
use crate::merkle::piece_hash;

/// 2: a piece's hash is its Merkle root (1 had a flat blake3 beside the root).
pub const MANIFEST_VERSION: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PieceEntry {
    /// The root of the piece's Merkle tree ([`crate::piece_hash`]): its
    /// address in a provider's store, and what its storage deal checks its
    /// proofs against. One pass over the bytes gives both.
    pub hash: Hash32,
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

/// One encoded segment: its manifest entry and its pieces' bytes, back to
/// back in one buffer (the data pieces are the segment itself, zero-padded).
pub struct EncodedSegment {
    pub index: u64,
    pub entry: SegmentEntry,
    shards: Vec<u8>,
    shard: usize,
}

impl EncodedSegment {
    /// Piece `i`: data pieces first, then parity.
    pub fn piece(&self, i: usize) -> &[u8] {
        &self.shards[i * self.shard..][..self.shard]
    }

    /// Every piece, in placement order.
    pub fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        self.shards.chunks_exact(self.shard)
    }
}

/// Reads `segment_bytes` at a time from `reader` and yields encoded segments.
pub struct SegmentReader<R: Read> {
    reader: R,
    scheme: ErasureScheme,
    /// A codec the shared pool did not keep (too large, or the pool full),
    /// kept for this reader's next segment; one the pool keeps is taken
    /// from it for each segment.
    codec: Option<SegmentCodec>,
    segment_bytes: usize,
    /// The segment `skim` reads, reused from one to the next.
    buf: Vec<u8>,
    index: u64,
    total_len: u64,
    entries: Vec<SegmentEntry>,
    done: bool,
    /// The manifest the bytes must match (`again`): entries are taken from it.
    known: Option<Vec<SegmentEntry>>,
    /// Whether each segment is hashed to check it against `known`.
    check: bool,
}

impl<R: Read> SegmentReader<R> {
    pub fn new(reader: R, scheme: ErasureScheme, segment_bytes: usize) -> Result<Self, crate::ErasureError> {
        scheme.validate()?;
        Ok(SegmentReader {
            reader,
            scheme,
            codec: None,
            segment_bytes: segment_bytes.max(2),
            buf: Vec::new(),
            index: 0,
            total_len: 0,
            entries: Vec::new(),
            done: false,
            known: None,
            check: true,
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

    /// Like `again`, for bytes the manifest was computed from and that
    /// nothing changes (the S3 endpoint's staged copy, named by its content
    /// id): a segment is checked by its length only, not hashed again.
    /// Whoever receives the pieces still checks each against its hash.
    pub fn again_unchanged(reader: R, manifest: &Manifest) -> Result<Self, crate::ErasureError> {
        let mut r = SegmentReader::again(reader, manifest)?;
        r.check = false;
        Ok(r)
    }

    /// Sizes the buffer `skim` reads into for an input of `total` bytes, so
    /// that a segment is read in place instead of into a buffer that
    /// doubles (and is copied) as it fills.
    pub fn expecting(mut self, total: u64) -> Self {
        let wanted = total.min(self.segment_bytes as u64) as usize;
        if self.buf.capacity() == 0 {
            self.buf = crate::pool::buffer(wanted);
        } else {
            self.buf.reserve_exact(wanted);
        }
        self
    }

    /// The manifest of everything read; call after the iterator (or `skim`)
    /// is exhausted.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            total_len: self.total_len,
            segment_bytes: self.segment_bytes as u64,
            scheme: self.scheme,
            segments: self.entries.clone(),
        }
    }

    /// The next segment's manifest entry only, its pieces hashed where the
    /// codec holds them and never copied out (the manifest pass). `None` at
    /// the end.
    pub fn skim(&mut self) -> Option<std::io::Result<SegmentEntry>> {
        if self.done {
            return None;
        }
        let mut buf = std::mem::take(&mut self.buf);
        let entry = self.skim_into(&mut buf);
        self.buf = buf;
        self.tally(entry, |e| e)
    }

    fn skim_into(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<SegmentEntry>> {
        if !self.read_into(buf)? {
            return Ok(None);
        }
        let pieces = self.with_codec(|codec| {
            let shards = codec.encode(buf)?;
            Ok((0..shards.len()).filter_map(|i| shards.get(i)).map(piece_entry).collect())
        })?;
        Ok(Some(SegmentEntry { len: buf.len() as u64, hash: Hash32::blake3(buf), pieces }))
    }

    /// Runs `f` with a codec: this reader's own, or one from the pool for
    /// just this segment (so that codecs are held only while they encode).
    fn with_codec<T>(&mut self, f: impl FnOnce(&mut SegmentCodec) -> Result<T, crate::ErasureError>) -> std::io::Result<T> {
        let mut codec = match self.codec.take() {
            Some(c) => c,
            None => crate::pool::codec(self.scheme).map_err(std::io::Error::other)?,
        };
        let out = f(&mut codec);
        self.codec = crate::pool::give_codec(codec);
        out.map_err(std::io::Error::other)
    }

    /// The next segment and its pieces in one buffer, sized up front when
    /// the manifest gives the segment's length.
    fn encode_next(&mut self) -> std::io::Result<Option<EncodedSegment>> {
        let scheme = self.scheme;
        let index = self.index;
        let known = self.known.as_ref().map(|k| k.get(index as usize).cloned());
        let mut shards = match &known {
            Some(Some(e)) => crate::pool::buffer(scheme.total() * scheme.shard_bytes(e.len as usize)),
            _ => Vec::new(),
        };
        if !self.read_into(&mut shards)? {
            return Ok(None);
        }
        let len = shards.len();
        let hash = (self.check || known.is_none()).then(|| Hash32::blake3(&shards));
        let shard = scheme.shard_bytes(len);
        shards.resize(shard * scheme.total(), 0);
        self.with_codec(|codec| codec.encode_into(&mut shards, shard))?;
        let entry = match known {
            Some(Some(w)) if w.len == len as u64 && hash.is_none_or(|h| h == w.hash) => w,
            Some(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("segment {index} differs from the manifest (the data changed)"),
                ));
            }
            None => SegmentEntry {
                len: len as u64,
                hash: hash.expect("hashed without a manifest"),
                pieces: shards.chunks_exact(shard).map(piece_entry).collect(),
            },
        };
        Ok(Some(EncodedSegment { index, entry, shards, shard }))
    }

    /// Reads the next segment into `buf` (cleared first), growing it only
    /// as far as the bytes that arrive, so a small file never costs a whole
    /// segment's buffer; false at the end of the input.
    fn read_into(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        buf.clear();
        (&mut self.reader).take(self.segment_bytes as u64).read_to_end(buf)?;
        Ok(!buf.is_empty())
    }

    /// Adds a segment read to the manifest; the end of the input or an
    /// error ends the stream.
    fn tally<T>(&mut self, read: std::io::Result<Option<T>>, entry: impl Fn(&T) -> &SegmentEntry) -> Option<std::io::Result<T>> {
        match read {
            Ok(Some(t)) => {
                let e = entry(&t);
                self.total_len += e.len;
                self.entries.push(e.clone());
                self.index += 1;
                Some(Ok(t))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn piece_entry(piece: &[u8]) -> PieceEntry {
    PieceEntry { hash: piece_hash(piece), len: piece.len() as u64 }
}

/// The segment buffer goes back to the pool for the next reader.
impl<R: Read> Drop for SegmentReader<R> {
    fn drop(&mut self) {
        crate::pool::give_buffer(std::mem::take(&mut self.buf));
    }
}

impl Drop for EncodedSegment {
    fn drop(&mut self) {
        crate::pool::give_buffer(std::mem::take(&mut self.shards));
    }
}

impl<R: Read> Iterator for SegmentReader<R> {
    type Item = std::io::Result<EncodedSegment>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let read = self.encode_next();
        self.tally(read, |s| &s.entry)
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
        // The manifest pass, which hashes pieces where the codec holds them, agrees.
        let mut skimmed = SegmentReader::new(&data[..], ErasureScheme::DEVNET, 16 * 1024).unwrap();
        while let Some(entry) = skimmed.skim() {
            entry.unwrap();
        }
        assert_eq!(skimmed.manifest(), manifest);
        assert_eq!(manifest.cid().to_string().parse::<Cid>().unwrap(), manifest.cid());

        let mut codec = SegmentCodec::new(ErasureScheme::DEVNET).unwrap();
        let mut rebuilt = Vec::new();
        for s in &segments {
            // Lose two pieces (M = 2): data piece 0 and parity piece 5.
            let kept: Vec<(usize, &[u8])> = s.pieces().enumerate().filter(|(i, _)| *i != 0 && *i != 5).collect();
            for (i, p) in &kept {
                assert_eq!(piece_hash(p), s.entry.pieces[*i].hash);
            }
            let plain = codec.decode(s.entry.len as usize, &kept).unwrap();
            assert_eq!(Hash32::blake3(&plain), s.entry.hash);
            rebuilt.extend_from_slice(&plain);
        }
        assert_eq!(rebuilt, data);

        // Encoding again against the manifest gives the same pieces; changed bytes are refused.
        let again: Vec<EncodedSegment> = SegmentReader::again(&data[..], &manifest).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(again.iter().zip(&segments).all(|(a, s)| a.pieces().eq(s.pieces()) && a.entry == s.entry));
        let mut changed = data.clone();
        changed[40_000] ^= 1;
        let err = SegmentReader::again(&changed[..], &manifest).unwrap().find_map(Result::err).expect("changed bytes are refused");
        assert!(err.to_string().contains("segment 2 differs"), "{err}");
        // Unchecked, the same bytes give the same pieces; changed ones give
        // pieces that fail their hashes (a receiver's check), and a changed
        // length is still refused.
        let unchecked: Vec<EncodedSegment> =
            SegmentReader::again_unchanged(&data[..], &manifest).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(unchecked.iter().zip(&segments).all(|(a, s)| a.pieces().eq(s.pieces()) && a.entry == s.entry));
        let bad = SegmentReader::again_unchanged(&changed[..], &manifest).unwrap().nth(2).unwrap().unwrap();
        assert!(bad.pieces().zip(&bad.entry.pieces).any(|(p, e)| piece_hash(p) != e.hash));
        assert!(SegmentReader::again_unchanged(&data[..50_000], &manifest).unwrap().any(|s| s.is_err()));
    }

    #[test]
    fn empty_input_has_an_empty_manifest() {
        let mut reader = SegmentReader::new(&[][..], ErasureScheme::DEVNET, 1024).unwrap();
        assert_eq!(reader.by_ref().count(), 0);
        assert_eq!(reader.manifest().total_len, 0);
    }
}
