//! Content-addressed piece store on disk: `<dir>/<first 2 hex>/<hash hex>`.
//! A piece is written to a temporary file, checked against its hash, synced
//! and renamed into place, so a crash never leaves a half piece under its
//! name. Every read re-checks the hash: a corrupted piece is reported, moved
//! aside and never returned.

use std::io::Write;
use std::path::{Path, PathBuf};
use tessera_types::Hash32;

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
}

impl PieceStore {
    pub fn open(dir: &Path, capacity_bytes: u64) -> Result<PieceStore, PieceError> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        std::fs::create_dir_all(dir.join("corrupted"))?;
        let mut store = PieceStore { dir: dir.to_path_buf(), capacity_bytes, used: std::sync::Mutex::new(0) };
        store.used = std::sync::Mutex::new(store.scan_used_bytes());
        Ok(store)
    }

    fn path(&self, hash: &Hash32) -> PathBuf {
        let hex = hash.to_string();
        self.dir.join(&hex[..2]).join(hex)
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
        let actual = Hash32::blake3(bytes);
        if actual != *hash {
            return Err(PieceError::Corrupted { expected: *hash, actual });
        }
        // Holding the count across the write keeps concurrent uploads within capacity.
        let mut used = self.used.lock().expect("piece store lock");
        if self.contains(hash) {
            return Ok(());
        }
        if *used + bytes.len() as u64 > self.capacity_bytes {
            return Err(PieceError::Full { used: *used, capacity: self.capacity_bytes });
        }
        let tmp = self.dir.join("tmp").join(format!("{hash}.part"));
        std::fs::create_dir_all(self.dir.join("tmp"))?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        let dest = self.path(hash);
        std::fs::create_dir_all(dest.parent().expect("sharded path"))?;
        std::fs::rename(&tmp, &dest)?;
        *used += bytes.len() as u64;
        Ok(())
    }

    /// The piece's bytes, checked against its hash.
    pub fn get(&self, hash: &Hash32) -> Result<Vec<u8>, PieceError> {
        let path = self.path(hash);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(PieceError::Missing(*hash)),
            Err(e) => return Err(e.into()),
        };
        let actual = Hash32::blake3(&bytes);
        if actual != *hash {
            if std::fs::rename(&path, self.dir.join("corrupted").join(hash.to_string())).is_ok() {
                let mut used = self.used.lock().expect("piece store lock");
                *used = used.saturating_sub(bytes.len() as u64);
            }
            return Err(PieceError::Corrupted { expected: *hash, actual });
        }
        Ok(bytes)
    }

    pub fn remove(&self, hash: &Hash32) -> Result<(), PieceError> {
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
        let hash = Hash32::blake3(&data);
        assert!(matches!(store.put(&hash, b"other"), Err(PieceError::Corrupted { .. })));
        store.put(&hash, &data).unwrap();
        assert_eq!(store.get(&hash).unwrap(), data);
        std::fs::write(store.path(&hash), b"piece bytez").unwrap();
        assert!(matches!(store.get(&hash), Err(PieceError::Corrupted { .. })));
        assert!(matches!(store.get(&hash), Err(PieceError::Missing(_))), "corrupted piece is never served");
        let big = vec![0u8; 2 << 20];
        assert!(matches!(store.put(&Hash32::blake3(&big), &big), Err(PieceError::Full { .. })));
    }
}
