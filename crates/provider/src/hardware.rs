//! What this machine offers: CPU cores, RAM, the disk given to the network
//! (checked against the free space where the data lives), and NVIDIA GPUs
//! found through NVML (loaded at run time; without a driver there are none,
//! and `detect` says so).

use tessera_ledger::registry::{Gpu, Hardware};

pub struct Detected {
    pub hardware: Hardware,
    /// How GPUs were looked for and what came of it, for the operator.
    pub gpu_note: String,
}

pub fn detect(storage_gb: u64) -> Detected {
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
    let (gpus, gpu_note) = nvidia_gpus();
    Detected { hardware: Hardware { cpu_cores, ram_mb, disk_gb: storage_gb, gpus }, gpu_note }
}

fn nvidia_gpus() -> (Vec<Gpu>, String) {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => return (Vec::new(), format!("no NVIDIA driver found (NVML: {e}); offering no GPUs")),
    };
    let count = match nvml.device_count() {
        Ok(n) => n,
        Err(e) => return (Vec::new(), format!("NVML cannot count devices ({e}); offering no GPUs")),
    };
    let mut gpus = Vec::new();
    for i in 0..count {
        let Ok(device) = nvml.device_by_index(i) else { continue };
        let model = device.name().unwrap_or_else(|_| "NVIDIA GPU".into());
        let memory_mb = device.memory_info().map(|m| m.total >> 20).unwrap_or(0);
        gpus.push(Gpu { model, memory_mb });
    }
    let names: Vec<String> = gpus.iter().map(|g| format!("{} ({} MiB)", g.model, g.memory_mb)).collect();
    let driver = nvml.sys_driver_version().unwrap_or_default();
    (gpus, format!("NVML (driver {driver}): {}", if names.is_empty() { "no GPUs".into() } else { names.join(", ") }))
}

/// Free space, in GiB, of the file system holding `path` (or its nearest existing parent).
pub fn free_disk_gb(path: &std::path::Path) -> Option<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent()?;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // Safety: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) >> 30)
}
