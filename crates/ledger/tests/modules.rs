//! Module rules, driven block by block.

mod common;

use common::*;
use tessera_ledger::bank::BankMsg;
use tessera_ledger::market::{self, LeaseState, MarketMsg, OrderState, Pricing};
use tessera_ledger::registry::{self, ProviderStatus, RegistryMsg};
use tessera_ledger::staking::{self, StakingMsg};
use tessera_ledger::*;
use tessera_types::{Amount, PublicKey};

fn transfer(to: tessera_types::Address, micro: u128) -> Msg {
    Msg::Bank(BankMsg::Transfer { to, amount: Amount(micro) })
}

#[test]
fn transfer_moves_funds_and_pays_fee_to_proposer() {
    let mut c = Chain::new(2);
    let (a, b, v) = (c.addr(0), c.addr(1), c.validator.address());
    let before_v = c.balance(&v);
    let (code, log) = c.run(0, transfer(b, 25_500_000));
    assert_eq!(code, 0, "{log}");
    assert_eq!(c.balance(&b), Amount::from_tsr(10_000).checked_add(Amount(25_500_000)).unwrap());
    assert_eq!(c.balance(&a), Amount(10_000_000_000 - 25_500_000 - 1_000));
    assert!(c.balance(&v) >= before_v.checked_add(Amount(1_000)).unwrap(), "fee (plus reward) to proposer");
    assert_eq!(c.nonce(&a), 1);
    c.assert_supply_matches_balances();
}

#[test]
fn replayed_or_out_of_order_nonce_changes_nothing() {
    let mut c = Chain::new(2);
    let b = c.addr(1);
    let tx = c.tx(0, transfer(b, 5));
    assert_eq!(c.block(&[tx.clone()]).txs[0].code, 0);
    let snapshot = c.store.clone();
    let out = c.block(&[tx]);
    assert_eq!(out.txs[0].code, TxError::WrongNonce { address: c.addr(0), expected: 0, found: 0 }.code());
    assert!(out.txs[0].log.contains("expected 1, got 0"), "{}", out.txs[0].log);
    assert_eq!(c.balance(&b), snapshot.entries.get(&bank::account_key(&b)).map(|_| c.balance(&b)).unwrap());
    assert_eq!(c.nonce(&c.addr(0)), 1);
    let skipped = c.sign(0, 5, transfer(b, 5));
    assert_eq!(c.block(&[skipped]).txs[0].code, 4);
}

#[test]
fn failed_message_keeps_fee_and_nonce_but_moves_nothing_else() {
    let mut c = Chain::new(2);
    let b = c.addr(1);
    let (code, log) = c.run(0, transfer(b, Amount::from_tsr(20_000).micro()));
    assert_eq!(code, 6);
    assert!(log.contains("insufficient funds"), "{log}");
    assert_eq!(c.balance(&b), Amount::from_tsr(10_000));
    assert_eq!(c.balance(&c.addr(0)), Amount(10_000_000_000 - 1_000));
    assert_eq!(c.nonce(&c.addr(0)), 1);
}

#[test]
fn bad_signature_wrong_chain_and_zero_amount_are_rejected_without_change() {
    let mut c = Chain::new(2);
    let b = c.addr(1);
    let mut forged = c.tx(0, transfer(b, 5));
    forged.signature[3] ^= 0xff;
    let mut other_chain = c.tx(0, transfer(b, 5));
    other_chain.body.chain_id = "other".into();
    let other_chain = other_chain.body.sign(&c.users[0]);
    let zero = c.tx(0, transfer(b, 0));
    let before = c.store.clone();
    let out = c.block(&[forged, other_chain, zero]);
    assert_eq!(out.txs.iter().map(|t| t.code).collect::<Vec<_>>(), vec![3, 2, 7]);
    assert_eq!(c.balance(&c.addr(0)), Amount::from_tsr(10_000));
    assert_eq!(c.nonce(&c.addr(0)), 0);
    drop(before);
}

#[test]
fn check_tx_explains_every_rejection() {
    let c = Chain::new(2);
    let b = c.addr(1);
    let st_check = |tx: &SignedTx| c.view(|st| check_tx(st, tx, None));
    assert!(st_check(&c.tx(0, transfer(b, 5))).is_ok());
    let poor = c.tx(0, transfer(b, Amount::from_tsr(1_000_000).micro()));
    assert!(matches!(st_check(&poor), Err(TxError::InsufficientFunds { .. })));
    let mut cheap = c.tx(0, transfer(b, 5));
    cheap.body.fee = Amount(1);
    let cheap = cheap.body.sign(&c.users[0]);
    assert!(matches!(st_check(&cheap), Err(TxError::FeeTooLow { .. })));
    let stranger = tessera_crypto::KeyPair::from_seed(b"nobody");
    let unknown = TxBody {
        chain_id: CHAIN.into(),
        signer: PublicKey(stranger.public_key()),
        nonce: 0,
        fee: Amount(1_000),
        msg: transfer(b, 1),
    }
    .sign(&stranger);
    let err = st_check(&unknown).unwrap_err();
    assert!(err.to_string().contains("balance 0.000000 TSR"), "{err}");
}

#[test]
fn bond_unbond_and_unbonding_period() {
    let mut c = Chain::new(1);
    let v = c.validator.address();
    let a = c.addr(0);
    assert_eq!(c.run(0, Msg::Staking(StakingMsg::Bond { validator: v, amount: Amount::from_tsr(500) })).0, 0);
    assert_eq!(c.view(|st| staking::validator(st, &v).unwrap().tokens), Amount::from_tsr(10_500));
    let too_much = c.run(0, Msg::Staking(StakingMsg::Unbond { validator: v, amount: Amount::from_tsr(501) }));
    assert_eq!(too_much.0, 7, "{}", too_much.1);
    assert_eq!(c.run(0, Msg::Staking(StakingMsg::Unbond { validator: v, amount: Amount::from_tsr(200) })).0, 0);
    let after_unbond = c.balance(&a);
    let period = Params::default().staking.unbonding_blocks;
    c.empty_blocks(period - 1);
    assert_eq!(c.balance(&a), after_unbond, "tokens locked during the unbonding period");
    c.empty_blocks(1);
    assert_eq!(c.balance(&a), after_unbond.checked_add(Amount::from_tsr(200)).unwrap());
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

#[test]
fn validator_set_follows_stake_and_slashing_burns() {
    let mut c = Chain::new(2);
    let consensus_key = PublicKey(c.users[0].public_key());
    let create = Msg::Staking(StakingMsg::CreateValidator { consensus_key, moniker: "second".into(), self_bond: Amount::from_tsr(2_000) });
    assert_eq!(c.run(0, create).0, 0);
    let set = c.view(|st| staking::validator_set(st, &Params::default()));
    assert_eq!(set.len(), 2);
    assert_eq!(set[0].0.operator, c.validator.address(), "highest stake first");
    assert_eq!(set[1].1, 2_000);
    let supply_before = c.view(bank::supply);
    let changes = {
        let mut st = Overlay::new(&c.store);
        let (burned, _) = staking::slash(&mut st, &c.addr(0), 50_000, "double sign").unwrap();
        assert_eq!(burned, Amount::from_tsr(100));
        st.into_changes()
    };
    c.store.apply(&changes);
    assert_eq!(c.view(bank::supply), supply_before.checked_sub(Amount::from_tsr(100)).unwrap());
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

#[test]
fn provider_registers_with_minimum_stake_and_deregisters_after_unbonding() {
    let mut c = Chain::new(1);
    let low = Msg::Registry(RegistryMsg::Register { info: provider_info(8, 10), stake: Amount::from_tsr(1) });
    let (code, log) = c.run(0, low);
    assert_eq!(code, 7);
    assert!(log.contains("below the minimum"), "{log}");
    assert_eq!(c.run(0, register(8, 10)).0, 0);
    let a = c.addr(0);
    assert_eq!(c.view(|st| registry::provider(st, &a).unwrap().status), ProviderStatus::Active);
    assert_eq!(c.run(0, Msg::Registry(RegistryMsg::Deregister)).0, 0);
    let before = c.balance(&a);
    c.empty_blocks(Params::default().registry.unbonding_blocks);
    assert!(c.view(|st| registry::provider(st, &a)).is_none());
    assert_eq!(c.balance(&a), before.checked_add(Amount::from_tsr(100)).unwrap());
    c.assert_pools_backed();
}

#[test]
fn auction_awards_lowest_reputation_adjusted_bid_and_streams_escrow() {
    let mut c = Chain::new(4);
    for p in 1..=3 {
        assert_eq!(c.run(p, register(8, 10)).0, 0);
    }
    let buyer = c.addr(0);
    let start = c.balance(&buyer);
    assert_eq!(c.run(0, order(4, 1_000, 5, Pricing::Auction)).0, 0);
    let escrow = 1_000 * 5;
    assert_eq!(c.balance(&buyer), Amount(start.micro() - escrow - 1_000));
    let bids = [c.tx(1, bid(1, 900)), c.tx(2, bid(1, 700)), c.tx(3, bid(1, 1_200))];
    let out = c.block(&bids);
    assert_eq!(out.txs[0].code, 0);
    assert_eq!(out.txs[1].code, 0);
    assert_eq!(out.txs[2].code, 7, "bid above max price: {}", out.txs[2].log);
    let out = c.block(&[]);
    let kinds: Vec<&str> = out.end_events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"market.lease_opened"), "{kinds:?}");
    assert!(kinds.contains(&"market.bid_closed"), "losing bids close in the award block: {kinds:?}");
    let lease = c.view(|st| market::lease(st, 1).unwrap());
    assert_eq!(lease.provider, c.addr(2));
    assert_eq!(lease.price_per_block, Amount(700));
    assert_eq!(c.view(|st| market::bids_for(st, 1)).len(), 0);
    // The surplus over the winning price is refunded at the award.
    assert_eq!(c.balance(&buyer), Amount(start.micro() - 700 * 5 - 1_000));
    let provider_before = c.balance(&c.addr(2));
    for _ in 0..5 {
        let hb = c.tx(2, Msg::Registry(RegistryMsg::Heartbeat));
        c.block(&[hb]);
        c.assert_pools_backed();
    }
    let lease = c.view(|st| market::lease(st, 1).unwrap());
    assert!(matches!(lease.state, LeaseState::Closed { .. }), "{:?}", lease.state);
    assert_eq!(lease.paid, Amount(3_500));
    let earned_fees = 5 * 1_000;
    assert!(c.balance(&c.addr(2)).micro() + earned_fees >= provider_before.micro() + 3_500);
    c.assert_supply_matches_balances();
}

#[test]
fn order_without_bids_expires_with_full_refund_and_fixed_price_matches_at_once() {
    let mut c = Chain::new(3);
    let buyer = c.addr(0);
    let start = c.balance(&buyer);
    assert_eq!(c.run(0, order(4, 1_000, 5, Pricing::Auction)).0, 0);
    c.empty_blocks(2);
    assert_eq!(c.view(|st| market::order(st, 1).unwrap().state), OrderState::Expired);
    assert_eq!(c.balance(&buyer), Amount(start.micro() - 1_000), "only the fee is gone");

    assert_eq!(c.run(1, register(8, 100)).0, 0);
    assert_eq!(c.run(2, register(8, 50)).0, 0);
    let (code, log) = c.run(0, order(4, 10, 5, Pricing::Fixed));
    assert_eq!(code, 7, "price below every standing offer: {log}");
    assert_eq!(c.run(0, order(4, 1_000, 5, Pricing::Fixed)).0, 0);
    let o = c.view(|st| market::order(st, 2).unwrap());
    let OrderState::Leased { lease } = o.state else { panic!("fixed order should lease at once: {:?}", o.state) };
    let l = c.view(|st| market::lease(st, lease).unwrap());
    assert_eq!(l.provider, c.addr(2), "cheapest standing price wins");
    assert_eq!(l.price_per_block, Amount(200));
    c.assert_pools_backed();
}

#[test]
fn silent_provider_loses_lease_buyer_refunded_reputation_drops() {
    let mut c = Chain::new(2);
    assert_eq!(c.run(1, register(8, 10)).0, 0);
    assert_eq!(c.run(0, order(4, 100, 1_000, Pricing::Fixed)).0, 0);
    let rep_before = c.view(|st| registry::provider(st, &c.addr(1)).unwrap().reputation.score_ppm());
    c.empty_blocks(Params::default().registry.heartbeat_timeout_blocks + 2);
    let l = c.view(|st| market::lease(st, 1).unwrap());
    assert!(matches!(l.state, LeaseState::Closed { reason: market::CloseReason::ProviderLost, .. }), "{:?}", l.state);
    assert!(l.paid < Amount(40 * 100));
    let p = c.view(|st| registry::provider(st, &c.addr(1)).unwrap());
    assert!(p.reputation.score_ppm() < rep_before);
    assert_eq!(p.failed_leases, 1);
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

#[test]
fn cancel_and_close_need_the_right_signer() {
    let mut c = Chain::new(3);
    assert_eq!(c.run(0, order(4, 100, 10, Pricing::Auction)).0, 0);
    assert_eq!(c.run(1, Msg::Market(MarketMsg::CancelOrder { order: 1 })).0, 9);
    assert_eq!(c.run(0, Msg::Market(MarketMsg::CancelOrder { order: 1 })).0, 0);
    assert_eq!(c.view(|st| market::order(st, 1).unwrap().state), OrderState::Cancelled);
    assert_eq!(c.run(2, register(8, 1)).0, 0);
    assert_eq!(c.run(0, order(4, 100, 10, Pricing::Fixed)).0, 0);
    assert_eq!(c.run(1, Msg::Market(MarketMsg::CloseLease { lease: 1 })).0, 9);
    assert_eq!(c.run(0, Msg::Market(MarketMsg::CloseLease { lease: 1 })).0, 0);
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

#[test]
fn emission_goes_to_validators_and_keeps_supply_accounted() {
    let mut c = Chain::new(1);
    let v = c.validator.address();
    let before = c.balance(&v);
    c.empty_blocks(3);
    let reward = Params::default().rewards.initial_block_reward.mul_div(300_000, 1_000_000).unwrap();
    assert_eq!(c.balance(&v), Amount(before.micro() + 3 * reward.micro()));
    c.view(|st| {
        assert_eq!(rewards::issued(st), Amount(3 * reward.micro()));
        assert_eq!(bank::supply(st), Amount(genesis::genesis_supply(st).micro() + 3 * reward.micro()));
    });
    c.assert_supply_matches_balances();
}
