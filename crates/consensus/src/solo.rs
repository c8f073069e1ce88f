//! The solo engine: one validator that proposes and decides every height alone.
//! It still produces a signed commit certificate, so the node's commit path is
//! the same one a BFT engine drives.

use std::time::Duration;
use tessera_crypto::KeyPair;
use tessera_types::PublicKey;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{commit_sign_bytes, AppMsg, CommitCertificate, CommitSignature};

pub struct SoloEngine {
    pub chain_id: String,
    pub key: KeyPair,
    pub block_time: Duration,
}

impl SoloEngine {
    /// Runs until `shutdown` turns true (checked between heights, so a height in
    /// progress always finishes) or the application fails a commit.
    pub async fn run(self, app: mpsc::Sender<AppMsg>, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let closed = || "application channel closed".to_string();
        let (tx, rx) = oneshot::channel();
        app.send(AppMsg::ConsensusReady { reply: tx }).await.map_err(|_| closed())?;
        let start = rx.await.map_err(|_| closed())?;
        let me = PublicKey(self.key.public_key());
        check_member(&start.validators, &me)?;
        let mut height = start.height;
        let mut ticker = tokio::time::interval(self.block_time);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return Ok(());
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
