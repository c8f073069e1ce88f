//! The gateway's index of buckets and objects (redb): what each object key
//! points to in the storage network. Writes are single durable transactions.

use borsh::{BorshDeserialize, BorshSerialize};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;

const BUCKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("buckets");
const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Job id -> what became of exporting its result files.
const EXPORTS: TableDefinition<u64, &[u8]> = TableDefinition::new("exports");
/// `<cid hex>/<owner>` -> content acknowledged to a client but not yet on
/// the storage network (its body is staged on the endpoint's disk).
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");

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
        format!("{}/{}", hex::encode(self.cid), self.owner)
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

pub struct Index {
    db: Database,
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
        }
        w.commit()?;
        Ok(Index { db })
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
        self.put_object_with(bucket, key, meta, None)
    }

    /// Stores `meta` and, in the same transaction, records its content as
    /// pending placement (unless it already is for this owner); returns the
    /// object it replaced.
    pub fn put_object_pending(&self, bucket: &str, key: &str, meta: &ObjectMeta, pending: &Pending) -> anyhow::Result<Option<ObjectMeta>> {
        self.put_object_with(bucket, key, meta, Some(pending))
    }

    fn put_object_with(&self, bucket: &str, key: &str, meta: &ObjectMeta, pending: Option<&Pending>) -> anyhow::Result<Option<ObjectMeta>> {
        let w = self.db.begin_write()?;
        let old = {
            if let Some(pending) = pending {
                let mut p = w.open_table(PENDING)?;
                let pkey = pending.key();
                if p.get(pkey.as_str())?.is_none() {
                    p.insert(pkey.as_str(), borsh::to_vec(pending)?.as_slice())?;
                }
            }
            let mut t = w.open_table(OBJECTS)?;
            let old = t.insert(object_key(bucket, key).as_str(), borsh::to_vec(meta)?.as_slice())?;
            match old {
                Some(v) => Some(borsh::from_slice(v.value())?),
                None => None,
            }
        };
        w.commit()?;
        Ok(old)
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
        let r = self.db.begin_read()?;
        let t = r.open_table(PENDING)?;
        let prefix = format!("{}/", hex::encode(cid));
        let first = t.range::<&str>(prefix.as_str()..)?.next();
        Ok(match first {
            Some(item) => item?.0.value().starts_with(&prefix),
            None => false,
        })
    }

    /// Records a failed placement attempt.
    pub fn pending_failed(&self, pending: &Pending, reason: &str) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(PENDING)?;
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
        w.commit()?;
        Ok(())
    }

    /// Removes pending entries (placed, or no longer wanted) in one transaction.
    pub fn pending_done(&self, done: &[&Pending]) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(PENDING)?;
            for p in done {
                t.remove(p.key().as_str())?;
            }
        }
        w.commit()?;
        Ok(())
    }

    pub fn delete_object(&self, bucket: &str, key: &str) -> anyhow::Result<Option<ObjectMeta>> {
        let w = self.db.begin_write()?;
        let old = {
            let mut t = w.open_table(OBJECTS)?;
            let old = t.remove(object_key(bucket, key).as_str())?;
            match old {
                Some(v) => Some(borsh::from_slice(v.value())?),
                None => None,
            }
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

    /// How many objects anywhere point at content `cid`.
    pub fn references(&self, cid: &[u8; 32]) -> anyhow::Result<usize> {
        let r = self.db.begin_read()?;
        let t = r.open_table(OBJECTS)?;
        let mut n = 0;
        for item in t.iter()? {
            let (_, v) = item?;
            let meta: ObjectMeta = borsh::from_slice(v.value())?;
            if meta.cid.as_ref() == Some(cid) {
                n += 1;
            }
        }
        Ok(n)
    }
}
