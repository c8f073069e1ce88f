//! The provider's book of runs (redb): each finished run's outcome, each
//! job's log, and result files small enough to keep inline (manifests,
//! stdout, stderr, small outputs).
//!
//! Job workers hand their records to one committing thread, which folds
//! whatever has queued meanwhile into one durable transaction (group commit).
//! A burst of short jobs then costs one fsync per batch instead of a handful of
//! created, synced and deleted files per job; creating and deleting inodes
//! was most of a provider's work on no-op jobs.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use tessera_types::Hash32;

/// (job, lease) -> how the run ended (JSON).
const OUTCOMES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("outcomes");
/// Job -> its log, every run on this provider in turn.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// blake3 hash -> content, for result files of at most `INLINE_MAX` bytes.
const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");

/// Largest result file kept in the book; larger ones are files of their own.
pub const INLINE_MAX: usize = 64 << 10;
/// Commits waiting for the writer; a worker blocks when this many are queued.
const QUEUE: usize = 1024;

pub enum Record {
    Outcome { job: u64, lease: u64, saved: Vec<u8> },
    /// Appended to what the job's log already holds.
    Log { job: u64, text: Vec<u8> },
    Blob { hash: Hash32, bytes: Vec<u8> },
}

type Commit = (Vec<Record>, SyncSender<Result<(), String>>);

pub struct Book {
    db: std::sync::Arc<Database>,
    /// Both `Some` until the book is dropped.
    queue: Option<SyncSender<Commit>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

fn io(e: impl Into<redb::Error>) -> std::io::Error {
    std::io::Error::other(e.into())
}

impl Book {
    pub fn open(path: &Path) -> std::io::Result<Book> {
        let db = Database::builder().set_cache_size(8 << 20).create(path).map_err(io)?;
        let w = db.begin_write().map_err(io)?;
        w.open_table(OUTCOMES).map_err(io)?;
        w.open_table(LOGS).map_err(io)?;
        w.open_table(BLOBS).map_err(io)?;
        w.commit().map_err(io)?;
        let db = std::sync::Arc::new(db);
        let (tx, rx) = sync_channel::<Commit>(QUEUE);
        let writer = db.clone();
        let writer = std::thread::Builder::new().name("run-book".into()).spawn(move || write_loop(&writer, rx))?;
        Ok(Book { db, queue: Some(tx), writer: Some(writer) })
    }

    /// Writes the records in one durable transaction (shared with whatever
    /// other workers are committing at the same moment); returns once they are
    /// on disk.
    pub fn commit(&self, records: Vec<Record>) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (ack, done) = sync_channel(1);
        let stopped = || std::io::Error::other("the run book's writer has stopped");
        self.queue.as_ref().ok_or_else(stopped)?.send((records, ack)).map_err(|_| stopped())?;
        done.recv().map_err(|_| stopped())?.map_err(std::io::Error::other)
    }

    /// The saved outcome of one run.
    pub fn outcome(&self, job: u64, lease: u64) -> std::io::Result<Option<Vec<u8>>> {
        let t = self.db.begin_read().map_err(io)?.open_table(OUTCOMES).map_err(io)?;
        Ok(t.get((job, lease)).map_err(io)?.map(|v| v.value().to_vec()))
    }

    /// The saved outcome of the job's latest run here.
    pub fn last_outcome(&self, job: u64) -> std::io::Result<Option<Vec<u8>>> {
        let t = self.db.begin_read().map_err(io)?.open_table(OUTCOMES).map_err(io)?;
        let last = t.range((job, 0)..=(job, u64::MAX)).map_err(io)?.next_back();
        Ok(last.transpose().map_err(io)?.map(|(_, v)| v.value().to_vec()))
    }

    pub fn log(&self, job: u64) -> std::io::Result<Option<Vec<u8>>> {
        let t = self.db.begin_read().map_err(io)?.open_table(LOGS).map_err(io)?;
        Ok(t.get(job).map_err(io)?.map(|v| v.value().to_vec()))
    }

    pub fn blob(&self, hash: &Hash32) -> std::io::Result<Option<Vec<u8>>> {
        let t = self.db.begin_read().map_err(io)?.open_table(BLOBS).map_err(io)?;
        Ok(t.get(hash.0.as_slice()).map_err(io)?.map(|v| v.value().to_vec()))
    }

    pub fn remove_blob(&self, hash: &Hash32) -> std::io::Result<()> {
        let w = self.db.begin_write().map_err(io)?;
        w.open_table(BLOBS).map_err(io)?.remove(hash.0.as_slice()).map_err(io)?;
        w.commit().map_err(io)
    }
}

impl Drop for Book {
    /// Lets the writer finish what is queued, so the database is closed when this returns.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Commits everything queued at once, then tells each waiting worker.
fn write_loop(db: &Database, rx: Receiver<Commit>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= QUEUE {
                break;
            }
        }
        let result = write_batch(db, &batch).map_err(|e| e.to_string());
        for (_, ack) in batch {
            let _ = ack.send(result.clone());
        }
    }
}

fn write_batch(db: &Database, batch: &[Commit]) -> Result<(), redb::Error> {
    let mut w = db.begin_write()?;
    w.set_durability(Durability::Immediate)?;
    {
        let mut outcomes = w.open_table(OUTCOMES)?;
        let mut logs = w.open_table(LOGS)?;
        let mut blobs = w.open_table(BLOBS)?;
        for record in batch.iter().flat_map(|(records, _)| records) {
            match record {
                Record::Outcome { job, lease, saved } => {
                    outcomes.insert((*job, *lease), saved.as_slice())?;
                }
                Record::Log { job, text } => {
                    let mut all = logs.get(*job)?.map(|v| v.value().to_vec()).unwrap_or_default();
                    all.extend_from_slice(text);
                    logs.insert(*job, all.as_slice())?;
                }
                Record::Blob { hash, bytes } => {
                    blobs.insert(hash.0.as_slice(), bytes.as_slice())?;
                }
            }
        }
    }
    w.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_committed_from_many_threads_are_all_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.redb");
        {
            let book = std::sync::Arc::new(Book::open(&path).unwrap());
            let threads: Vec<_> = (0..8u64)
                .map(|t| {
                    let book = book.clone();
                    std::thread::spawn(move || {
                        for i in 0..25u64 {
                            let job = t * 100 + i;
                            let bytes = format!("result of {job}").into_bytes();
                            book.commit(vec![
                                Record::Blob { hash: Hash32::blake3(&bytes), bytes },
                                Record::Log { job, text: b"first run\n".to_vec() },
                                Record::Log { job, text: b"second run\n".to_vec() },
                                Record::Outcome { job, lease: 7, saved: b"ok".to_vec() },
                            ])
                            .unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        let book = Book::open(&path).unwrap();
        for job in (0..8u64).flat_map(|t| (0..25u64).map(move |i| t * 100 + i)) {
            let bytes = format!("result of {job}").into_bytes();
            assert_eq!(book.blob(&Hash32::blake3(&bytes)).unwrap(), Some(bytes));
            assert_eq!(book.log(job).unwrap().unwrap(), b"first run\nsecond run\n");
            assert_eq!(book.outcome(job, 7).unwrap().as_deref(), Some(&b"ok"[..]));
            assert_eq!(book.last_outcome(job).unwrap().as_deref(), Some(&b"ok"[..]));
            assert_eq!(book.outcome(job, 8).unwrap(), None);
        }
    }
}
