//! WebAssembly jobs: WASI preview 1 command modules under wasmtime.
//!
//! Limits: fuel (instructions), linear memory (bytes), wall time (epoch
//! interruption, ticked every 10 ms by one shared thread), stdout/stderr and
//! `/out` size. The guest sees `/in` read-only and `/out` writable; nothing
//! else of the host's file system and no sockets.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use wasmtime::{Config, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::JobError;

const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Compiled modules kept by content hash (repeat jobs skip compilation).
const MODULE_CACHE: usize = 32;

/// What a job may use.
#[derive(Clone, Debug)]
pub struct Limits {
    pub fuel: u64,
    pub memory_bytes: usize,
    pub wall: Duration,
    /// Largest stdout, stderr and total of `/out` files, each.
    pub max_output_bytes: usize,
}

pub struct WasmRun<'a> {
    pub module: &'a [u8],
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Vec<u8>,
    /// Host directory shown read-only as `/in`.
    pub input_dir: &'a Path,
    /// Host directory shown writable as `/out` (empty at start).
    pub output_dir: &'a Path,
    pub limits: Limits,
}

#[derive(Debug)]
pub struct WasmOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub fuel_used: u64,
}

struct Host {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// Compiled modules by content hash, with their insertion order for eviction.
type ModuleCache = (HashMap<[u8; 32], Module>, VecDeque<[u8; 32]>);

struct Runtime {
    engine: Engine,
    linker: Linker<Host>,
    modules: Mutex<ModuleCache>,
}

fn runtime() -> Result<&'static Runtime, JobError> {
    static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let mut config = Config::new();
        config.consume_fuel(true).epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| e.to_string())?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi).map_err(|e| e.to_string())?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Runtime { engine, linker, modules: Mutex::new((HashMap::new(), VecDeque::new())) })
    })
    .as_ref()
    .map_err(|e| JobError::provider(format!("cannot start wasmtime: {e}")))
}

fn compile(rt: &Runtime, bytes: &[u8]) -> Result<Module, JobError> {
    let hash = *blake3::hash(bytes).as_bytes();
    if let Some(m) = rt.modules.lock().unwrap_or_else(|p| p.into_inner()).0.get(&hash) {
        return Ok(m.clone());
    }
    let module = Module::new(&rt.engine, bytes).map_err(|e| JobError::job(format!("the module does not compile: {e:#}")))?;
    let mut cache = rt.modules.lock().unwrap_or_else(|p| p.into_inner());
    if cache.1.len() >= MODULE_CACHE
        && let Some(old) = cache.1.pop_front()
    {
        cache.0.remove(&old);
    }
    cache.0.insert(hash, module.clone());
    cache.1.push_back(hash);
    Ok(module)
}

/// Runs a module's `_start` to the end or to a limit. A non-zero exit status
/// is an output, not an error; broken limits and traps are errors.
pub fn run(job: WasmRun<'_>) -> Result<WasmOutput, JobError> {
    let rt = runtime()?;
    let module = compile(rt, job.module)?;
    let limits = &job.limits;
    let stdout = MemoryOutputPipe::new(limits.max_output_bytes);
    let stderr = MemoryOutputPipe::new(limits.max_output_bytes);
    let mut argv = vec!["job".to_string()];
    argv.extend(job.args.iter().cloned());
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&argv)
        .envs(job.env)
        .stdin(MemoryInputPipe::new(job.stdin))
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    wasi.preopened_dir(job.input_dir, "/in", FsPerms::ReadOnly).map_err(JobError::provider)?;
    wasi.preopened_dir(job.output_dir, "/out", FsPerms::ReadWrite).map_err(JobError::provider)?;
    let host = Host {
        wasi: wasi.build_p1(),
        limits: StoreLimitsBuilder::new().memory_size(limits.memory_bytes).instances(4).tables(8).memories(2).trap_on_grow_failure(true).build(),
    };
    let mut store = Store::new(&rt.engine, host);
    store.limiter(|h| &mut h.limits);
    store.set_fuel(limits.fuel).map_err(JobError::provider)?;
    let ticks = (limits.wall.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_trap();

    let instance = rt.linker.instantiate(&mut store, &module).map_err(|e| classify(e, limits))?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|_| JobError::job("the module exports no `_start`; build it as a WASI command (wasm32-wasip1 binary)"))?;
    let result = start.call(&mut store, ());
    let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
    let exit_code = match result {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => return Err(classify(e, limits)),
        },
    };
    drop(store);
    let take = |pipe: MemoryOutputPipe| pipe.contents().to_vec();
    let (stdout, stderr) = (take(stdout), take(stderr));
    if stdout.len() >= limits.max_output_bytes {
        return Err(JobError::job(format!("stdout reached the output limit of {} bytes", limits.max_output_bytes)));
    }
    let written = dir_size(job.output_dir).map_err(JobError::provider)?;
    if written > limits.max_output_bytes as u64 {
        return Err(JobError::job(format!(
            "the job wrote {written} bytes under /out, over its output limit of {} bytes",
            limits.max_output_bytes
        )));
    }
    Ok(WasmOutput { exit_code, stdout, stderr, fuel_used })
}

fn classify(e: wasmtime::Error, limits: &Limits) -> JobError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => JobError::job(format!("ran out of fuel after {} instructions; raise `fuel`", limits.fuel)),
        Some(Trap::Interrupt) => {
            JobError::job(format!("exceeded its wall time of {:.1} s; raise `wall_secs`", limits.wall.as_secs_f64()))
        }
        Some(trap) => JobError::job(format!("trapped: {trap}")),
        None => {
            let text = format!("{e:#}");
            if text.contains("memory") && text.contains("limit") || text.contains("forcing trap when growing memory") {
                JobError::job(format!("exceeded its memory limit of {} MiB; raise `memory_mb`", limits.memory_bytes >> 20))
            } else {
                JobError::job(format!("failed: {text}"))
            }
        }
    }
}

/// Total bytes of regular files under `dir`.
pub fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}


