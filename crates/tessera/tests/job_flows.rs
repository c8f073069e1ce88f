//! Jobs end to end against a real devnet with three provider agents: a wasm job
//! and an embedding job checked byte for byte, balances against lease prices,
//! limits, bad input refused before money moves, and a provider killed mid-job.

mod support;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use std::path::{Path, PathBuf};
use support::*;
use tessera_client::api::{JobDto, LeaseDto, ProviderDto};
use tessera_types::{Address, Amount};

fn examples() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("../../examples/jobs")
}

fn model_dir() -> PathBuf {
    let dir = tessera_runtime::models::default_model_dir().expect("HOME or TESSERA_MODEL_DIR");
    assert!(dir.join("model.safetensors").exists(), "{} has no model: run scripts/fetch-model.sh", dir.display());
    dir
}

fn job(net: &Devnet, id: u64) -> JobDto {
    net.client().get(&format!("/jobs/{id}")).unwrap()
}

/// Waits until the job's provider says it is running it.
fn wait_running(net: &Devnet, id: u64) {
    net.wait_until(60, "the job to run", || {
        let j = job(net, id);
        j.state == "leased"
            && tessera_client::jobs::provider_endpoint(&net.client(), &j)
                .and_then(|e| tessera_client::jobs::fetch_phase(&e, id))
                .is_ok_and(|p| p == "running")
    });
}

fn balance(net: &Devnet, who: &Address) -> Amount {
    net.client().account(who).unwrap().balance
}

fn address(net: &Devnet, key: &str) -> Address {
    tessera_client::Keyring::new(net.home.join("keys")).get(key).unwrap().address()
}

/// Writes a spec next to copies of the example files it names.
fn spec(dir: &Path, name: &str, text: &str) -> String {
    for f in ["noop.wasm", "spin.wasm", "montecarlo.wasm", "wordcount.wasm", "poem.txt", "sentences.txt"] {
        std::fs::copy(examples().join(f), dir.join(f)).unwrap();
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// all-MiniLM-L6-v2 straight through candle, one sentence at a time.
fn direct_embeddings(sentences: &[&str]) -> Vec<Vec<f32>> {
    let dir = model_dir();
    let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    tokenizer.with_padding(None);
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DTYPE, &Device::Cpu).unwrap() };
    let model = BertModel::load(vb, &config).unwrap();
    sentences
        .iter()
        .map(|s| {
            let ids = tokenizer.encode(*s, true).unwrap();
            let ids = Tensor::new(ids.get_ids(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
            let hidden = model.forward(&ids, &ids.zeros_like().unwrap(), None).unwrap();
            let v = hidden.mean(1).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn read_npy(bytes: &[u8]) -> Vec<Vec<f32>> {
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'shape': (5, 384)"), "{header}");
    bytes[10 + header_len..].chunks_exact(384 * 4).map(|r| r.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()).collect()
}

#[test]
fn jobs_run_pay_and_survive_a_dead_provider() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let net = Devnet::start_with(dir.path(), free_port(), &["--providers", "3", "--storage-providers", "7", "--model-source", model_dir().to_str().unwrap()]);
    net.wait_until(60, "three compute providers", || {
        net.client().get::<Vec<ProviderDto>>("/providers").is_ok_and(|p| p.iter().filter(|p| p.info.hardware.cpu_cores > 0).count() == 3)
    });
    let providers: Vec<ProviderDto> = net.client().get("/providers").unwrap();
    let mut profiles: Vec<(u32, String)> =
        providers.iter().filter(|p| p.info.hardware.cpu_cores > 0).map(|p| (p.info.hardware.cpu_cores, p.info.prices.per_cpu_core.to_string())).collect();
    profiles.sort();
    profiles.dedup_by(|a, b| a.1 == b.1);
    assert_eq!(profiles.len(), 3, "distinct price lists: {profiles:?}");

    // 1. A wasm job (module over the inline limit, so stored first) checked byte for byte.
    let wc = net.json(&["job", "submit", &format!("{}", examples().join("wordcount.toml").display()), "--wait", "--from", "dev"]);
    assert_eq!(wc["state"], "succeeded", "{wc}");
    let id = wc["job"].as_u64().unwrap();
    let out = work.path().join("wc");
    net.ok(&["job", "result", &id.to_string(), "-o", out.to_str().unwrap()]);
    let (stdout, top) = expected_wordcount(&std::fs::read_to_string(examples().join("poem.txt")).unwrap());
    assert_eq!(std::fs::read_to_string(out.join("stdout")).unwrap(), stdout);
    assert_eq!(std::fs::read_to_string(out.join("out/top.txt")).unwrap(), top);
    let logs = net.ok(&["job", "logs", &id.to_string()]);
    assert!(logs.contains("exit status 0"), "{logs}");

    // 1b. Results stored on the storage network under content ids, then read back from it.
    let wc_text = std::fs::read_to_string(examples().join("wordcount.toml")).unwrap();
    let stored_spec = spec(work.path(), "wc-stored.toml", &wc_text.replace("[order]", "[output]\nstorage = true\n\n[order]"));
    let wc = net.json(&["job", "submit", &stored_spec, "--wait", "--from", "dev"]);
    assert_eq!(wc["state"], "succeeded", "{wc}");
    let outputs = wc["outputs"].as_array().unwrap();
    let top_cid = outputs.iter().find(|o| o["name"] == "out/top.txt").and_then(|o| o["cid"].as_str()).unwrap_or_else(|| panic!("no content id for out/top.txt: {wc}"));
    let back = work.path().join("top-from-network.txt");
    net.ok(&["storage", "get", top_cid, "-o", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), top, "out/top.txt read back from the storage network");
    let again = net.json(&["job", "result", &wc["job"].to_string(), "-o", work.path().join("wc2").to_str().unwrap(), "--store"]);
    let again_cid = again.as_array().unwrap().iter().find(|f| f["name"] == "out/top.txt").map(|f| f["cid"].clone()).unwrap();
    assert_eq!(again_cid.as_str(), Some(top_cid), "the same bytes, the same content id");

    // 2. Balances move exactly as the lease says (inline module, a fresh buyer).
    let buyer = address(&net, "test1");
    let noop = spec(
        work.path(),
        "noop.toml",
        "name = \"noop\"\nkind = \"wasm\"\n[wasm]\nmodule = \"noop.wasm\"\n[order]\nmax_price_per_block = \"0.01\"\nduration_blocks = 100\npricing = \"fixed\"\n",
    );
    let before = balance(&net, &buyer);
    let r = net.json(&["job", "submit", &noop, "--wait", "--from", "test1"]);
    assert_eq!(r["state"], "succeeded", "{r}");
    let j = job(&net, r["job"].as_u64().unwrap());
    let lease: LeaseDto = net.client().get(&format!("/leases/{}", j.lease.unwrap())).unwrap();
    let cheapest = providers.iter().filter(|p| p.info.hardware.cpu_cores > 0).map(|p| p.info.prices.per_cpu_core).min().unwrap();
    assert_eq!(lease.price_per_block, cheapest, "fixed price matches the cheapest list");
    let blocks = lease.paid.micro() / lease.price_per_block.micro();
    assert!(blocks >= 1 && lease.paid.micro() == blocks * lease.price_per_block.micro(), "{lease:?}");
    assert_eq!(j.paid, lease.paid);
    let fee = 1_000;
    assert_eq!(balance(&net, &buyer).micro(), before.micro() - fee - lease.paid.micro(), "fee + lease, the rest refunded");

    // 3. An embedding job against the model run directly with candle.
    let e = net.json(&["job", "submit", &format!("{}", examples().join("embed.toml").display()), "--wait"]);
    assert_eq!(e["state"], "succeeded", "{e}");
    let out = work.path().join("embed");
    net.ok(&["job", "result", &e["job"].as_u64().unwrap().to_string(), "-o", out.to_str().unwrap()]);
    let got = read_npy(&std::fs::read(out.join("vectors.npy")).unwrap());
    let text = std::fs::read_to_string(examples().join("sentences.txt")).unwrap();
    let sentences: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, (g, w)) in got.iter().zip(direct_embeddings(&sentences)).enumerate() {
        let worst = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "sentence {i} differs by {worst}");
    }

    // 4. Limits: a job that spins fails with the reason and the buyer keeps the rest.
    let spin = spec(
        work.path(),
        "spin.toml",
        "name = \"spin\"\nkind = \"wasm\"\n[wasm]\nmodule = \"spin.wasm\"\nfuel = 50_000_000\n[order]\nmax_price_per_block = \"0.01\"\npricing = \"fixed\"\n",
    );
    let out = net.cli(&["--output", "json", "job", "submit", &spin, "--wait", "--from", "test1"]);
    assert!(!out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["state"], "failed");
    assert!(r["reason"].as_str().unwrap().contains("ran out of fuel"), "{r}");

    // 5. Bad input fails before money moves.
    let before = balance(&net, &buyer);
    let not_wasm = spec(work.path(), "bad.toml", "name = \"bad\"\nkind = \"wasm\"\n[wasm]\nmodule = \"poem.txt\"\n[order]\nmax_price_per_block = \"0.01\"\n");
    assert!(net.fails(&["job", "submit", &not_wasm, "--from", "test1"]).contains("not a WebAssembly module"));
    let cheap = spec(work.path(), "cheap.toml", "name = \"c\"\nkind = \"wasm\"\n[wasm]\nmodule = \"noop.wasm\"\n[order]\nmax_price_per_block = \"0.000001\"\npricing = \"fixed\"\n");
    assert!(net.fails(&["job", "submit", &cheap, "--from", "test1"]).contains("below every provider's price"));
    let wrong_model = spec(
        work.path(),
        "wrong.toml",
        &format!(
            "name = \"w\"\nkind = \"embed\"\n[embed]\nmodel_dir = \"{}\"\nmodel = \"{}\"\ninput = \"sentences.txt\"\n[order]\nmax_price_per_block = \"0.01\"\n",
            model_dir().display(),
            "11".repeat(32)
        ),
    );
    assert!(net.fails(&["job", "submit", &wrong_model, "--from", "test1"]).contains("different model file"));
    net.ok(&["keys", "new", "broke"]);
    assert!(net.fails(&["job", "submit", &noop, "--from", "broke"]).contains("holds 0.000000 TSR"));
    assert_eq!(balance(&net, &buyer), before, "nothing was spent on refused jobs");

    // 6. Kill the provider mid-job: the job moves to another and completes; the
    //    buyer pays only the provider that finished; the dead one loses reputation.
    let long = spec(
        work.path(),
        "long.toml",
        "name = \"long\"\nkind = \"wasm\"\n[wasm]\nmodule = \"montecarlo.wasm\"\nargs = [\"1500000000\", \"7\"]\nfuel = 10_000_000_000_000\nwall_secs = 300\n[order]\nmax_price_per_block = \"0.01\"\nduration_blocks = 3000\npricing = \"fixed\"\n",
    );
    let r = net.json(&["job", "submit", &long, "--from", "test2"]);
    let id = r["job"].as_u64().unwrap();
    wait_running(&net, id);
    let first = job(&net, id).provider.unwrap();
    let rep_before = net.client().get::<ProviderDto>(&format!("/providers/{first}")).unwrap().reputation_ppm;
    net.kill_provider(&first);
    net.wait_until(240, "the job to finish elsewhere", || job(&net, id).state == "succeeded");
    let j = job(&net, id);
    assert_eq!(j.lost_to, vec![first]);
    assert_eq!(j.orders.len(), 2);
    assert_ne!(j.provider, Some(first));
    let last: LeaseDto = net.client().get(&format!("/leases/{}", j.lease.unwrap())).unwrap();
    assert_eq!(j.paid, last.paid, "the buyer paid only the provider that finished");
    let rep_after = net.client().get::<ProviderDto>(&format!("/providers/{first}")).unwrap().reputation_ppm;
    assert!(rep_after < rep_before, "reputation {rep_before} -> {rep_after}");
    let out = work.path().join("long");
    net.ok(&["job", "result", &id.to_string(), "-o", out.to_str().unwrap()]);
    let stdout = std::fs::read_to_string(out.join("stdout")).unwrap();
    assert!(stdout.starts_with("samples 1500000000\n") && stdout.contains("pi 3.14"), "{stdout}");

    // 7. A provider restarted mid-job (same key, data dir and address) picks its
    //    lease up again from the ledger and finishes it: nothing is re-placed.
    let medium = spec(
        work.path(),
        "medium.toml",
        "name = \"medium\"\nkind = \"wasm\"\n[wasm]\nmodule = \"montecarlo.wasm\"\nargs = [\"400000000\", \"9\"]\nfuel = 10_000_000_000_000\nwall_secs = 300\n[order]\nmax_price_per_block = \"0.01\"\nduration_blocks = 3000\npricing = \"fixed\"\n",
    );
    let id = net.json(&["job", "submit", &medium, "--from", "test3"])["job"].as_u64().unwrap();
    wait_running(&net, id);
    let holder = job(&net, id).provider.unwrap();
    let endpoint = tessera_client::jobs::provider_endpoint(&net.client(), &job(&net, id)).unwrap();
    let mut restarted = net.restart_provider(&holder, endpoint.trim_start_matches("http://"));
    net.wait_until(120, "the restarted provider to finish the job", || job(&net, id).is_final());
    let _ = restarted.kill();
    let _ = restarted.wait();
    let j = job(&net, id);
    assert_eq!(j.state, "succeeded", "{j:?}");
    let restarted_log = std::fs::read_to_string(net.home.join("restarted-provider.log")).unwrap_or_default();
    assert_eq!(j.provider, Some(holder), "{j:?}\nrestarted provider's log:\n{restarted_log}");
    assert_eq!(j.orders.len(), 1, "not re-placed");
    assert!(j.lost_to.is_empty());
}
