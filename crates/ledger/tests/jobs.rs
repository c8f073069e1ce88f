//! Jobs on the market: placement, settlement by report, cancellation, and
//! re-placement when the leased provider goes silent.

mod common;

use common::*;
use tessera_ledger::jobs::{self, Input, JobKind, JobMsg, JobSpec, JobState, Outcome, WasmJob};
use tessera_ledger::market::{self, LeaseState, OrderSpec, Pricing, Resources};
use tessera_ledger::registry::{self, RegistryMsg};
use tessera_ledger::*;
use tessera_types::{Amount, Hash32};

fn wasm_spec(max_price: u128, duration: u64, pricing: Pricing) -> JobSpec {
    JobSpec {
        name: "count".into(),
        kind: JobKind::Wasm(WasmJob {
            module: Input::Inline(b"\0asm\x01\0\0\0".to_vec()),
            args: vec!["count".into()],
            env: vec![],
            stdin: None,
            files: vec![("text.txt".into(), Input::Inline(b"a b c".to_vec()))],
            fuel: 1_000_000,
            memory_mb: 64,
            wall_secs: 10,
            max_output_mb: 1,
        }),
        order: OrderSpec {
            resources: Resources { cpu_cores: 1, ram_mb: 512, disk_gb: 0, gpus: 0, gpu_memory_mb: 0 },
            max_price_per_block: Amount(max_price),
            duration_blocks: duration,
            bid_window_blocks: 1,
            pricing,
        },
        output: None,
    }
}

fn submit(spec: JobSpec) -> Msg {
    Msg::Jobs(JobMsg::Submit { spec })
}

fn report(job: u64, ok: bool) -> Msg {
    let outcome = if ok {
        Outcome::Succeeded { result: Hash32::blake3(b"result"), size: 6 }
    } else {
        Outcome::Failed { reason: "fuel exhausted".into() }
    };
    Msg::Jobs(JobMsg::Report { job, outcome })
}

fn job(c: &Chain, id: u64) -> jobs::Job {
    c.view(|st| jobs::job(st, id).unwrap())
}

#[test]
fn fixed_job_leases_at_once_and_report_settles_with_one_block_paid() {
    let mut c = Chain::new(3);
    assert_eq!(c.run(1, register(8, 100)).0, 0);
    let buyer = c.addr(0);
    let before = c.balance(&buyer);
    let (code, log) = c.run(0, submit(wasm_spec(1_000, 50, Pricing::Fixed)));
    assert_eq!(code, 0, "{log}");
    let JobState::Leased { lease, provider, .. } = job(&c, 1).state else { panic!("{:?}", job(&c, 1).state) };
    assert_eq!(provider, c.addr(1));

    // Only the leased provider may report.
    let (code, _) = c.run(2, report(1, true));
    assert_ne!(code, 0);
    assert_eq!(c.run(1, report(1, true)).0, 0);
    let j = job(&c, 1);
    assert!(matches!(j.state, JobState::Succeeded { .. }), "{:?}", j.state);
    let l = c.view(|st| market::lease(st, lease).unwrap());
    assert!(matches!(l.state, LeaseState::Closed { reason: market::CloseReason::Completed, .. }));
    assert_eq!(j.paid, l.paid);
    // Price 100/block: the block after opening streamed 100, the report block settles.
    assert!(l.paid.micro() >= 100 && l.paid.micro() <= 300, "paid {}", l.paid);
    let fee = Params::default().bank.min_fee.micro();
    assert_eq!(c.balance(&buyer).micro(), before.micro() - fee - l.paid.micro(), "buyer pays fee + lease, rest refunded");
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

#[test]
fn auction_job_goes_to_the_lowest_bid_and_failure_is_reported() {
    let mut c = Chain::new(3);
    assert_eq!(c.run(1, register(8, 100)).0, 0);
    assert_eq!(c.run(2, register(8, 100)).0, 0);
    assert_eq!(c.run(0, submit(wasm_spec(1_000, 50, Pricing::Auction))).0, 0);
    let JobState::Queued { order } = job(&c, 1).state else { panic!() };
    let b1 = c.tx(1, bid(order, 300));
    let b2 = c.tx(2, bid(order, 200));
    c.block(&[b1, b2]);
    c.empty_blocks(1);
    let JobState::Leased { provider, .. } = job(&c, 1).state else { panic!("{:?}", job(&c, 1).state) };
    assert_eq!(provider, c.addr(2));
    assert_eq!(c.run(2, report(1, false)).0, 0);
    assert!(matches!(job(&c, 1).state, JobState::Failed { ref reason, .. } if reason == "fuel exhausted"));
    c.assert_pools_backed();
}

#[test]
fn auction_without_bids_fails_the_job_and_refunds_everything() {
    let mut c = Chain::new(2);
    let before = c.balance(&c.addr(0));
    assert_eq!(c.run(0, submit(wasm_spec(1_000, 50, Pricing::Auction))).0, 0);
    c.empty_blocks(2);
    assert!(matches!(job(&c, 1).state, JobState::Failed { .. }));
    assert_eq!(c.balance(&c.addr(0)).micro(), before.micro() - Params::default().bank.min_fee.micro());
}

#[test]
fn bad_specs_are_refused_before_money_moves() {
    let mut c = Chain::new(2);
    assert_eq!(c.run(1, register(8, 100)).0, 0);
    let before = c.balance(&c.addr(0));
    let mut not_wasm = wasm_spec(1_000, 50, Pricing::Fixed);
    if let JobKind::Wasm(w) = &mut not_wasm.kind {
        w.module = Input::Inline(b"#!/bin/sh".to_vec());
    }
    let tx = c.tx(0, submit(not_wasm));
    let err = c.view(|st| check_tx(st, &tx, None)).unwrap_err();
    assert!(err.to_string().contains("not WebAssembly"), "{err}");
    // Below every standing price: refused, only the fee is spent.
    let (code, log) = c.run(0, submit(wasm_spec(10, 50, Pricing::Fixed)));
    assert_ne!(code, 0);
    assert!(log.contains("raise the price"), "{log}");
    assert_eq!(c.balance(&c.addr(0)).micro(), before.micro() - Params::default().bank.min_fee.micro());
}

#[test]
fn cancelling_a_running_job_pays_only_for_blocks_run() {
    let mut c = Chain::new(2);
    assert_eq!(c.run(1, register(8, 100)).0, 0);
    assert_eq!(c.run(0, submit(wasm_spec(1_000, 50, Pricing::Fixed))).0, 0);
    c.empty_blocks(3);
    // Three blocks streamed; the cancel closes the lease before its block streams.
    assert_eq!(c.run(0, Msg::Jobs(JobMsg::Cancel { job: 1 })).0, 0);
    let j = job(&c, 1);
    assert!(matches!(j.state, JobState::Cancelled { .. }));
    assert_eq!(j.paid.micro(), 3 * 100);
    c.assert_pools_backed();
}

#[test]
fn lost_provider_is_clawed_back_and_the_job_moves_to_another() {
    let mut c = Chain::new(3);
    assert_eq!(c.run(1, register(8, 100)).0, 0);
    assert_eq!(c.run(2, register(8, 200)).0, 0);
    let buyer_before = c.balance(&c.addr(0));
    assert_eq!(c.run(0, submit(wasm_spec(1_000, 500, Pricing::Fixed))).0, 0);
    let JobState::Leased { provider, .. } = job(&c, 1).state else { panic!() };
    assert_eq!(provider, c.addr(1), "cheaper provider first");
    let stake_before = c.view(|st| registry::provider(st, &c.addr(1)).unwrap().stake);
    let rep_before = c.view(|st| registry::provider(st, &c.addr(1)).unwrap().reputation.score_ppm());
    // Provider 1 goes silent; provider 2 keeps heartbeating.
    let timeout = Params::default().registry.heartbeat_timeout_blocks;
    for i in 0..timeout + 2 {
        if i % 5 == 0 {
            let tx = c.tx(2, Msg::Registry(RegistryMsg::Heartbeat));
            c.block(&[tx]);
        } else {
            c.empty_blocks(1);
        }
    }
    let j = job(&c, 1);
    let JobState::Leased { provider, .. } = j.state else { panic!("{:?}", j.state) };
    assert_eq!(provider, c.addr(2), "re-placed on the live provider");
    assert_eq!(j.orders.len(), 2);
    assert_eq!(j.lost_to, vec![c.addr(1)]);
    assert!(j.paid.is_zero(), "what the lost provider earned went back to the buyer");
    let p1 = c.view(|st| registry::provider(st, &c.addr(1)).unwrap());
    assert!(p1.stake < stake_before, "claw-back came out of the stake");
    assert!(p1.reputation.score_ppm() < rep_before);
    assert_eq!(c.run(2, report(1, true)).0, 0);
    let j = job(&c, 1);
    assert!(matches!(j.state, JobState::Succeeded { .. }));
    let fee = Params::default().bank.min_fee.micro();
    assert_eq!(c.balance(&c.addr(0)).micro(), buyer_before.micro() - fee - j.paid.micro(), "buyer paid only provider 2");
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

#[test]
fn base_price_rises_when_busy_and_falls_when_idle() {
    let mut c = Chain::new(3);
    assert_eq!(c.run(1, register(2, 100)).0, 0);
    c.empty_blocks(1);
    let idle = c.view(|st| market::base_prices(st).unwrap());
    assert_eq!(idle.cpu_utilisation_ppm, 0);
    assert!(idle.cpu < Params::default().market.initial_base_price_cpu);
    // Both cores leased: utilisation 100%, the price climbs 12.5% a block.
    let mut spec = wasm_spec(1_000, 500, Pricing::Fixed);
    spec.order.resources.cpu_cores = 2;
    assert_eq!(c.run(0, submit(spec)).0, 0);
    let a = c.view(|st| market::base_prices(st).unwrap());
    c.empty_blocks(1);
    let b = c.view(|st| market::base_prices(st).unwrap());
    assert_eq!(b.cpu_utilisation_ppm, 1_000_000);
    assert_eq!(b.cpu.micro(), a.cpu.micro() * 1_125_000 / 1_000_000);
}

#[test]
fn a_batch_of_reports_settles_each_job_and_skips_the_ones_not_its_senders() {
    let mut c = Chain::new(3);
    assert_eq!(c.run(1, register(8, 100)).0, 0);
    for _ in 0..3 {
        assert_eq!(c.run(0, submit(wasm_spec(1_000, 50, Pricing::Fixed))).0, 0);
    }
    assert!((1..=3).all(|id| matches!(job(&c, id).state, JobState::Leased { .. })));
    let ok = Outcome::Succeeded { result: Hash32::blake3(b"result"), size: 6 };
    let failed = Outcome::Failed { reason: "fuel exhausted".into() };

    // Malformed batches are refused whole, before execution.
    for reports in [vec![], vec![(1, ok.clone()), (1, failed.clone())], (0..300).map(|j| (j, ok.clone())).collect()] {
        let tx = c.tx(1, Msg::Jobs(JobMsg::Reports { reports }));
        assert!(c.view(|st| check_tx(st, &tx, None)).is_err());
    }
    // Another provider's batch changes nothing.
    let out = c.block(&[c.tx(2, Msg::Jobs(JobMsg::Reports { reports: vec![(1, ok.clone())] }))]);
    assert_eq!(out.txs[0].code, 0);
    assert!(out.txs[0].events.iter().any(|e| e.kind == "jobs.report_refused" && e.get("job") == Some("1")));
    assert!(matches!(job(&c, 1).state, JobState::Leased { .. }));

    // Job 9 does not exist: skipped; jobs 1 and 3 settle, job 2 stays leased.
    let tx = c.tx(1, Msg::Jobs(JobMsg::Reports { reports: vec![(1, ok.clone()), (9, ok.clone()), (3, failed.clone())] }));
    let out = c.block(&[tx]);
    assert_eq!(out.txs[0].code, 0, "{}", out.txs[0].log);
    let kinds: Vec<&str> = out.txs[0].events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"jobs.succeeded") && kinds.contains(&"jobs.failed") && kinds.contains(&"jobs.report_refused"), "{kinds:?}");
    assert!(matches!(job(&c, 1).state, JobState::Succeeded { .. }));
    assert!(matches!(job(&c, 2).state, JobState::Leased { .. }));
    assert!(matches!(job(&c, 3).state, JobState::Failed { ref reason, .. } if reason == "fuel exhausted"));
    for id in [1, 3] {
        let j = job(&c, id);
        assert!(j.paid.micro() > 0, "job {id} paid nothing");
    }
    // A settled job reported again in a later batch is skipped, not settled twice.
    let out = c.block(&[c.tx(1, Msg::Jobs(JobMsg::Reports { reports: vec![(1, ok.clone()), (2, ok)] }))]);
    assert_eq!(out.txs[0].events.iter().filter(|e| e.kind == "jobs.report_refused").count(), 1);
    assert!(matches!(job(&c, 2).state, JobState::Succeeded { .. }));
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}
