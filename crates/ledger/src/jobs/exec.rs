//! job execution: submit, report, cancel, and the market's lease hooks.

use tessera_types::{Address, Height};

use super::msg::{JobMsg, JobSpec, Outcome};
use super::state::*;
use crate::error::{invalid, TxError};
use crate::events::{Event, Events};
use crate::market::{self, CloseReason, Lease};
use crate::store::Overlay;
use crate::{registry, Params, TxContext};

pub fn execute(st: &mut Overlay, ctx: &TxContext, params: &Params, msg: &JobMsg) -> Result<Events, TxError> {
    match msg {
        JobMsg::Submit { spec } => submit(st, ctx, params, spec),
        JobMsg::Report { job: id, outcome } => {
            let (j, lease) = reportable(st, ctx, *id)?;
            report(st, params, ctx, j, lease, outcome)
        }
        JobMsg::Reports { reports } => {
            let mut events = Vec::new();
            for (id, outcome) in reports {
                // Checked before anything is written: a refused report leaves no trace but its event.
                match reportable(st, ctx, *id) {
                    Ok((j, lease)) => events.extend(report(st, params, ctx, j, lease, outcome)?),
                    Err(e) => events.push(Event::new("jobs.report_refused").attr("job", id).attr("reason", e.to_string())),
                }
            }
            Ok(events)
        }
        JobMsg::Cancel { job: id } => {
            let j = job(st, *id).ok_or_else(|| TxError::NotFound(format!("job {id}")))?;
            if j.buyer != ctx.sender {
                return Err(TxError::Unauthorized(format!("only the buyer can cancel job {id}")));
            }
            match j.state {
                JobState::Queued { order } => {
                    let mut events = market::cancel_order(st, order)?;
                    finish(st, *id, JobState::Cancelled { at: ctx.height });
                    events.push(Event::new("jobs.cancelled").attr("job", id));
                    Ok(events)
                }
                // The close hook marks the job cancelled.
                JobState::Leased { lease, .. } => market::close_lease_by(st, params, lease, CloseReason::ClosedByBuyer, ctx.height),
                ref s => Err(invalid(format!("job {id} is already {}", s.label()))),
            }
        }
    }
}

/// The job and its lease, if the sender may report it now.
fn reportable(st: &Overlay, ctx: &TxContext, id: u64) -> Result<(Job, u64), TxError> {
    let j = job(st, id).ok_or_else(|| TxError::NotFound(format!("job {id}")))?;
    let JobState::Leased { lease, provider, .. } = j.state else {
        return Err(invalid(format!("job {id} is {}, not running", j.state.label())));
    };
    if provider != ctx.sender {
        return Err(TxError::Unauthorized(format!("job {id} is leased to {provider}, not {}", ctx.sender)));
    }
    Ok((j, lease))
}

/// Records how a job ended and settles its lease.
fn report(st: &mut Overlay, params: &Params, ctx: &TxContext, mut j: Job, lease_id: u64, outcome: &Outcome) -> Result<Events, TxError> {
    let (id, provider) = (j.id, ctx.sender);
    let (event, state) = match outcome {
        Outcome::Succeeded { result, size } => (
            Event::new("jobs.succeeded").attr("result", result).attr("size", size),
            JobState::Succeeded { result: *result, size: *size, provider, lease: lease_id, at: ctx.height },
        ),
        Outcome::Failed { reason } => (
            Event::new("jobs.failed").attr("reason", reason),
            JobState::Failed { reason: reason.clone(), at: ctx.height },
        ),
    };
    // Final before the lease closes, so the close hook leaves the job alone.
    j.state = state;
    put_job(st, &j);
    let mut events = market::settle_lease(st, params, lease_id, ctx.height)?;
    if let Some(l) = market::lease(st, lease_id) {
        j.paid = j.paid.checked_add(l.paid).ok_or(TxError::Overflow("job paid"))?;
    }
    put_job(st, &j);
    events.push(event.attr("job", id).attr("provider", provider).attr("paid", j.paid));
    Ok(events)
}

fn submit(st: &mut Overlay, ctx: &TxContext, params: &Params, spec: &JobSpec) -> Result<Events, TxError> {
    let id = next_job_id(st);
    let (order, mut events) = market::open_order(st, ctx.sender, ctx.height, params, &spec.order)?;
    link_order(st, order, id);
    let (state, leased) = placed(st, id, order, ctx.height);
    let j = Job {
        id,
        buyer: ctx.sender,
        spec: spec.clone(),
        created_at: ctx.height,
        state,
        orders: vec![order],
        lost_to: Vec::new(),
        paid: tessera_types::Amount::ZERO,
    };
    put_job(st, &j);
    events.extend(leased);
    events.insert(0, order_terms(Event::new("jobs.submitted").attr("job", id).attr("buyer", ctx.sender).attr("kind", spec.kind.name()).attr("order", order), spec));
    Ok(events)
}

/// What a provider needs to decide on a bid, so that it need not look the job up.
fn order_terms(e: Event, spec: &JobSpec) -> Event {
    let o = &spec.order;
    let r = &o.resources;
    e.attr("pricing", if o.pricing == market::Pricing::Auction { "auction" } else { "fixed" })
        .attr("max_price_per_block", o.max_price_per_block)
        .attr("cpu_cores", r.cpu_cores)
        .attr("ram_mb", r.ram_mb)
        .attr("disk_gb", r.disk_gb)
        .attr("gpus", r.gpus)
        .attr("gpu_memory_mb", r.gpu_memory_mb)
}

/// The state of a job whose order was just placed: a fixed-price order may
/// already be matched (the lease opened before the order was linked to the job).
fn placed(st: &Overlay, id: u64, order: u64, height: Height) -> (JobState, Events) {
    if let Some(market::Order { state: market::OrderState::Leased { lease }, .. }) = market::order(st, order)
        && let Some(l) = market::lease(st, lease)
    {
        let event = Event::new("jobs.leased").attr("job", id).attr("lease", lease).attr("provider", l.provider);
        return (JobState::Leased { lease, provider: l.provider, since: height }, vec![event]);
    }
    (JobState::Queued { order }, Vec::new())
}

fn finish(st: &mut Overlay, id: u64, state: JobState) {
    if let Some(mut j) = job(st, id) {
        j.state = state;
        put_job(st, &j);
    }
}

/// A lease opened on a job's order: the job now runs there.
pub(crate) fn on_lease_opened(st: &mut Overlay, order: u64, lease: u64, provider: Address, height: Height) -> Events {
    let Some(id) = job_of_order(st, order) else { return Vec::new() };
    let Some(mut j) = job(st, id) else { return Vec::new() };
    j.state = JobState::Leased { lease, provider, since: height };
    put_job(st, &j);
    vec![Event::new("jobs.leased").attr("job", id).attr("lease", lease).attr("provider", provider)]
}

/// An auction for a job's order closed without an eligible bid.
pub(crate) fn on_order_expired(st: &mut Overlay, order: u64, height: Height) -> Events {
    let Some(id) = job_of_order(st, order) else { return Vec::new() };
    let reason = "no eligible provider bid at or below the max price; raise max_price_per_block or ask for less".to_string();
    finish(st, id, JobState::Failed { reason: reason.clone(), at: height });
    vec![Event::new("jobs.failed").attr("job", id).attr("reason", reason)]
}

/// A job's lease closed. When the provider finished (its report came first)
/// nothing is left to do; when the buyer closed it the job is cancelled; when
/// the provider was lost, gave up, or ran out the lease without a result, what
/// it was paid goes back to the buyer from its stake (the buyer pays only for
/// completed work) and the job returns to the market.
pub(crate) fn on_lease_closed(st: &mut Overlay, params: &Params, l: &Lease, reason: CloseReason, height: Height) -> Events {
    let Some(id) = job_of_order(st, l.order) else { return Vec::new() };
    let Some(mut j) = job(st, id) else { return Vec::new() };
    if !matches!(j.state, JobState::Leased { lease, .. } if lease == l.id) {
        return Vec::new();
    }
    let mut events = Vec::new();
    if reason == CloseReason::ClosedByBuyer {
        j.paid = j.paid.checked_add(l.paid).expect("paid within supply");
        j.state = JobState::Cancelled { at: height };
        put_job(st, &j);
        events.push(Event::new("jobs.cancelled").attr("job", id).attr("paid", l.paid));
        return events;
    }
    let returned = registry::claw_back(st, &l.provider, &l.buyer, l.paid);
    let kept = l.paid.checked_sub(returned).expect("claw-back <= paid");
    j.paid = j.paid.checked_add(kept).expect("paid within supply");
    j.lost_to.push(l.provider);
    events.push(
        Event::new("jobs.provider_lost")
            .attr("job", id)
            .attr("provider", l.provider)
            .attr("reason", format!("{reason:?}"))
            .attr("returned", returned),
    );
    if j.orders.len() as u32 >= params.market.max_job_attempts {
        let why = format!("gave up after {} attempts; the last provider ({}) was lost", j.orders.len(), l.provider);
        events.push(Event::new("jobs.failed").attr("job", id).attr("reason", &why));
        j.state = JobState::Failed { reason: why, at: height };
        put_job(st, &j);
        return events;
    }
    match market::open_order(st, j.buyer, height, params, &j.spec.order) {
        Ok((order, order_events)) => {
            link_order(st, order, id);
            let (state, leased) = placed(st, id, order, height);
            j.orders.push(order);
            j.state = state;
            put_job(st, &j);
            events.push(order_terms(Event::new("jobs.replaced").attr("job", id).attr("order", order), &j.spec));
            events.extend(order_events);
            events.extend(leased);
        }
        Err(e) => {
            let why = format!("could not return to the market after losing {}: {e}", l.provider);
            events.push(Event::new("jobs.failed").attr("job", id).attr("reason", &why));
            j.state = JobState::Failed { reason: why, at: height };
            put_job(st, &j);
        }
    }
    events
}
