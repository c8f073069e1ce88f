//! storage state: deals with their piece assignments, per-epoch beacons,
//! pending challenges by deadline, deal ends by height, bytes used per provider.
//! Deal escrow sits in `STORAGE_POOL`; invariant: its balance equals the
//! unspent escrow of active deals.

use borsh::{BorshDeserialize, BorshSerialize};
use std::collections::BTreeSet;
use std::sync::LazyLock;
use tessera_storage::ErasureScheme;
use tessera_types::{Address, Amount, Hash32, Height};

use crate::store::{key, u64_at, Overlay};

pub static STORAGE_POOL: LazyLock<Address> = LazyLock::new(|| Address::module("storage"));

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Piece {
    pub segment: u32,
    /// Position in the segment: 0..K data, K.. parity.
    pub index: u16,
    /// The root of the piece's Merkle tree, its address.
    pub hash: Hash32,
    pub len: u64,
    pub provider: Address,
    /// Consecutive missed or wrong answers.
    pub faults: u32,
    /// Counted lost (too many faults) and waiting for a new provider.
    pub lost: bool,
    pub proven_epochs: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Deal {
    pub id: u64,
    pub owner: Address,
    pub cid: Hash32,
    pub scheme: ErasureScheme,
    pub segment_bytes: u64,
    /// (segment number, plain length, plain hash) of each segment covered.
    pub segments: Vec<(u32, u64, Hash32)>,
    pub pieces: Vec<Piece>,
    pub max_price_per_gib_block: Amount,
    pub start: Height,
    pub end: Height,
    pub escrow_remaining: Amount,
    pub paid: Amount,
    pub active: bool,
}

/// A challenge waiting for its answer.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PendingChallenge {
    pub deal: u64,
    pub piece: u32,
    pub epoch: u64,
    pub deadline: Height,
}

const NEXT_DEAL_KEY: &str = "storage/next_deal";
const DEAL_PREFIX: &str = "storage/deal/";
const END_PREFIX: &str = "storage/end/";
const BEACON_PREFIX: &str = "storage/beacon/";
const PENDING_PREFIX: &str = "storage/pending/";
const USED_PREFIX: &str = "storage/used/";
/// `<cid><deal id>` -> (): the deals of each content id (a pack's deal is
/// also listed under each member's content id).
const BY_CID_PREFIX: &str = "storage/bycid/";
/// `<deal id>` -> the members of a pack's deal.
const MEMBERS_PREFIX: &str = "storage/members/";
/// `<provider><deal id>` -> (): the deals that assigned a piece to each
/// provider (a piece moved away leaves its entry behind).
const BY_PROVIDER_PREFIX: &str = "storage/byprovider/";
/// Bytes of proofs the active deals' pieces put into the chain each epoch.
const PROOF_LOAD_KEY: &str = "storage/proof_load";

/// What the active deals' proofs take of the chain each epoch, in bytes.
pub fn proof_load(st: &Overlay) -> u64 {
    st.get_obj(PROOF_LOAD_KEY.as_bytes()).unwrap_or(0)
}

/// Records what the active deals' proofs take (on a deal's opening and end).
pub fn set_proof_load(st: &mut Overlay, bytes: u64) {
    st.put_obj(PROOF_LOAD_KEY.as_bytes().to_vec(), &bytes);
}

/// `<slot><deal id>` -> (): the active deals with a piece challenged in that
/// block of every epoch.
const SLOT_PREFIX: &str = "storage/slot/";

/// The block of each epoch (0..`epoch_blocks`) in which piece `piece` of deal
/// `deal` is challenged. Consecutive pieces take consecutive blocks and deals
/// start a golden-ratio step apart, so the pieces of one large deal and of
/// many small ones spread evenly over the epoch.
pub fn challenge_slot(deal: u64, piece: u32, epoch_blocks: u64) -> u64 {
    deal.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(piece as u64) % epoch_blocks.max(1)
}

fn deal_slots(d: &Deal, epoch_blocks: u64) -> BTreeSet<u64> {
    (0..d.pieces.len() as u32).map(|i| challenge_slot(d.id, i, epoch_blocks)).collect()
}

/// Lists an opened deal under the slots of its pieces.
pub fn index_deal_slots(st: &mut Overlay, d: &Deal, epoch_blocks: u64) {
    for slot in deal_slots(d, epoch_blocks) {
        st.put(key(SLOT_PREFIX, &[&slot.to_be_bytes(), &d.id.to_be_bytes()]), Vec::new());
    }
}

/// Takes an ended deal off its slots.
pub fn unindex_deal_slots(st: &mut Overlay, d: &Deal, epoch_blocks: u64) {
    for slot in deal_slots(d, epoch_blocks) {
        st.delete(key(SLOT_PREFIX, &[&slot.to_be_bytes(), &d.id.to_be_bytes()]));
    }
}

/// The active deals with a piece challenged in block `slot` of each epoch.
pub fn deals_in_slot(st: &Overlay, slot: u64) -> Vec<u64> {
    st.scan_prefix(&key(SLOT_PREFIX, &[&slot.to_be_bytes()])).into_iter().map(|(k, _)| u64_at(&k[k.len() - 8..])).collect()
}

pub fn next_deal_id(st: &mut Overlay) -> u64 {
    st.next_counter(NEXT_DEAL_KEY)
}

pub fn deal(st: &Overlay, id: u64) -> Option<Deal> {
    st.get_obj(&key(DEAL_PREFIX, &[&id.to_be_bytes()]))
}

pub fn put_deal(st: &mut Overlay, d: &Deal) {
    st.put_obj(key(DEAL_PREFIX, &[&d.id.to_be_bytes()]), d);
}

/// Records that deal `id` holds content `cid` (once, when the deal opens).
pub fn index_deal_cid(st: &mut Overlay, cid: &Hash32, id: u64) {
    st.put(key(BY_CID_PREFIX, &[&cid.0, &id.to_be_bytes()]), Vec::new());
}

/// Every deal, active or ended, that holds content `cid`.
pub fn deals_of_cid(st: &Overlay, cid: &Hash32) -> Vec<Deal> {
    listed_deals(st, &key(BY_CID_PREFIX, &[&cid.0]))
}

/// The deals an index lists under `prefix` (keys that end in a deal id).
fn listed_deals(st: &Overlay, prefix: &[u8]) -> Vec<Deal> {
    st.scan_prefix(prefix).into_iter().filter_map(|(k, _)| deal(st, u64_at(&k[k.len() - 8..]))).collect()
}

/// Lists deal `id` under `provider`, which a piece of it was assigned to.
pub fn index_deal_provider(st: &mut Overlay, provider: &Address, id: u64) {
    st.put(key(BY_PROVIDER_PREFIX, &[&provider.0, &id.to_be_bytes()]), Vec::new());
}

/// Every deal, active or ended, that ever assigned a piece to `provider`
/// (the pieces say which still are), in order of id.
pub fn deals_of_provider(st: &Overlay, provider: &Address) -> Vec<Deal> {
    listed_deals(st, &key(BY_PROVIDER_PREFIX, &[&provider.0]))
}

/// Records the members of pack deal `id` and lists the deal under each member's content id.
pub fn put_pack_members(st: &mut Overlay, id: u64, members: &[crate::storage::PackMember]) {
    for m in members {
        index_deal_cid(st, &m.cid, id);
    }
    st.put_obj(key(MEMBERS_PREFIX, &[&id.to_be_bytes()]), &members.to_vec());
}

/// The members of deal `id` (empty unless it holds a pack).
pub fn pack_members(st: &Overlay, id: u64) -> Vec<crate::storage::PackMember> {
    st.get_obj(&key(MEMBERS_PREFIX, &[&id.to_be_bytes()])).unwrap_or_default()
}

/// How many members deal `id` holds (0 unless it holds a pack), read from
/// the list's length without decoding the list: deal listings count every
/// pack's members, and a pack holds up to `MAX_PACK_MEMBERS`.
pub fn pack_member_count(st: &Overlay, id: u64) -> usize {
    st.get(&key(MEMBERS_PREFIX, &[&id.to_be_bytes()]))
        .map(|bytes| {
            // Borsh writes a list as its length (u32, little-endian), then the items.
            let len: [u8; 4] = bytes
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or_else(|| panic!("state corrupted: the members of deal {id} do not decode"));
            u32::from_le_bytes(len) as usize
        })
        .unwrap_or(0)
}

pub fn all_deals(st: &Overlay) -> Vec<Deal> {
    st.scan_objs::<Deal>(DEAL_PREFIX.as_bytes()).into_iter().map(|(_, d)| d).collect()
}

pub fn schedule_end(st: &mut Overlay, at: Height, deal: u64) {
    st.put(key(END_PREFIX, &[&at.to_be_bytes(), &deal.to_be_bytes()]), Vec::new());
}

pub fn unschedule_end(st: &mut Overlay, at: Height, deal: u64) {
    st.delete(key(END_PREFIX, &[&at.to_be_bytes(), &deal.to_be_bytes()]));
}

pub fn take_ends_at(st: &mut Overlay, at: Height) -> Vec<u64> {
    st.take_prefix(&key(END_PREFIX, &[&at.to_be_bytes()])).into_iter().map(|(rest, _)| u64_at(&rest)).collect()
}

pub fn set_beacon(st: &mut Overlay, epoch: u64, beacon: &Hash32) {
    st.put_obj(key(BEACON_PREFIX, &[&epoch.to_be_bytes()]), beacon);
}

pub fn beacon(st: &Overlay, epoch: u64) -> Option<Hash32> {
    st.get_obj(&key(BEACON_PREFIX, &[&epoch.to_be_bytes()]))
}

pub fn clear_beacon(st: &mut Overlay, epoch: u64) {
    st.delete(key(BEACON_PREFIX, &[&epoch.to_be_bytes()]));
}

fn pending_key(deadline: Height, deal: u64, piece: u32) -> Vec<u8> {
    key(PENDING_PREFIX, &[&deadline.to_be_bytes(), &deal.to_be_bytes(), &piece.to_be_bytes()])
}

pub fn put_pending(st: &mut Overlay, c: &PendingChallenge) {
    st.put_obj(pending_key(c.deadline, c.deal, c.piece), c);
}

pub fn pending(st: &Overlay, deadline: Height, deal: u64, piece: u32) -> Option<PendingChallenge> {
    st.get_obj(&pending_key(deadline, deal, piece))
}

pub fn delete_pending(st: &mut Overlay, c: &PendingChallenge) {
    st.delete(pending_key(c.deadline, c.deal, c.piece));
}

pub fn take_pending_due(st: &mut Overlay, deadline: Height) -> Vec<PendingChallenge> {
    st.take_prefix(&key(PENDING_PREFIX, &[&deadline.to_be_bytes()]))
        .into_iter()
        .map(|(_, v)| borsh::from_slice(&v).expect("state corrupted: pending challenge does not decode"))
        .collect()
}

/// Every open challenge (for providers and the RPC).
pub fn pending_challenges(st: &Overlay) -> Vec<PendingChallenge> {
    st.scan_objs::<PendingChallenge>(PENDING_PREFIX.as_bytes()).into_iter().map(|(_, c)| c).collect()
}

pub fn used_bytes(st: &Overlay, provider: &Address) -> u64 {
    st.get_obj(&key(USED_PREFIX, &[&provider.0])).unwrap_or(0)
}

pub fn add_used(st: &mut Overlay, provider: &Address, delta: i128) {
    let now = used_bytes(st, provider) as i128 + delta;
    let value = now.clamp(0, u64::MAX as i128) as u64;
    let k = key(USED_PREFIX, &[&provider.0]);
    if value == 0 {
        st.delete(k);
    } else {
        st.put_obj(k, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::challenge_slot;

    #[test]
    fn challenge_slots_spread_pieces_evenly_over_the_epoch() {
        let epoch = 60u64;
        // One large deal: its pieces take the slots in turn.
        let mut per_slot = vec![0u32; epoch as usize];
        for piece in 0..600 {
            per_slot[challenge_slot(7, piece, epoch) as usize] += 1;
        }
        assert!(per_slot.iter().all(|n| *n == 10), "{per_slot:?}");
        // Many small deals (4+2 pieces each): no block takes much more than its share.
        let mut per_slot = vec![0u32; epoch as usize];
        for deal in 1..=1_000 {
            for piece in 0..6 {
                per_slot[challenge_slot(deal, piece, epoch) as usize] += 1;
            }
        }
        let (min, max) = (per_slot.iter().min().unwrap(), per_slot.iter().max().unwrap());
        assert!(*max <= 120 && *min >= 80, "share is 100 a block: {per_slot:?}");
        assert_eq!(challenge_slot(3, 1, 0), 0, "a zero-block epoch does not divide by zero");
    }
}
