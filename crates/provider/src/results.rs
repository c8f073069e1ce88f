//! Content-addressed store of job results: each file is kept under its blake3
//! hash and re-checked against it before it is served.

use std::io::Write;
use std::path::{Path, PathBuf};
use tessera_types::Hash32;

pub struct ResultStore {
    dir: PathBuf,
}

impl ResultStore {
    pub fn open(dir: &Path) -> std::io::Result<ResultStore> {
        std::fs::create_dir_all(dir)?;
        Ok(ResultStore { dir: dir.to_path_buf() })
    }

    pub fn path(&self, hash: &Hash32) -> PathBuf {
        self.dir.join(hash.to_string())
    }

    pub fn put(&self, bytes: &[u8]) -> std::io::Result<Hash32> {
        let hash = Hash32::blake3(bytes);
        let dest = self.path(&hash);
        if !dest.exists() {
            let tmp = self.dir.join(format!(".{hash}.partial"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dest)?;
        }
        Ok(hash)
    }

    /// Moves a finished file into the store; returns its hash and size.
    pub fn put_file(&self, path: &Path) -> std::io::Result<(Hash32, u64)> {
        let (hash, size) = hash_file(path)?;
        let dest = self.path(&hash);
        if dest.exists() {
            std::fs::remove_file(path)?;
        } else if std::fs::rename(path, &dest).is_err() {
            std::fs::copy(path, &dest)?;
            std::fs::remove_file(path)?;
        }
        Ok((hash, size))
    }

    /// The stored file, if present and still matching its hash.
    pub fn checked(&self, hash: &Hash32) -> std::io::Result<Option<PathBuf>> {
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
        Ok(Some(p))
    }
}

pub fn hash_file(path: &Path) -> std::io::Result<(Hash32, u64)> {
    Hash32::blake3_reader(std::fs::File::open(path)?)
}
