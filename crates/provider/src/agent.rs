//! `tessera provider run`: registration, heartbeats, the piece server, and
//! answers to storage challenges (rebuilding a missing piece first).

use anyhow::Context;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tessera_client::api::{ChallengeDto, ChallengesAtDto, DealDto, ProviderDto};
use tessera_client::{Client, ClientError};
use tessera_crypto::KeyPair;
use tessera_ledger::registry::{PriceList, ProviderInfo, RegistryMsg};
use tessera_ledger::storage::StorageMsg;
use tessera_ledger::Msg;
use tessera_types::Amount;

use crate::piece_store::{PieceError, PieceStore};
use crate::server::{router, ServerState};

/// Longest the node holds the heartbeat thread's and the control loop's
/// requests (until a heartbeat is due, a challenge comes or a heal is due)
/// before they look at their stop flag and parent process again.
const NODE_WAIT: Duration = Duration::from_secs(1);

pub struct AgentConfig {
    pub key: KeyPair,
    pub rpc: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub storage_gb: u64,
    pub stake: Amount,
    pub region: String,
    pub price_per_gb_disk: Amount,
    /// Per-block prices for compute (the fixed strategy bids these; auction and
    /// dynamic treat them as cost).
    pub price_per_cpu_core: Amount,
    pub price_per_gb_ram: Amount,
    pub price_per_gpu: Amount,
    pub strategy: crate::decide::Strategy,
    /// Jobs run at once (and auctions bid on while they run).
    pub max_jobs: usize,
    /// Offer fewer cores or less RAM than the machine has.
    pub cpu_cores: Option<u32>,
    pub ram_mb: Option<u64>,
    /// Where model files missing from the cache come from.
    pub model_sources: Vec<tessera_runtime::models::Source>,
    /// Stop when this process is gone (a devnet's providers end with it, even
    /// when it is killed with -9).
    pub parent_pid: Option<u32>,
    /// CPU priority of the whole agent, as a Unix nice value (0: normal, up
    /// to 19: lowest), for a machine that serves others first.
    pub nice: u8,
}

/// Runs until `stop` is set.
pub async fn run(cfg: AgentConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    if cfg.nice > 0 {
        lower_priority(cfg.nice).context("cannot lower the agent's CPU priority")?;
    }
    let store = Arc::new(PieceStore::open(&cfg.data_dir.join("pieces"), cfg.storage_gb << 30)?);
    let results = Arc::new(crate::results::ResultStore::open(&cfg.data_dir.join("results"))?);
    let models = Arc::new(tessera_runtime::models::ModelCache::new(cfg.data_dir.join("models"), cfg.model_sources.clone())?);
    let executor = Arc::new(crate::executor::Executor::new(cfg.data_dir.join("jobs"), results.clone(), models, cfg.rpc.clone())?);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {} (in use? pick another with --listen)", cfg.listen))?;
    let me = cfg.key.address();
    // Port 0 asks the system for a free port; the provider registers the real one.
    let listen = listener.local_addr()?;
    let state = Arc::new(ServerState { store: store.clone(), me, rpc: cfg.rpc.clone(), node: Client::new(&cfg.rpc), results, executor: executor.clone() });
    let stop_server = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async move {
                while !stop_server.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
    });
    println!("provider {me} serving pieces on http://{listen} (data in {})", cfg.data_dir.display());
    let control_stop = stop.clone();
    let control = tokio::task::spawn_blocking(move || control_loop(&cfg, listen, &store, &executor, &control_stop));
    let result = control.await.context("control loop panicked")?;
    stop.store(true, Ordering::Relaxed);
    let _ = server.await;
    result
}

/// Serialises this process's transactions so that two threads never sign
/// with the same nonce, and remembers the next nonce (with when it was read
/// from the node) so that a burst of bids needs one request per bid.
static SUBMIT_LOCK: std::sync::Mutex<Option<(u64, std::time::Instant)>> = std::sync::Mutex::new(None);

pub(crate) fn submit(client: &Client, key: &KeyPair, chain_id: &str, msg: Msg) -> Result<tessera_types::Hash32, ClientError> {
    let mut next = SUBMIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (nonce, read_at) = match *next {
        Some((n, at)) if at.elapsed() < Duration::from_secs(2) => (n, at),
        _ => (client.account(&key.address())?.next_nonce, std::time::Instant::now()),
    };
    let body = tessera_ledger::TxBody {
        chain_id: chain_id.to_string(),
        signer: tessera_types::PublicKey(key.public_key()),
        nonce,
        fee: Amount::from_micro(1_000),
        msg,
    };
    match client.submit(&body.sign(key)) {
        Ok(hash) => {
            *next = Some((nonce + 1, read_at));
            Ok(hash)
        }
        Err(e) => {
            // Ask the node again next time.
            *next = None;
            Err(e)
        }
    }
}

/// What this provider offers and charges.
pub fn offer(cfg: &AgentConfig, endpoint: &str) -> ProviderInfo {
    let detected = crate::hardware::detect(cfg.storage_gb);
    let mut hardware = detected.hardware;
    if let Some(c) = cfg.cpu_cores {
        hardware.cpu_cores = c;
    }
    if let Some(r) = cfg.ram_mb {
        hardware.ram_mb = r;
    }
    if let Some(free) = crate::hardware::free_disk_gb(&cfg.data_dir)
        && free < cfg.storage_gb
    {
        eprintln!(
            "provider {}: warning: offering {} GB of disk but {} has only {free} GB free",
            cfg.key.address(),
            cfg.storage_gb,
            cfg.data_dir.display()
        );
    }
    if cfg.max_jobs == 0 {
        // Storage only: nothing to lease for compute.
        hardware.cpu_cores = 0;
        hardware.gpus.clear();
    }
    println!(
        "provider {}: offering {} CPU cores, {} MiB RAM, {} GB disk; GPUs: {}",
        cfg.key.address(),
        hardware.cpu_cores,
        hardware.ram_mb,
        hardware.disk_gb,
        detected.gpu_note
    );
    ProviderInfo {
        hardware,
        region: cfg.region.clone(),
        endpoints: vec![endpoint.to_string()],
        prices: PriceList {
            per_cpu_core: cfg.price_per_cpu_core,
            per_gb_ram: cfg.price_per_gb_ram,
            per_gb_disk: cfg.price_per_gb_disk,
            per_gpu: cfg.price_per_gpu,
        },
    }
}

fn ensure_registered(cfg: &AgentConfig, info: &ProviderInfo, client: &Client, chain_id: &str) -> anyhow::Result<()> {
    let me = cfg.key.address();
    let endpoint = info.endpoints[0].clone();
    let info = info.clone();
    match client.get::<ProviderDto>(&format!("/providers/{me}")) {
        Ok(p) if p.info == info => Ok(()),
        Ok(_) => {
            let hash = submit(client, &cfg.key, chain_id, Msg::Registry(RegistryMsg::Update { info }))?;
            client.wait_for_tx(&hash, Duration::from_secs(30))?;
            println!("provider {me}: updated registration (endpoint {endpoint})");
            Ok(())
        }
        Err(ClientError::NotFound(_)) => {
            let hash = submit(client, &cfg.key, chain_id, Msg::Registry(RegistryMsg::Register { info, stake: cfg.stake }))?;
            let r = client.wait_for_tx(&hash, Duration::from_secs(30))?;
            anyhow::ensure!(r.code == 0, "registration failed: {}", r.log);
            println!("provider {me}: registered with {} TSR stake", cfg.stake);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The `dynamic` strategy also moves the standing price list (what fixed-price
/// orders match) with the ledger's base price, never below cost, when it
/// drifts more than 10% from what is listed.
fn follow_base_price(cfg: &AgentConfig, client: &Client, chain_id: &str, listed: &mut ProviderInfo) {
    let Ok(base) = client.get::<tessera_ledger::market::BasePrices>("/market/base-prices") else { return };
    let want_cpu = base.cpu.max(cfg.price_per_cpu_core);
    let want_gpu = base.gpu.max(cfg.price_per_gpu);
    let drifted = |now: Amount, want: Amount| now.micro().abs_diff(want.micro()) * 10 > now.micro().max(1);
    if !drifted(listed.prices.per_cpu_core, want_cpu) && !drifted(listed.prices.per_gpu, want_gpu) {
        return;
    }
    let mut info = listed.clone();
    info.prices.per_cpu_core = want_cpu;
    info.prices.per_gpu = want_gpu;
    match submit(client, &cfg.key, chain_id, Msg::Registry(RegistryMsg::Update { info: info.clone() })) {
        Ok(_) => {
            println!("provider {}: price list now {want_cpu} TSR/core, {want_gpu} TSR/GPU per block (base price)", cfg.key.address());
            *listed = info;
        }
        Err(e) => eprintln!("provider {}: price update refused: {e}", cfg.key.address()),
    }
}

/// Gives every thread of this process the CPU priority of Unix nice value
/// `nice`, and so every thread it starts later (a thread inherits its
/// creator's). Lowering needs no privilege; raising would, so a process
/// started at a lower priority than `nice` keeps its own.
fn lower_priority(nice: u8) -> std::io::Result<()> {
    let lowered = |r: std::io::Result<()>| match r {
        // Already lower than asked, or ended meanwhile.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::ESRCH)) => Ok(()),
        other => other,
    };
    #[cfg(target_os = "linux")]
    {
        // Linux keeps a nice value per thread: each one is set.
        for task in std::fs::read_dir("/proc/self/task")? {
            let name = task?.file_name();
            let Ok(tid) = name.to_string_lossy().parse::<u32>() else { continue };
            // SAFETY: errno is this thread's; getpriority only reads the
            // nice value of the thread named (-1 is a value too, hence errno).
            let now = unsafe {
                *libc::__errno_location() = 0;
                let n = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
                (*libc::__errno_location() == 0).then_some(n)
            };
            if now.is_none_or(|n| n < libc::c_int::from(nice)) {
                lowered(tessera_client::keyring::set_nice(tid, nice))?;
            }
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        // Elsewhere the value is the whole process's.
        lowered(tessera_client::keyring::set_nice(0, nice))
    }
}

/// Every this many epochs, a challenge is answered from the whole piece,
/// re-checked against its hash (staggered across pieces): damage outside
/// the challenged leaves is found and repaired within that many epochs.
const FULL_CHECK_EPOCHS: u64 = 8;

/// Builds the answer to one challenge from the local piece.
fn answer(store: &PieceStore, c: &ChallengeDto) -> Result<Msg, PieceError> {
    let full = (c.epoch + u64::from(c.piece_hash.0[0])).is_multiple_of(FULL_CHECK_EPOCHS);
    let (leaves, proof) = store.prove(&c.piece_hash, &c.leaves, full)?;
    Ok(Msg::Storage(StorageMsg::ProveStorage { deal: c.deal, piece: c.piece, epoch: c.epoch, leaves, proof }))
}

/// Rebuilds pieces assigned here that are not on disk (a wiped disk, a piece
/// moved here by repair, an upload that never came) before a challenge finds
/// them missing; `height`: the chain's, as the control loop last saw it.
fn heal_missing(client: &Client, store: &PieceStore, me: &tessera_types::Address, grace: u64, height: u64) {
    let Ok(deals) = client.get::<Vec<DealDto>>(&format!("/deals?provider={me}")) else { return };
    for d in deals.iter().filter(|d| d.active) {
        for (i, p) in d.pieces.iter().enumerate() {
            if p.provider != *me || store.contains(&p.hash) {
                continue;
            }
            // A piece assigned in the last blocks may still be on its way from the uploader.
            if d.start + grace > height && p.proven_epochs == 0 && !d.pieces.iter().any(|q| q.faults > 0) {
                continue;
            }
            match crate::repair::rebuild_piece(client, d, i).and_then(|b| store.put(&p.hash, &b).map_err(anyhow::Error::from)) {
                Ok(()) => println!("provider {me}: rebuilt missing piece {i} of deal {}", d.id),
                Err(e) => eprintln!("provider {me}: cannot rebuild piece {i} of deal {}: {e:#}", d.id),
            }
        }
    }
}

fn control_loop(
    cfg: &AgentConfig,
    listen: SocketAddr,
    store: &PieceStore,
    executor: &Arc<crate::executor::Executor>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let client = Client::new(&cfg.rpc);
    let me = cfg.key.address();
    let chain_id = loop {
        match client.status() {
            Ok(s) => break s.chain_id,
            Err(e) if !stop.load(Ordering::Relaxed) => {
                eprintln!("provider {me}: waiting for the node: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let info = offer(cfg, &format!("http://{listen}"));
    ensure_registered(cfg, &info, &client, &chain_id)?;
    let market_stop = Arc::new(AtomicBool::new(false));
    let market = {
        let decider = crate::decide::Decider::new(me, cfg.strategy, info.hardware.clone(), info.prices.clone(), cfg.max_jobs);
        let mcfg = crate::market::MarketConfig { key: cfg.key.clone(), rpc: cfg.rpc.clone(), chain_id: chain_id.clone() };
        let (executor, market_stop) = (executor.clone(), market_stop.clone());
        std::thread::Builder::new().name("market".into()).spawn(move || crate::market::run(mcfg, decider, executor, market_stop))?
    };
    let params = client.get::<tessera_ledger::Params>("/params")?;
    let heartbeat_every = (params.registry.heartbeat_timeout_blocks / 4).max(1);
    let grace = params.storage.upload_grace_blocks;
    let mut last_height = 0;
    let mut last_heal = 0;
    // Liveness must not wait behind repairs or proofs: heartbeats get their own thread.
    let heartbeat = {
        let rpc = cfg.rpc.clone();
        let key = cfg.key.clone();
        let chain_id = chain_id.clone();
        let parent = cfg.parent_pid;
        let stopped = Arc::new(AtomicBool::new(false));
        let stopped_here = stopped.clone();
        let handle = std::thread::spawn(move || {
            let client = Client::new(&rpc);
            let mut last = 0;
            while !stopped_here.load(Ordering::Relaxed) {
                if parent.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                    break;
                }
                // A heartbeat is due every `heartbeat_every` blocks, a quarter
                // of the timeout (10 s of wall clock on a devnet): the node
                // holds this request until that block, or a second.
                let Ok(status) = client.status_after(last + heartbeat_every - 1, NODE_WAIT) else {
                    std::thread::sleep(NODE_WAIT);
                    continue;
                };
                if status.height >= last + heartbeat_every {
                    match submit(&client, &key, &chain_id, Msg::Registry(RegistryMsg::Heartbeat)) {
                        Ok(_) => last = status.height,
                        Err(e) => {
                            eprintln!("provider {}: heartbeat refused: {e}", key.address());
                            std::thread::sleep(NODE_WAIT);
                        }
                    }
                }
            }
        });
        (stopped, handle)
    };
    let mut answered: BTreeSet<(u64, u32, u64)> = BTreeSet::new();
    let mut listed = info.clone();
    while !stop.load(Ordering::Relaxed) {
        if let Some(pid) = cfg.parent_pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                println!("provider {me}: parent process {pid} is gone; stopping");
                break;
            }
        // Held by the node until a block brings this provider a challenge
        // or the next heal is due: challenges are answered in the block
        // that issues them, and blocks that bring none cost no request.
        let next = format!(
            "/storage/challenges/next?provider={me}&after={last_height}&until={}&wait_ms={}",
            last_heal + heartbeat_every,
            NODE_WAIT.as_millis()
        );
        let Ok(ChallengesAtDto { height, challenges }) = client.get::<ChallengesAtDto>(&next) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if height == last_height {
            continue;
        }
        last_height = height;
        if last_height >= last_heal + heartbeat_every {
            last_heal = last_height;
            heal_missing(&client, store, &me, grace, last_height);
            if cfg.strategy == crate::decide::Strategy::Dynamic {
                follow_base_price(cfg, &client, &chain_id, &mut listed);
            }
        }
        answered.retain(|(_, _, epoch)| challenges.iter().any(|c| c.epoch == *epoch));
        for c in challenges.iter().filter(|c| c.provider == me) {
            if !answered.insert((c.deal, c.piece, c.epoch)) {
                continue;
            }
            let msg = match answer(store, c) {
                Ok(m) => m,
                Err(PieceError::Missing(_) | PieceError::Corrupted { .. }) => {
                    // Lost or damaged here: rebuild it from the rest of its segment.
                    let rebuilt = client
                        .get::<DealDto>(&format!("/deals/{}?members=false", c.deal))
                        .map_err(anyhow::Error::from)
                        .and_then(|d| crate::repair::rebuild_piece(&client, &d, c.piece as usize))
                        .and_then(|bytes| store.put(&c.piece_hash, &bytes).map_err(anyhow::Error::from));
                    match rebuilt {
                        Ok(()) => println!("provider {me}: rebuilt piece {} of deal {}", c.piece, c.deal),
                        Err(e) => {
                            eprintln!("provider {me}: cannot rebuild piece {} of deal {}: {e:#}", c.piece, c.deal);
                            answered.remove(&(c.deal, c.piece, c.epoch));
                            continue;
                        }
                    }
                    match answer(store, c) {
                        Ok(m) => m,
                        Err(e) => {
                            eprintln!("provider {me}: {e}");
                            continue;
                        }
                    }
                }
                Err(e) => {
                    eprintln!("provider {me}: {e}");
                    continue;
                }
            };
            if let Err(e) = submit(&client, &cfg.key, &chain_id, msg) {
                eprintln!("provider {me}: proof for piece {} of deal {} refused: {e}", c.piece, c.deal);
                answered.remove(&(c.deal, c.piece, c.epoch));
            }
        }
    }
    heartbeat.0.store(true, Ordering::Relaxed);
    market_stop.store(true, Ordering::Relaxed);
    let _ = heartbeat.1.join();
    let _ = market.join();
    Ok(())
}
