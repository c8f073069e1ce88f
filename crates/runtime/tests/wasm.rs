//! The WebAssembly sandbox with the example job programs (examples/jobs).

use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_runtime::wasm::{run, Limits, WasmRun};
use tessera_runtime::JobError;

fn example(name: &str) -> Vec<u8> {
    let p = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("../../examples/jobs").join(format!("{name}.wasm"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-examples.sh)", p.display()))
}

fn limits() -> Limits {
    Limits { fuel: 2_000_000_000, memory_bytes: 64 << 20, wall: Duration::from_secs(20), max_output_bytes: 1 << 20 }
}

struct Dirs {
    _tmp: tempfile::TempDir,
    input: PathBuf,
    output: PathBuf,
}

fn dirs(files: &[(&str, &[u8])]) -> Dirs {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let output = tmp.path().join("out");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&output).unwrap();
    for (name, bytes) in files {
        std::fs::write(input.join(name), bytes).unwrap();
    }
    Dirs { _tmp: tmp, input, output }
}

fn go(module: &[u8], args: &[&str], d: &Dirs, limits: Limits) -> Result<tessera_runtime::wasm::WasmOutput, JobError> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run(WasmRun { module, args: &args, env: &[], stdin: Vec::new(), input_dir: &d.input, output_dir: &d.output, limits })
}

#[test]
fn wordcount_reads_in_and_writes_out() {
    let d = dirs(&[("a.txt", b"the cat and the hat\nthe end\n")]);
    let out = go(&example("wordcount"), &["a.txt"], &d, limits()).unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "       2        7       28 a.txt\n");
    assert_eq!(std::fs::read_to_string(d.output.join("top.txt")).unwrap().lines().next(), Some("3 the"));
    assert!(out.fuel_used > 0);
}

#[test]
fn montecarlo_is_deterministic() {
    let d = dirs(&[]);
    let a = go(&example("montecarlo"), &["100000", "7"], &d, limits()).unwrap();
    let b = go(&example("montecarlo"), &["100000", "7"], &d, limits()).unwrap();
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    let pi: f64 = text.lines().last().unwrap().trim_start_matches("pi ").parse().unwrap();
    assert!((pi - std::f64::consts::PI).abs() < 0.02, "{text}");
}

#[test]
fn nothing_outside_in_is_readable() {
    let d = dirs(&[]);
    let out = go(&example("wordcount"), &["../../etc/passwd"], &d, limits()).unwrap();
    assert_eq!(out.exit_code, 2, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn fuel_wall_time_and_memory_limits_stop_a_job_with_a_reason() {
    let d = dirs(&[]);
    let err = go(&example("spin"), &[], &d, Limits { fuel: 10_000_000, ..limits() }).unwrap_err();
    assert!(err.to_string().contains("ran out of fuel"), "{err}");
    let err = go(&example("spin"), &[], &d, Limits { fuel: u64::MAX / 2, wall: Duration::from_millis(300), ..limits() }).unwrap_err();
    assert!(err.to_string().contains("wall time"), "{err}");
    let grow = br#"(module (memory (export "memory") 1)
             (func (export "_start") (drop (memory.grow (i32.const 2000)))))"#;
    let err = go(grow, &[], &d, limits()).unwrap_err();
    assert!(err.to_string().contains("memory limit"), "{err}");
}

#[test]
fn not_webassembly_and_no_start_are_clear_errors() {
    let d = dirs(&[]);
    let err = go(b"#!/bin/sh\necho hi\n", &[], &d, limits()).unwrap_err();
    assert!(err.to_string().contains("does not compile"), "{err}");
    let err = go(b"(module (func (export \"f\")))", &[], &d, limits()).unwrap_err();
    assert!(err.to_string().contains("_start"), "{err}");
}
