//! Model files addressed by their blake3 hash.
//!
//! A provider keeps a cache directory of files named by hash. A file missing
//! from the cache is fetched from the provider's sources: local directories
//! (every file in them is a candidate) or HTTP base URLs (`GET {url}/{hash}`).
//! Every byte is hashed on the way in; a file whose hash differs is refused,
//! and a cached file is re-checked the first time this process uses it.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::JobError;

/// Largest model file fetched (a guard against a source that streams forever).
pub const MAX_MODEL_BYTES: u64 = 8 << 30;

#[derive(Clone, Debug)]
pub enum Source {
    Dir(PathBuf),
    Http(String),
}

impl std::str::FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Source, String> {
        if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Source::Http(s.trim_end_matches('/').to_string()))
        } else if Path::new(s).is_dir() {
            Ok(Source::Dir(PathBuf::from(s)))
        } else {
            Err(format!("model source {s:?} is neither an http(s) URL nor a directory"))
        }
    }
}

pub struct ModelCache {
    dir: PathBuf,
    sources: Vec<Source>,
    /// Files checked since this process started.
    verified: Mutex<HashSet<String>>,
    /// blake3 of each file in the directory sources, computed once.
    dir_index: Mutex<Option<HashMap<String, PathBuf>>>,
}

/// Where `scripts/fetch-model.sh` puts all-MiniLM-L6-v2: `$TESSERA_MODEL_DIR`,
/// else `~/.cache/tessera/models/all-minilm-l6-v2`.
pub fn default_model_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("TESSERA_MODEL_DIR") {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/tessera/models/all-minilm-l6-v2"))
}

/// blake3 of a file, as 64 hex digits (the name it has in the cache).
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    Ok(tessera_types::Hash32::blake3_reader(std::fs::File::open(path)?)?.0.to_string())
}

impl ModelCache {
    pub fn new(dir: PathBuf, sources: Vec<Source>) -> std::io::Result<ModelCache> {
        std::fs::create_dir_all(&dir)?;
        Ok(ModelCache { dir, sources, verified: Mutex::new(HashSet::new()), dir_index: Mutex::new(None) })
    }

    /// The path of the cached file with this blake3 hash (64 hex digits),
    /// fetching it first if needed.
    pub fn get(&self, hash: &str) -> Result<PathBuf, JobError> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(JobError::job(format!("model hash {hash:?} is not 64 hex digits")));
        }
        let hash = hash.to_ascii_lowercase();
        let path = self.dir.join(&hash);
        if path.exists() {
            if self.verified.lock().unwrap_or_else(|p| p.into_inner()).contains(&hash) {
                return Ok(path);
            }
            match hash_file(&path) {
                Ok(h) if h == hash => {
                    self.verified.lock().unwrap_or_else(|p| p.into_inner()).insert(hash);
                    return Ok(path);
                }
                _ => {
                    eprintln!("model cache: {} is damaged; fetching it again", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let mut tried = Vec::new();
        for source in &self.sources {
            match self.fetch(source, &hash, &path) {
                Ok(()) => {
                    self.verified.lock().unwrap_or_else(|p| p.into_inner()).insert(hash);
                    return Ok(path);
                }
                Err(e) => tried.push(e),
            }
        }
        let why = if tried.is_empty() { "this provider has no model sources".to_string() } else { tried.join("; ") };
        Err(JobError::job(format!("model file {hash} is not available here: {why}")))
    }

    fn fetch(&self, source: &Source, hash: &str, dest: &Path) -> Result<(), String> {
        match source {
            Source::Dir(dir) => {
                let found = self.index(dir)?.get(hash).cloned();
                let Some(src) = found else { return Err(format!("no file in {} has hash {hash}", dir.display())) };
                let file = std::fs::File::open(&src).map_err(|e| format!("{}: {e}", src.display()))?;
                self.store_checked(file, hash, dest, &src.display().to_string())
            }
            Source::Http(base) => {
                let url = format!("{base}/{hash}");
                let resp = ureq::get(&url).call().map_err(|e| format!("{url}: {e}"))?;
                let reader = resp.into_reader().take(MAX_MODEL_BYTES + 1);
                self.store_checked(reader, hash, dest, &url)
            }
        }
    }

    /// Copies to a temporary file while hashing, and keeps it only if the hash matches.
    fn store_checked(&self, mut from: impl Read, hash: &str, dest: &Path, origin: &str) -> Result<(), String> {
        let tmp = dest.with_extension("partial");
        let mut out = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = from.read(&mut buf).map_err(|e| format!("{origin}: {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_MODEL_BYTES {
                let _ = std::fs::remove_file(&tmp);
                return Err(format!("{origin} is over {MAX_MODEL_BYTES} bytes"));
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| format!("{}: {e}", tmp.display()))?;
        }
        let got = hasher.finalize().to_hex().to_string();
        if got != hash {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("refused {origin}: its blake3 is {got}, not {hash}"));
        }
        out.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, dest).map_err(|e| e.to_string())
    }

    fn index(&self, dir: &Path) -> Result<HashMap<String, PathBuf>, String> {
        let mut guard = self.dir_index.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let mut index = HashMap::new();
            for source in &self.sources {
                let Source::Dir(d) = source else { continue };
                let Ok(entries) = std::fs::read_dir(d) else { continue };
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.is_file()
                        && let Ok(h) = hash_file(&p)
                    {
                        index.insert(h, p);
                    }
                }
            }
            *guard = Some(index);
        }
        let _ = dir;
        Ok(guard.clone().unwrap_or_default())
    }
}
