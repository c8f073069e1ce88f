//! Storing and fetching content: `put` encodes a file in two streaming passes
//! (first the manifest and deals, then the pieces to the providers the ledger
//! chose); `get` rebuilds the manifest from the deals, checks it against the
//! content id, fetches any K pieces per segment and writes the file whole or
//! not at all. Memory stays at about one segment and its pieces.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tessera_crypto::KeyPair;
use tessera_ledger::storage::{PieceMeta, SegmentPieces, StorageMsg, MAX_SEGMENTS_PER_DEAL};
use tessera_ledger::Msg;
use tessera_storage::{Cid, ErasureScheme, Manifest, PieceEntry, SegmentCodec, SegmentEntry, SegmentReader};
use tessera_types::{Address, Amount, Hash32};

use crate::api::{DealDto, ProviderDto};
use crate::{fetch_piece, upload_piece, Client};

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

fn submit_and_wait(client: &Client, key: &KeyPair, msg: Msg) -> anyhow::Result<crate::api::TxResultDto> {
    let chain_id = client.status()?.chain_id;
    let hash = client.sign_and_submit(key, &chain_id, Amount::from_micro(1_000), msg)?;
    let r = client.wait_for_tx(&hash, Duration::from_secs(60))?;
    anyhow::ensure!(r.code == 0, "{}", r.log);
    Ok(r)
}

fn endpoint(client: &Client, cache: &mut BTreeMap<Address, String>, provider: &Address) -> anyhow::Result<String> {
    if let Some(e) = cache.get(provider) {
        return Ok(e.clone());
    }
    let p: ProviderDto = client.get(&format!("/providers/{provider}"))?;
    let e = p.info.endpoints.first().cloned().ok_or_else(|| anyhow::anyhow!("provider {provider} lists no endpoint"))?;
    cache.insert(*provider, e.clone());
    Ok(e)
}

pub fn put(
    client: &Client,
    key: &KeyPair,
    path: &Path,
    opts: &PutOptions,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> anyhow::Result<PutResult> {
    let open = || std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()));
    let total = open()?.metadata()?.len();
    anyhow::ensure!(total > 0, "{} is empty; there is nothing to store", path.display());

    // Pass 1: the manifest.
    let mut reader = SegmentReader::new(std::io::BufReader::new(open()?), opts.scheme, opts.segment_bytes)?;
    let mut done = 0;
    for seg in reader.by_ref() {
        done += seg?.entry.len;
        progress("encoding", done, total);
    }
    let manifest = reader.manifest();
    let cid = manifest.cid();

    // Deals: the ledger places each segment's pieces.
    let mut deals: Vec<DealDto> = Vec::new();
    for group in manifest.segments.chunks(MAX_SEGMENTS_PER_DEAL).enumerate().map(|(g, s)| (g * MAX_SEGMENTS_PER_DEAL, s)) {
        let (first, segs) = group;
        let segments = segs
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentPieces {
                segment: (first + i) as u32,
                len: s.len,
                hash: s.hash,
                pieces: s.pieces.iter().map(|p| PieceMeta { hash: p.hash, merkle_root: p.merkle_root, len: p.len }).collect(),
            })
            .collect();
        let msg = Msg::Storage(StorageMsg::CreateDeal {
            cid: cid.0,
            scheme: opts.scheme,
            segment_bytes: manifest.segment_bytes,
            segments,
            duration_blocks: opts.duration_blocks,
            max_price_per_gib_block: opts.max_price_per_gib_block,
        });
        let r = submit_and_wait(client, key, msg).map_err(|e| anyhow::anyhow!("storage deal refused: {e}"))?;
        let id: u64 = r
            .events
            .iter()
            .find(|e| e.kind == "storage.deal_created")
            .and_then(|e| e.get("deal"))
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("deal created without an id event"))?;
        deals.push(client.get(&format!("/deals/{id}"))?);
    }

    // Pass 2: the pieces, to the providers of the deals.
    let mut endpoints = BTreeMap::new();
    let mut missed = 0;
    let k = opts.scheme.data as usize;
    let mut reader = SegmentReader::new(std::io::BufReader::new(open()?), opts.scheme, opts.segment_bytes)?;
    let mut done = 0;
    for seg in reader.by_ref() {
        let seg = seg?;
        let want = &manifest.segments[seg.index as usize];
        anyhow::ensure!(seg.entry == *want, "{} changed while it was being stored", path.display());
        let deal = &deals[seg.index as usize / MAX_SEGMENTS_PER_DEAL];
        let mut uploaded = 0;
        for p in deal.pieces.iter().filter(|p| p.segment == seg.index as u32) {
            let bytes = &seg.pieces[p.index as usize];
            let ok = endpoint(client, &mut endpoints, &p.provider).and_then(|e| upload_piece(&e, &p.hash, bytes).map_err(Into::into));
            match ok {
                Ok(()) => uploaded += 1,
                Err(_) => missed += 1,
            }
        }
        anyhow::ensure!(uploaded >= k, "segment {}: only {uploaded} pieces reached their providers; {k} are needed", seg.index);
        done += seg.entry.len;
        progress("uploading", done, total);
    }
    Ok(PutResult { cid, bytes: total, deals: deals.iter().map(|d| d.id).collect(), missed_pieces: missed })
}

/// Active deals of a content id, and the manifest they describe (checked
/// against the id).
pub fn manifest_of(client: &Client, cid: &Cid) -> anyhow::Result<(Manifest, Vec<DealDto>)> {
    let deals: Vec<DealDto> = client.get::<Vec<DealDto>>("/deals")?.into_iter().filter(|d| d.cid == cid.0 && d.active).collect();
    anyhow::ensure!(!deals.is_empty(), "no active storage deal holds {cid}");
    let scheme: ErasureScheme = deals[0].erasure.parse().map_err(anyhow::Error::msg)?;
    let mut segments: BTreeMap<u32, SegmentEntry> = BTreeMap::new();
    for d in &deals {
        for (n, len, hash) in &d.segments {
            let mut pieces: Vec<&crate::api::DealPieceDto> = d.pieces.iter().filter(|p| p.segment == *n).collect();
            pieces.sort_by_key(|p| p.index);
            let pieces = pieces.iter().map(|p| PieceEntry { hash: p.hash, merkle_root: p.merkle_root, len: p.len }).collect();
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

pub fn get(client: &Client, cid: &Cid, out: &Path, progress: &mut dyn FnMut(&str, u64, u64)) -> anyhow::Result<u64> {
    let (manifest, deals) = manifest_of(client, cid)?;
    let k = manifest.scheme.data as usize;
    let mut endpoints = BTreeMap::new();
    let part = out.with_file_name(format!(
        ".{}.part",
        out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "download".into())
    ));
    let result = (|| -> anyhow::Result<u64> {
        let mut file = std::fs::File::create(&part).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", part.display()))?;
        let mut codec = SegmentCodec::new(manifest.scheme)?;
        let mut done = 0;
        for (n, seg) in manifest.segments.iter().enumerate() {
            let deal = deals.iter().find(|d| d.segments.iter().any(|(s, _, _)| *s == n as u32)).expect("manifest came from deals");
            let mut pieces: Vec<&crate::api::DealPieceDto> = deal.pieces.iter().filter(|p| p.segment == n as u32).collect();
            pieces.sort_by_key(|p| p.index);
            let mut have: Vec<(usize, Vec<u8>)> = Vec::new();
            for p in pieces {
                if have.len() >= k {
                    break;
                }
                let Ok(e) = endpoint(client, &mut endpoints, &p.provider) else { continue };
                if let Ok(bytes) = fetch_piece(&e, &p.hash) {
                    have.push((p.index as usize, bytes));
                }
            }
            anyhow::ensure!(have.len() >= k, "segment {n}: only {} of the {k} pieces needed are reachable", have.len());
            let refs: Vec<(usize, &[u8])> = have.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            let plain = codec.decode(seg.len as usize, &refs)?;
            anyhow::ensure!(Hash32::blake3(&plain) == seg.hash, "segment {n} failed its hash check after decoding");
            file.write_all(&plain)?;
            done += seg.len;
            progress("downloading", done, manifest.total_len);
        }
        file.sync_all()?;
        Ok(done)
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

/// Ends every active deal of `cid` owned by `key`.
pub fn remove(client: &Client, key: &KeyPair, cid: &Cid) -> anyhow::Result<usize> {
    let deals: Vec<DealDto> = client.get::<Vec<DealDto>>("/deals")?;
    let mine: Vec<&DealDto> = deals.iter().filter(|d| d.cid == cid.0 && d.active && d.owner == key.address()).collect();
    anyhow::ensure!(!mine.is_empty(), "{} owns no active deal for {cid}", key.address());
    for d in &mine {
        submit_and_wait(client, key, Msg::Storage(StorageMsg::EndDeal { deal: d.id }))?;
    }
    Ok(mine.len())
}
