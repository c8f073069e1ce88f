//! The node: mempool, block execution and commit (the application side of the
//! consensus boundary), the RPC server and the devnet launcher.

pub mod app;
pub mod bench;
pub mod block;
pub mod devnet;
pub mod mempool;
pub mod rpc;
pub mod rpc_dto;
