//! A chain driven block by block over the in-memory store, without real time.

#![allow(dead_code)]

use tessera_crypto::KeyPair;
use tessera_ledger::market::{MarketMsg, OrderSpec, Pricing, Resources};
use tessera_ledger::registry::{Gpu, Hardware, PriceList, ProviderInfo, RegistryMsg};
use tessera_ledger::*;
use tessera_types::{Address, Amount, PublicKey};

pub const CHAIN: &str = "test-chain";

pub struct Chain {
    pub store: MemStore,
    pub height: u64,
    pub validator: KeyPair,
    pub users: Vec<KeyPair>,
}

pub fn key(i: usize) -> KeyPair {
    KeyPair::from_seed(format!("user-{i}").as_bytes())
}

impl Chain {
    pub fn new(users: usize) -> Chain {
        Chain::with_params(users, Params::default())
    }

    pub fn with_params(users: usize, params: Params) -> Chain {
        let validator = KeyPair::from_seed(b"validator");
        let users: Vec<KeyPair> = (0..users).map(key).collect();
        let mut accounts: Vec<GenesisAccount> =
            users.iter().map(|k| GenesisAccount { address: k.address(), balance: Amount::from_tsr(10_000) }).collect();
        accounts.push(GenesisAccount { address: validator.address(), balance: Amount::from_tsr(100_000) });
        let g = Genesis {
            chain_id: CHAIN.into(),
            genesis_time_ms: 0,
            params,
            accounts,
            validators: vec![GenesisValidator {
                operator: validator.address(),
                consensus_key: PublicKey(validator.public_key()),
                moniker: "v".into(),
                self_bond: Amount::from_tsr(10_000),
            }],
            providers: vec![],
        };
        let mut store = MemStore::default();
        let changes = {
            let mut st = Overlay::new(&store);
            init_genesis(&mut st, &g).unwrap();
            st.into_changes()
        };
        store.apply(&changes);
        Chain { store, height: 0, validator, users }
    }

    pub fn addr(&self, i: usize) -> Address {
        self.users[i].address()
    }

    pub fn view<T>(&self, f: impl FnOnce(&Overlay) -> T) -> T {
        f(&Overlay::new(&self.store))
    }

    pub fn balance(&self, a: &Address) -> Amount {
        self.view(|st| bank::account(st, a).balance)
    }

    pub fn nonce(&self, a: &Address) -> u64 {
        self.view(|st| bank::account(st, a).nonce)
    }

    pub fn sign(&self, user: usize, nonce: u64, msg: Msg) -> SignedTx {
        TxBody {
            chain_id: CHAIN.into(),
            signer: PublicKey(self.users[user].public_key()),
            nonce,
            fee: Params::default().bank.min_fee,
            msg,
        }
        .sign(&self.users[user])
    }

    /// Signs with the user's current nonce.
    pub fn tx(&self, user: usize, msg: Msg) -> SignedTx {
        self.sign(user, self.nonce(&self.addr(user)), msg)
    }

    pub fn block(&mut self, txs: &[SignedTx]) -> BlockOutcome {
        self.height += 1;
        let ctx = BlockContext {
            height: self.height,
            time_ms: self.height * 500,
            proposer: self.validator.address(),
            beacon: tessera_types::Hash32::blake3(&self.height.to_be_bytes()),
        };
        let (outcome, changes) = {
            let mut st = Overlay::new(&self.store);
            let outcome = execute_block(&mut st, &ctx, txs);
            (outcome, st.into_changes())
        };
        self.store.apply(&changes);
        outcome
    }

    /// Runs one transaction in its own block and returns its result code and log.
    pub fn run(&mut self, user: usize, msg: Msg) -> (u32, String) {
        let tx = self.tx(user, msg);
        let out = self.block(&[tx]);
        (out.txs[0].code, out.txs[0].log.clone())
    }

    pub fn empty_blocks(&mut self, n: u64) {
        for _ in 0..n {
            self.block(&[]);
        }
    }

    /// Money held across every account equals the supply counter.
    pub fn assert_supply_matches_balances(&self) {
        self.view(|st| {
            let total: u128 = bank::all_accounts(st).iter().map(|(_, a)| a.balance.micro()).sum();
            assert_eq!(total, bank::supply(st).micro(), "sum of balances != supply");
        });
    }

    /// Module pools hold exactly what their records say they hold.
    pub fn assert_pools_backed(&self) {
        self.view(|st| {
            let escrow: u128 = market::all_orders(st).iter().map(|o| o.escrow.micro()).sum::<u128>()
                + market::all_leases(st).iter().map(|l| l.escrow_remaining.micro()).sum::<u128>();
            assert_eq!(bank::account(st, &market::MARKET_POOL).balance.micro(), escrow, "market pool != escrow");
            let bonded: u128 = staking::all_validators(st).iter().map(|v| v.tokens.micro()).sum();
            let unbonding: u128 = {
                let mut sum = 0;
                for (a, _) in bank::all_accounts(st) {
                    sum += staking::unbondings_of(st, &a).iter().map(|u| u.amount.micro()).sum::<u128>();
                }
                sum
            };
            assert_eq!(bank::account(st, &staking::STAKING_POOL).balance.micro(), bonded + unbonding, "staking pool");
            let deal_escrow: u128 = storage::all_deals(st).iter().map(|d| d.escrow_remaining.micro()).sum();
            assert_eq!(bank::account(st, &storage::STORAGE_POOL).balance.micro(), deal_escrow, "storage pool");
            let stakes: u128 = registry::all_providers(st).iter().map(|p| p.stake.micro()).sum();
            assert_eq!(bank::account(st, &registry::REGISTRY_POOL).balance.micro(), stakes, "registry pool");
        });
    }
}

pub fn provider_info(cpu: u32, price_cpu: u128) -> ProviderInfo {
    ProviderInfo {
        hardware: Hardware { cpu_cores: cpu, ram_mb: 16_384, disk_gb: 100, gpus: vec![Gpu { model: "T4".into(), memory_mb: 16_384 }] },
        region: "eu".into(),
        endpoints: vec!["http://127.0.0.1:9000".into()],
        prices: PriceList {
            per_cpu_core: Amount(price_cpu),
            per_gb_ram: Amount(0),
            per_gb_disk: Amount(0),
            per_gpu: Amount(0),
        },
    }
}

pub fn register(cpu: u32, price_cpu: u128) -> Msg {
    Msg::Registry(RegistryMsg::Register { info: provider_info(cpu, price_cpu), stake: Amount::from_tsr(100) })
}

pub fn order(cpu: u32, max_price: u128, duration: u64, pricing: Pricing) -> Msg {
    Msg::Market(MarketMsg::CreateOrder {
        spec: OrderSpec {
            resources: Resources { cpu_cores: cpu, ram_mb: 1024, disk_gb: 1, gpus: 0, gpu_memory_mb: 0 },
            max_price_per_block: Amount(max_price),
            duration_blocks: duration,
            bid_window_blocks: 2,
            pricing,
        },
    })
}

pub fn bid(order: u64, price: u128) -> Msg {
    Msg::Market(MarketMsg::PlaceBid { order, price_per_block: Amount(price) })
}
