//! The Tessera ledger: a deterministic state machine. A block of transactions
//! goes in; state changes, per-transaction results and events come out. No I/O,
//! no clock, no randomness: height, time and proposer are inputs.

pub mod bank;
pub mod error;
pub mod events;
pub mod genesis;
pub mod jobs;
pub mod market;
pub mod params;
pub mod registry;
pub mod rewards;
pub mod staking;
pub mod storage;
pub mod store;
pub mod tx;

mod app;

pub use app::{check_tx, check_tx_state, execute_block, execute_verified_block, verify_signatures, BlockOutcome, TxOutcome};
pub use error::TxError;
pub use events::{Event, Events};
pub use genesis::{init_genesis, Genesis, GenesisAccount, GenesisProvider, GenesisValidator};
pub use params::Params;
pub use store::{Changes, MemStore, Overlay, StateRead};
pub use tx::{Msg, SignedTx, TxBody};

use tessera_types::{Address, Hash32, Height};

/// What the proposer fixes for a whole block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockContext {
    pub height: Height,
    pub time_ms: u64,
    /// Operator of the proposing validator; collects the block's fees.
    pub proposer: Address,
    /// Randomness for challenges: the previous block's hash (zero for block 1).
    pub beacon: Hash32,
}

/// What a module sees while executing one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxContext {
    pub sender: Address,
    pub height: Height,
    pub time_ms: u64,
}
