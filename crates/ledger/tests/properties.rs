//! Properties over random transaction sequences: supply is conserved (sum of all
//! balances equals genesis + issued - burned) and escrow is always backed.

mod common;

use common::*;
use proptest::prelude::*;
use tessera_ledger::bank::BankMsg;
use tessera_ledger::market::{MarketMsg, Pricing};
use tessera_ledger::registry::RegistryMsg;
use tessera_ledger::staking::StakingMsg;
use tessera_ledger::*;
use tessera_types::Amount;

#[derive(Clone, Debug)]
enum Action {
    Transfer(usize, usize, u128),
    Bond(usize, u128),
    Unbond(usize, u128),
    Register(usize, u128),
    Deregister(usize),
    Heartbeat(usize),
    Order(usize, u128, u64, bool),
    Bid(usize, u64, u128),
    Cancel(usize, u64),
    Close(usize, u64),
    StoreDeal(usize, u64),
    EndDeal(usize, u64),
    Empty,
}

fn action() -> impl Strategy<Value = Action> {
    let u = 0usize..5;
    prop_oneof![
        (u.clone(), u.clone(), 0u128..20_000_000_000).prop_map(|(a, b, m)| Action::Transfer(a, b, m)),
        (u.clone(), 0u128..2_000_000_000).prop_map(|(a, m)| Action::Bond(a, m)),
        (u.clone(), 0u128..2_000_000_000).prop_map(|(a, m)| Action::Unbond(a, m)),
        (u.clone(), 0u128..200).prop_map(|(a, p)| Action::Register(a, p)),
        u.clone().prop_map(Action::Deregister),
        u.clone().prop_map(Action::Heartbeat),
        (u.clone(), 1u128..5_000, 1u64..8, any::<bool>()).prop_map(|(a, p, d, f)| Action::Order(a, p, d, f)),
        (u.clone(), 1u64..6, 1u128..5_000).prop_map(|(a, o, p)| Action::Bid(a, o, p)),
        (u.clone(), 1u64..6).prop_map(|(a, o)| Action::Cancel(a, o)),
        (u.clone(), 1u64..6).prop_map(|(a, l)| Action::Close(a, l)),
        (u.clone(), 1u64..30).prop_map(|(a, d)| Action::StoreDeal(a, d)),
        (u.clone(), 1u64..4).prop_map(|(a, d)| Action::EndDeal(a, d)),
        Just(Action::Empty),
    ]
}

fn to_msg(c: &Chain, a: &Action) -> Option<(usize, Msg)> {
    let v = c.validator.address();
    Some(match *a {
        Action::Transfer(f, t, m) => (f, Msg::Bank(BankMsg::Transfer { to: c.addr(t), amount: Amount(m) })),
        Action::Bond(f, m) => (f, Msg::Staking(StakingMsg::Bond { validator: v, amount: Amount(m) })),
        Action::Unbond(f, m) => (f, Msg::Staking(StakingMsg::Unbond { validator: v, amount: Amount(m) })),
        Action::Register(f, p) => (f, register(8, p)),
        Action::Deregister(f) => (f, Msg::Registry(RegistryMsg::Deregister)),
        Action::Heartbeat(f) => (f, Msg::Registry(RegistryMsg::Heartbeat)),
        Action::Order(f, p, d, fixed) => (f, order(2, p, d, if fixed { Pricing::Fixed } else { Pricing::Auction })),
        Action::Bid(f, o, p) => (f, bid(o, p)),
        Action::Cancel(f, o) => (f, Msg::Market(MarketMsg::CancelOrder { order: o })),
        Action::Close(f, l) => (f, Msg::Market(MarketMsg::CloseLease { lease: l })),
        Action::StoreDeal(f, d) => (f, store_deal(d)),
        Action::EndDeal(f, d) => (f, Msg::Storage(tessera_ledger::storage::StorageMsg::EndDeal { deal: d })),
        Action::Empty => return None,
    })
}

/// A one-segment 1+1 deal (placement needs two storage providers).
fn store_deal(duration: u64) -> Msg {
    use tessera_ledger::storage::{PieceMeta, SegmentPieces, StorageMsg};
    let piece = PieceMeta { hash: tessera_types::Hash32::blake3(b"p"), len: 4096 };
    Msg::Storage(StorageMsg::CreateDeal(storage::DealTerms {
        cid: tessera_types::Hash32::blake3(b"cid"),
        scheme: tessera_storage::ErasureScheme { data: 1, parity: 1 },
        segment_bytes: 4096,
        segments: vec![SegmentPieces { segment: 0, len: 4096, hash: tessera_types::Hash32::blake3(b"s"), pieces: vec![piece.clone(), piece] }],
        duration_blocks: duration,
        max_price_per_gib_block: Amount(5_000_000),
    }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn supply_is_conserved_and_escrow_never_negative(blocks in prop::collection::vec(prop::collection::vec(action(), 0..4), 1..40)) {
        let mut params = Params::default();
        params.staking.unbonding_blocks = 3;
        params.registry.unbonding_blocks = 3;
        params.registry.heartbeat_timeout_blocks = 4;
        params.storage.epoch_blocks = 3;
        params.storage.challenge_window_blocks = 1;
        params.storage.max_faults = 2;
        let mut c = Chain::with_params(5, params);
        for actions in &blocks {
            let mut nonces: Vec<u64> = (0..5).map(|i| c.nonce(&c.addr(i))).collect();
            let txs: Vec<SignedTx> = actions
                .iter()
                .filter_map(|a| to_msg(&c, a))
                .map(|(u, m)| {
                    let tx = c.sign(u, nonces[u], m);
                    nonces[u] += 1;
                    tx
                })
                .collect();
            c.block(&txs);
            c.assert_supply_matches_balances();
            c.assert_pools_backed();
        }
    }
}
