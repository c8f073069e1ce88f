//! The gateway's index of buckets and objects (redb): what each object key
//! points to in the storage network. Writes are single durable transactions.

use borsh::{BorshDeserialize, BorshSerialize};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::Path;

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Job id -> what became of exporting its result files.
const EXPORTS: TableDefinition<u64, &[u8]> = TableDefinition::new("exports");
/// `<cid hex>/<owner>` -> content acknowledged to a client but not yet on
/// the storage network (its body is staged on the endpoint's disk).
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
/// `<cid hex>/<owner>` -> how many of the owner's objects point at the
/// content: each owner pays for the deals and packs holding its own
/// objects, so one owner's copy never keeps another's deals running.
const REFS: TableDefinition<&str, u64> = TableDefinition::new("owner_refs");
/// Content id -> how many objects of any owner point at it (indexes before
/// per-owner counts; read once to migrate, then deleted).
const OLD_REFS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("refs");
/// Small staged bodies, by pending key: durable here, in the transaction that
/// records the object, so a small PUT costs one fsync instead of three. The
/// staged file beside it is written unsynced and rewritten from here on open.
const BODIES: TableDefinition<&str, &[u8]> = TableDefinition::new("staged_bodies");
/// Pack content id -> the pack (stored as one deal holding small objects).
const PACKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("packs");
/// `<member cid><pack cid>` -> (): the packs each content sits in.
const PACKED_IN: TableDefinition<&[u8; 64], ()> = TableDefinition::new("packed_in");
/// Pack content id -> the latest acknowledgement time among the entries of
/// the batch it holds, while that batch's end runs over several
/// transactions (`EndPart`): a stop before its last one leaves them
/// pending, and opening the index ends them.
const ENDING: TableDefinition<&[u8; 32], u64> = TableDefinition::new("ending_packs");
/// `<cid hex>/<owner>` -> the chain's height just before the owner's deals
/// for that content were submitted (`Index::intend`): written before the
/// placer or compaction opens them, removed in the transaction that records
/// what they hold (the entry's end, the pack's record). One found when the
/// index opens belongs to a placement a stop cut short, whose deals would
/// otherwise run out their term unrecorded, paid for (`Index::unsettled`).
const PLACING: TableDefinition<&str, u64> = TableDefinition::new("placing");

/// Deals about to be opened for `owner`'s content `cid`, at chain height
/// `height` or later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub owner: String,
    pub cid: [u8; 32],
    pub height: u64,
}

/// Small objects stored together as one content on the storage network.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PackRecord {
    /// Keyring key that pays for the pack's deal.
    pub owner: String,
    pub members: Vec<[u8; 32]>,
}

fn packed_key(member: &[u8; 32], pack: &[u8; 32]) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(member);
    k[32..].copy_from_slice(pack);
    k
}

/// `<cid hex>/<owner>`: how pending entries, staged bodies and reference
/// counts are keyed.
fn owner_key(owner: &str, cid: &[u8; 32]) -> String {
    format!("{}/{owner}", hex::encode(cid))
}

/// The content id and owner of an `owner_key`.
fn parse_owner_key(key: &str) -> anyhow::Result<([u8; 32], &str)> {
    let (cid, owner) = key.split_once('/').unwrap_or_default();
    let cid = hex::decode(cid).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
    Ok((cid.ok_or_else(|| anyhow::anyhow!("malformed key {key:?}"))?, owner))
}

/// Moves the count of `owner`'s objects pointing at `cid` by `delta`.
fn add_ref(t: &mut redb::Table<&str, u64>, owner: &str, cid: Option<&[u8; 32]>, delta: i64) -> anyhow::Result<()> {
    let Some(cid) = cid else { return Ok(()) };
    let key = owner_key(owner, cid);
    let now = t.get(key.as_str())?.map(|v| v.value()).unwrap_or(0);
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        t.remove(key.as_str())?;
    } else {
        t.insert(key.as_str(), next)?;
    }
    Ok(())
}

/// The owner of the objects of `bucket` (its keyring key), from `buckets`
/// (remembered in `seen` for the rest of a transaction); an empty name for
/// a bucket that is gone.
fn bucket_owner<'s>(
    buckets: &impl ReadableTable<&'static str, &'static [u8]>,
    seen: &'s mut std::collections::HashMap<String, String>,
    bucket: &str,
) -> anyhow::Result<&'s str> {
    if !seen.contains_key(bucket) {
        let owner = match buckets.get(bucket)? {
            Some(v) => borsh::from_slice::<BucketMeta>(v.value())?.owner,
            None => String::new(),
        };
        seen.insert(bucket.to_string(), owner);
    }
    Ok(seen[bucket].as_str())
}

/// Content waiting for its storage deals and piece uploads.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Pending {
    pub cid: [u8; 32],
    /// Keyring key that pays for the deals.
    pub owner: String,
    pub size: u64,
    /// Escrow (micro-TSR) its deals will lock.
    pub escrow: u128,
    pub since_ms: u64,
    /// Failed placement attempts so far, and the last reason.
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl Pending {
    fn key(&self) -> String {
        owner_key(&self.owner, &self.cid)
    }
}

/// The export of one job's result files into a bucket.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ExportRecord {
    /// Written: the object keys.
    Done { keys: Vec<String> },
    /// Tried and failed `attempts` times so far; retried while under the limit.
    Failing { attempts: u32, reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BucketMeta {
    /// Access key's keyring key that owns the bucket.
    pub owner: String,
    pub created_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct ObjectMeta {
    /// Content id hash; `None` for an empty object.
    pub cid: Option<[u8; 32]>,
    pub size: u64,
    /// Hex MD5 of the body (S3's ETag for single-part uploads).
    pub etag: String,
    pub modified_ms: u64,
    pub content_type: Option<String>,
}

/// One object for `Index::stage_and_end`: bucket, key, metadata,
/// pending entry and, for a small object, its body.
pub type PendingPut<'a> = (&'a str, &'a str, &'a ObjectMeta, &'a Pending, Option<&'a [u8]>);

/// The placed entries one `Index::stage_and_end` transaction ends: a large
/// batch ends over several, so that the PUTs committed beside each part
/// never wait for the whole batch. Its first part records its packs and
/// ends every entry in none; while the packs' members end, part by part,
/// the packs are marked, and opening the index ends what a stop left of
/// them pending.
#[derive(Clone, Copy, Default)]
pub struct EndPart<'a> {
    /// Entries ended now (their small bodies go with them).
    pub done: &'a [&'a Pending],
    /// Packs recorded now.
    pub packs: &'a [([u8; 32], PackRecord)],
    /// Packs whose members end in later parts, marked with the latest
    /// acknowledgement time among them (an entry acknowledged after it is
    /// a later PUT's, not the batch's).
    pub marks: &'a [([u8; 32], u64)],
    /// Packs whose members' end this part completes: unmarked.
    pub unmarks: &'a [[u8; 32]],
    /// Every entry ended here is a member of a marked pack (a part after
    /// the first): with no object recorded beside it, the transaction is
    /// not flushed to disk (the next durable one carries it), since a stop
    /// that loses it leaves the marks, and opening the index ends the rest.
    pub marked: bool,
}

pub struct Index {
    db: Database,
    /// Escrow and count of the pending entries per owner, kept with the
    /// table (a PUT checks the escrow; summing the table per PUT grew with
    /// the backlog).
    waiting: std::sync::Mutex<std::collections::HashMap<String, Waiting>>,
    /// Intents left when the index opened, until `unsettled` takes them.
    unsettled: std::sync::Mutex<Vec<Intent>>,
}

#[derive(Clone, Copy, Default)]
struct Waiting {
    escrow: u128,
    entries: u64,
}

fn object_key(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

impl Index {
    pub fn open(path: &Path) -> anyhow::Result<Index> {
        let db = Database::builder().set_cache_size(16 << 20).create(path)?;
        let w = db.begin_write()?;
        {
            w.open_table(BUCKETS)?;
            w.open_table(OBJECTS)?;
            w.open_table(EXPORTS)?;
            w.open_table(PENDING)?;
            w.open_table(BODIES)?;
            w.open_table(PACKS)?;
            w.open_table(PACKED_IN)?;
            w.open_table(PLACING)?;
            // An index from before per-owner reference counts: count once,
            // each object for its bucket's owner.
            let (objects, buckets) = (w.open_table(OBJECTS)?, w.open_table(BUCKETS)?);
            let mut refs = w.open_table(REFS)?;
            if refs.is_empty()? && !objects.is_empty()? {
                let mut owners = std::collections::HashMap::new();
                for item in objects.iter()? {
                    let (key, value) = item?;
                    let meta: ObjectMeta = borsh::from_slice(value.value())?;
                    let bucket = key.value().split_once('/').map_or(key.value(), |(b, _)| b);
                    add_ref(&mut refs, bucket_owner(&buckets, &mut owners, bucket)?, meta.cid.as_ref(), 1)?;
                }
            }
        }
        w.delete_table(OLD_REFS)?;
        w.commit()?;
        let mut index = Index { db, waiting: Default::default(), unsettled: Default::default() };
        index.end_marked_packs()?;
        index.add_waiting(&index.pending()?, true);
        *index.unsettled.get_mut().expect("intents lock") = index.intents()?;
        Ok(index)
    }

    /// Records that `owner`'s deals for `cids` are about to be submitted,
    /// the chain at `height` (one durable transaction, before they are): a
    /// content already intended keeps its earlier height, so that the
    /// deals of every attempt since are covered.
    pub fn intend(&self, owner: &str, cids: &[[u8; 32]], height: u64) -> anyhow::Result<()> {
        if cids.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(PLACING)?;
            for cid in cids {
                let key = owner_key(owner, cid);
                if t.get(key.as_str())?.is_none() {
                    t.insert(key.as_str(), height)?;
                }
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Every intent recorded and not settled.
    pub fn intents(&self) -> anyhow::Result<Vec<Intent>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(PLACING)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let (cid, owner) = parse_owner_key(k.value()).map_err(|e| e.context("an intent"))?;
            out.push(Intent { owner: owner.to_string(), cid, height: v.value() });
        }
        Ok(out)
    }

    /// The intents found when the index opened: placements a stop cut short
    /// between opening deals and recording them. Taken once; the deals they
    /// name are to be ended (`settle`), before anything is placed again.
    pub fn unsettled(&self) -> Vec<Intent> {
        std::mem::take(&mut *self.unsettled.lock().expect("intents lock"))
    }

    /// Drops `intent` once the deals it names have ended (an intent recorded
    /// since, at another height, stays).
    pub fn settle(&self, intent: &Intent) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(PLACING)?;
            let key = owner_key(&intent.owner, &intent.cid);
            if t.get(key.as_str())?.is_some_and(|h| h.value() == intent.height) {
                t.remove(key.as_str())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Ends what a stop left pending of the members of marked packs
    /// (`EndPart::marks`): each member's entry of the pack's owner, unless
    /// acknowledged after the mark's time (a later PUT of the same bytes).
    fn end_marked_packs(&self) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut marks = w.open_table(ENDING)?;
            let (packs, mut pending, mut bodies) = (w.open_table(PACKS)?, w.open_table(PENDING)?, w.open_table(BODIES)?);
            while let Some((pack, latest)) = marks.pop_first()? {
                let (pack, latest) = (pack.value(), latest.value());
                let Some(record) = packs.get(&pack)?.map(|v| borsh::from_slice::<PackRecord>(v.value())).transpose()? else { continue };
                for member in &record.members {
                    let key = owner_key(&record.owner, member);
                    let batch_entry = match pending.get(key.as_str())? {
                        Some(v) => borsh::from_slice::<Pending>(v.value())?.since_ms <= latest,
                        None => false,
                    };
                    if batch_entry {
                        pending.remove(key.as_str())?;
                        bodies.remove(key.as_str())?;
                    }
                }
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Escrow (micro-TSR) that `owner`'s entries waiting for placement will lock.
    pub fn waiting_escrow(&self, owner: &str) -> u128 {
        self.waiting.lock().expect("waiting lock").get(owner).map_or(0, |w| w.escrow)
    }

    /// How many contents acknowledged for `owner` wait for placement (one
    /// per content id, however many objects point at it).
    pub fn waiting_contents(&self, owner: &str) -> u64 {
        self.waiting.lock().expect("waiting lock").get(owner).map_or(0, |w| w.entries)
    }

    pub fn bucket(&self, name: &str) -> anyhow::Result<Option<BucketMeta>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BUCKETS)?;
        Ok(match t.get(name)? {
            Some(v) => Some(borsh::from_slice(v.value())?),
            None => None,
        })
    }

    pub fn buckets(&self) -> anyhow::Result<Vec<(String, BucketMeta)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BUCKETS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), borsh::from_slice(v.value())?));
        }
        Ok(out)
    }

    pub fn put_bucket(&self, name: &str, meta: &BucketMeta) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(BUCKETS)?.insert(name, borsh::to_vec(meta)?.as_slice())?;
        w.commit()?;
        Ok(())
    }

    pub fn delete_bucket(&self, name: &str) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(BUCKETS)?.remove(name)?;
        w.commit()?;
        Ok(())
    }

    pub fn object(&self, bucket: &str, key: &str) -> anyhow::Result<Option<ObjectMeta>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(OBJECTS)?;
        Ok(match t.get(object_key(bucket, key).as_str())? {
            Some(v) => Some(borsh::from_slice(v.value())?),
            None => None,
        })
    }

    /// Stores `meta` and returns the object it replaced.
    pub fn put_object(&self, bucket: &str, key: &str, meta: &ObjectMeta) -> anyhow::Result<Option<ObjectMeta>> {
        let mut old = self.put_objects_with(&[(bucket, key, meta, None)], EndPart::default())?;
        Ok(old.pop().flatten())
    }

    /// Records the object and, in the same transaction, its content as
    /// pending placement (unless it already is for this owner); `body`, for
    /// a small object, is kept in that transaction until the entry is done.
    /// Returns the object it replaced.
    pub fn put_object_pending(
        &self,
        bucket: &str,
        key: &str,
        meta: &ObjectMeta,
        pending: &Pending,
        body: Option<&[u8]>,
    ) -> anyhow::Result<Option<ObjectMeta>> {
        let mut old = self.stage_and_end(&[(bucket, key, meta, pending, body)], EndPart::default())?;
        Ok(old.pop().flatten())
    }

    /// `put_object_pending` for many objects, applied in order (returns
    /// what each replaced), and then the end of placed pending entries
    /// `done` (their small bodies go with them) with the packs they went
    /// into, all in one transaction: the staging area's committer writes
    /// what PUTs stage and what the placer has placed meanwhile with one
    /// fsync, so that PUTs never wait for a commit of the placer's. An
    /// entry staged again while its content was being placed is not added
    /// twice, and then ends with it (its content is on the network).
    pub fn stage_and_end(&self, entries: &[PendingPut<'_>], end: EndPart<'_>) -> anyhow::Result<Vec<Option<ObjectMeta>>> {
        let entries: Vec<_> = entries.iter().map(|&(b, k, m, p, body)| (b, k, m, Some((p, body)))).collect();
        self.put_objects_with(&entries, end)
    }

    /// The content ids and sizes of the small bodies kept with their
    /// pending entries (a content id once however many owners wait on it).
    pub fn staged_body_sizes(&self) -> anyhow::Result<Vec<([u8; 32], u64)>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BODIES)?;
        let mut out: Vec<([u8; 32], u64)> = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let (cid, _) = parse_owner_key(k.value()).map_err(|e| e.context("a staged body"))?;
            if out.last().is_none_or(|(last, _)| *last != cid) {
                out.push((cid, v.value().len() as u64));
            }
        }
        Ok(out)
    }

    /// The small body kept with a pending entry (any owner's) of each of
    /// `cids`, in one read.
    pub fn staged_bodies(&self, cids: &[[u8; 32]]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BODIES)?;
        cids.iter().map(|cid| first_of_cid(&t, cid)).collect()
    }

    #[allow(clippy::type_complexity)]
    fn put_objects_with(
        &self,
        entries: &[(&str, &str, &ObjectMeta, Option<(&Pending, Option<&[u8]>)>)],
        end: EndPart<'_>,
    ) -> anyhow::Result<Vec<Option<ObjectMeta>>> {
        let mut w = self.db.begin_write()?;
        if entries.is_empty() && end.marked {
            w.set_durability(redb::Durability::None)?;
        }
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut replaced = Vec::with_capacity(entries.len());
        {
            let mut p = w.open_table(PENDING)?;
            let mut bodies = w.open_table(BODIES)?;
            let mut t = w.open_table(OBJECTS)?;
            let mut refs = w.open_table(REFS)?;
            let buckets = w.open_table(BUCKETS)?;
            let mut owners = std::collections::HashMap::new();
            for &(bucket, key, meta, pending) in entries {
                if let Some((pending, body)) = pending {
                    let pkey = pending.key();
                    if p.get(pkey.as_str())?.is_none() {
                        p.insert(pkey.as_str(), borsh::to_vec(pending)?.as_slice())?;
                        if let Some(body) = body {
                            bodies.insert(pkey.as_str(), body)?;
                        }
                        added.push(pending);
                    }
                }
                let old: Option<ObjectMeta> = match t.insert(object_key(bucket, key).as_str(), borsh::to_vec(meta)?.as_slice())? {
                    Some(v) => Some(borsh::from_slice(v.value())?),
                    None => None,
                };
                let owner = bucket_owner(&buckets, &mut owners, bucket)?;
                add_ref(&mut refs, owner, meta.cid.as_ref(), 1)?;
                add_ref(&mut refs, owner, old.as_ref().and_then(|o| o.cid.as_ref()), -1)?;
                replaced.push(old);
            }
            for (pack, record) in end.packs {
                record_pack(&w, pack, record)?;
            }
            if !end.marks.is_empty() || !end.unmarks.is_empty() {
                let mut marks = w.open_table(ENDING)?;
                for (pack, latest) in end.marks {
                    marks.insert(pack, latest)?;
                }
                for pack in end.unmarks {
                    marks.remove(pack)?;
                }
            }
            // An ended entry's deals are settled: recorded (placed) or no
            // longer wanted (its content dropped).
            let mut intents = if end.done.is_empty() { None } else { Some(w.open_table(PLACING)?) };
            for d in end.done {
                let key = d.key();
                bodies.remove(key.as_str())?;
                if let Some(v) = p.remove(key.as_str())? {
                    removed.push(borsh::from_slice::<Pending>(v.value())?);
                }
                if let Some(t) = intents.as_mut() {
                    t.remove(key.as_str())?;
                }
            }
        }
        // Sums grow before the commit and shrink after one, so they never
        // fall below what the index holds, and no reader waits for a
        // commit's fsync.
        self.add_waiting(added.iter().copied(), true);
        if let Err(e) = w.commit() {
            self.add_waiting(added.iter().copied(), false);
            return Err(e.into());
        }
        self.add_waiting(&removed, false);
        Ok(replaced)
    }

    fn add_waiting<'a>(&self, entries: impl IntoIterator<Item = &'a Pending>, add: bool) {
        let mut waiting = self.waiting.lock().expect("waiting lock");
        for p in entries {
            let w = waiting.entry(p.owner.clone()).or_default();
            *w = if add {
                Waiting { escrow: w.escrow + p.escrow, entries: w.entries + 1 }
            } else {
                Waiting { escrow: w.escrow.saturating_sub(p.escrow), entries: w.entries.saturating_sub(1) }
            };
        }
    }

    /// Everything waiting for placement, by content id.
    pub fn pending(&self) -> anyhow::Result<Vec<Pending>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(PENDING)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            out.push(borsh::from_slice(item?.1.value())?);
        }
        Ok(out)
    }

    /// Whether content `cid` waits for placement for any owner.
    pub fn is_pending(&self, cid: &[u8; 32]) -> anyhow::Result<bool> {
        Ok(self.which_pending(std::slice::from_ref(cid))?[0])
    }

    /// Records failed placement attempts, each with its reason, in one transaction.
    pub fn pending_failed(&self, failed: &[(&Pending, String)]) -> anyhow::Result<()> {
        if failed.is_empty() {
            return Ok(());
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(PENDING)?;
            for (pending, reason) in failed {
                let pkey = pending.key();
                let current: Option<Pending> = match t.get(pkey.as_str())? {
                    Some(v) => Some(borsh::from_slice(v.value())?),
                    None => None,
                };
                if let Some(mut p) = current {
                    p.attempts += 1;
                    p.last_error = Some(reason.chars().take(500).collect());
                    t.insert(pkey.as_str(), borsh::to_vec(&p)?.as_slice())?;
                }
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Which of `cids` wait for placement for any owner (one read).
    pub fn which_pending(&self, cids: &[[u8; 32]]) -> anyhow::Result<Vec<bool>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(PENDING)?;
        cids.iter().map(|cid| Ok(first_of_cid(&t, cid)?.is_some())).collect()
    }

    pub fn delete_object(&self, bucket: &str, key: &str) -> anyhow::Result<Option<ObjectMeta>> {
        let w = self.db.begin_write()?;
        let old = {
            let mut t = w.open_table(OBJECTS)?;
            let old: Option<ObjectMeta> = match t.remove(object_key(bucket, key).as_str())? {
                Some(v) => Some(borsh::from_slice(v.value())?),
                None => None,
            };
            let owner = bucket_owner(&w.open_table(BUCKETS)?, &mut Default::default(), bucket)?.to_string();
            add_ref(&mut w.open_table(REFS)?, &owner, old.as_ref().and_then(|o| o.cid.as_ref()), -1)?;
            old
        };
        w.commit()?;
        Ok(old)
    }

    /// Objects of `bucket` whose keys start with `prefix` and sort after
    /// `after`, in key order, at most `limit` (plus whether more exist).
    pub fn list(&self, bucket: &str, prefix: &str, after: Option<&str>, limit: usize) -> anyhow::Result<(Vec<(String, ObjectMeta)>, bool)> {
        let r = self.db.begin_read()?;
        let t = r.open_table(OBJECTS)?;
        let start = object_key(bucket, prefix);
        let bucket_prefix = format!("{bucket}/");
        let mut out = Vec::new();
        for item in t.range::<&str>(start.as_str()..)? {
            let (k, v) = item?;
            let full = k.value();
            let Some(key) = full.strip_prefix(&bucket_prefix) else { break };
            if !key.starts_with(prefix) {
                break;
            }
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push((key.to_string(), borsh::from_slice(v.value())?));
        }
        Ok((out, false))
    }

    pub fn export(&self, job: u64) -> anyhow::Result<Option<ExportRecord>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(EXPORTS)?;
        Ok(match t.get(job)? {
            Some(v) => Some(borsh::from_slice(v.value())?),
            None => None,
        })
    }

    pub fn put_export(&self, job: u64, record: &ExportRecord) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        w.open_table(EXPORTS)?.insert(job, borsh::to_vec(record)?.as_slice())?;
        w.commit()?;
        Ok(())
    }

    /// How many objects of `owner` point at content `cid`.
    pub fn references(&self, owner: &str, cid: &[u8; 32]) -> anyhow::Result<usize> {
        let r = self.db.begin_read()?;
        Ok(r.open_table(REFS)?.get(owner_key(owner, cid).as_str())?.map(|v| v.value() as usize).unwrap_or(0))
    }

    /// Whether no object of `owner` points at each of `cids` (one read).
    pub fn unreferenced(&self, owner: &str, cids: &[[u8; 32]]) -> anyhow::Result<Vec<bool>> {
        let r = self.db.begin_read()?;
        let refs = r.open_table(REFS)?;
        cids.iter().map(|cid| Ok(refs.get(owner_key(owner, cid).as_str())?.is_none_or(|v| v.value() == 0))).collect()
    }

    /// Whether no object of `owner` points at any of `cids` (one read, up
    /// to the first that is pointed at).
    pub fn none_referenced(&self, owner: &str, cids: &[[u8; 32]]) -> anyhow::Result<bool> {
        let r = self.db.begin_read()?;
        let refs = r.open_table(REFS)?;
        for cid in cids {
            if refs.get(owner_key(owner, cid).as_str())?.is_some_and(|v| v.value() > 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The record of pack `pack` (its owner and members), if it is known.
    pub fn pack(&self, pack: &[u8; 32]) -> anyhow::Result<Option<PackRecord>> {
        let r = self.db.begin_read()?;
        Ok(match r.open_table(PACKS)?.get(pack)? {
            Some(v) => Some(borsh::from_slice(v.value())?),
            None => None,
        })
    }

    /// The packs content `cid` was stored in.
    pub fn packs_of(&self, cid: &[u8; 32]) -> anyhow::Result<Vec<[u8; 32]>> {
        let r = self.db.begin_read()?;
        packs_in(&r.open_table(PACKED_IN)?, cid)
    }

    /// Records pack `pack`, stored on the storage network, and which content sits in it.
    pub fn add_pack(&self, pack: &[u8; 32], record: &PackRecord) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        record_pack(&w, pack, record)?;
        w.commit()?;
        Ok(())
    }

    /// For each of `members` of pack `pack`, in one read: whether an object
    /// points at it, and whether another recorded pack of the same `owner`
    /// holds it too (one of another owner's would leave that owner paying).
    pub fn members_state(&self, pack: &[u8; 32], owner: &str, members: &[[u8; 32]]) -> anyhow::Result<Vec<(bool, bool)>> {
        let r = self.db.begin_read()?;
        let (refs, packed, packs) = (r.open_table(REFS)?, r.open_table(PACKED_IN)?, r.open_table(PACKS)?);
        let mut owners: std::collections::HashMap<[u8; 32], bool> = std::collections::HashMap::new();
        members
            .iter()
            .map(|m| {
                let live = refs.get(owner_key(owner, m).as_str())?.is_some_and(|v| v.value() > 0);
                let mut elsewhere = false;
                for other in packs_in(&packed, m)?.into_iter().filter(|p| p != pack) {
                    elsewhere = match owners.get(&other) {
                        Some(same) => *same,
                        None => {
                            let same = match packs.get(&other)? {
                                Some(v) => borsh::from_slice::<PackRecord>(v.value())?.owner == owner,
                                None => false,
                            };
                            owners.insert(other, same);
                            same
                        }
                    };
                    if elsewhere {
                        break;
                    }
                }
                Ok((live, elsewhere))
            })
            .collect()
    }

    /// Packs that share a member with another pack, at most `limit` (one
    /// pass over the member index, in member order).
    pub fn packs_sharing_members(&self, limit: usize) -> anyhow::Result<Vec<[u8; 32]>> {
        let r = self.db.begin_read()?;
        let t = r.open_table(PACKED_IN)?;
        let mut out: Vec<[u8; 32]> = Vec::new();
        let mut last: Option<[u8; 64]> = None;
        for item in t.iter()? {
            let key = *item?.0.value();
            if let Some(prev) = last
                && prev[..32] == key[..32]
            {
                for pack in [&prev[32..], &key[32..]] {
                    let pack: [u8; 32] = pack.try_into().expect("32 bytes");
                    if !out.contains(&pack) {
                        if out.len() == limit {
                            return Ok(out);
                        }
                        out.push(pack);
                    }
                }
            }
            last = Some(key);
        }
        Ok(out)
    }

    /// Forgets a pack whose deal ended.
    pub fn forget_pack(&self, pack: &[u8; 32]) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let record: Option<PackRecord> = match w.open_table(PACKS)?.remove(pack)? {
                Some(v) => Some(borsh::from_slice(v.value())?),
                None => None,
            };
            let mut t = w.open_table(PACKED_IN)?;
            for m in record.map(|r| r.members).unwrap_or_default() {
                t.remove(&packed_key(&m, pack))?;
            }
        }
        w.commit()?;
        Ok(())
    }
}

/// The packs content `cid` sits in, from the member index.
fn packs_in(t: &redb::ReadOnlyTable<&[u8; 64], ()>, cid: &[u8; 32]) -> anyhow::Result<Vec<[u8; 32]>> {
    let (lo, hi) = (packed_key(cid, &[0; 32]), packed_key(cid, &[0xff; 32]));
    let mut out = Vec::new();
    for item in t.range::<&[u8; 64]>(&lo..=&hi)? {
        out.push(item?.0.value()[32..].try_into().expect("64-byte key"));
    }
    Ok(out)
}

/// Records a pack stored on the storage network and which content sits in it.
fn record_pack(w: &redb::WriteTransaction, pack: &[u8; 32], record: &PackRecord) -> anyhow::Result<()> {
    w.open_table(PACKS)?.insert(pack, borsh::to_vec(record)?.as_slice())?;
    // Its deals are recorded now: their intent is settled.
    w.open_table(PLACING)?.remove(owner_key(&record.owner, pack).as_str())?;
    let mut t = w.open_table(PACKED_IN)?;
    for m in &record.members {
        t.insert(&packed_key(m, pack), ())?;
    }
    Ok(())
}

/// The value of the first entry keyed `<hex cid>/...` in `table` (pending
/// entries and staged bodies are keyed by content id, then owner).
fn first_of_cid(table: &redb::ReadOnlyTable<&str, &[u8]>, cid: &[u8; 32]) -> anyhow::Result<Option<Vec<u8>>> {
    let prefix = format!("{}/", hex::encode(cid));
    Ok(match table.range::<&str>(prefix.as_str()..)?.next() {
        Some(item) => {
            let (k, v) = item?;
            k.value().starts_with(&prefix).then(|| v.value().to_vec())
        }
        None => None,
    })
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// The packs marked as ending (`EndPart::marks`).
    pub(crate) fn marked_packs(index: &Index) -> Vec<[u8; 32]> {
        let r = index.db.begin_read().unwrap();
        let t = r.open_table(ENDING).unwrap();
        t.iter().unwrap().map(|item| *item.unwrap().0.value()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(cid: u8) -> ObjectMeta {
        ObjectMeta { cid: Some([cid; 32]), size: 1, etag: "e".into(), modified_ms: 0, content_type: None }
    }

    #[test]
    fn references_follow_puts_overwrites_and_deletes_per_owner_and_packs_are_found_by_member() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.redb")).unwrap();
        index.put_bucket("b", &BucketMeta { owner: "dev".into(), created_ms: 0 }).unwrap();
        index.put_bucket("c", &BucketMeta { owner: "bob".into(), created_ms: 0 }).unwrap();
        index.put_object("b", "x", &meta(1)).unwrap();
        index.put_object("b", "y", &meta(1)).unwrap();
        assert_eq!(index.references("dev", &[1; 32]).unwrap(), 2);
        index.put_object("b", "y", &meta(2)).unwrap();
        assert_eq!((index.references("dev", &[1; 32]).unwrap(), index.references("dev", &[2; 32]).unwrap()), (1, 1));
        // Another owner's object of the same content counts for that owner only.
        index.put_object("c", "z", &meta(1)).unwrap();
        index.delete_object("b", "x").unwrap();
        assert_eq!((index.references("dev", &[1; 32]).unwrap(), index.references("bob", &[1; 32]).unwrap()), (0, 1));
        assert!(index.none_referenced("dev", &[[1; 32], [3; 32]]).unwrap() && !index.none_referenced("dev", &[[1; 32], [2; 32]]).unwrap());
        assert!(!index.none_referenced("bob", &[[1; 32]]).unwrap());
        assert_eq!(index.unreferenced("dev", &[[1; 32], [2; 32], [3; 32]]).unwrap(), vec![true, false, true]);

        let record = PackRecord { owner: "dev".into(), members: vec![[1; 32], [2; 32]] };
        let other = PackRecord { owner: "dev".into(), members: vec![[2; 32]] };
        index.stage_and_end(&[], EndPart { packs: &[([9; 32], record.clone()), ([8; 32], other)], ..Default::default() }).unwrap();
        assert_eq!(index.packs_of(&[1; 32]).unwrap(), vec![[9; 32]]);
        assert_eq!(index.packs_of(&[2; 32]).unwrap(), vec![[8; 32], [9; 32]]);
        assert_eq!(index.pack(&[9; 32]).unwrap(), Some(record));
        // Member 1 is no longer pointed at by dev (bob's object of it does
        // not count for dev's pack); member 2 sits in pack 8 too, of the
        // same owner (another owner's pack would not count either).
        assert_eq!(index.members_state(&[9; 32], "dev", &[[1; 32], [2; 32]]).unwrap(), vec![(false, false), (true, true)]);
        assert_eq!(index.members_state(&[9; 32], "bob", &[[1; 32], [2; 32]]).unwrap(), vec![(true, false), (false, false)]);
        assert_eq!(index.members_state(&[8; 32], "dev", &[[2; 32]]).unwrap(), vec![(true, true)]);
        index.forget_pack(&[9; 32]).unwrap();
        assert_eq!(index.members_state(&[8; 32], "dev", &[[2; 32]]).unwrap(), vec![(true, false)]);
        assert_eq!(index.packs_of(&[2; 32]).unwrap(), vec![[8; 32]]);
        assert!(index.packs_of(&[1; 32]).unwrap().is_empty());
        assert!(index.packs_sharing_members(10).unwrap().is_empty());
        let moved = PackRecord { owner: "dev".into(), members: vec![[2; 32]] };
        index.add_pack(&[7; 32], &moved).unwrap();
        assert_eq!(index.packs_sharing_members(10).unwrap(), vec![[7; 32], [8; 32]]);
        assert_eq!(index.packs_sharing_members(1).unwrap(), vec![[7; 32]]);
        assert_eq!((index.pack(&[7; 32]).unwrap(), index.packs_of(&[2; 32]).unwrap()), (Some(moved), vec![[7; 32], [8; 32]]));

        // Reopened, the counts are still there.
        drop(index);
        let index = Index::open(&dir.path().join("i.redb")).unwrap();
        assert_eq!((index.references("dev", &[2; 32]).unwrap(), index.references("bob", &[1; 32]).unwrap()), (1, 1));
    }

    #[test]
    fn an_index_with_counts_per_content_is_counted_again_per_owner_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        {
            // As an earlier version left it: one count per content id, of any owner.
            let db = Database::create(&path).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut buckets = w.open_table(BUCKETS).unwrap();
                buckets.insert("b", borsh::to_vec(&BucketMeta { owner: "dev".into(), created_ms: 0 }).unwrap().as_slice()).unwrap();
                buckets.insert("c", borsh::to_vec(&BucketMeta { owner: "bob".into(), created_ms: 0 }).unwrap().as_slice()).unwrap();
                let mut objects = w.open_table(OBJECTS).unwrap();
                for (key, cid) in [("b/x", 1), ("b/y", 1), ("c/z", 1), ("c/dir/w", 2)] {
                    objects.insert(key, borsh::to_vec(&meta(cid)).unwrap().as_slice()).unwrap();
                }
                let mut old = w.open_table(OLD_REFS).unwrap();
                old.insert(&[1; 32], 3).unwrap();
                old.insert(&[2; 32], 1).unwrap();
            }
            w.commit().unwrap();
        }
        let index = Index::open(&path).unwrap();
        let counts = [("dev", 1), ("bob", 1), ("dev", 2), ("bob", 2)].map(|(owner, cid)| index.references(owner, &[cid; 32]).unwrap());
        assert_eq!(counts, [2, 1, 0, 1]);
        assert!(index.db.begin_read().unwrap().open_table(OLD_REFS).is_err(), "the old counts are gone");
    }

    #[test]
    fn waiting_escrow_counts_and_small_bodies_follow_pending_entries_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.redb")).unwrap();
        let pending = |cid: u8, owner: &str, escrow: u128| Pending {
            cid: [cid; 32],
            owner: owner.into(),
            size: 1,
            escrow,
            since_ms: 0,
            attempts: 0,
            last_error: None,
        };
        let (a, b, c) = (pending(1, "dev", 10), pending(2, "dev", 5), pending(3, "other", 7));
        index.put_object_pending("b", "a", &meta(1), &a, Some(b"body of a")).unwrap();
        index.put_object_pending("b", "a2", &meta(1), &a, Some(b"body of a")).unwrap();
        index.put_object_pending("b", "b", &meta(2), &b, None).unwrap();
        index.put_object_pending("b", "c", &meta(3), &c, Some(b"c")).unwrap();
        assert_eq!((index.waiting_escrow("dev"), index.waiting_escrow("other")), (15, 7), "one entry per content");
        assert_eq!((index.waiting_contents("dev"), index.waiting_contents("other")), (2, 1));
        assert_eq!(index.staged_body_sizes().unwrap(), vec![([1; 32], 9), ([3; 32], 1)]);
        assert_eq!(index.staged_bodies(&[[1; 32], [2; 32]]).unwrap(), vec![Some(b"body of a".to_vec()), None], "2 is held in a file, not in the index");
        index.stage_and_end(&[], EndPart { done: &[&a, &a], ..Default::default() }).unwrap();
        assert_eq!(index.staged_body_sizes().unwrap(), vec![([3; 32], 1)], "a body goes with its entry");
        assert_eq!(index.staged_bodies(&[[1; 32]]).unwrap(), vec![None]);
        assert_eq!((index.waiting_escrow("dev"), index.waiting_contents("dev")), (5, 1));
        drop(index);
        let index = Index::open(&dir.path().join("i.redb")).unwrap();
        assert_eq!((index.waiting_escrow("dev"), index.waiting_escrow("other"), index.waiting_escrow("nobody")), (5, 7, 0));
        assert_eq!((index.waiting_contents("dev"), index.waiting_contents("other"), index.waiting_contents("nobody")), (1, 1, 0));
    }

    #[test]
    fn a_batch_whose_end_a_stop_cut_short_is_ended_on_open_and_a_later_put_of_its_bytes_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        let index = Index::open(&path).unwrap();
        let entry = |cid: u8, owner: &str, since_ms: u64| Pending { cid: [cid; 32], owner: owner.into(), size: 4, escrow: 1, since_ms, attempts: 0, last_error: None };
        let marks = |index: &Index| tests_support::marked_packs(index).len();
        let batch: Vec<Pending> = (1..=5).map(|i| entry(i, "dev", 10 + i as u64)).collect();
        for p in &batch {
            index.put_object_pending("b", &format!("k{}", p.cid[0]), &meta(p.cid[0]), p, Some(b"body")).unwrap();
        }
        // Content 3 waits for another owner too, and 6 is in no pack.
        index.put_object_pending("b", "bob", &meta(3), &entry(3, "bob", 1), Some(b"body")).unwrap();
        index.put_object_pending("b", "k6", &meta(6), &entry(6, "dev", 1), None).unwrap();
        // The batch's first part: its pack, marked, and two of its entries ended.
        let pack = PackRecord { owner: "dev".into(), members: batch.iter().map(|p| p.cid).collect() };
        let first = EndPart { done: &[&batch[0], &batch[1]], packs: &[([9; 32], pack.clone())], marks: &[([9; 32], 15)], unmarks: &[], marked: false };
        index.stage_and_end(&[], first).unwrap();
        assert_eq!((index.pending().unwrap().len(), marks(&index)), (5, 1));
        // Content 1 PUT again meanwhile: an entry of its own, acknowledged later.
        index.put_object_pending("b", "again", &meta(1), &entry(1, "dev", 20), Some(b"body")).unwrap();
        // A stop before the batch's other parts: opening ends the rest of it.
        drop(index);
        let index = Index::open(&path).unwrap();
        let left: Vec<(u8, String)> = index.pending().unwrap().into_iter().map(|p| (p.cid[0], p.owner)).collect();
        assert_eq!(left, vec![(1, "dev".to_string()), (3, "bob".to_string()), (6, "dev".to_string())]);
        assert_eq!(index.staged_body_sizes().unwrap(), vec![([1; 32], 4), ([3; 32], 4)]);
        assert_eq!((index.pack(&[9; 32]).unwrap(), marks(&index)), (Some(pack), 0));
        assert_eq!((index.waiting_contents("dev"), index.waiting_contents("bob")), (2, 1));

        // A batch ended to its last part leaves no mark behind.
        let batch: Vec<Pending> = (7..=8).map(|i| entry(i, "dev", 30)).collect();
        for p in &batch {
            index.put_object_pending("b", &format!("k{}", p.cid[0]), &meta(p.cid[0]), p, None).unwrap();
        }
        let pack = PackRecord { owner: "dev".into(), members: batch.iter().map(|p| p.cid).collect() };
        index.stage_and_end(&[], EndPart { done: &[&batch[0]], packs: &[([8; 32], pack)], marks: &[([8; 32], 30)], unmarks: &[], marked: false }).unwrap();
        index.stage_and_end(&[], EndPart { done: &[&batch[1]], unmarks: &[[8; 32]], ..Default::default() }).unwrap();
        assert_eq!((index.pending().unwrap().len(), marks(&index)), (3, 0));
    }

    #[test]
    fn intents_are_settled_by_the_record_of_what_their_deals_hold_and_a_stop_leaves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.redb");
        let index = Index::open(&path).unwrap();
        let entry = |cid: u8| Pending { cid: [cid; 32], owner: "dev".into(), size: 4, escrow: 1, since_ms: 0, attempts: 0, last_error: None };
        let intent = |cid: u8, owner: &str, height: u64| Intent { owner: owner.into(), cid: [cid; 32], height };
        for i in 1..=3 {
            index.put_object_pending("b", &format!("k{i}"), &meta(i), &entry(i), None).unwrap();
        }
        // Own deals for 1 and 2, a pack (9) for 3, another owner's deal for 1.
        index.intend("dev", &[[1; 32], [2; 32], [9; 32]], 5).unwrap();
        index.intend("bob", &[[1; 32]], 6).unwrap();
        // A second attempt keeps the first one's height: its deals are covered too.
        index.intend("dev", &[[2; 32]], 8).unwrap();
        assert!(index.unsettled().is_empty(), "none left when it opened");
        // Entry 1 placed, and the pack recorded (with its member's end).
        let pack = PackRecord { owner: "dev".into(), members: vec![[3; 32]] };
        index.stage_and_end(&[], EndPart { done: &[&entry(1), &entry(3)], packs: &[([9; 32], pack)], ..Default::default() }).unwrap();
        assert_eq!(index.intents().unwrap(), vec![intent(1, "bob", 6), intent(2, "dev", 5)]);
        // A stop now: opening finds what is left, taken once.
        drop(index);
        let index = Index::open(&path).unwrap();
        assert_eq!(index.unsettled(), vec![intent(1, "bob", 6), intent(2, "dev", 5)]);
        assert!(index.unsettled().is_empty());
        // Settling drops an intent, unless one of another height replaced it.
        index.settle(&intent(2, "dev", 5)).unwrap();
        index.settle(&intent(1, "bob", 7)).unwrap();
        assert_eq!(index.intents().unwrap(), vec![intent(1, "bob", 6)]);
        // Compaction's new pack: settled by its record.
        index.intend("dev", &[[10; 32]], 12).unwrap();
        index.add_pack(&[10; 32], &PackRecord { owner: "dev".into(), members: vec![[3; 32]] }).unwrap();
        assert_eq!(index.intents().unwrap(), vec![intent(1, "bob", 6)]);
    }
}
