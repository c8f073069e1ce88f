//! `tessera bench ledger`: signed transfers through the real block path (decode,
//! batch signature check, execute, Merkle root, durable redb commit), next to
//! the raw ed25519 batch verification rate on one core, measured in the same run.

use std::time::Instant;
use tessera_crypto::KeyPair;
use tessera_ledger::bank::BankMsg;
use tessera_ledger::{execute_block, BlockContext, Genesis, GenesisAccount, GenesisValidator, Msg, Overlay, Params, SignedTx, TxBody};
use tessera_state::{CommitBatch, Store};
use tessera_types::{Amount, PublicKey};

use crate::app::HEIGHT_KEY;
use crate::devnet::ensure_genesis;

pub struct LedgerBenchConfig {
    pub txs: usize,
    pub block_size: usize,
    pub accounts: usize,
}

pub struct LedgerBenchReport {
    pub txs: usize,
    pub blocks: usize,
    pub ledger_tps: f64,
    pub raw_verify_per_s: f64,
    pub ratio: f64,
    pub peak_rss_mib: f64,
}

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

pub fn run_ledger_bench(cfg: &LedgerBenchConfig, progress: &mut dyn FnMut(&str)) -> anyhow::Result<LedgerBenchReport> {
    anyhow::ensure!(cfg.txs > 0 && cfg.block_size > 0 && cfg.accounts >= 2, "need txs > 0, block size > 0, accounts >= 2");
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.redb"))?;
    let chain_id = "tessera-bench".to_string();
    let keys: Vec<KeyPair> = (0..cfg.accounts).map(|i| KeyPair::from_seed(format!("bench-{i}").as_bytes())).collect();
    let validator = KeyPair::from_seed(b"bench-validator");
    let mut accounts: Vec<GenesisAccount> =
        keys.iter().map(|k| GenesisAccount { address: k.address(), balance: Amount::from_tsr(1_000_000) }).collect();
    accounts.push(GenesisAccount { address: validator.address(), balance: Amount::from_tsr(100_000) });
    let genesis = Genesis {
        chain_id: chain_id.clone(),
        genesis_time_ms: 0,
        params: Params::default(),
        accounts,
        validators: vec![GenesisValidator {
            operator: validator.address(),
            consensus_key: PublicKey(validator.public_key()),
            moniker: "bench".into(),
            self_bond: Amount::from_tsr(10_000),
        }],
        providers: Vec::new(),
    };
    ensure_genesis(&store, &genesis)?;

    progress(&format!("signing {} transfers over {} accounts...", cfg.txs, cfg.accounts));
    let mut nonces = vec![0u64; cfg.accounts];
    let encoded: Vec<Vec<u8>> = (0..cfg.txs)
        .map(|i| {
            let from = i % cfg.accounts;
            let to = (i * 7 + 1) % cfg.accounts;
            let body = TxBody {
                chain_id: chain_id.clone(),
                signer: PublicKey(keys[from].public_key()),
                nonce: nonces[from],
                fee: Params::default().bank.min_fee,
                msg: Msg::Bank(BankMsg::Transfer { to: keys[to].address(), amount: Amount::from_micro(1 + i as u128 % 1000) }),
            };
            nonces[from] += 1;
            body.sign(&keys[from]).encode()
        })
        .collect();

    progress("measuring raw ed25519 batch verification (one core)...");
    let decoded: Vec<SignedTx> = encoded.iter().map(|b| SignedTx::decode(b)).collect::<Result<_, _>>()?;
    let messages: Vec<Vec<u8>> = decoded.iter().map(|t| t.body.sign_bytes()).collect();
    let started = Instant::now();
    for chunk in decoded.iter().zip(&messages).collect::<Vec<_>>().chunks(cfg.block_size) {
        let mut verifier = ed25519_consensus::batch::Verifier::new();
        for (tx, msg) in chunk {
            verifier.queue((
                ed25519_consensus::VerificationKeyBytes::from(tx.body.signer.0),
                ed25519_consensus::Signature::from(tx.signature),
                msg.as_slice(),
            ));
        }
        verifier.verify(rand_core::OsRng).map_err(|e| anyhow::anyhow!("raw batch verify failed: {e}"))?;
    }
    let raw_verify_per_s = cfg.txs as f64 / started.elapsed().as_secs_f64();
    drop(decoded);

    progress("applying blocks through decode, verify, execute, commit...");
    let started = Instant::now();
    let mut blocks = 0;
    for (n, chunk) in encoded.chunks(cfg.block_size).enumerate() {
        let height = n as u64 + 1;
        let txs: Vec<SignedTx> = chunk.iter().map(|b| SignedTx::decode(b)).collect::<Result<_, _>>()?;
        let snap = store.snapshot()?;
        let mut st = Overlay::new(&snap);
        st.put(HEIGHT_KEY.to_vec(), height.to_be_bytes().to_vec());
        let ctx = BlockContext { height, time_ms: height * 500, proposer: validator.address() };
        let outcome = execute_block(&mut st, &ctx, &txs);
        if let Some(bad) = outcome.txs.iter().find(|o| o.code != 0) {
            anyhow::bail!("benchmark transaction failed: {}", bad.log);
        }
        let changes = st.into_changes();
        let (root, tree) = snap.compute_root(&changes, height)?;
        let tx_hashes = outcome.txs.iter().map(|o| o.hash.0).collect();
        store.commit(CommitBatch { height, changes, tree, app_hash: root, block: Some(chunk.concat()), tx_hashes })?;
        blocks += 1;
    }
    let ledger_tps = cfg.txs as f64 / started.elapsed().as_secs_f64();
    Ok(LedgerBenchReport {
        txs: cfg.txs,
        blocks,
        ledger_tps,
        raw_verify_per_s,
        ratio: ledger_tps / raw_verify_per_s,
        peak_rss_mib: peak_rss_mib(),
    })
}
