//! Block execution: batch signature check, the ante step (chain id, nonce, fee),
//! message dispatch with per-transaction rollback, then the modules' end-block
//! work and the supply check.

use tessera_crypto::{verify_batch, SignedMessage};
use tessera_types::{Amount, Hash32};

use crate::error::TxError;
use crate::events::Events;
use crate::params::{chain_id, params};
use crate::staking::Validator;
use crate::store::Overlay;
use crate::tx::{Msg, SignedTx};
use crate::{bank, genesis, market, registry, rewards, staking, storage, BlockContext, Params, TxContext};

/// Result of one transaction as recorded in the block. `code` 0 is success.
#[derive(Clone, Debug, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub struct TxOutcome {
    pub hash: Hash32,
    pub code: u32,
    pub log: String,
    pub events: Events,
}

pub struct BlockOutcome {
    pub txs: Vec<TxOutcome>,
    /// Events of the end-of-block work (auctions, escrow, unbonding, rewards).
    pub end_events: Events,
    /// Validator set for the next height.
    pub validator_set: Vec<(Validator, u64)>,
}

/// Mempool admission: everything the block would check, against current state.
/// `pending_nonce` is the next nonce the mempool expects from this signer.
pub fn check_tx(st: &Overlay, tx: &SignedTx, pending_nonce: Option<u64>) -> Result<(), TxError> {
    tx.validate_basic()?;
    if !tx.verify_signature() {
        return Err(TxError::BadSignature(tx.body.signer_address()));
    }
    check_tx_state(st, tx, pending_nonce)
}

/// The state-dependent part of [`check_tx`]: chain, nonce, fee and funds.
pub fn check_tx_state(st: &Overlay, tx: &SignedTx, pending_nonce: Option<u64>) -> Result<(), TxError> {
    let p = params(st);
    let chain = chain_id(st);
    if tx.body.chain_id != chain {
        return Err(TxError::WrongChain { expected: chain, found: tx.body.chain_id.clone() });
    }
    let sender = tx.body.signer_address();
    let acct = bank::account(st, &sender);
    let expected = pending_nonce.unwrap_or(acct.nonce);
    if tx.body.nonce != expected {
        return Err(TxError::WrongNonce { address: sender, expected, found: tx.body.nonce });
    }
    if tx.body.fee < p.bank.min_fee {
        return Err(TxError::FeeTooLow { min: p.bank.min_fee, offered: tx.body.fee });
    }
    let needed = tx.body.fee.checked_add(direct_spend(&tx.body.msg)).ok_or(TxError::Overflow("fee + amount"))?;
    if acct.balance < needed {
        return Err(TxError::InsufficientFunds { address: sender, balance: acct.balance, needed });
    }
    Ok(())
}

/// Tokens a message moves out of the signer's account for sure, so the mempool
/// can refuse what the account cannot pay.
fn direct_spend(msg: &Msg) -> Amount {
    use crate::bank::BankMsg;
    use crate::market::MarketMsg;
    use crate::registry::RegistryMsg;
    use crate::staking::StakingMsg;
    match msg {
        Msg::Bank(BankMsg::Transfer { amount, .. }) => *amount,
        Msg::Staking(StakingMsg::Bond { amount, .. }) => *amount,
        Msg::Staking(StakingMsg::CreateValidator { self_bond, .. }) => *self_bond,
        Msg::Registry(RegistryMsg::Register { stake, .. }) => *stake,
        Msg::Market(MarketMsg::CreateOrder { spec }) => {
            spec.max_price_per_block.checked_mul(spec.duration_blocks as u128).unwrap_or(Amount(u128::MAX))
        }
        Msg::Jobs(crate::jobs::JobMsg::Submit { spec }) => {
            spec.order.max_price_per_block.checked_mul(spec.order.duration_blocks as u128).unwrap_or(Amount(u128::MAX))
        }
        Msg::Storage(m) if m.deal_terms().is_some() => m.deal_terms().and_then(|t| t.escrow()).unwrap_or(Amount(u128::MAX)),
        _ => Amount::ZERO,
    }
}

/// Verifies every transaction's signature in one batch; one verdict per transaction.
pub fn verify_signatures(txs: &[SignedTx]) -> Vec<bool> {
    let sign_bytes: Vec<Vec<u8>> = txs.iter().map(|t| t.body.sign_bytes()).collect();
    let items: Vec<SignedMessage> = txs
        .iter()
        .zip(&sign_bytes)
        .map(|(t, m)| SignedMessage { public_key: t.body.signer.0, message: m, signature: t.signature })
        .collect();
    verify_batch(&items)
}

/// Executes a block, checking its signatures first.
pub fn execute_block(st: &mut Overlay, ctx: &BlockContext, txs: &[SignedTx]) -> BlockOutcome {
    let verdicts = verify_signatures(txs);
    execute_verified_block(st, ctx, txs, &verdicts)
}

/// Executes a block whose signatures the caller already checked with
/// [`verify_signatures`] or [`check_tx`] (a node verifies at mempool admission,
/// on another thread, so execution need not repeat it). `verdicts[i]` is the
/// verdict for `txs[i]`; a transaction without a true verdict is rejected.
pub fn execute_verified_block(st: &mut Overlay, ctx: &BlockContext, txs: &[SignedTx], verdicts: &[bool]) -> BlockOutcome {
    let p = params(st);
    let chain = chain_id(st);
    let mut outcomes = Vec::with_capacity(txs.len());
    for (i, tx) in txs.iter().enumerate() {
        let signature_ok = verdicts.get(i).copied().unwrap_or(false);
        let hash = tx.hash();
        let (code, log, events) = match apply_tx(st, ctx, &p, &chain, tx, signature_ok) {
            Ok(events) => (0, String::new(), events),
            Err(e) => (e.code(), e.to_string(), Vec::new()),
        };
        outcomes.push(TxOutcome { hash, code, log, events });
    }

    let mut end_events = staking::end_block(st, ctx);
    end_events.extend(registry::end_block(st, ctx));
    let (market_events, mut provider_work) = market::end_block(st, ctx, &p);
    end_events.extend(market_events);
    let (storage_events, storage_work) = storage::end_block(st, ctx, &p);
    end_events.extend(storage_events);
    for (provider, amount) in storage_work {
        let entry = provider_work.entry(provider).or_default();
        *entry = entry.checked_add(amount).expect("earnings overflow");
    }
    let validator_set = staking::validator_set(st, &p);
    end_events.extend(rewards::end_block(st, ctx, &p, &validator_set, &provider_work));
    st.commit_tx();
    assert_supply_conserved(st);
    BlockOutcome { txs: outcomes, end_events, validator_set }
}

/// Ante step then message. The ante step (nonce bump, fee) stays even when the
/// message fails; a failed message's own writes are rolled back.
fn apply_tx(
    st: &mut Overlay,
    ctx: &BlockContext,
    p: &Params,
    chain: &str,
    tx: &SignedTx,
    signature_ok: bool,
) -> Result<Events, TxError> {
    let sender = tx.body.signer_address();
    if !signature_ok {
        return Err(TxError::BadSignature(sender));
    }
    tx.validate_basic()?;
    if tx.body.chain_id != chain {
        return Err(TxError::WrongChain { expected: chain.to_string(), found: tx.body.chain_id.clone() });
    }
    let mut acct = bank::account(st, &sender);
    if tx.body.nonce != acct.nonce {
        return Err(TxError::WrongNonce { address: sender, expected: acct.nonce, found: tx.body.nonce });
    }
    if tx.body.fee < p.bank.min_fee {
        return Err(TxError::FeeTooLow { min: p.bank.min_fee, offered: tx.body.fee });
    }
    acct.balance = acct.balance.checked_sub(tx.body.fee).ok_or(TxError::InsufficientFunds {
        address: sender,
        balance: acct.balance,
        needed: tx.body.fee,
    })?;
    acct.nonce += 1;
    bank::put_account(st, &sender, acct);
    bank::credit(st, &ctx.proposer, tx.body.fee)?;
    st.commit_tx();

    let tx_ctx = TxContext { sender, height: ctx.height, time_ms: ctx.time_ms };
    let result = match &tx.body.msg {
        Msg::Bank(m) => bank::execute(st, &tx_ctx, m),
        Msg::Staking(m) => staking::execute(st, &tx_ctx, p, m),
        Msg::Registry(m) => registry::execute(st, &tx_ctx, p, m),
        Msg::Market(m) => market::execute(st, &tx_ctx, p, m),
        Msg::Storage(m) => storage::execute(st, &tx_ctx, p, m),
        Msg::Jobs(m) => crate::jobs::execute(st, &tx_ctx, p, m),
    };
    match result {
        Ok(events) => {
            st.commit_tx();
            Ok(events)
        }
        Err(e) => {
            st.rollback_tx();
            Err(e)
        }
    }
}

/// Money invariant, checked in release builds too: the supply counter moves
/// only by emission and burns. Crashing beats continuing with a broken ledger.
fn assert_supply_conserved(st: &Overlay) {
    let expected = genesis::genesis_supply(st)
        .checked_add(rewards::issued(st))
        .and_then(|s| s.checked_sub(bank::burned(st)));
    assert_eq!(Some(bank::supply(st)), expected, "supply invariant broken: supply != genesis + issued - burned");
}
