//! Runs jobs leased to this provider: fetches their inputs, runs them in the
//! sandbox their kind needs, files what they produced in the result store, and
//! builds the report the ledger settles on.
//!
//! A run works in a scratch slot, `<data>/jobs/work/<n>/` with `in/` and
//! `out/`, kept and emptied between runs rather than created and deleted
//! for each. While it runs, its phase and log are kept in memory (and served
//! from there); when it ends, its outcome, its log and its small result files
//! go into the run book in one durable commit, so a restarted provider reports
//! a finished job instead of running it again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_client::jobs::{ResultFile, ResultManifest};
use tessera_client::Client;
use tessera_ledger::jobs::{EmbedJob, Input, JobKind, JobSpec, Outcome, VectorFormat, WasmJob};
use tessera_runtime::embed::{self, Embedder};
use tessera_runtime::models::ModelCache;
use tessera_runtime::{wasm, JobError};

use crate::book::Record;
use crate::results::ResultStore;

pub struct Executor {
    pub dir: PathBuf,
    pub results: Arc<ResultStore>,
    pub models: Arc<ModelCache>,
    pub rpc: String,
    /// Loaded models, by (model, tokenizer, config) hash; the last one stays loaded.
    embedder: Mutex<Option<(String, Arc<Embedder>)>>,
    /// Runs in progress: phase and log so far.
    live: Mutex<HashMap<u64, Live>>,
    /// Scratch slots not in use.
    slots: Mutex<Vec<PathBuf>>,
    slot_count: std::sync::atomic::AtomicUsize,
}

struct Live {
    phase: String,
    log: Vec<u8>,
}

/// Longest log kept for one run; later lines are dropped with a note.
const MAX_LOG: usize = 1 << 20;

/// How a run ended, as saved in the run book.
#[derive(serde::Serialize, serde::Deserialize)]
enum Saved {
    Succeeded { result: tessera_types::Hash32, size: u64 },
    Failed { reason: String },
    /// This provider cannot run it; the lease is handed back so the job moves on.
    Refused { reason: String },
}

impl Saved {
    fn phase(&self) -> String {
        match self {
            Saved::Succeeded { .. } => "done".into(),
            Saved::Failed { reason } => format!("failed: {reason}"),
            Saved::Refused { reason } => format!("handed back: {reason}"),
        }
    }
}

/// What the agent does with a finished run.
pub enum Verdict {
    Report(Outcome),
    HandBack(String),
}

/// Empties a directory, leaving it in place.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

impl Executor {
    pub fn new(dir: PathBuf, results: Arc<ResultStore>, models: Arc<ModelCache>, rpc: String) -> std::io::Result<Executor> {
        // Scratch left by a run a crash cut short: that run starts over.
        let _ = std::fs::remove_dir_all(dir.join("work"));
        std::fs::create_dir_all(dir.join("work"))?;
        Ok(Executor {
            dir,
            results,
            models,
            rpc,
            embedder: Mutex::new(None),
            live: Mutex::new(HashMap::new()),
            slots: Mutex::new(Vec::new()),
            slot_count: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// What the job is doing now, or how its latest run here ended.
    pub fn phase(&self, job: u64) -> Option<String> {
        if let Some(l) = self.live.lock().unwrap_or_else(|p| p.into_inner()).get(&job) {
            return Some(l.phase.clone());
        }
        let saved = self.results.book().last_outcome(job).ok()??;
        Some(serde_json::from_slice::<Saved>(&saved).ok()?.phase())
    }

    /// The job's log: the run in progress, or every finished run here.
    pub fn log_text(&self, job: u64) -> Option<Vec<u8>> {
        let earlier = self.results.book().log(job).ok().flatten();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner()).get(&job).map(|l| l.log.clone());
        match (earlier, live) {
            (Some(mut e), Some(l)) => {
                e.extend_from_slice(&l);
                Some(e)
            }
            (e, l) => e.or(l),
        }
    }

    fn set_phase(&self, job: u64, phase: &str) {
        if let Some(l) = self.live.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&job) {
            l.phase = phase.to_string();
        }
        self.log(job, phase);
    }

    fn log(&self, job: u64, line: &str) {
        self.log_bytes(job, format!("[provider] {line}\n").as_bytes());
    }

    fn log_bytes(&self, job: u64, bytes: &[u8]) {
        if let Some(l) = self.live.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&job) {
            if l.log.len() + bytes.len() <= MAX_LOG {
                l.log.extend_from_slice(bytes);
            } else if l.log.len() < MAX_LOG {
                l.log.extend_from_slice(b"[provider] (log limit reached; later lines dropped)\n");
                l.log.resize(MAX_LOG, b' ');
            }
        }
    }

    /// A scratch slot with empty `in/` and `out/`.
    fn take_slot(&self) -> std::io::Result<PathBuf> {
        let reused = self.slots.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let slot = match reused {
            Some(s) => s,
            None => {
                let n = self.slot_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let s = self.dir.join("work").join(n.to_string());
                std::fs::create_dir_all(s.join("in"))?;
                std::fs::create_dir_all(s.join("out"))?;
                s
            }
        };
        Ok(slot)
    }

    /// Empties a slot and returns it to the pool (a slot that cannot be emptied is dropped).
    fn give_slot(&self, slot: PathBuf) {
        let cleared = empty_dir(&slot.join("in")).and_then(|_| empty_dir(&slot.join("out")));
        for name in ["module.wasm", "stdin"] {
            let _ = std::fs::remove_file(slot.join(name));
        }
        match cleared {
            Ok(()) => self.slots.lock().unwrap_or_else(|p| p.into_inner()).push(slot),
            Err(_) => {
                let _ = std::fs::remove_dir_all(&slot);
            }
        }
    }

    /// Runs a job to its verdict, or returns the saved verdict of an earlier run.
    pub fn run(&self, job: u64, lease: u64, spec: &JobSpec) -> Verdict {
        let book = self.results.book().clone();
        if let Some(saved) = book.outcome(job, lease).ok().flatten().and_then(|b| serde_json::from_slice::<Saved>(&b).ok()) {
            return verdict(saved);
        }
        let slot = match self.take_slot() {
            Ok(s) => s,
            Err(e) => return Verdict::HandBack(format!("cannot prepare a scratch directory under {}: {e}", self.dir.display())),
        };
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(job, Live { phase: "starting".into(), log: Vec::new() });
        self.log(job, &format!("lease {lease}: {} job {:?}", spec.kind.name(), spec.name));
        let started = Instant::now();
        let mut records = Vec::new();
        let result = match &spec.kind {
            JobKind::Wasm(w) => self.run_wasm(job, &slot, w, &mut records),
            JobKind::Embed(e) => self.run_embed(job, &slot, e, &mut records),
        };
        let saved = match result {
            Ok((manifest_hash, size)) => {
                self.set_phase(job, "done");
                self.log(job, &format!("finished in {:.2} s; result {manifest_hash} ({size} bytes)", started.elapsed().as_secs_f64()));
                Saved::Succeeded { result: manifest_hash, size }
            }
            Err(JobError::Job(reason)) => {
                self.set_phase(job, &format!("failed: {reason}"));
                records.clear();
                Saved::Failed { reason }
            }
            Err(JobError::Provider(reason)) => {
                self.set_phase(job, &format!("handed back: {reason}"));
                records.clear();
                Saved::Refused { reason }
            }
        };
        self.give_slot(slot);
        let log = self.live.lock().unwrap_or_else(|p| p.into_inner()).get(&job).map(|l| l.log.clone()).unwrap_or_default();
        records.push(Record::Log { job, text: log });
        records.push(Record::Outcome { job, lease, saved: serde_json::to_vec(&saved).expect("outcome serialises") });
        let committed = book.commit(records);
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&job);
        if let Err(e) = committed {
            // The result is not safely stored: do not commit to it on the ledger.
            return Verdict::HandBack(format!("cannot record the run: {e}"));
        }
        verdict(saved)
    }

    /// An input in memory: inline bytes as they are, a stored one through `scratch`.
    fn input_bytes(&self, job: u64, what: &str, input: &Input, scratch: &Path) -> Result<Vec<u8>, JobError> {
        if let Input::Inline(bytes) = input {
            return Ok(bytes.clone());
        }
        self.input(job, what, input, scratch)?;
        let bytes = std::fs::read(scratch).map_err(JobError::provider)?;
        let _ = std::fs::remove_file(scratch);
        Ok(bytes)
    }

    /// Bytes of an input: inline, or fetched from the storage network (each piece hash-checked).
    fn input(&self, job: u64, what: &str, input: &Input, dest: &Path) -> Result<(), JobError> {
        match input {
            Input::Inline(bytes) => std::fs::write(dest, bytes).map_err(JobError::provider),
            Input::Stored { cid, size } => {
                self.log(job, &format!("fetching {what} {cid} ({size} bytes) from the storage network"));
                let parsed: tessera_storage::Cid = cid.parse().map_err(JobError::job)?;
                let client = Client::new(&self.rpc);
                let got = tessera_client::storage::get(&client, &parsed, dest, &mut |_, _, _| {})
                    .map_err(|e| JobError::job(format!("{what} {cid} cannot be fetched: {e:#}")))?;
                if got != *size {
                    return Err(JobError::job(format!("{what} {cid} holds {got} bytes, not the {size} the spec says")));
                }
                Ok(())
            }
        }
    }

    fn run_wasm(&self, job: u64, dir: &Path, w: &WasmJob, records: &mut Vec<Record>) -> Result<(tessera_types::Hash32, u64), JobError> {
        self.set_phase(job, "fetching inputs");
        let module = self.input_bytes(job, "module", &w.module, &dir.join("module.wasm"))?;
        for (name, input) in &w.files {
            self.input(job, &format!("input file {name}"), input, &dir.join("in").join(name))?;
        }
        let stdin = match &w.stdin {
            Some(input) => self.input_bytes(job, "stdin", input, &dir.join("stdin"))?,
            None => Vec::new(),
        };
        self.set_phase(job, "running");
        let limits = wasm::Limits {
            fuel: w.fuel,
            memory_bytes: (w.memory_mb as usize) << 20,
            wall: Duration::from_secs(w.wall_secs as u64),
            max_output_bytes: (w.max_output_mb as usize) << 20,
        };
        let out = wasm::run(wasm::WasmRun {
            module: &module,
            args: &w.args,
            env: &w.env,
            stdin,
            input_dir: &dir.join("in"),
            output_dir: &dir.join("out"),
            limits,
        });
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                self.log(job, &e.to_string());
                return Err(e);
            }
        };
        self.log_bytes(job, &out.stderr);
        self.log(job, &format!("exit status {}, {} instructions", out.exit_code, out.fuel_used));
        if out.exit_code != 0 {
            let tail = String::from_utf8_lossy(&out.stderr);
            let tail: String = tail.chars().rev().take(300).collect::<Vec<_>>().into_iter().rev().collect();
            return Err(JobError::job(format!("exited with status {}: {}", out.exit_code, tail.trim())));
        }
        let mut files = vec![self.file("stdout", &out.stdout, records)?, self.file("stderr", &out.stderr, records)?];
        let mut outputs = Vec::new();
        collect_files(&dir.join("out"), &dir.join("out"), &mut outputs).map_err(JobError::provider)?;
        outputs.sort();
        for (name, path) in outputs {
            let (hash, size) = self.results.stage_file(&path, records).map_err(JobError::provider)?;
            files.push(ResultFile { name: format!("out/{name}"), hash, size });
        }
        self.manifest(ResultManifest { job, kind: "wasm".into(), exit_code: 0, work: out.fuel_used, files }, records)
    }

    fn run_embed(&self, job: u64, dir: &Path, e: &EmbedJob, records: &mut Vec<Record>) -> Result<(tessera_types::Hash32, u64), JobError> {
        self.set_phase(job, "fetching model");
        let model = self.models.get(&e.model.to_string())?;
        let tokenizer = self.models.get(&e.tokenizer.to_string())?;
        let config = self.models.get(&e.config.to_string())?;
        self.set_phase(job, "fetching inputs");
        let input_path = dir.join("in").join("sentences.txt");
        self.input(job, "input", &e.input, &input_path)?;
        let text = std::fs::read_to_string(&input_path).map_err(|_| JobError::job("the input is not UTF-8 text"))?;
        let sentences = embed::sentences(&text);
        if sentences.is_empty() {
            return Err(JobError::job("the input holds no sentences (one per line)"));
        }
        self.set_phase(job, "loading model");
        let embedder = self.embedder(&format!("{}{}{}", e.model, e.tokenizer, e.config), &model, &tokenizer, &config)?;
        self.set_phase(job, "running");
        let vectors = embedder.embed(&sentences, e.normalize)?;
        self.log(job, &format!("embedded {} sentences into {} dimensions", vectors.len(), embedder.dimensions));
        let (name, bytes) = match e.format {
            VectorFormat::Npy => ("vectors.npy", embed::to_npy(&vectors, embedder.dimensions)),
            VectorFormat::Json => ("vectors.json", embed::to_json(&vectors, embedder.dimensions, &e.model.to_string())),
        };
        let files = vec![self.file(name, &bytes, records)?];
        self.manifest(ResultManifest { job, kind: "embed".into(), exit_code: 0, work: vectors.len() as u64, files }, records)
    }

    fn embedder(&self, key: &str, model: &Path, tokenizer: &Path, config: &Path) -> Result<Arc<Embedder>, JobError> {
        let mut slot = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((k, e)) = slot.as_ref()
            && k == key
        {
            return Ok(e.clone());
        }
        let e = Arc::new(Embedder::load(model, tokenizer, config, embed::device())?);
        *slot = Some((key.to_string(), e.clone()));
        Ok(e)
    }

    fn file(&self, name: &str, bytes: &[u8], records: &mut Vec<Record>) -> Result<ResultFile, JobError> {
        let hash = self.results.stage(bytes, records).map_err(JobError::provider)?;
        Ok(ResultFile { name: name.to_string(), hash, size: bytes.len() as u64 })
    }

    fn manifest(&self, m: ResultManifest, records: &mut Vec<Record>) -> Result<(tessera_types::Hash32, u64), JobError> {
        let bytes = m.encode();
        let hash = self.results.stage(&bytes, records).map_err(JobError::provider)?;
        Ok((hash, m.total_size(bytes.len())))
    }
}

fn verdict(saved: Saved) -> Verdict {
    match saved {
        Saved::Succeeded { result, size } => Verdict::Report(Outcome::Succeeded { result, size }),
        Saved::Failed { reason } => Verdict::Report(Outcome::Failed { reason: clip(&reason) }),
        Saved::Refused { reason } => Verdict::HandBack(reason),
    }
}

/// Failure reasons go on the ledger: at most 1,000 bytes, no control characters.
fn clip(reason: &str) -> String {
    let mut s: String = reason.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.len() > 1000 {
        let mut cut = 1000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    if s.is_empty() { "failed".into() } else { s }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else if entry.file_type()?.is_file() {
            let name = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().to_string();
            out.push((name, path));
        }
    }
    Ok(())
}
