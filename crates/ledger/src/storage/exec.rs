//! storage execution: deal creation with placement, proofs of storage, deal
//! ends, and the per-block challenge, fault and repair work.

use std::collections::{BTreeMap, BTreeSet};
use tessera_storage::{challenge_indices, leaf_count};
use tessera_types::{Address, Amount, Hash32, Height};

use super::msg::StorageMsg;
use super::state::*;
use crate::error::{invalid, TxError};
use crate::events::{Event, Events};
use crate::registry::{self, ProviderStatus};
use crate::store::{address_at, key, Overlay};
use crate::{bank, BlockContext, Params, TxContext};

const GIB: u128 = 1 << 30;
const EARNED_PREFIX: &str = "storage/earned/";

/// `price` per GiB per block for `bytes` over `blocks`, rounded up.
fn gib_block_cost(price: Amount, bytes: u64, blocks: u64) -> Option<Amount> {
    let numerator = price.micro().checked_mul(bytes as u128)?.checked_mul(blocks as u128)?;
    Some(Amount(numerator.div_ceil(GIB)))
}

/// Escrow a deal locks: the max price for every byte over the whole duration.
pub fn deal_escrow(max_price_per_gib_block: Amount, total_bytes: u64, duration_blocks: u64) -> Option<Amount> {
    gib_block_cost(max_price_per_gib_block, total_bytes, duration_blocks)
}

/// What a segment's placement asks for.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub height: Height,
    pub deal: u64,
    pub segment: u32,
    pub piece_len: u64,
    pub count: usize,
    pub max_price: Amount,
}

/// Chooses `count` distinct providers for the pieces of one segment: active,
/// heartbeating, reputable, offering disk at or below `max_price` with room
/// for `piece_len`, not in `exclude`. The order is a hash of (deal, segment,
/// provider), so placement spreads across providers; distinct regions are
/// taken first.
pub fn place_pieces(st: &Overlay, params: &Params, want: &Placement, exclude: &BTreeSet<Address>) -> Result<Vec<Address>, String> {
    let Placement { height, deal, segment, piece_len, count, max_price } = *want;
    let mut candidates: Vec<(Hash32, Address, String)> = registry::all_providers(st)
        .into_iter()
        .filter(|p| {
            p.status == ProviderStatus::Active
                && p.last_heartbeat + params.registry.heartbeat_timeout_blocks >= height
                && p.reputation.score_ppm() >= params.registry.disqualify_below_ppm
                && p.info.prices.per_gb_disk <= max_price
                && !exclude.contains(&p.owner)
                && (p.info.hardware.disk_gb as u128 * GIB).saturating_sub(used_bytes(st, &p.owner) as u128)
                    >= piece_len as u128
        })
        .map(|p| {
            let mut seed = b"tessera-placement-v1".to_vec();
            seed.extend_from_slice(&deal.to_be_bytes());
            seed.extend_from_slice(&segment.to_be_bytes());
            seed.extend_from_slice(&p.owner.0);
            (Hash32::blake3(&seed), p.owner, p.info.region.clone())
        })
        .collect();
    candidates.sort();
    let found = candidates.len();
    let mut chosen: Vec<Address> = Vec::new();
    let mut regions = BTreeSet::new();
    for (_, owner, region) in &candidates {
        if chosen.len() < count && regions.insert(region.clone()) {
            chosen.push(*owner);
        }
    }
    for (_, owner, _) in &candidates {
        if chosen.len() < count && !chosen.contains(owner) {
            chosen.push(*owner);
        }
    }
    if chosen.len() < count {
        return Err(format!(
            "not enough storage providers: need {count} distinct providers with {piece_len} bytes free at or below \
             {max_price} TSR per GiB per block, found {found}"
        ));
    }
    Ok(chosen)
}

pub fn execute(st: &mut Overlay, ctx: &TxContext, params: &Params, msg: &StorageMsg) -> Result<Events, TxError> {
    match msg {
        StorageMsg::CreateDeal(terms) => Ok(open_deal(st, ctx, params, terms)?.1),
        StorageMsg::CreatePack { terms, members } => {
            let (id, mut events) = open_deal(st, ctx, params, terms)?;
            put_pack_members(st, id, members);
            events.insert(1, Event::new("storage.pack_created").attr("deal", id).attr("cid", terms.cid).attr("members", members.len()));
            Ok(events)
        }
        StorageMsg::ProveStorage { deal: deal_id, piece: piece_idx, epoch, leaves, proof } => {
            let mut d = deal(st, *deal_id).ok_or_else(|| TxError::NotFound(format!("deal {deal_id}")))?;
            if !d.active {
                return Err(invalid(format!("deal {deal_id} has ended")));
            }
            let p = d.pieces.get(*piece_idx as usize).ok_or_else(|| TxError::NotFound(format!("piece {piece_idx} of deal {deal_id}")))?;
            if p.provider != ctx.sender {
                return Err(TxError::Unauthorized(format!("piece {piece_idx} of deal {deal_id} is held by {}", p.provider)));
            }
            let sp = &params.storage;
            let issued = epoch * sp.epoch_blocks + challenge_slot(*deal_id, *piece_idx, sp.epoch_blocks);
            let deadline = issued + sp.challenge_window_blocks;
            let open = pending(st, deadline, *deal_id, *piece_idx)
                .ok_or_else(|| invalid(format!("no open challenge for piece {piece_idx} of deal {deal_id} in epoch {epoch}")))?;
            let beacon = beacon(st, *epoch).ok_or_else(|| invalid(format!("no beacon for epoch {epoch}")))?;
            let leaves_total = leaf_count(p.len);
            let indices = challenge_indices(&beacon, &p.hash, *epoch, leaves_total, sp.challenges_per_piece);
            if leaves.len() != indices.len() {
                return Err(invalid(format!("expected {} challenged leaves, got {}", indices.len(), leaves.len())));
            }
            if !proof.verify(&p.hash, leaves_total, &indices, leaves) {
                return Err(invalid(format!("proof of storage does not verify for the {} challenged leaves", indices.len())));
            }
            delete_pending(st, &open);
            let provider = p.provider;
            let price = registry::provider(st, &provider).map(|x| x.info.prices.per_gb_disk).unwrap_or_default();
            let due = gib_block_cost(price.min(d.max_price_per_gib_block), p.len, sp.epoch_blocks)
                .ok_or(TxError::Overflow("storage payment"))?;
            let pay = due.min(d.escrow_remaining);
            bank::transfer(st, &STORAGE_POOL, &provider, pay)?;
            d.escrow_remaining = d.escrow_remaining.checked_sub(pay).ok_or(TxError::Overflow("escrow"))?;
            d.paid = d.paid.checked_add(pay).ok_or(TxError::Overflow("paid"))?;
            let piece = &mut d.pieces[*piece_idx as usize];
            piece.faults = 0;
            piece.proven_epochs += 1;
            put_deal(st, &d);
            add_earned(st, &provider, pay);
            registry::record_outcome(st, params, &provider, true);
            Ok(vec![Event::new("storage.proof_accepted")
                .attr("deal", deal_id)
                .attr("piece", piece_idx)
                .attr("epoch", epoch)
                .attr("provider", provider)
                .attr("paid", pay)])
        }
        StorageMsg::EndDeal { deal: deal_id } => {
            let d = deal(st, *deal_id).ok_or_else(|| TxError::NotFound(format!("deal {deal_id}")))?;
            if d.owner != ctx.sender {
                return Err(TxError::Unauthorized(format!("only the owner can end deal {deal_id}")));
            }
            if !d.active {
                return Err(invalid(format!("deal {deal_id} has already ended")));
            }
            unschedule_end(st, d.end, d.id);
            close_deal(st, params, d, "ended by owner")
        }
    }
}

/// Opens a deal: escrow locked, each segment's pieces placed on distinct
/// providers, its end scheduled, indexed by content id. Returns its id.
fn open_deal(st: &mut Overlay, ctx: &TxContext, params: &Params, terms: &super::msg::DealTerms) -> Result<(u64, Events), TxError> {
    let super::msg::DealTerms { cid, scheme, segment_bytes, segments, duration_blocks, max_price_per_gib_block } = terms;
    let (segment_bytes, duration_blocks, max_price_per_gib_block) = (*segment_bytes, *duration_blocks, *max_price_per_gib_block);
    let total_bytes = terms.piece_bytes();
    let escrow = terms.escrow().ok_or_else(|| invalid("price x bytes x duration overflows"))?;
    bank::transfer(st, &ctx.sender, &STORAGE_POOL, escrow)?;
    let id = next_deal_id(st);
    let mut pieces = Vec::new();
    let mut events = Vec::new();
    for s in segments {
        let longest = s.pieces.iter().map(|p| p.len).max().unwrap_or(0);
        let want = Placement {
            height: ctx.height,
            deal: id,
            segment: s.segment,
            piece_len: longest,
            count: s.pieces.len(),
            max_price: max_price_per_gib_block,
        };
        let providers = place_pieces(st, params, &want, &BTreeSet::new()).map_err(invalid)?;
        for (i, (meta, provider)) in s.pieces.iter().zip(providers).enumerate() {
            add_used(st, &provider, meta.len as i128);
            events.push(
                Event::new("storage.piece_assigned")
                    .attr("deal", id)
                    .attr("piece", pieces.len())
                    .attr("segment", s.segment)
                    .attr("index", i)
                    .attr("hash", meta.hash)
                    .attr("provider", provider),
            );
            pieces.push(Piece {
                segment: s.segment,
                index: i as u16,
                hash: meta.hash,
                len: meta.len,
                provider,
                faults: 0,
                lost: false,
                proven_epochs: 0,
            });
        }
    }
    let sp = &params.storage;
    let load = deal_proof_load(&pieces, sp.challenges_per_piece);
    let carried = proof_load(st);
    let budget = sp.max_proof_bytes_per_block.saturating_mul(sp.epoch_blocks);
    if sp.max_proof_bytes_per_block > 0 && carried.saturating_add(load) > budget {
        return Err(invalid(format!(
            "the chain is at its proof-of-storage capacity: every piece is proven once an epoch, and the active deals' \
             proofs take {} of the {} KB an epoch carries; this deal's {} pieces need {} KB more. Store fewer, larger \
             pieces (--segment-kib: a proof costs about the same whatever the piece's size) or retry as deals end",
            carried / 1000,
            budget / 1000,
            pieces.len(),
            load.div_ceil(1000)
        )));
    }
    set_proof_load(st, carried + load);
    let end = ctx.height + duration_blocks;
    schedule_end(st, end, id);
    index_deal_cid(st, cid, id);
    let d = Deal {
        id,
        owner: ctx.sender,
        cid: *cid,
        scheme: *scheme,
        segment_bytes,
        segments: segments.iter().map(|s| (s.segment, s.len, s.hash)).collect(),
        pieces,
        max_price_per_gib_block,
        start: ctx.height,
        end,
        escrow_remaining: escrow,
        paid: Amount::ZERO,
        active: true,
    };
    index_deal_slots(st, &d, sp.epoch_blocks);
    for provider in d.pieces.iter().map(|p| p.provider).collect::<BTreeSet<_>>() {
        index_deal_provider(st, &provider, id);
    }
    put_deal(st, &d);
    events.insert(
        0,
        Event::new("storage.deal_created")
            .attr("deal", id)
            .attr("cid", cid)
            .attr("owner", ctx.sender)
            .attr("bytes", total_bytes)
            .attr("escrow", escrow)
            .attr("end", end),
    );
    Ok((id, events))
}

fn add_earned(st: &mut Overlay, provider: &Address, amount: Amount) {
    let k = key(EARNED_PREFIX, &[&provider.0]);
    let now: Amount = st.get_obj(&k).unwrap_or_default();
    st.put_obj(k, &now.checked_add(amount).unwrap_or(now));
}

/// Bytes the proofs of `pieces` put into the chain each epoch.
fn deal_proof_load(pieces: &[Piece], k: u32) -> u64 {
    pieces.iter().map(|p| tessera_storage::proof_bytes(p.len, k)).fold(0u64, u64::saturating_add)
}

fn close_deal(st: &mut Overlay, params: &Params, mut d: Deal, reason: &str) -> Result<Events, TxError> {
    unindex_deal_slots(st, &d, params.storage.epoch_blocks);
    let load = deal_proof_load(&d.pieces, params.storage.challenges_per_piece);
    set_proof_load(st, proof_load(st).saturating_sub(load));
    bank::transfer(st, &STORAGE_POOL, &d.owner, d.escrow_remaining)?;
    let refund = d.escrow_remaining;
    d.escrow_remaining = Amount::ZERO;
    d.active = false;
    for p in &d.pieces {
        add_used(st, &p.provider, -(p.len as i128));
    }
    put_deal(st, &d);
    Ok(vec![Event::new("storage.deal_ended").attr("deal", d.id).attr("reason", reason).attr("paid", d.paid).attr("refund", refund)])
}

/// Moves the lost pieces of `segment` to new providers once its healthy pieces
/// fall to K + margin. Repairers rebuild the moved pieces from the survivors.
fn repair_segment(st: &mut Overlay, params: &Params, height: Height, d: &mut Deal, segment: u32) -> Events {
    let in_segment: Vec<usize> = (0..d.pieces.len()).filter(|i| d.pieces[*i].segment == segment).collect();
    let healthy = in_segment.iter().filter(|i| !d.pieces[**i].lost).count();
    if healthy > d.scheme.data as usize + params.storage.repair_margin as usize {
        return Vec::new();
    }
    let mut events = Vec::new();
    for &i in &in_segment {
        if !d.pieces[i].lost {
            continue;
        }
        let exclude: BTreeSet<Address> = in_segment.iter().map(|j| d.pieces[*j].provider).collect();
        let len = d.pieces[i].len;
        let want = Placement { height, deal: d.id, segment, piece_len: len, count: 1, max_price: d.max_price_per_gib_block };
        match place_pieces(st, params, &want, &exclude) {
            Ok(to) => {
                let from = d.pieces[i].provider;
                add_used(st, &from, -(len as i128));
                add_used(st, &to[0], len as i128);
                index_deal_provider(st, &to[0], d.id);
                let p = &mut d.pieces[i];
                p.provider = to[0];
                p.lost = false;
                p.faults = 0;
                events.push(
                    Event::new("storage.piece_moved")
                        .attr("deal", d.id)
                        .attr("piece", i)
                        .attr("segment", segment)
                        .attr("index", p.index)
                        .attr("hash", p.hash)
                        .attr("from", from)
                        .attr("to", to[0]),
                );
            }
            Err(why) => events.push(
                Event::new("storage.repair_pending").attr("deal", d.id).attr("piece", i).attr("reason", why),
            ),
        }
    }
    events
}

/// Faults for unanswered challenges, deal ends, and a new epoch's challenges.
/// Returns the events and what each storage provider was paid this block.
pub fn end_block(st: &mut Overlay, ctx: &BlockContext, params: &Params) -> (Events, BTreeMap<Address, Amount>) {
    let sp = &params.storage;
    let mut events = Vec::new();

    let mut earned = BTreeMap::new();
    for (rest, v) in st.take_prefix(EARNED_PREFIX.as_bytes()) {
        let amount: Amount = borsh::from_slice(&v).expect("state corrupted: earnings do not decode");
        earned.insert(address_at(&rest), amount);
    }

    for c in take_pending_due(st, ctx.height) {
        let Some(mut d) = deal(st, c.deal) else { continue };
        if !d.active {
            continue;
        }
        let Some(p) = d.pieces.get_mut(c.piece as usize) else { continue };
        p.faults += 1;
        let provider = p.provider;
        let faults = p.faults;
        let newly_lost = faults >= sp.max_faults && !p.lost;
        if newly_lost {
            p.lost = true;
        }
        let segment = p.segment;
        if let Ok(e) = registry::slash_provider(st, &provider, sp.fault_fee, "missed storage proof") {
            events.extend(e);
        }
        registry::record_outcome(st, params, &provider, false);
        events.push(
            Event::new("storage.fault").attr("deal", c.deal).attr("piece", c.piece).attr("provider", provider).attr("faults", faults),
        );
        if newly_lost {
            if let Ok(e) = registry::slash_provider(st, &provider, sp.lost_piece_slash, "lost a stored piece") {
                events.extend(e);
            }
            events.push(Event::new("storage.piece_lost").attr("deal", c.deal).attr("piece", c.piece).attr("provider", provider));
            // Fewer than K pieces of the segment are left that were ever
            // proven: nothing can rebuild it (its upload never finished, or
            // more than M providers lost it). Moving the pieces would only
            // fault every provider they go to, so the deal ends as lost and
            // its unspent escrow goes back to the owner.
            let held = d.pieces.iter().filter(|p| p.segment == segment && !p.lost && p.proven_epochs > 0).count();
            if held < d.scheme.data as usize {
                let k = d.scheme.data;
                unschedule_end(st, d.end, d.id);
                let reason = format!("lost: segment {segment} has {held} proven pieces left, {k} are needed to rebuild it");
                events.extend(close_deal(st, params, d, &reason).expect("invariant: storage pool holds deal escrow"));
                continue;
            }
        }
        events.extend(repair_segment(st, params, ctx.height, &mut d, segment));
        put_deal(st, &d);
    }

    for deal_id in take_ends_at(st, ctx.height) {
        if let Some(d) = deal(st, deal_id)
            && d.active {
                events.extend(close_deal(st, params, d, "completed").expect("invariant: storage pool holds deal escrow"));
            }
    }

    if let (Some(epoch), Some(slot)) = (ctx.height.checked_div(sp.epoch_blocks), ctx.height.checked_rem(sp.epoch_blocks)) {
        if slot == 0 {
            set_beacon(st, epoch, &ctx.beacon);
            // Kept while a challenge of its epoch can still be answered.
            let keep = 2 + sp.challenge_window_blocks / sp.epoch_blocks;
            if epoch >= keep {
                clear_beacon(st, epoch - keep);
            }
        }
        // Epoch 0 has no beacon: its first block is the genesis.
        if epoch > 0 {
            let deadline = ctx.height + sp.challenge_window_blocks;
            let mut issued = 0u64;
            for id in deals_in_slot(st, slot) {
                let Some(d) = deal(st, id) else { continue };
                if !d.active || d.start + sp.upload_grace_blocks > ctx.height {
                    continue;
                }
                for (i, p) in d.pieces.iter().enumerate() {
                    if !p.lost && challenge_slot(d.id, i as u32, sp.epoch_blocks) == slot {
                        put_pending(st, &PendingChallenge { deal: d.id, piece: i as u32, epoch, deadline });
                        issued += 1;
                    }
                }
            }
            if issued > 0 {
                events.push(
                    Event::new("storage.challenges_issued").attr("epoch", epoch).attr("pieces", issued).attr("deadline", deadline),
                );
            }
        }
    }
    (events, earned)
}
