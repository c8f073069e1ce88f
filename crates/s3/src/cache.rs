//! The endpoint's read cache: whole objects by content id, on local disk,
//! bounded in bytes, least recently read evicted first. Content ids name
//! immutable content, so an entry never goes stale; entries come from bodies
//! this endpoint stored (PUT, multipart, job exports) or fetched and checked
//! against their hashes (GET), so a GET of a recent object is a local read
//! instead of K piece fetches and a decode.
//!
//! A GET that misses fills the cache only when the same content missed
//! before (`wants`): one pass over more data than the cache holds (a dataset
//! read once) streams through without writing every object to disk and
//! evicting what is read again and again.
//!
//! Entries whose files were never synced (small bodies, durable elsewhere
//! until they reached the network) live under `unsynced/`, which a restart
//! empties: a power loss may have torn them, and the cache never serves a
//! torn copy.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tessera_ledger::storage::PackMember;

/// The subdirectory of entries whose files were never synced.
const UNSYNCED: &str = "unsynced";
/// Content ids remembered as missed once, for `wants` (32 bytes each).
const MISSES_KEPT: usize = 8192;

pub struct ContentCache {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Content id -> (size, last use, unsynced).
    entries: HashMap<[u8; 32], (u64, u64, bool)>,
    /// Last use -> content id: the eviction order, oldest first.
    by_use: BTreeMap<u64, [u8; 32]>,
    bytes: u64,
    clock: u64,
    /// Content cached only inside a cached pack: content id -> (pack
    /// content id, offset). Small bodies reach the cache this way, one file
    /// per pack instead of one per object.
    members: HashMap<[u8; 32], ([u8; 32], u64)>,
    /// Pack content id -> the members registered above.
    packs: HashMap<[u8; 32], Vec<[u8; 32]>>,
    /// Content that missed once and is not cached, oldest first, and the
    /// same as a set; at most `MISSES_KEPT`.
    missed: std::collections::VecDeque<[u8; 32]>,
    missed_set: std::collections::HashSet<[u8; 32]>,
}

impl State {
    fn add(&mut self, cid: [u8; 32], size: u64, unsynced: bool) {
        self.clock += 1;
        self.entries.insert(cid, (size, self.clock, unsynced));
        self.by_use.insert(self.clock, cid);
        self.bytes += size;
    }

    /// Marks `cid` used now; false when it is not cached.
    fn touch(&mut self, cid: &[u8; 32]) -> bool {
        self.clock += 1;
        let clock = self.clock;
        let Some(entry) = self.entries.get_mut(cid) else { return false };
        self.by_use.remove(&entry.1);
        entry.1 = clock;
        self.by_use.insert(clock, *cid);
        true
    }

    /// Forgets `cid`; returns whether its file was unsynced.
    fn remove(&mut self, cid: &[u8; 32]) -> Option<bool> {
        for member in self.packs.remove(cid).unwrap_or_default() {
            // A member also in a pack cached later is served from that one.
            if self.members.get(&member).is_some_and(|(pack, _)| pack == cid) {
                self.members.remove(&member);
            }
        }
        let (size, used, unsynced) = self.entries.remove(cid)?;
        self.by_use.remove(&used);
        self.bytes -= size;
        Some(unsynced)
    }
}

impl ContentCache {
    /// Opens (or creates) the cache in `dir`, keeping what an earlier run left
    /// within `max_bytes` (but no unsynced entry). `max_bytes` 0 disables it.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<ContentCache> {
        let unsynced = dir.join(UNSYNCED);
        if unsynced.exists() {
            std::fs::remove_dir_all(&unsynced)?;
        }
        std::fs::create_dir_all(&unsynced)?;
        let mut state = State::default();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name == UNSYNCED {
                continue;
            }
            let parsed = name.to_str().and_then(|n| hex::decode(n).ok()).and_then(|b| <[u8; 32]>::try_from(b).ok());
            match parsed {
                Some(cid) if max_bytes > 0 => state.add(cid, entry.metadata()?.len(), false),
                // Leftovers of an interrupted insert, or a disabled cache.
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let cache = ContentCache { dir: dir.to_path_buf(), max_bytes, state: Mutex::new(state) };
        cache.evict(&mut cache.state.lock().expect("cache lock"));
        Ok(cache)
    }

    fn path(&self, cid: &[u8; 32], unsynced: bool) -> PathBuf {
        match unsynced {
            true => self.dir.join(UNSYNCED).join(hex::encode(cid)),
            false => self.dir.join(hex::encode(cid)),
        }
    }

    /// The cached content, opened (an open file stays readable if it is evicted meanwhile).
    pub fn open_entry(&self, cid: &[u8; 32]) -> Option<std::fs::File> {
        let mut st = self.state.lock().expect("cache lock");
        if !st.touch(cid) {
            return None;
        }
        let unsynced = st.entries.get(cid).is_some_and(|e| e.2);
        match std::fs::File::open(self.path(cid, unsynced)) {
            Ok(f) => Some(f),
            Err(_) => {
                st.remove(cid);
                None
            }
        }
    }

    /// The cached content of `cid` and where in that file it starts: a file
    /// of its own, or the cached pack it sits in.
    pub fn open_slice(&self, cid: &[u8; 32]) -> Option<(std::fs::File, u64)> {
        if let Some(file) = self.open_entry(cid) {
            return Some((file, 0));
        }
        let (pack, offset) = *self.state.lock().expect("cache lock").members.get(cid)?;
        Some((self.open_entry(&pack)?, offset))
    }

    /// Keeps the never synced pack file `file` (content `pack`, `size`
    /// bytes) and serves each of its `members` from it, until the pack is
    /// evicted or the endpoint restarts.
    pub fn insert_pack(&self, pack: &[u8; 32], file: &Path, size: u64, members: &[PackMember]) {
        let mut st = self.state.lock().expect("cache lock");
        if !self.admit(&mut st, pack, file, size, true) {
            return;
        }
        for m in members {
            if m.offset + m.len <= size {
                let cid = m.cid.0;
                st.members.insert(cid, (*pack, m.offset));
                st.packs.entry(*pack).or_default().push(cid);
            }
        }
        self.evict(&mut st);
    }

    /// Whether a GET that missed content `cid` (`size` bytes) should fill
    /// the cache with it: only when it fits and missed before. The first
    /// miss is remembered (the latest `MISSES_KEPT` of them).
    pub fn wants(&self, cid: &[u8; 32], size: u64) -> bool {
        if size > self.max_bytes / 4 {
            return false;
        }
        let mut st = self.state.lock().expect("cache lock");
        if st.entries.contains_key(cid) {
            return false;
        }
        if st.missed_set.remove(cid) {
            st.missed.retain(|c| c != cid);
            return true;
        }
        if st.missed.len() == MISSES_KEPT
            && let Some(oldest) = st.missed.pop_front()
        {
            st.missed_set.remove(&oldest);
        }
        st.missed.push_back(*cid);
        st.missed_set.insert(*cid);
        false
    }

    /// Whether a cached pack serves content `cid`.
    pub fn in_pack(&self, cid: &[u8; 32]) -> bool {
        self.state.lock().expect("cache lock").members.contains_key(cid)
    }

    /// Moves `file` (holding exactly the content of `cid`, synced) into the
    /// cache, or deletes it when it does not fit.
    pub fn insert(&self, cid: &[u8; 32], file: &Path, size: u64) {
        self.insert_as(cid, file, size, false);
    }

    /// `insert` for a file that was never synced: kept until a restart.
    pub fn insert_unsynced(&self, cid: &[u8; 32], file: &Path, size: u64) {
        self.insert_as(cid, file, size, true);
    }

    /// `insert` or `insert_unsynced`, as `unsynced` says.
    pub fn insert_as(&self, cid: &[u8; 32], file: &Path, size: u64, unsynced: bool) {
        let mut st = self.state.lock().expect("cache lock");
        if self.admit(&mut st, cid, file, size, unsynced) {
            self.evict(&mut st);
        }
    }

    /// Moves `file` in as `cid`'s entry (not yet evicting for it); false,
    /// with the file deleted, when it is too large, already cached or
    /// cannot be moved.
    fn admit(&self, st: &mut State, cid: &[u8; 32], file: &Path, size: u64, unsynced: bool) -> bool {
        if size > self.max_bytes / 4 || st.entries.contains_key(cid) || std::fs::rename(file, self.path(cid, unsynced)).is_err() {
            let _ = std::fs::remove_file(file);
            return false;
        }
        st.add(*cid, size, unsynced);
        true
    }

    /// Drops least recently used entries until the cache fits its bound.
    fn evict(&self, st: &mut State) {
        while st.bytes > self.max_bytes {
            let Some((_, &cid)) = st.by_use.first_key_value() else { break };
            if let Some(unsynced) = st.remove(&cid) {
                let _ = std::fs::remove_file(self.path(&cid, unsynced));
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.state.lock().expect("cache lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, len: usize) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, vec![1u8; len]).unwrap();
        p
    }

    #[test]
    fn least_recently_read_goes_first_and_the_bound_holds() {
        let work = tempfile::tempdir().unwrap();
        let cache = ContentCache::open(&work.path().join("cache"), 1000).unwrap();
        for i in 0..3u8 {
            cache.insert(&[i; 32], &file(work.path(), &format!("f{i}"), 200), 200);
        }
        assert_eq!(cache.bytes(), 600);
        assert!(cache.open_entry(&[0; 32]).is_some()); // 0 is now the most recent
        for i in 3..5u8 {
            cache.insert(&[i; 32], &file(work.path(), &format!("f{i}"), 200), 200);
        }
        cache.insert(&[5; 32], &file(work.path(), "f5", 200), 200);
        assert!(cache.bytes() <= 1000);
        assert!(cache.open_entry(&[1; 32]).is_none(), "1 was least recently used");
        assert!(cache.open_entry(&[0; 32]).is_some());
        assert!(cache.open_entry(&[5; 32]).is_some());
        // Too large for the cache: not kept, and the file is gone either way.
        let big = file(work.path(), "big", 600);
        cache.insert(&[9; 32], &big, 600);
        assert!(cache.open_entry(&[9; 32]).is_none() && !big.exists());
        // An unsynced entry is served like any other...
        cache.insert_unsynced(&[7; 32], &file(work.path(), "f7", 100), 100);
        assert!(cache.open_entry(&[7; 32]).is_some() && cache.open_entry(&[5; 32]).is_some());
        // ...but a restart keeps only what was synced.
        drop(cache);
        let again = ContentCache::open(&work.path().join("cache"), 1000).unwrap();
        assert!(again.open_entry(&[5; 32]).is_some());
        assert!(again.open_entry(&[7; 32]).is_none(), "an unsynced entry may be torn after a crash");
        assert!(again.bytes() <= 1000);
        // Evicting an unsynced entry removes its file.
        let small = ContentCache::open(&work.path().join("small"), 400).unwrap();
        small.insert_unsynced(&[1; 32], &file(work.path(), "g1", 100), 100);
        for i in 2..6u8 {
            small.insert(&[i; 32], &file(work.path(), &format!("g{i}"), 100), 100);
        }
        assert!(small.open_entry(&[1; 32]).is_none());
        assert_eq!(std::fs::read_dir(work.path().join("small").join(UNSYNCED)).unwrap().count(), 0);
    }

    #[test]
    fn a_miss_fills_the_cache_the_second_time_only() {
        let work = tempfile::tempdir().unwrap();
        let cache = ContentCache::open(&work.path().join("cache"), 1000).unwrap();
        assert!(!cache.wants(&[1; 32], 100), "first miss: remembered only");
        assert!(cache.wants(&[1; 32], 100), "second miss: fill");
        assert!(!cache.wants(&[1; 32], 100), "forgotten once wanted");
        assert!(!cache.wants(&[2; 32], 300) && !cache.wants(&[2; 32], 300), "over a quarter of the cache: never");
        cache.insert(&[3; 32], &file(work.path(), "f3", 100), 100);
        assert!(!cache.wants(&[3; 32], 100) && !cache.wants(&[3; 32], 100), "cached already");
        // Only the latest misses are remembered.
        for i in 0..MISSES_KEPT as u32 + 1 {
            let mut cid = [0u8; 32];
            cid[..4].copy_from_slice(&i.to_le_bytes());
            cid[31] = 7;
            assert!(!cache.wants(&cid, 1));
        }
        let st = cache.state.lock().unwrap();
        assert_eq!((st.missed.len(), st.missed_set.len()), (MISSES_KEPT, MISSES_KEPT));
        drop(st);
        let mut first = [0u8; 32];
        first[31] = 7;
        assert!(!cache.wants(&first, 1), "the oldest miss was forgotten");
        let off = ContentCache::open(&work.path().join("off"), 0).unwrap();
        assert!(!off.wants(&[1; 32], 1) && !off.wants(&[1; 32], 1), "a disabled cache wants nothing");
    }

    #[test]
    fn members_of_a_cached_pack_are_served_from_it_until_it_goes() {
        let work = tempfile::tempdir().unwrap();
        let cache = ContentCache::open(&work.path().join("cache"), 1000).unwrap();
        let pack = work.path().join("pack");
        std::fs::write(&pack, b"aaaabbbbbbcc").unwrap();
        let member = |cid: u8, offset, len| PackMember { cid: tessera_types::Hash32([cid; 32]), offset, len };
        cache.insert_pack(&[9; 32], &pack, 12, &[member(1, 0, 4), member(2, 4, 6), member(3, 10, 2), member(4, 11, 5)]);
        let read = |cid: u8| {
            let (file, offset) = cache.open_slice(&[cid; 32])?;
            let mut bytes = vec![0; 2];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, offset).unwrap();
            Some(bytes)
        };
        assert_eq!(read(1).unwrap(), b"aa");
        assert!(cache.in_pack(&[1; 32]) && !cache.in_pack(&[9; 32]) && !cache.in_pack(&[7; 32]));
        assert_eq!(read(2).unwrap(), b"bb");
        assert_eq!(read(3).unwrap(), b"cc");
        assert!(read(4).is_none(), "a member past the pack's end is not served");
        assert!(cache.open_slice(&[9; 32]).is_some_and(|(_, offset)| offset == 0), "the pack itself");
        // Evicting the pack takes its members with it.
        for i in 10..15u8 {
            cache.insert(&[i; 32], &file(work.path(), &format!("h{i}"), 240), 240);
        }
        assert!(cache.open_slice(&[9; 32]).is_none() && read(2).is_none() && !cache.in_pack(&[2; 32]));
        assert!(cache.state.lock().unwrap().members.is_empty());
        // Content in two cached packs outlives the older one's eviction.
        let cache = ContentCache::open(&work.path().join("two"), 1000).unwrap();
        std::fs::write(&pack, b"aabb").unwrap();
        cache.insert_pack(&[8; 32], &pack, 4, &[member(1, 0, 2), member(2, 2, 2)]);
        std::fs::write(&pack, b"ccaa").unwrap();
        cache.insert_pack(&[9; 32], &pack, 4, &[member(3, 0, 2), member(1, 2, 2)]);
        cache.state.lock().unwrap().remove(&[8; 32]);
        assert!(cache.open_slice(&[1; 32]).is_some_and(|(_, offset)| offset == 2), "still in the newer pack");
        assert!(cache.open_slice(&[2; 32]).is_none());
    }
}
