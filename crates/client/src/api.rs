//! JSON shapes of the RPC. Amounts are strings of micro-TSR (u128 does not fit
//! a JSON number); addresses are `tsr1...`; hashes are hex.

use serde::{Deserialize, Serialize};
use tessera_ledger::Event;
use tessera_types::{Address, Amount, Hash32, PublicKey};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusDto {
    pub chain_id: String,
    pub height: u64,
    pub app_hash: Hash32,
    pub latest_block_hash: Hash32,
    pub latest_block_time_ms: u64,
    pub peers: u32,
    pub validator: ValidatorIdentity,
    pub mempool_size: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidatorIdentity {
    pub consensus_key: PublicKey,
    pub voting_power: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeaderDto {
    pub chain_id: String,
    pub height: u64,
    pub time_ms: u64,
    pub prev_hash: Hash32,
    pub tx_root: Hash32,
    pub app_hash: Hash32,
    pub proposer: Address,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockDto {
    pub hash: Hash32,
    pub header: HeaderDto,
    pub txs: Vec<TxResultDto>,
    pub end_events: Vec<Event>,
    /// Signatures of the validators that decided this block.
    pub commit: tessera_consensus::CommitCertificate,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxResultDto {
    pub hash: Hash32,
    pub height: u64,
    pub index: u32,
    pub signer: Address,
    pub nonce: u64,
    pub fee: Amount,
    /// A short description of the message, for example `bank.transfer`.
    pub msg: String,
    /// 0 is success.
    pub code: u32,
    pub log: String,
    pub events: Vec<Event>,
}

impl TxResultDto {
    /// The numeric attribute `attr` of the first `kind` event (an id the
    /// transaction created, such as a job's or a deal's).
    pub fn event_id(&self, kind: &str, attr: &str) -> Option<u64> {
        self.events.iter().find(|e| e.kind == kind).and_then(|e| e.get(attr)?.parse().ok())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// Hex of the encoded signed transaction.
    pub tx: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub hash: Hash32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountDto {
    pub address: Address,
    pub balance: Amount,
    /// Nonce of the next transaction to be included.
    pub nonce: u64,
    /// Nonce to sign the next transaction with (counts pending mempool transactions).
    pub next_nonce: u64,
    pub height: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BalanceProofDto {
    pub address: Address,
    pub balance: Amount,
    pub nonce: u64,
    pub height: u64,
    pub app_hash: Hash32,
    /// Hex of the state key, the stored value (absent for an empty account) and the proof.
    pub key: String,
    pub value: Option<String>,
    pub proof: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupplyDto {
    pub height: u64,
    pub supply: Amount,
    pub genesis_supply: Amount,
    pub issued: Amount,
    pub burned: Amount,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidatorDto {
    pub operator: Address,
    pub consensus_key: PublicKey,
    pub moniker: String,
    pub tokens: Amount,
    pub jailed: bool,
    pub voting_power: u64,
    pub in_active_set: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnbondingDto {
    pub validator: Address,
    pub amount: Amount,
    pub completes_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProviderDto {
    pub owner: Address,
    pub info: tessera_ledger::registry::ProviderInfo,
    pub stake: Amount,
    /// `active`, or `unbonding until <height>`.
    pub status: String,
    pub registered_at: u64,
    pub last_heartbeat: u64,
    pub reputation_ppm: u32,
    pub active_leases: u32,
    pub completed_leases: u64,
    pub failed_leases: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BidDto {
    pub provider: Address,
    pub price_per_block: Amount,
    pub placed_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderDto {
    pub id: u64,
    pub buyer: Address,
    pub spec: tessera_ledger::market::OrderSpec,
    pub created_at: u64,
    pub escrow: Amount,
    /// `open until <height>`, `leased (lease N)`, `expired` or `cancelled`.
    pub state: String,
    pub lease: Option<u64>,
    pub bids: Vec<BidDto>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseDto {
    pub id: u64,
    pub order: u64,
    pub buyer: Address,
    pub provider: Address,
    pub price_per_block: Amount,
    pub start: u64,
    pub end: u64,
    pub paid: Amount,
    pub escrow_remaining: Amount,
    /// `active` or `closed at <height>: <reason>`.
    pub state: String,
}

/// A job as the ledger sees it (`GET /jobs`, `/jobs/{id}`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobDto {
    pub id: u64,
    pub buyer: Address,
    pub name: String,
    /// `wasm` or `embed`.
    pub kind: String,
    /// The full job description: hex of its canonical (borsh) encoding.
    pub spec: String,
    pub created_at: u64,
    /// `queued`, `leased`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// The order now on the market (queued) or the last one placed.
    pub order: u64,
    pub lease: Option<u64>,
    pub provider: Option<Address>,
    /// blake3 of the result manifest, once succeeded.
    pub result: Option<Hash32>,
    pub result_size: Option<u64>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Height at which it reached its final state.
    pub finished_at: Option<u64>,
    pub orders: Vec<u64>,
    pub lost_to: Vec<Address>,
    pub paid: Amount,
    pub max_price_per_block: Amount,
    pub duration_blocks: u64,
}

impl JobDto {
    pub fn decode_spec(&self) -> Result<tessera_ledger::jobs::JobSpec, String> {
        let bytes = hex::decode(&self.spec).map_err(|e| format!("job {} spec is not hex: {e}", self.id))?;
        borsh::from_slice(&bytes).map_err(|e| format!("job {} spec does not decode: {e}", self.id))
    }

    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// One message of the `/events` stream: a committed block and what it did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlockEventDto {
    pub height: u64,
    pub hash: Hash32,
    pub time_ms: u64,
    pub app_hash: Hash32,
    pub txs: Vec<TxResultDto>,
    pub end_events: Vec<Event>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DealPieceDto {
    pub segment: u32,
    pub index: u16,
    pub hash: Hash32,
    pub len: u64,
    pub provider: Address,
    pub faults: u32,
    pub lost: bool,
    pub proven_epochs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DealDto {
    pub id: u64,
    pub owner: Address,
    /// Hash part of the content id (`tcid1` + this).
    pub cid: Hash32,
    pub erasure: String,
    pub segment_bytes: u64,
    /// (segment number, plain length, plain hash).
    pub segments: Vec<(u32, u64, Hash32)>,
    pub start: u64,
    pub end: u64,
    pub escrow_remaining: Amount,
    pub paid: Amount,
    pub active: bool,
    pub pieces: Vec<DealPieceDto>,
    /// Objects a pack's deal holds (0 for a deal over one content id).
    #[serde(default)]
    pub packed: usize,
    /// The pack's members: all of them from `/deals/{id}` (none with
    /// `?members=false`), the one asked for from `/deals?cid=`, none from
    /// other lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<tessera_ledger::storage::PackMember>,
}

/// One provider's open challenges at a height (`/storage/challenges/next`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChallengesAtDto {
    pub height: u64,
    pub challenges: Vec<ChallengeDto>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChallengeDto {
    pub deal: u64,
    pub piece: u32,
    pub epoch: u64,
    pub deadline: u64,
    pub provider: Address,
    pub piece_hash: Hash32,
    /// Leaf indexes to answer with, drawn from the epoch's beacon.
    pub leaves: Vec<u64>,
}
