//! Write-back placement. A PUT is acknowledged once its body is durable in
//! the endpoint's staging directory and recorded as pending in the index (one
//! fsync of the body, one durable index transaction; a body up to
//! `INLINE_BODY_MAX` goes into that transaction instead, one fsync in all).
//! One commit runs at a time: a PUT that finds none running commits itself,
//! and the PUTs that queue meanwhile go to one thread, which commits them
//! all in its next transaction (group commit). This task then opens
//! the storage deals and uploads the erasure-coded pieces in batches, many
//! objects' deals in one block. Until then the object is served from its
//! staged body and HEAD says `x-amz-meta-tessera-state: pending`. Nothing is
//! lost on a crash: a restart finds the pending entries and their bodies and
//! places them. Staged bytes are bounded; a PUT that finds the staging area
//! full waits for room (and gets SlowDown after a minute).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::index::{Index, PackRecord, Pending};
use tessera_ledger::storage::PackMember;
use crate::service::Gateway;

/// Default bound of staged (acknowledged, not yet placed) bytes.
pub const DEFAULT_STAGING_BYTES: u64 = 1 << 30;
/// Most objects placed in one batch, and most bytes.
const BATCH_OBJECTS: usize = tessera_ledger::storage::MAX_PACK_MEMBERS;
const BATCH_BYTES: u64 = 256 << 20;
/// Batches placed at once: most of them wait for their deals' block side
/// by side, while `UPLOADS_AT_ONCE` bounds their uploads. Large objects
/// come one or two to a batch, so a stream of them at 16 in flight fills
/// 16 batches within a block; with no batch free, what is acknowledged
/// next misses that block and waits for the one after.
const BATCHES_IN_FLIGHT: usize = 64;
/// Files (objects or packs) uploading to providers at once, each holding
/// one erasure-coded segment in memory.
const UPLOADS_AT_ONCE: usize = 8;
/// How long acknowledged small objects wait for others to share their
/// batch and pack. Every piece costs the chain a proof each epoch, whatever
/// its size, so a sustained stream of small PUTs goes into packs of up to
/// four seconds' worth, or `BATCH_OBJECTS`; the end of a stream waits only
/// `QUIET`. Each batch placed is a burst of work on one machine's devnet
/// (its deals, six providers taking pieces) that holds up PUTs being
/// answered meanwhile: 4 s instead of 1 s made the p99 of sequential 4 KiB
/// PUTs 0.83 of 1 s's (faster in 10 of 12 alternating blocks of 1,000 PUTs
/// on one devnet), with a quarter to a third of the deals and proofs.
const GATHER: Duration = Duration::from_secs(4);
/// A stream of PUTs that has sent nothing for this long has paused: what it
/// sent is placed without waiting out `GATHER`.
const QUIET: Duration = Duration::from_millis(50);
/// Bodies up to this size are made durable in the index transaction that
/// records them, and staging holds them there, with no file of their own.
pub const INLINE_BODY_MAX: u64 = 64 << 10;
/// How long a PUT waits for staging room before it is told to slow down.
const ROOM_WAIT: Duration = Duration::from_secs(60);

pub struct Staging {
    pub(crate) dir: PathBuf,
    max_bytes: u64,
    /// Staged bodies: files (one per content id) and small bodies held in
    /// the index only. Staging and finishing hold this lock, so a body
    /// never leaves while an entry that needs it is being added.
    room: Mutex<Room>,
    /// New pending work.
    pub(crate) wake: tokio::sync::Notify,
    /// Room was freed.
    freed: tokio::sync::Notify,
    /// Stagings waiting for the committer thread.
    queue: Arc<CommitQueue>,
    /// Index transactions run so far (by the committer thread or by a
    /// staging that found none running).
    commits: std::sync::atomic::AtomicU64,
    index: Arc<Index>,
}

#[derive(Default)]
struct CommitQueue {
    state: Mutex<Queue>,
    /// Something queued, or the staging area closed.
    ready: Condvar,
}

#[derive(Default)]
struct Queue {
    next_id: u64,
    waiting: Vec<Queued>,
    /// Placed batches to end, in parts of `END_PART` entries, one part
    /// with each of the committer thread's commits (the first batch's
    /// next part first).
    ended: std::collections::VecDeque<Ended>,
    /// The staging area is gone: the committer thread ends.
    closed: bool,
    /// A commit is running (on the committer thread or in a staging's own
    /// request): the next one waits for it.
    committing: bool,
}

/// Entries the placer has placed (or given up), and the packs they went
/// into, for the committer's next transactions; the answer, once the last
/// part committed, says whether all did.
struct Ended {
    /// Entries in no pack first: the first part ends them all, with the
    /// packs (`EndPart`).
    done: Vec<Pending>,
    packs: Vec<([u8; 32], PackRecord)>,
    /// Entries of `done` the first part ends.
    first: usize,
    /// The latest acknowledgement among the packs' members (their mark
    /// while parts remain, `EndPart::marks`).
    latest: u64,
    /// Entries of `done` ended so far.
    next: usize,
    reply: std::sync::mpsc::SyncSender<anyhow::Result<()>>,
}

impl Queue {
    /// The staging area is closed: what is queued, and what queues later,
    /// hears so instead of waiting for a commit.
    fn close(&mut self) {
        self.closed = true;
        self.waiting.clear();
        self.ended.clear();
    }
}

impl Ended {
    fn new(done: &[&Pending], packs: &[([u8; 32], PackRecord)], reply: std::sync::mpsc::SyncSender<anyhow::Result<()>>) -> Ended {
        let packed: std::collections::HashSet<&[u8; 32]> = packs.iter().flat_map(|(_, r)| &r.members).collect();
        let (mut done, members): (Vec<Pending>, Vec<Pending>) = done.iter().map(|p| (*p).clone()).partition(|p| !packed.contains(&p.cid));
        let first = done.len() + members.len().min(END_PART);
        let latest = members.iter().map(|p| p.since_ms).max().unwrap_or(0);
        done.extend(members);
        Ended { done, packs: packs.to_vec(), first, latest, next: 0, reply }
    }

    /// The entries the next part ends.
    fn part(&self) -> std::ops::Range<usize> {
        match self.next {
            0 => 0..self.first,
            from => from..(from + END_PART).min(self.done.len()),
        }
    }
}

/// Most placed entries one staging transaction ends: a PUT committed beside
/// a batch of a thousand small objects waits for a part of it, not for all.
const END_PART: usize = 64;

/// One staging waiting for the next commit; the answer is what the object
/// replaced, or `None` when staging had no room for it.
struct Queued {
    id: u64,
    /// The spooled body's file; `None` when the body is only in `inline`.
    file: Option<PathBuf>,
    inline: Option<Vec<u8>>,
    pending: Pending,
    bucket: String,
    key: String,
    meta: crate::index::ObjectMeta,
    reply: tokio::sync::oneshot::Sender<anyhow::Result<Option<Option<crate::index::ObjectMeta>>>>,
}

/// Takes a staging out of the queue if its request is dropped first.
struct Unqueue<'a> {
    staging: &'a Staging,
    id: u64,
}

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.staging.queue.state.lock() {
            queue.waiting.retain(|q| q.id != self.id);
        }
    }
}

/// What staging holds, in bytes, and which bodies it holds in the index.
#[derive(Default)]
struct Room {
    bytes: u64,
    /// Content id -> size of the small bodies kept only in the index (their
    /// pending entries' transaction made them durable): no file each, so a
    /// stream of small PUTs creates no inode per object.
    held: HashMap<[u8; 32], u64>,
}

/// A staged body, as staging holds it.
pub enum StagedBody {
    File(std::fs::File),
    Held(Vec<u8>),
}

pub enum Staged {
    /// Recorded as pending; returns the object it replaced.
    Pending(Option<crate::index::ObjectMeta>),
    /// Larger than the whole staging area (or staging is off): store it now.
    TooLarge,
}

impl Staging {
    /// Opens the staging directory, keeping the bodies of pending entries and
    /// removing anything else (leftovers of a crash before the index write),
    /// and starts the thread that commits stagings into `index`.
    pub fn open(dir: &Path, max_bytes: u64, index: &Arc<Index>) -> anyhow::Result<Arc<Staging>> {
        std::fs::create_dir_all(dir)?;
        let mut room = Room::default();
        for (cid, size) in index.staged_body_sizes()? {
            room.held.insert(cid, size);
            room.bytes += size;
        }
        let pending: std::collections::HashSet<String> = index.pending()?.iter().map(|p| hex::encode(p.cid)).collect();
        let held: std::collections::HashSet<String> = room.held.keys().map(hex::encode).collect();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().to_string();
            if pending.contains(&name) && !held.contains(&name) {
                room.bytes += entry.metadata()?.len();
            } else {
                // Leftovers: packs being written, bodies no entry needs, and
                // (from earlier versions) files of bodies the index holds.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let staging = Arc::new(Staging {
            dir: dir.to_path_buf(),
            max_bytes,
            room: Mutex::new(room),
            wake: tokio::sync::Notify::new(),
            freed: tokio::sync::Notify::new(),
            queue: Arc::default(),
            commits: Default::default(),
            index: index.clone(),
        });
        let (queue, weak) = (staging.queue.clone(), Arc::downgrade(&staging));
        std::thread::Builder::new().name("s3-commit".into()).spawn(move || commit_loop(&queue, &weak))?;
        Ok(staging)
    }

    pub(crate) fn path(&self, cid: &[u8; 32]) -> PathBuf {
        self.dir.join(hex::encode(cid))
    }

    /// The staged body of `cid`, if it is still waiting for placement. A
    /// held body is looked up in the index without first trying for a file
    /// it does not have.
    pub fn body(&self, cid: &[u8; 32]) -> Option<StagedBody> {
        self.bodies(std::slice::from_ref(cid)).pop().flatten()
    }

    /// `body` for each of `cids`, those held in the index in one read.
    fn bodies(&self, cids: &[[u8; 32]]) -> Vec<Option<StagedBody>> {
        let held: Vec<bool> = {
            let room = self.room.lock().expect("staging lock");
            cids.iter().map(|cid| room.held.contains_key(cid)).collect()
        };
        let wanted: Vec<[u8; 32]> = cids.iter().zip(&held).filter(|(_, h)| **h).map(|(cid, _)| *cid).collect();
        let mut read = self.index.staged_bodies(&wanted).unwrap_or_else(|_| vec![None; wanted.len()]).into_iter();
        cids.iter()
            .zip(held)
            .map(|(cid, held)| match held.then(|| read.next().flatten()).flatten() {
                Some(body) => Some(StagedBody::Held(body)),
                None => std::fs::File::open(self.path(cid)).ok().map(StagedBody::File),
            })
            .collect()
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn bytes(&self) -> u64 {
        self.room.lock().expect("staging lock").bytes
    }

    /// Moves the spooled body `file` into staging (or, with no file, writes
    /// the held body `inline` there) and records the object and its pending
    /// placement in one index transaction. `inline`, the body's bytes when it
    /// is small, goes into that transaction and makes it durable; otherwise
    /// `file` must already be synced.
    ///
    /// Group commit: stagings that arrive while one commits queue up, and
    /// the committer thread writes them all in the next transaction (one
    /// fsync), so concurrent PUTs do not wait one fsync each. A staging that
    /// finds no commit running commits itself, in its own request: a
    /// sequential client's PUT waits for no other thread to wake (the
    /// committer's, then its own worker's).
    pub async fn stage(
        &self,
        file: Option<&Path>,
        inline: Option<&[u8]>,
        pending: &Pending,
        bucket: &str,
        key: &str,
        meta: &crate::index::ObjectMeta,
    ) -> anyhow::Result<Result<Staged, s3s::S3Error>> {
        if pending.size > self.max_bytes {
            return Ok(Ok(Staged::TooLarge));
        }
        let deadline = Instant::now() + ROOM_WAIT;
        loop {
            let room = self.freed.notified();
            let (reply, answer) = tokio::sync::oneshot::channel();
            let (id, lead) = {
                let mut queue = self.queue.state.lock().expect("staging queue lock");
                anyhow::ensure!(!queue.closed, "the staging area's committer has stopped");
                queue.next_id += 1;
                let id = queue.next_id;
                queue.waiting.push(Queued {
                    id,
                    file: file.map(Path::to_path_buf),
                    inline: inline.map(<[u8]>::to_vec),
                    pending: pending.clone(),
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    meta: meta.clone(),
                    reply,
                });
                // Not while a placed batch's parts wait: they go with the
                // committer thread's next commit, this staging beside them.
                let lead = !queue.committing && queue.ended.is_empty();
                queue.committing |= lead;
                (id, lead.then(|| std::mem::take(&mut queue.waiting)))
            };
            match lead {
                // No commit running: this one, here, with whatever queued
                // beside it.
                Some(batch) => {
                    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let _leading = Leading(&self.queue);
                        off_the_runtime(|| self.commit(batch, None));
                    }));
                    anyhow::ensure!(committed.is_ok(), "the staging commit failed; the staging area is closed");
                }
                None => self.queue.ready.notify_one(),
            }
            // Dropped before its commit (the client went away): the entry leaves the queue.
            let unqueue = Unqueue { staging: self, id };
            let answer = answer.await;
            drop(unqueue);
            match answer {
                Ok(Ok(Some(old))) => {
                    self.wake.notify_one();
                    return Ok(Ok(Staged::Pending(old)));
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => anyhow::bail!("the staging commit ended without an answer"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, room).await.is_err() {
                if let Some(file) = file {
                    let _ = std::fs::remove_file(file);
                }
                return Ok(Err(s3s::s3_error!(
                    SlowDown,
                    "the endpoint's staging area is full ({} MiB waiting for the storage network); retry later",
                    self.max_bytes >> 20
                )));
            }
        }
    }

    /// Commits queued stagings: each body moves into staging if there is
    /// room for it (else its answer is `None`: wait for room and queue
    /// again), then one index transaction records them all, and ends the
    /// next part of a placed batch (`ended`; returned while parts remain).
    /// A small body (`inline`) gets no file: the transaction holds it.
    fn commit(&self, batch: Vec<Queued>, ended: Option<Ended>) -> Option<Ended> {
        let index = &self.index;
        let mut room = self.room.lock().expect("staging lock");
        let mut admitted = Vec::with_capacity(batch.len());
        let mut sync_dir = false;
        for q in batch {
            let cid = q.pending.cid;
            let target = self.path(&cid);
            // A file-backed entry needs the file; a held one, either.
            let present = target.exists() || (q.inline.is_some() && room.held.contains_key(&cid));
            if !(present || room.bytes == 0 || room.bytes + q.pending.size <= self.max_bytes) {
                let _ = q.reply.send(Ok(None));
                continue;
            }
            let moved = match (&q.file, &q.inline) {
                (Some(file), _) if present => std::fs::remove_file(file),
                (Some(file), _) => std::fs::rename(file, &target),
                (None, Some(_)) => Ok(()),
                (None, None) if present => Ok(()),
                (None, None) => Err(std::io::Error::other("the body is neither in a file nor held")),
            };
            match moved {
                Ok(()) => {
                    if !present {
                        room.bytes += q.pending.size;
                        match q.file {
                            Some(_) => sync_dir = true,
                            None => {
                                room.held.insert(cid, q.pending.size);
                            }
                        }
                    }
                    admitted.push(q);
                }
                Err(e) => {
                    let _ = q.reply.send(Err(anyhow::Error::from(e).context("cannot move the body into staging")));
                }
            }
        }
        // A large body's rename must survive a power loss before the index names it.
        let synced = if sync_dir { tessera_client::keyring::sync_dir(&self.dir) } else { Ok(()) };
        let entries: Vec<crate::index::PendingPut<'_>> =
            admitted.iter().map(|q| (q.bucket.as_str(), q.key.as_str(), &q.meta, &q.pending, q.inline.as_deref())).collect();
        let part = ended.as_ref().map_or(0..0, Ended::part);
        let done: Vec<&Pending> = ended.iter().flat_map(|e| &e.done[part.clone()]).collect();
        let (mut marks, mut unmarks) = (Vec::new(), Vec::new());
        if let Some(e) = &ended {
            let packs = e.packs.iter().map(|(pack, _)| *pack);
            match (part.start, part.end < e.done.len()) {
                (0, true) => marks.extend(packs.map(|pack| (pack, e.latest))),
                (1.., false) => unmarks.extend(packs),
                _ => {}
            }
        }
        let packs = ended.as_ref().filter(|_| part.start == 0).map_or(&[][..], |e| &e.packs);
        let end = crate::index::EndPart { done: &done, packs, marks: &marks, unmarks: &unmarks, marked: part.start > 0 };
        let recorded = synced.map_err(anyhow::Error::from).and_then(|()| index.stage_and_end(&entries, end));
        self.commits.fetch_add(1, Ordering::Relaxed);
        drop(entries);
        drop(done);
        if recorded.is_err() {
            // Held bodies this failed transaction was to keep: gone with it.
            for q in admitted.iter().filter(|q| q.file.is_none()) {
                if !index.is_pending(&q.pending.cid).unwrap_or(true)
                    && let Some(size) = room.held.remove(&q.pending.cid)
                {
                    room.bytes = room.bytes.saturating_sub(size);
                }
            }
        }
        drop(room);
        match recorded {
            Ok(replaced) => {
                for (q, old) in admitted.into_iter().zip(replaced) {
                    let _ = q.reply.send(Ok(Some(old)));
                }
                match ended {
                    Some(mut e) if part.end < e.done.len() => {
                        e.next = part.end;
                        Some(e)
                    }
                    Some(e) => {
                        let _ = e.reply.send(Ok(()));
                        None
                    }
                    None => None,
                }
            }
            Err(e) => {
                for q in admitted {
                    let _ = q.reply.send(Err(anyhow::anyhow!("cannot record the object: {e:#}")));
                }
                if let Some(ended) = ended {
                    let _ = ended.reply.send(Err(anyhow::anyhow!("cannot end the placed entries: {e:#}")));
                }
                None
            }
        }
    }

    /// Ends pending entries (one index transaction for all of them): a staged
    /// body no other entry needs moves into the read cache (the content is
    /// now on the network), unless a pack cached by `place` already serves
    /// it, and a held one is let go (its pack serves it).
    fn finish(&self, gateway: &Gateway, done: &[&Pending], packs: &[([u8; 32], PackRecord)]) -> anyhow::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        // In the committer's next transaction, with the stagings queued
        // meanwhile (PUTs wait for no commit of the placer's). A staging
        // committed later that reuses one of these bodies records a pending
        // entry of its own, which the check below finds.
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        {
            let mut queue = self.queue.state.lock().expect("staging queue lock");
            anyhow::ensure!(!queue.closed, "the staging area's committer has stopped");
            queue.ended.push_back(Ended::new(done, packs, reply));
        }
        self.queue.ready.notify_one();
        answer.recv().map_err(|_| anyhow::anyhow!("the staging commit ended without an answer"))??;
        let mut room = self.room.lock().expect("staging lock");
        let mut freed = false;
        let cids: Vec<[u8; 32]> = done.iter().map(|p| p.cid).collect();
        for (p, pending) in done.iter().zip(gateway.index.which_pending(&cids)?) {
            if !pending {
                if let Some(size) = room.held.remove(&p.cid) {
                    // Held by the index only: there is no file to look for.
                    room.bytes = room.bytes.saturating_sub(size);
                    freed = true;
                    continue;
                }
                let path = self.path(&p.cid);
                if let Ok(m) = std::fs::metadata(&path) {
                    room.bytes = room.bytes.saturating_sub(m.len());
                    if gateway.cache.in_pack(&p.cid) {
                        // Its pack was cached when it was placed: no second copy.
                        let _ = std::fs::remove_file(&path);
                    } else {
                        // Small bodies' files were never synced: the cache drops them on a restart.
                        gateway.cache.insert_as(&p.cid, &path, m.len(), p.size <= INLINE_BODY_MAX);
                    }
                    freed = true;
                }
            }
        }
        drop(room);
        if freed {
            self.freed.notify_waiters();
        }
        Ok(())
    }
}

/// Ends a commit run outside the committer thread and hands what queued
/// meanwhile to the committer thread; a commit that panicked closes the
/// staging area, as the committer thread's end does.
struct Leading<'a>(&'a CommitQueue);

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.committing = false;
        if std::thread::panicking() {
            state.close();
        }
        // The committer thread only when something waits for it: not a
        // wake-up, and a thread switch, per lone PUT.
        let wanted = state.closed || !state.waiting.is_empty() || !state.ended.is_empty();
        drop(state);
        if wanted {
            self.0.ready.notify_all();
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.queue.state.lock() {
            queue.closed = true;
        }
        self.queue.ready.notify_all();
    }
}

/// The committer thread: commits whatever queued while the last commit ran,
/// until the staging area is gone.
fn commit_loop(queue: &CommitQueue, staging: &Weak<Staging>) {
    // However this thread ends (a panic included), what is queued and what
    // queues later hears so instead of waiting for it.
    struct Closing<'a>(&'a CommitQueue);
    impl Drop for Closing<'_> {
        fn drop(&mut self) {
            self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).close();
        }
    }
    let _closing = Closing(queue);
    loop {
        let (batch, ended) = {
            let mut state = queue.state.lock().expect("staging queue lock");
            while (state.committing || (state.waiting.is_empty() && state.ended.is_empty())) && !state.closed {
                state = queue.ready.wait(state).expect("staging queue lock");
            }
            if state.closed {
                return;
            }
            state.committing = true;
            (std::mem::take(&mut state.waiting), state.ended.pop_front())
        };
        let Some(staging) = staging.upgrade() else { return };
        let rest = staging.commit(batch, ended);
        let mut state = queue.state.lock().expect("staging queue lock");
        // The batch being ended, part by part, before the next one.
        if let Some(rest) = rest {
            state.ended.push_front(rest);
        }
        state.committing = false;
    }
}

/// What the placer does next.
enum Next {
    /// Let a stream of small PUTs gather this much longer.
    Gather(Duration),
    /// Place these entries of this owner (none: wait for new work).
    Batch(String, Vec<Pending>),
}

/// The next batch: due pending entries of one owner, oldest first, up to
/// `BATCH_OBJECTS` and `BATCH_BYTES`; entries whose content no object
/// points at any more are ended instead.
fn next_batch(gateway: &Gateway, state: &Mutex<Schedule>) -> Next {
    let now = Instant::now();
    let read = || {
        gateway.index.pending().unwrap_or_else(|e| {
            eprintln!("s3: cannot read pending placements: {e:#}");
            Vec::new()
        })
    };
    // A batch in flight ends its entries in the index and only then leaves
    // the schedule, so entries read while none left are either still in
    // flight or no longer pending. When one left meanwhile, what was read
    // may hold it as pending with its body already let go (and its batch
    // would fail for want of it): read again with the schedule locked.
    let seen = state.lock().expect("placer lock").left;
    let pending = read();
    let st = state.lock().expect("placer lock");
    let pending = if st.left == seen { pending } else { read() };
    let mut due: Vec<Pending> = pending
        .into_iter()
        .filter(|p| {
            let id = (p.owner.clone(), p.cid);
            !st.in_flight.contains(&id) && st.retry_at.get(&id).is_none_or(|(at, _)| *at <= now)
        })
        .collect();
    drop(st);
    // Oldest acknowledgement first, so that a stream of new PUTs starves nothing.
    due.sort_by_key(|p| p.since_ms);
    // Give a stream of PUTs a moment to gather, so that small objects
    // share packs (fewer deals, pieces and proofs) instead of going one
    // by one; once the stream pauses, what came is placed at once.
    if let (Some(oldest), Some(newest)) = (due.first(), due.last())
        && due.len() < BATCH_OBJECTS
        && oldest.size <= PACK_MEMBER_MAX
    {
        let now = crate::service::now_ms();
        let waited = Duration::from_millis(now.saturating_sub(oldest.since_ms));
        let quiet = Duration::from_millis(now.saturating_sub(newest.since_ms));
        if let Some(wait) = gather_wait(waited, quiet) {
            return Next::Gather(wait);
        }
    }
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    let owner = due.first().map(|p| p.owner.clone()).unwrap_or_default();
    let mine: Vec<Pending> = due.into_iter().filter(|p| p.owner == owner).collect();
    // Content no object of the owner points at any more (deleted or
    // overwritten before it was placed) is dropped instead: one read per
    // batch's worth of entries, and their ends in one commit.
    let mut dropped: Vec<&Pending> = Vec::new();
    'cut: for entries in mine.chunks(BATCH_OBJECTS) {
        let cids: Vec<[u8; 32]> = entries.iter().map(|p| p.cid).collect();
        let gone = gateway.index.unreferenced(&owner, &cids).unwrap_or_else(|_| vec![false; cids.len()]);
        for (p, gone) in entries.iter().zip(gone) {
            if batch.len() == BATCH_OBJECTS || (!batch.is_empty() && batch_bytes + p.size > BATCH_BYTES) {
                break 'cut;
            }
            if gone {
                dropped.push(p);
                continue;
            }
            batch_bytes += p.size;
            batch.push(p.clone());
        }
    }
    if let Err(e) = gateway.staging.finish(gateway, &dropped, &[]) {
        eprintln!("s3: {e:#}");
    }
    Next::Batch(owner, batch)
}

/// Ends the deals of placements a stop cut short between opening them and
/// recording them (`Index::unsettled`), before the placer and compaction
/// start: their entries are still pending and are placed anew, and a pack
/// rewritten again has the same content id as one cut short.
pub async fn end_unrecorded(gateway: &Arc<Gateway>, stop: &AtomicBool) {
    let mut unsettled = gateway.index.unsettled();
    for _ in 0..UNSETTLED_TRIES {
        if unsettled.is_empty() || stop.load(Ordering::Relaxed) {
            break;
        }
        let g = gateway.clone();
        unsettled = tokio::task::spawn_blocking(move || end_unsettled(&g, unsettled)).await.unwrap_or_default();
        if !unsettled.is_empty() {
            tokio::time::sleep(UNSETTLED_RETRY).await;
        }
    }
    if !unsettled.is_empty() {
        eprintln!(
            "s3: the deals of {} placements a stop cut short could not be ended; placing resumes (the next start tries them again, unless they are placed meanwhile)",
            unsettled.len()
        );
    }
}

/// Places pending content until `stop` is set: batches of one owner's
/// entries through `storage::submit_contents` and `upload_contents`, up to
/// `BATCHES_IN_FLIGHT` at once
/// (one batch's uploads overlap the next one's block wait; their deals are
/// submitted one batch at a time). A failed entry is retried with backoff
/// (4 s doubling to 5 min), its body kept.
pub async fn run(gateway: Arc<Gateway>, stop: Arc<AtomicBool>) {
    let state = Arc::new(Mutex::new(Schedule::default()));
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
    let uploads = Arc::new(tessera_client::storage::UploadGate::new(UPLOADS_AT_ONCE));
    while !stop.load(Ordering::Relaxed) {
        let wake = gateway.staging.wake.notified();
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        // Reading the pending entries and each one's references blocks on
        // the index: on a thread of its own, so that the runtime's workers
        // go on serving requests meanwhile.
        let (g, st) = (gateway.clone(), state.clone());
        let next = tokio::task::spawn_blocking(move || next_batch(&g, &st)).await;
        let (owner, batch) = match next.unwrap_or(Next::Gather(Duration::from_secs(1))) {
            Next::Gather(wait) => {
                drop(slot);
                tokio::time::sleep(wait).await;
                continue;
            }
            Next::Batch(owner, batch) => (owner, batch),
        };
        if batch.is_empty() {
            drop(slot);
            let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
            continue;
        }
        state.lock().expect("placer lock").in_flight.extend(batch.iter().map(|p| (p.owner.clone(), p.cid)));
        let (gateway, state, uploads) = (gateway.clone(), state.clone(), uploads.clone());
        tokio::spawn(async move {
            let (mut results, packs) = place(&gateway, &owner, &batch, uploads).await;
            let placed: Vec<Pending> = batch.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(p, _)| p.clone()).collect();
            // Ending the entries waits for the committer's transactions, on
            // a thread of its own like `next_batch`; then which of them no
            // object points at any more (deleted or overwritten while being
            // placed), in one read.
            let (g, batch_owner) = (gateway.clone(), owner.clone());
            let ended = tokio::task::spawn_blocking(move || {
                let done: Vec<&Pending> = placed.iter().collect();
                g.staging.finish(&g, &done, &packs)?;
                let cids: Vec<[u8; 32]> = placed.iter().map(|p| p.cid).collect();
                // Ended either way; an index read that fails leaves their
                // release to the next deletion of the same content.
                Ok::<_, anyhow::Error>(g.index.unreferenced(&batch_owner, &cids).unwrap_or_else(|_| vec![false; cids.len()]))
            })
            .await
            .map_err(|e| anyhow::anyhow!("the placement's end panicked: {e}"))
            .and_then(|r| r);
            let mut unreferenced = match ended {
                Ok(flags) => flags.into_iter(),
                Err(e) => {
                    // Still pending: placed again after the backoff, like a failed upload.
                    let reason = format!("cannot record the placement: {e:#}");
                    for r in results.iter_mut().filter(|r| r.is_ok()) {
                        *r = Err(anyhow::anyhow!("{reason}"));
                    }
                    Vec::new().into_iter()
                }
            };
            let mut failed = Vec::new();
            for (p, result) in batch.iter().zip(results) {
                let id = (p.owner.clone(), p.cid);
                match result {
                    Ok(()) => {
                        if unreferenced.next().unwrap_or(false) {
                            gateway.release(&p.owner, Some(p.cid)).await;
                        }
                        state.lock().expect("placer lock").retry_at.remove(&id);
                    }
                    Err(e) => {
                        let mut st = state.lock().expect("placer lock");
                        let tries = st.retry_at.get(&id).map_or(0, |(_, n)| *n) + 1;
                        let backoff = Duration::from_secs((2u64 << tries.min(8)).min(300));
                        eprintln!(
                            "s3: placing {} for {} failed (attempt {tries}, next in {} s): {e:#}",
                            tessera_storage::Cid(tessera_types::Hash32(p.cid)),
                            p.owner,
                            backoff.as_secs()
                        );
                        st.retry_at.insert(id, (Instant::now() + backoff, tries));
                        failed.push((p, format!("{e:#}")));
                    }
                }
            }
            // Every failure of the batch in one transaction (a failed pack
            // is hundreds of entries), before they leave the schedule.
            if let Err(e) = off_the_runtime(|| gateway.index.pending_failed(&failed)) {
                eprintln!("s3: cannot record the failed placements: {e:#}");
            }
            let mut st = state.lock().expect("placer lock");
            for p in &batch {
                st.in_flight.remove(&(p.owner.clone(), p.cid));
            }
            st.left += 1;
            drop(st);
            drop(slot);
            gateway.staging.wake.notify_one();
        });
    }
}

/// How often, and how far apart, the deals of placements a stop cut short
/// are tried before placing starts without them (the node is down).
const UNSETTLED_TRIES: u32 = 12;
const UNSETTLED_RETRY: Duration = Duration::from_secs(5);

/// Ends the deals of placements a stop cut short between opening them and
/// recording them (`Index::unsettled`: each intent's owner's deals for its
/// content since its height) and settles those intents; returns the ones
/// to try again (the node did not answer).
fn end_unsettled(gateway: &Gateway, intents: Vec<crate::index::Intent>) -> Vec<crate::index::Intent> {
    let mut again = Vec::new();
    for intent in intents {
        let cid = tessera_storage::Cid(tessera_types::Hash32(intent.cid));
        let key = match gateway.keyring.get(&intent.owner) {
            Ok(key) => key,
            Err(e) => {
                // Nothing can end them here: left for the next start.
                eprintln!("s3: cannot end the unrecorded deals of {cid} for {}: {e}", intent.owner);
                continue;
            }
        };
        match tessera_client::storage::end_deals_since(&gateway.node, &key, &cid, intent.height) {
            Ok(0) => {}
            Ok(n) => eprintln!("s3: ended {n} deal(s) of {cid} for {} that a stop left unrecorded", intent.owner),
            Err(e) => {
                eprintln!("s3: cannot end the unrecorded deals of {cid} for {} yet: {e:#}", intent.owner);
                again.push(intent);
                continue;
            }
        }
        if let Err(e) = gateway.index.settle(&intent) {
            eprintln!("s3: cannot settle the placement of {cid}: {e:#}");
        }
    }
    again
}

/// How much longer small objects wait for others to share their batch, the
/// oldest of them acknowledged `waited` ago and the newest `quiet` ago;
/// `None`: place them now.
fn gather_wait(waited: Duration, quiet: Duration) -> Option<Duration> {
    (waited < GATHER && quiet < QUIET).then(|| (GATHER - waited).min(QUIET - quiet))
}

/// Runs `f`, which blocks on the disk (index commits, fsyncs), without
/// holding up the other tasks of a multi-threaded runtime: their worker
/// hands them on while this one waits. Runs it in place elsewhere (tests'
/// single-threaded runtimes).
pub(crate) fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs `f`, which blocks, on a thread of its own (which `f` may give a
/// lower CPU priority with `lower_own_priority`).
async fn in_background<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> anyhow::Result<R> {
    let (done, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("s3-place".into()).spawn(move || {
        let _ = done.send(f());
    })?;
    answer.await.map_err(|_| anyhow::anyhow!("the placement thread ended without an answer"))
}

/// Numbers each placement's work files (packs, and bodies held in the index
/// written out for their upload), so that batches side by side never write
/// the same file, not even two owners' batches of the same content.
static PLACEMENTS: AtomicU64 = AtomicU64::new(0);

/// Lowers the calling thread's CPU priority to nice 10 on Linux (the
/// threads it starts afterwards inherit it), so that placing what was
/// acknowledged yields the CPU to the requests being answered. It cannot be
/// raised again without privileges, so only threads that end after their
/// work call it.
fn lower_own_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions. Best effort: a thread already
    // lower keeps its own.
    let _ = tessera_client::keyring::set_nice(unsafe { libc::gettid() } as u32, 10);
}

/// Entries being placed now, and when failed ones are due again.
#[derive(Default)]
struct Schedule {
    in_flight: std::collections::HashSet<(String, [u8; 32])>,
    retry_at: HashMap<(String, [u8; 32]), (Instant, u32)>,
    /// Batches that have left flight so far.
    left: u64,
}

/// Objects up to this size are packed together (one deal and one set of
/// pieces and proofs for many of them); larger ones get deals of their own.
pub(crate) const PACK_MEMBER_MAX: u64 = 1 << 20;
/// Most plain bytes in one pack.
const PACK_MAX_BYTES: u64 = 16 << 20;
/// Staged bodies read from the index at once while a pack is written.
const PACK_READ_BODIES: usize = 64;

/// How one part of a batch is placed.
#[derive(Debug, PartialEq, Eq)]
enum Group {
    /// One entry in deals of its own.
    Own(usize),
    /// Small entries (two or more) packed end to end into one deal.
    Pack(Vec<usize>),
}

/// Groups a batch for placement (entry indexes).
fn plan(batch: &[Pending], segment_bytes: u64) -> Vec<Group> {
    let pack_max = PACK_MAX_BYTES.min(segment_bytes * tessera_ledger::storage::MAX_SEGMENTS_PER_DEAL as u64);
    let (small, large): (Vec<usize>, Vec<usize>) = (0..batch.len()).partition(|&i| batch[i].size <= PACK_MEMBER_MAX.min(pack_max));
    let mut groups: Vec<Group> = large.into_iter().map(Group::Own).collect();
    let mut packs: Vec<Vec<usize>> = vec![Vec::new()];
    let mut bytes = 0;
    for i in small {
        let pack = packs.last_mut().expect("one pack at least");
        if !pack.is_empty() && (bytes + batch[i].size > pack_max || pack.len() == tessera_ledger::storage::MAX_PACK_MEMBERS) {
            packs.push(Vec::new());
            bytes = 0;
        }
        bytes += batch[i].size;
        packs.last_mut().expect("one pack at least").push(i);
    }
    for pack in packs {
        match pack.len() {
            0 => {}
            1 => groups.push(Group::Own(pack[0])),
            _ => groups.push(Group::Pack(pack)),
        }
    }
    groups
}

/// A staged body: its content id and size.
type Source = ([u8; 32], u64);

/// Writes the staged bodies `sources` end to end into `path`; returns where each lies.
fn write_pack(staging: &Staging, sources: &[Source], path: &Path) -> anyhow::Result<Vec<PackMember>> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut offset = 0;
    let mut placed = Vec::with_capacity(sources.len());
    // Bodies held in the index are read a few dozen at a time, one read
    // each time (at most `PACK_READ_BODIES` times 64 KiB in memory).
    for chunk in sources.chunks(PACK_READ_BODIES) {
        let cids: Vec<[u8; 32]> = chunk.iter().map(|(cid, _)| *cid).collect();
        for ((cid, size), body) in chunk.iter().zip(staging.bodies(&cids)) {
            let name = tessera_storage::Cid(tessera_types::Hash32(*cid));
            let len = match body {
                Some(StagedBody::File(mut body)) => std::io::copy(&mut body, &mut out)?,
                Some(StagedBody::Held(body)) => {
                    std::io::Write::write_all(&mut out, &body)?;
                    body.len() as u64
                }
                None => anyhow::bail!("staged body of {name} is missing"),
            };
            anyhow::ensure!(len == *size, "staged body of {name} changed size");
            placed.push(PackMember { cid: tessera_types::Hash32(*cid), offset, len });
            offset += len;
        }
    }
    std::io::Write::flush(&mut out)?;
    Ok(placed)
}

/// The manifest of an object placed in deals of its own, from its staged
/// file `path`, in the segments content of its size is stored in
/// (`opts_for_size`), checked against its content id `cid` before any deal
/// is opened for it. Content staged by an endpoint that gave every object
/// its own segment size is found under that size.
fn own_manifest(path: &Path, cid: [u8; 32], size: u64, opts: &tessera_client::storage::PutOptions) -> anyhow::Result<tessera_storage::Manifest> {
    let name = tessera_storage::Cid(tessera_types::Hash32(cid));
    let sized = crate::service::opts_for_size(opts, size);
    let manifest = tessera_client::storage::manifest_of_file(path, &sized, &mut |_, _, _| {})?;
    if manifest.cid().0 .0 == cid {
        return Ok(manifest);
    }
    if sized.segment_bytes != opts.segment_bytes {
        let manifest = tessera_client::storage::manifest_of_file(path, opts, &mut |_, _, _| {})?;
        if manifest.cid().0 .0 == cid {
            return Ok(manifest);
        }
    }
    anyhow::bail!("the staged body of {name} no longer matches its content id")
}

/// Stores a batch of one owner's staged bodies; one result per entry, and
/// the packs small bodies went into, for `Staging::finish` to record with
/// the entries it ends.
async fn place(
    gateway: &Gateway,
    owner: &str,
    batch: &[Pending],
    uploads: Arc<tessera_client::storage::UploadGate>,
) -> (Vec<anyhow::Result<()>>, Vec<([u8; 32], PackRecord)>) {
    let key = match gateway.keyring.get(owner) {
        Ok(k) => k,
        Err(e) => return (batch.iter().map(|_| Err(anyhow::anyhow!("{e}"))).collect(), Vec::new()),
    };
    let node = gateway.node.clone();
    let opts = crate::service::clone_opts(&gateway.put_options);
    let groups = plan(batch, opts.segment_bytes as u64);
    let placement = PLACEMENTS.fetch_add(1, Ordering::Relaxed);
    // Each group: the file to store; the bodies to write into it first (a
    // pack's, or a held body's); for an object of its own the manifest
    // computed when it was staged, or else its content id and size (its
    // manifest is then computed here); whether it is a pack.
    type Work = (PathBuf, Vec<Source>, Option<tessera_storage::Manifest>, Option<Source>, bool);
    let work: Vec<Work> = groups
        .iter()
        .enumerate()
        .map(|(n, group)| match group {
            Group::Own(i) => {
                let p = &batch[*i];
                let known = gateway.manifests.lock().expect("manifests lock").remove(&p.cid);
                let wanted = crate::service::opts_for_size(&opts, p.size).segment_bytes as u64;
                let known = known.filter(|m| m.segment_bytes == wanted);
                let own = Some((p.cid, p.size));
                match gateway.staging.path(&p.cid) {
                    staged if staged.exists() => (staged, Vec::new(), known, own, false),
                    // Held in the index: written out for its upload (and then the read cache).
                    _ => (gateway.staging.dir.join(format!(".own-{placement}-{}", hex::encode(p.cid))), vec![(p.cid, p.size)], known, own, false),
                }
            }
            Group::Pack(members) => (
                gateway.staging.dir.join(format!(".pack-{placement}-{n}")),
                members.iter().map(|&i| (batch[i].cid, batch[i].size)).collect(),
                None,
                None,
                true,
            ),
        })
        .collect();
    let (staging, index, owner_name) = (gateway.staging.clone(), gateway.index.clone(), owner.to_string());
    let joined = in_background(move || {
        let mut work = work;
        let prepared: Vec<anyhow::Result<Vec<PackMember>>> = work
            .iter_mut()
            .map(|(path, sources, known, own, _)| {
                let members = if sources.is_empty() { Vec::new() } else { write_pack(&staging, sources, path)? };
                match (&*known, *own) {
                    (None, Some((cid, size))) => *known = Some(own_manifest(path, cid, size, &opts)?),
                    // A pack's content id, for the intent recorded before its deals open.
                    (None, None) => *known = Some(tessera_client::storage::manifest_of_file(path, &opts, &mut |_, _, _| {})?),
                    _ => {}
                }
                Ok(members)
            })
            .collect();
        let ready: Vec<tessera_client::storage::Content> = work
            .iter()
            .zip(&prepared)
            .filter_map(|((path, _, known, _, pack), members)| {
                let members = members.as_ref().ok()?;
                // Every manifest here was computed from this very file (a
                // staged body, named by its content id, or the pack just
                // written above), so its segments are not hashed a second
                // time on upload; each provider still checks its piece.
                Some(tessera_client::storage::Content {
                    path,
                    members: if *pack { members.clone() } else { Vec::new() },
                    manifest: known.clone(),
                    unchanged: true,
                })
            })
            .collect();
        // The index names the contents before their deals open: a stop
        // before their record leaves it, and the next start ends those
        // deals (`end_unsettled`) instead of letting them run unrecorded.
        let cids: Vec<[u8; 32]> = ready.iter().filter_map(|c| c.manifest.as_ref()).map(|m| m.cid().0 .0).collect();
        let intended = node.status().map_err(|e| anyhow::anyhow!("{e}")).and_then(|s| index.intend(&owner_name, &cids, s.height));
        if let Err(e) = intended {
            let refused: Vec<anyhow::Result<(tessera_client::storage::PutResult, Vec<PackMember>)>> = prepared.into_iter().map(|m| m.and_then(|_| Err(anyhow::anyhow!("cannot record the deals about to open: {e:#}")))).collect();
            return (refused, work);
        }
        // The deals go out at once, at the priority of the requests (a
        // placement thread starved by them would miss the next block);
        // the uploads, most of the work, then yield to the requests.
        let submitted = tessera_client::storage::submit_contents(&node, &key, &ready, &opts, &mut |_, _, _| {});
        lower_own_priority();
        let mut stored = tessera_client::storage::upload_contents(&node, &key, &ready, submitted, Some(&uploads), &mut |_, _, _| {}).into_iter();
        let out: Vec<anyhow::Result<(tessera_client::storage::PutResult, Vec<PackMember>)>> = prepared
            .into_iter()
            .map(|members| {
                let members = members?;
                Ok((stored.next().expect("one result per prepared content")?, members))
            })
            .collect();
        (out, work)
    })
    .await;
    let (stored, work) = match joined {
        Ok(r) => r,
        Err(e) => return (batch.iter().map(|_| Err(anyhow::anyhow!("placement task failed: {e}"))).collect(), Vec::new()),
    };
    let mut results: Vec<anyhow::Result<()>> = batch.iter().map(|_| Ok(())).collect();
    let mut packs = Vec::new();
    for ((group, stored), (path, sources, _, _, _)) in groups.iter().zip(stored).zip(work) {
        let outcome: anyhow::Result<()> = (|| {
            let (r, members) = stored?;
            match group {
                Group::Own(i) => anyhow::ensure!(r.cid.0 .0 == batch[*i].cid, "the staged body no longer matches its content id"),
                Group::Pack(_) => {
                    packs.push((r.cid.0 .0, PackRecord { owner: owner.to_string(), members: members.iter().map(|m| m.cid.0).collect() }));
                }
            }
            // A file written for this upload (never synced) becomes the read
            // cache's copy: a pack serves each of its members.
            if !sources.is_empty() {
                off_the_runtime(|| match group {
                    Group::Pack(_) => gateway.cache.insert_pack(&r.cid.0 .0, &path, r.bytes, &members),
                    Group::Own(_) => gateway.cache.insert_unsynced(&r.cid.0 .0, &path, r.bytes),
                });
            }
            Ok(())
        })();
        if !sources.is_empty() {
            // Still here when the placement failed (the cache moves what it keeps).
            let _ = std::fs::remove_file(&path);
        }
        if let Err(e) = outcome {
            let reason = format!("{e:#}");
            let entries = match group {
                Group::Own(i) => std::slice::from_ref(i),
                Group::Pack(members) => members.as_slice(),
            };
            for &i in entries {
                results[i] = Err(anyhow::anyhow!("{reason}"));
            }
        }
    }
    (results, packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ObjectMeta;

    fn entry(cid: u8, size: u64) -> Pending {
        Pending { cid: [cid; 32], owner: "alice".into(), size, escrow: 1, since_ms: 0, attempts: 0, last_error: None }
    }

    fn meta(cid: u8, size: u64) -> ObjectMeta {
        ObjectMeta { cid: Some([cid; 32]), size, etag: "e".into(), modified_ms: 0, content_type: None }
    }

    fn spooled(dir: &Path, name: &str, len: usize) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![7u8; len]).unwrap();
        p
    }

    #[tokio::test]
    async fn staged_bodies_survive_a_restart_and_the_bound_holds() {
        let work = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&work.path().join("index.redb")).unwrap());
        let staging = Staging::open(&work.path().join("staged"), 1000, &index).unwrap();
        for (i, name) in [(1u8, "a"), (2, "b")] {
            let f = spooled(work.path(), name, 400);
            assert!(matches!(staging.stage(Some(&f), None, &entry(i, 400), "bkt", name, &meta(i, 400)).await.unwrap(), Ok(Staged::Pending(None))));
            assert!(!f.exists(), "the spool file moved into staging");
        }
        assert_eq!(staging.bytes(), 800);
        assert!(index.is_pending(&[1; 32]).unwrap() && !index.is_pending(&[3; 32]).unwrap());
        // The same content again shares the staged body.
        let f = spooled(work.path(), "a2", 400);
        assert!(matches!(staging.stage(Some(&f), None, &entry(1, 400), "bkt", "a2", &meta(1, 400)).await.unwrap(), Ok(Staged::Pending(None))));
        assert_eq!((staging.bytes(), index.pending().unwrap().len()), (800, 2));
        // Larger than the whole area: stored synchronously instead.
        let big = spooled(work.path(), "big", 10);
        assert!(matches!(staging.stage(Some(&big), None, &entry(9, 1001), "bkt", "big", &meta(9, 1001)).await.unwrap(), Ok(Staged::TooLarge)));
        // A small body held in memory (no spooled file) is durable in the
        // index, and only there: no file, no inode per small object.
        let body = vec![7u8; 100];
        assert!(matches!(staging.stage(None, Some(&body), &entry(3, 100), "bkt", "c", &meta(3, 100)).await.unwrap(), Ok(Staged::Pending(None))));
        assert!(!staging.path(&[3; 32]).exists());
        assert!(matches!(staging.body(&[3; 32]), Some(StagedBody::Held(b)) if b == body));
        assert_eq!(staging.bytes(), 900);
        // A crash: a stray body without an index entry goes, pending ones
        // stay, a held body is still held (a file of it an earlier version
        // wrote goes), and the bytes add up again.
        std::fs::write(work.path().join("staged").join(hex::encode([5u8; 32])), b"stray").unwrap();
        std::fs::write(staging.path(&[3; 32]), b"").unwrap();
        drop(staging);
        let staging = Staging::open(&work.path().join("staged"), 1000, &index).unwrap();
        assert_eq!(staging.bytes(), 900);
        assert!(!staging.path(&[3; 32]).exists());
        assert!(matches!(staging.body(&[3; 32]), Some(StagedBody::Held(b)) if b == body));
        assert!(matches!(staging.body(&[1; 32]), Some(StagedBody::File(_))) && staging.body(&[5; 32]).is_none());
    }

    #[tokio::test]
    async fn stagings_that_queue_meanwhile_share_one_commit_and_a_dropped_one_leaves() {
        let work = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&work.path().join("index.redb")).unwrap());
        let staging = Staging::open(&work.path().join("staged"), 1 << 20, &index).unwrap();
        // As if a commit were running: stagings queue up behind it.
        staging.queue.state.lock().unwrap().committing = true;
        let tasks: Vec<_> = (1..=8u8)
            .map(|i| {
                let staging = staging.clone();
                let f = spooled(work.path(), &format!("q{i}"), 100);
                tokio::spawn(async move {
                    let body = std::fs::read(&f).unwrap();
                    // Half with a spooled file, half held in memory only.
                    let file = (i % 2 == 0).then_some(f.as_path());
                    staging.stage(file, Some(&body), &entry(i, 100), "bkt", &format!("k{i}"), &meta(i, 100)).await.unwrap()
                })
            })
            .collect();
        let queued = || staging.queue.state.lock().unwrap().waiting.len();
        let arrived = || staging.queue.state.lock().unwrap().next_id;
        for _ in 0..1000 {
            if arrived() == 8 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(arrived(), 8);
        let left = queued();
        assert_eq!(left, 8, "all of them wait for the running commit");
        assert!(index.pending().unwrap().is_empty(), "nothing is recorded before its commit");
        // A request dropped while it waits takes its entry out of the queue.
        let f = spooled(work.path(), "gone", 100);
        let body = std::fs::read(&f).unwrap();
        {
            let (pending, object) = (entry(9, 100), meta(9, 100));
            let gone = staging.stage(Some(&f), Some(&body), &pending, "bkt", "gone", &object);
            tokio::pin!(gone);
            tokio::select! {
                biased;
                _ = &mut gone => panic!("staged while a commit was running"),
                () = tokio::task::yield_now() => {}
            }
            assert_eq!(queued(), left + 1);
        }
        assert_eq!(queued(), left);
        // The commit ends: the committer thread takes all that queued.
        drop(Leading(&staging.queue));
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Ok(Staged::Pending(None))));
        }
        assert_eq!((index.pending().unwrap().len(), staging.bytes()), (8, 800));
        let staged = |i: u8| match staging.body(&[i; 32]) {
            Some(StagedBody::File(mut f)) => {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut bytes).unwrap();
                (true, bytes)
            }
            Some(StagedBody::Held(bytes)) => (false, bytes),
            None => (false, Vec::new()),
        };
        // Spooled files moved into staging; bodies held in memory stay in the index.
        assert!((1..=8u8).all(|i| staged(i) == (i % 2 == 0, vec![7u8; 100])));
        assert!(index.object("bkt", "k8").unwrap().is_some() && index.object("bkt", "gone").unwrap().is_none());
        assert_eq!(queued(), 0);
        assert_eq!(staging.commits.load(Ordering::Relaxed), 1, "eight stagings that queued behind a commit share the next one");
    }

    #[tokio::test]
    async fn a_large_placed_batch_ends_in_parts_and_a_put_beside_it_waits_for_one_part() {
        let work = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&work.path().join("index.redb")).unwrap());
        let staging = Staging::open(&work.path().join("staged"), 1 << 20, &index).unwrap();
        // 150 small objects in a pack, and two large ones of their own.
        let batch: Vec<Pending> = (0..152u8).map(|i| entry(i, 10)).collect();
        for p in &batch {
            index.put_object_pending("bkt", &format!("k{}", p.cid[0]), &meta(p.cid[0], 10), p, Some(&[7; 10])).unwrap();
        }
        let pack = PackRecord { owner: "alice".into(), members: batch[2..].iter().map(|p| p.cid).collect() };
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let done: Vec<&Pending> = batch.iter().rev().collect();
        let ended = Ended::new(&done, &[([200; 32], pack.clone())], reply);
        // A PUT committed with the first part is answered then.
        let (put_reply, mut put_answer) = tokio::sync::oneshot::channel();
        let put = Queued {
            id: 1,
            file: None,
            inline: Some(vec![1; 10]),
            pending: entry(201, 10),
            bucket: "bkt".into(),
            key: "put".into(),
            meta: meta(201, 10),
            reply: put_reply,
        };
        let mut left = staging.commit(vec![put], Some(ended));
        assert!(matches!(put_answer.try_recv(), Ok(Ok(Some(None)))));
        assert_eq!(index.pack(&[200; 32]).unwrap(), Some(pack), "the packs go with the first part");
        assert!(!index.is_pending(&[0; 32]).unwrap() && !index.is_pending(&[1; 32]).unwrap(), "and every entry in no pack");
        // A stop now would leave the rest pending: opening the index ends it.
        assert!(!crate::index::tests_support::marked_packs(&index).is_empty());
        let mut parts = 1;
        while let Some(e) = left {
            assert_eq!(index.pending().unwrap().len(), 150 + 1 - END_PART * parts);
            assert!(answer.try_recv().is_err(), "answered before its last part");
            left = staging.commit(Vec::new(), Some(e));
            parts += 1;
        }
        assert_eq!(parts, 150usize.div_ceil(END_PART));
        answer.try_recv().unwrap().unwrap();
        assert!(crate::index::tests_support::marked_packs(&index).is_empty(), "unmarked with the last part");
        assert_eq!(index.pending().unwrap(), vec![entry(201, 10)]);
    }

    #[test]
    fn a_stream_of_puts_gathers_until_it_pauses_or_its_oldest_has_waited_enough() {
        let ms = Duration::from_millis;
        // PUTs still arriving: wait, at most until the next could have come.
        assert_eq!(gather_wait(ms(10), ms(2)), Some(ms(48)));
        assert_eq!(gather_wait(GATHER - ms(20), ms(1)), Some(ms(20)));
        // The stream paused, or its oldest object has waited long enough.
        assert_eq!(gather_wait(ms(60), QUIET), None);
        assert_eq!(gather_wait(GATHER, ms(0)), None);
    }

    #[test]
    fn small_entries_share_packs_and_large_ones_get_their_own_deals() {
        let mut batch: Vec<Pending> = (0..5u8).map(|i| entry(i, 4096)).collect();
        batch.push(entry(9, 3 << 20));
        let groups = plan(&batch, 1 << 20);
        assert_eq!(groups, vec![Group::Own(5), Group::Pack(vec![0, 1, 2, 3, 4])]);
        // A lone small entry is not worth a pack.
        assert_eq!(plan(&batch[..1], 1 << 20), vec![Group::Own(0)]);
        // Packs stop at their byte bound.
        let big: Vec<Pending> = (0..40u8).map(|i| entry(i, 1 << 20)).collect();
        let groups = plan(&big, 1 << 20);
        assert_eq!(groups.len(), 3);
        assert!(groups.iter().all(|g| matches!(g, Group::Pack(m) if m.len() as u64 * (1 << 20) <= PACK_MAX_BYTES)));
    }

    #[tokio::test]
    async fn stagings_get_an_error_instead_of_waiting_once_a_commit_has_panicked() {
        let work = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&work.path().join("index.redb")).unwrap());
        let staging = Staging::open(&work.path().join("staged"), 1 << 20, &index).unwrap();
        // A panic while the staging lock is held poisons it: the next
        // commit (in the staging's own request) panics on it.
        let poisoner = staging.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.room.lock().unwrap();
            panic!("poison the staging lock");
        })
        .join();
        let body = vec![7u8; 100];
        for (i, name) in [(1u8, "a"), (2, "b")] {
            let staged = tokio::time::timeout(Duration::from_secs(10), staging.stage(None, Some(&body), &entry(i, 100), "bkt", name, &meta(i, 100)))
                .await
                .expect("a staging waited for a committer that is gone");
            assert!(staged.is_err(), "staging {name} was answered as if committed");
        }
        assert!(index.object("bkt", "a").unwrap().is_none());
    }

    #[tokio::test]
    async fn a_pack_file_holds_its_members_end_to_end() {
        let work = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&work.path().join("index.redb")).unwrap());
        let staging = Staging::open(&work.path().join("staged"), 1 << 20, &index).unwrap();
        let batch = [entry(1, 300), entry(2, 5)];
        for (i, p) in batch.iter().enumerate() {
            let f = spooled(work.path(), &format!("b{i}"), p.size as usize);
            let body = std::fs::read(&f).unwrap();
            // One body in a staged file, one held by the index.
            let file = (i == 0).then_some(f.as_path());
            let staged = staging.stage(file, Some(&body), p, "bkt", &format!("k{i}"), &meta(p.cid[0], p.size)).await.unwrap();
            assert!(matches!(staged, Ok(Staged::Pending(_))));
        }
        assert!(staging.path(&[1; 32]).exists() && !staging.path(&[2; 32]).exists());
        let path = work.path().join("pack");
        let sources: Vec<Source> = batch.iter().map(|p| (p.cid, p.size)).collect();
        let members = write_pack(&staging, &sources, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 305);
        assert_eq!(members.iter().map(|m| (m.cid.0[0], m.offset, m.len)).collect::<Vec<_>>(), vec![(1, 0, 300), (2, 300, 5)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_staging_area_says_slow_down() {
        let work = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&work.path().join("index.redb")).unwrap());
        let staging = Staging::open(&work.path().join("staged"), 1000, &index).unwrap();
        let f = spooled(work.path(), "a", 700);
        assert!(matches!(staging.stage(Some(&f), None, &entry(1, 700), "bkt", "a", &meta(1, 700)).await.unwrap(), Ok(Staged::Pending(_))));
        let f = spooled(work.path(), "b", 700);
        let err = match staging.stage(Some(&f), None, &entry(2, 700), "bkt", "b", &meta(2, 700)).await.unwrap() {
            Err(e) => e,
            Ok(_) => panic!("a full staging area took more"),
        };
        assert_eq!(err.code(), &s3s::S3ErrorCode::SlowDown);
        assert!(!f.exists(), "the refused body is not kept");
        assert_eq!(index.object("bkt", "b").unwrap(), None);
    }

    #[test]
    fn an_own_object_is_placed_in_the_segments_its_content_id_was_made_with() {
        let work = tempfile::tempdir().unwrap();
        let path = work.path().join("body");
        std::fs::write(&path, (0..3u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();
        let size = 3 << 20;
        // An endpoint set to 1 MiB segments stores a 3 MiB object in one
        // 4 MiB segment (the floor for objects of their own); the same body
        // staged under the plain 1 MiB rule is still found.
        let mut opts = crate::service::default_put_options();
        opts.segment_bytes = 1 << 20;
        let of = |segment_bytes: usize| {
            let mut o = crate::service::clone_opts(&opts);
            o.segment_bytes = segment_bytes;
            tessera_client::storage::manifest_of_file(&path, &o, &mut |_, _, _| {}).unwrap()
        };
        assert_eq!(crate::service::opts_for_size(&opts, size).segment_bytes, 4 << 20);
        for segment_bytes in [4 << 20, 1 << 20] {
            let cid = of(segment_bytes).cid().0 .0;
            let m = own_manifest(&path, cid, size, &opts).unwrap();
            assert_eq!((m.segment_bytes, m.cid().0 .0), (segment_bytes as u64, cid));
        }
        let e = own_manifest(&path, [9; 32], size, &opts).unwrap_err();
        assert!(format!("{e:#}").contains("no longer matches its content id"), "{e:#}");
        // Only objects past 256 default segments get larger ones.
        let d = crate::service::default_put_options();
        assert_eq!(crate::service::opts_for_size(&d, 1 << 30).segment_bytes, d.segment_bytes);
        assert!(crate::service::opts_for_size(&d, 5 << 30).segment_bytes > d.segment_bytes);
    }
}
