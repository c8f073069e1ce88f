//! Job results as the provider serves them, and fetching them with every byte
//! checked against the hash the provider committed to on the ledger.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;
use tessera_types::Hash32;

use crate::api::{JobDto, ProviderDto};
use crate::{Client, ClientError};

/// The file a job's result hash names: what the job produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultManifest {
    pub job: u64,
    /// `wasm` or `embed`.
    pub kind: String,
    /// The guest's exit status (wasm); 0 for embed.
    pub exit_code: i32,
    /// Instructions used (wasm), sentences embedded (embed).
    pub work: u64,
    /// `stdout`, `stderr`, `out/<name>` (wasm), `vectors.npy` or `vectors.json` (embed).
    pub files: Vec<ResultFile>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultFile {
    pub name: String,
    pub hash: Hash32,
    pub size: u64,
}

impl ResultManifest {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serialises")
    }

    /// Bytes the result holds: the manifest and every file.
    pub fn total_size(&self, manifest_len: usize) -> u64 {
        manifest_len as u64 + self.files.iter().map(|f| f.size).sum::<u64>()
    }
}

/// Largest manifest accepted (thousands of files).
const MAX_MANIFEST: u64 = 4 << 20;

/// The HTTP endpoint of the provider that ran a job.
pub fn provider_endpoint(client: &Client, job: &JobDto) -> Result<String, ClientError> {
    let provider = job.provider.ok_or_else(|| ClientError::NotFound(format!("job {} never ran on a provider", job.id)))?;
    let p: ProviderDto = client.get(&format!("/providers/{provider}"))?;
    p.info
        .endpoints
        .first()
        .cloned()
        .ok_or_else(|| ClientError::NotFound(format!("provider {provider} lists no endpoint")))
}

fn get(url: &str) -> Result<ureq::Response, ClientError> {
    match ureq::get(url).timeout(Duration::from_secs(300)).call() {
        Ok(r) => Ok(r),
        Err(ureq::Error::Status(404, r)) => Err(ClientError::NotFound(r.into_string().unwrap_or_else(|_| url.to_string()))),
        Err(ureq::Error::Status(_, r)) => Err(ClientError::Rejected(r.into_string().unwrap_or_default())),
        Err(e) => Err(ClientError::Unreachable { url: url.to_string(), reason: e.to_string() }),
    }
}

/// Fetches and checks the manifest of a succeeded job.
pub fn fetch_manifest(endpoint: &str, result: &Hash32) -> Result<ResultManifest, ClientError> {
    let url = format!("{}/results/{result}", endpoint.trim_end_matches('/'));
    let mut bytes = Vec::new();
    get(&url)?.into_reader().take(MAX_MANIFEST + 1).read_to_end(&mut bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if Hash32::blake3(&bytes) != *result {
        return Err(ClientError::Protocol(format!("the result manifest from {endpoint} does not match the committed hash {result}")));
    }
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("result manifest: {e}")))
}

/// Streams one result file to `dest`, checking its hash; a mismatch leaves nothing behind.
pub fn fetch_file(endpoint: &str, file: &ResultFile, dest: &Path) -> Result<(), ClientError> {
    fetch_file_observed(endpoint, file, dest, &mut |_| {})
}

/// `fetch_file`, showing each chunk to `on_chunk` as it passes (for a second
/// digest without reading the file again).
pub fn fetch_file_observed(endpoint: &str, file: &ResultFile, dest: &Path, on_chunk: &mut dyn FnMut(&[u8])) -> Result<(), ClientError> {
    let url = format!("{}/results/{}", endpoint.trim_end_matches('/'), file.hash);
    let mut reader = get(&url)?.into_reader().take(file.size + 1);
    let part = dest.with_extension("part");
    let io = |e: std::io::Error| ClientError::Protocol(format!("{}: {e}", dest.display()));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut out = std::fs::File::create(&part).map_err(io)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
        on_chunk(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io)?;
    }
    if total != file.size || Hash32(*hasher.finalize().as_bytes()) != file.hash {
        let _ = std::fs::remove_file(&part);
        return Err(ClientError::Protocol(format!("{} from {endpoint} failed its hash check", file.name)));
    }
    std::fs::rename(&part, dest).map_err(io)
}

/// Fetches a provider's log of a job (plain text).
pub fn fetch_logs(endpoint: &str, job: u64) -> Result<String, ClientError> {
    let url = format!("{}/jobs/{job}/logs", endpoint.trim_end_matches('/'));
    let mut text = String::new();
    get(&url)?.into_reader().take(16 << 20).read_to_string(&mut text).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(text)
}

/// What the provider is doing with a job right now (`fetching inputs`, `running`, `done`, ...).
pub fn fetch_phase(endpoint: &str, job: u64) -> Result<String, ClientError> {
    let url = format!("{}/jobs/{job}/phase", endpoint.trim_end_matches('/'));
    let mut text = String::new();
    get(&url)?.into_reader().take(4096).read_to_string(&mut text).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(text.trim().to_string())
}
