//! Content-addressed store of job results, each re-checked against its
//! blake3 hash before it is served. Files of at most `book::INLINE_MAX`
//! bytes live in the run book and are committed with the run's outcome;
//! larger ones are files of their own under `<dir>/<hash>`, fsynced (and
//! their names) before the run's outcome is committed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tessera_client::keyring::rename_durably;
use tessera_types::Hash32;

use crate::book::{Book, Record, INLINE_MAX};

pub struct ResultStore {
    dir: PathBuf,
    book: Arc<Book>,
}

/// A stored result, found and matching its hash.
pub enum Stored {
    Inline(Vec<u8>),
    File(PathBuf),
}

impl ResultStore {
    /// Opens the store and its run book (`<dir>/book.redb`).
    pub fn open(dir: &Path) -> std::io::Result<ResultStore> {
        std::fs::create_dir_all(dir)?;
        let book = Arc::new(Book::open(&dir.join("book.redb"))?);
        Ok(ResultStore { dir: dir.to_path_buf(), book })
    }

    pub fn book(&self) -> &Arc<Book> {
        &self.book
    }

    fn path(&self, hash: &Hash32) -> PathBuf {
        self.dir.join(hash.to_string())
    }

    /// Files `bytes`: a small one becomes a record for the caller to commit,
    /// a large one is written and fsynced now.
    pub fn stage(&self, bytes: &[u8], records: &mut Vec<Record>) -> std::io::Result<Hash32> {
        let hash = Hash32::blake3(bytes);
        if bytes.len() <= INLINE_MAX {
            records.push(Record::Blob { hash, bytes: bytes.to_vec() });
            return Ok(hash);
        }
        let dest = self.path(&hash);
        if !dest.exists() {
            let tmp = self.dir.join(format!(".{hash}.partial"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            rename_durably(&tmp, &dest)?;
        }
        Ok(hash)
    }

    /// Moves a finished file into the store (a small one into `records`);
    /// returns its hash and size.
    pub fn stage_file(&self, path: &Path, records: &mut Vec<Record>) -> std::io::Result<(Hash32, u64)> {
        let size = std::fs::metadata(path)?.len();
        if size <= INLINE_MAX as u64 {
            let bytes = std::fs::read(path)?;
            let hash = self.stage(&bytes, records)?;
            std::fs::remove_file(path)?;
            return Ok((hash, bytes.len() as u64));
        }
        let (hash, size) = hash_file(path)?;
        let dest = self.path(&hash);
        if dest.exists() {
            std::fs::remove_file(path)?;
            return Ok((hash, size));
        }
        std::fs::File::open(path)?.sync_all()?;
        if rename_durably(path, &dest).is_err() {
            let tmp = self.dir.join(format!(".{hash}.partial"));
            std::fs::copy(path, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            rename_durably(&tmp, &dest)?;
            std::fs::remove_file(path)?;
        }
        Ok((hash, size))
    }

    /// The stored result, if present and still matching its hash; a damaged
    /// one is removed and reported missing.
    pub fn checked(&self, hash: &Hash32) -> std::io::Result<Option<Stored>> {
        if let Some(bytes) = self.book.blob(hash)? {
            if Hash32::blake3(&bytes) == *hash {
                return Ok(Some(Stored::Inline(bytes)));
            }
            eprintln!("result store: inline result {hash} is damaged; removing it");
            self.book.remove_blob(hash)?;
            return Ok(None);
        }
        let p = self.path(hash);
        if !p.exists() {
            return Ok(None);
        }
        let (actual, _) = hash_file(&p)?;
        if actual != *hash {
            eprintln!("result store: {} is damaged; removing it", p.display());
            std::fs::remove_file(&p)?;
            return Ok(None);
        }
        Ok(Some(Stored::File(p)))
    }
}

pub fn hash_file(path: &Path) -> std::io::Result<(Hash32, u64)> {
    Hash32::blake3_reader(std::fs::File::open(path)?)
}
