//! Storage deals: placement on distinct providers, proofs of storage, faults,
//! slashing, repair and escrow, driven block by block.

mod common;

use common::*;
use tessera_ledger::registry::{Hardware, PriceList, ProviderInfo, RegistryMsg};
use tessera_ledger::storage::{self, PieceMeta, SegmentPieces, StorageMsg};
use tessera_ledger::*;
use tessera_storage::{challenge_indices, leaf_count, ErasureScheme, PieceTree, SegmentReader};
use tessera_types::{Amount, Hash32};

fn storage_provider(region: &str) -> Msg {
    Msg::Registry(RegistryMsg::Register {
        info: ProviderInfo {
            hardware: Hardware { cpu_cores: 0, ram_mb: 0, disk_gb: 10, gpus: vec![] },
            region: region.into(),
            endpoints: vec!["http://127.0.0.1:9200".into()],
            prices: PriceList { per_gb_disk: Amount(1_000), ..PriceList::default() },
        },
        stake: Amount::from_tsr(100),
    })
}

struct File {
    cid: Hash32,
    segments: Vec<SegmentPieces>,
    /// Piece bytes in deal order (segment by segment, index by index).
    pieces: Vec<Vec<u8>>,
}

fn file(len: usize) -> File {
    let data: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1]).collect();
    let mut reader = SegmentReader::new(&data[..], ErasureScheme::DEVNET, 8 * 1024).unwrap();
    let encoded: Vec<_> = reader.by_ref().collect::<Result<_, _>>().unwrap();
    let manifest = reader.manifest();
    let segments = encoded
        .iter()
        .map(|s| SegmentPieces {
            segment: s.index as u32,
            len: s.entry.len,
            hash: s.entry.hash,
            pieces: s.entry.pieces.iter().map(|p| PieceMeta { hash: p.hash, len: p.len }).collect(),
        })
        .collect();
    File { cid: manifest.cid().0, segments, pieces: encoded.iter().flat_map(|s| s.pieces().map(<[u8]>::to_vec)).collect() }
}

fn create_deal(f: &File, duration: u64) -> Msg {
    Msg::Storage(StorageMsg::CreateDeal(storage::DealTerms {
        cid: f.cid,
        scheme: ErasureScheme::DEVNET,
        segment_bytes: 8 * 1024,
        segments: f.segments.clone(),
        duration_blocks: duration,
        max_price_per_gib_block: Amount(2_000),
    }))
}

/// Builds the provider's answer to the open challenge of one piece.
fn answer(c: &Chain, f: &File, deal_id: u64, piece: u32) -> Option<Msg> {
    let open = c.view(storage::pending_challenges).into_iter().find(|p| p.deal == deal_id && p.piece == piece)?;
    let d = c.view(|st| storage::deal(st, deal_id)).unwrap();
    let beacon = c.view(|st| storage::beacon(st, open.epoch)).unwrap();
    let bytes = &f.pieces[piece as usize];
    let tree = PieceTree::build(bytes);
    let p = &d.pieces[piece as usize];
    let k = Params::default().storage.challenges_per_piece;
    let indices = challenge_indices(&beacon, &p.hash, open.epoch, leaf_count(p.len), k);
    let leaves = indices
        .iter()
        .map(|i| bytes.chunks(tessera_storage::LEAF_BYTES).nth(*i as usize).unwrap().to_vec())
        .collect();
    let proofs: Vec<_> = indices.iter().map(|i| tree.prove(*i).unwrap()).collect();
    let proof = tessera_storage::MultiProof::from_proofs(tree.leaf_count(), &proofs).unwrap();
    Some(Msg::Storage(StorageMsg::ProveStorage { deal: deal_id, piece, epoch: open.epoch, leaves, proof }))
}

/// A chain of 8 users; users 1.. register as storage providers in `regions`.
fn chain_with_providers(regions: &[&str]) -> Chain {
    let mut c = Chain::new(8);
    for (i, region) in regions.iter().enumerate() {
        assert_eq!(c.run(i + 1, storage_provider(region)).0, 0);
    }
    c
}

fn user_of(c: &Chain, provider: tessera_types::Address) -> usize {
    (0..c.users.len()).find(|i| c.addr(*i) == provider).unwrap()
}

#[test]
fn deal_places_pieces_on_distinct_providers_and_pays_for_proofs() {
    let mut c = chain_with_providers(&["eu", "us", "ap", "eu", "us", "ap", "sa"]);
    let f = file(30_000);
    let owner_before = c.balance(&c.addr(0));
    let (code, log) = c.run(0, create_deal(&f, 200));
    assert_eq!(code, 0, "{log}");
    let d = c.view(|st| storage::deal(st, 1)).unwrap();
    assert_eq!(d.pieces.len(), f.pieces.len());
    // The deal is found by its content id, and only by its own.
    assert_eq!(c.view(|st| storage::deals_of_cid(st, &f.cid)).iter().map(|d| d.id).collect::<Vec<_>>(), vec![1]);
    assert!(c.view(|st| storage::deals_of_cid(st, &tessera_types::Hash32([7; 32]))).is_empty());
    // And under each provider it gives a piece to, and no other.
    for u in 1..8 {
        let listed = c.view(|st| storage::deals_of_provider(st, &c.addr(u))).iter().map(|d| d.id).collect::<Vec<_>>();
        let holds = d.pieces.iter().any(|p| p.provider == c.addr(u));
        assert_eq!(listed, if holds { vec![1] } else { vec![] }, "provider {u}");
    }
    for s in &f.segments {
        let holders: std::collections::BTreeSet<_> =
            d.pieces.iter().filter(|p| p.segment == s.segment).map(|p| p.provider).collect();
        assert_eq!(holders.len(), 6, "each piece of a segment on a distinct provider");
    }
    assert!(c.balance(&c.addr(0)) < owner_before);
    c.assert_pools_backed();

    // Run through the first proof epoch; every provider answers every
    // challenge. Each piece is challenged in a block of its own slot, so the
    // epoch's challenges come spread over its blocks, never all at once.
    let sp = Params::default().storage;
    let first_epoch = sp.epoch_blocks;
    while c.height < first_epoch {
        c.block(&[]);
    }
    let mut challenged = std::collections::BTreeSet::new();
    let mut most_open_at_once = 0;
    for _ in 0..sp.epoch_blocks {
        let open = c.view(storage::pending_challenges);
        most_open_at_once = most_open_at_once.max(open.len());
        let mut txs = Vec::new();
        let mut nonces = std::collections::BTreeMap::new();
        for ch in &open {
            assert_eq!(ch.epoch, 1);
            assert!(challenged.insert(ch.piece), "piece {} challenged twice in one epoch", ch.piece);
            let user = user_of(&c, d.pieces[ch.piece as usize].provider);
            let nonce = *nonces.entry(user).or_insert_with(|| c.nonce(&c.addr(user)));
            nonces.insert(user, nonce + 1);
            txs.push(c.sign(user, nonce, answer(&c, &f, 1, ch.piece).unwrap()));
        }
        let out = c.block(&txs);
        assert!(out.txs.iter().all(|t| t.code == 0), "{:?}", out.txs.iter().map(|t| &t.log).collect::<Vec<_>>());
        assert!(c.view(storage::pending_challenges).iter().all(|p| p.epoch > 1 || !challenged.contains(&p.piece)));
    }
    assert_eq!(challenged.len(), d.pieces.len(), "every piece challenged once in the epoch");
    assert!(most_open_at_once * 4 <= d.pieces.len(), "{most_open_at_once} of {} pieces challenged in one block", d.pieces.len());
    let d = c.view(|st| storage::deal(st, 1)).unwrap();
    assert!(d.paid > Amount::ZERO);
    assert!(d.pieces.iter().all(|p| p.proven_epochs == 1));
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

#[test]
fn wrong_proof_is_refused_and_silence_faults_then_moves_the_piece() {
    let mut c = chain_with_providers(&["eu", "us", "ap", "eu", "us", "ap", "sa"]);
    let f = file(5_000);
    assert_eq!(c.run(0, create_deal(&f, 1_000)).0, 0);
    let victim_piece = 0u32;
    let victim = c.view(|st| storage::deal(st, 1)).unwrap().pieces[0].provider;
    let victim_user = user_of(&c, victim);
    let stake_before = c.view(|st| registry::provider(st, &victim).unwrap().stake);
    let supply_before = c.view(bank::supply);

    let mut faults_seen = 0;
    let mut moved_to = None;
    for _ in 0..200 {
        let open = c.view(storage::pending_challenges);
        let d = c.view(|st| storage::deal(st, 1)).unwrap();
        let mut txs = Vec::new();
        let mut nonces = std::collections::BTreeMap::new();
        for ch in &open {
            let user = user_of(&c, d.pieces[ch.piece as usize].provider);
            if ch.piece == victim_piece && d.pieces[0].provider == victim {
                // The victim sends garbage instead of its piece's leaves.
                if let Some(Msg::Storage(StorageMsg::ProveStorage { deal, piece, epoch, mut leaves, proof })) = answer(&c, &f, 1, ch.piece) {
                    leaves[0][0] ^= 1;
                    let nonce = *nonces.entry(user).or_insert_with(|| c.nonce(&c.addr(user)));
                    nonces.insert(user, nonce + 1);
                    txs.push(c.sign(user, nonce, Msg::Storage(StorageMsg::ProveStorage { deal, piece, epoch, leaves, proof })));
                }
                continue;
            }
            let nonce = *nonces.entry(user).or_insert_with(|| c.nonce(&c.addr(user)));
            nonces.insert(user, nonce + 1);
            txs.push(c.sign(user, nonce, answer(&c, &f, 1, ch.piece).unwrap()));
        }
        let out = c.block(&txs);
        for t in &out.txs {
            if t.code != 0 {
                assert!(t.log.contains("does not verify"), "{}", t.log);
            }
        }
        // Keep every provider alive.
        let hb: Vec<SignedTx> = (1..8).map(|u| c.tx(u, Msg::Registry(RegistryMsg::Heartbeat))).collect();
        let beat = c.block(&hb);
        for e in out.end_events.iter().chain(&beat.end_events) {
            if e.kind == "storage.fault" && e.get("provider") == Some(&victim.to_string()) {
                faults_seen += 1;
            }
            if e.kind == "storage.piece_moved" {
                moved_to = e.get("to").map(str::to_string);
            }
        }
        if moved_to.is_some() {
            break;
        }
        c.assert_pools_backed();
    }
    let moved_to = moved_to.expect("the piece was moved after repeated faults");
    assert_eq!(faults_seen, Params::default().storage.max_faults);
    assert_ne!(moved_to, victim.to_string());
    let to: tessera_types::Address = moved_to.parse().unwrap();
    assert_eq!(c.view(|st| storage::deals_of_provider(st, &to)).iter().map(|d| d.id).collect::<Vec<_>>(), vec![1], "listed under the provider the piece moved to");
    let d = c.view(|st| storage::deal(st, 1)).unwrap();
    let holders: std::collections::BTreeSet<_> = d.pieces.iter().map(|p| p.provider).collect();
    assert_eq!(holders.len(), 6, "still on six distinct providers");
    let sp = Params::default().storage;
    let expected_burn = sp.fault_fee.micro() * sp.max_faults as u128 + sp.lost_piece_slash.micro();
    let stake_after = c.view(|st| registry::provider(st, &victim).unwrap().stake);
    assert_eq!(stake_before.micro() - stake_after.micro(), expected_burn);
    let burned = supply_before.micro() + c.view(rewards::issued).micro() - c.view(bank::supply).micro();
    assert!(burned >= expected_burn);
    assert!(c.view(|st| registry::provider(st, &victim).unwrap().reputation.score_ppm()) < 980_000);
    let _ = victim_user;
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

#[test]
fn too_few_providers_fails_clearly_and_ending_a_deal_refunds() {
    let mut c = Chain::new(8);
    for i in 1..=3 {
        assert_eq!(c.run(i, storage_provider("eu")).0, 0);
    }
    let f = file(2_000);
    let before = c.balance(&c.addr(0));
    let (code, log) = c.run(0, create_deal(&f, 100));
    assert_eq!(code, 7);
    assert!(log.contains("not enough storage providers: need 6"), "{log}");
    assert_eq!(c.balance(&c.addr(0)).micro(), before.micro() - 1_000, "only the fee is spent");
    for i in 4..=6 {
        assert_eq!(c.run(i, storage_provider("us")).0, 0);
    }
    assert_eq!(c.run(0, create_deal(&f, 100)).0, 0);
    assert_eq!(c.run(1, Msg::Storage(StorageMsg::EndDeal { deal: 1 })).0, 9, "only the owner ends a deal");
    let mid = c.balance(&c.addr(0));
    let escrow = c.view(|st| storage::deal(st, 1)).unwrap().escrow_remaining;
    assert_eq!(c.run(0, Msg::Storage(StorageMsg::EndDeal { deal: 1 })).0, 0);
    assert_eq!(c.balance(&c.addr(0)).micro(), mid.micro() + escrow.micro() - 1_000);
    assert!(c.view(|st| (1..=6).all(|u| storage::used_bytes(st, &c.addr(u)) == 0)));
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

fn create_pack(f: &File, members: Vec<storage::PackMember>) -> Msg {
    Msg::Storage(StorageMsg::CreatePack {
        terms: storage::DealTerms {
            cid: f.cid,
            scheme: ErasureScheme::DEVNET,
            segment_bytes: 8 * 1024,
            segments: f.segments.clone(),
            duration_blocks: 100,
            max_price_per_gib_block: Amount(2_000),
        },
        members,
    })
}

#[test]
fn a_pack_is_one_deal_found_by_each_members_content_id() {
    let mut c = chain_with_providers(&["eu", "us", "ap", "eu", "us", "ap"]);
    let f = file(20_000);
    let member = |n: u8, offset: u64, len: u64| storage::PackMember { cid: Hash32([n; 32]), offset, len };
    // Members must lie inside the pack, in order, without overlapping.
    for (bad, why) in [
        (vec![member(1, 0, 100), member(2, 50, 100)], "after the one before it"),
        (vec![member(1, 19_990, 11)], "inside the pack"),
        (vec![member(1, 0, 0)], "non-empty"),
        (vec![storage::PackMember { cid: f.cid, offset: 0, len: 10 }], "its own member"),
        (vec![], "1 to 1024 objects"),
    ] {
        let (code, log) = c.run(0, create_pack(&f, bad));
        assert_ne!(code, 0, "{why}");
        assert!(log.contains(why), "{why}: {log}");
    }
    let members = vec![member(1, 0, 4_096), member(2, 4_096, 10_000), member(3, 15_000, 5_000)];
    let (code, log) = c.run(0, create_pack(&f, members.clone()));
    assert_eq!(code, 0, "{log}");
    let id = c.view(|st| storage::deals_of_cid(st, &f.cid)).iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(id.len(), 1);
    assert_eq!(c.view(|st| storage::pack_members(st, id[0])), members);
    assert_eq!(c.view(|st| storage::pack_member_count(st, id[0])), members.len());
    assert_eq!(c.view(|st| storage::pack_member_count(st, id[0] + 1_000)), 0, "no pack, no members");
    for m in &members {
        assert_eq!(c.view(|st| storage::deals_of_cid(st, &m.cid)).iter().map(|d| d.id).collect::<Vec<_>>(), id, "member found by its content id");
    }
    // One deal's pieces are challenged, not one per member.
    let d = c.view(|st| storage::deal(st, id[0])).unwrap();
    assert_eq!(d.pieces.len(), f.pieces.len());
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

/// An upload that never reached its providers: no piece is ever proven. Once
/// the first piece counts as lost the deal ends as lost (nothing could
/// rebuild it) with its unspent escrow back to the owner, instead of moving
/// pieces that every new holder would fault on too.
#[test]
fn a_deal_whose_pieces_never_arrived_ends_as_lost_and_refunds() {
    let mut c = chain_with_providers(&["eu", "us", "ap", "eu", "us", "ap", "sa"]);
    let f = file(5_000);
    let owner = c.addr(0);
    assert_eq!(c.run(0, create_deal(&f, 100_000)).0, 0);
    let mut ended = None;
    for _ in 0..500 {
        let hb: Vec<SignedTx> = (1..8).map(|u| c.tx(u, Msg::Registry(RegistryMsg::Heartbeat))).collect();
        let out = c.block(&hb);
        assert!(!out.end_events.iter().any(|e| e.kind == "storage.piece_moved"), "nothing to rebuild a piece from");
        if let Some(e) = out.end_events.iter().find(|e| e.kind == "storage.deal_ended") {
            ended = Some(e.clone());
            break;
        }
    }
    let ended = ended.expect("the deal ended");
    assert!(ended.get("reason").is_some_and(|r| r.contains("lost: segment 0 has 0 proven pieces")), "{ended:?}");
    let d = c.view(|st| storage::deal(st, 1)).unwrap();
    assert!(!d.active);
    assert_eq!(d.escrow_remaining, Amount::ZERO);
    assert!(ended.get("refund").is_some_and(|r| r != "0"), "unspent escrow went back to {owner}: {ended:?}");
    // No more challenges for it: blocks go by without faults.
    for _ in 0..40 {
        let out = c.block(&[]);
        assert!(!out.end_events.iter().any(|e| e.kind == "storage.fault"));
    }
    assert!(c.view(storage::pending_challenges).is_empty());
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}

/// The chain takes no more deals than it can carry the proofs of: past its
/// budget a deal is refused with the reason, and ending a deal makes room.
#[test]
fn deals_beyond_the_chains_proof_capacity_are_refused_until_others_end() {
    let mut params = Params::default();
    let f = file(5_000);
    let per_deal: u64 = f.segments.iter().flat_map(|s| &s.pieces).map(|p| tessera_storage::proof_bytes(p.len, 50)).sum();
    // Room for one such deal an epoch, not two.
    params.storage.max_proof_bytes_per_block = (per_deal * 3 / 2).div_ceil(params.storage.epoch_blocks);
    let mut c = Chain::with_params(8, params);
    for (i, region) in ["eu", "us", "ap", "eu", "us", "ap", "sa"].iter().enumerate() {
        assert_eq!(c.run(i + 1, storage_provider(region)).0, 0);
    }
    assert_eq!(c.run(0, create_deal(&f, 1_000)).0, 0);
    assert_eq!(c.view(storage::proof_load), per_deal);
    let g = file(5_001);
    let before = c.balance(&c.addr(0));
    let (code, log) = c.run(0, create_deal(&g, 1_000));
    assert_eq!(code, 7, "{log}");
    assert!(log.contains("proof-of-storage capacity") && log.contains("--segment-kib"), "{log}");
    assert_eq!(c.balance(&c.addr(0)).micro(), before.micro() - 1_000, "only the fee is spent");
    assert_eq!(c.view(storage::proof_load), per_deal, "a refused deal adds nothing");
    assert_eq!(c.run(0, Msg::Storage(StorageMsg::EndDeal { deal: 1 })).0, 0);
    assert_eq!(c.view(storage::proof_load), 0);
    assert_eq!(c.run(0, create_deal(&g, 1_000)).0, 0, "room again once the first deal ended");
    c.assert_pools_backed();
    c.assert_supply_matches_balances();
}
