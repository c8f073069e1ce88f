//! The mempool: admitted transactions in arrival order, bounded in count and
//! bytes, with each sender's next expected nonce so a client can queue several.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tessera_ledger::{Overlay, SignedTx, TxError};
use tessera_types::{Address, Hash32};

pub struct MempoolLimits {
    pub max_txs: usize,
    pub max_bytes: usize,
}

struct Entry {
    hash: Hash32,
    sender: Address,
    size: usize,
    tx: SignedTx,
}

pub struct Mempool {
    limits: MempoolLimits,
    queue: VecDeque<Entry>,
    hashes: BTreeSet<Hash32>,
    next_nonce: BTreeMap<Address, u64>,
    bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Invalid(#[from] TxError),
    #[error("transaction {0} is already pending")]
    Duplicate(Hash32),
    #[error("mempool is full ({0}); retry after the next block")]
    Full(String),
}

impl Mempool {
    pub fn new(limits: MempoolLimits) -> Mempool {
        Mempool { limits, queue: VecDeque::new(), hashes: BTreeSet::new(), next_nonce: BTreeMap::new(), bytes: 0 }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The nonce the next transaction of `sender` must carry, if it has pending ones.
    pub fn pending_nonce(&self, sender: &Address) -> Option<u64> {
        self.next_nonce.get(sender).copied()
    }

    /// Checks `tx` fully (signature included) against `state` and queues it.
    pub fn admit(&mut self, state: &Overlay, tx: SignedTx, size: usize) -> Result<Hash32, AdmitError> {
        let hash = tx.hash();
        if self.hashes.contains(&hash) {
            return Err(AdmitError::Duplicate(hash));
        }
        if self.queue.len() >= self.limits.max_txs || self.bytes + size > self.limits.max_bytes {
            return Err(AdmitError::Full(format!("{} transactions, {} bytes", self.queue.len(), self.bytes)));
        }
        let sender = tx.body.signer_address();
        tessera_ledger::check_tx(state, &tx, self.pending_nonce(&sender))?;
        self.push(Entry { hash, sender, size, tx });
        Ok(hash)
    }

    fn push(&mut self, e: Entry) {
        self.next_nonce.insert(e.sender, e.tx.body.nonce + 1);
        self.hashes.insert(e.hash);
        self.bytes += e.size;
        self.queue.push_back(e);
    }

    /// Up to `max_txs` transactions (and `max_bytes`) from the front, for a proposal.
    pub fn peek_batch(&self, max_txs: usize, max_bytes: usize) -> Vec<SignedTx> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in self.queue.iter().take(max_txs) {
            if bytes + e.size > max_bytes {
                break;
            }
            bytes += e.size;
            out.push(e.tx.clone());
        }
        out
    }

    /// Drops what a committed block included, then re-checks what is left
    /// against the new state (signatures were checked at admission).
    pub fn on_commit(&mut self, included: &BTreeSet<Hash32>, state: &Overlay) {
        let old = std::mem::take(&mut self.queue);
        self.hashes.clear();
        self.next_nonce.clear();
        self.bytes = 0;
        for e in old {
            if included.contains(&e.hash) {
                continue;
            }
            let pending = self.pending_nonce(&e.sender);
            if tessera_ledger::check_tx_state(state, &e.tx, pending).is_ok() {
                self.push(e);
            }
        }
    }
}
