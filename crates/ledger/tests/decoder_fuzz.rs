//! The transaction decoder takes outside bytes: it must never panic, must
//! round-trip what it accepts, and must reject every mutation of a valid
//! transaction or reject it at the signature check.

mod common;

use common::*;
use proptest::prelude::*;
use tessera_ledger::bank::BankMsg;
use tessera_ledger::market::Pricing;
use tessera_ledger::tx::MAX_TX_BYTES;
use tessera_ledger::*;
use tessera_types::Amount;

fn sample_txs() -> Vec<SignedTx> {
    let c = Chain::new(3);
    vec![
        c.tx(0, Msg::Bank(BankMsg::Transfer { to: c.addr(1), amount: Amount(5) })),
        c.tx(1, register(8, 10)),
        c.tx(2, order(2, 100, 10, Pricing::Auction)),
        c.tx(2, bid(1, 50)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(tx) = SignedTx::decode(&bytes) {
            prop_assert_eq!(tx.encode(), bytes, "accepted bytes must be the canonical encoding");
            let _ = tx.validate_basic();
            let _ = tx.verify_signature();
        }
    }

    #[test]
    fn versioned_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut framed = vec![tessera_ledger::tx::TX_VERSION];
        framed.extend_from_slice(&bytes);
        if let Ok(tx) = SignedTx::decode(&framed) {
            prop_assert_eq!(tx.encode(), framed);
        }
    }

    #[test]
    fn mutated_valid_txs_are_rejected_or_fail_signature(which in 0usize..4, pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let txs = sample_txs();
        let original = &txs[which];
        let mut bytes = original.encode();
        let i = pos.index(bytes.len());
        bytes[i] ^= flip;
        match SignedTx::decode(&bytes) {
            Err(_) => {}
            Ok(tx) => prop_assert!(!tx.verify_signature() || tx == *original, "a mutated transaction still verifies"),
        }
    }

    #[test]
    fn truncations_never_decode(which in 0usize..4, cut in any::<prop::sample::Index>()) {
        let bytes = sample_txs()[which].encode();
        let len = cut.index(bytes.len());
        prop_assert!(SignedTx::decode(&bytes[..len]).is_err());
    }
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let big = vec![tessera_ledger::tx::TX_VERSION; MAX_TX_BYTES + 1];
    let err = SignedTx::decode(&big).unwrap_err();
    assert!(err.to_string().contains("over the limit"), "{err}");
}

#[test]
fn huge_length_prefixes_do_not_allocate_or_panic() {
    let mut bytes = vec![tessera_ledger::tx::TX_VERSION];
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(b"abc");
    assert!(SignedTx::decode(&bytes).is_err());
}
