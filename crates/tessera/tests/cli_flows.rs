//! End-to-end: the README's flows with the real CLI against a real devnet.

mod support;

use support::*;

fn micro(v: &serde_json::Value) -> u128 {
    v.as_str().expect("amount string").parse().unwrap()
}

#[test]
fn devnet_cli_flows_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start(dir.path(), free_port());

    // Keys.
    let out = net.ok(&["keys", "new", "alice"]);
    assert!(out.contains("address"), "{out}");
    let alice = net.json(&["keys", "show", "alice"])["address"].as_str().unwrap().to_string();
    let list = net.ok(&["keys", "list"]);
    for name in ["alice", "dev", "test1", "test2", "test3"] {
        assert!(list.contains(name), "{list}");
    }
    assert!(net.fails(&["keys", "new", "alice"]).contains("already exists"));

    // Watch the event stream while the transfer commits.
    let events_url = format!("http://{}/events", net.rpc);
    let watcher = std::thread::spawn(move || {
        use std::io::BufRead;
        let agent = ureq::AgentBuilder::new().timeout_read(std::time::Duration::from_secs(30)).build();
        let resp = agent.get(&events_url).call().expect("events stream");
        let mut saw_block = false;
        for line in std::io::BufReader::new(resp.into_reader()).lines().take(10_000) {
            let line = line.expect("event line");
            if line == "event: block" {
                saw_block = true;
            }
            if saw_block && line.starts_with("data:") && line.contains("bank.transfer") {
                let dto: tessera_client::api::BlockEventDto = serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
                return dto;
            }
        }
        panic!("no block event with the transfer");
    });
    std::thread::sleep(std::time::Duration::from_millis(200));

    // Transfer and balance, with and without proof.
    let tx = net.json(&["tx", "transfer", "--from", "dev", "--to", &alice, "--amount", "25.5"]);
    assert_eq!(tx["code"], 0, "{tx}");
    let hash = tx["hash"].as_str().unwrap().to_string();
    let bal = net.json(&["query", "balance", "alice"]);
    assert_eq!(micro(&bal["balance"]), 25_500_000);
    assert!(net.ok(&["query", "balance", &alice]).contains("25.500000 TSR"));
    let proved = net.ok(&["query", "balance", "alice", "--prove"]);
    assert!(proved.contains("verified against app hash"), "{proved}");
    let event = watcher.join().unwrap();
    assert!(event.txs.iter().any(|t| t.hash.to_string() == hash && t.code == 0), "{event:?}");
    let found = net.json(&["query", "tx", &hash]);
    assert_eq!(found["msg"], "bank.transfer");
    let height = found["height"].as_u64().unwrap();
    let block = net.json(&["query", "block", &height.to_string()]);
    assert!(block["txs"].as_array().unwrap().iter().any(|t| t["hash"] == hash.as_str()));
    assert!(net.ok(&["query", "block"]).starts_with("block "));
    let status = net.json(&["status"]);
    assert_eq!(status["chain_id"], "tessera-devnet");
    assert!(status["validator"]["voting_power"].as_u64().unwrap() > 0);

    // Bad input: clear errors, nothing changes.
    for (amount, why) in [("-1", "negative"), ("abc", "not a decimal"), ("1e99", "not a decimal"), ("1.0000001", "6 decimal")] {
        let err = net.fails(&["tx", "transfer", "--from", "alice", "--to", "dev", "--amount", amount]);
        assert!(err.contains(why), "amount {amount}: {err}");
    }
    let err = net.fails(&["tx", "transfer", "--from", "alice", "--to", "dev", "--amount", "100"]);
    assert!(err.contains("insufficient funds") && err.contains("balance 25.500000"), "{err}");
    assert!(net.fails(&["tx", "transfer", "--from", "nobody", "--to", "dev", "--amount", "1"]).contains("no key named"));
    assert!(net.fails(&["query", "balance", "tsr1xyz"]).contains("40 hex digits"));
    assert!(net.fails(&["query", "tx", &"00".repeat(32)]).contains("not in a committed block"));
    assert_eq!(micro(&net.json(&["query", "balance", "alice"])["balance"]), 25_500_000);

    // Threads of one process paying with one key at once (an S3 endpoint's
    // PUTs do): each transaction gets a nonce of its own, none is refused.
    let dev = tessera_client::Keyring::new(net.home.join("keys")).get("dev").unwrap();
    let client = net.client();
    let chain_id = client.status().unwrap().chain_id;
    let to: tessera_types::Address = alice.parse().unwrap();
    let hashes: Vec<_> = std::thread::scope(|scope| {
        let sends: Vec<_> = (0..24)
            .map(|_| {
                let (client, dev, chain_id) = (client.clone(), &dev, &chain_id);
                scope.spawn(move || {
                    let msg = tessera_ledger::Msg::Bank(tessera_ledger::bank::BankMsg::Transfer { to, amount: tessera_types::Amount::from_micro(1) });
                    client.sign_and_submit(dev, chain_id, tessera_types::Amount::from_micro(1_000), msg)
                })
            })
            .collect();
        sends.into_iter().map(|s| s.join().unwrap().expect("a concurrent submission was refused")).collect()
    });
    for hash in &hashes {
        assert_eq!(client.wait_for_tx(hash, std::time::Duration::from_secs(30)).unwrap().code, 0);
    }
    assert_eq!(micro(&net.json(&["query", "balance", "alice"])["balance"]), 25_500_024);

    // Raw RPC: malformed and oversized bodies.
    let url = format!("http://{}/txs", net.rpc);
    let resp = ureq::post(&url).send_json(serde_json::json!({ "tx": "01ffff" }));
    match resp {
        Err(ureq::Error::Status(400, r)) => assert!(r.into_string().unwrap().contains("does not decode")),
        other => panic!("expected 400, got {other:?}"),
    }
    // An oversized body is refused from its declared length, before it is read.
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&net.rpc).unwrap();
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let head = format!(
            "POST /txs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            net.rpc,
            600 * 1024
        );
        stream.write_all(head.as_bytes()).unwrap();
        let mut answer = vec![0u8; 512];
        let n = stream.read(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

    // Waiting for a transaction: the node answers when its block commits,
    // and says 404 for one no block holds once the wait is over.
    let sent = net.json(&["tx", "transfer", "--from", "dev", "--to", &alice, "--amount", "1", "--no-wait"]);
    let sent = sent["hash"].as_str().unwrap().to_string();
    let waited: serde_json::Value = ureq::get(&format!("http://{}/txs/{sent}?wait_ms=10000", net.rpc)).call().unwrap().into_json().unwrap();
    assert_eq!((waited["hash"].as_str(), waited["code"].as_u64()), (Some(sent.as_str()), Some(0)), "{waited}");
    match ureq::get(&format!("http://{}/txs/{}?wait_ms=1200", net.rpc, "ab".repeat(32))).call() {
        Err(ureq::Error::Status(404, r)) => assert!(r.into_string().unwrap().contains("not in a committed block")),
        other => panic!("expected 404, got {other:?}"),
    }
    assert_eq!(micro(&net.json(&["query", "balance", "alice"])["balance"]), 26_500_024);
    // Following the chain: a status asked for past the current height comes
    // with the next block; one past a height far ahead comes when the wait is over.
    let status = |q: &str| -> serde_json::Value { ureq::get(&format!("http://{}/status{q}", net.rpc)).call().unwrap().into_json().unwrap() };
    let now = status("")["height"].as_u64().unwrap();
    assert!(status(&format!("?after={now}&wait_ms=10000"))["height"].as_u64().unwrap() > now);
    let started = std::time::Instant::now();
    let ahead = status(&format!("?after={}&wait_ms=600", now + 1_000_000));
    assert!(started.elapsed() >= std::time::Duration::from_millis(600), "answered after {:?}", started.elapsed());
    assert!(ahead["height"].as_u64().unwrap() < now + 1_000_000);
    // A provider's challenges, held until a block brings it one or the chain
    // reaches `until`: an account that stores nothing waits out the wait
    // through the blocks meanwhile, and is answered at `until`.
    let next = |q: &str| -> serde_json::Value {
        ureq::get(&format!("http://{}/storage/challenges/next?provider={alice}{q}", net.rpc)).call().unwrap().into_json().unwrap()
    };
    let now = status("")["height"].as_u64().unwrap();
    let started = std::time::Instant::now();
    let held = next(&format!("&after={now}&until={}&wait_ms=1200", now + 1_000_000));
    assert!(started.elapsed() >= std::time::Duration::from_millis(1200), "answered after {:?}", started.elapsed());
    assert!(held["height"].as_u64().unwrap() > now, "{held}");
    assert_eq!(held["challenges"], serde_json::json!([]));
    let reached = next(&format!("&after={now}&until={}&wait_ms=10000", now + 2));
    assert!(reached["height"].as_u64().unwrap() >= now + 2, "{reached}");

    // Staking.
    let validators = net.json(&["query", "validators"]);
    let validator = validators[0]["operator"].as_str().unwrap().to_string();
    assert_eq!(net.json(&["tx", "bond", "--from", "test1", "--validator", &validator, "--amount", "100"])["code"], 0);
    assert_eq!(net.json(&["tx", "unbond", "--from", "test1", "--validator", &validator, "--amount", "40"])["code"], 0);
    let unbonding = net.json(&["query", "unbonding", "test1"]);
    assert_eq!(micro(&unbonding[0]["amount"]), 40_000_000);

    // Registry and market: a provider, an auction won by a bid, a fixed-price lease.
    let reg = net.json(&[
        "tx", "provider-register", "--from", "test2", "--stake", "150", "--cpu-cores", "16", "--ram-mb", "65536",
        "--disk-gb", "500", "--gpu", "A100:81920", "--region", "eu-west", "--endpoint", "http://127.0.0.1:9100",
        "--price-cpu", "0.01",
    ]);
    assert_eq!(reg["code"], 0, "{reg}");
    let test2 = net.json(&["keys", "show", "test2"])["address"].as_str().unwrap().to_string();
    let provider = net.json(&["query", "provider", &test2]);
    assert_eq!(provider["info"]["hardware"]["gpus"][0]["model"], "A100");
    let ord = net.json(&["tx", "order", "--from", "dev", "--cpu-cores", "4", "--max-price", "1", "--duration", "50", "--bid-window", "20"]);
    assert_eq!(ord["code"], 0, "{ord}");
    let order_id = ord["events"][0]["attributes"].as_array().unwrap().iter().find(|a| a[0] == "order").unwrap()[1]
        .as_str()
        .unwrap()
        .to_string();
    let b = net.json(&["tx", "bid", "--from", "test2", "--order", &order_id, "--price", "0.5"]);
    assert_eq!(b["code"], 0, "{b}");
    let too_high = net.fails(&["tx", "bid", "--from", "test2", "--order", &order_id, "--price", "2"]);
    assert!(too_high.contains("above the order's maximum"), "{too_high}");
    let fixed = net.json(&["tx", "order", "--from", "dev", "--cpu-cores", "2", "--max-price", "1", "--duration", "10", "--fixed"]);
    assert_eq!(fixed["code"], 0, "{fixed}");
    assert!(fixed["events"].as_array().unwrap().iter().any(|e| e["kind"] == "market.lease_opened"), "{fixed}");
    let leases = net.json(&["query", "leases"]);
    assert!(!leases.as_array().unwrap().is_empty());
    let supply = net.json(&["query", "supply"]);
    assert_eq!(
        micro(&supply["supply"]),
        micro(&supply["genesis_supply"]) + micro(&supply["issued"]) - micro(&supply["burned"])
    );

    // Ctrl-C path: clean exit.
    let status = net.stop();
    assert!(status.success(), "devnet exit: {status:?}\n{}", net.log());
    assert!(net.log().contains("Stopped cleanly"), "{}", net.log());
}

/// `--retain-blocks`: old block records and their transactions' results go,
/// with an error that says so; the state and the latest blocks stay, also
/// across a restart.
#[test]
fn old_blocks_are_pruned_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut net = Devnet::start_with(dir.path(), port, &["--retain-blocks", "10", "--providers", "0", "--storage-providers", "0"]);
    net.ok(&["keys", "new", "alice"]);
    let alice = net.json(&["keys", "show", "alice"])["address"].as_str().unwrap().to_string();
    let sent = net.json(&["tx", "transfer", "--from", "dev", "--to", &alice, "--amount", "5"]);
    let hash = sent["hash"].as_str().unwrap().to_string();
    let height = net.json(&["query", "tx", &hash])["height"].as_u64().unwrap();
    let client = net.client();
    net.wait_until(60, "10 more blocks", || client.status().is_ok_and(|s| s.height > height + 12));
    let err = net.fails(&["query", "block", &height.to_string()]);
    assert!(err.contains("was pruned") && err.contains("--retain-blocks"), "{err}");
    let err = net.fails(&["query", "tx", &hash]);
    assert!(err.contains("pruned"), "{err}");
    let latest = client.status().unwrap().height;
    net.ok(&["query", "block", &latest.to_string()]);
    assert_eq!(micro(&net.json(&["query", "balance", "alice"])["balance"]), 5_000_000, "state is whole");
    net.stop();

    let net = Devnet::start_with(dir.path(), port, &["--retain-blocks", "10", "--providers", "0", "--storage-providers", "0"]);
    let client = net.client();
    let restarted = client.status().unwrap().height;
    net.wait_until(60, "12 blocks after the restart", || client.status().is_ok_and(|s| s.height > restarted + 12));
    let err = net.fails(&["query", "block", &restarted.to_string()]);
    assert!(err.contains("was pruned"), "{err}");
}
