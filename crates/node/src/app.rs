//! The application side of the consensus boundary: proposes blocks from the
//! mempool, executes them, and commits decided blocks durably before replying.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tessera_consensus::{AppMsg, CommitCertificate, ProposedValue, StartInfo};
use tessera_ledger::{execute_verified_block, verify_signatures, BlockContext, Changes, Events, Overlay, SignedTx, TxOutcome};
use tessera_state::{CommitBatch, Snapshot, Store};
use tessera_types::{Address, Hash32, Height, PublicKey};
use tokio::sync::{broadcast, mpsc};

use crate::block::{tx_root, Block, BlockRecord, Header};
use crate::mempool::{Mempool, MempoolLimits};
use crate::rpc_dto::block_event_json;

/// State key holding the last committed height, so every block changes state
/// and the app hash commits to the height.
pub const HEIGHT_KEY: &[u8] = b"block/height";

/// Bounds of one proposal.
pub struct BlockLimits {
    pub max_txs: usize,
    pub max_bytes: usize,
}

/// Shared between the consensus task and the RPC handlers.
pub struct NodeShared {
    pub store: Store,
    pub chain_id: String,
    pub validator_key: PublicKey,
    pub proposer: Address,
    pub mempool: Mutex<Mempool>,
    /// JSON of each committed block's event message, for `/events`.
    pub events: broadcast::Sender<Arc<String>>,
    /// The last decoded blocks, newest last: RPC reads of recent blocks and
    /// their transactions (`/status`, `/txs/{hash}`) decode each block once.
    pub recent_blocks: Mutex<std::collections::VecDeque<(u64, Arc<crate::block::BlockRecord>)>>,
}

/// Blocks kept decoded for the RPC.
pub const RECENT_BLOCKS: usize = 16;

/// A block this node executed while proposing, kept until it is decided.
struct Executed {
    block: Block,
    hash: Hash32,
    changes: Changes,
    tree: jmt::storage::TreeUpdateBatch,
    outcomes: Vec<TxOutcome>,
    end_events: Events,
}

pub struct NodeApp {
    shared: Arc<NodeShared>,
    limits: BlockLimits,
    last_hash: Hash32,
    pending: Option<Executed>,
    validators: Vec<(PublicKey, u64)>,
}

pub fn new_shared(store: Store, chain_id: String, validator_key: PublicKey, proposer: Address) -> Arc<NodeShared> {
    let (events, _) = broadcast::channel(256);
    Arc::new(NodeShared {
        store,
        chain_id,
        validator_key,
        proposer,
        mempool: Mutex::new(Mempool::new(MempoolLimits { max_txs: 20_000, max_bytes: 64 * 1024 * 1024 })),
        events,
        recent_blocks: Mutex::new(std::collections::VecDeque::with_capacity(RECENT_BLOCKS)),
    })
}

pub fn validator_set_keys(snapshot: &Snapshot) -> Vec<(PublicKey, u64)> {
    let st = Overlay::new(snapshot);
    let p = tessera_ledger::params::params(&st);
    tessera_ledger::staking::validator_set(&st, &p).into_iter().map(|(v, power)| (v.consensus_key, power)).collect()
}

impl NodeApp {
    pub fn new(shared: Arc<NodeShared>, limits: BlockLimits) -> anyhow::Result<NodeApp> {
        let snap = shared.store.snapshot()?;
        let height = snap.height()?.ok_or_else(|| anyhow::anyhow!("store has no genesis state"))?;
        let last_hash = if height == 0 {
            Hash32::ZERO
        } else {
            let bytes = snap.block(height)?.ok_or_else(|| anyhow::anyhow!("block {height} missing from store"))?;
            BlockRecord::decode(&bytes)?.block.header.hash()
        };
        let validators = validator_set_keys(&snap);
        Ok(NodeApp { shared, limits, last_hash, pending: None, validators })
    }

    pub async fn run(mut self, mut inbox: mpsc::Receiver<AppMsg>) -> anyhow::Result<()> {
        while let Some(msg) = inbox.recv().await {
            match msg {
                AppMsg::ConsensusReady { reply } => {
                    let height = self.shared.store.snapshot()?.height()?.unwrap_or(0) + 1;
                    let _ = reply.send(StartInfo { height, validators: self.validators.clone() });
                }
                AppMsg::GetValue { height, round, reply } => {
                    let txs = {
                        let pool = self.shared.mempool.lock().expect("mempool lock");
                        pool.peek_batch(self.limits.max_txs, self.limits.max_bytes)
                    };
                    let time_ms = now_ms();
                    // Mempool transactions had their signatures checked at admission.
                    let verdicts = vec![true; txs.len()];
                    let executed = self.execute(height, time_ms, &txs, &verdicts)?;
                    let value = executed.block.encode();
                    let value_id = executed.hash;
                    self.pending = Some(executed);
                    let _ = reply.send(ProposedValue { height, round, value_id, value });
                }
                AppMsg::Decided { certificate, value, reply } => {
                    let result = self.commit(certificate, &value).map_err(|e| format!("{e:#}"));
                    let failed = result.is_err();
                    let _ = reply.send(result.map(|_| self.validators.clone()));
                    if failed {
                        anyhow::bail!("commit failed; stopping so that no state is lost");
                    }
                }
            }
        }
        Ok(())
    }

    /// Executes `txs` on top of the committed state as block `height`.
    fn execute(&self, height: Height, time_ms: u64, txs: &[SignedTx], verdicts: &[bool]) -> anyhow::Result<Executed> {
        let snap = self.shared.store.snapshot()?;
        let mut st = Overlay::new(&snap);
        st.put(HEIGHT_KEY.to_vec(), height.to_be_bytes().to_vec());
        st.commit_tx();
        let ctx = BlockContext { height, time_ms, proposer: self.shared.proposer, beacon: self.last_hash };
        let outcome = execute_verified_block(&mut st, &ctx, txs, verdicts);
        let changes = st.into_changes();
        let (root, tree) = snap.compute_root(&changes, height)?;
        let hashes: Vec<Hash32> = outcome.txs.iter().map(|o| o.hash).collect();
        let header = Header {
            chain_id: self.shared.chain_id.clone(),
            height,
            time_ms,
            prev_hash: self.last_hash,
            tx_root: tx_root(&hashes),
            app_hash: Hash32(root),
            proposer: self.shared.proposer,
        };
        let block = Block { header, txs: txs.iter().map(|t| t.encode()).collect() };
        let hash = block.header.hash();
        Ok(Executed { block, hash, changes, tree, outcomes: outcome.txs, end_events: outcome.end_events })
    }

    fn commit(&mut self, certificate: CommitCertificate, value: &[u8]) -> anyhow::Result<()> {
        certificate.verify(&self.shared.chain_id, &self.validators).map_err(anyhow::Error::msg)?;
        let executed = match self.pending.take() {
            Some(e) if e.hash == certificate.value_id => e,
            _ => {
                // Decided a block this node did not just execute: re-execute it.
                let block = Block::decode(value)?;
                anyhow::ensure!(block.header.hash() == certificate.value_id, "decided value does not match its id");
                let txs = block.txs.iter().map(|t| SignedTx::decode(t)).collect::<Result<Vec<_>, _>>()?;
                let verdicts = verify_signatures(&txs);
                let e = self.execute(block.header.height, block.header.time_ms, &txs, &verdicts)?;
                anyhow::ensure!(e.hash == certificate.value_id, "re-executed block differs from the decided one");
                e
            }
        };
        let height = executed.block.header.height;
        let tx_hashes: Vec<[u8; 32]> = executed.outcomes.iter().map(|o| o.hash.0).collect();
        let record = BlockRecord {
            block: executed.block,
            certificate,
            outcomes: executed.outcomes,
            end_events: executed.end_events,
        };
        self.shared.store.commit(CommitBatch {
            height,
            changes: executed.changes,
            tree: executed.tree,
            app_hash: record.block.header.app_hash.0,
            block: Some(record.encode()),
            tx_hashes: tx_hashes.clone(),
        })?;
        self.last_hash = executed.hash;
        let snap = self.shared.store.snapshot()?;
        self.validators = validator_set_keys(&snap);
        let included: BTreeSet<Hash32> = tx_hashes.into_iter().map(Hash32).collect();
        {
            let st = Overlay::new(&snap);
            self.shared.mempool.lock().expect("mempool lock").on_commit(&included, &st);
        }
        let _ = self.shared.events.send(Arc::new(block_event_json(&record)));
        Ok(())
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
