//! Compaction of packs. Small objects share packs (one deal for many), and a
//! pack's deal used to last until its last object went: delete all but one
//! and the owner kept paying, and providers kept proving, for every byte.
//! Once at most half of a pack's bytes are still read, its live objects are
//! written into a new pack, checked against their content ids, and the old
//! pack's deal ends (its unspent escrow goes back to the owner). Nothing is
//! lost on a crash: the new pack is recorded only once it is stored, and the
//! old deal ends only after that; a pack whose live objects all sit in
//! another pack of its owner too just ends, and a restart looks at every
//! pack that shares objects with another. (A crash between the new pack's
//! deal and its record leaves that deal unrecorded; the index named it
//! before it opened (`Index::intend`), so the next start ends it, and the
//! old pack, still recorded, serves and is rewritten again.)

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_client::api::DealDto;
use tessera_ledger::storage::PackMember;
use tessera_storage::{Cid, Manifest};
use tessera_types::Hash32;

use crate::index::PackRecord;
use crate::service::Gateway;

/// A pack is rewritten once the objects only it holds are at most this
/// share of its bytes, in percent.
const LIVE_PERCENT_MAX: u64 = 50;
/// Packs waiting for a look; a deletion past it queues nothing (the next
/// deletion of one of its objects queues the pack again).
const QUEUE_MAX: usize = 1024;
/// Packs whose member lists are kept (they never change), so that deletions
/// trickling into one pack ask the node for its list once: at most 48 KiB
/// a pack, 12 MiB in all.
const MEMBER_LISTS_MAX: usize = 256;
/// The largest pack rewritten: it is read whole into memory, one at a time.
const PACK_READ_MAX: u64 = 64 << 20;
/// A pack is looked at once none of its objects has been deleted for this
/// long, so that a burst of deletions rewrites it once, not at every halving.
const SETTLE: Duration = Duration::from_secs(2);

/// Packs to look at, one at a time, each once however often it is asked
/// for, `SETTLE` after the last time.
#[derive(Default)]
pub struct Compactor {
    queue: Mutex<Queue>,
    ready: tokio::sync::Notify,
    members: Mutex<HashMap<[u8; 32], Arc<Vec<PackMember>>>>,
}

/// Packs in the order they were first kicked, each with when it was last.
#[derive(Default)]
struct Queue {
    order: VecDeque<[u8; 32]>,
    kicked: HashMap<[u8; 32], Instant>,
}

impl Compactor {
    /// Asks for pack `pack` to be looked at (an object in it lost its last reference).
    pub fn kick(&self, pack: [u8; 32]) {
        self.kick_at(pack, Instant::now());
    }

    fn kick_at(&self, pack: [u8; 32], now: Instant) {
        let mut queue = self.queue.lock().expect("compaction queue lock");
        if let Some(at) = queue.kicked.get_mut(&pack) {
            *at = now;
        } else if queue.order.len() < QUEUE_MAX {
            queue.kicked.insert(pack, now);
            queue.order.push_back(pack);
            drop(queue);
            self.ready.notify_one();
        }
    }

    /// The first pack due at `now`; else how long until one is (`None`: none queued).
    fn next(&self, now: Instant) -> Result<[u8; 32], Option<Duration>> {
        let mut queue = self.queue.lock().expect("compaction queue lock");
        let due = |at: Instant| (at + SETTLE).saturating_duration_since(now);
        let Some(i) = queue.order.iter().position(|p| due(queue.kicked[p]).is_zero()) else {
            return Err(queue.kicked.values().map(|&at| due(at)).min());
        };
        let pack = queue.order.remove(i).expect("found in the queue");
        queue.kicked.remove(&pack);
        Ok(pack)
    }

    /// How many packs wait for a look.
    pub fn queued(&self) -> usize {
        self.queue.lock().expect("compaction queue lock").order.len()
    }
}

/// Looks at the packs kicked, one at a time, until `stop` is set; first at
/// the packs that share an object with another, which a crash between a
/// rewritten pack's record and the old deal's end leaves behind.
pub async fn run(gateway: Arc<Gateway>, stop: Arc<AtomicBool>) {
    let index = gateway.index.clone();
    match tokio::task::spawn_blocking(move || index.packs_sharing_members(QUEUE_MAX)).await {
        Ok(Ok(packs)) => packs.into_iter().for_each(|p| gateway.compactor.kick(p)),
        Ok(Err(e)) => eprintln!("s3: cannot look for packs sharing objects: {e:#}"),
        Err(e) => eprintln!("s3: looking for packs sharing objects failed: {e}"),
    }
    while !stop.load(Ordering::Relaxed) {
        let pack = match gateway.compactor.next(Instant::now()) {
            Ok(pack) => pack,
            Err(wait) => {
                let wait = wait.unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
                let _ = tokio::time::timeout(wait, gateway.compactor.ready.notified()).await;
                continue;
            }
        };
        let g = gateway.clone();
        let name = Cid(Hash32(pack));
        match tokio::task::spawn_blocking(move || compact(&g, pack)).await {
            Ok(Ok(Some(done))) => eprintln!("s3: pack {name}: {done}"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => eprintln!("s3: cannot compact pack {name} (tried again at the next deletion in it): {e:#}"),
            Err(e) => eprintln!("s3: compacting pack {name} failed: {e}"),
        }
    }
}

/// What becomes of a pack.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Enough of it is still read.
    Keep,
    /// No object needs it any more (each live one sits in another pack too): its deal ends.
    End,
    /// These members (indexes) move into a new pack, then its deal ends.
    Rewrite(Vec<usize>),
}

/// The verdict on a pack from each member's length, whether an object
/// points at it, and whether another pack of its owner holds it too.
fn verdict(members: &[(u64, bool, bool)]) -> Verdict {
    let needed: Vec<usize> = (0..members.len()).filter(|&i| members[i].1 && !members[i].2).collect();
    if needed.is_empty() {
        return Verdict::End;
    }
    let total: u64 = members.iter().map(|m| m.0).sum();
    let kept: u64 = needed.iter().map(|&i| members[i].0).sum();
    if needed.len() == members.len() || kept.saturating_mul(100) > total.saturating_mul(LIVE_PERCENT_MAX) {
        return Verdict::Keep;
    }
    Verdict::Rewrite(needed)
}

/// Looks at pack `old`: keeps it, ends it, or rewrites it. Blocks (node
/// requests, the index, the pack's upload). Returns what it did.
fn compact(gateway: &Gateway, old: [u8; 32]) -> anyhow::Result<Option<String>> {
    let Some(record) = gateway.index.pack(&old)? else { return Ok(None) };
    let state = gateway.index.members_state(&old, &record.owner, &record.members)?;
    // Every object still needs this pack alone: nothing to ask the node.
    if state.iter().all(|&(live, elsewhere)| live && !elsewhere) {
        return Ok(None);
    }
    let node = &gateway.node;
    // Newest first: an uploader cut short by a crash leaves an older deal
    // of the same pack whose pieces never arrived.
    let deals = || -> anyhow::Result<Vec<DealDto>> {
        let mut own = tessera_client::storage::holders(node, &Cid(Hash32(old)))?.own;
        own.sort_by_key(|d| std::cmp::Reverse(d.id));
        Ok(own)
    };
    let own = deals()?;
    let Some(deal) = own.first() else {
        // Its deal already ended (a removal that went through before a crash).
        gateway.index.forget_pack(&old)?;
        return Ok(Some("its deal had ended; forgotten".into()));
    };
    let members = member_list(gateway, deal)?;
    let lens: HashMap<[u8; 32], (u64, u64)> = members.iter().map(|m| (m.cid.0, (m.offset, m.len))).collect();
    let facts: Vec<(u64, bool, bool)> = record
        .members
        .iter()
        .zip(&state)
        .map(|(cid, &(live, elsewhere))| (lens.get(cid).map_or(0, |l| l.1), live, elsewhere))
        .collect();
    let key = gateway.keyring.get(&record.owner)?;
    let end = |what: String| -> anyhow::Result<Option<String>> {
        // Unless its deals ended meanwhile (its last object deleted).
        if let Err(e) = tessera_client::storage::remove(node, &key, &Cid(Hash32(old)))
            && !deals()?.is_empty()
        {
            return Err(e);
        }
        gateway.index.forget_pack(&old)?;
        let ids: Vec<String> = own.iter().map(|d| d.id.to_string()).collect();
        Ok(Some(format!("{what}; deal {} ended", ids.join(", "))))
    };
    let needed = match verdict(&facts) {
        Verdict::Keep => return Ok(None),
        Verdict::End => return end("no object needs it any more".into()),
        Verdict::Rewrite(needed) => needed,
    };
    let total: u64 = facts.iter().map(|f| f.0).sum();
    anyhow::ensure!(total <= PACK_READ_MAX, "it holds {total} bytes, more than a pack rewritten here can ({PACK_READ_MAX})");
    // The whole pack, checked against its content id (each segment from the
    // newest of its deals that serves it).
    let mut bytes = Vec::with_capacity(total as usize);
    tessera_client::storage::stream(node, &Cid(Hash32(old)), 0..u64::MAX, &mut |_, _, _| {}, &mut |got, part| {
        anyhow::ensure!(bytes.len() + part.len() <= PACK_READ_MAX as usize, "the pack is longer than its deal says");
        bytes.extend_from_slice(&got[part]);
        Ok(())
    })?;
    let (manifest, _) = tessera_client::storage::pack_manifest(deal)?;
    // Each object moves in the segments its content id was made with (the
    // old pack's), and is checked against it before it does; the new deal
    // runs to the old one's end, the term its owner paid for.
    let left = deal.end.saturating_sub(node.status()?.height);
    anyhow::ensure!(left > 0, "its deal ends now");
    let opts = tessera_client::storage::PutOptions {
        scheme: manifest.scheme,
        segment_bytes: manifest.segment_bytes as usize,
        duration_blocks: left,
        max_price_per_gib_block: gateway.put_options.max_price_per_gib_block,
    };
    let path = gateway.staging.dir.join(format!(".compact-{}", hex::encode(&old[..8])));
    let written = (|| -> anyhow::Result<Vec<PackMember>> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut placed = Vec::with_capacity(needed.len());
        let mut offset = 0;
        for &i in &needed {
            let cid = record.members[i];
            let name = Cid(Hash32(cid));
            let (at, len) = *lens.get(&cid).ok_or_else(|| anyhow::anyhow!("the pack's deal does not list {name}"))?;
            let body = at.checked_add(len).and_then(|end| bytes.get(at as usize..end as usize));
            let body = body.ok_or_else(|| anyhow::anyhow!("the pack ends before {name}"))?;
            let found = tessera_client::storage::member_cid(body, &manifest)?;
            anyhow::ensure!(found.0 .0 == cid, "its bytes for {name} hash to {found}");
            std::io::Write::write_all(&mut out, body)?;
            placed.push(PackMember { cid: Hash32(cid), offset, len });
            offset += len;
        }
        std::io::Write::flush(&mut out)?;
        Ok(placed)
    })();
    drop(bytes);
    let placed = match written {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    // The index names the new pack before its deal opens: a stop before its
    // record leaves the intent, and the next start ends that deal. The
    // manifest is this very file's, so the upload does not hash it again.
    let intended = (|| -> anyhow::Result<Manifest> {
        let manifest = tessera_client::storage::manifest_of_file(&path, &opts, &mut |_, _, _| {})?;
        gateway.index.intend(&record.owner, &[manifest.cid().0 .0], node.status()?.height)?;
        Ok(manifest)
    })();
    let manifest = match intended {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.context("recording the new pack's deal before it opens"));
        }
    };
    let content = tessera_client::storage::Content { path: &path, members: placed.clone(), manifest: Some(manifest), unchanged: true };
    let submitted = tessera_client::storage::submit_contents(node, &key, std::slice::from_ref(&content), &opts, &mut |_, _, _| {});
    let stored = tessera_client::storage::upload_contents(node, &key, std::slice::from_ref(&content), submitted, None, &mut |_, _, _| {}).pop();
    let stored = match stored.unwrap_or_else(|| Err(anyhow::anyhow!("no answer for the new pack"))) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.context("storing the new pack"));
        }
    };
    let new = stored.cid.0 .0;
    let recorded = gateway.index.add_pack(&new, &PackRecord { owner: record.owner.clone(), members: placed.iter().map(|m| m.cid.0).collect() });
    // The file becomes the read cache's copy of the new pack.
    gateway.cache.insert_pack(&new, &path, stored.bytes, &placed);
    let _ = std::fs::remove_file(&path);
    recorded?;
    // An object deleted while it moved: the new pack is looked at in turn.
    gateway.compactor.kick(new);
    end(format!("{} of its {} objects ({} of {} bytes) moved into pack {}", needed.len(), facts.len(), stored.bytes, total, stored.cid))
}

/// The members of a pack's deal, asked of the node once per pack.
fn member_list(gateway: &Gateway, deal: &DealDto) -> anyhow::Result<Arc<Vec<PackMember>>> {
    let cached = gateway.compactor.members.lock().expect("member lists lock").get(&deal.cid.0).cloned();
    if let Some(members) = cached {
        return Ok(members);
    }
    let full: DealDto = gateway.node.get(&format!("/deals/{}", deal.id))?;
    anyhow::ensure!(full.packed == full.members.len(), "deal {} lists {} of its {} objects", deal.id, full.members.len(), full.packed);
    let members = Arc::new(full.members);
    let mut lists = gateway.compactor.members.lock().expect("member lists lock");
    if lists.len() >= MEMBER_LISTS_MAX {
        lists.clear();
    }
    lists.insert(deal.cid.0, members.clone());
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_is_rewritten_once_at_most_half_its_bytes_are_needed_and_ends_when_none_are() {
        // (length, an object points at it, another pack holds it too)
        let live = |len| (len, true, false);
        let dead = |len| (len, false, false);
        let moved = |len| (len, true, true);
        assert_eq!(verdict(&[live(10), live(10)]), Verdict::Keep);
        assert_eq!(verdict(&[live(10), live(10), dead(10)]), Verdict::Keep, "two thirds still needed");
        assert_eq!(verdict(&[dead(10), live(10)]), Verdict::Rewrite(vec![1]), "half");
        assert_eq!(verdict(&[live(10), dead(30), live(5)]), Verdict::Rewrite(vec![0, 2]));
        // Bytes count, not objects: one large deleted object is most of the pack.
        assert_eq!(verdict(&[live(1), live(1), live(1), dead(100)]), Verdict::Rewrite(vec![0, 1, 2]));
        assert_eq!(verdict(&[dead(1), dead(1), live(100)]), Verdict::Keep);
        // Objects another pack holds too need nothing of this one.
        assert_eq!(verdict(&[moved(10), live(10), moved(10)]), Verdict::Rewrite(vec![1]));
        assert_eq!(verdict(&[moved(10), dead(10)]), Verdict::End);
        assert_eq!(verdict(&[dead(10), dead(10)]), Verdict::End);
    }

    #[test]
    fn a_pack_is_queued_once_and_looked_at_once_its_deletions_settle_and_the_queue_is_bounded() {
        let c = Compactor::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        c.kick_at([1; 32], t0);
        c.kick_at([2; 32], t0);
        c.kick_at([1; 32], t0 + s(1));
        assert_eq!(c.queued(), 2);
        assert_eq!(c.next(t0 + s(1)), Err(Some(SETTLE - s(1))), "nothing settled yet");
        // The second pack settled first: the first was kicked again.
        assert_eq!(c.next(t0 + SETTLE), Ok([2; 32]));
        assert_eq!(c.next(t0 + SETTLE), Err(Some(s(1))));
        assert_eq!((c.next(t0 + SETTLE + s(1)), c.next(t0 + s(60))), (Ok([1; 32]), Err(None)));
        c.kick_at([1; 32], t0);
        assert_eq!(c.queued(), 1, "looked at once, queued again by the next kick");
        for i in 0..2 * QUEUE_MAX as u32 {
            let mut p = [0u8; 32];
            p[..4].copy_from_slice(&i.to_be_bytes());
            c.kick_at(p, t0);
        }
        assert_eq!(c.queued(), QUEUE_MAX);
    }
}
