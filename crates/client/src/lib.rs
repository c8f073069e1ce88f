//! The typed client every front end uses: the JSON shapes of the node's RPC
//! (`api`), a blocking HTTP client (`Client`) and the local keyring.

pub mod api;
mod http;
pub mod events;
pub mod jobs;
pub mod jobspec;
pub mod keyring;
pub mod s3;
pub mod storage;

pub use http::{fetch_piece, upload_piece, Client, ClientError, MAX_PIECE_BODY};
pub use keyring::{Keyring, KeyringError};
