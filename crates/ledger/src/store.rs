//! The ledger's view of state: a read-only base (a committed snapshot) under a
//! block overlay and a transaction overlay. A failed transaction drops its
//! overlay, so a rejected transaction changes nothing.

use borsh::{BorshDeserialize, BorshSerialize};
use std::collections::BTreeMap;

/// Committed state the ledger reads from. Implementations: the redb store in
/// `tessera-state` and [`MemStore`] for tests and simulation.
pub trait StateRead {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// An ordered in-memory state: the reference model and the simulation backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemStore {
    pub fn apply(&mut self, changes: &Changes) {
        for (k, v) in changes {
            match v {
                Some(v) => self.entries.insert(k.clone(), v.clone()),
                None => self.entries.remove(k),
            };
        }
    }
}

impl StateRead for MemStore {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Writes of a block: `None` deletes the key.
pub type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

pub struct Overlay<'a> {
    base: &'a dyn StateRead,
    block: Changes,
    tx: Changes,
}

impl<'a> Overlay<'a> {
    pub fn new(base: &'a dyn StateRead) -> Self {
        Overlay { base, block: Changes::new(), tx: Changes::new() }
    }

    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.tx.get(key) {
            return v.clone();
        }
        if let Some(v) = self.block.get(key) {
            return v.clone();
        }
        self.base.get(key)
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.tx.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.tx.insert(key, None);
    }

    /// Entries under `prefix` as this overlay sees them, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            self.base.scan_prefix(prefix).into_iter().map(|(k, v)| (k, Some(v))).collect();
        for layer in [&self.block, &self.tx] {
            for (k, v) in layer.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)) {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
    }

    /// Keeps the current transaction's writes.
    pub fn commit_tx(&mut self) {
        let tx = std::mem::take(&mut self.tx);
        self.block.extend(tx);
    }

    /// Drops the current transaction's writes.
    pub fn rollback_tx(&mut self) {
        self.tx.clear();
    }

    /// All writes of the block so far (the open transaction must be settled).
    pub fn into_changes(mut self) -> Changes {
        self.commit_tx();
        self.block
    }

    pub fn get_obj<T: BorshDeserialize>(&self, key: &[u8]) -> Option<T> {
        self.get(key).map(|bytes| {
            borsh::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("state corrupted: key {} does not decode: {e}", String::from_utf8_lossy(key))
            })
        })
    }

    pub fn put_obj<T: BorshSerialize>(&mut self, key: Vec<u8>, value: &T) {
        self.put(key, borsh::to_vec(value).expect("borsh to Vec cannot fail"));
    }

    /// Removes every entry under `prefix`, returning (key after the prefix, value).
    /// Index entries keyed by height are consumed this way in end-of-block work.
    pub fn take_prefix(&mut self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let entries = self.scan_prefix(prefix);
        for (k, _) in &entries {
            self.delete(k.clone());
        }
        entries.into_iter().map(|(k, v)| (k[prefix.len()..].to_vec(), v)).collect()
    }

    /// Returns the counter at `key` (starting at 1) and stores its successor.
    pub fn next_counter(&mut self, key: &str) -> u64 {
        let id: u64 = self.get_obj(key.as_bytes()).unwrap_or(1);
        self.put_obj(key.as_bytes().to_vec(), &(id + 1));
        id
    }

    pub fn scan_objs<T: BorshDeserialize>(&self, prefix: &[u8]) -> Vec<(Vec<u8>, T)> {
        self.scan_prefix(prefix)
            .into_iter()
            .map(|(k, v)| {
                let value = borsh::from_slice(&v).unwrap_or_else(|e| {
                    panic!("state corrupted: key {} does not decode: {e}", String::from_utf8_lossy(&k))
                });
                (k, value)
            })
            .collect()
    }
}

/// The address stored at the start of a key suffix.
pub fn address_at(suffix: &[u8]) -> tessera_types::Address {
    let mut addr = [0u8; 20];
    addr.copy_from_slice(&suffix[..20]);
    tessera_types::Address(addr)
}

/// The big-endian u64 at the start of a key suffix.
pub fn u64_at(suffix: &[u8]) -> u64 {
    u64::from_be_bytes(suffix[..8].try_into().expect("8-byte id in key"))
}

/// Builds a key from a module prefix and binary parts. Integers are big-endian so
/// that key order is numeric order.
pub fn key(prefix: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}
