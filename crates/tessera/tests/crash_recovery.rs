//! kill -9 the devnet while transactions stream in; after a restart every
//! transaction that was reported committed is still there, with its balance.

mod support;

use std::time::Duration;
use support::*;
use tessera_ledger::bank::BankMsg;
use tessera_ledger::{Msg, TxBody};
use tessera_types::{Amount, PublicKey};

#[test]
fn kill_9_mid_stream_loses_nothing_committed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut net = Devnet::start(dir.path(), port);
    let ring = tessera_client::Keyring::new(dir.path().join("keys"));
    let dev = ring.get("dev").unwrap();
    let target = ring.create("target").unwrap().address();
    let client = net.client();
    let chain_id = client.status().unwrap().chain_id;

    // Submit a stream of transfers; the devnet is killed while some are pending.
    let mut submitted = Vec::new();
    let start_nonce = client.account(&dev.address()).unwrap().next_nonce;
    for i in 0..60u64 {
        let body = TxBody {
            chain_id: chain_id.clone(),
            signer: PublicKey(dev.public_key()),
            nonce: start_nonce + i,
            fee: Amount::from_micro(1_000),
            msg: Msg::Bank(BankMsg::Transfer { to: target, amount: Amount::from_micro(1_000 + i as u128) }),
        };
        let tx = body.sign(&dev);
        submitted.push((client.submit(&tx).unwrap(), 1_000 + i as u128));
        if i == 40 {
            // Wait for at least one of the stream to commit, then kill mid-stream.
            client.wait_for_tx(&submitted[0].0, Duration::from_secs(20)).unwrap();
            break;
        }
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    // What the node reported committed just before the kill must survive it.
    let seen_committed: Vec<_> = submitted.iter().filter(|(h, _)| client.tx(h).is_ok()).map(|(h, _)| *h).collect();
    net.kill_hard();
    assert!(!seen_committed.is_empty());

    let net = Devnet::start(dir.path(), port);
    assert!(net.log().contains("resumed"), "{}", net.log());
    let client = net.client();
    let mut expected: u128 = 0;
    let mut committed = 0;
    for hash in &seen_committed {
        assert!(client.tx(hash).is_ok(), "transaction {hash} was reported committed before the crash and is gone");
    }
    for (hash, amount) in &submitted {
        match client.tx(hash) {
            Ok(r) => {
                assert_eq!(r.code, 0);
                expected += amount;
                committed += 1;
            }
            Err(tessera_client::ClientError::NotFound(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert!(committed >= 1, "the first transfer was seen committed before the kill");
    // Committed transactions form a prefix of the nonce sequence: nothing in the middle was lost.
    let nonce = client.account(&dev.address()).unwrap().nonce;
    assert_eq!(nonce, start_nonce + committed as u64);
    assert_eq!(client.account(&target).unwrap().balance, Amount::from_micro(expected));
    // And the chain moves on.
    let h = client.status().unwrap().height;
    std::thread::sleep(Duration::from_millis(400));
    assert!(client.status().unwrap().height > h, "chain should keep producing blocks after restart");
}
