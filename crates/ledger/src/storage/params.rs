//! storage parameters (DESIGN.md section 3: proofs of storage, repair).

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Amount;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct StorageParams {
    /// Blocks per proof epoch; every active piece is challenged once an epoch,
    /// in a block of the epoch of its own (`challenge_slot`), so that the
    /// chain carries an even share of the proofs (about 36 KB a MiB-piece)
    /// in every block instead of all of them at once.
    pub epoch_blocks: u64,
    /// Leaves challenged per piece per epoch (k = 50: 10% lost escapes 0.5%).
    pub challenges_per_piece: u32,
    /// Blocks a provider has to answer a challenge (at most `epoch_blocks`).
    pub challenge_window_blocks: u64,
    /// Burned from the provider's stake for each missed or wrong answer.
    pub fault_fee: Amount,
    /// Consecutive faults after which a piece counts as lost and is moved.
    pub max_faults: u32,
    /// Burned from the provider's stake when it loses a piece.
    pub lost_piece_slash: Amount,
    /// A segment is repaired when its healthy pieces fall to K + this margin.
    pub repair_margin: u16,
    /// Blocks a new deal's pieces have to reach their providers before the
    /// first challenge.
    pub upload_grace_blocks: u64,
    /// The share of each block that proofs of storage may fill, in bytes (0:
    /// no bound). A deal is refused when the proofs of every active deal's
    /// pieces (`tessera_storage::proof_bytes` each) and its own would exceed
    /// this times `epoch_blocks`: beyond it honest providers' proofs would
    /// not fit in the blocks before their deadlines and they would be
    /// slashed for the chain's congestion.
    #[serde(default = "default_proof_bytes_per_block")]
    pub max_proof_bytes_per_block: u64,
}

/// Half of a devnet block (8 MiB), leaving the rest to deals, jobs and payments.
fn default_proof_bytes_per_block() -> u64 {
    4 << 20
}

impl Default for StorageParams {
    fn default() -> Self {
        StorageParams {
            epoch_blocks: 60,
            challenges_per_piece: 50,
            challenge_window_blocks: 10,
            fault_fee: Amount::from_tsr(1),
            max_faults: 3,
            lost_piece_slash: Amount::from_tsr(10),
            repair_margin: 1,
            upload_grace_blocks: 20,
            max_proof_bytes_per_block: default_proof_bytes_per_block(),
        }
    }
}
