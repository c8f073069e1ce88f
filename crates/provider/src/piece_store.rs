//! Content-addressed piece store on disk: `<dir>/<first 2 hex>/<hash hex>`.
//! A piece is written to a temporary file, checked against its hash, synced
//! and renamed into place, and the rename is synced too (`rename_durably`),
//! so a crash never leaves a half piece under its name and never loses one
//! that was acknowledged. Every read re-checks the hash: a corrupted piece
//! is reported, moved aside and never returned.
//!
//! Beside each piece it has proven, the store keeps the upper levels of its
//! Merkle tree (`<dir>/trees/<first 2 hex>/<hash hex>`, about 1/32 of the
//! piece, not counted against capacity; a cache behind a checksum, rebuilt
//! whenever it is missing or damaged). A challenge is then answered from the
//! challenged leaves' groups, each checked against that tree, instead of by
//! reading and hashing the whole piece.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tessera_storage::{piece_hash, MerkleProof, MultiProof, PieceTree, UpperTree, LEAF_BYTES};
use tessera_client::keyring::rename_durably;
use tessera_types::Hash32;

/// Leaf bytes, in the order asked for, and their Merkle paths as one proof.
pub type Answer = (Vec<Vec<u8>>, MultiProof);

/// The answer of leaves and their single-leaf proofs, of a tree of `leaf_count` leaves.
fn answer_of(hash: &Hash32, leaf_count: u64, leaves: Vec<Vec<u8>>, proofs: &[MerkleProof]) -> Result<Answer, PieceError> {
    let proof = MultiProof::from_proofs(leaf_count, proofs).ok_or(PieceError::Missing(*hash))?;
    Ok((leaves, proof))
}

/// The leaf that starts `at` bytes into `buf` (shorter at the end, empty past it).
fn leaf_at(buf: &[u8], at: usize) -> Vec<u8> {
    buf[at.min(buf.len())..at.saturating_add(LEAF_BYTES).min(buf.len())].to_vec()
}

#[derive(Debug, thiserror::Error)]
pub enum PieceError {
    #[error("piece {0} is not stored here")]
    Missing(Hash32),
    #[error("piece {expected} failed its hash check (got {actual}); it was removed")]
    Corrupted { expected: Hash32, actual: Hash32 },
    #[error("piece is {len} bytes, over the limit of {limit}")]
    TooLarge { len: usize, limit: u64 },
    #[error("storage is full: {used} of {capacity} bytes used")]
    Full { used: u64, capacity: u64 },
    #[error("piece store I/O: {0}")]
    Io(#[from] std::io::Error),
}

pub struct PieceStore {
    dir: PathBuf,
    capacity_bytes: u64,
    /// Bytes of stored pieces: counted once at open, then kept in step by
    /// `put`, `get` (quarantine) and `remove`, so a write does not walk the disk.
    used: std::sync::Mutex<u64>,
    /// Pieces being written now (taken before `used`, never while waiting).
    writing: std::sync::Mutex<std::collections::BTreeSet<Hash32>>,
    written: std::sync::Condvar,
}

impl PieceStore {
    pub fn open(dir: &Path, capacity_bytes: u64) -> Result<PieceStore, PieceError> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        // Half-written pieces of a crash: their uploads were never acknowledged.
        for stale in std::fs::read_dir(dir.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(stale.path());
        }
        std::fs::create_dir_all(dir.join("corrupted"))?;
        let mut store = PieceStore {
            dir: dir.to_path_buf(),
            capacity_bytes,
            used: std::sync::Mutex::new(0),
            writing: Default::default(),
            written: std::sync::Condvar::new(),
        };
        store.used = std::sync::Mutex::new(store.scan_used_bytes());
        Ok(store)
    }

    fn path(&self, hash: &Hash32) -> PathBuf {
        let hex = hash.to_string();
        self.dir.join(&hex[..2]).join(hex)
    }

    fn tree_path(&self, hash: &Hash32) -> PathBuf {
        let hex = hash.to_string();
        self.dir.join("trees").join(&hex[..2]).join(hex)
    }

    /// The bytes and proofs of leaves `leaves` of piece `hash`. Reads just
    /// the challenged leaves' groups and checks each against the kept upper
    /// tree; with `full`, or when that tree is missing or damaged or a group
    /// fails its check, reads and checks the whole piece (quarantined if it
    /// is corrupted) and keeps its tree anew.
    pub fn prove(&self, hash: &Hash32, leaves: &[u64], full: bool) -> Result<Answer, PieceError> {
        if !full && let Some(answer) = self.prove_from_tree(hash, leaves)? {
            return Ok(answer);
        }
        let (bytes, tree) = self.read_checked(hash)?;
        self.keep_tree(hash, &tree.upper());
        let (mut bytes_of, mut proofs) = (Vec::with_capacity(leaves.len()), Vec::with_capacity(leaves.len()));
        for &i in leaves {
            bytes_of.push(leaf_at(&bytes, (i as usize).saturating_mul(LEAF_BYTES)));
            proofs.push(tree.prove(i).ok_or(PieceError::Missing(*hash))?);
        }
        answer_of(hash, tree.leaf_count(), bytes_of, &proofs)
    }

    /// `None` when the whole piece must be read instead.
    fn prove_from_tree(&self, hash: &Hash32, leaves: &[u64]) -> Result<Option<Answer>, PieceError> {
        // A kept tree is the piece's own only if its root is the piece's hash.
        let kept = std::fs::read(self.tree_path(hash)).ok().and_then(|b| UpperTree::decode(&b));
        let Some(tree) = kept.filter(|t| t.root() == *hash) else {
            return Ok(None);
        };
        let file = match std::fs::File::open(self.path(hash)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PieceError::Missing(*hash)),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        if tessera_storage::leaf_count(len) != tree.leaf_count() {
            return Ok(None);
        }
        let (mut bytes_of, mut proofs) = (Vec::with_capacity(leaves.len()), Vec::with_capacity(leaves.len()));
        for &i in leaves {
            let Some(range) = tree.group_of(i, len) else { return Ok(None) };
            let mut group = vec![0; (range.end - range.start) as usize];
            file.read_exact_at(&mut group, range.start)?;
            let Some(proof) = tree.prove(i, &group) else { return Ok(None) };
            bytes_of.push(leaf_at(&group, (i * LEAF_BYTES as u64 - range.start) as usize));
            proofs.push(proof);
        }
        answer_of(hash, tree.leaf_count(), bytes_of, &proofs).map(Some)
    }

    /// Best effort: the tree is a cache, and a torn write fails its checksum.
    fn keep_tree(&self, hash: &Hash32, tree: &UpperTree) {
        let path = self.tree_path(hash);
        let tmp = path.with_extension("part");
        let kept = std::fs::create_dir_all(path.parent().expect("sharded path"))
            .and_then(|()| std::fs::write(&tmp, tree.encode()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = kept {
            eprintln!("piece store: cannot keep the tree of piece {hash}: {e}");
        }
    }

    pub fn contains(&self, hash: &Hash32) -> bool {
        self.path(hash).exists()
    }

    /// Bytes of all stored pieces.
    pub fn used_bytes(&self) -> u64 {
        *self.used.lock().expect("piece store lock")
    }

    fn scan_used_bytes(&self) -> u64 {
        let mut total = 0;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for shard in entries.flatten() {
                let name = shard.file_name();
                if name.len() != 2 {
                    continue;
                }
                if let Ok(files) = std::fs::read_dir(shard.path()) {
                    total += files.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum::<u64>();
                }
            }
        }
        total
    }

    /// Stores `bytes` if they hash to `hash`.
    pub fn put(&self, hash: &Hash32, bytes: &[u8]) -> Result<(), PieceError> {
        let limit = tessera_ledger::storage::MAX_PIECE_BYTES;
        if bytes.len() as u64 > limit {
            return Err(PieceError::TooLarge { len: bytes.len(), limit });
        }
        let actual = piece_hash(bytes);
        if actual != *hash {
            return Err(PieceError::Corrupted { expected: *hash, actual });
        }
        let len = bytes.len() as u64;
        // Room is reserved under the lock, so concurrent uploads stay within
        // capacity, and the write and its fsync run outside it, side by side.
        // A second upload of a piece being written waits for the first.
        {
            let mut writing = self.writing.lock().expect("piece store lock");
            while writing.contains(hash) {
                writing = self.written.wait(writing).expect("piece store lock");
            }
            if self.contains(hash) {
                return Ok(());
            }
            let mut used = self.used.lock().expect("piece store lock");
            if *used + len > self.capacity_bytes {
                return Err(PieceError::Full { used: *used, capacity: self.capacity_bytes });
            }
            *used += len;
            writing.insert(*hash);
        }
        let written = self.write_new(hash, bytes);
        {
            let mut writing = self.writing.lock().expect("piece store lock");
            writing.remove(hash);
            if written.is_err() {
                let mut used = self.used.lock().expect("piece store lock");
                *used = used.saturating_sub(len);
            }
        }
        self.written.notify_all();
        written
    }

    /// Writes a piece through a file of its own in `tmp/`, fsynced, then
    /// renamed into place.
    fn write_new(&self, hash: &Hash32, bytes: &[u8]) -> Result<(), PieceError> {
        let tmp = self.dir.join("tmp").join(format!("{hash}.part"));
        std::fs::create_dir_all(self.dir.join("tmp"))?;
        let written = (|| -> Result<(), PieceError> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            // Stored for the network, not for reading back soon.
            tessera_client::keyring::drop_cached(&f);
            rename_durably(&tmp, &self.path(hash))?;
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// The piece's bytes, checked against its hash.
    pub fn get(&self, hash: &Hash32) -> Result<Vec<u8>, PieceError> {
        self.read_checked(hash).map(|(bytes, _)| bytes)
    }

    /// The piece's bytes and its tree, whose root is checked against its
    /// hash; a piece that fails is quarantined.
    fn read_checked(&self, hash: &Hash32) -> Result<(Vec<u8>, PieceTree), PieceError> {
        let path = self.path(hash);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PieceError::Missing(*hash)),
            Err(e) => return Err(e.into()),
        };
        let tree = PieceTree::build(&bytes);
        let actual = tree.root();
        if actual != *hash {
            if std::fs::rename(&path, self.dir.join("corrupted").join(hash.to_string())).is_ok() {
                let mut used = self.used.lock().expect("piece store lock");
                *used = used.saturating_sub(bytes.len() as u64);
            }
            return Err(PieceError::Corrupted { expected: *hash, actual });
        }
        Ok((bytes, tree))
    }

    pub fn remove(&self, hash: &Hash32) -> Result<(), PieceError> {
        let _ = std::fs::remove_file(self.tree_path(hash));
        let path = self.path(hash);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                let mut used = self.used.lock().expect("piece store lock");
                *used = used.saturating_sub(len);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_on_write_and_read_and_quarantines_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path(), 1 << 20).unwrap();
        let data = b"piece bytes".to_vec();
        let hash = piece_hash(&data);
        assert!(matches!(store.put(&hash, b"other"), Err(PieceError::Corrupted { .. })));
        store.put(&hash, &data).unwrap();
        assert_eq!(store.get(&hash).unwrap(), data);
        std::fs::write(store.path(&hash), b"piece bytez").unwrap();
        assert!(matches!(store.get(&hash), Err(PieceError::Corrupted { .. })));
        assert!(matches!(store.get(&hash), Err(PieceError::Missing(_))), "corrupted piece is never served");
        let big = vec![0u8; 2 << 20];
        assert!(matches!(store.put(&piece_hash(&big), &big), Err(PieceError::Full { .. })));
    }

    #[test]
    fn concurrent_uploads_stay_within_capacity_and_count_each_piece_once() {
        let dir = tempfile::tempdir().unwrap();
        // Room for three of the four distinct pieces below.
        let store = std::sync::Arc::new(PieceStore::open(dir.path(), 3 * 1000 + 10).unwrap());
        let pieces: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        // Each piece eight times over, from 32 threads at once.
        let outcomes: Vec<(usize, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..32)
                .map(|t| {
                    let (store, piece) = (store.clone(), pieces[t % 4].clone());
                    scope.spawn(move || (t % 4, store.put(&piece_hash(&piece), &piece).is_ok()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stored: Vec<usize> = (0..4).filter(|&i| store.contains(&piece_hash(&pieces[i]))).collect();
        assert_eq!(stored.len(), 3, "capacity holds three pieces");
        assert_eq!(store.used_bytes(), 3000, "each stored piece counted once");
        for (i, ok) in outcomes {
            assert!(!ok || stored.contains(&i), "an acknowledged upload of piece {i} is stored");
        }
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no half-written files left");
        // A crash's half-written file goes when the store opens.
        std::fs::write(dir.path().join("tmp").join("x.part"), b"torn").unwrap();
        drop(store);
        let store = PieceStore::open(dir.path(), 3 * 1000 + 10).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(store.used_bytes(), 3000);
    }

    #[test]
    fn challenges_are_answered_from_the_kept_tree_and_damage_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path(), 1 << 20).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let hash = piece_hash(&data);
        store.put(&hash, &data).unwrap();
        let tree = PieceTree::build(&data);
        let leaves = [0, 7, 100, tree.leaf_count() - 1];
        let expected: Answer = (
            leaves.iter().map(|&i| data[i as usize * LEAF_BYTES..((i as usize + 1) * LEAF_BYTES).min(data.len())].to_vec()).collect(),
            MultiProof::from_proofs(tree.leaf_count(), &leaves.iter().map(|&i| tree.prove(i).unwrap()).collect::<Vec<_>>()).unwrap(),
        );
        // The first answer reads the whole piece and keeps its tree.
        assert!(!store.tree_path(&hash).exists());
        assert_eq!(store.prove(&hash, &leaves, false).unwrap(), expected);
        assert!(store.tree_path(&hash).exists());
        assert_eq!(store.prove_from_tree(&hash, &leaves).unwrap(), Some(expected.clone()));
        // A damaged tree is rebuilt from the piece.
        std::fs::write(store.tree_path(&hash), b"torn").unwrap();
        assert_eq!(store.prove_from_tree(&hash, &leaves).unwrap(), None);
        assert_eq!(store.prove(&hash, &leaves, false).unwrap(), expected);
        assert!(store.prove_from_tree(&hash, &leaves).unwrap().is_some());
        // A damaged byte outside the challenged groups goes unseen until a
        // full check; one inside them fails the group's check, and the piece
        // is quarantined.
        let mut bad = data.clone();
        bad[50 * LEAF_BYTES] ^= 1;
        std::fs::write(store.path(&hash), &bad).unwrap();
        assert_eq!(store.prove(&hash, &leaves, false).unwrap(), expected);
        assert!(matches!(store.prove(&hash, &leaves, true), Err(PieceError::Corrupted { .. })));
        store.put(&hash, &data).unwrap();
        bad = data.clone();
        bad[7 * LEAF_BYTES + 3] ^= 1;
        std::fs::write(store.path(&hash), &bad).unwrap();
        assert_eq!(store.prove_from_tree(&hash, &leaves).unwrap(), None);
        assert!(matches!(store.prove(&hash, &leaves, false), Err(PieceError::Corrupted { .. })));
        assert!(matches!(store.prove(&hash, &leaves, false), Err(PieceError::Missing(_))));
        store.remove(&hash).unwrap();
        assert!(!store.tree_path(&hash).exists());
    }
}
