//! Storing and fetching content: `put` encodes a file in two streaming passes
//! (first the manifest and deals, then the pieces to the providers the ledger
//! chose); `stream` rebuilds the manifest from the deals, checks it against
//! the content id, fetches any K pieces per segment and hands over a byte
//! range of the content as it passes its checks; `get` writes it into a file
//! whole or not at all. Memory stays at about a few segments and their pieces.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tessera_crypto::KeyPair;
use tessera_ledger::storage::{DealTerms, PackMember, PieceMeta, SegmentPieces, StorageMsg, MAX_SEGMENTS_PER_DEAL};
use tessera_ledger::Msg;
use tessera_storage::{Cid, ErasureScheme, Manifest, PieceEntry, SegmentCodec, SegmentEntry, SegmentReader};
use tessera_types::{Address, Amount, Hash32};

use crate::api::{DealDto, ProviderDto};
use crate::{fetch_piece, upload_piece, Client};

/// Default segment size: each piece of a 4+2 segment is 1 MiB. Pieces are what
/// the ledger challenges every epoch, so bigger pieces mean fewer proofs per
/// stored byte (a proof is about 40 KB whatever the piece's size).
pub const DEFAULT_SEGMENT_BYTES: usize = 4 << 20;

/// Segments a large file is cut into at most when no segment size is asked
/// for (`segment_bytes_for`).
pub const AUTO_SEGMENTS: u64 = 256;

/// The largest segment `segment_bytes_for` picks: what an upload or a read
/// holds in memory per segment in flight (a 4+2 piece of it is 16 MiB).
pub const MAX_AUTO_SEGMENT_BYTES: usize = 64 << 20;

/// The segment size for a file of `len` bytes when none is asked for:
/// `DEFAULT_SEGMENT_BYTES` up to 1 GiB, then whole MiB so that the file is
/// about `AUTO_SEGMENTS` segments, up to `MAX_AUTO_SEGMENT_BYTES`; a multiple
/// of 2K. Every piece is proven each epoch at about the same cost whatever
/// its size, so a 10 GiB file in 40 MiB segments puts 1,536 pieces (4+2) on
/// the chain's proof budget instead of 15,360.
pub fn segment_bytes_for(len: u64, scheme: ErasureScheme) -> usize {
    const MIB: u64 = 1 << 20;
    let wanted = len.div_ceil(AUTO_SEGMENTS).div_ceil(MIB).saturating_mul(MIB);
    let bytes = usize::try_from(wanted).unwrap_or(usize::MAX).clamp(DEFAULT_SEGMENT_BYTES, MAX_AUTO_SEGMENT_BYTES);
    round_segment_bytes(bytes, scheme)
}

/// `bytes` rounded up to a multiple of 2K, the segment sizes `scheme` cuts evenly.
pub fn round_segment_bytes(bytes: usize, scheme: ErasureScheme) -> usize {
    let k2 = 2 * scheme.data.max(1) as usize;
    bytes.div_ceil(k2) * k2
}

pub struct PutOptions {
    pub scheme: ErasureScheme,
    pub segment_bytes: usize,
    pub duration_blocks: u64,
    pub max_price_per_gib_block: Amount,
}

pub struct PutResult {
    pub cid: Cid,
    pub bytes: u64,
    pub deals: Vec<u64>,
    /// Pieces that could not be uploaded (their providers rebuild them later).
    pub missed_pieces: usize,
}

/// Fee of each storage transaction (a deal's `CreateDeal`, `EndDeal`).
pub const DEAL_FEE: Amount = Amount::from_micro(1_000);

fn submit_and_wait(client: &Client, key: &KeyPair, msg: Msg) -> anyhow::Result<crate::api::TxResultDto> {
    let chain_id = client.status()?.chain_id;
    let hash = client.sign_and_submit(key, &chain_id, DEAL_FEE, msg)?;
    let r = client.wait_for_tx(&hash, Duration::from_secs(60))?;
    anyhow::ensure!(r.code == 0, "{}", r.log);
    Ok(r)
}

/// Providers' endpoints looked up lately in this process, by node and
/// provider: a process that reads or stores many objects (the S3 endpoint)
/// asks the node once per provider every `ENDPOINT_TTL`, not once per object.
static KNOWN_ENDPOINTS: std::sync::LazyLock<std::sync::Mutex<KnownEndpoints>> = std::sync::LazyLock::new(Default::default);
/// (node URL, provider) -> (endpoint, when it was looked up).
type KnownEndpoints = std::collections::HashMap<(String, Address), (String, std::time::Instant)>;
const ENDPOINT_TTL: Duration = Duration::from_secs(10);

fn endpoint(client: &Client, cache: &mut BTreeMap<Address, String>, provider: &Address) -> anyhow::Result<String> {
    if let Some(e) = cache.get(provider) {
        return Ok(e.clone());
    }
    let known_key = (client.base_url().to_string(), *provider);
    let known = KNOWN_ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner()).get(&known_key).filter(|(_, at)| at.elapsed() < ENDPOINT_TTL).map(|(e, _)| e.clone());
    let e = match known {
        Some(e) => e,
        None => {
            let p: ProviderDto = client.get(&format!("/providers/{provider}"))?;
            let e = p.info.endpoints.first().cloned().ok_or_else(|| anyhow::anyhow!("provider {provider} lists no endpoint"))?;
            KNOWN_ENDPOINTS.lock().unwrap_or_else(|p| p.into_inner()).insert(known_key, (e.clone(), std::time::Instant::now()));
            e
        }
    };
    cache.insert(*provider, e.clone());
    Ok(e)
}

fn open_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Pass 1, without the network: the manifest of a file, and so its content id.
pub fn manifest_of_file(path: &Path, opts: &PutOptions, progress: &mut dyn FnMut(&str, u64, u64)) -> anyhow::Result<Manifest> {
    let file = open_file(path)?;
    let total = file.metadata()?.len();
    anyhow::ensure!(total > 0, "{} is empty; there is nothing to store", path.display());
    let mut reader = SegmentReader::new(std::io::BufReader::new(file), opts.scheme, opts.segment_bytes)?.expecting(total);
    let mut done = 0;
    while let Some(entry) = reader.skim() {
        done += entry?.len;
        progress("encoding", done, total);
    }
    Ok(reader.manifest())
}

/// The manifest of bytes held in memory (a small object's body), as
/// `manifest_of_file` would compute it for a file holding them.
pub fn manifest_of_bytes(bytes: &[u8], opts: &PutOptions) -> anyhow::Result<Manifest> {
    anyhow::ensure!(!bytes.is_empty(), "the body is empty; there is nothing to store");
    let mut reader = SegmentReader::new(bytes, opts.scheme, opts.segment_bytes)?.expecting(bytes.len() as u64);
    while let Some(entry) = reader.skim() {
        entry?;
    }
    Ok(reader.manifest())
}

/// The escrow the deals of `manifest` lock (their price ceiling for the whole duration).
pub fn escrow_of(manifest: &Manifest, opts: &PutOptions) -> Option<Amount> {
    manifest.segments.chunks(MAX_SEGMENTS_PER_DEAL).try_fold(Amount::ZERO, |sum, segs| {
        let piece_bytes = segs.iter().flat_map(|s| s.pieces.iter().map(|p| p.len)).sum::<u64>();
        sum.checked_add(tessera_ledger::storage::deal_escrow(opts.max_price_per_gib_block, piece_bytes, opts.duration_blocks)?)
    })
}

/// The pieces of `segs`, the segments of a manifest from number `first` on.
fn segment_pieces(segs: &[SegmentEntry], first: usize) -> Vec<SegmentPieces> {
    segs.iter()
        .enumerate()
        .map(|(i, s)| SegmentPieces {
            segment: (first + i) as u32,
            len: s.len,
            hash: s.hash,
            pieces: s.pieces.iter().map(|p| PieceMeta { hash: p.hash, len: p.len }).collect(),
        })
        .collect()
}

/// One `CreateDeal` per group of segments (the ledger places each segment's
/// pieces); a pack (`members` not empty) is one `CreatePack`.
fn deal_msgs(manifest: &Manifest, opts: &PutOptions, members: &[PackMember]) -> anyhow::Result<Vec<Msg>> {
    let cid = manifest.cid();
    let terms = |segments| DealTerms {
        cid: cid.0,
        scheme: opts.scheme,
        segment_bytes: manifest.segment_bytes,
        segments,
        duration_blocks: opts.duration_blocks,
        max_price_per_gib_block: opts.max_price_per_gib_block,
    };
    if !members.is_empty() {
        anyhow::ensure!(
            manifest.segments.len() <= MAX_SEGMENTS_PER_DEAL,
            "a pack fits one deal: at most {MAX_SEGMENTS_PER_DEAL} segments of {} bytes",
            manifest.segment_bytes
        );
        return Ok(vec![Msg::Storage(StorageMsg::CreatePack { terms: terms(segment_pieces(&manifest.segments, 0)), members: members.to_vec() })]);
    }
    Ok(manifest
        .segments
        .chunks(MAX_SEGMENTS_PER_DEAL)
        .enumerate()
        .map(|(g, segs)| {
            Msg::Storage(StorageMsg::CreateDeal(terms(segment_pieces(segs, g * MAX_SEGMENTS_PER_DEAL))))
        })
        .collect())
}

/// The deal a committed `CreateDeal` opened.
fn deal_of(client: &Client, hash: &Hash32) -> anyhow::Result<DealDto> {
    let r = client.wait_for_tx(hash, Duration::from_secs(60))?;
    anyhow::ensure!(r.code == 0, "storage deal refused: {}", r.log);
    let id = r.event_id("storage.deal_created", "deal").ok_or_else(|| anyhow::anyhow!("deal created without an id event"))?;
    Ok(client.get(&format!("/deals/{id}?members=false"))?)
}

/// Pass 2: the pieces, to the providers the deals name; returns the pieces
/// that did not arrive (their providers rebuild them later).
fn upload_pieces(
    client: &Client,
    path: &Path,
    manifest: &Manifest,
    deals: &[DealDto],
    endpoints: &mut BTreeMap<Address, String>,
    unchanged: bool,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<usize> {
    let mut missed = 0;
    let k = manifest.scheme.data as usize;
    let file = std::io::BufReader::new(open_file(path)?);
    let reader = if unchanged { SegmentReader::again_unchanged(file, manifest)? } else { SegmentReader::again(file, manifest)? };
    let mut done = 0;
    for seg in reader {
        let seg = seg.map_err(|e| anyhow::anyhow!("{} changed while it was being stored: {e}", path.display()))?;
        let deal = &deals[seg.index as usize / MAX_SEGMENTS_PER_DEAL];
        // The segment's pieces go to their (distinct) providers at once.
        let targets: Vec<(Option<String>, &crate::api::DealPieceDto)> = deal
            .pieces
            .iter()
            .filter(|p| p.segment == seg.index as u32)
            .map(|p| (endpoint(client, endpoints, &p.provider).ok(), p))
            .collect();
        let uploaded = std::thread::scope(|scope| {
            let uploads: Vec<_> = targets
                .iter()
                .map(|(e, p)| {
                    let bytes = seg.piece(p.index as usize);
                    scope.spawn(move || e.as_deref().is_some_and(|e| upload_piece(e, &p.hash, deal.id, bytes).is_ok()))
                })
                .collect();
            uploads.into_iter().map(|u| u.join()).filter(|r| matches!(r, Ok(true))).count()
        });
        missed += targets.len() - uploaded;
        anyhow::ensure!(uploaded >= k, "segment {}: only {uploaded} pieces reached their providers; {k} are needed", seg.index);
        done += seg.entry.len;
        progress("uploading", done, manifest.total_len);
    }
    Ok(missed)
}

pub fn put(
    client: &Client,
    key: &KeyPair,
    path: &Path,
    opts: &PutOptions,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<PutResult> {
    put_many(client, key, &[path], opts, progress).pop().expect("one result per file")
}

/// Stores several files, paid by `key`, with their deals in as few blocks as
/// possible: every file's deals are submitted before any is waited for.
/// Returns one result per file, in order; one file's failure does not stop
/// the others.
pub fn put_many(
    client: &Client,
    key: &KeyPair,
    paths: &[&Path],
    opts: &PutOptions,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Vec<anyhow::Result<PutResult>> {
    let contents: Vec<Content> = paths.iter().map(|path| Content { path, members: Vec::new(), manifest: None, unchanged: false }).collect();
    put_contents(client, key, &contents, opts, None, progress)
}

/// A file to store; a pack when `members` names the objects it holds end to
/// end (each then found by its own content id, see [`get`]).
pub struct Content<'a> {
    pub path: &'a Path,
    pub members: Vec<PackMember>,
    /// The file's manifest if already computed (with these options); the
    /// upload still checks every segment's hash against it, unless
    /// `unchanged`.
    pub manifest: Option<Manifest>,
    /// The manifest was computed from this very file and nothing changes it
    /// (`SegmentReader::again_unchanged`): its segments are not hashed again.
    pub unchanged: bool,
}

/// A bound on the files that callers of [`put_contents`] sharing it upload
/// at once (each holds one erasure-coded segment in memory meanwhile), so
/// that many of them can wait for their deals' block side by side.
pub struct UploadGate {
    free: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

impl UploadGate {
    pub fn new(at_once: usize) -> UploadGate {
        UploadGate { free: std::sync::Mutex::new(at_once.max(1)), freed: std::sync::Condvar::new() }
    }

    /// Waits for a turn to upload; it ends when the guard drops.
    fn enter(&self) -> UploadTurn<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        UploadTurn(self)
    }
}

struct UploadTurn<'a>(&'a UploadGate);

impl Drop for UploadTurn<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// [`put_many`] over files and packs.
pub fn put_contents(
    client: &Client,
    key: &KeyPair,
    contents: &[Content],
    opts: &PutOptions,
    uploads: Option<&UploadGate>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Vec<anyhow::Result<PutResult>> {
    let submitted = submit_contents(client, key, contents, opts, progress);
    upload_contents(client, key, contents, submitted, uploads, progress)
}

/// Deals submitted for contents, not yet on the ledger: per content, its
/// manifest and its deals' transactions (or why it has none).
pub struct Submitted(Vec<anyhow::Result<(Manifest, Vec<Hash32>)>>);

/// The first half of [`put_contents`]: each content's manifest (pass 1,
/// unless known), then all their deals' transactions, submitted at once.
pub fn submit_contents(client: &Client, key: &KeyPair, contents: &[Content], opts: &PutOptions, progress: &mut dyn FnMut(&str, u64, u64)) -> Submitted {
    let chain_id = match client.status() {
        Ok(s) => s.chain_id,
        Err(e) => return Submitted(contents.iter().map(|_| Err(anyhow::anyhow!("{e}"))).collect()),
    };
    // Pass 1 for every file, then all their deals' transactions.
    let mut manifests: Vec<anyhow::Result<Manifest>> = contents
        .iter()
        .map(|c| match &c.manifest {
            Some(m) => Ok(m.clone()),
            None => manifest_of_file(c.path, opts, progress),
        })
        .collect();
    let mut msgs: Vec<(usize, Msg)> = Vec::new();
    for (i, m) in manifests.iter_mut().enumerate() {
        let Ok(manifest) = m else { continue };
        match deal_msgs(manifest, opts, &contents[i].members) {
            Ok(list) => msgs.extend(list.into_iter().map(|msg| (i, msg))),
            Err(e) => *m = Err(e),
        }
    }
    let (owners, msgs): (Vec<usize>, Vec<Msg>) = msgs.into_iter().unzip();
    let mut hashes: Vec<anyhow::Result<Vec<Hash32>>> = contents.iter().map(|_| Ok(Vec::new())).collect();
    // One turn for the whole list: its transactions take consecutive nonces.
    let submitted = client.sign_and_submit_many(key, &chain_id, DEAL_FEE, msgs);
    for (i, h) in owners.into_iter().zip(submitted) {
        match (&mut hashes[i], h) {
            (Ok(list), Ok(h)) => list.push(h),
            (slot @ Ok(_), Err(e)) => *slot = Err(anyhow::anyhow!("storage deal refused: {e}")),
            (Err(_), _) => {}
        }
    }
    Submitted(manifests.into_iter().zip(hashes).map(|(m, h)| Ok((m?, h?))).collect())
}

/// The second half of [`put_contents`]: once each content's deals are on
/// the ledger, its pieces go to the providers they name (pass 2). A content
/// whose upload fails (too few pieces of a segment arrived, or the file
/// changed) cannot be read from the deals it opened: `key` ends them, so
/// their escrow returns instead of paying for pieces nobody can use.
pub fn upload_contents(
    client: &Client,
    key: &KeyPair,
    contents: &[Content],
    submitted: Submitted,
    uploads: Option<&UploadGate>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Vec<anyhow::Result<PutResult>> {
    let submitted = submitted.0;
    // Pass 2 once each file's deals are on the ledger.
    let mut endpoints = BTreeMap::new();
    let finish = |(path, unchanged): (&Path, bool), submitted: anyhow::Result<(Manifest, Vec<Hash32>)>, endpoints: &mut BTreeMap<Address, String>, progress: &mut dyn FnMut(&str, u64, u64)| {
        let (manifest, hashes) = submitted?;
        let deals = hashes.iter().map(|h| deal_of(client, h)).collect::<anyhow::Result<Vec<_>>>()?;
        let _turn = uploads.map(UploadGate::enter);
        let missed = match upload_pieces(client, path, &manifest, &deals, endpoints, unchanged, progress) {
            Ok(missed) => missed,
            Err(e) => {
                let ended = deals.iter().filter(|d| submit_and_wait(client, key, Msg::Storage(StorageMsg::EndDeal { deal: d.id })).is_ok()).count();
                return Err(e.context(format!("{ended} of its {} deals ended", deals.len())));
            }
        };
        Ok(PutResult { cid: manifest.cid(), bytes: manifest.total_len, deals: deals.iter().map(|d| d.id).collect(), missed_pieces: missed })
    };
    let files: Vec<(&Path, bool)> = contents.iter().map(|c| (c.path, c.unchanged && c.manifest.is_some())).collect();
    if files.len() == 1 {
        return files.iter().zip(submitted).map(|(file, s)| finish(*file, s, &mut endpoints, progress)).collect();
    }
    // Several files: a few at a time, each with its own endpoint cache.
    let mut results = Vec::with_capacity(files.len());
    let mut submitted = submitted.into_iter();
    for group in files.chunks(PARALLEL_FILES) {
        let jobs: Vec<_> = group.iter().zip(submitted.by_ref()).collect();
        let done: Vec<anyhow::Result<PutResult>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(file, s)| {
                    let mut endpoints = endpoints.clone();
                    let finish = &finish;
                    scope.spawn(move || (finish(*file, s, &mut endpoints, &mut |_, _, _| {}), endpoints))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok((r, seen)) => {
                        endpoints.extend(seen);
                        r
                    }
                    Err(_) => Err(anyhow::anyhow!("an upload thread panicked")),
                })
                .collect()
        });
        for r in done {
            if let Ok(r) = &r {
                progress("uploading", r.bytes, r.bytes);
            }
            results.push(r);
        }
    }
    results
}

/// Files of one `put_many` uploaded at once.
const PARALLEL_FILES: usize = 4;

/// Every deal (active or ended) of a content id.
pub fn deals_of(client: &Client, cid: &Cid) -> anyhow::Result<Vec<DealDto>> {
    let deals: Vec<DealDto> = client.get(&format!("/deals?cid={}", cid.0))?;
    Ok(deals.into_iter().filter(|d| d.cid == cid.0).collect())
}

/// Active deals of a content id, and the manifest they describe (checked
/// against the id).
pub fn manifest_of(client: &Client, cid: &Cid) -> anyhow::Result<(Manifest, Vec<DealDto>)> {
    manifest_from(cid, deals_of(client, cid)?.into_iter().filter(|d| d.active).collect())
}

/// The manifest that active deals `deals` of content `cid` describe, checked against the id.
pub fn manifest_from(cid: &Cid, deals: Vec<DealDto>) -> anyhow::Result<(Manifest, Vec<DealDto>)> {
    anyhow::ensure!(!deals.is_empty(), "no active storage deal holds {cid}");
    let scheme: ErasureScheme = deals[0].erasure.parse().map_err(anyhow::Error::msg)?;
    let mut segments: BTreeMap<u32, SegmentEntry> = BTreeMap::new();
    for d in &deals {
        for (n, len, hash) in &d.segments {
            let mut pieces: Vec<&crate::api::DealPieceDto> = d.pieces.iter().filter(|p| p.segment == *n).collect();
            pieces.sort_by_key(|p| p.index);
            let pieces = pieces.iter().map(|p| PieceEntry { hash: p.hash, len: p.len }).collect();
            segments.insert(*n, SegmentEntry { len: *len, hash: *hash, pieces });
        }
    }
    anyhow::ensure!(segments.keys().copied().eq(0..segments.len() as u32), "the deals of {cid} do not cover every segment");
    let manifest = Manifest {
        total_len: segments.values().map(|s| s.len).sum(),
        segment_bytes: deals[0].segment_bytes,
        scheme,
        segments: segments.into_values().collect(),
    };
    anyhow::ensure!(manifest.cid() == *cid, "the deals' manifest does not hash to {cid}");
    Ok((manifest, deals))
}

/// Where a content id is stored, from one look-up: the active deals of the
/// content itself, and the active pack deals holding it as an object (each
/// with the object's place in it), newest first. (A pack whose uploads were
/// cut short, say by a crash of its uploader, is followed by another one
/// holding the same objects.)
pub struct Holders {
    pub own: Vec<DealDto>,
    pub packs: Vec<(DealDto, PackMember)>,
}

pub fn holders(client: &Client, cid: &Cid) -> anyhow::Result<Holders> {
    let deals: Vec<DealDto> = client.get(&format!("/deals?cid={}", cid.0))?;
    let (own, others): (Vec<DealDto>, Vec<DealDto>) = deals.into_iter().filter(|d| d.active).partition(|d| d.cid == cid.0);
    let mut packs: Vec<(DealDto, PackMember)> = others
        .into_iter()
        .filter_map(|d| {
            let m = d.members.iter().find(|m| m.cid == cid.0)?.clone();
            Some((d, m))
        })
        .collect();
    packs.sort_by_key(|(d, _)| std::cmp::Reverse(d.id));
    Ok(Holders { own, packs })
}

/// The manifest of a pack from its deal (a pack fits one deal).
pub fn pack_manifest(pack: &DealDto) -> anyhow::Result<(Manifest, Vec<DealDto>)> {
    manifest_from(&Cid(pack.cid), vec![pack.clone()])
}

/// The segments of a manifest that hold plain bytes `offset..offset + len`,
/// each with the part of it that falls in the range.
pub fn segments_covering(manifest: &Manifest, offset: u64, len: u64) -> Vec<(usize, std::ops::Range<usize>)> {
    let end = offset + len;
    let mut start_of = 0u64;
    let mut out = Vec::new();
    for (n, seg) in manifest.segments.iter().enumerate() {
        let (lo, hi) = (start_of, start_of + seg.len);
        start_of = hi;
        if hi <= offset || lo >= end {
            continue;
        }
        out.push((n, (offset.max(lo) - lo) as usize..(end.min(hi) - lo) as usize));
    }
    out
}

/// Fetches content `cid` into `out`: written whole or not at all, every
/// segment checked against the manifest, the manifest against the content
/// id. An object stored inside a pack is cut from the pack's segments and
/// then checked against its own content id.
pub fn get(client: &Client, cid: &Cid, out: &Path, progress: &mut dyn FnMut(&str, u64, u64)) -> anyhow::Result<u64> {
    write_whole(out, |file| stream(client, cid, 0..u64::MAX, progress, &mut |bytes, range| Ok(file.write_all(&bytes[range])?)))
}

/// Where [`stream`] hands checked bytes: `bytes[range]` is the next run of
/// them, `bytes` whole so that it can be passed on without a copy.
pub type Sink<'a> = dyn FnMut(Vec<u8>, std::ops::Range<usize>) -> anyhow::Result<()> + 'a;

/// Hands `sink` bytes `range` of content `cid` (the range's end cut to the
/// content's length) in order, as they arrive and pass their checks: each
/// segment against the manifest, checked against the content id, before any
/// of it; an object inside a pack whole, against its own content id. Deals
/// of its own are read first, then each pack holding it (an uploader cut
/// short by a crash can leave a deal whose pieces never arrived, and the
/// content is then stored again); when one fails part way, the next carries
/// on from the first byte not yet handed over. An error of `sink` ends it
/// at once. Returns the bytes handed over.
pub fn stream(client: &Client, cid: &Cid, range: std::ops::Range<u64>, progress: &mut dyn FnMut(&str, u64, u64), sink: &mut Sink<'_>) -> anyhow::Result<u64> {
    let Holders { own, packs } = holders(client, cid)?;
    let (done, sink_failed) = (std::cell::Cell::new(0u64), std::cell::Cell::new(false));
    let mut counted = |bytes: Vec<u8>, part: std::ops::Range<usize>| {
        let len = part.len() as u64;
        sink(bytes, part).inspect_err(|_| sink_failed.set(true))?;
        done.set(done.get() + len);
        Ok(())
    };
    if packs.is_empty() {
        stream_own(client, cid, own, range, progress, &mut counted)?;
        return Ok(done.get());
    }
    let mut failures = Vec::new();
    let mut own = (!own.is_empty()).then_some(own);
    let sources = own.is_some().then_some(None).into_iter().chain(packs.iter().map(Some));
    for source in sources {
        let from = range.start.saturating_add(done.get());
        let attempt = match source {
            None => stream_own(client, cid, own.take().unwrap_or_default(), from..range.end, progress, &mut counted)
                .map_err(|e| format!("its own deals: {e:#}")),
            Some((pack, member)) => {
                stream_member(client, cid, pack, member, from..range.end, &mut counted).map_err(|e| format!("pack deal {}: {e:#}", pack.id))
            }
        };
        match attempt {
            Ok(()) => return Ok(done.get()),
            Err(e) if sink_failed.get() => anyhow::bail!("{e}"),
            Err(e) => failures.push(e),
        }
    }
    anyhow::bail!("{cid} could not be read: {}", failures.join("; "))
}

/// Bytes `range` of content `cid` from the deals that hold it under its own id.
fn stream_own(
    client: &Client,
    cid: &Cid,
    own: Vec<DealDto>,
    range: std::ops::Range<u64>,
    progress: &mut dyn FnMut(&str, u64, u64),
    sink: &mut Sink<'_>,
) -> anyhow::Result<()> {
    let (manifest, deals) = manifest_from(cid, own)?;
    let end = range.end.min(manifest.total_len);
    let (total, mut done) = (end.saturating_sub(range.start), 0);
    let parts = segments_covering(&manifest, range.start, total);
    fetch_segments(client, &manifest, &deals, parts.into_iter(), &mut |bytes, part| {
        done += part.len() as u64;
        sink(bytes, part)?;
        progress("downloading", done, total);
        Ok(())
    })
}

/// The most bytes of a packed object checked in memory (the endpoint packs
/// objects of up to a MiB).
const MEMBER_CHECK_MAX: u64 = 64 << 20;

/// The content id of an object's bytes `bytes` cut from a pack: made in the
/// pack's segment size and scheme, as the object's own id was.
pub fn member_cid(bytes: &[u8], pack: &Manifest) -> anyhow::Result<Cid> {
    let opts = PutOptions { scheme: pack.scheme, segment_bytes: pack.segment_bytes as usize, duration_blocks: 1, max_price_per_gib_block: Amount::ZERO };
    Ok(manifest_of_bytes(bytes, &opts)?.cid())
}

/// Bytes `range` of object `cid` inside `pack`: the object is cut from the
/// pack's segments and checked against its own content id (the ledger holds
/// what the pack's owner said) before any of it is handed over.
fn stream_member(client: &Client, cid: &Cid, pack: &DealDto, member: &PackMember, range: std::ops::Range<u64>, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    // The deal came with the look-up.
    let (manifest, deals) = pack_manifest(pack)?;
    anyhow::ensure!(member.len <= MEMBER_CHECK_MAX, "its member {cid} is {} bytes, more than a packed object can be", member.len);
    let mut bytes = Vec::with_capacity(member.len as usize);
    let parts = segments_covering(&manifest, member.offset, member.len);
    fetch_segments(client, &manifest, &deals, parts.into_iter(), &mut |got, part| {
        bytes.extend_from_slice(&got[part]);
        Ok(())
    })?;
    anyhow::ensure!(bytes.len() as u64 == member.len, "the pack ends before its member {cid}");
    let found = member_cid(&bytes, &manifest)?;
    anyhow::ensure!(found == *cid, "its bytes for {cid} hash to {found}; the pack's owner recorded a wrong member");
    let end = range.end.min(member.len) as usize;
    let start = (range.start as usize).min(end);
    sink(bytes, start..end)
}

fn part_name(out: &Path) -> String {
    format!(".{}.part", out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "download".into()))
}

/// Runs `write` on `<out's dir>/.<name>.part`, syncs it and renames it to
/// `out`; on any error the part file goes and `out` is untouched.
fn write_whole(out: &Path, write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<u64>) -> anyhow::Result<u64> {
    let part = out.with_file_name(part_name(out));
    let result = (|| -> anyhow::Result<u64> {
        let mut file = std::fs::File::create(&part).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", part.display()))?;
        let n = write(&mut file)?;
        file.sync_all()?;
        Ok(n)
    })();
    match result {
        Ok(n) => {
            std::fs::rename(&part, out).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Segments fetched at once (memory: this many segments and their pieces).
const PARALLEL_SEGMENTS: usize = 4;

/// The most bytes [`stream`] holds at once for `len` bytes of content cut
/// into `segment_bytes` segments: the segments it fetches side by side (as
/// many as the range can touch, unaligned, up to `PARALLEL_SEGMENTS`), each
/// with every piece of `scheme` in the worst case (data pieces that fail
/// are made up from parity). Pieces the sink still holds are the sink's.
pub fn stream_memory(len: u64, segment_bytes: usize, scheme: ErasureScheme) -> u64 {
    let seg = segment_bytes.max(1) as u64;
    let touched = len.div_ceil(seg).saturating_add(1).min(PARALLEL_SEGMENTS as u64);
    let pieces = u64::from(scheme.data) + u64::from(scheme.parity);
    touched * scheme.shard_bytes(segment_bytes) as u64 * pieces
}

/// Fetches the given segments of `manifest` from the providers `deals` name
/// (any K pieces each, data pieces first; a few segments at once) and hands
/// `sink` the given byte range of each, in order. Every piece is checked
/// against its hash in the manifest as it arrives, so the K data pieces of a
/// segment are its bytes as they are, handed over one by one without a copy;
/// a segment rebuilt from parity is checked against its own hash as well.
fn fetch_segments(
    client: &Client,
    manifest: &Manifest,
    deals: &[DealDto],
    wanted: impl Iterator<Item = (usize, std::ops::Range<usize>)>,
    sink: &mut Sink<'_>,
) -> anyhow::Result<()> {
    let k = manifest.scheme.data as usize;
    let mut endpoints = BTreeMap::new();
    let mut codec = SegmentCodec::new(manifest.scheme)?;
    let wanted: Vec<(usize, std::ops::Range<usize>)> = wanted.collect();
    for group in wanted.chunks(PARALLEL_SEGMENTS) {
        // Each segment's pieces in every deal that holds it, newest deal
        // first: an uploader cut short (a crash) leaves a deal whose pieces
        // never arrived, and the content's next deal holds them.
        let plans: Vec<Vec<Targets>> = group
            .iter()
            .map(|(n, _)| {
                let mut holding: Vec<&DealDto> = deals.iter().filter(|d| d.segments.iter().any(|(s, _, _)| *s == *n as u32)).collect();
                holding.sort_by_key(|d| std::cmp::Reverse(d.id));
                holding
                    .into_iter()
                    .map(|deal| {
                        let mut pieces: Vec<&crate::api::DealPieceDto> = deal.pieces.iter().filter(|p| p.segment == *n as u32).collect();
                        pieces.sort_by_key(|p| p.index);
                        pieces.into_iter().map(|p| (endpoint(client, &mut endpoints, &p.provider).ok(), p)).collect()
                    })
                    .collect()
            })
            .collect();
        let fetched: Vec<Fetched> = std::thread::scope(|scope| {
            let handles: Vec<_> = plans
                .iter()
                .zip(group)
                .map(|(holders, (n, range))| {
                    let seg_len = manifest.segments[*n].len as usize;
                    scope.spawn(move || {
                        let mut most = Vec::new();
                        for targets in holders {
                            if let Some(bytes) = fetch_range(targets, manifest.scheme, seg_len, range) {
                                return Fetched::Range(bytes);
                            }
                            let have = fetch_any_k(targets, k);
                            if have.len() >= k {
                                return Fetched::Pieces(have);
                            }
                            if have.len() > most.len() {
                                most = have;
                            }
                        }
                        Fetched::Pieces(most)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(Fetched::Pieces(Vec::new()))).collect()
        });
        for ((n, range), got) in group.iter().zip(fetched) {
            let seg = &manifest.segments[*n];
            let mut have = match got {
                Fetched::Range(bytes) => {
                    let len = bytes.len();
                    sink(bytes, 0..len)?;
                    continue;
                }
                Fetched::Pieces(have) => have,
            };
            anyhow::ensure!(have.len() >= k, "segment {n}: only {} of the {k} pieces needed are reachable", have.len());
            let shard = manifest.scheme.shard_bytes(seg.len as usize);
            have.sort_by_key(|(i, _)| *i);
            if have.iter().take(k).enumerate().all(|(at, (i, b))| *i == at && b.len() == shard) {
                // Data piece i holds plain bytes [i*shard, (i+1)*shard).
                for (i, bytes) in have.into_iter().take(k) {
                    let (start, end) = (i * shard, (i + 1) * shard);
                    let (from, to) = (range.start.max(start), range.end.min(end));
                    if from < to {
                        sink(bytes, from - start..to - start)?;
                    }
                }
                continue;
            }
            let refs: Vec<(usize, &[u8])> = have.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            let plain = codec.decode(seg.len as usize, &refs)?;
            anyhow::ensure!(Hash32::blake3(&plain) == seg.hash, "segment {n} failed its hash check after decoding");
            sink(plain, range.clone())?;
        }
    }
    Ok(())
}

/// One deal's pieces of a segment, in index order, each with its provider's endpoint if known.
type Targets<'a> = Vec<(Option<String>, &'a crate::api::DealPieceDto)>;

/// What one segment's fetch brought: the wanted range itself, or pieces to decode.
enum Fetched {
    Range(Vec<u8>),
    Pieces(Vec<(usize, Vec<u8>)>),
}

/// The data pieces (first, last) that hold bytes `range` of a segment of
/// `seg_len` bytes: the code is systematic, data piece i holding plain bytes
/// [i*shard, (i+1)*shard). `None` for a whole segment, or a range that needs
/// every data piece anyway.
fn range_pieces(scheme: ErasureScheme, seg_len: usize, range: &std::ops::Range<usize>) -> Option<(usize, usize)> {
    if range.is_empty() || range.len() >= seg_len {
        return None;
    }
    let shard = scheme.shard_bytes(seg_len);
    let (first, last) = (range.start / shard, (range.end - 1) / shard);
    (last - first + 1 < scheme.data as usize).then_some((first, last))
}

/// Part of a segment (a packed object's bytes): only the data pieces that
/// hold `range` are fetched, each checked against its hash, and the range is
/// cut from them. `None` when that does not apply or one of them is
/// unreachable (then any K pieces are fetched and decoded).
fn fetch_range(
    targets: &[(Option<String>, &crate::api::DealPieceDto)],
    scheme: ErasureScheme,
    seg_len: usize,
    range: &std::ops::Range<usize>,
) -> Option<Vec<u8>> {
    let (first, last) = range_pieces(scheme, seg_len, range)?;
    let wanted: Vec<(Option<String>, &crate::api::DealPieceDto)> =
        targets.iter().filter(|(_, p)| (first..=last).contains(&(p.index as usize))).cloned().collect();
    let mut have = fetch_pieces(&wanted, last - first + 1);
    if have.len() < last - first + 1 {
        return None;
    }
    have.sort_by_key(|(i, _)| *i);
    cut_range(scheme.shard_bytes(seg_len), range, &have)
}

/// `range` of a segment out of its data pieces `have` (index, bytes), in order.
fn cut_range(shard: usize, range: &std::ops::Range<usize>, have: &[(usize, Vec<u8>)]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(range.len());
    for (i, bytes) in have {
        let (start, end) = (i * shard, (i + 1) * shard);
        let from = range.start.max(start) - start;
        let to = range.end.min(end) - start;
        out.extend_from_slice(bytes.get(from..to)?);
    }
    (out.len() == range.len()).then_some(out)
}

/// K pieces of one segment at once, data pieces first (no decoding work when
/// all arrive); the others only for those that did not.
fn fetch_any_k(targets: &[(Option<String>, &crate::api::DealPieceDto)], k: usize) -> Vec<(usize, Vec<u8>)> {
    let mut have: Vec<(usize, Vec<u8>)> = Vec::new();
    let split = k.min(targets.len());
    for wave in [&targets[..split], &targets[split..]] {
        let needed = k - have.len();
        have.extend(fetch_pieces(wave, needed));
        if have.len() >= k {
            break;
        }
    }
    have
}

/// Fetches the pieces of `targets` in parallel, `needed` at a time, until
/// `needed` of them arrived hash-checked; returns (piece index, bytes).
fn fetch_pieces(targets: &[(Option<String>, &crate::api::DealPieceDto)], needed: usize) -> Vec<(usize, Vec<u8>)> {
    let mut have = Vec::new();
    for chunk in targets.chunks(needed.max(1)) {
        if have.len() >= needed {
            break;
        }
        std::thread::scope(|scope| {
            let fetches: Vec<_> = chunk
                .iter()
                .map(|(e, p)| scope.spawn(move || e.as_deref().and_then(|e| fetch_piece(e, &p.hash).ok()).map(|b| (p.index as usize, b))))
                .collect();
            have.extend(fetches.into_iter().filter_map(|f| f.join().ok().flatten()));
        });
    }
    have.truncate(needed);
    have
}

/// Ends every active deal of `cid` owned by `key`. An object inside a pack
/// is refused: its deal holds other objects too.
pub fn remove(client: &Client, key: &KeyPair, cid: &Cid) -> anyhow::Result<usize> {
    let Holders { own, packs } = holders(client, cid)?;
    let mine: Vec<&DealDto> = own.iter().filter(|d| d.owner == key.address()).collect();
    if mine.is_empty()
        && let Some((pack, _)) = packs.first()
    {
        anyhow::bail!(
            "{cid} is stored inside pack {} (deal {}) with {} other objects; end the whole pack with `tessera storage rm {}`",
            Cid(pack.cid),
            pack.id,
            pack.packed.saturating_sub(1),
            Cid(pack.cid)
        );
    }
    anyhow::ensure!(!mine.is_empty(), "{} owns no active deal for {cid}", key.address());
    end_deals(client, key, &mine)
}

/// Ends `key`'s active deals for content `cid` itself that opened at chain
/// height `height` or later: those of an upload cut short before anything
/// recorded them. Returns how many.
pub fn end_deals_since(client: &Client, key: &KeyPair, cid: &Cid, height: u64) -> anyhow::Result<usize> {
    let own = holders(client, cid)?.own;
    end_deals(client, key, &own.iter().filter(|d| d.owner == key.address() && d.start >= height).collect::<Vec<_>>())
}

/// Ends `deals`, one after another, each once its block holds it.
fn end_deals(client: &Client, key: &KeyPair, deals: &[&DealDto]) -> anyhow::Result<usize> {
    for d in deals {
        submit_and_wait(client, key, Msg::Storage(StorageMsg::EndDeal { deal: d.id }))?;
    }
    Ok(deals.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_files_get_larger_segments_and_fewer_pieces_to_prove() {
        let s = ErasureScheme::DEVNET;
        assert_eq!(segment_bytes_for(0, s), DEFAULT_SEGMENT_BYTES);
        assert_eq!(segment_bytes_for(1 << 30, s), DEFAULT_SEGMENT_BYTES, "up to 1 GiB: 1 MiB pieces");
        assert_eq!(segment_bytes_for(10 << 30, s), 40 << 20);
        assert_eq!(((10u64 << 30) / (40 << 20)) * 6, 1_536, "10 GiB: 1,536 pieces to prove");
        assert_eq!(segment_bytes_for(1 << 40, s), MAX_AUTO_SEGMENT_BYTES);
        let odd = ErasureScheme { data: 3, parity: 2 };
        let b = segment_bytes_for(5 << 30, odd);
        assert_eq!(b % 6, 0, "a multiple of 2K");
        assert!((20 << 20..(20 << 20) + 6).contains(&b));
        assert!(segment_bytes_for(u64::MAX, odd) as u64 / 3 <= tessera_ledger::storage::MAX_PIECE_BYTES);
    }

    #[test]
    fn a_range_inside_a_segment_is_cut_from_the_data_pieces_that_hold_it() {
        let mut codec = SegmentCodec::new(ErasureScheme::DEVNET).unwrap();
        let segment: Vec<u8> = (0..10_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let pieces = codec.encode(&segment).unwrap().to_vecs();
        let shard = ErasureScheme::DEVNET.shard_bytes(segment.len());
        for range in [0..10, 100..shard + 50, shard * 2 - 1..shard * 3 + 1, 9_990..10_001, 5_000..5_001] {
            let (first, last) = range_pieces(ErasureScheme::DEVNET, segment.len(), &range).expect("fewer than K pieces");
            let have: Vec<(usize, Vec<u8>)> = (first..=last).map(|i| (i, pieces[i].clone())).collect();
            assert_eq!(cut_range(shard, &range, &have).unwrap(), segment[range.clone()], "{range:?}");
        }
        assert_eq!(range_pieces(ErasureScheme::DEVNET, segment.len(), &(0..10_001)), None, "a whole segment decodes");
        assert_eq!(range_pieces(ErasureScheme::DEVNET, segment.len(), &(10..9_990)), None, "every data piece: decode");
        let short: Vec<(usize, Vec<u8>)> = vec![(0, pieces[0][..10].to_vec())];
        assert_eq!(cut_range(shard, &(0..100), &short), None, "a short piece is refused");
    }

    #[test]
    fn a_members_range_maps_onto_the_segments_that_hold_it() {
        let seg = |len| SegmentEntry { len, hash: Hash32([0; 32]), pieces: Vec::new() };
        let manifest = Manifest { total_len: 2500, segment_bytes: 1000, scheme: ErasureScheme::DEVNET, segments: vec![seg(1000), seg(1000), seg(500)] };
        assert_eq!(segments_covering(&manifest, 0, 10), vec![(0, 0..10)]);
        assert_eq!(segments_covering(&manifest, 990, 20), vec![(0, 990..1000), (1, 0..10)]);
        assert_eq!(segments_covering(&manifest, 1000, 1000), vec![(1, 0..1000)]);
        assert_eq!(segments_covering(&manifest, 500, 2000), vec![(0, 500..1000), (1, 0..1000), (2, 0..500)]);
    }

    #[test]
    fn a_held_body_has_the_manifest_of_the_same_bytes_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let opts = PutOptions { scheme: ErasureScheme::DEVNET, segment_bytes: 1000, duration_blocks: 10, max_price_per_gib_block: Amount::from_micro(1) };
        for len in [1usize, 999, 1000, 4096] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let path = dir.path().join(format!("b{len}"));
            std::fs::write(&path, &bytes).unwrap();
            let held = manifest_of_bytes(&bytes, &opts).unwrap();
            assert_eq!(held.cid(), manifest_of_file(&path, &opts, &mut |_, _, _| {}).unwrap().cid(), "{len} bytes");
            assert_eq!(held.total_len, len as u64);
        }
        assert!(manifest_of_bytes(&[], &opts).is_err(), "an empty body has nothing to store");
    }

    #[test]
    fn an_upload_gate_lets_no_more_than_its_bound_in_at_once() {
        let gate = UploadGate::new(2);
        let inside = std::sync::atomic::AtomicUsize::new(0);
        let most = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    let _turn = gate.enter();
                    let now = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} uploads at once");
        assert_eq!(*gate.free.lock().unwrap(), 2, "every turn was given back");
    }
}
