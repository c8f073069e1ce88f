//! Job outputs into buckets. The endpoint follows the node's block stream;
//! when a job whose spec names `output = s3://bucket/prefix` succeeds and this
//! endpoint holds that bucket for the job's buyer, it copies the result files
//! from the provider (every byte checked against the hash the provider
//! committed to on the ledger) into objects `<prefix><file name>`, stored in
//! the storage network like any PUT and paid by the bucket's owner.
//!
//! What was exported is recorded in the index, so a restart neither repeats
//! nor loses an export: on every (re)connect and every half minute the
//! endpoint rescans recent succeeded jobs. A failed copy (provider away,
//! storage full) is retried up to `MAX_ATTEMPTS` times.

use crate::md5::Md5;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_client::api::JobDto;
use tessera_client::events::{BlockStream, StreamItem};
use tessera_client::{jobs, Client};
use tessera_ledger::jobs::JobOutput;

use crate::index::ExportRecord;
use crate::service::{Gateway, Spooled};

/// Tries per job before the export is given up.
pub const MAX_ATTEMPTS: u32 = 5;
/// Jobs looked at by a rescan (newest first).
const RESCAN_JOBS: usize = 1000;
const RESCAN_EVERY: Duration = Duration::from_secs(30);

enum Wake {
    Job(u64),
    Rescan,
}

/// What to do with one job.
enum Plan {
    /// Not for this endpoint (no S3 output, another endpoint's bucket, already done).
    Skip,
    Export { owner: String, bucket: String, prefix: String },
}

/// Runs until `stop` is set.
pub async fn run(gateway: Arc<Gateway>, stop: Arc<AtomicBool>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Wake>(1024);
    let rpc = gateway.rpc.clone();
    let follower_stop = stop.clone();
    let follower_tx = tx.clone();
    std::thread::Builder::new()
        .name("s3-export-follow".into())
        .spawn(move || follow(&rpc, &follower_tx, &follower_stop))
        .expect("spawn thread");
    let ticker_stop = stop.clone();
    tokio::spawn(async move {
        while !ticker_stop.load(Ordering::Relaxed) {
            tokio::time::sleep(RESCAN_EVERY).await;
            if tx.send(Wake::Rescan).await.is_err() {
                return;
            }
        }
    });
    while !stop.load(Ordering::Relaxed) {
        let wake = match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(_) => continue,
        };
        let jobs = match wake {
            Wake::Job(id) => fetch(&gateway.rpc, move |c| c.get::<JobDto>(&format!("/jobs/{id}")).map(|j| vec![j])).await,
            Wake::Rescan => fetch(&gateway.rpc, |c| c.get::<Vec<JobDto>>(&format!("/jobs?limit={RESCAN_JOBS}"))).await,
        };
        for job in jobs.into_iter().filter(|j| j.state == "succeeded") {
            export_job(&gateway, &job).await;
        }
    }
}

/// Runs one blocking node query; a failure is logged and reads as nothing.
async fn fetch<T>(rpc: &str, f: impl FnOnce(&Client) -> Result<T, tessera_client::ClientError> + Send + 'static) -> T
where
    T: Default + Send + 'static,
{
    let client = Client::new(rpc);
    match tokio::task::spawn_blocking(move || f(&client)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            eprintln!("job export: reading jobs from the node failed: {e}");
            T::default()
        }
        Err(_) => T::default(),
    }
}

/// Reads the block stream and wakes the exporter for each succeeded job.
fn follow(rpc: &str, tx: &tokio::sync::mpsc::Sender<Wake>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let stream = match BlockStream::connect(rpc) {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // Whatever happened while disconnected is picked up by a rescan.
        if tx.blocking_send(Wake::Rescan).is_err() {
            return;
        }
        for item in stream {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let wakes: Vec<Wake> = match item {
                StreamItem::Lagged => vec![Wake::Rescan],
                StreamItem::Block(block) => block
                    .txs
                    .iter()
                    .filter(|t| t.code == 0)
                    .flat_map(|t| t.events.iter())
                    .filter(|e| e.kind == "jobs.succeeded")
                    .filter_map(|e| e.get("job").and_then(|j| j.parse().ok()))
                    .map(Wake::Job)
                    .collect(),
            };
            for w in wakes {
                if tx.blocking_send(w).is_err() {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn plan(gateway: &Gateway, job: &JobDto) -> anyhow::Result<Plan> {
    match gateway.index.export(job.id)? {
        Some(ExportRecord::Done { .. }) => return Ok(Plan::Skip),
        Some(ExportRecord::Failing { attempts, .. }) if attempts >= MAX_ATTEMPTS => return Ok(Plan::Skip),
        _ => {}
    }
    let spec = job.decode_spec().map_err(|e| anyhow::anyhow!(e))?;
    let Some(JobOutput::S3 { bucket, prefix }) = spec.output else { return Ok(Plan::Skip) };
    let Some(meta) = gateway.index.bucket(&bucket)? else { return Ok(Plan::Skip) };
    // A bucket of the same name held here for another account is not the buyer's.
    let owner_address = gateway.keyring.get(&meta.owner).map(|k| k.address()).ok();
    if owner_address != Some(job.buyer) {
        return Ok(Plan::Skip);
    }
    Ok(Plan::Export { owner: meta.owner, bucket, prefix })
}

async fn export_job(gateway: &Arc<Gateway>, job: &JobDto) {
    let (owner, bucket, prefix) = match plan(gateway, job) {
        Ok(Plan::Export { owner, bucket, prefix }) => (owner, bucket, prefix),
        Ok(Plan::Skip) => return,
        Err(e) => {
            eprintln!("job export: job {}: {e:#}", job.id);
            return;
        }
    };
    let record = match copy_results(gateway, job, &owner, &bucket, &prefix).await {
        Ok(keys) => {
            println!("job {}: {} result files written to s3://{bucket}/{prefix}", job.id, keys.len());
            ExportRecord::Done { keys }
        }
        Err(e) => {
            let attempts = match gateway.index.export(job.id) {
                Ok(Some(ExportRecord::Failing { attempts, .. })) => attempts + 1,
                _ => 1,
            };
            eprintln!("job {}: writing results to s3://{bucket}/{prefix} failed (try {attempts} of {MAX_ATTEMPTS}): {e:#}", job.id);
            ExportRecord::Failing { attempts, reason: format!("{e:#}") }
        }
    };
    if let Err(e) = gateway.index.put_export(job.id, &record) {
        eprintln!("job export: recording job {}: {e:#}", job.id);
    }
}

/// Fetches each result file (hash-checked) and stores it as an object; returns the keys.
async fn copy_results(gateway: &Arc<Gateway>, job: &JobDto, owner: &str, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let result = job.result.ok_or_else(|| anyhow::anyhow!("the job has no result hash"))?;
    let rpc = gateway.rpc.clone();
    let dto = job.clone();
    let (endpoint, manifest) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let endpoint = jobs::provider_endpoint(&Client::new(&rpc), &dto)?;
        let manifest = jobs::fetch_manifest(&endpoint, &result)?;
        Ok((endpoint, manifest))
    })
    .await??;
    let mut keys = Vec::with_capacity(manifest.files.len());
    for file in manifest.files {
        let key = format!("{prefix}{}", file.name);
        let size = file.size;
        let path = gateway.spool_path();
        let (ep, target) = (endpoint.clone(), path.clone());
        // The file is fetched with its MD5 (the object's ETag) taken on the way.
        let md5: [u8; 16] = tokio::task::spawn_blocking(move || -> anyhow::Result<[u8; 16]> {
            let mut md5 = Md5::new();
            jobs::fetch_file_observed(&ep, &file, &target, &mut |chunk| md5.update(chunk))?;
            // Staged as it is: it must be durable before the index names it.
            std::fs::File::open(&target)?.sync_all()?;
            Ok(md5.finalize())
        })
        .await??;
        let spooled = Spooled { file: Some(path), size, md5, body: None };
        gateway
            .put_spooled(owner, bucket, &key, spooled, hex::encode(md5), None)
            .await
            .map_err(|e| anyhow::anyhow!("storing {key}: {}", e.message().unwrap_or("the storage network refused it")))?;
        keys.push(key);
    }
    Ok(keys)
}
