//! job transactions and the job description a buyer signs.

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Hash32;

use crate::error::{invalid, TxError};
use crate::market::{OrderSpec, Pricing};
use crate::tx::check_text;

/// Bytes a job may carry inside its transaction (module, stdin, files together).
/// Larger inputs live in the storage network and are named by content id.
pub const MAX_INLINE_BYTES: usize = 48 * 1024;
pub const MAX_ARGS: usize = 64;
pub const MAX_FILES: usize = 32;
/// Upper bound on a job's wall-time limit (one day).
pub const MAX_WALL_SECS: u32 = 86_400;
pub const MAX_MEMORY_MB: u32 = 16 * 1024;

/// Where a job input comes from.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Input {
    /// Carried in the transaction.
    Inline(Vec<u8>),
    /// A file in the storage network (`tcid1...`), fetched and hash-checked by the provider.
    Stored { cid: String, size: u64 },
}

impl Input {
    pub fn inline_len(&self) -> usize {
        match self {
            Input::Inline(b) => b.len(),
            Input::Stored { .. } => 0,
        }
    }

    fn validate(&self, what: &str) -> Result<(), TxError> {
        match self {
            Input::Inline(_) => Ok(()),
            Input::Stored { cid, .. } => {
                check_text(&format!("{what} content id"), cid, 128)?;
                if !cid.starts_with("tcid1") {
                    return Err(invalid(format!("{what}: {cid:?} is not a content id (tcid1...)")));
                }
                Ok(())
            }
        }
    }
}

/// A WASI command module run under wasmtime.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct WasmJob {
    pub module: Input,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Option<Input>,
    /// Files readable by the guest under `/in/<name>`.
    pub files: Vec<(String, Input)>,
    /// Instructions budget (wasmtime fuel).
    pub fuel: u64,
    pub memory_mb: u32,
    pub wall_secs: u32,
    /// Largest total output (stdout plus files written under `/out`).
    pub max_output_mb: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum VectorFormat {
    /// NumPy `.npy`, little-endian float32, shape (sentences, dimensions).
    Npy,
    /// `{"model": ..., "dimensions": n, "vectors": [[...], ...]}`.
    Json,
}

/// Sentence embeddings with a BERT-family model (all-MiniLM-L6-v2) run by candle.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct EmbedJob {
    /// blake3 of `model.safetensors`: the model's address.
    pub model: Hash32,
    /// blake3 of `tokenizer.json` and of `config.json`.
    pub tokenizer: Hash32,
    pub config: Hash32,
    /// UTF-8 text, one sentence per line (empty lines skipped).
    pub input: Input,
    pub format: VectorFormat,
    /// Scale each vector to unit length.
    pub normalize: bool,
    pub wall_secs: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum JobKind {
    Wasm(WasmJob),
    Embed(EmbedJob),
}

impl JobKind {
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Wasm(_) => "wasm",
            JobKind::Embed(_) => "embed",
        }
    }

    pub fn wall_secs(&self) -> u32 {
        match self {
            JobKind::Wasm(w) => w.wall_secs,
            JobKind::Embed(e) => e.wall_secs,
        }
    }
}

/// Where a succeeded job's result files are written for the buyer.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum JobOutput {
    /// Objects `<prefix><file name>` in an S3 bucket the buyer owns; the S3
    /// endpoint holding the bucket copies them there from the provider.
    S3 { bucket: String, prefix: String },
    /// Each result file stored on the storage network under its own content
    /// id, paid by the buyer: its client stores them once the job succeeded
    /// (`tessera job submit --wait`, or `tessera job result --store` later).
    Storage,
}

impl JobOutput {
    fn validate(&self) -> Result<(), TxError> {
        match self {
            JobOutput::S3 { bucket, prefix } => {
                check_text("output bucket", bucket, 63)?;
                if bucket.len() < 3 {
                    return Err(invalid(format!("output bucket {bucket:?} is not a bucket name (3-63 characters)")));
                }
                if prefix.len() > 512 || prefix.contains('\0') {
                    return Err(invalid("output prefix is over 512 bytes or holds a NUL byte"));
                }
                Ok(())
            }
            JobOutput::Storage => Ok(()),
        }
    }
}

impl std::fmt::Display for JobOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobOutput::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            JobOutput::Storage => write!(f, "the storage network (a content id per file)"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct JobSpec {
    pub name: String,
    pub kind: JobKind,
    /// Resources, price ceiling, lease length (the job's deadline) and pricing mode.
    pub order: OrderSpec,
    /// Where the result files go besides the provider's result store.
    pub output: Option<JobOutput>,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Outcome {
    /// blake3 of the result manifest the provider serves, and its total size.
    Succeeded { result: Hash32, size: u64 },
    Failed { reason: String },
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum JobMsg {
    Submit { spec: JobSpec },
    /// The leased provider reports how the job ended; this settles the lease.
    Report { job: u64, outcome: Outcome },
    Cancel { job: u64 },
    /// Several reports of one provider in one transaction (a provider running
    /// many short jobs sends one transaction per batch, not per job). Each
    /// report stands alone: one for a job that is no longer this provider's
    /// to report is skipped with a `jobs.report_refused` event, and the rest
    /// still settle.
    Reports { reports: Vec<(u64, Outcome)> },
}

/// Most reports one `Reports` message carries.
pub const MAX_REPORTS: usize = 256;

impl JobSpec {
    pub fn validate(&self) -> Result<(), TxError> {
        check_text("job name", &self.name, 64)?;
        let inline: usize = match &self.kind {
            JobKind::Wasm(w) => {
                w.module.validate("module")?;
                if let Input::Inline(b) = &w.module
                    && !b.starts_with(b"\0asm")
                {
                    return Err(invalid("the module is not WebAssembly (no \\0asm header); build it for wasm32-wasip1"));
                }
                if w.args.len() > MAX_ARGS {
                    return Err(invalid(format!("{} arguments, over the limit of {MAX_ARGS}", w.args.len())));
                }
                for a in &w.args {
                    if a.len() > 1024 || a.contains('\0') {
                        return Err(invalid("an argument is over 1024 bytes or holds a NUL byte"));
                    }
                }
                if w.env.len() > MAX_ARGS {
                    return Err(invalid(format!("{} environment variables, over the limit of {MAX_ARGS}", w.env.len())));
                }
                for (k, v) in &w.env {
                    check_text("environment variable name", k, 128)?;
                    if k.contains('=') || v.len() > 1024 || v.contains('\0') {
                        return Err(invalid(format!("environment variable {k:?} is malformed")));
                    }
                }
                if w.files.len() > MAX_FILES {
                    return Err(invalid(format!("{} input files, over the limit of {MAX_FILES}", w.files.len())));
                }
                let mut names = std::collections::BTreeSet::new();
                for (name, input) in &w.files {
                    check_file_name(name)?;
                    if !names.insert(name) {
                        return Err(invalid(format!("input file {name:?} is named twice")));
                    }
                    input.validate(&format!("input file {name}"))?;
                }
                if let Some(s) = &w.stdin {
                    s.validate("stdin")?;
                }
                if w.fuel == 0 {
                    return Err(invalid("fuel must be greater than zero"));
                }
                if w.memory_mb == 0 || w.memory_mb > MAX_MEMORY_MB {
                    return Err(invalid(format!("memory must be 1..={MAX_MEMORY_MB} MiB")));
                }
                if w.max_output_mb == 0 || w.max_output_mb > 4096 {
                    return Err(invalid("max output must be 1..=4096 MiB"));
                }
                w.module.inline_len()
                    + w.stdin.as_ref().map_or(0, Input::inline_len)
                    + w.files.iter().map(|(_, i)| i.inline_len()).sum::<usize>()
            }
            JobKind::Embed(e) => {
                e.input.validate("input")?;
                e.input.inline_len()
            }
        };
        if let Some(o) = &self.output {
            o.validate()?;
        }
        let wall = self.kind.wall_secs();
        if wall == 0 || wall > MAX_WALL_SECS {
            return Err(invalid(format!("wall time must be 1..={MAX_WALL_SECS} seconds")));
        }
        if inline > MAX_INLINE_BYTES {
            return Err(invalid(format!(
                "inline inputs are {inline} bytes, over the limit of {MAX_INLINE_BYTES}; store larger inputs with `tessera storage put` and name their content id"
            )));
        }
        if self.order.pricing == Pricing::Auction && self.order.bid_window_blocks == 0 {
            return Err(invalid("an auction needs a bid window of at least one block"));
        }
        Ok(())
    }
}

/// A plain file name: no directories, no `.`/`..`, no control characters.
pub fn check_file_name(name: &str) -> Result<(), TxError> {
    check_text("file name", name, 255)?;
    if name == "." || name == ".." || name.contains('/') || name.contains('\\') {
        return Err(invalid(format!("file name {name:?} must be a plain name without directories")));
    }
    Ok(())
}

impl JobMsg {
    pub fn validate_basic(&self) -> Result<(), TxError> {
        match self {
            JobMsg::Submit { spec } => {
                spec.validate()?;
                crate::market::MarketMsg::CreateOrder { spec: spec.order.clone() }.validate_basic()
            }
            JobMsg::Report { outcome: Outcome::Failed { reason }, .. } => check_text("failure reason", reason, 1024),
            JobMsg::Report { .. } | JobMsg::Cancel { .. } => Ok(()),
            JobMsg::Reports { reports } => {
                if reports.is_empty() || reports.len() > MAX_REPORTS {
                    return Err(invalid(format!("{} reports in one message; send 1 to {MAX_REPORTS}", reports.len())));
                }
                let mut seen = std::collections::BTreeSet::new();
                for (job, outcome) in reports {
                    if !seen.insert(*job) {
                        return Err(invalid(format!("job {job} is reported twice in one message")));
                    }
                    if let Outcome::Failed { reason } = outcome {
                        check_text("failure reason", reason, 1024)?;
                    }
                }
                Ok(())
            }
        }
    }
}
