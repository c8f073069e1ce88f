//! What this machine offers: CPU cores, RAM, disk. GPUs are detected through
//! NVML when a driver is present (a later addition); without one, none.

use tessera_ledger::registry::Hardware;

pub fn detect(storage_gb: u64) -> Hardware {
    let cpu_cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let ram_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    Hardware { cpu_cores, ram_mb, disk_gb: storage_gb, gpus: Vec::new() }
}
