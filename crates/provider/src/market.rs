//! The provider's market side: follows the node's event stream (`/events`),
//! feeds the decision core, places bids, runs leased jobs on worker threads
//! and reports their results, batched. On start and after every reconnect it resyncs
//! from the ledger, so a restarted provider picks up the leases it holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;
use tessera_client::api::{BlockEventDto, JobDto};
use tessera_client::events::{BlockStream, StreamItem};
use tessera_client::Client;
use tessera_crypto::KeyPair;
use tessera_ledger::jobs::{JobMsg, Outcome, MAX_REPORTS};
use tessera_ledger::market::{BasePrices, MarketMsg, Pricing, Resources};
use tessera_ledger::{Event, Msg};
use tessera_types::{Address, Amount};

use crate::decide::{Action, Decider, Input, OpenOrder};
use crate::executor::{Executor, Verdict};

pub struct MarketConfig {
    pub key: KeyPair,
    pub rpc: String,
    pub chain_id: String,
}

/// Runs until `stop` is set.
pub fn run(cfg: MarketConfig, mut decider: Decider, executor: Arc<Executor>, stop: Arc<AtomicBool>) {
    let me = cfg.key.address();
    let client = Client::new(&cfg.rpc);
    let (tx, rx) = channel::<Input>();
    let dynamic = decider.strategy == crate::decide::Strategy::Dynamic;
    {
        let (tx, rpc, stop) = (tx.clone(), cfg.rpc.clone(), stop.clone());
        std::thread::Builder::new()
            .name("market-events".into())
            .spawn(move || follow_events(&rpc, me, dynamic, &tx, &stop))
            .expect("spawn event thread");
    }
    // A fixed pool of workers runs leased jobs (a burst of leases waits in the
    // queue instead of starting a thread each). Finished runs go to one
    // reporter thread, which sends whatever has queued as one transaction and
    // confirms it later.
    let (work_tx, work_rx) = channel::<(u64, u64)>();
    let work_rx = Arc::new(std::sync::Mutex::new(work_rx));
    let (report_tx, report_rx) = channel::<Finished>();
    {
        let (client, key, chain_id) = (client.clone(), cfg.key.clone(), cfg.chain_id.clone());
        std::thread::Builder::new()
            .name("reporter".into())
            .spawn(move || report_loop(&client, &key, &chain_id, report_rx))
            .expect("spawn reporter");
    }
    for w in 0..decider.max_jobs.max(1) {
        let (executor, tx, me, client, work_rx, report_tx) =
            (executor.clone(), tx.clone(), me, client.clone(), work_rx.clone(), report_tx.clone());
        std::thread::Builder::new()
            .name(format!("job-worker-{w}"))
            .spawn(move || loop {
                let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((job, lease)) = next else { return };
                if let Some(finished) = run_job(&executor, &client, me, job, lease) {
                    let _ = report_tx.send(finished);
                }
                let _ = tx.send(Input::JobDone { job });
            })
            .expect("spawn job worker");
    }
    while !stop.load(Ordering::Relaxed) {
        let input = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(i) => i,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for action in decider.step(input) {
            match action {
                Action::Bid { order, price } => {
                    let msg = Msg::Market(MarketMsg::PlaceBid { order, price_per_block: price });
                    match crate::agent::submit(&client, &cfg.key, &cfg.chain_id, msg) {
                        Ok(_) => println!("provider {me}: bid {price} TSR/block on order {order}"),
                        Err(e) => eprintln!("provider {me}: bid on order {order} refused: {e}"),
                    }
                }
                Action::Run { job, lease } => {
                    let _ = work_tx.send((job, lease));
                }
                Action::Abort { job } => println!("provider {me}: job {job} left this provider; its result will not be reported"),
            }
        }
    }
}

/// A finished run, to be reported.
enum Finished {
    Report { job: u64, outcome: Outcome },
    HandBack { lease: u64 },
}

/// Reports sent in one transaction and not yet seen committed.
struct PendingReport {
    reports: Vec<(u64, Outcome)>,
    hash: tessera_types::Hash32,
    attempt: u32,
    /// Times it was looked up and not found.
    misses: u32,
    due: std::time::Instant,
}

/// Lookups (3 s apart) before a report missing from the chain is sent again:
/// under load it may simply be waiting in the mempool.
const REPORT_MISSES: u32 = 5;
const REPORT_ATTEMPTS: u32 = 5;

/// Runs one job; returns what to report (nothing when the job cannot be read).
fn run_job(executor: &Executor, client: &Client, me: Address, job: u64, lease: u64) -> Option<Finished> {
    let dto = match client.get::<JobDto>(&format!("/jobs/{job}")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("provider {me}: cannot read job {job}: {e}");
            return None;
        }
    };
    let spec = match dto.decode_spec() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("provider {me}: {e}");
            return None;
        }
    };
    println!("provider {me}: running job {job} ({} {:?}) on lease {lease}", spec.kind.name(), spec.name);
    Some(match executor.run(job, lease, &spec) {
        Verdict::Report(outcome) => Finished::Report { job, outcome },
        Verdict::HandBack(reason) => {
            eprintln!("provider {me}: cannot run job {job}: {reason}; handing the lease back");
            Finished::HandBack { lease }
        }
    })
}

/// The message that reports `reports`: one report alone, or a batch.
fn reports_msg(reports: &[(u64, Outcome)]) -> Msg {
    match reports {
        [(job, outcome)] => Msg::Jobs(JobMsg::Report { job: *job, outcome: outcome.clone() }),
        _ => Msg::Jobs(JobMsg::Reports { reports: reports.to_vec() }),
    }
}

/// Sends finished runs as they come: everything queued while the previous
/// transaction was being sent goes out together (up to `MAX_REPORTS`). The
/// report settles the lease. It is not polled for: a few seconds after
/// sending, the reporter looks it up once, and sends again only the reports
/// the node lost (a second report of a settled job is refused and changes
/// nothing).
fn report_loop(client: &Client, key: &KeyPair, chain_id: &str, rx: Receiver<Finished>) {
    let me = key.address();
    let mut pending: VecDeque<PendingReport> = VecDeque::new();
    let mut open = true;
    while open || !pending.is_empty() {
        let mut batch = Vec::new();
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(f) => batch.push(f),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                open = false;
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        while batch.len() < MAX_REPORTS
            && let Ok(f) = rx.try_recv()
        {
            batch.push(f);
        }
        let mut reports = Vec::new();
        for f in batch {
            match f {
                Finished::Report { job, outcome } => reports.push((job, outcome)),
                Finished::HandBack { lease } => {
                    if let Err(e) = crate::agent::submit(client, key, chain_id, Msg::Market(MarketMsg::CloseLease { lease })) {
                        eprintln!("provider {me}: handing back lease {lease} refused: {e}");
                    }
                }
            }
        }
        if !reports.is_empty() {
            pending.extend(send_reports(client, key, chain_id, reports, 1));
        }
        while pending.front().is_some_and(|p| p.due <= std::time::Instant::now()) {
            let p = pending.pop_front().expect("front exists");
            pending.extend(confirm(client, key, chain_id, p));
        }
    }
}

fn send_reports(client: &Client, key: &KeyPair, chain_id: &str, reports: Vec<(u64, Outcome)>, first: u32) -> Option<PendingReport> {
    let jobs = || reports.iter().map(|(j, _)| j.to_string()).collect::<Vec<_>>().join(", ");
    for attempt in first..=REPORT_ATTEMPTS {
        match crate::agent::submit(client, key, chain_id, reports_msg(&reports)) {
            Ok(hash) => {
                let due = std::time::Instant::now() + Duration::from_secs(3);
                return Some(PendingReport { reports, hash, attempt, misses: 0, due });
            }
            Err(e) => {
                eprintln!("provider {}: report for job(s) {} not sent (attempt {attempt}): {e}", key.address(), jobs());
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    None
}

/// Looks a sent report up once; returns it to look up again later, or the
/// reports sent again.
fn confirm(client: &Client, key: &KeyPair, chain_id: &str, mut p: PendingReport) -> Option<PendingReport> {
    let me = key.address();
    match client.tx(&p.hash) {
        Ok(r) if r.code == 0 => {
            for e in r.events.iter().filter(|e| e.kind == "jobs.report_refused") {
                eprintln!("provider {me}: report for job {} refused: {}", e.get("job").unwrap_or("?"), e.get("reason").unwrap_or("?"));
            }
            None
        }
        Ok(r) => {
            eprintln!("provider {me}: report transaction {} rejected: {}", p.hash, r.log);
            None
        }
        Err(_) if p.misses + 1 < REPORT_MISSES => {
            p.misses += 1;
            p.due = std::time::Instant::now() + Duration::from_secs(3);
            Some(p)
        }
        Err(e) => {
            // Reports the node lost and that nothing else has settled since.
            let unsettled: Vec<(u64, Outcome)> = p
                .reports
                .into_iter()
                .filter(|(job, _)| !client.get::<JobDto>(&format!("/jobs/{job}")).is_ok_and(|j| j.is_final() || j.provider != Some(me)))
                .collect();
            if unsettled.is_empty() {
                return None;
            }
            if p.attempt >= REPORT_ATTEMPTS {
                eprintln!("provider {me}: giving up on the reports for {} job(s): {e}", unsettled.len());
                return None;
            }
            eprintln!("provider {me}: reports for {} job(s) not committed yet; sending them again", unsettled.len());
            send_reports(client, key, chain_id, unsettled, p.attempt + 1)
        }
    }
}

/// Reads the node's block stream, turning ledger events into decider inputs
/// (and, for a `dynamic` pricer, the base prices after each block, instead
/// of polling the node's status for new blocks). Reconnects (and resyncs)
/// whenever the stream breaks.
fn follow_events(rpc: &str, me: Address, dynamic: bool, tx: &Sender<Input>, stop: &AtomicBool) {
    let client = Client::new(rpc);
    while !stop.load(Ordering::Relaxed) {
        let stream = match BlockStream::connect(rpc) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("provider {me}: event stream: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        // Connected first, then resync: nothing falls between the two.
        if resync(&client, me, tx).is_err() {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        for item in stream {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let inputs = match item {
                // Missed blocks: read the ledger's state instead.
                StreamItem::Lagged => {
                    let _ = resync(&client, me, tx);
                    continue;
                }
                // The base prices first: orders this block opened are priced after them.
                StreamItem::Block(block) => {
                    let base = dynamic.then(|| client.get::<BasePrices>("/market/base-prices").ok()).flatten();
                    base.map(Input::BasePrices).into_iter().chain(block_inputs(&client, me, &block)).collect::<Vec<_>>()
                }
            };
            for input in inputs {
                if tx.send(input).is_err() {
                    return;
                }
            }
        }
    }
}

/// Open job auctions and the jobs leased to this provider, from the ledger.
fn resync(client: &Client, me: Address, tx: &Sender<Input>) -> Result<(), ()> {
    let jobs: Vec<JobDto> = client.get("/jobs?limit=1000").map_err(|_| ())?;
    for j in jobs {
        let input = match j.state.as_str() {
            "leased" if j.provider == Some(me) => j.lease.map(|lease| Input::JobLeased { job: j.id, lease }),
            "queued" => open_order(&j),
            _ => None,
        };
        if let Some(i) = input {
            tx.send(i).map_err(|_| ())?;
        }
    }
    Ok(())
}

fn open_order(j: &JobDto) -> Option<Input> {
    let spec = j.decode_spec().ok()?;
    Some(Input::OrderOpened(OpenOrder {
        id: j.order,
        resources: spec.order.resources,
        max_price_per_block: spec.order.max_price_per_block,
        pricing: spec.order.pricing,
        job: Some(j.id),
    }))
}

/// The order a `jobs.submitted` / `jobs.replaced` event describes.
fn order_from_event(e: &Event, job: u64) -> Option<OpenOrder> {
    let pricing = match e.get("pricing")? {
        "auction" => Pricing::Auction,
        _ => Pricing::Fixed,
    };
    Some(OpenOrder {
        id: attr(e, "order")?,
        resources: Resources {
            cpu_cores: attr(e, "cpu_cores")?,
            ram_mb: attr(e, "ram_mb")?,
            disk_gb: attr(e, "disk_gb")?,
            gpus: attr(e, "gpus")?,
            gpu_memory_mb: attr(e, "gpu_memory_mb")?,
        },
        max_price_per_block: amount(e, "max_price_per_block")?,
        pricing,
        job: Some(job),
    })
}

fn attr<T: std::str::FromStr>(e: &Event, name: &str) -> Option<T> {
    e.get(name)?.parse().ok()
}

fn amount(e: &Event, name: &str) -> Option<Amount> {
    Amount::parse_tsr(e.get(name)?).ok()
}

fn block_inputs(client: &Client, me: Address, block: &BlockEventDto) -> Vec<Input> {
    let events = block.txs.iter().filter(|t| t.code == 0).flat_map(|t| t.events.iter()).chain(block.end_events.iter());
    let mut out = Vec::new();
    for e in events {
        match e.kind.as_str() {
            "jobs.submitted" | "jobs.replaced" => {
                let Some(job) = attr::<u64>(e, "job") else { continue };
                match order_from_event(e, job) {
                    Some(o) => out.push(Input::OrderOpened(o)),
                    // An event without the terms: read the job instead.
                    None => {
                        if let Ok(mut d) = client.get::<JobDto>(&format!("/jobs/{job}")) {
                            if let Some(order) = attr::<u64>(e, "order") {
                                d.order = order;
                            }
                            out.extend(open_order(&d));
                        }
                    }
                }
            }
            "market.bid_placed" => {
                if let (Some(order), Some(provider), Some(price)) =
                    (attr::<u64>(e, "order"), attr::<Address>(e, "provider"), amount(e, "price_per_block"))
                {
                    out.push(Input::RivalBid { order, provider, price });
                }
            }
            "market.lease_opened" | "market.order_expired" | "market.order_cancelled" => {
                if let Some(order) = attr::<u64>(e, "order") {
                    out.push(Input::OrderClosed { order });
                }
            }
            "jobs.leased" => {
                if let (Some(job), Some(lease), Some(provider)) =
                    (attr::<u64>(e, "job"), attr::<u64>(e, "lease"), attr::<Address>(e, "provider"))
                    && provider == me
                {
                    out.push(Input::JobLeased { job, lease });
                }
            }
            "jobs.succeeded" | "jobs.failed" => {
                if let Some(job) = attr::<u64>(e, "job") {
                    out.push(Input::JobDone { job });
                }
            }
            "jobs.cancelled" => {
                if let Some(job) = attr::<u64>(e, "job") {
                    out.push(Input::JobGone { job });
                }
            }
            "jobs.provider_lost" => {
                if let (Some(job), Some(provider)) = (attr::<u64>(e, "job"), attr::<Address>(e, "provider"))
                    && provider == me
                {
                    out.push(Input::JobGone { job });
                }
            }
            _ => {}
        }
    }
    out
}
