//! The local keyring: one JSON file per named key under `<home>/keys/`, readable
//! only by its owner. Keys are stored unencrypted: a devnet keyring, not a
//! wallet for real value.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tessera_crypto::KeyPair;
use tessera_types::Address;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("key name {0:?} is not allowed: use 1-64 letters, digits, '-' or '_'")]
    BadName(String),
    #[error("a key named {0:?} already exists")]
    Exists(String),
    #[error("no key named {name:?} in {dir} (create it with `tessera keys new {name}`)")]
    Missing { name: String, dir: String },
    #[error("key file {path}: {reason}")]
    Io { path: String, reason: String },
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    name: String,
    address: Address,
    public_key: String,
    secret_key: String,
}

pub struct Keyring {
    dir: PathBuf,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> KeyringError {
    KeyringError::Io { path: path.display().to_string(), reason: e.to_string() }
}

fn check_name(name: &str) -> Result<(), KeyringError> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok { Ok(()) } else { Err(KeyringError::BadName(name.to_string())) }
}

impl Keyring {
    pub fn new(dir: PathBuf) -> Keyring {
        Keyring { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Stores `key` under `name`; refuses to overwrite.
    pub fn add(&self, name: &str, key: &KeyPair) -> Result<(), KeyringError> {
        check_name(name)?;
        let path = self.path(name);
        if path.exists() {
            return Err(KeyringError::Exists(name.to_string()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let file = KeyFile {
            name: name.to_string(),
            address: key.address(),
            public_key: hex::encode(key.public_key()),
            secret_key: key.secret_hex(),
        };
        let text = serde_json::to_string_pretty(&file).expect("key file serialises");
        write_private_atomic(&path, text.as_bytes()).map_err(|e| io_err(&path, e))
    }

    pub fn create(&self, name: &str) -> Result<KeyPair, KeyringError> {
        let key = KeyPair::generate();
        self.add(name, &key)?;
        Ok(key)
    }

    pub fn get(&self, name: &str) -> Result<KeyPair, KeyringError> {
        check_name(name)?;
        let path = self.path(name);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                KeyringError::Missing { name: name.to_string(), dir: self.dir.display().to_string() }
            }
            _ => io_err(&path, e),
        })?;
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| io_err(&path, e))?;
        KeyPair::from_secret_hex(&file.secret_key).map_err(|e| io_err(&path, e))
    }

    /// All keys as (name, address), sorted by name.
    pub fn list(&self) -> Result<Vec<(String, Address)>, KeyringError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io_err(&self.dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let file_name = entry.file_name().to_string_lossy().to_string();
            let Some(name) = file_name.strip_suffix(".json") else { continue };
            if name.starts_with('.') {
                continue;
            }
            out.push((name.to_string(), self.get(name)?.address()));
        }
        out.sort();
        Ok(out)
    }
}

/// Writes `bytes` to `path` readable only by its owner, atomically and
/// durably: a temporary file beside it is synced and renamed into place, and
/// the directory is synced, so a crash leaves the old file or the new one,
/// never half of one, and once this returns the new one survives a power loss.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    rename_durably(&tmp, path)
}

/// Syncs a directory, so that the names created or renamed in it survive a
/// power loss (a file's own fsync covers its data, not its entry).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Lets the kernel drop the cached pages of `file`, once synced, for data
/// written once and rarely read back soon (a provider's pieces): the page
/// cache then stops growing with everything stored, and a new write reuses
/// the pages just let go, which costs far less CPU than pages the machine
/// has not handed out lately (on a 2-core VM, writing and syncing a MiB cost
/// 0.5 ms this way against 3.4 ms into fresh pages). Best effort; nothing
/// off Linux.
pub fn drop_cached(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    // SAFETY: posix_fadvise on an open descriptor only advises the kernel.
    unsafe {
        libc::posix_fadvise(std::os::fd::AsRawFd::as_raw_fd(file), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Sets the CPU priority (Unix nice value) of thread `tid` on Linux, which
/// keeps one per thread; elsewhere, with `tid` 0, of the whole process.
/// Threads started later inherit their creator's. Lowering needs no
/// privilege; raising does.
pub fn set_nice(tid: u32, nice: u8) -> std::io::Result<()> {
    // SAFETY: setpriority only changes the nice value of the thread named.
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, libc::c_int::from(nice)) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Renames the synced file `from` to `to` and syncs the directory entry, so
/// the new name survives a power loss. A missing directory of `to` is
/// created, and its own entry synced too.
pub fn rename_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    let dir = to.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        if let Some(above) = dir.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync_dir(above)?;
        }
    }
    std::fs::rename(from, to)?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_list_and_refuse_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::new(dir.path().join("keys"));
        let alice = ring.create("alice").unwrap();
        assert_eq!(ring.get("alice").unwrap().address(), alice.address());
        assert!(matches!(ring.create("alice"), Err(KeyringError::Exists(_))));
        assert!(matches!(ring.get("bob"), Err(KeyringError::Missing { .. })));
        assert!(matches!(ring.create("../x"), Err(KeyringError::BadName(_))));
        assert_eq!(ring.list().unwrap(), vec![("alice".to_string(), alice.address())]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_set_to_a_nice_value_runs_at_it_and_others_keep_theirs() {
        let nice_of = |tid: u32| {
            // SAFETY: getpriority only reads the nice value of the thread named.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) }
        };
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tid_tx.send(unsafe { libc::gettid() } as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        let before = nice_of(tid);
        // Lower than now (raising it would need a privilege).
        let lower = (before.max(0) + 5).min(19);
        super::set_nice(tid, lower as u8).unwrap();
        assert_eq!(nice_of(tid), lower);
        // SAFETY: as above.
        assert_eq!(nice_of(unsafe { libc::gettid() } as u32), before, "only the thread named changes");
        done_tx.send(()).unwrap();
        helper.join().unwrap();
    }
}
