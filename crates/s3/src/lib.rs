//! The S3-compatible endpoint: buckets and objects over the storage network,
//! SigV4-authenticated with access keys that map to ledger accounts. Object
//! bodies are spooled to disk (bounded memory) and indexed in a local redb
//! database; an object is acknowledged once its body is durable in the
//! endpoint's staging area, and `placer` then stores it as content through
//! storage deals paid by the key's account (an object becomes visible only
//! once it is whole; a crash loses nothing acknowledged); `compact` rewrites
//! packs whose objects were mostly deleted. Jobs
//! name objects as inputs (HEAD reports the content id) and write their
//! results into buckets (`export`).

pub mod cache;
pub mod compact;
pub mod export;
pub mod index;
pub mod keys;
pub mod md5;
pub mod placer;
pub mod server;
pub mod service;
