//! storage parameters (DESIGN.md section 3: proofs of storage, repair).

use borsh::{BorshDeserialize, BorshSerialize};
use tessera_types::Amount;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct StorageParams {
    /// Blocks per proof epoch; every active piece is challenged once an epoch,
    /// in a block of the epoch of its own (`challenge_slot`), so that the
    /// chain carries an even share of the proofs (about 44 KB a MiB-piece)
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
        }
    }
}
