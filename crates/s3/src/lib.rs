//! The S3-compatible endpoint: buckets and objects over the storage network,
//! SigV4-authenticated with access keys that map to ledger accounts. Object
//! bodies are spooled to disk (bounded memory), stored as content through
//! storage deals paid by the key's account, and indexed in a local redb
//! database; an object becomes visible only once it is fully stored. Jobs
//! name objects as inputs (HEAD reports the content id) and write their
//! results into buckets (`export`).

pub mod cache;
pub mod export;
pub mod index;
pub mod keys;
pub mod server;
pub mod service;
