//! End-to-end storage: put and get through real provider processes, then a
//! wiped provider, a corrupted piece and a killed provider, ending with the
//! data intact and every piece proven again. The S3 endpoint runs with its
//! read cache off, so its GETs stream from the providers too.

mod support;

use std::collections::BTreeSet;
use support::*;
use tessera_client::api::{DealDto, ProviderDto};

/// The first deal: the 3 MB file's.
fn deal(net: &Devnet) -> DealDto {
    net.client().get::<Vec<DealDto>>("/deals").unwrap().into_iter().next().expect("a deal")
}

#[test]
fn put_get_and_survive_wipe_corruption_and_a_dead_provider() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Devnet::start_with(dir.path(), free_port(), &["--storage-providers", "8", "--s3-cache-mib", "0"]);
    let client = net.client();
    net.wait_until(60, "8 registered storage providers", || {
        client.get::<Vec<ProviderDto>>("/providers").map(|p| p.len() == 8).unwrap_or(false)
    });

    let input = dir.path().join("data.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let put = net.json(&["storage", "put", input.to_str().unwrap(), "--segment-kib", "512"]);
    let cid = put["cid"].as_str().unwrap().to_string();
    assert!(cid.starts_with("tcid1"), "{put}");
    assert_eq!(put["missed_pieces"], 0);

    let out = dir.path().join("out.bin");
    net.ok(&["storage", "get", &cid, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert!(net.ok(&["storage", "ls"]).contains(&cid));

    // A directory stores each file under its own content id.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), b"alpha").unwrap();
    std::fs::write(tree.join("sub").join("b.txt"), b"bravo bravo").unwrap();
    let listing = net.json(&["storage", "put", tree.to_str().unwrap()]);
    let entries = listing.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listing}");
    let b = entries.iter().find(|e| e["path"] == "sub/b.txt").unwrap();
    let b_out = dir.path().join("b.out");
    net.ok(&["storage", "get", b["cid"].as_str().unwrap(), "-o", b_out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&b_out).unwrap(), b"bravo bravo");

    // An S3 object of three segments, once on the storage network, is read
    // from the providers: whole, and a range across a segment's end.
    let key = net.json(&["storage", "s3-key", "create", "--from", "dev"]);
    let (access, secret) = (key["access_key"].as_str().unwrap(), key["secret_key"].as_str().unwrap());
    let aws = |args: &[&str]| {
        let o = net.aws(access, secret, args);
        assert!(o.status.success(), "aws {args:?}: {}\nS3 log:\n{}", String::from_utf8_lossy(&o.stderr), net.s3_log());
        o
    };
    let object: Vec<u8> = data.iter().chain(&data).chain(&data).copied().collect();
    let object_file = dir.path().join("object.bin");
    std::fs::write(&object_file, &object).unwrap();
    aws(&["s3", "mb", "s3://cold"]);
    aws(&["s3", "cp", object_file.to_str().unwrap(), "s3://cold/object.bin"]);
    net.wait_until(60, "the S3 object on the storage network", || {
        String::from_utf8_lossy(&aws(&["s3api", "head-object", "--bucket", "cold", "--key", "object.bin"]).stdout).contains("\"stored\"")
    });
    let read_back = |name: &str| {
        let whole = dir.path().join(format!("{name}.whole"));
        aws(&["s3", "cp", "s3://cold/object.bin", whole.to_str().unwrap()]);
        assert!(std::fs::read(&whole).unwrap() == object, "{name}: the whole object differs");
        let part = dir.path().join(format!("{name}.part"));
        let (from, to) = ((4 << 20) - 1000, (4 << 20) + 2000);
        aws(&["s3api", "get-object", "--bucket", "cold", "--key", "object.bin", "--range", &format!("bytes={from}-{to}"), part.to_str().unwrap()]);
        assert!(std::fs::read(&part).unwrap() == object[from..=to], "{name}: the range differs");
    };
    read_back("placed");

    // Every piece gets proven within a couple of epochs.
    net.wait_until(60, "every piece proven once", || deal(&net).pieces.iter().all(|p| p.proven_epochs >= 1));

    // Wipe one provider's disk and corrupt a piece on another.
    let d = deal(&net);
    let holders: Vec<_> = d.pieces.iter().filter(|p| p.segment == 0).map(|p| p.provider).collect();
    let provider_dir = |addr: &tessera_types::Address| {
        let keys = tessera_client::Keyring::new(dir.path().join("keys"));
        let name = keys.list().unwrap().into_iter().find(|(_, a)| a == addr).unwrap().0;
        dir.path().join("devnet").join("providers").join(name).join("pieces")
    };
    // The provider keeps running, and may be writing a file in there (a
    // piece, a repair) while it goes: removing then fails with "directory
    // not empty", so try again.
    let wiped = provider_dir(&holders[0]);
    let mut tries = 0;
    while let Err(e) = std::fs::remove_dir_all(&wiped) {
        tries += 1;
        assert!(tries < 20, "cannot wipe {}: {e}", wiped.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let victim_piece = d.pieces.iter().find(|p| p.segment == 0 && p.provider == holders[1]).unwrap();
    let hex = victim_piece.hash.to_string();
    let path = provider_dir(&holders[1]).join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    // Still readable (any 4 of 6), and the corrupted piece is never served.
    let out2 = dir.path().join("out2.bin");
    net.ok(&["storage", "get", &cid, "-o", out2.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out2).unwrap(), data);
    // The S3 object too, its pieces on the wiped provider rebuilt from parity.
    read_back("wiped");

    // The damaged providers rebuild their pieces when challenged.
    let before: u64 = deal(&net).pieces.iter().map(|p| p.proven_epochs).min().unwrap();
    net.wait_until(60, "every piece proven again after the wipe", || {
        deal(&net).pieces.iter().all(|p| p.proven_epochs >= before + 2)
    });
    assert!(deal(&net).pieces.iter().all(|p| p.faults == 0 && !p.lost));

    // Kill one provider for good: its pieces move to the spare provider.
    let dead = holders[2];
    net.kill_provider(&dead);
    let moved = std::time::Instant::now();
    while !{
        let d = deal(&net);
        d.pieces.iter().all(|p| p.provider != dead && !p.lost)
    } {
        if moved.elapsed() > std::time::Duration::from_secs(90) {
            let d = deal(&net);
            let providers_dir = dir.path().join("devnet").join("providers");
            let mut logs = String::new();
            for e in std::fs::read_dir(&providers_dir).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(e.path()).unwrap();
                    let tail: Vec<&str> = text.lines().rev().take(5).collect();
                    logs.push_str(&format!("{}: {:?}\n", e.path().display(), tail));
                }
            }
            panic!("dead provider {dead} pieces not moved: {:#?}\n{logs}", d.pieces);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // The new holders rebuild the moved pieces and prove them.
    let after_move: Vec<u64> = deal(&net).pieces.iter().map(|p| p.proven_epochs).collect();
    net.wait_until(60, "moved pieces proven by their new providers", || {
        deal(&net).pieces.iter().zip(&after_move).all(|(p, before)| p.proven_epochs > *before)
    });
    let d = deal(&net);
    for s in d.segments.iter().map(|(n, _, _)| *n) {
        let holders: BTreeSet<_> = d.pieces.iter().filter(|p| p.segment == s).map(|p| p.provider).collect();
        assert_eq!(holders.len(), 6, "segment {s} on six distinct providers");
    }
    let out3 = dir.path().join("out3.bin");
    net.ok(&["storage", "get", &cid, "-o", out3.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out3).unwrap(), data);
    let status = net.ok(&["storage", "status", &cid]);
    assert!(status.contains("healthy"), "{status}");

    // A content with a deal whose uploader died before sending a piece (here:
    // submitted, never uploaded) and then a second deal that holds it: reads
    // use the deal with the pieces, whichever the ledger lists first.
    let twice = dir.path().join("twice.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect();
    std::fs::write(&twice, &bytes).unwrap();
    let opts = tessera_client::storage::PutOptions {
        scheme: "4+2".parse().unwrap(),
        segment_bytes: 512 << 10,
        duration_blocks: 100_000,
        max_price_per_gib_block: tessera_types::Amount::from_micro(10_000),
    };
    let key = tessera_client::keyring::Keyring::new(net.home.join("keys")).get("dev").unwrap();
    let content = tessera_client::storage::Content { path: &twice, members: Vec::new(), manifest: None, unchanged: false };
    let manifest = tessera_client::storage::manifest_of_file(&twice, &opts, &mut |_, _, _| {}).unwrap();
    let _ = tessera_client::storage::submit_contents(&client, &key, std::slice::from_ref(&content), &opts, &mut |_, _, _| {});
    let twice_cid = manifest.cid();
    let deals_of = || tessera_client::storage::deals_of(&client, &twice_cid).unwrap().into_iter().filter(|d| d.active).count();
    net.wait_until(30, "the deal that never gets its pieces", || deals_of() == 1);
    let put = net.json(&["storage", "put", twice.to_str().unwrap(), "--segment-kib", "512"]);
    assert_eq!(put["cid"].as_str().unwrap(), twice_cid.to_string(), "{put}");
    assert_eq!(deals_of(), 2);
    let back = dir.path().join("twice.back");
    net.ok(&["storage", "get", &twice_cid.to_string(), "-o", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), bytes);

    // An upload that fails (here: the file changed once its deal was open)
    // ends the deal it opened, rather than leave its escrow paying for
    // pieces nobody can read.
    let changing = dir.path().join("changing.bin");
    let first: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    std::fs::write(&changing, &first).unwrap();
    let content = tessera_client::storage::Content { path: &changing, members: Vec::new(), manifest: None, unchanged: false };
    let changing_cid = tessera_client::storage::manifest_of_file(&changing, &opts, &mut |_, _, _| {}).unwrap().cid();
    let submitted = tessera_client::storage::submit_contents(&client, &key, std::slice::from_ref(&content), &opts, &mut |_, _, _| {});
    std::fs::write(&changing, first.iter().map(|b| b ^ 1).collect::<Vec<u8>>()).unwrap();
    let stored = tessera_client::storage::upload_contents(&client, &key, std::slice::from_ref(&content), submitted, None, &mut |_, _, _| {});
    let Some(Err(err)) = stored.into_iter().next() else { panic!("the file changed under its upload, yet it was stored") };
    let err = format!("{err:#}");
    assert!(err.contains("changed while it was being stored") && err.contains("1 of its 1 deals ended"), "{err}");
    let active = tessera_client::storage::deals_of(&client, &changing_cid).unwrap().into_iter().filter(|d| d.active).count();
    assert_eq!(active, 0, "the failed upload's deal ended");

    // Removing ends the deals and refunds.
    net.ok(&["storage", "rm", &cid]);
    assert!(net.fails(&["storage", "get", &cid, "-o", out3.to_str().unwrap()]).contains("no active storage deal"));
    assert!(net.stop().success());
}
