//! Job sandboxes run by a provider.
//!
//! - [`wasm`]: a WASI command module under wasmtime with fuel, memory and
//!   wall-time limits; it sees only its arguments, environment, stdin, `/in`
//!   (read-only inputs) and `/out` (its results).
//! - [`embed`]: sentence embeddings with a BERT-family model (all-MiniLM-L6-v2)
//!   run by candle on CPU, or on CUDA with the `cuda` feature.
//! - [`models`]: model files addressed by blake3, cached and checked by hash.

pub mod embed;
pub mod models;
pub mod wasm;

/// Why a job did not produce a result; the text goes into the ledger report.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job broke one of its own limits or the guest failed: the buyer's fault.
    #[error("{0}")]
    Job(String),
    /// This machine could not run it (missing model, disk, internal error).
    #[error("provider error: {0}")]
    Provider(String),
}

impl JobError {
    pub fn job(msg: impl Into<String>) -> JobError {
        JobError::Job(msg.into())
    }

    pub fn provider(msg: impl std::fmt::Display) -> JobError {
        JobError::Provider(msg.to_string())
    }
}
