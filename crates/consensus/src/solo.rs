//! The solo engine: one validator that proposes and decides every height alone.
//! It still produces a signed commit certificate, so the node's commit path is
//! the same one a BFT engine drives.
//!
//! Blocks keep a schedule of one every `block_time`. On a chain that was
//! idle for the block time before (no transaction arrived), a block with
//! transactions waiting may commit up to `LEAD` of its block time ahead of
//! its turn, once no transaction has arrived for `QUIET`: a transaction on
//! an idle chain (a user's command) meets its block `QUIET` after it
//! arrives most of the time instead of half a block time on average. A busy
//! chain keeps the schedule: had its blocks come forward as it went, the
//! block after a stream of transactions would come a whole block time after
//! the one before, later than its turn would have. Heights never advance
//! faster than the schedule, so windows counted in blocks (heartbeat
//! timeouts, proof deadlines, bid windows) keep their length in wall-clock
//! time; and the block after one that came forward keeps its turn, so that
//! what answers it (bids on an order) has a whole block time.

use std::time::Duration;
use tessera_crypto::KeyPair;
use tessera_types::PublicKey;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::{commit_sign_bytes, AppMsg, CommitCertificate, CommitSignature};

/// How far ahead of its turn a block with transactions waiting may commit,
/// as a fraction of the block time (`LEAD.0 / LEAD.1`). Two blocks are never
/// closer than the rest of the block time (a quarter: 62 ms at 250 ms).
pub const LEAD: (u32, u32) = (3, 4);
/// Transactions that come one after another (a client submitting a list)
/// share a block: an early block waits until none has arrived for this long.
pub const QUIET: Duration = Duration::from_millis(10);

pub struct SoloEngine {
    pub chain_id: String,
    pub key: KeyPair,
    pub block_time: Duration,
    /// Counts the transactions the mempool admits. Without it every block
    /// waits for its turn.
    pub arrivals: Option<watch::Receiver<u64>>,
}

impl SoloEngine {
    /// Runs until `shutdown` turns true (checked between heights, so a height in
    /// progress always finishes) or the application fails a commit.
    pub async fn run(mut self, app: mpsc::Sender<AppMsg>, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let closed = || "application channel closed".to_string();
        let (tx, rx) = oneshot::channel();
        app.send(AppMsg::ConsensusReady { reply: tx }).await.map_err(|_| closed())?;
        let start = rx.await.map_err(|_| closed())?;
        let me = PublicKey(self.key.public_key());
        check_member(&start.validators, &me)?;
        let mut height = start.height;
        let lead = self.block_time * LEAD.0 / LEAD.1;
        let mut due = Instant::now() + self.block_time;
        // Transactions counted when the last block was proposed, and whether
        // none had arrived in the block time before it.
        let mut counted = self.arrivals.as_mut().map_or(0, |a| *a.borrow_and_update());
        let mut idle = true;
        loop {
            let may_lead = if idle { lead } else { Duration::ZERO };
            if !turn(due, may_lead, self.arrivals.as_mut(), &mut shutdown).await {
                return Ok(());
            }
            // What arrives from here on waits for the next block.
            if let Some(a) = &mut self.arrivals {
                let now = *a.borrow_and_update();
                idle = now == counted;
                counted = now;
            }
            let (tx, rx) = oneshot::channel();
            app.send(AppMsg::GetValue { height, round: 0, reply: tx }).await.map_err(|_| closed())?;
            let proposal = rx.await.map_err(|_| closed())?;
            let signature = self.key.sign(&commit_sign_bytes(&self.chain_id, height, 0, &proposal.value_id));
            let certificate = CommitCertificate {
                height,
                round: 0,
                value_id: proposal.value_id,
                signatures: vec![CommitSignature { validator: me, signature }],
            };
            let (tx, rx) = oneshot::channel();
            app.send(AppMsg::Decided { certificate, value: proposal.value, reply: tx }).await.map_err(|_| closed())?;
            let next_validators = rx.await.map_err(|_| closed())??;
            check_member(&next_validators, &me)?;
            height += 1;
            // A height that ran past its turn (a slow commit) moves the
            // schedule instead of bringing blocks in a burst to catch up.
            let now = Instant::now();
            due = if now > due { now + self.block_time } else { due + self.block_time };
        }
    }
}

/// Waits for the block due at `due`: until then, or from `due - lead` on
/// once transactions wait and `QUIET` has passed since the last of them
/// arrived. False: shut down.
async fn turn(due: Instant, lead: Duration, mut arrivals: Option<&mut watch::Receiver<u64>>, shutdown: &mut watch::Receiver<bool>) -> bool {
    let opens = due.checked_sub(lead).unwrap_or(due);
    // When the last waiting transaction was seen to arrive.
    let mut last_arrival: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            return false;
        }
        let now = Instant::now();
        let wake = match last_arrival {
            _ if now >= due => return true,
            Some(at) if now >= opens && now >= at + QUIET => return true,
            Some(at) => opens.max(at + QUIET).min(due),
            None => due,
        };
        let arrived = async {
            match arrivals.as_deref_mut() {
                Some(a) => a.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            counted = arrived => {
                if counted {
                    last_arrival = Some(Instant::now());
                } else {
                    // The mempool is gone: blocks keep their turns.
                    arrivals = None;
                }
            }
            changed = shutdown.changed() => if changed.is_err() {
                return false;
            },
        }
    }
}

fn check_member(validators: &[(PublicKey, u64)], me: &PublicKey) -> Result<(), String> {
    let total: u128 = validators.iter().map(|(_, p)| *p as u128).sum();
    let mine: u128 = validators.iter().filter(|(k, _)| k == me).map(|(_, p)| *p as u128).sum();
    if mine * 3 <= total * 2 {
        return Err(format!(
            "the solo engine needs this node's key {me} to hold more than 2/3 of the voting power; it holds {mine} of {total}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProposedValue, StartInfo};
    use tessera_types::Hash32;

    /// Runs an engine with 250 ms blocks against a stand-in application for
    /// `run_ms`, a transaction arriving at each of `arrivals_ms`; returns
    /// when each height committed (ms after the start).
    async fn commits(arrivals_ms: &[u64], run_ms: u64) -> Vec<u64> {
        let key = KeyPair::from_seed(&[7]);
        let me = PublicKey(key.public_key());
        let (app_tx, mut app_rx) = mpsc::channel(4);
        let (count, arrivals) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let t0 = Instant::now();
        let engine = SoloEngine { chain_id: "t".into(), key, block_time: Duration::from_millis(250), arrivals: Some(arrivals) };
        let engine = tokio::spawn(engine.run(app_tx, stop_rx));
        let app = tokio::spawn(async move {
            let mut at = Vec::new();
            while let Some(msg) = app_rx.recv().await {
                match msg {
                    AppMsg::ConsensusReady { reply } => {
                        let _ = reply.send(StartInfo { height: 1, validators: vec![(me, 1)] });
                    }
                    AppMsg::GetValue { height, round, reply } => {
                        let _ = reply.send(ProposedValue { height, round, value_id: Hash32([height as u8; 32]), value: Vec::new() });
                    }
                    AppMsg::Decided { reply, .. } => {
                        at.push(t0.elapsed().as_millis() as u64);
                        let _ = reply.send(Ok(vec![(me, 1)]));
                    }
                }
            }
            at
        });
        for &ms in arrivals_ms {
            tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await;
            count.send_modify(|n| *n += 1);
        }
        tokio::time::sleep_until(t0 + Duration::from_millis(run_ms)).await;
        stop.send(true).unwrap();
        engine.await.unwrap().unwrap();
        app.await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn without_transactions_blocks_keep_their_turns() {
        assert_eq!(commits(&[], 1_100).await, vec![250, 500, 750, 1_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transaction_on_an_idle_chain_brings_its_block_forward_once_no_other_follows() {
        // The second block's turn is at 500 ms; it may come from 312.5 ms on.
        // Arriving at 400 ms, a transaction waits only QUIET; the block after
        // it keeps its turn.
        assert_eq!(commits(&[400], 1_100).await, vec![250, 410, 750, 1_000]);
        // Transactions arriving one after another go into one block.
        assert_eq!(commits(&[400, 405, 410], 1_100).await, vec![250, 420, 750, 1_000]);
        // Arriving before the block may come forward, it waits until it may
        // (312.5 ms, on the timer's next millisecond).
        assert_eq!(commits(&[260], 1_100).await, vec![250, 313, 750, 1_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_chain_keeps_the_schedule_and_an_idle_block_time_lets_the_next_come_forward() {
        // A transaction every 30 ms (each pause long enough to bring a block
        // forward) until 1,380 ms: the first block comes forward, the chain
        // having been idle, and every block after it keeps its turn.
        let mut arrivals: Vec<u64> = (1..=46).map(|i| i * 30).collect();
        // No transaction in the block time up to the block at 1,750 ms; one
        // at 1,900 ms then brings its block forward.
        arrivals.push(1_900);
        let at = commits(&arrivals, 2_600).await;
        assert_eq!(at, vec![70, 500, 750, 1_000, 1_250, 1_500, 1_750, 1_910, 2_250, 2_500]);
    }
}
