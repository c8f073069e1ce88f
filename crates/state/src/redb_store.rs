//! The redb backend: tables, snapshots (read transactions) and block commits.

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use redb::{Database, Durability, ReadOnlyTable, ReadableDatabase, TableDefinition};
use std::path::Path;
use tessera_ledger::{Changes, StateRead};

use crate::commitment::{key_hash, StateProof};

const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const JMT_NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_nodes");
const PREIMAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("key_preimages");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tx_index");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Per height, the hashes of its transactions (32 bytes each), so that
/// pruning a block also drops its entries in the tx index.
const BLOCK_TXS: TableDefinition<u64, &[u8]> = TableDefinition::new("block_txs");

/// Most old blocks one commit prunes: turning retention on for a long chain
/// catches up over the next commits instead of stalling one.
const PRUNE_PER_COMMIT: u64 = 256;

/// redb page cache of the state store.
const STATE_CACHE_BYTES: usize = 128 << 20;

const META_HEIGHT: &str = "height";
const META_APP_HASH: &str = "app_hash";
/// Every block at or below this height has been pruned.
const META_PRUNED: &str = "pruned_through";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("state tree error: {0}")]
    Tree(String),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Where a committed transaction sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    pub height: u64,
    pub index: u32,
}

/// Everything one block writes, committed atomically.
pub struct CommitBatch {
    pub height: u64,
    pub changes: Changes,
    pub tree: TreeUpdateBatch,
    pub app_hash: [u8; 32],
    /// The encoded block record; absent for genesis (height 0).
    pub block: Option<Vec<u8>>,
    pub tx_hashes: Vec<[u8; 32]>,
}

pub struct Store {
    db: Database,
    /// Blocks kept (the latest ones); 0 keeps every block.
    retain_blocks: u64,
}

impl Store {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        // A bounded page cache: the node's memory must not grow with the chain.
        let db = Database::builder().set_cache_size(STATE_CACHE_BYTES).create(path).map_err(db_err)?;
        let w = db.begin_write().map_err(db_err)?;
        {
            w.open_table(STATE).map_err(db_err)?;
            w.open_table(JMT_NODES).map_err(db_err)?;
            w.open_table(PREIMAGES).map_err(db_err)?;
            w.open_table(BLOCKS).map_err(db_err)?;
            w.open_table(TXS).map_err(db_err)?;
            w.open_table(META).map_err(db_err)?;
            w.open_table(BLOCK_TXS).map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        Ok(Store { db, retain_blocks: 0 })
    }

    /// Keeps only the latest `blocks` block records (and their tx index
    /// entries); older ones are deleted as new blocks commit. State is
    /// unaffected: it is kept whole at the latest height. 0 keeps every block.
    pub fn retain_blocks(mut self, blocks: u64) -> Store {
        self.retain_blocks = blocks;
        self
    }

    /// A consistent read view of the last committed block.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let r = self.db.begin_read().map_err(db_err)?;
        Ok(Snapshot {
            state: r.open_table(STATE).map_err(db_err)?,
            nodes: r.open_table(JMT_NODES).map_err(db_err)?,
            preimages: r.open_table(PREIMAGES).map_err(db_err)?,
            blocks: r.open_table(BLOCKS).map_err(db_err)?,
            txs: r.open_table(TXS).map_err(db_err)?,
            meta: r.open_table(META).map_err(db_err)?,
        })
    }

    /// Writes a block's state changes, tree nodes, block record and tx index in
    /// one durable transaction, and prunes tree nodes the block made stale.
    pub fn commit(&self, batch: CommitBatch) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(db_err)?;
        w.set_durability(Durability::Immediate).map_err(db_err)?;
        {
            let mut state = w.open_table(STATE).map_err(db_err)?;
            let mut preimages = w.open_table(PREIMAGES).map_err(db_err)?;
            for (k, v) in &batch.changes {
                let kh = key_hash(k);
                match v {
                    Some(v) => {
                        // A key that already had a value already has its preimage.
                        let existed = state.insert(k.as_slice(), v.as_slice()).map_err(db_err)?.is_some();
                        if !existed {
                            preimages.insert(kh.0.as_slice(), k.as_slice()).map_err(db_err)?;
                        }
                    }
                    None => {
                        state.remove(k.as_slice()).map_err(db_err)?;
                        preimages.remove(kh.0.as_slice()).map_err(db_err)?;
                    }
                }
            }
            let mut nodes = w.open_table(JMT_NODES).map_err(db_err)?;
            for (node_key, node) in batch.tree.node_batch.nodes() {
                let k = borsh::to_vec(node_key).map_err(db_err)?;
                let v = borsh::to_vec(node).map_err(db_err)?;
                nodes.insert(k.as_slice(), v.as_slice()).map_err(db_err)?;
            }
            for stale in &batch.tree.stale_node_index_batch {
                let k = borsh::to_vec(&stale.node_key).map_err(db_err)?;
                nodes.remove(k.as_slice()).map_err(db_err)?;
            }
            if let Some(block) = &batch.block {
                let mut blocks = w.open_table(BLOCKS).map_err(db_err)?;
                blocks.insert(batch.height, block.as_slice()).map_err(db_err)?;
            }
            let mut txs = w.open_table(TXS).map_err(db_err)?;
            for (i, h) in batch.tx_hashes.iter().enumerate() {
                let mut loc = batch.height.to_be_bytes().to_vec();
                loc.extend_from_slice(&(i as u32).to_be_bytes());
                txs.insert(h.as_slice(), loc.as_slice()).map_err(db_err)?;
            }
            if !batch.tx_hashes.is_empty() {
                let mut block_txs = w.open_table(BLOCK_TXS).map_err(db_err)?;
                block_txs.insert(batch.height, batch.tx_hashes.concat().as_slice()).map_err(db_err)?;
            }
            let mut meta = w.open_table(META).map_err(db_err)?;
            meta.insert(META_HEIGHT, batch.height.to_be_bytes().as_slice()).map_err(db_err)?;
            meta.insert(META_APP_HASH, batch.app_hash.as_slice()).map_err(db_err)?;
            if self.retain_blocks > 0 && batch.height > self.retain_blocks {
                let pruned = read_u64(&meta, META_PRUNED)?.unwrap_or(0);
                let through = (batch.height - self.retain_blocks).min(pruned + PRUNE_PER_COMMIT);
                if through > pruned {
                    let mut blocks = w.open_table(BLOCKS).map_err(db_err)?;
                    let mut block_txs = w.open_table(BLOCK_TXS).map_err(db_err)?;
                    for height in pruned + 1..=through {
                        blocks.remove(height).map_err(db_err)?;
                        if let Some(hashes) = block_txs.remove(height).map_err(db_err)? {
                            for h in hashes.value().chunks_exact(32) {
                                txs.remove(h).map_err(db_err)?;
                            }
                        }
                    }
                    meta.insert(META_PRUNED, through.to_be_bytes().as_slice()).map_err(db_err)?;
                }
            }
        }
        w.commit().map_err(db_err)
    }
}

fn read_u64(meta: &impl redb::ReadableTable<&'static str, &'static [u8]>, key: &str) -> Result<Option<u64>, StoreError> {
    Ok(meta.get(key).map_err(db_err)?.map(|g| u64::from_be_bytes(g.value().try_into().expect("8-byte height"))))
}

/// A read transaction over the last committed block: the base the ledger reads,
/// and the reader the Merkle tree walks.
pub struct Snapshot {
    state: ReadOnlyTable<&'static [u8], &'static [u8]>,
    nodes: ReadOnlyTable<&'static [u8], &'static [u8]>,
    preimages: ReadOnlyTable<&'static [u8], &'static [u8]>,
    blocks: ReadOnlyTable<u64, &'static [u8]>,
    txs: ReadOnlyTable<&'static [u8], &'static [u8]>,
    meta: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Snapshot {
    /// Height of the last committed block; `None` before genesis.
    pub fn height(&self) -> Result<Option<u64>, StoreError> {
        read_u64(&self.meta, META_HEIGHT)
    }

    /// Every block at or below this height has been pruned (0: none).
    pub fn pruned_through(&self) -> Result<u64, StoreError> {
        Ok(read_u64(&self.meta, META_PRUNED)?.unwrap_or(0))
    }

    pub fn app_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        Ok(self.meta.get(META_APP_HASH).map_err(db_err)?.map(|g| g.value().try_into().expect("32-byte hash")))
    }

    pub fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blocks.get(height).map_err(db_err)?.map(|g| g.value().to_vec()))
    }

    pub fn tx_location(&self, hash: &[u8; 32]) -> Result<Option<TxLocation>, StoreError> {
        Ok(self.txs.get(hash.as_slice()).map_err(db_err)?.map(|g| {
            let v = g.value();
            TxLocation {
                height: u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                index: u32::from_be_bytes(v[8..12].try_into().expect("4 bytes")),
            }
        }))
    }

    /// The root and node updates of applying `changes` as version `height`.
    pub fn compute_root(&self, changes: &Changes, height: u64) -> Result<([u8; 32], TreeUpdateBatch), StoreError> {
        let tree = Sha256Jmt::new(self);
        let updates = changes.iter().map(|(k, v)| (key_hash(k), v.clone()));
        let (root, batch) = tree.put_value_set(updates, height).map_err(|e| StoreError::Tree(e.to_string()))?;
        Ok((root.0, batch))
    }

    /// The value of `key` at the committed height with its Merkle proof.
    pub fn prove(&self, key: &[u8]) -> Result<(Option<Vec<u8>>, StateProof), StoreError> {
        let height = self.height()?.ok_or_else(|| StoreError::Tree("no committed state".into()))?;
        let tree = Sha256Jmt::new(self);
        let (value, proof) = tree.get_with_proof(key_hash(key), height).map_err(|e| StoreError::Tree(e.to_string()))?;
        Ok((value, StateProof(proof)))
    }
}

impl StateRead for Snapshot {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.state
            .get(key)
            .unwrap_or_else(|e| panic!("state read failed: {e}"))
            .map(|g| g.value().to_vec())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let range = self.state.range::<&[u8]>(prefix..).unwrap_or_else(|e| panic!("state scan failed: {e}"));
        for item in range {
            let (k, v) = item.unwrap_or_else(|e| panic!("state scan failed: {e}"));
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        out
    }
}

impl TreeReader for Snapshot {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let k = borsh::to_vec(node_key)?;
        match self.nodes.get(k.as_slice())? {
            Some(g) => Ok(Some(borsh::from_slice(g.value())?)),
            None => Ok(None),
        }
    }

    /// Only the latest version is kept (stale nodes are pruned at commit), so
    /// the value is the current one whatever `max_version` asks for.
    fn get_value_option(&self, _max_version: Version, key_hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        let Some(key) = self.preimages.get(key_hash.0.as_slice())? else { return Ok(None) };
        Ok(self.state.get(key.value())?.map(|g| g.value().to_vec()))
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("tree restore is not supported by this store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commitment::verify_proof;

    fn changes(pairs: &[(&str, Option<&str>)]) -> Changes {
        pairs.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()))).collect()
    }

    fn commit(store: &Store, height: u64, c: Changes) -> [u8; 32] {
        let (root, tree) = store.snapshot().unwrap().compute_root(&c, height).unwrap();
        store.commit(CommitBatch { height, changes: c, tree, app_hash: root, block: None, tx_hashes: vec![] }).unwrap();
        root
    }

    #[test]
    fn commits_survive_reopen_and_proofs_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let root1;
        {
            let store = Store::open(&path).unwrap();
            commit(&store, 0, changes(&[("a", Some("1")), ("b", Some("2"))]));
            root1 = commit(&store, 1, changes(&[("a", Some("3")), ("b", None), ("c", Some("4"))]));
        }
        let store = Store::open(&path).unwrap();
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.height().unwrap(), Some(1));
        assert_eq!(snap.app_hash().unwrap(), Some(root1));
        assert_eq!(snap.get(b"a"), Some(b"3".to_vec()));
        assert_eq!(snap.get(b"b"), None);
        let (value, proof) = snap.prove(b"a").unwrap();
        assert_eq!(value.as_deref(), Some(&b"3"[..]));
        verify_proof(root1, b"a", Some(b"3"), &proof.to_bytes()).unwrap();
        assert!(verify_proof(root1, b"a", Some(b"9"), &proof.to_bytes()).is_err());
        let (absent, proof_b) = snap.prove(b"b").unwrap();
        assert_eq!(absent, None);
        verify_proof(root1, b"b", None, &proof_b.to_bytes()).unwrap();
    }

    #[test]
    fn retention_prunes_old_blocks_and_their_tx_index_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap().retain_blocks(3);
        commit(&store, 0, changes(&[("k", Some("0"))]));
        for height in 1..=6u64 {
            let c = changes(&[("k", Some(&height.to_string()))]);
            let (root, tree) = store.snapshot().unwrap().compute_root(&c, height).unwrap();
            let block = Some(format!("block {height}").into_bytes());
            let tx_hashes = vec![[height as u8; 32], [100 + height as u8; 32]];
            store.commit(CommitBatch { height, changes: c, tree, app_hash: root, block, tx_hashes }).unwrap();
        }
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.pruned_through().unwrap(), 3);
        for height in 1..=3u64 {
            assert_eq!(snap.block(height).unwrap(), None, "block {height} is past retention");
            assert_eq!(snap.tx_location(&[height as u8; 32]).unwrap(), None);
            assert_eq!(snap.tx_location(&[100 + height as u8; 32]).unwrap(), None);
        }
        for height in 4..=6u64 {
            assert_eq!(snap.block(height).unwrap(), Some(format!("block {height}").into_bytes()));
            assert_eq!(snap.tx_location(&[100 + height as u8; 32]).unwrap(), Some(TxLocation { height, index: 1 }));
        }
        assert_eq!(snap.get(b"k"), Some(b"6".to_vec()), "state is kept whole");
        // Retention off keeps what is there and prunes nothing more.
        drop(snap);
        drop(store);
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let (root, tree) = store.snapshot().unwrap().compute_root(&changes(&[]), 7).unwrap();
        store.commit(CommitBatch { height: 7, changes: changes(&[]), tree, app_hash: root, block: Some(vec![7]), tx_hashes: vec![] }).unwrap();
        assert!(store.snapshot().unwrap().block(4).unwrap().is_some());
    }

    #[test]
    fn root_depends_only_on_contents() {
        let dir = tempfile::tempdir().unwrap();
        let one = Store::open(&dir.path().join("one.redb")).unwrap();
        let two = Store::open(&dir.path().join("two.redb")).unwrap();
        commit(&one, 0, changes(&[("x", Some("1"))]));
        let r1 = commit(&one, 1, changes(&[("y", Some("2"))]));
        let r2 = commit(&two, 0, changes(&[("x", Some("1")), ("y", Some("2"))]));
        assert_eq!(r1, r2);
    }
}
