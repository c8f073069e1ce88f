//! Job spec files (TOML) and their translation into the ledger's `JobSpec`.
//! The format is documented with examples in `examples/jobs/README.md`.
//!
//! Local files named in a spec travel inside the transaction when they fit
//! (`MAX_INLINE_BYTES` together); larger ones go to the storage network first
//! and the job names their content id. Everything is checked before any
//! money moves.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tessera_ledger::jobs::{EmbedJob, Input, JobKind, JobOutput, JobSpec, VectorFormat, WasmJob, MAX_INLINE_BYTES};
use tessera_ledger::market::{OrderSpec, Pricing, Resources};
use tessera_types::{Amount, Hash32};

use crate::s3::S3Url;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    kind: String,
    wasm: Option<WasmFile>,
    embed: Option<EmbedFile>,
    order: OrderFile,
    output: Option<OutputFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFile {
    /// `s3://bucket/prefix`: result files become objects `<prefix><name>`.
    s3: Option<String>,
    /// `true`: each result file is stored on the storage network under its own content id.
    #[serde(default)]
    storage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WasmFile {
    module: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    stdin: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default = "default_fuel")]
    fuel: u64,
    #[serde(default = "default_memory")]
    memory_mb: u32,
    #[serde(default = "default_wall")]
    wall_secs: u32,
    #[serde(default = "default_output")]
    max_output_mb: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbedFile {
    model_dir: Option<String>,
    model: Option<String>,
    tokenizer: Option<String>,
    config: Option<String>,
    input: String,
    #[serde(default = "default_format")]
    format: String,
    #[serde(default = "yes")]
    normalize: bool,
    #[serde(default = "default_wall")]
    wall_secs: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderFile {
    #[serde(default = "one")]
    cpu_cores: u32,
    #[serde(default = "default_ram")]
    ram_mb: u64,
    #[serde(default)]
    disk_gb: u64,
    #[serde(default)]
    gpus: u32,
    #[serde(default)]
    gpu_memory_mb: u64,
    /// TSR per block, as a decimal string ("0.01").
    max_price_per_block: String,
    #[serde(default = "default_duration")]
    duration_blocks: u64,
    #[serde(default = "default_pricing")]
    pricing: String,
    #[serde(default = "default_window")]
    bid_window_blocks: u64,
}

fn default_fuel() -> u64 {
    10_000_000_000
}
fn default_memory() -> u32 {
    256
}
fn default_wall() -> u32 {
    60
}
fn default_output() -> u32 {
    16
}
fn default_format() -> String {
    "npy".into()
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_ram() -> u64 {
    512
}
fn default_duration() -> u64 {
    240
}
fn default_pricing() -> String {
    "auction".into()
}
fn default_window() -> u64 {
    2
}

/// An input before it is placed: a local file, an object of an S3 bucket,
/// already in the storage network, or bytes known already (an empty object).
#[derive(Clone, Debug)]
pub enum Source {
    File(PathBuf),
    S3(S3Url),
    Stored { cid: String, size: u64 },
    Inline(Vec<u8>),
}

/// A parsed spec whose local inputs are not yet placed.
#[derive(Debug)]
pub struct Draft {
    pub spec: JobSpec,
    /// Inputs by their slot in the spec, in the order `place` fills them.
    pub inputs: Vec<(Slot, Source)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    Module,
    Stdin,
    File(String),
    EmbedInput,
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Module => write!(f, "module"),
            Slot::Stdin => write!(f, "stdin"),
            Slot::File(n) => write!(f, "input file {n}"),
            Slot::EmbedInput => write!(f, "input"),
        }
    }
}

fn expand(base: &Path, p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    let p = Path::new(p);
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

fn source(base: &Path, what: &str, value: &str) -> Result<Source, String> {
    if value.starts_with("s3://") {
        let url = S3Url::parse(value).map_err(|e| format!("{what}: {e}"))?;
        if url.key.is_empty() || url.key.ends_with('/') {
            return Err(format!("{what}: {value:?} names no object (s3://bucket/key)"));
        }
        return Ok(Source::S3(url));
    }
    if value.starts_with("tcid1") {
        let (cid, size) = value.split_once(':').ok_or_else(|| {
            format!("{what}: a content id needs its size in bytes, as \"{value}:SIZE\" (see `tessera storage status`)")
        })?;
        let size = size.parse().map_err(|_| format!("{what}: {size:?} is not a size in bytes"))?;
        return Ok(Source::Stored { cid: cid.to_string(), size });
    }
    let path = expand(base, value);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{what}: {} is not a file", path.display()));
    }
    Ok(Source::File(path))
}

fn hash_of(path: &Path) -> Result<Hash32, String> {
    let read = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    Ok(Hash32::blake3_reader(std::fs::File::open(path).map_err(read)?).map_err(read)?.0)
}

/// The hash of one model file: named in the spec, taken from `model_dir`, or
/// both, in which case they must agree.
fn model_hash(what: &str, named: Option<&str>, dir: Option<&Path>, file: &str) -> Result<Hash32, String> {
    let local = match dir {
        Some(d) => Some(hash_of(&d.join(file))?),
        None => None,
    };
    match (named, local) {
        (Some(n), Some(l)) => {
            let n: Hash32 = n.parse().map_err(|e| format!("embed.{what}: {e}"))?;
            if n != l {
                return Err(format!(
                    "embed.{what} is {n}, but {} hashes to {l}: the spec names a different model file than model_dir holds",
                    dir.unwrap().join(file).display()
                ));
            }
            Ok(n)
        }
        (Some(n), None) => n.parse().map_err(|e| format!("embed.{what}: {e}")),
        (None, Some(l)) => Ok(l),
        (None, None) => Err(format!("embed.{what}: give the blake3 of {file} or a model_dir holding it")),
    }
}

/// Reads and checks a spec file. Paths in it are relative to its directory.
pub fn parse(path: &Path) -> Result<Draft, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_str(&text, base).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn parse_str(text: &str, base: &Path) -> Result<Draft, String> {
    let f: SpecFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let o = &f.order;
    let pricing = match o.pricing.as_str() {
        "auction" => Pricing::Auction,
        "fixed" => Pricing::Fixed,
        other => return Err(format!("order.pricing {other:?}: use \"auction\" or \"fixed\"")),
    };
    let max_price = Amount::parse_positive_tsr(&o.max_price_per_block)
        .map_err(|e| format!("order.max_price_per_block {:?}: {e}", o.max_price_per_block))?;
    let order = OrderSpec {
        resources: Resources {
            cpu_cores: o.cpu_cores,
            ram_mb: o.ram_mb,
            disk_gb: o.disk_gb,
            gpus: o.gpus,
            gpu_memory_mb: o.gpu_memory_mb,
        },
        max_price_per_block: max_price,
        duration_blocks: o.duration_blocks,
        bid_window_blocks: o.bid_window_blocks,
        pricing,
    };
    let placeholder = || Input::Inline(Vec::new());
    let mut inputs = Vec::new();
    let kind = match f.kind.as_str() {
        "wasm" => {
            let w = f.wasm.ok_or("kind = \"wasm\" needs a [wasm] table")?;
            if f.embed.is_some() {
                return Err("a wasm job has no [embed] table".into());
            }
            inputs.push((Slot::Module, source(base, "wasm.module", &w.module)?));
            if let Some(s) = &w.stdin {
                inputs.push((Slot::Stdin, source(base, "wasm.stdin", s)?));
            }
            for (name, value) in &w.files {
                tessera_ledger::jobs::check_file_name(name).map_err(|e| format!("wasm.files: {e}"))?;
                inputs.push((Slot::File(name.clone()), source(base, &format!("wasm.files.{name}"), value)?));
            }
            JobKind::Wasm(WasmJob {
                module: placeholder(),
                args: w.args,
                env: w.env.into_iter().collect(),
                stdin: w.stdin.as_ref().map(|_| placeholder()),
                files: w.files.keys().map(|n| (n.clone(), placeholder())).collect(),
                fuel: w.fuel,
                memory_mb: w.memory_mb,
                wall_secs: w.wall_secs,
                max_output_mb: w.max_output_mb,
            })
        }
        "embed" => {
            let e = f.embed.ok_or("kind = \"embed\" needs an [embed] table")?;
            if f.wasm.is_some() {
                return Err("an embed job has no [wasm] table".into());
            }
            let dir = e.model_dir.as_deref().map(|d| expand(base, d));
            if let Some(d) = &dir
                && !d.is_dir()
            {
                return Err(format!("embed.model_dir {} is not a directory (scripts/fetch-model.sh fetches the model)", d.display()));
            }
            let model = model_hash("model", e.model.as_deref(), dir.as_deref(), "model.safetensors")?;
            let tokenizer = model_hash("tokenizer", e.tokenizer.as_deref(), dir.as_deref(), "tokenizer.json")?;
            let config = model_hash("config", e.config.as_deref(), dir.as_deref(), "config.json")?;
            let format = match e.format.as_str() {
                "npy" => VectorFormat::Npy,
                "json" => VectorFormat::Json,
                other => return Err(format!("embed.format {other:?}: use \"npy\" or \"json\"")),
            };
            inputs.push((Slot::EmbedInput, source(base, "embed.input", &e.input)?));
            JobKind::Embed(EmbedJob {
                model,
                tokenizer,
                config,
                input: placeholder(),
                format,
                normalize: e.normalize,
                wall_secs: e.wall_secs,
            })
        }
        other => return Err(format!("kind {other:?}: use \"wasm\" or \"embed\"")),
    };
    if let Some(Source::File(p)) = inputs.iter().find(|(s, _)| *s == Slot::Module).map(|(_, s)| s) {
        let mut head = [0u8; 4];
        use std::io::Read;
        let n = std::fs::File::open(p).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
        if n < 4 || &head != b"\0asm" {
            return Err(format!(
                "wasm.module {} is not a WebAssembly module (no \\0asm header); build it with --target wasm32-wasip1",
                p.display()
            ));
        }
    }
    let output = match f.output {
        Some(OutputFile { s3: Some(_), storage: true }) => {
            return Err("[output] names s3 or storage = true, not both".into());
        }
        Some(OutputFile { s3: Some(s3), storage: false }) => {
            let url = S3Url::parse(&s3).map_err(|e| format!("output.s3: {e}"))?;
            Some(JobOutput::S3 { bucket: url.bucket, prefix: url.key })
        }
        Some(OutputFile { s3: None, storage: true }) => Some(JobOutput::Storage),
        Some(OutputFile { s3: None, storage: false }) => {
            return Err("[output] needs s3 = \"s3://bucket/prefix/\" or storage = true".into());
        }
        None => None,
    };
    let spec = JobSpec { name: f.name, kind, order, output };
    let draft = Draft { spec, inputs };
    // Everything but the inputs is checked now.
    let mut probe = draft.spec.clone();
    fill(&mut probe, &Slot::Module, Input::Inline(b"\0asm".to_vec()));
    probe.validate().map_err(|e| e.to_string())?;
    tessera_ledger::market::MarketMsg::CreateOrder { spec: probe.order.clone() }.validate_basic().map_err(|e| e.to_string())?;
    Ok(draft)
}

fn fill(spec: &mut JobSpec, slot: &Slot, input: Input) {
    match (&mut spec.kind, slot) {
        (JobKind::Wasm(w), Slot::Module) => w.module = input,
        (JobKind::Wasm(w), Slot::Stdin) => w.stdin = Some(input),
        (JobKind::Wasm(w), Slot::File(name)) => {
            if let Some((_, i)) = w.files.iter_mut().find(|(n, _)| n == name) {
                *i = input;
            }
        }
        (JobKind::Embed(e), Slot::EmbedInput) => e.input = input,
        _ => {}
    }
}

impl Draft {
    /// The S3 objects the spec reads, with their slots.
    pub fn s3_inputs(&self) -> Vec<(Slot, S3Url)> {
        self.inputs
            .iter()
            .filter_map(|(slot, s)| match s {
                Source::S3(url) => Some((slot.clone(), url.clone())),
                _ => None,
            })
            .collect()
    }

    /// Replaces the S3 input of `slot` by where the object is stored.
    pub fn resolve_s3(&mut self, slot: &Slot, cid: Option<String>, size: u64) {
        for (s, source) in &mut self.inputs {
            if s == slot {
                *source = match &cid {
                    Some(cid) => Source::Stored { cid: cid.clone(), size },
                    // An empty object has no content: it travels inline.
                    None => Source::Inline(Vec::new()),
                };
            }
        }
    }

    /// Local files that will not fit inline and must be stored first, largest first.
    pub fn to_store(&self) -> Result<Vec<(Slot, PathBuf, u64)>, String> {
        let mut local = Vec::new();
        for (slot, s) in &self.inputs {
            if let Source::File(p) = s {
                let size = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?.len();
                local.push((slot.clone(), p.clone(), size));
            }
        }
        local.sort_by_key(|l| std::cmp::Reverse(l.2));
        let mut inline: u64 = local.iter().map(|l| l.2).sum();
        let mut out = Vec::new();
        for l in local {
            if inline <= MAX_INLINE_BYTES as u64 {
                break;
            }
            inline -= l.2;
            out.push(l);
        }
        Ok(out)
    }

    /// The finished spec: `stored` gives the content id and size of each slot
    /// that went to the storage network; every other local file is inlined.
    pub fn place(mut self, stored: &[(Slot, String, u64)]) -> Result<JobSpec, String> {
        for (slot, s) in std::mem::take(&mut self.inputs) {
            let input = match (stored.iter().find(|(st, _, _)| *st == slot), s) {
                (Some((_, cid, size)), _) => Input::Stored { cid: cid.clone(), size: *size },
                (None, Source::Stored { cid, size }) => Input::Stored { cid, size },
                (None, Source::Inline(bytes)) => Input::Inline(bytes),
                (None, Source::S3(url)) => return Err(format!("{slot}: {url} was not resolved to a content id")),
                (None, Source::File(p)) => Input::Inline(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?),
            };
            fill(&mut self.spec, &slot, input);
        }
        self.spec.validate().map_err(|e| e.to_string())?;
        Ok(self.spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (n, b) in files {
            std::fs::write(d.path().join(n), b).unwrap();
        }
        d
    }

    const ORDER: &str = "[order]\nmax_price_per_block = \"0.01\"\n";

    #[test]
    fn wasm_spec_inlines_small_files_and_stores_large_ones() {
        let big = vec![7u8; 60 * 1024];
        let d = dir_with(&[("m.wasm", b"\0asm\x01\0\0\0"), ("a.txt", b"hello"), ("big.bin", &big)]);
        let text = format!(
            "name = \"t\"\nkind = \"wasm\"\n[wasm]\nmodule = \"m.wasm\"\nargs = [\"a.txt\"]\nfiles = {{ \"a.txt\" = \"a.txt\", \"big.bin\" = \"big.bin\" }}\n{ORDER}"
        );
        let draft = parse_str(&text, d.path()).unwrap();
        let store = draft.to_store().unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store[0].0, Slot::File("big.bin".into()));
        let spec = draft.place(&[(Slot::File("big.bin".into()), "tcid1abc".into(), 61440)]).unwrap();
        let JobKind::Wasm(w) = spec.kind else { panic!() };
        assert_eq!(w.files[0], ("a.txt".to_string(), Input::Inline(b"hello".to_vec())));
        assert_eq!(w.files[1].1, Input::Stored { cid: "tcid1abc".into(), size: 61440 });
        assert_eq!(spec.order.pricing, Pricing::Auction);
        assert_eq!(spec.order.max_price_per_block, Amount::from_micro(10_000));
    }

    #[test]
    fn bad_specs_say_what_to_fix() {
        let d = dir_with(&[("m.wasm", b"\0asm\x01\0\0\0"), ("x.sh", b"#!/bin/sh")]);
        let err = |text: String| parse_str(&text, d.path()).unwrap_err();
        assert!(err(format!("name = \"t\"\nkind = \"wasm\"\n[wasm]\nmodule = \"x.sh\"\n{ORDER}")).contains("not a WebAssembly module"));
        assert!(err(format!("name = \"t\"\nkind = \"wasm\"\n[wasm]\nmodule = \"nope.wasm\"\n{ORDER}")).contains("cannot read"));
        assert!(err(format!("name = \"t\"\nkind = \"gpu\"\n{ORDER}")).contains("use \"wasm\" or \"embed\""));
        assert!(err(format!("name = \"t\"\nkind = \"wasm\"\n[wasm]\nmodule = \"m.wasm\"\nfuel = 0\n{ORDER}")).contains("fuel"));
        assert!(err("name = \"t\"\nkind = \"wasm\"\n[wasm]\nmodule = \"m.wasm\"\n[order]\nmax_price_per_block = \"0\"\n".into()).contains("max_price"));
        assert!(err(format!("name = \"t\"\nkind = \"wasm\"\nbogus = 1\n[wasm]\nmodule = \"m.wasm\"\n{ORDER}")).contains("bogus"));
    }

    #[test]
    fn s3_inputs_resolve_to_content_ids_and_outputs_name_a_bucket() {
        let d = dir_with(&[("m.wasm", b"\0asm\x01\0\0\0")]);
        let text = |files: &str, out: &str| {
            format!("name = \"t\"\nkind = \"wasm\"\n[wasm]\nmodule = \"m.wasm\"\nfiles = {{ {files} }}\n[output]\ns3 = \"{out}\"\n{ORDER}")
        };
        let mut draft = parse_str(&text("\"in.txt\" = \"s3://data/corpus/in.txt\", \"e\" = \"s3://data/empty\"", "s3://results/run1/"), d.path()).unwrap();
        let inputs = draft.s3_inputs();
        assert_eq!(inputs[1], (Slot::File("in.txt".into()), S3Url { bucket: "data".into(), key: "corpus/in.txt".into() }));
        assert_eq!(draft.spec.output, Some(JobOutput::S3 { bucket: "results".into(), prefix: "run1/".into() }));
        draft.resolve_s3(&Slot::File("in.txt".into()), Some("tcid1xyz".into()), 42);
        let unresolved = parse_str(&text("\"in.txt\" = \"s3://data/in.txt\"", "s3://results/"), d.path()).unwrap();
        assert!(unresolved.place(&[]).unwrap_err().contains("not resolved"));
        draft.resolve_s3(&Slot::File("e".into()), None, 0);
        let spec = draft.place(&[]).unwrap();
        let JobKind::Wasm(w) = spec.kind else { panic!() };
        assert_eq!(w.files[0], ("e".to_string(), Input::Inline(Vec::new())));
        assert_eq!(w.files[1].1, Input::Stored { cid: "tcid1xyz".into(), size: 42 });
        let err = |files: &str, out: &str| parse_str(&text(files, out), d.path()).unwrap_err();
        assert!(err("\"a\" = \"s3://data/dir/\"", "s3://results/").contains("names no object"));
        assert!(err("\"a\" = \"s3://Data/x\"", "s3://results/").contains("bucket name"));
        assert!(err("\"a\" = \"s3://data/x\"", "results/").contains("output.s3"));
        // Content ids on the storage network instead of a bucket; one or the other.
        let storage = |out: &str| parse_str(&format!("name = \"t\"\nkind = \"wasm\"\n[wasm]\nmodule = \"m.wasm\"\n[output]\n{out}\n{ORDER}"), d.path());
        assert_eq!(storage("storage = true").unwrap().spec.output, Some(JobOutput::Storage));
        assert!(storage("storage = true\ns3 = \"s3://results/\"").unwrap_err().contains("not both"));
        assert!(storage("storage = false").unwrap_err().contains("storage = true"));
    }

    #[test]
    fn embed_model_hashes_must_match_the_local_copy() {
        let d = dir_with(&[("model.safetensors", b"weights"), ("tokenizer.json", b"{}"), ("config.json", b"{}"), ("s.txt", b"hi\n")]);
        let ok = format!("name = \"e\"\nkind = \"embed\"\n[embed]\nmodel_dir = \".\"\ninput = \"s.txt\"\n{ORDER}");
        let draft = parse_str(&ok, d.path()).unwrap();
        let JobKind::Embed(e) = &draft.spec.kind else { panic!() };
        assert_eq!(e.model, Hash32::blake3(b"weights"));
        let wrong = format!(
            "name = \"e\"\nkind = \"embed\"\n[embed]\nmodel_dir = \".\"\nmodel = \"{}\"\ninput = \"s.txt\"\n{ORDER}",
            Hash32::blake3(b"other")
        );
        assert!(parse_str(&wrong, d.path()).unwrap_err().contains("different model file"));
    }
}
