//! jobs: work a buyer wants run (WebAssembly, embeddings), placed on the market
//! as an order, run by the leased provider, settled by the provider's report,
//! and returned to the market when the provider is lost.

mod exec;
mod msg;
mod state;

pub use exec::execute;
pub(crate) use exec::{on_lease_closed, on_lease_opened, on_order_expired};
pub use msg::{
    check_file_name, EmbedJob, JobOutput, Input, JobKind, JobMsg, JobSpec, Outcome, VectorFormat, WasmJob, MAX_INLINE_BYTES, MAX_REPORTS,
};
pub use state::{all_jobs, job, job_of_order, Job, JobState};
