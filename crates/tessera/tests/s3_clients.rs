//! The S3 endpoint with real clients: boto3 runs `tests/s3/boto3_flows.py`
//! (buckets, objects, ranges, listing with pagination, multipart, copy,
//! presigned URLs, error codes), the aws CLI copies a file in and out, and the
//! Rust aws-sdk-s3 puts, lists, reads a range and sees NoSuchKey. Then a job
//! reads its module and input from S3 objects and its results land in a bucket,
//! and the endpoint is killed right after acknowledging PUTs: restarted, it
//! still serves them and puts them on the storage network.

mod support;

use std::process::Command;
use support::*;

fn python_has_boto3() -> bool {
    Command::new("python3").args(["-c", "import boto3"]).status().map(|s| s.success()).unwrap_or(false)
}

#[test]
fn boto3_and_aws_cli_against_the_devnet_endpoint() {
    assert!(python_has_boto3(), "boto3 is missing: run the tests through scripts/test.sh, which installs it");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let net = Devnet::start(dir.path(), port);
    let client = net.client();
    net.wait_until(60, "6 registered storage providers", || {
        client.get::<Vec<tessera_client::api::ProviderDto>>("/providers").map(|p| p.len() == 6).unwrap_or(false)
    });
    let endpoint = format!("http://127.0.0.1:{}", net.s3_port);
    net.wait_until(30, "the S3 endpoint", || std::net::TcpStream::connect(("127.0.0.1", net.s3_port)).is_ok());
    providers_yield_the_cpu_to_the_endpoint(&net);
    let key = net.json(&["storage", "s3-key", "create", "--from", "dev"]);
    let access = key["access_key"].as_str().unwrap();
    let secret = key["secret_key"].as_str().unwrap();

    let script = format!("{}/../../tests/s3/boto3_flows.py", std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()));
    let out = Command::new("python3").args([script.as_str(), &endpoint, access, secret]).output().unwrap();
    assert!(
        out.status.success(),
        "boto3 flows failed:\n{}\n{}\nS3 log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        net.s3_log()
    );

    let aws = |args: &[&str]| net.aws(access, secret, args);
    let input = dir.path().join("weights.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    for args in [
        vec!["s3", "mb", "s3://cli-bucket"],
        vec!["s3", "cp", input.to_str().unwrap(), "s3://cli-bucket/models/weights.bin"],
    ] {
        let o = aws(&args);
        assert!(o.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let head = aws(&["s3api", "head-object", "--bucket", "cli-bucket", "--key", "models/weights.bin"]);
    let head = String::from_utf8_lossy(&head.stdout);
    assert!(head.contains("\"tessera-state\": \"pending\"") || head.contains("\"tessera-state\": \"stored\""), "HEAD reports placement: {head}");
    let ls = aws(&["s3", "ls", "s3://cli-bucket/models/"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("weights.bin"));
    let back = dir.path().join("back.bin");
    let o = aws(&["s3", "cp", "s3://cli-bucket/models/weights.bin", back.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let o = aws(&["s3", "rm", "s3://cli-bucket/models/weights.bin"]);
    assert!(o.status.success());
    let missing = aws(&["s3api", "head-object", "--bucket", "cli-bucket", "--key", "models/weights.bin"]);
    assert!(!missing.status.success());

    rust_sdk_flows(&endpoint, access, secret);
    refused_bodies_leave_the_connection_usable(net.s3_port);
    job_reads_and_writes_buckets(&net, dir.path(), &endpoint, &aws);
    acknowledged_puts_survive_an_endpoint_crash(&net, dir.path(), &aws);
}

/// Every thread of the devnet's provider agents runs at nice 10, the S3
/// endpoint's at the devnet's own priority.
fn providers_yield_the_cpu_to_the_endpoint(net: &Devnet) {
    // The nice values of a process's threads: field 19 of each thread's stat.
    let nice_of = |pid: u32| -> Vec<i64> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        tasks
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("stat")).ok())
            .map(|stat| stat.rsplit_once(')').unwrap().1.split_whitespace().nth(16).unwrap().parse().unwrap())
            .collect()
    };
    let own = nice_of(std::process::id())[0];
    let providers = net.provider_pids();
    assert_eq!(providers.len(), 6);
    for pid in providers {
        let nice = nice_of(pid);
        assert!(!nice.is_empty() && nice.iter().all(|&n| n == own.max(10)), "provider {pid} threads at nice {nice:?}");
    }
    assert!(nice_of(net.s3_pid()).iter().all(|&n| n == own), "the endpoint keeps the devnet's priority");
}

/// PUTs acknowledged just before the endpoint is SIGKILLed are all there
/// after a restart: readable byte for byte, then on the storage network
/// (HEAD says `stored`, the ledger holds deals for their content ids).
fn acknowledged_puts_survive_an_endpoint_crash(net: &Devnet, dir: &std::path::Path, aws: &dyn Fn(&[&str]) -> std::process::Output) {
    let o = aws(&["s3", "mb", "s3://crash"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bodies: Vec<Vec<u8>> = (0..4u32).map(|n| (0..150_000u32).map(|i| ((i * (n + 3)) % 241) as u8).collect()).collect();
    let upload = dir.join("crash");
    std::fs::create_dir_all(&upload).unwrap();
    for (n, body) in bodies.iter().enumerate() {
        std::fs::write(upload.join(format!("{n}.bin")), body).unwrap();
    }
    let head = |n: usize| -> Option<serde_json::Value> {
        let o = aws(&["s3api", "head-object", "--bucket", "crash", "--key", &format!("{n}.bin")]);
        o.status.success().then(|| serde_json::from_slice(&o.stdout).unwrap())
    };
    // With the providers paused (for less than their heartbeat timeout) no
    // piece can arrive, so the acknowledged objects are still pending when
    // the endpoint dies.
    let signal = |sig: &str| {
        for pid in net.provider_pids() {
            Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
        }
    };
    signal("-STOP");
    let o = aws(&["s3", "cp", "--recursive", upload.to_str().unwrap(), "s3://crash/"]);
    let heads: Vec<serde_json::Value> = (0..bodies.len()).map(|n| head(n).map(|h| h["Metadata"].clone()).unwrap_or_default()).collect();
    let states: Vec<&serde_json::Value> = heads.iter().map(|m| &m["tessera-state"]).collect();
    // The endpoint dies once the placer has opened deals for them (their
    // pieces cannot arrive): deals nothing records, which the restarted
    // endpoint must end rather than leave running, paid for.
    let client = net.client();
    let deals_of = |cid: &str| -> Vec<tessera_client::api::DealDto> { client.get(&format!("/deals?cid={cid}")).unwrap() };
    let opened = || -> Vec<u64> {
        let mut ids: Vec<u64> = heads.iter().filter_map(|m| m["tessera-cid"].as_str()).flat_map(|cid| deals_of(cid)).filter(|d| d.active).map(|d| d.id).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let orphans = loop {
        let ids = opened();
        if !ids.is_empty() {
            break ids;
        }
        assert!(std::time::Instant::now() < deadline, "the placer opened no deal in 30 s; S3 log:\n{}", net.s3_log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut restarted = net.restart_s3();
    signal("-CONT");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(states.iter().all(|s| *s == "pending"), "acknowledged before placement: {states:?}");
    let log = || std::fs::read_to_string(net.home.join("restarted-s3.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while head(0).is_none() {
        assert!(std::time::Instant::now() < deadline, "the restarted S3 endpoint does not answer; its log:\n{}", log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for (n, body) in bodies.iter().enumerate() {
        let back = dir.join(format!("crash-{n}.back"));
        let o = aws(&["s3", "cp", &format!("s3://crash/{n}.bin"), back.to_str().unwrap()]);
        assert!(o.status.success(), "object {n} after the crash: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(&std::fs::read(&back).unwrap(), body, "object {n} after the crash");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let cids: Vec<String> = (0..bodies.len())
        .map(|n| loop {
            let meta = head(n).expect("object after restart")["Metadata"].clone();
            if meta["tessera-state"] == "stored" {
                break meta["tessera-cid"].as_str().unwrap().to_string();
            }
            assert!(std::time::Instant::now() < deadline, "object {n} still {meta} after 60 s; S3 log:\n{}", log());
            std::thread::sleep(std::time::Duration::from_millis(200));
        })
        .collect();
    // The deals the killed endpoint opened have ended.
    let active = |id: u64| client.get::<tessera_client::api::DealDto>(&format!("/deals/{id}")).unwrap().active;
    let left: Vec<u64> = orphans.iter().copied().filter(|&id| active(id)).collect();
    assert!(left.is_empty(), "deals {left:?} of the killed endpoint's placement still run; S3 log:\n{}", log());
    assert!(log().contains("that a stop left unrecorded"), "the restarted endpoint says what it ended: {}", log());
    // Placed together after the restart, the four small objects share one
    // pack: one deal whose members are their content ids.
    let mut packs = std::collections::BTreeSet::new();
    for cid in &cids {
        let deals = deals_of(cid);
        let packs_of: Vec<&tessera_client::api::DealDto> =
            deals.iter().filter(|d| d.active && d.members.iter().any(|m| format!("{}", tessera_storage::Cid(m.cid)) == *cid)).collect();
        assert_eq!(packs_of.len(), 1, "one active pack deal lists {cid}: {deals:?}; S3 log:\n{}", log());
        let pack = packs_of[0];
        assert_eq!(pack.packed, bodies.len(), "one pack for the four objects");
        packs.insert(pack.id);
    }
    assert_eq!(packs.len(), 1, "the four objects share one pack deal");
    let pack_id = *packs.first().unwrap();
    // Read through the storage network (not the endpoint's copy): each
    // object is cut from the pack and checked against its own content id.
    for (n, (cid, body)) in cids.iter().zip(&bodies).enumerate() {
        let out = dir.join(format!("member-{n}.bin"));
        let o = net.cli(&["storage", "get", cid, "-o", out.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "storage get {cid}: {}\ndeals: {:?}\nS3 log:\n{}\nfirst S3 log:\n{}",
            String::from_utf8_lossy(&o.stderr),
            deals_of(cid),
            log(),
            net.s3_log()
        );
        assert_eq!(&std::fs::read(&out).unwrap(), body, "packed object {n} from the storage network");
    }
    let status = net.ok(&["storage", "status", &cids[0]]);
    assert!(status.contains(&format!("deal {pack_id}")) && status.contains("packed with 3 other"), "status of a packed object: {status}");
    // The pack's deal lists its members, unless asked to leave them out.
    let full = client.get::<tessera_client::api::DealDto>(&format!("/deals/{pack_id}")).unwrap();
    let bare = client.get::<tessera_client::api::DealDto>(&format!("/deals/{pack_id}?members=false")).unwrap();
    assert_eq!((full.packed, full.members.len()), (4, 4), "the pack's deal lists its 4 objects");
    assert!(bare.members.is_empty() && bare.packed == 4 && bare.pieces.len() == full.pieces.len(), "members=false leaves the list out: {bare:?}");
    // Removing one packed object alone is refused (none has a deal of its
    // own: those the killed endpoint opened have ended).
    let only_packed: Vec<&String> =
        cids.iter().filter(|cid| !deals_of(cid).iter().any(|d| d.active && format!("{}", tessera_storage::Cid(d.cid)) == **cid)).collect();
    assert_eq!(only_packed.len(), cids.len(), "an object has a deal of its own: {:?}", cids.iter().map(|c| deals_of(c)).collect::<Vec<_>>());
    let refused = net.fails(&["storage", "rm", only_packed[0], "--from", "dev"]);
    assert!(refused.contains("inside pack"), "removing one packed object alone is refused: {refused}");
    // Deleting a pack's objects: the pack is kept while more than half of
    // its bytes are still read; then the live objects move into a new pack
    // (each checked against its content id) and the old deal ends; the last
    // object's deletion ends the last pack.
    let delete = |n: usize| {
        let o = aws(&["s3", "rm", &format!("s3://crash/{n}.bin")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let pack_of = |cid: &str| -> Option<tessera_client::api::DealDto> {
        deals_of(cid).into_iter().filter(|d| d.active && d.members.iter().any(|m| format!("{}", tessera_storage::Cid(m.cid)) == *cid)).max_by_key(|d| d.id)
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; S3 log:\n{}", log());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    delete(0);
    // Looked at 2 s after its last deletion.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(active(pack_id), "the pack was rewritten with 3 of its 4 objects still read; S3 log:\n{}", log());
    delete(1);
    wait("the half-read pack's deal to end", &|| !active(pack_id));
    let rewritten = pack_of(&cids[2]).unwrap_or_else(|| panic!("no active pack holds object 2: {:?}; S3 log:\n{}", deals_of(&cids[2]), log()));
    let full = client.get::<tessera_client::api::DealDto>(&format!("/deals/{}", rewritten.id)).unwrap();
    let mut held: Vec<String> = full.members.iter().map(|m| format!("{}", tessera_storage::Cid(m.cid))).collect();
    held.sort();
    let mut live = vec![cids[2].clone(), cids[3].clone()];
    live.sort();
    assert_eq!(held, live, "the new pack holds the two objects still read, nothing else");
    for n in 2..4 {
        let out = dir.join(format!("moved-{n}.bin"));
        let o = net.cli(&["storage", "get", &cids[n], "-o", out.to_str().unwrap()]);
        assert!(o.status.success(), "storage get {} after the rewrite: {}", cids[n], String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(&out).unwrap(), bodies[n], "object {n} from the new pack");
    }
    delete(2);
    delete(3);
    wait("every pack's deal to end after the last object went", &|| pack_of(&cids[3]).is_none() && !active(rewritten.id));
    let _ = restarted.kill();
    let _ = restarted.wait();
}

/// A wordcount job whose module and input are S3 objects and whose result
/// files the endpoint writes into another bucket; bad S3 names are refused
/// before money moves.
fn job_reads_and_writes_buckets(net: &Devnet, dir: &std::path::Path, endpoint: &str, aws: &dyn Fn(&[&str]) -> std::process::Output) {
    let examples = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())).join("../../examples/jobs");
    let module = examples.join("wordcount.wasm");
    let poem = examples.join("poem.txt");
    for args in [
        vec!["s3", "mb", "s3://job-in"],
        vec!["s3", "mb", "s3://job-out"],
        vec!["s3", "cp", module.to_str().unwrap(), "s3://job-in/bin/wordcount.wasm"],
        vec!["s3", "cp", poem.to_str().unwrap(), "s3://job-in/texts/poem.txt"],
    ] {
        let o = aws(&args);
        assert!(o.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let head = aws(&["s3api", "head-object", "--bucket", "job-in", "--key", "texts/poem.txt"]);
    assert!(String::from_utf8_lossy(&head.stdout).contains("tcid1"), "HEAD reports the content id: {}", String::from_utf8_lossy(&head.stdout));

    let spec = |name: &str, input: &str, output: &str| {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "name = \"wc-s3\"\nkind = \"wasm\"\n[wasm]\nmodule = \"s3://job-in/bin/wordcount.wasm\"\nargs = [\"poem.txt\"]\n\
                 files = {{ \"poem.txt\" = \"{input}\" }}\nfuel = 1_000_000_000\nmemory_mb = 64\n\
                 [output]\ns3 = \"{output}\"\n[order]\nmax_price_per_block = \"0.01\"\nduration_blocks = 200\npricing = \"fixed\"\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let dev = net.client().account(&tessera_client::Keyring::new(net.home.join("keys")).get("dev").unwrap().address()).unwrap().balance;
    let missing_in = net.fails(&["job", "submit", &spec("a.toml", "s3://job-in/texts/none.txt", "s3://job-out/x/"), "--s3-endpoint", endpoint]);
    assert!(missing_in.contains("there is no object s3://job-in/texts/none.txt"), "{missing_in}");
    let missing_out = net.fails(&["job", "submit", &spec("b.toml", "s3://job-in/texts/poem.txt", "s3://no-bucket/x/"), "--s3-endpoint", endpoint]);
    assert!(missing_out.contains("output bucket no-bucket does not exist"), "{missing_out}");
    let after = net.client().account(&tessera_client::Keyring::new(net.home.join("keys")).get("dev").unwrap().address()).unwrap().balance;
    assert_eq!(dev, after, "refused jobs cost nothing");

    let r = net.json(&["job", "submit", &spec("c.toml", "s3://job-in/texts/poem.txt", "s3://job-out/run1/"), "--wait", "--s3-endpoint", endpoint]);
    assert_eq!(r["state"], "succeeded", "{r}");
    let outputs: Vec<String> = r["outputs"].as_array().unwrap().iter().map(|o| o["url"].as_str().unwrap().to_string()).collect();
    assert!(outputs.contains(&"s3://job-out/run1/out/top.txt".to_string()), "{outputs:?}");
    let (stdout, top) = expected_wordcount(&std::fs::read_to_string(&poem).unwrap());
    for (key, want) in [("run1/stdout", stdout), ("run1/out/top.txt", top)] {
        let local = dir.join(key.replace('/', "_"));
        let o = aws(&["s3", "cp", &format!("s3://job-out/{key}"), local.to_str().unwrap()]);
        assert!(o.status.success(), "{key}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read_to_string(&local).unwrap(), want, "{key}");
    }
    let status = net.ok(&["job", "status", &r["job"].to_string()]);
    assert!(status.contains("output     s3://job-out/run1/"), "{status}");
}

fn rust_sdk_flows(endpoint: &str, access: &str, secret: &str) {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_s3::primitives::ByteStream;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(access, secret, None, None, "tessera-test"))
            .force_path_style(true)
            // Plain HTTP on loopback: no TLS stack needed.
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(config);
        s3.create_bucket().bucket("rust-sdk").send().await.expect("create bucket");
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        s3.put_object().bucket("rust-sdk").key("ckpt/step-1").body(ByteStream::from(body.clone())).send().await.expect("put");
        let listed = s3.list_objects_v2().bucket("rust-sdk").prefix("ckpt/").send().await.expect("list");
        assert_eq!(listed.contents().len(), 1);
        assert_eq!(listed.contents()[0].size(), Some(body.len() as i64));
        let got = s3.get_object().bucket("rust-sdk").key("ckpt/step-1").range("bytes=10-19").send().await.expect("get");
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&bytes[..], &body[10..20]);
        let err = s3.get_object().bucket("rust-sdk").key("absent").send().await.expect_err("absent key");
        assert!(err.into_service_error().is_no_such_key());
    });
}

/// One HTTP/1.1 answer off `reader`: status, lower-cased headers, body
/// (by Content-Length or chunked).
fn read_answer(reader: &mut impl std::io::BufRead) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let Some((name, value)) = line.trim_end().split_once(':') else { break };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        body.resize(len.parse().unwrap(), 0);
        reader.read_exact(&mut body).expect("body");
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).expect("chunk size");
            let size = usize::from_str_radix(line.trim(), 16).expect("chunk size");
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("chunk");
            body.extend_from_slice(&chunk[..size]);
            if size == 0 {
                break;
            }
        }
    }
    (status, headers, body)
}

/// A PUT refused before its body is read (anonymous, to a missing bucket)
/// gets its S3 error while the client is still sending a 2 MiB body, and the
/// same connection then answers the next request: the endpoint reads the rest
/// of the body instead of closing under the client (a broken pipe where the
/// error should be). A client that waits to send (`Expect: 100-continue`)
/// is told to close instead, its body never sent.
fn refused_bodies_leave_the_connection_usable(port: u16) {
    use std::io::Write;
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let body = vec![7u8; 2 << 20];
        let head = format!("PUT /no-such-bucket/k HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\r\n", body.len());
        writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body)).map(|()| writer)
    });
    let mut reader = std::io::BufReader::new(stream);
    let (status, headers, body) = read_answer(&mut reader);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("<Code>AccessDenied</Code>"), "{}", String::from_utf8_lossy(&body));
    assert!(!headers.iter().any(|(k, v)| k == "connection" && v == "close"), "{headers:?}");
    let mut writer = sender.join().unwrap().expect("the whole body was taken, not cut off");
    writer.write_all(format!("GET /no-such-bucket?list-type=2 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes()).unwrap();
    let (status, _, body) = read_answer(&mut reader);
    assert_eq!(status, 403, "the next request on the same connection: {}", String::from_utf8_lossy(&body));

    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let head = format!("PUT /no-such-bucket/k HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let (status, headers, _) = read_answer(&mut std::io::BufReader::new(stream));
    assert_eq!(status, 403);
    assert!(headers.iter().any(|(k, v)| k == "connection" && v == "close"), "{headers:?}");
}
