//! `tessera bench ...`: each benchmark measures a peer or a physical limit in
//! the same run and reports the ratio, plus peak memory.

pub mod ledger;
pub mod storage;

pub use ledger::{run_ledger_bench, LedgerBenchConfig, LedgerBenchReport};
pub use storage::{run_storage_bench, StorageBenchConfig, StorageBenchReport};

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
