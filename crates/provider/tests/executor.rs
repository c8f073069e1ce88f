//! The job executor: results filed by hash, failures with reasons, and a
//! finished job reported again (not re-run) after a restart.

use std::path::Path;
use std::sync::Arc;
use tessera_client::jobs::ResultManifest;
use tessera_ledger::jobs::{Input, JobKind, JobSpec, Outcome, WasmJob};
use tessera_ledger::market::{OrderSpec, Pricing, Resources};
use tessera_provider::executor::{Executor, Verdict};
use tessera_provider::results::{ResultStore, Stored};
use tessera_runtime::models::ModelCache;
use tessera_types::{Amount, Hash32};

fn spec(module: &str, args: &[&str], fuel: u64) -> JobSpec {
    let bytes = std::fs::read(Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("../../examples/jobs").join(module)).unwrap();
    JobSpec {
        name: "t".into(),
        kind: JobKind::Wasm(WasmJob {
            module: Input::Inline(bytes),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            stdin: None,
            files: vec![],
            fuel,
            memory_mb: 32,
            wall_secs: 20,
            max_output_mb: 1,
        }),
        order: OrderSpec {
            resources: Resources { cpu_cores: 1, ..Resources::default() },
            max_price_per_block: Amount::from_micro(1),
            duration_blocks: 10,
            bid_window_blocks: 1,
            pricing: Pricing::Fixed,
        },
        output: None,
    }
}

fn executor(dir: &Path) -> Executor {
    let results = Arc::new(ResultStore::open(&dir.join("results")).unwrap());
    let models = Arc::new(ModelCache::new(dir.join("models"), vec![]).unwrap());
    Executor::new(dir.join("jobs"), results, models, "http://127.0.0.1:9".into()).unwrap()
}

#[test]
fn results_are_filed_by_hash_and_a_restart_reports_without_rerunning() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let Verdict::Report(Outcome::Succeeded { result, size }) = ex.run(1, 1, &spec("montecarlo.wasm", &["1000", "3"], 1 << 32)) else {
        panic!("montecarlo should succeed")
    };
    let read = |hash: &Hash32| match ex.results.checked(hash).unwrap().expect("stored") {
        Stored::Inline(bytes) => bytes,
        Stored::File(path) => std::fs::read(path).unwrap(),
    };
    let manifest_bytes = read(&result);
    assert_eq!(Hash32::blake3(&manifest_bytes), result);
    let m: ResultManifest = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(m.total_size(manifest_bytes.len()), size);
    let stdout = m.files.iter().find(|f| f.name == "stdout").unwrap();
    let text = String::from_utf8(read(&stdout.hash)).unwrap();
    assert!(text.starts_with("samples 1000\n"), "{text}");
    assert_eq!(ex.phase(1).as_deref(), Some("done"));

    // A new process over the same data dir: the saved outcome is reported as is,
    // even though the module would now fail (no fuel).
    drop(ex);
    let again = executor(dir.path());
    assert_eq!(again.phase(1).as_deref(), Some("done"));
    let Verdict::Report(Outcome::Succeeded { result: r2, .. }) = again.run(1, 1, &spec("montecarlo.wasm", &["1000", "3"], 1)) else {
        panic!("the saved outcome should be reported")
    };
    assert_eq!(r2, result);
}

#[test]
fn a_broken_limit_is_reported_as_a_failure_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let Verdict::Report(Outcome::Failed { reason }) = ex.run(2, 5, &spec("spin.wasm", &[], 1_000_000)) else { panic!() };
    assert!(reason.contains("ran out of fuel"), "{reason}");
    let log = String::from_utf8(ex.log_text(2).unwrap()).unwrap();
    assert!(log.contains("ran out of fuel"), "{log}");
}
