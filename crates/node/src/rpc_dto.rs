//! Conversions from ledger and block types to the RPC's JSON shapes.

use tessera_client::api::*;
use tessera_ledger::market::{Bid, CloseReason, Lease, LeaseState, Order, OrderState};
use tessera_ledger::registry::{Provider, ProviderStatus};
use tessera_ledger::{Msg, SignedTx, TxOutcome};

use crate::block::{BlockRecord, Header};

pub fn header_dto(h: &Header) -> HeaderDto {
    HeaderDto {
        chain_id: h.chain_id.clone(),
        height: h.height,
        time_ms: h.time_ms,
        prev_hash: h.prev_hash,
        tx_root: h.tx_root,
        app_hash: h.app_hash,
        proposer: h.proposer,
    }
}

impl From<&HeaderDto> for Header {
    fn from(h: &HeaderDto) -> Header {
        Header {
            chain_id: h.chain_id.clone(),
            height: h.height,
            time_ms: h.time_ms,
            prev_hash: h.prev_hash,
            tx_root: h.tx_root,
            app_hash: h.app_hash,
            proposer: h.proposer,
        }
    }
}

pub fn msg_name(msg: &Msg) -> String {
    use tessera_ledger::bank::BankMsg;
    use tessera_ledger::market::MarketMsg;
    use tessera_ledger::registry::RegistryMsg;
    use tessera_ledger::staking::StakingMsg;
    use tessera_ledger::jobs::JobMsg;
    use tessera_ledger::storage::StorageMsg;
    match msg {
        Msg::Bank(BankMsg::Transfer { .. }) => "bank.transfer",
        Msg::Staking(StakingMsg::CreateValidator { .. }) => "staking.create_validator",
        Msg::Staking(StakingMsg::Bond { .. }) => "staking.bond",
        Msg::Staking(StakingMsg::Unbond { .. }) => "staking.unbond",
        Msg::Registry(RegistryMsg::Register { .. }) => "registry.register",
        Msg::Registry(RegistryMsg::Update { .. }) => "registry.update",
        Msg::Registry(RegistryMsg::Deregister) => "registry.deregister",
        Msg::Registry(RegistryMsg::Heartbeat) => "registry.heartbeat",
        Msg::Market(MarketMsg::CreateOrder { .. }) => "market.create_order",
        Msg::Market(MarketMsg::PlaceBid { .. }) => "market.place_bid",
        Msg::Market(MarketMsg::CancelOrder { .. }) => "market.cancel_order",
        Msg::Market(MarketMsg::CloseLease { .. }) => "market.close_lease",
        Msg::Storage(StorageMsg::CreateDeal(_)) => "storage.create_deal",
        Msg::Storage(StorageMsg::CreatePack { .. }) => "storage.create_pack",
        Msg::Storage(StorageMsg::ProveStorage { .. }) => "storage.prove",
        Msg::Storage(StorageMsg::EndDeal { .. }) => "storage.end_deal",
        Msg::Jobs(JobMsg::Submit { .. }) => "jobs.submit",
        Msg::Jobs(JobMsg::Report { .. }) => "jobs.report",
        Msg::Jobs(JobMsg::Cancel { .. }) => "jobs.cancel",
        Msg::Jobs(JobMsg::Reports { .. }) => "jobs.reports",
    }
    .to_string()
}

pub fn tx_result_dto(record: &BlockRecord, index: usize) -> Option<TxResultDto> {
    let outcome: &TxOutcome = record.outcomes.get(index)?;
    let tx = SignedTx::decode(record.block.txs.get(index)?).ok()?;
    Some(TxResultDto {
        hash: outcome.hash,
        height: record.block.header.height,
        index: index as u32,
        signer: tx.body.signer_address(),
        nonce: tx.body.nonce,
        fee: tx.body.fee,
        msg: msg_name(&tx.body.msg),
        code: outcome.code,
        log: outcome.log.clone(),
        events: outcome.events.clone(),
    })
}

pub fn block_dto(record: &BlockRecord) -> BlockDto {
    BlockDto {
        hash: record.block.header.hash(),
        header: header_dto(&record.block.header),
        txs: (0..record.outcomes.len()).filter_map(|i| tx_result_dto(record, i)).collect(),
        end_events: record.end_events.clone(),
        commit: record.certificate.clone(),
    }
}

pub fn block_event_json(record: &BlockRecord) -> String {
    let dto = BlockEventDto {
        height: record.block.header.height,
        hash: record.block.header.hash(),
        time_ms: record.block.header.time_ms,
        app_hash: record.block.header.app_hash,
        txs: (0..record.outcomes.len()).filter_map(|i| tx_result_dto(record, i)).collect(),
        end_events: record.end_events.clone(),
    };
    serde_json::to_string(&dto).expect("event serialises")
}

pub fn provider_dto(p: &Provider) -> ProviderDto {
    ProviderDto {
        owner: p.owner,
        info: p.info.clone(),
        stake: p.stake,
        status: match p.status {
            ProviderStatus::Active => "active".into(),
            ProviderStatus::Unbonding { until } => format!("unbonding until {until}"),
        },
        registered_at: p.registered_at,
        last_heartbeat: p.last_heartbeat,
        reputation_ppm: p.reputation.score_ppm(),
        active_leases: p.active_leases,
        completed_leases: p.completed_leases,
        failed_leases: p.failed_leases,
    }
}

pub fn order_dto(o: &Order, bids: &[Bid]) -> OrderDto {
    let (state, lease) = match o.state {
        OrderState::Open { closes_at } => (format!("open until {closes_at}"), None),
        OrderState::Leased { lease } => (format!("leased (lease {lease})"), Some(lease)),
        OrderState::Expired => ("expired".into(), None),
        OrderState::Cancelled => ("cancelled".into(), None),
    };
    OrderDto {
        id: o.id,
        buyer: o.buyer,
        spec: o.spec.clone(),
        created_at: o.created_at,
        escrow: o.escrow,
        state,
        lease,
        bids: bids
            .iter()
            .map(|b| BidDto { provider: b.provider, price_per_block: b.price_per_block, placed_at: b.placed_at })
            .collect(),
    }
}

pub fn lease_dto(l: &Lease) -> LeaseDto {
    let state = match l.state {
        LeaseState::Active => "active".to_string(),
        LeaseState::Closed { at, reason } => {
            let why = match reason {
                CloseReason::Completed => "completed",
                CloseReason::ClosedByBuyer => "closed by buyer",
                CloseReason::ClosedByProvider => "closed by provider",
                CloseReason::ProviderLost => "provider lost",
                CloseReason::NoResult => "ran out without a result",
            };
            format!("closed at {at}: {why}")
        }
    };
    LeaseDto {
        id: l.id,
        order: l.order,
        buyer: l.buyer,
        provider: l.provider,
        price_per_block: l.price_per_block,
        start: l.start,
        end: l.end,
        paid: l.paid,
        escrow_remaining: l.escrow_remaining,
        state,
    }
}

/// `members` are the pack members to show (see `DealDto::members`); `packed` counts them all.
pub fn deal_dto(d: &tessera_ledger::storage::Deal, packed: usize, members: Vec<tessera_ledger::storage::PackMember>) -> DealDto {
    DealDto {
        packed,
        members,
        id: d.id,
        owner: d.owner,
        cid: d.cid,
        erasure: d.scheme.to_string(),
        segment_bytes: d.segment_bytes,
        segments: d.segments.clone(),
        start: d.start,
        end: d.end,
        escrow_remaining: d.escrow_remaining,
        paid: d.paid,
        active: d.active,
        pieces: d
            .pieces
            .iter()
            .map(|p| DealPieceDto {
                segment: p.segment,
                index: p.index,
                hash: p.hash,
                len: p.len,
                provider: p.provider,
                faults: p.faults,
                lost: p.lost,
                proven_epochs: p.proven_epochs,
            })
            .collect(),
    }
}

pub fn job_dto(j: &tessera_ledger::jobs::Job, st: &tessera_ledger::Overlay) -> JobDto {
    use tessera_ledger::jobs::JobState;
    let (mut lease, mut provider, mut result, mut result_size, mut reason, mut finished_at) = (None, None, None, None, None, None);
    match &j.state {
        JobState::Queued { .. } => {}
        JobState::Leased { lease: l, provider: p, .. } => {
            lease = Some(*l);
            provider = Some(*p);
        }
        JobState::Succeeded { result: r, size, provider: p, lease: l, at } => {
            (lease, provider, result, result_size, finished_at) = (Some(*l), Some(*p), Some(*r), Some(*size), Some(*at));
        }
        JobState::Failed { reason: why, at } => {
            reason = Some(why.clone());
            finished_at = Some(*at);
        }
        JobState::Cancelled { at } => finished_at = Some(*at),
    }
    // A failed or cancelled job keeps the provider that last held it, for its logs.
    if provider.is_none()
        && let Some(l) = j.orders.last().and_then(|o| tessera_ledger::market::order(st, *o)).and_then(|o| match o.state {
            tessera_ledger::market::OrderState::Leased { lease } => tessera_ledger::market::lease(st, lease),
            _ => None,
        })
    {
        lease = Some(l.id);
        provider = Some(l.provider);
    }
    JobDto {
        id: j.id,
        buyer: j.buyer,
        name: j.spec.name.clone(),
        kind: j.spec.kind.name().to_string(),
        spec: hex::encode(borsh::to_vec(&j.spec).expect("spec encodes")),
        created_at: j.created_at,
        state: j.state.label().to_string(),
        order: j.orders.last().copied().unwrap_or(0),
        lease,
        provider,
        result,
        result_size,
        reason,
        finished_at,
        orders: j.orders.clone(),
        lost_to: j.lost_to.clone(),
        paid: j.paid,
        max_price_per_block: j.spec.order.max_price_per_block,
        duration_blocks: j.spec.order.duration_blocks,
    }
}
