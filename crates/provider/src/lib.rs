//! The provider agent: what a node operator runs to offer disk (and later
//! compute). It registers, heartbeats, stores pieces in a content-addressed
//! store, serves them over HTTP, answers storage challenges and rebuilds pieces
//! it is missing from the other pieces of their segment.

pub mod agent;
pub mod hardware;
pub mod piece_store;
pub mod repair;
pub mod server;
