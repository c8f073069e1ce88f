//! The S3 operations, over the index and the storage network.

use futures_util::StreamExt;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tessera_client::storage::PutOptions;
use tessera_client::keyring::{rename_durably, sync_dir, write_private_atomic};
use tessera_client::{Client, Keyring};
use tessera_storage::{Cid, ErasureScheme};
use tessera_types::{Amount, Hash32};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::cache::ContentCache;
use crate::md5::{LaneBody, Lanes, Md5};
use crate::index::{BucketMeta, Index, ObjectMeta, Pending};
use crate::keys::{AccessKey, AccessKeys};
use crate::placer::{Staged, StagedBody, Staging};

/// Largest object or part body accepted (S3's single-PUT limit).
pub const MAX_OBJECT_BYTES: u64 = 5 << 30;
/// Most parts in one multipart upload.
pub const MAX_PARTS: i32 = 10_000;

pub struct Gateway {
    pub index: Arc<Index>,
    pub keys: AccessKeys,
    pub keyring: Keyring,
    pub rpc: String,
    /// The node's RPC, one connection pool for every request.
    pub node: Client,
    /// Spool files and multipart parts.
    pub work_dir: PathBuf,
    pub put_options: PutOptions,
    /// Recently stored or read objects, by content id.
    pub cache: ContentCache,
    /// Acknowledged bodies waiting for the storage network.
    pub staging: Arc<Staging>,
    /// Each paying key's address and balance as last read from the node.
    payers: std::sync::Mutex<std::collections::HashMap<String, (tessera_types::Address, Amount, std::time::Instant)>>,
    /// Manifests computed when staged, by content id, for the placer of
    /// objects stored in deals of their own (packs are built later), so that
    /// placing does not hash every piece again. Bounded; lost on restart,
    /// when the placer computes them again.
    pub(crate) manifests: std::sync::Mutex<std::collections::HashMap<[u8; 32], tessera_storage::Manifest>>,
    /// Hashes large bodies side by side (`None` without AVX-512).
    md5: Option<Lanes>,
    /// MiB that GETs reading the storage network may hold at once
    /// (`NETWORK_READ_MIB`); a read waits here for its share.
    reads: Arc<tokio::sync::Semaphore>,
    /// Packs to look at since one of their objects lost its last reference.
    pub(crate) compactor: crate::compact::Compactor,
}

/// The memory, in MiB, of every GET read from the storage network together
/// (`Endpoint::network_body`): a cold read of a 4 MiB object takes 16 of
/// it, one of an object in 64 MiB segments 448, so reads of huge objects go
/// one at a time and many small ones side by side, and the endpoint's memory
/// stays bounded however many clients miss the cache at once.
const NETWORK_READ_MIB: u32 = 512;

/// How long a GET waits for its share of `NETWORK_READ_MIB`.
const READ_SHARE_WAIT: Duration = Duration::from_secs(30);

/// Most staged manifests kept for the placer.
const MAX_STAGED_MANIFESTS: usize = 4096;

/// How long a PUT trusts a balance read by an earlier one: half a devnet
/// block (balances move only when a block commits), so a burst of PUTs asks
/// the node once per account instead of once per object.
const BALANCE_TTL: Duration = Duration::from_millis(250);

/// Default bound of the read cache.
pub const DEFAULT_CACHE_BYTES: u64 = 512 << 20;

pub fn default_put_options() -> PutOptions {
    PutOptions {
        scheme: ErasureScheme::DEVNET,
        segment_bytes: tessera_client::storage::DEFAULT_SEGMENT_BYTES,
        duration_blocks: 1_000_000,
        max_price_per_gib_block: Amount::from_micro(10_000),
    }
}

/// HEAD of a bucket: contents acknowledged for the bucket owner's account
/// and not yet on the storage network (0: everything is placed).
pub const PENDING_HEADER: &str = "x-tessera-pending-contents";

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn internal(e: impl std::fmt::Display) -> s3s::S3Error {
    s3_error!(InternalError, "{e}")
}

fn etag(hex: &str) -> ETag {
    ETag::Strong(hex.to_string())
}

fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// A request body on its way to a spool file: chunks are kept as they came
/// (shared, not copied) until `SPOOL_WRITE_BYTES` have gathered, then written
/// by one blocking call, so a large body costs a few thread hand-offs and no
/// copy in this process; `finish` writes the rest and syncs in the same call.
struct SpoolFile {
    file: Option<std::fs::File>,
    gathered: Vec<bytes::Bytes>,
    bytes: usize,
}

/// Bytes of a body gathered before they are written out.
const SPOOL_WRITE_BYTES: usize = 1 << 20;

impl SpoolFile {
    async fn create(path: &Path) -> std::io::Result<SpoolFile> {
        let path = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || std::fs::File::create(path)).await.map_err(std::io::Error::other)??;
        Ok(SpoolFile { file: Some(file), gathered: Vec::new(), bytes: 0 })
    }

    async fn push(&mut self, chunk: bytes::Bytes) -> std::io::Result<()> {
        self.bytes += chunk.len();
        self.gathered.push(chunk);
        if self.bytes >= SPOOL_WRITE_BYTES {
            self.write(false).await?;
        }
        Ok(())
    }

    /// Writes what is gathered and syncs the file.
    async fn finish(&mut self) -> std::io::Result<()> {
        self.write(true).await
    }

    async fn write(&mut self, sync: bool) -> std::io::Result<()> {
        let mut file = self.file.take().ok_or_else(|| std::io::Error::other("an earlier write to the spool file failed"))?;
        let gathered = std::mem::take(&mut self.gathered);
        self.bytes = 0;
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            for chunk in &gathered {
                std::io::Write::write_all(&mut file, chunk)?;
            }
            if sync {
                file.sync_all()?;
            }
            Ok(file)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.file = Some(file);
        Ok(())
    }
}

/// A request body's MD5 as it arrives: in the request, then, once the body
/// outgrows `md5::HAND_OVER`, on the thread that hashes large bodies.
enum BodyMd5 {
    Here(Md5),
    Lanes(LaneBody),
}

impl BodyMd5 {
    /// Adds `chunk`; `size` counts the body's bytes with it.
    async fn update(&mut self, chunk: &bytes::Bytes, size: u64, lanes: Option<&Lanes>) {
        match self {
            BodyMd5::Here(h) => match lanes {
                Some(lanes) if size > crate::md5::HAND_OVER => {
                    let mut body = lanes.hand_over(h.clone());
                    body.update(chunk.clone()).await;
                    *self = BodyMd5::Lanes(body);
                }
                _ => h.update(chunk),
            },
            BodyMd5::Lanes(body) => body.update(chunk.clone()).await,
        }
    }
}

/// A request body received in full: in a file, or in memory when it is
/// small (at most `placer::INLINE_BODY_MAX`) and nothing asked for a file.
pub(crate) struct Spooled {
    /// The file holding the body; `None` while it is held only in `body`.
    pub file: Option<PathBuf>,
    pub size: u64,
    pub md5: [u8; 16],
    /// The body's bytes when it is at most `placer::INLINE_BODY_MAX`.
    pub body: Option<Vec<u8>>,
}

impl Gateway {
    /// `staging_bytes` bounds acknowledged bodies not yet on the storage
    /// network; 0 makes every PUT wait for its deals and pieces.
    pub fn new(index: Index, keys: AccessKeys, keyring: Keyring, rpc: String, work_dir: PathBuf, cache_bytes: u64, staging_bytes: u64) -> anyhow::Result<Gateway> {
        std::fs::create_dir_all(work_dir.join("spool"))?;
        std::fs::create_dir_all(work_dir.join("uploads"))?;
        let cache = ContentCache::open(&work_dir.join("cache"), cache_bytes)?;
        let index = Arc::new(index);
        let staging = Staging::open(&work_dir.join("staged"), staging_bytes, &index)?;
        let node = Client::new(&rpc);
        Ok(Gateway {
            index,
            keys,
            keyring,
            rpc,
            node,
            work_dir,
            put_options: default_put_options(),
            cache,
            staging,
            payers: Default::default(),
            manifests: Default::default(),
            md5: Lanes::start(),
            reads: Arc::new(tokio::sync::Semaphore::new(NETWORK_READ_MIB as usize)),
            compactor: Default::default(),
        })
    }

    fn caller<T>(&self, req: &S3Request<T>) -> S3Result<AccessKey> {
        let creds = req.credentials.as_ref().ok_or_else(|| s3_error!(AccessDenied, "anonymous requests are not allowed"))?;
        self.keys.get(&creds.access_key).ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }

    /// The bucket, if the caller owns it.
    fn owned_bucket(&self, bucket: &str, caller: &AccessKey) -> S3Result<BucketMeta> {
        let meta = self.index.bucket(bucket).map_err(internal)?.ok_or_else(|| s3_error!(NoSuchBucket))?;
        if meta.owner != caller.key_name {
            return Err(s3_error!(AccessDenied, "bucket {bucket} belongs to another account"));
        }
        Ok(meta)
    }

    pub(crate) fn spool_path(&self) -> PathBuf {
        let mut n = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut n);
        self.work_dir.join("spool").join(hex::encode(n))
    }

    /// Receives a request body in bounded memory with its MD5. A body of at
    /// most `placer::INLINE_BODY_MAX` stays in memory (no file, no blocking
    /// file system call) unless `sync` is set; a larger one, or any body
    /// when `sync` is set, is written to `path` and is durable on return. A
    /// small body is made durable by the index transaction that stages it.
    async fn spool(&self, body: Option<StreamingBlob>, path: PathBuf, sync: bool) -> S3Result<Spooled> {
        let mut md5 = BodyMd5::Here(Md5::new());
        let mut size = 0u64;
        let mut held = Vec::new();
        let mut file: Option<SpoolFile> = None;
        let received: S3Result<()> = async {
            if sync {
                file = Some(SpoolFile::create(&path).await.map_err(internal)?);
            }
            if let Some(mut body) = body {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| s3_error!(IncompleteBody, "request body ended early: {e}"))?;
                    size += chunk.len() as u64;
                    if size > MAX_OBJECT_BYTES {
                        return Err(s3_error!(EntityTooLarge, "object bodies are at most {MAX_OBJECT_BYTES} bytes"));
                    }
                    md5.update(&chunk, size, self.md5.as_ref()).await;
                    if file.is_none() && size > crate::placer::INLINE_BODY_MAX {
                        // Too large to hold: on to the file, with what was held.
                        let f = file.insert(SpoolFile::create(&path).await.map_err(internal)?);
                        f.push(bytes::Bytes::from(std::mem::take(&mut held))).await.map_err(internal)?;
                    }
                    match file.as_mut() {
                        Some(f) => f.push(chunk).await.map_err(internal)?,
                        None => held.extend_from_slice(&chunk),
                    }
                }
            }
            if let Some(f) = file.as_mut() {
                f.finish().await.map_err(internal)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = received {
            if file.is_some() {
                let _ = tokio::fs::remove_file(&path).await;
            }
            return Err(e);
        }
        let md5 = match md5 {
            BodyMd5::Here(h) => h.finalize(),
            BodyMd5::Lanes(body) => body.finish().await.ok_or_else(|| internal("the MD5 thread has stopped"))?,
        };
        Ok(match file {
            Some(_) => Spooled { file: Some(path), size, md5, body: None },
            None => Spooled { file: None, size, md5, body: Some(held) },
        })
    }

    /// The file of a spooled body, written (unsynced) if it was held in memory.
    async fn spooled_file(&self, spooled: &mut Spooled) -> S3Result<PathBuf> {
        if let Some(path) = &spooled.file {
            return Ok(path.clone());
        }
        let path = self.spool_path();
        tokio::fs::write(&path, spooled.body.as_deref().unwrap_or_default()).await.map_err(internal)?;
        spooled.file = Some(path.clone());
        Ok(path)
    }

    /// Stores a spooled file as content paid by keyring key `owner`; returns its cid.
    async fn store(&self, owner: &str, spooled: &mut Spooled) -> S3Result<Option<[u8; 32]>> {
        if spooled.size == 0 {
            return Ok(None);
        }
        let key = self.keyring.get(owner).map_err(|e| s3_error!(AccessDenied, "{e}"))?;
        let node = self.node.clone();
        let path = self.spooled_file(spooled).await?;
        let opts = opts_for_size(&self.put_options, spooled.size);
        let result = tokio::task::spawn_blocking(move || {
            tessera_client::storage::put(&node, &key, &path, &opts, &mut |_, _, _| {})
        })
        .await
        .map_err(internal)?;
        match result {
            Ok(r) => Ok(Some(r.cid.0 .0)),
            Err(e) => Err(s3_error!(ServiceUnavailable, "the storage network did not take the object: {e:#}")),
        }
    }

    /// Ends `owner`'s deals of `cid` once no object of `owner` points at it
    /// any more, and the deal of each of `owner`'s packs it sat in once no
    /// object of `owner` points at any of that pack's objects; a pack some
    /// still point at is looked at by the compactor, which rewrites it once
    /// it is mostly unread. Another owner's objects of the same content keep
    /// that owner's deals and packs only.
    pub(crate) async fn release(&self, owner: &str, cid: Option<[u8; 32]>) {
        let Some(cid) = cid else { return };
        if self.index.references(owner, &cid).unwrap_or(1) > 0 {
            return;
        }
        let mut unused: Vec<([u8; 32], String)> = Vec::new();
        for pack in self.index.packs_of(&cid).unwrap_or_default() {
            // Another owner's pack is kept for that owner's objects.
            if let Ok(Some(record)) = self.index.pack(&pack)
                && record.owner == owner
            {
                if self.index.none_referenced(owner, &record.members).unwrap_or(false) {
                    unused.push((pack, record.owner));
                } else {
                    // Still read: rewritten once it is mostly unread (`compact`).
                    self.compactor.kick(pack);
                }
            }
        }
        let keys: Vec<Option<tessera_crypto::KeyPair>> = unused.iter().map(|(_, o)| self.keyring.get(o).ok()).collect();
        let own = self.keyring.get(owner).ok();
        let node = self.node.clone();
        let ended = tokio::task::spawn_blocking(move || {
            if let Some(key) = own {
                // Content in deals of its own (an object only ever packed has none).
                let _ = tessera_client::storage::remove(&node, &key, &Cid(Hash32(cid)));
            }
            unused
                .into_iter()
                .zip(keys)
                .filter(|((pack, _), key)| key.as_ref().is_some_and(|k| tessera_client::storage::remove(&node, k, &Cid(Hash32(*pack))).is_ok()))
                .map(|((pack, _), _)| pack)
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for pack in ended {
            let _ = self.index.forget_pack(&pack);
        }
    }

    /// Stores a spooled body as `bucket/key` paid by keyring key `owner`,
    /// releasing the content it replaced. The body is acknowledged once it is
    /// staged (the placer puts it on the storage network); with staging off,
    /// or a body larger than the staging area, once its deals are committed
    /// and its pieces uploaded.
    pub(crate) async fn put_spooled(&self, owner: &str, bucket: &str, key: &str, mut spooled: Spooled, etag_hex: String, content_type: Option<String>) -> S3Result<ObjectMeta> {
        let staged = match spooled.size {
            0 => None,
            _ => match self.stage(owner, bucket, key, &spooled, &etag_hex, &content_type).await {
                Ok(staged) => staged,
                Err(e) => {
                    if let Some(path) = &spooled.file {
                        let _ = tokio::fs::remove_file(path).await;
                    }
                    return Err(e);
                }
            },
        };
        let (meta, old) = match staged {
            Some(done) => done,
            None => {
                let stored = self.store(owner, &mut spooled).await;
                match (&stored, &spooled.file) {
                    // The body is exactly the stored content: it becomes the cached copy
                    // (one written from memory was never synced).
                    (Ok(Some(cid)), Some(path)) => self.cache.insert_as(cid, path, spooled.size, spooled.body.is_some()),
                    (_, Some(path)) => {
                        let _ = tokio::fs::remove_file(path).await;
                    }
                    (_, None) => {}
                }
                let cid = stored?;
                let meta = ObjectMeta { cid, size: spooled.size, etag: etag_hex, modified_ms: now_ms(), content_type };
                let old = self.index.put_object(bucket, key, &meta).map_err(internal)?;
                (meta, old)
            }
        };
        if let Some(old) = old
            && old.cid != meta.cid
        {
            self.release(owner, old.cid).await;
        }
        Ok(meta)
    }

    /// Write-back: computes the body's content id, checks that `owner` can
    /// pay for its deals, stages it and records the object. `None` when the
    /// body must be stored synchronously instead (larger than the staging area).
    async fn stage(
        &self,
        owner: &str,
        bucket: &str,
        key: &str,
        spooled: &Spooled,
        etag_hex: &str,
        content_type: &Option<String>,
    ) -> S3Result<Option<(ObjectMeta, Option<ObjectMeta>)>> {
        if spooled.size > self.staging.max_bytes() {
            return Ok(None);
        }
        let known = self.payers.lock().expect("payers lock").get(owner).filter(|(_, _, at)| at.elapsed() < BALANCE_TTL).copied();
        let payer = match known {
            Some((address, _, _)) => address,
            None => self.keyring.get(owner).map_err(|e| s3_error!(AccessDenied, "{e}"))?.address(),
        };
        let opts = opts_for_size(&self.put_options, spooled.size);
        let prepared = match (spooled.body.as_deref(), known) {
            // A small body and a payer whose balance is known: no blocking call, no thread hop.
            (Some(body), Some((_, balance, _))) => tessera_client::storage::manifest_of_bytes(body, &opts).map(|m| (m, balance)),
            _ => {
                let (node, body, path, opts) = (self.node.clone(), spooled.body.clone(), spooled.file.clone(), clone_opts(&opts));
                tokio::task::spawn_blocking(move || {
                    let manifest = match (body, path) {
                        (Some(body), _) => tessera_client::storage::manifest_of_bytes(&body, &opts)?,
                        (None, Some(path)) => tessera_client::storage::manifest_of_file(&path, &opts, &mut |_, _, _| {})?,
                        (None, None) => anyhow::bail!("the body is neither held nor in a file"),
                    };
                    let balance = match known {
                        Some((_, balance, _)) => balance,
                        None => node.account(&payer)?.balance,
                    };
                    anyhow::Ok((manifest, balance))
                })
                .await
                .map_err(internal)?
            }
        };
        let (manifest, escrow, balance) = prepared
            .and_then(|(manifest, balance)| {
                let escrow = tessera_client::storage::escrow_of(&manifest, &opts).ok_or_else(|| anyhow::anyhow!("the deal's escrow overflows"))?;
                Ok((manifest, escrow, balance))
            })
            .map_err(|e| s3_error!(ServiceUnavailable, "cannot prepare the object for the storage network: {e:#}"))?;
        if known.is_none() {
            self.payers.lock().expect("payers lock").insert(owner.to_string(), (payer, balance, std::time::Instant::now()));
        }
        // Everything already acknowledged for this account must stay payable too.
        let waiting = self.index.waiting_escrow(owner);
        let deals = manifest.segments.len().div_ceil(tessera_ledger::storage::MAX_SEGMENTS_PER_DEAL) as u128;
        let fees = tessera_client::storage::DEAL_FEE.micro() * deals;
        let needed = Amount(escrow.micro() + waiting + fees);
        if balance < needed {
            return Err(s3_error!(
                AccessDenied,
                "account {payer} cannot pay for storing this object: balance {balance} TSR, its deals and those still waiting need {needed} TSR"
            ));
        }
        let cid = manifest.cid().0 .0;
        if spooled.size > crate::placer::PACK_MEMBER_MAX {
            let mut manifests = self.manifests.lock().expect("manifests lock");
            if manifests.len() < MAX_STAGED_MANIFESTS {
                manifests.insert(cid, manifest);
            }
        }
        let meta = ObjectMeta { cid: Some(cid), size: spooled.size, etag: etag_hex.to_string(), modified_ms: now_ms(), content_type: content_type.clone() };
        let pending = Pending {
            cid,
            owner: owner.to_string(),
            size: spooled.size,
            escrow: escrow.micro(),
            since_ms: meta.modified_ms,
            attempts: 0,
            last_error: None,
        };
        match self.staging.stage(spooled.file.as_deref(), spooled.body.as_deref(), &pending, bucket, key, &meta).await.map_err(internal)? {
            Ok(Staged::Pending(old)) => Ok(Some((meta, old))),
            Ok(Staged::TooLarge) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The metadata HEAD and GET report: the content id, and whether the
    /// content is still waiting for the storage network.
    fn object_metadata(&self, meta: &ObjectMeta) -> Option<Metadata> {
        let cid = meta.cid?;
        let state = if self.index.is_pending(&cid).unwrap_or(false) { "pending" } else { "stored" };
        Some(
            [("tessera-cid".to_string(), Cid(Hash32(cid)).to_string()), ("tessera-state".to_string(), state.to_string())]
                .into_iter()
                .collect(),
        )
    }

    /// A multipart upload of `bucket/key` started by `caller`.
    fn caller_upload(&self, caller: &AccessKey, upload_id: &str, bucket: &str, key: &str) -> S3Result<(PathBuf, UploadMeta)> {
        let dir = self.upload_dir(upload_id)?;
        let meta = read_upload(&dir)?;
        if meta.owner != caller.key_name || meta.bucket != bucket || meta.key != key {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok((dir, meta))
    }

    fn upload_dir(&self, upload_id: &str) -> S3Result<PathBuf> {
        if upload_id.len() != 32 || !upload_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(s3_error!(NoSuchUpload));
        }
        let dir = self.work_dir.join("uploads").join(upload_id);
        if !dir.exists() {
            return Err(s3_error!(NoSuchUpload));
        }
        Ok(dir)
    }
}

/// The options content of `size` bytes is stored with: the endpoint's,
/// with a large object in larger segments (fewer pieces to prove each
/// epoch). Staging, placement and the synchronous path all use this, since
/// the segment size is part of the content id.
pub(crate) fn opts_for_size(o: &PutOptions, size: u64) -> PutOptions {
    let mut opts = clone_opts(o);
    opts.segment_bytes = opts.segment_bytes.max(tessera_client::storage::segment_bytes_for(size, opts.scheme));
    opts
}

pub(crate) fn clone_opts(o: &PutOptions) -> PutOptions {
    PutOptions {
        scheme: o.scheme,
        segment_bytes: o.segment_bytes,
        duration_blocks: o.duration_blocks,
        max_price_per_gib_block: o.max_price_per_gib_block,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct UploadMeta {
    bucket: String,
    key: String,
    owner: String,
    content_type: Option<String>,
}

fn read_upload(dir: &Path) -> S3Result<UploadMeta> {
    let text = std::fs::read_to_string(dir.join("upload.json")).map_err(|_| s3_error!(NoSuchUpload))?;
    serde_json::from_str(&text).map_err(internal)
}

/// The gateway as the S3 service sees it; the job exporter shares the same gateway.
pub struct Endpoint(pub Arc<Gateway>);

/// Chunks of a GET read from the storage network (each at most a piece)
/// that wait for the client to take them.
const STREAM_AHEAD: usize = 4;

impl Endpoint {
    /// Bytes `range` of content `cid` (`size` bytes in all) streamed from
    /// the storage network as they arrive and pass their checks
    /// (`storage::stream`): the first bytes go out after one segment's
    /// pieces, a range reads only the segments under it, and nothing lands
    /// on disk unless the read cache wants the whole object
    /// (`ContentCache::wants`), which is then written there on the way.
    /// ServiceUnavailable when the network gives none of it; a failure part
    /// way cuts the body short, which a client sees as a broken response.
    /// It first waits for its share of `NETWORK_READ_MIB`, held until both
    /// the read and the response body are done; SlowDown when none comes
    /// within `READ_SHARE_WAIT` (readers that stopped reading hold it).
    async fn network_body(&self, cid: [u8; 32], size: u64, range: std::ops::Range<u64>) -> S3Result<StreamingBlob> {
        let gateway = self.0.clone();
        let wanted = gateway.reads.clone().acquire_many_owned(read_share_mib(&gateway.put_options, size, &range));
        let share = match tokio::time::timeout(READ_SHARE_WAIT, wanted).await {
            Ok(share) => Arc::new(share.map_err(internal)?),
            Err(_) => return Err(s3_error!(SlowDown, "too many reads from the storage network at once; retry later")),
        };
        let read_share = share.clone();
        let whole = range.start == 0 && range.end == size;
        let fill = (whole && gateway.cache.wants(&cid, size)).then(|| gateway.spool_path());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(STREAM_AHEAD);
        tokio::task::spawn_blocking(move || {
            let _share = read_share;
            // A copy for the read cache; the network holds the durable one.
            let mut file = fill.as_ref().and_then(|path| std::fs::File::create(path).ok());
            let streamed = tessera_client::storage::stream(&gateway.node, &Cid(Hash32(cid)), range, &mut |_, _, _| {}, &mut |bytes, part| {
                if let Some(f) = file.as_mut()
                    && std::io::Write::write_all(f, &bytes[part.clone()]).is_err()
                {
                    file = None;
                }
                tx.blocking_send(Ok(bytes::Bytes::from(bytes).slice(part))).map_err(|_| anyhow::anyhow!("the client went away"))
            });
            // Closed here; still open only if every write went in.
            let filled = file.take().is_some();
            match (&streamed, fill) {
                (Ok(n), Some(path)) if filled && *n == size => gateway.cache.insert_unsynced(&cid, &path, size),
                (_, Some(path)) => {
                    let _ = std::fs::remove_file(path);
                }
                _ => {}
            }
            if let Err(e) = streamed {
                let _ = tx.blocking_send(Err(std::io::Error::other(format!("{e:#}"))));
            }
        });
        match rx.recv().await {
            Some(Ok(first)) => {
                let rest = futures_util::stream::unfold((rx, share), |(mut rx, share)| async move { rx.recv().await.map(|chunk| (chunk, (rx, share))) });
                Ok(StreamingBlob::wrap(futures_util::stream::once(async { Ok(first) }).chain(rest)))
            }
            Some(Err(e)) => Err(s3_error!(ServiceUnavailable, "the storage network did not return the object: {e}")),
            None => Err(s3_error!(InternalError, "the read from the storage network ended without an answer")),
        }
    }
}

/// The MiB of `NETWORK_READ_MIB` a read of bytes `range` of an object of
/// `size` bytes holds: what `storage::stream` holds for it in the segments
/// the endpoint stores such an object in (`opts_for_size`), and the chunks
/// waiting for the client (a piece each); all of it for a read larger than that.
fn read_share_mib(put_options: &PutOptions, size: u64, range: &std::ops::Range<u64>) -> u32 {
    let opts = opts_for_size(put_options, size);
    let piece = opts.scheme.shard_bytes(opts.segment_bytes) as u64;
    let bytes = tessera_client::storage::stream_memory(range.end - range.start, opts.segment_bytes, opts.scheme) + STREAM_AHEAD as u64 * piece;
    u32::try_from(bytes.div_ceil(1 << 20)).unwrap_or(u32::MAX).clamp(1, NETWORK_READ_MIB)
}

impl std::ops::Deref for Endpoint {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.0
    }
}

#[async_trait::async_trait]
impl S3 for Endpoint {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = self.caller(&req)?;
        let buckets = self
            .index
            .buckets()
            .map_err(internal)?
            .into_iter()
            .filter(|(_, m)| m.owner == caller.key_name)
            .map(|(name, m)| Bucket { name: Some(name), creation_date: Some(timestamp(m.created_ms)), ..Default::default() })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = self.caller(&req)?;
        let name = &req.input.bucket;
        if !valid_bucket_name(name) {
            return Err(s3_error!(InvalidBucketName, "bucket names are 3-63 lowercase letters, digits, '-' and '.'"));
        }
        match self.index.bucket(name).map_err(internal)? {
            Some(m) if m.owner == caller.key_name => return Err(s3_error!(BucketAlreadyOwnedByYou)),
            Some(_) => return Err(s3_error!(BucketAlreadyExists)),
            None => {}
        }
        self.index.put_bucket(name, &BucketMeta { owner: caller.key_name, created_ms: now_ms() }).map_err(internal)?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let caller = self.caller(&req)?;
        self.owned_bucket(&req.input.bucket, &caller)?;
        let mut resp = S3Response::new(HeadBucketOutput::default());
        // How much of what this account stored is still only on the endpoint.
        resp.headers.insert(PENDING_HEADER, self.index.waiting_contents(&caller.key_name).into());
        Ok(resp)
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let caller = self.caller(&req)?;
        self.owned_bucket(&req.input.bucket, &caller)?;
        let (objects, _) = self.index.list(&req.input.bucket, "", None, 1).map_err(internal)?;
        if !objects.is_empty() {
            return Err(s3_error!(BucketNotEmpty));
        }
        self.index.delete_bucket(&req.input.bucket).map_err(internal)?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        self.owned_bucket(&input.bucket, &caller)?;
        let spooled = self.spool(input.body, self.spool_path(), false).await?;
        let etag_hex = hex::encode(spooled.md5);
        let size = spooled.size;
        let meta = self.put_spooled(&caller.key_name, &input.bucket, &input.key, spooled, etag_hex, input.content_type).await?;
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag(&meta.etag)), size: Some(size as i64), ..Default::default() }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let caller = self.caller(&req)?;
        self.owned_bucket(&req.input.bucket, &caller)?;
        let meta = self.index.object(&req.input.bucket, &req.input.key).map_err(internal)?.ok_or_else(|| s3_error!(NoSuchKey))?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            e_tag: Some(etag(&meta.etag)),
            last_modified: Some(timestamp(meta.modified_ms)),
            content_type: meta.content_type.clone(),
            accept_ranges: Some("bytes".into()),
            metadata: self.object_metadata(&meta),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        self.owned_bucket(&input.bucket, &caller)?;
        let meta = self.index.object(&input.bucket, &input.key).map_err(internal)?.ok_or_else(|| s3_error!(NoSuchKey))?;
        let range = match &input.range {
            Some(r) => Some(r.check(meta.size).map_err(|_| s3_error!(InvalidRange))?),
            None => None,
        };
        let (start, end) = match &range {
            Some(r) => (r.start, r.end),
            None => (0, meta.size),
        };
        let body = match meta.cid {
            None => StreamingBlob::wrap(futures_util::stream::empty::<Result<bytes::Bytes, std::io::Error>>()),
            Some(cid) => {
                let local = match self.staging.body(&cid) {
                    Some(StagedBody::Held(held)) => Local::Held(held),
                    Some(StagedBody::File(f)) => Local::File(Some((f, 0))),
                    None => Local::File(self.cache.open_slice(&cid)),
                };
                match local {
                    // Small and pending, held by the index: served from it.
                    Local::Held(held) => {
                        let part = bytes::Bytes::from(held).slice(start as usize..end as usize);
                        StreamingBlob::wrap(futures_util::stream::once(async { Ok::<_, std::io::Error>(part) }))
                    }
                    Local::File(None) => self.network_body(cid, meta.size, start..end).await?,
                    Local::File(Some((file, base))) => {
                        // The object's bytes start at `base` in the file (a cached pack's member).
                        if end - start <= crate::placer::INLINE_BODY_MAX {
                            // A small read from the page cache: one positioned read here
                            // instead of a seek and reads on the blocking pool.
                            let mut bytes = vec![0; (end - start) as usize];
                            std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, base + start).map_err(internal)?;
                            StreamingBlob::wrap(futures_util::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)) }))
                        } else {
                            let mut file = tokio::fs::File::from_std(file);
                            file.seek(std::io::SeekFrom::Start(base + start)).await.map_err(internal)?;
                            StreamingBlob::wrap(tokio_util::io::ReaderStream::with_capacity(file.take(end - start), 256 << 10))
                        }
                    }
                }
            }
        };
        let mut output = GetObjectOutput {
            body: Some(body),
            content_length: Some((end - start) as i64),
            e_tag: Some(etag(&meta.etag)),
            last_modified: Some(timestamp(meta.modified_ms)),
            content_type: meta.content_type.clone(),
            accept_ranges: Some("bytes".into()),
            metadata: self.object_metadata(&meta),
            ..Default::default()
        };
        if range.is_some() {
            output.content_range = Some(format!("bytes {}-{}/{}", start, end.saturating_sub(1), meta.size));
            let mut resp = S3Response::new(output);
            resp.status = Some(hyper::StatusCode::PARTIAL_CONTENT);
            return Ok(resp);
        }
        Ok(S3Response::new(output))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let caller = self.caller(&req)?;
        self.owned_bucket(&req.input.bucket, &caller)?;
        if let Some(old) = self.index.delete_object(&req.input.bucket, &req.input.key).map_err(internal)? {
            self.release(&caller.key_name, old.cid).await;
        }
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        self.owned_bucket(&input.bucket, &caller)?;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported"));
        };
        self.owned_bucket(src_bucket, &caller)?;
        let mut meta = self.index.object(src_bucket, src_key).map_err(internal)?.ok_or_else(|| s3_error!(NoSuchKey))?;
        meta.modified_ms = now_ms();
        if input.content_type.is_some() {
            meta.content_type = input.content_type.clone();
        }
        // The copy shares the stored content; deals end when the last reference goes.
        let old = self.index.put_object(&input.bucket, &input.key, &meta).map_err(internal)?;
        if let Some(old) = old
            && old.cid != meta.cid
        {
            self.release(&caller.key_name, old.cid).await;
        }
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&meta.etag)),
                last_modified: Some(timestamp(meta.modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        self.owned_bucket(&input.bucket, &caller)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max_keys = input.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = match &input.continuation_token {
            Some(t) => Some(String::from_utf8(hex::decode(t).map_err(|_| s3_error!(InvalidArgument, "bad continuation token"))?).map_err(|_| s3_error!(InvalidArgument, "bad continuation token"))?),
            None => input.start_after.clone(),
        };
        let mut contents = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut cursor = after.clone();
        let mut truncated = false;
        let mut last_key = None;
        // Walk keys in order, folding those below a delimiter into common prefixes.
        'walk: loop {
            let (batch, more) = self.index.list(&input.bucket, &prefix, cursor.as_deref(), 1000).map_err(internal)?;
            if batch.is_empty() {
                break;
            }
            for (key, meta) in batch {
                cursor = Some(key.clone());
                if contents.len() + prefixes.len() >= max_keys {
                    truncated = true;
                    break 'walk;
                }
                let rest = &key[prefix.len()..];
                if let Some(d) = input.delimiter.as_deref().filter(|d| !d.is_empty()) {
                    if let Some(pos) = rest.find(d) {
                        let common = format!("{prefix}{}", &rest[..pos + d.len()]);
                        if prefixes.last() != Some(&common) {
                            prefixes.push(common);
                        }
                        last_key = Some(key);
                        continue;
                    }
                }
                contents.push(Object {
                    key: Some(key.clone()),
                    size: Some(meta.size as i64),
                    e_tag: Some(etag(&meta.etag)),
                    last_modified: Some(timestamp(meta.modified_ms)),
                    ..Default::default()
                });
                last_key = Some(key);
            }
            if !more {
                break;
            }
        }
        let key_count = (contents.len() + prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket.clone()),
            prefix: input.prefix.clone(),
            delimiter: input.delimiter.clone(),
            max_keys: Some(max_keys as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token.clone(),
            start_after: input.start_after.clone(),
            is_truncated: Some(truncated),
            next_continuation_token: if truncated { last_key.map(|k| hex::encode(k.as_bytes())) } else { None },
            contents: Some(contents),
            common_prefixes: Some(prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(&self, req: S3Request<CreateMultipartUploadInput>) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        self.owned_bucket(&input.bucket, &caller)?;
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let upload_id = hex::encode(id);
        let uploads = self.work_dir.join("uploads");
        let dir = uploads.join(&upload_id);
        let meta = UploadMeta { bucket: input.bucket.clone(), key: input.key.clone(), owner: caller.key_name, content_type: input.content_type };
        let record = serde_json::to_string(&meta).map_err(internal)?;
        std::fs::create_dir_all(&dir).map_err(internal)?;
        // Durable before its id is answered: the upload, and the parts it is told of, outlive a crash.
        let recorded = write_private_atomic(&dir.join("upload.json"), record.as_bytes()).and_then(|()| sync_dir(&uploads));
        if let Err(e) = recorded {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(internal(e));
        }
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        let (dir, _) = self.caller_upload(&caller, &input.upload_id, &input.bucket, &input.key)?;
        if !(1..=MAX_PARTS).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to {MAX_PARTS}"));
        }
        let tmp = dir.join(format!("part-{}.tmp", input.part_number));
        let spooled = self.spool(input.body, tmp.clone(), true).await?;
        let md5_hex = hex::encode(spooled.md5);
        rename_durably(&tmp, &dir.join(format!("part-{}-{md5_hex}", input.part_number))).map_err(internal)?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(etag(&md5_hex)), ..Default::default() }))
    }

    async fn complete_multipart_upload(&self, req: S3Request<CompleteMultipartUploadInput>) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        let (dir, meta) = self.caller_upload(&caller, &input.upload_id, &input.bucket, &input.key)?;
        let parts = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if parts.is_empty() {
            return Err(s3_error!(MalformedXML, "a completed upload lists at least one part"));
        }
        let out_path = self.spool_path();
        let mut out = tokio::fs::File::create(&out_path).await.map_err(internal)?;
        let mut md5s = Vec::new();
        let mut size = 0u64;
        let mut last = 0;
        for p in &parts {
            let n = p.part_number.ok_or_else(|| s3_error!(InvalidPart, "a part has no number"))?;
            if n <= last {
                return Err(s3_error!(InvalidPartOrder));
            }
            last = n;
            let tag = match &p.e_tag {
                Some(ETag::Strong(t)) | Some(ETag::Weak(t)) => t.trim_matches('"').to_string(),
                None => return Err(s3_error!(InvalidPart, "part {n} has no ETag")),
            };
            let path = dir.join(format!("part-{n}-{tag}"));
            let mut f = tokio::fs::File::open(&path).await.map_err(|_| s3_error!(InvalidPart, "part {n} with ETag {tag} was not uploaded"))?;
            size += tokio::io::copy(&mut f, &mut out).await.map_err(internal)?;
            md5s.extend_from_slice(&hex::decode(&tag).map_err(|_| s3_error!(InvalidPart))?);
        }
        out.sync_all().await.map_err(internal)?;
        drop(out);
        let whole = Md5::digest(&md5s);
        let etag_hex = format!("{}-{}", hex::encode(whole), parts.len());
        let spooled = Spooled { file: Some(out_path), size, md5: whole, body: None };
        let stored = self.put_spooled(&caller.key_name, &meta.bucket, &meta.key, spooled, etag_hex.clone(), meta.content_type).await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(meta.bucket),
            key: Some(meta.key),
            e_tag: Some(etag(&stored.etag)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(&self, req: S3Request<AbortMultipartUploadInput>) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let caller = self.caller(&req)?;
        let dir = self.upload_dir(&req.input.upload_id)?;
        let meta = read_upload(&dir)?;
        if meta.owner != caller.key_name {
            return Err(s3_error!(NoSuchUpload));
        }
        std::fs::remove_dir_all(&dir).map_err(internal)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }
}

/// Where a GET finds an object's bytes on this endpoint: held by the index
/// (small and pending), or in a file from `base` on (`None`: not here).
enum Local {
    Held(Vec<u8>),
    File(Option<(std::fs::File, u64)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_reads_share_a_bounded_budget() {
        let opts = default_put_options();
        let whole = |size: u64| read_share_mib(&opts, size, &(0..size));
        // A 4 MiB object: two segments it may straddle, six 1 MiB pieces each, four waiting.
        assert_eq!(whole(4 << 20), 16);
        assert!(whole(4 << 10) <= whole(4 << 20));
        assert!(NETWORK_READ_MIB / whole(4 << 20) >= 16, "a client with 16 cold GETs of 4 MiB objects waits for none");
        // Huge objects (64 MiB segments) read one at a time; none asks for more than there is.
        let huge = whole(64 << 30);
        assert_eq!(huge, 448);
        assert!(2 * huge > NETWORK_READ_MIB);
        assert!(whole(u64::MAX / 2) <= NETWORK_READ_MIB);
        // A range reads only the segments under it.
        assert!(read_share_mib(&opts, 64 << 30, &(0..1 << 20)) < huge);
    }
}
