//! `tessera bench ledger`: signed transfers through the real block path, next to
//! the raw ed25519 batch verification rate on one core measured in the same run.
//!
//! The path is the node's: an ingress stage decodes and batch-verifies
//! signatures (as mempool admission does), an execution stage executes the
//! block, computes the Merkle root and commits it durably to redb. The two
//! stages run on their own threads with a bounded queue between them, as they
//! do in a node, so the figure is end-to-end throughput of both together.

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};
use tessera_crypto::KeyPair;
use tessera_ledger::bank::BankMsg;
use tessera_ledger::{
    execute_verified_block, verify_signatures, BlockContext, Genesis, GenesisAccount, GenesisValidator, Msg, Overlay,
    Params, SignedTx, TxBody,
};
use tessera_state::{CommitBatch, Store};
use tessera_types::{Amount, Hash32, PublicKey};

use super::peak_rss_mib;
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
    /// Busy time of each stage, summed over blocks.
    pub ingress_busy: Duration,
    pub execute_busy: Duration,
    pub root_busy: Duration,
    pub commit_busy: Duration,
    pub peak_rss_mib: f64,
}

fn bench_genesis(chain_id: &str, keys: &[KeyPair], validator: &KeyPair) -> Genesis {
    let mut accounts: Vec<GenesisAccount> =
        keys.iter().map(|k| GenesisAccount { address: k.address(), balance: Amount::from_tsr(1_000_000) }).collect();
    accounts.push(GenesisAccount { address: validator.address(), balance: Amount::from_tsr(100_000) });
    Genesis {
        chain_id: chain_id.to_string(),
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
    }
}

/// The peer: ed25519-consensus batch verification, nothing else, one thread.
fn raw_verify_rate(encoded: &[Vec<u8>], block_size: usize) -> anyhow::Result<f64> {
    let decoded: Vec<SignedTx> = encoded.iter().map(|b| SignedTx::decode(b)).collect::<Result<_, _>>()?;
    let messages: Vec<Vec<u8>> = decoded.iter().map(|t| t.body.sign_bytes()).collect();
    let started = Instant::now();
    for (txs, msgs) in decoded.chunks(block_size).zip(messages.chunks(block_size)) {
        let mut verifier = ed25519_consensus::batch::Verifier::new();
        for (tx, msg) in txs.iter().zip(msgs) {
            verifier.queue((
                ed25519_consensus::VerificationKeyBytes::from(tx.body.signer.0),
                ed25519_consensus::Signature::from(tx.signature),
                msg.as_slice(),
            ));
        }
        verifier.verify(rand_core::OsRng).map_err(|e| anyhow::anyhow!("raw batch verify failed: {e}"))?;
    }
    Ok(encoded.len() as f64 / started.elapsed().as_secs_f64())
}

pub fn run_ledger_bench(cfg: &LedgerBenchConfig, progress: &mut dyn FnMut(&str)) -> anyhow::Result<LedgerBenchReport> {
    anyhow::ensure!(cfg.txs > 0 && cfg.block_size > 0 && cfg.accounts >= 2, "need txs > 0, block size > 0, accounts >= 2");
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("bench.redb"))?;
    let chain_id = "tessera-bench";
    let keys: Vec<KeyPair> = (0..cfg.accounts).map(|i| KeyPair::from_seed(format!("bench-{i}").as_bytes())).collect();
    let validator = KeyPair::from_seed(b"bench-validator");
    ensure_genesis(&store, &bench_genesis(chain_id, &keys, &validator))?;

    progress(&format!("signing {} transfers over {} accounts...", cfg.txs, cfg.accounts));
    let mut nonces = vec![0u64; cfg.accounts];
    let encoded: Vec<Vec<u8>> = (0..cfg.txs)
        .map(|i| {
            let from = i % cfg.accounts;
            let to = (i * 7 + 1) % cfg.accounts;
            let body = TxBody {
                chain_id: chain_id.to_string(),
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
    let raw_verify_per_s = raw_verify_rate(&encoded, cfg.block_size)?;

    progress("applying blocks: ingress (decode + verify) -> execute -> Merkle root -> durable commit...");
    let started = Instant::now();
    let (to_exec, from_ingress) = sync_channel::<(Vec<SignedTx>, Vec<bool>)>(2);
    let (blocks, ingress_busy, execute_busy, root_busy, commit_busy) = std::thread::scope(|scope| {
        let ingress = scope.spawn(|| -> anyhow::Result<Duration> {
            let mut busy = Duration::ZERO;
            for chunk in encoded.chunks(cfg.block_size) {
                let t = Instant::now();
                let txs: Vec<SignedTx> = chunk.iter().map(|b| SignedTx::decode(b)).collect::<Result<_, _>>()?;
                let verdicts = verify_signatures(&txs);
                busy += t.elapsed();
                if to_exec.send((txs, verdicts)).is_err() {
                    break;
                }
            }
            drop(to_exec);
            Ok(busy)
        });
        let mut blocks = 0usize;
        let (mut execute_busy, mut root_busy, mut commit_busy) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for (txs, verdicts) in from_ingress {
            let height = blocks as u64 + 1;
            let t0 = Instant::now();
            let snap = store.snapshot()?;
            let mut st = Overlay::new(&snap);
            st.put(HEIGHT_KEY.to_vec(), height.to_be_bytes().to_vec());
            let ctx = BlockContext { height, time_ms: height * 500, proposer: validator.address(), beacon: Hash32::blake3(&height.to_be_bytes()) };
            let outcome = execute_verified_block(&mut st, &ctx, &txs, &verdicts);
            if let Some(bad) = outcome.txs.iter().find(|o| o.code != 0) {
                anyhow::bail!("benchmark transaction failed: {}", bad.log);
            }
            let changes = st.into_changes();
            let t1 = Instant::now();
            let (root, tree) = snap.compute_root(&changes, height)?;
            let t2 = Instant::now();
            let block: Vec<u8> = txs.iter().flat_map(|t| t.encode()).collect();
            let tx_hashes = outcome.txs.iter().map(|o| o.hash.0).collect();
            store.commit(CommitBatch { height, changes, tree, app_hash: root, block: Some(block), tx_hashes })?;
            let t3 = Instant::now();
            execute_busy += t1 - t0;
            root_busy += t2 - t1;
            commit_busy += t3 - t2;
            blocks += 1;
        }
        let ingress_busy = ingress.join().map_err(|_| anyhow::anyhow!("ingress thread panicked"))??;
        Ok::<_, anyhow::Error>((blocks, ingress_busy, execute_busy, root_busy, commit_busy))
    })?;
    let ledger_tps = cfg.txs as f64 / started.elapsed().as_secs_f64();
    Ok(LedgerBenchReport {
        txs: cfg.txs,
        blocks,
        ledger_tps,
        raw_verify_per_s,
        ratio: ledger_tps / raw_verify_per_s,
        ingress_busy,
        execute_busy,
        root_busy,
        commit_busy,
        peak_rss_mib: peak_rss_mib(),
    })
}
