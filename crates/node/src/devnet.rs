//! `tessera devnet`: a whole single-validator network in one process, on the
//! embedded default (solo engine, redb data dir), resumable after any crash.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_client::Keyring;
use tessera_consensus::solo::SoloEngine;
use tessera_crypto::KeyPair;
use tessera_ledger::{init_genesis, Genesis, GenesisAccount, GenesisValidator, Overlay, Params};
use tessera_state::{CommitBatch, Store};
use tessera_types::{Amount, PublicKey};
use tokio::sync::{mpsc, watch};

use crate::app::{new_shared, BlockLimits, NodeApp, HEIGHT_KEY};

pub struct DevnetConfig {
    pub dir: PathBuf,
    pub keyring: Keyring,
    pub rpc: SocketAddr,
    pub block_time: Duration,
    pub chain_id: String,
    pub test_accounts: u32,
    /// Provider agents offering compute (`provider1`..), each with its own
    /// hardware profile, prices and price strategy.
    pub providers: u32,
    /// Provider agents offering disk; agents are shared, so the devnet runs
    /// max(providers, storage_providers) of them.
    pub storage_providers: u32,
    /// Jobs each compute provider runs at once.
    pub provider_max_jobs: usize,
    /// Where providers fetch model files they have not cached (a directory).
    pub model_source: Option<PathBuf>,
    /// Where the S3 endpoint listens.
    pub s3: SocketAddr,
    /// The S3 endpoint's read cache in MiB (0: none).
    pub s3_cache_mib: u64,
    /// The S3 endpoint's bound on acknowledged, not yet placed bodies in MiB.
    pub s3_staging_mib: u64,
    /// Block records kept (the latest; 0: all).
    pub retain_blocks: u64,
    /// A new chain's proof epoch: every stored piece is challenged once in it.
    pub proof_epoch: Duration,
}

/// A devnet's proof epoch by default: the default parameters' 60 blocks of
/// 500 ms.
pub const DEFAULT_PROOF_EPOCH: Duration = Duration::from_secs(30);

/// Blocks a devnet keeps by default: about 8 minutes of its default 250 ms
/// blocks, which bounds its disk while proofs of storage take up to half of
/// every block.
pub const DEFAULT_RETAIN_BLOCKS: u64 = 2_000;

const PROVIDER_BALANCE: Amount = Amount::from_tsr(1_000);
const PROVIDER_REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// Compute profiles of the devnet's providers, in turn: cores offered (at most
/// what the machine has), RAM in MiB, TSR per core per block, price strategy.
const COMPUTE_PROFILES: [(u32, u64, &str, &str); 3] =
    [(1, 2048, "0.001", "fixed"), (2, 4096, "0.0008", "auction"), (4, 8192, "0.0012", "dynamic")];

impl DevnetConfig {
    pub fn agents(&self) -> u32 {
        self.providers.max(self.storage_providers)
    }
}

/// A provider agent child process of the devnet.
struct ProviderChild {
    name: String,
    child: std::process::Child,
}

/// The nice value a devnet's provider agents run at. They stand for other
/// machines; on this one the node and the S3 endpoint, which answer the user,
/// come first. At normal priority, six agents waking at once (a block's
/// challenges, a batch's pieces) held up the endpoint's requests: at nice 10,
/// sequential 4 KiB PUTs' p99 fell by a quarter (alternating blocks of PUTs
/// on one devnet, 12 of 12 blocks faster). Under a saturated CPU an
/// agent still gets about a tenth of a core against each busy normal thread,
/// ample for heartbeats and proofs within their windows.
const PROVIDER_NICE: &str = "10";

/// Starts `tessera provider run` for each devnet provider key. Each stops by
/// itself when this process is gone, even after kill -9.
fn spawn_providers(cfg: &DevnetConfig) -> anyhow::Result<Vec<ProviderChild>> {
    let logs = cfg.dir.join("providers");
    std::fs::create_dir_all(&logs)?;
    let mut children = Vec::new();
    let machine_cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    for i in 1..=cfg.agents() {
        let name = format!("provider{i}");
        let data_dir = logs.join(&name).display().to_string();
        let region = PROVIDER_REGIONS[(i as usize - 1) % PROVIDER_REGIONS.len()];
        let storage_gb = if i <= cfg.storage_providers { "10" } else { "0" };
        // Port 0: a free port chosen by the system; the provider registers it.
        let mut args: Vec<String> = ["provider", "run", "--key", &name, "--listen", "127.0.0.1:0", "--data-dir", &data_dir]
            .into_iter()
            .chain(["--storage-gb", storage_gb, "--region", region, "--nice", PROVIDER_NICE])
            .map(String::from)
            .collect();
        if i <= cfg.providers {
            let (cores, ram, price, strategy) = COMPUTE_PROFILES[(i as usize - 1) % COMPUTE_PROFILES.len()];
            let cores = cores.min(machine_cores).to_string();
            let ram = ram.to_string();
            let max_jobs = cfg.provider_max_jobs.to_string();
            args.extend(
                ["--cpu-cores", &cores, "--ram-mb", &ram, "--price-per-core", price, "--price-strategy", strategy, "--max-jobs", &max_jobs]
                    .map(String::from),
            );
            if let Some(src) = &cfg.model_source {
                args.extend(["--model-source".to_string(), src.display().to_string()]);
            }
        } else {
            args.extend(["--max-jobs", "0"].map(String::from));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        children.push(spawn_child(cfg, &name, &args, &logs.join(format!("{name}.log")))?);
    }
    Ok(children)
}

/// Starts the S3 endpoint (`tessera s3 serve`) as a child process.
fn spawn_s3(cfg: &DevnetConfig) -> anyhow::Result<ProviderChild> {
    let data_dir = cfg.dir.join("s3").display().to_string();
    let (cache, staging) = (cfg.s3_cache_mib.to_string(), cfg.s3_staging_mib.to_string());
    let args = ["s3", "serve", "--listen", &cfg.s3.to_string(), "--data-dir", &data_dir, "--cache-mib", &cache, "--staging-mib", &staging];
    spawn_child(cfg, "s3", &args, &cfg.dir.join("s3.log"))
}

/// Runs `tessera <args>` against this devnet's home and RPC, logging to
/// `log`; the child stops by itself when this process is gone.
fn spawn_child(cfg: &DevnetConfig, name: &str, args: &[&str], log: &Path) -> anyhow::Result<ProviderChild> {
    let exe = std::env::current_exe().context("locating the tessera binary")?;
    let home = cfg.keyring.dir().parent().unwrap_or(Path::new(".")).to_path_buf();
    let log = std::fs::File::create(log)?;
    let child = std::process::Command::new(&exe)
        .arg("--home")
        .arg(&home)
        .args(["--rpc", &format!("http://{}", cfg.rpc)])
        .args(args)
        .args(["--parent-pid", &std::process::id().to_string()])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(ProviderChild { name: name.to_string(), child })
}

/// The devnet's S3 endpoint: the RPC port plus one (7701 by default).
pub fn s3_address(rpc: SocketAddr) -> SocketAddr {
    SocketAddr::new(rpc.ip(), rpc.port().wrapping_add(1))
}

fn stop_providers(children: &mut [ProviderChild]) {
    for p in children.iter() {
        let _ = std::process::Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status();
    }
    for p in children.iter_mut() {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    eprintln!("{} did not stop; killing it", p.name);
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
            }
        }
    }
}

pub const DEV_BALANCE: Amount = Amount::from_tsr(1_000_000);
pub const TEST_BALANCE: Amount = Amount::from_tsr(10_000);
const VALIDATOR_BALANCE: Amount = Amount::from_tsr(100_000);
const VALIDATOR_BOND: Amount = Amount::from_tsr(10_000);

/// Loads the validator key from `path`, creating it on first start.
fn validator_key(path: &Path) -> anyhow::Result<KeyPair> {
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return KeyPair::from_secret_hex(&text).with_context(|| format!("{} is not a validator key", path.display()));
    }
    let key = KeyPair::generate();
    write_atomic(path, key.secret_hex().as_bytes())?;
    Ok(key)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    tessera_client::keyring::write_private_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn key_or_create(ring: &Keyring, name: &str) -> anyhow::Result<KeyPair> {
    match ring.get(name) {
        Ok(k) => Ok(k),
        Err(tessera_client::KeyringError::Missing { .. }) => Ok(ring.create(name)?),
        Err(e) => Err(e.into()),
    }
}

/// Block time the default parameters' block counts are set for.
const DEFAULT_BLOCK_MS: u64 = 500;

/// A devnet's block time by default: half the time the parameters are set
/// for (their liveness windows are stretched to match, `devnet_params`). A
/// transaction waits half a block on average before it is included; at 500
/// ms that wait was most of the time between an S3 PUT's acknowledgement
/// and its object's deals on the ledger, for one more block record (and
/// about 1.4% of a core) a second while idle.
pub const DEVNET_BLOCK_MS: u64 = 250;

/// The chain's default parameters, with every liveness window (provider
/// heartbeat timeout, storage challenge answer window, upload grace) kept at
/// least as long in wall-clock time as at the default block time: a devnet
/// with faster blocks on a busy machine must not take live providers for dead
/// ones or late proofs for missing pieces. The proof epoch is `proof_epoch`
/// long (at least one block), and the answer window no longer than it.
pub fn devnet_params(block_time: Duration, proof_epoch: Duration) -> Params {
    let mut params = Params::default();
    let ms = (block_time.as_millis() as u64).max(1);
    let scale = |blocks: u64| blocks.max(blocks * DEFAULT_BLOCK_MS / ms);
    params.registry.heartbeat_timeout_blocks = scale(params.registry.heartbeat_timeout_blocks);
    params.storage.epoch_blocks = (proof_epoch.as_millis() as u64 / ms).max(1);
    params.storage.challenge_window_blocks = scale(params.storage.challenge_window_blocks).min(params.storage.epoch_blocks);
    params.storage.upload_grace_blocks = scale(params.storage.upload_grace_blocks);
    params
}

/// The genesis of a fresh devnet: `dev` and `testN` funded from the keyring, the
/// validator bonded.
pub fn devnet_genesis(cfg: &DevnetConfig, validator: &KeyPair) -> anyhow::Result<Genesis> {
    let mut accounts = vec![GenesisAccount { address: key_or_create(&cfg.keyring, "dev")?.address(), balance: DEV_BALANCE }];
    for i in 1..=cfg.test_accounts {
        let key = key_or_create(&cfg.keyring, &format!("test{i}"))?;
        accounts.push(GenesisAccount { address: key.address(), balance: TEST_BALANCE });
    }
    for i in 1..=cfg.agents() {
        let key = key_or_create(&cfg.keyring, &format!("provider{i}"))?;
        accounts.push(GenesisAccount { address: key.address(), balance: PROVIDER_BALANCE });
    }
    accounts.push(GenesisAccount { address: validator.address(), balance: VALIDATOR_BALANCE });
    let genesis_time_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Ok(Genesis {
        chain_id: cfg.chain_id.clone(),
        genesis_time_ms,
        params: devnet_params(cfg.block_time, cfg.proof_epoch),
        accounts,
        validators: vec![GenesisValidator {
            operator: validator.address(),
            consensus_key: PublicKey(validator.public_key()),
            moniker: "devnet-validator".into(),
            self_bond: VALIDATOR_BOND,
        }],
        providers: Vec::new(),
    })
}

/// Writes the genesis state as height 0 if the store is empty.
pub fn ensure_genesis(store: &Store, genesis: &Genesis) -> anyhow::Result<bool> {
    let snap = store.snapshot()?;
    if snap.height()?.is_some() {
        return Ok(false);
    }
    let mut st = Overlay::new(&snap);
    init_genesis(&mut st, genesis).context("invalid genesis")?;
    st.put(HEIGHT_KEY.to_vec(), 0u64.to_be_bytes().to_vec());
    let changes = st.into_changes();
    let (root, tree) = snap.compute_root(&changes, 0)?;
    store.commit(CommitBatch { height: 0, changes, tree, app_hash: root, block: None, tx_hashes: Vec::new() })?;
    Ok(true)
}

pub async fn run(cfg: DevnetConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.dir).with_context(|| format!("creating data dir {}", cfg.dir.display()))?;
    let validator = validator_key(&cfg.dir.join("validator_key"))?;
    let genesis_path = cfg.dir.join("genesis.json");
    let genesis: Genesis = if genesis_path.exists() {
        let text = std::fs::read_to_string(&genesis_path)?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid genesis", genesis_path.display()))?
    } else {
        let g = devnet_genesis(&cfg, &validator)?;
        write_atomic(&genesis_path, serde_json::to_string_pretty(&g)?.as_bytes())?;
        g
    };
    let db_path = cfg.dir.join("state.redb");
    let store = Store::open(&db_path)
        .with_context(|| format!("opening {} (is another devnet using this --dir?)", db_path.display()))?
        .retain_blocks(cfg.retain_blocks);
    let fresh = ensure_genesis(&store, &genesis)?;
    tessera_ledger::params::check_params(&Overlay::new(&store.snapshot()?)).map_err(|why| {
        anyhow::anyhow!("{} cannot be resumed: {why}. Start a new devnet with another --dir, or remove that one", cfg.dir.display())
    })?;
    let height = store.snapshot()?.height()?.unwrap_or(0);

    let listener = tokio::net::TcpListener::bind(cfg.rpc)
        .await
        .with_context(|| format!("cannot listen on {} (in use? pick another with --rpc)", cfg.rpc))?;
    let shared = new_shared(store, genesis.chain_id.clone(), PublicKey(validator.public_key()), validator.address());
    let app = NodeApp::new(shared.clone(), BlockLimits { max_txs: 5_000, max_bytes: 8 * 1024 * 1024 })?;
    let (app_tx, app_rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let app_task = tokio::spawn(app.run(app_rx));
    let engine = SoloEngine { chain_id: genesis.chain_id.clone(), key: validator.clone(), block_time: cfg.block_time };
    let engine_task = tokio::spawn(engine.run(app_tx, stop_rx.clone()));
    let mut rpc_stop = stop_rx.clone();
    let router = crate::rpc::router(shared.clone());
    let rpc_task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rpc_stop.wait_for(|s| *s).await;
            })
            .await
    });

    let mut providers = spawn_providers(&cfg)?;
    providers.push(spawn_s3(&cfg)?);

    println!("Tessera devnet \"{}\" {}", genesis.chain_id, if fresh { "created" } else { "resumed" });
    println!("  data dir     {}", cfg.dir.display());
    println!("  keyring      {}", cfg.keyring.dir().display());
    println!("  RPC          http://{}", cfg.rpc);
    println!("  events       http://{}/events", cfg.rpc);
    println!("  validator    {} (solo, block every {} ms)", validator.address(), cfg.block_time.as_millis());
    println!("  height       {height}");
    let sp = &genesis.params.storage;
    println!(
        "  proofs       every stored piece once every {} blocks, answered within {} (a new chain's epoch: --proof-epoch-secs)",
        sp.epoch_blocks, sp.challenge_window_blocks
    );
    let names = cfg.keyring.list().unwrap_or_default();
    for a in &genesis.accounts {
        let name = names.iter().find(|(_, addr)| *addr == a.address).map(|(n, _)| n.as_str()).unwrap_or("validator");
        println!("  account      {:<10} {}  {} TSR at genesis", name, a.address, a.balance);
    }
    let s3_pid = providers.iter().find(|p| p.name == "s3").map_or(0, |p| p.child.id());
    println!("  S3           http://{} pid {s3_pid} (keys: tessera storage s3-key create)", cfg.s3);
    for p in providers.iter().filter(|p| p.name != "s3") {
        println!(
            "  provider     {:<10} pid {}  log {}",
            p.name,
            p.child.id(),
            cfg.dir.join("providers").join(format!("{}.log", p.name)).display()
        );
    }
    println!("Press Ctrl-C to stop.");

    let result = tokio::select! {
        r = wait_for_signal() => r,
        r = engine_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("consensus stopped: {e}")),
            Err(e) => Err(anyhow::anyhow!("consensus task failed: {e}")),
        },
    };
    let _ = stop_tx.send(true);
    stop_providers(&mut providers);
    if let Err(e) = result {
        app_task.abort();
        bail!(e);
    }
    println!("Stopping: finishing the current block...");
    let _ = tokio::time::timeout(Duration::from_secs(10), rpc_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), app_task).await;
    let final_height = shared.store.snapshot()?.height()?.unwrap_or(0);
    println!("Stopped cleanly at height {final_height}.");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_blocks_keep_liveness_windows_in_wall_clock_time() {
        let d = Params::default();
        let fast = devnet_params(Duration::from_millis(100), DEFAULT_PROOF_EPOCH);
        assert_eq!(fast.registry.heartbeat_timeout_blocks, d.registry.heartbeat_timeout_blocks * 5);
        assert_eq!(fast.storage.epoch_blocks, d.storage.epoch_blocks * 5);
        assert_eq!(fast.storage.challenge_window_blocks, d.storage.challenge_window_blocks * 5);
        assert_eq!(devnet_params(Duration::from_millis(500), DEFAULT_PROOF_EPOCH), d);
        let slow = devnet_params(Duration::from_millis(2000), DEFAULT_PROOF_EPOCH);
        assert_eq!(slow.registry, d.registry, "slower blocks never shorten them");
        assert_eq!(slow.storage.challenge_window_blocks, d.storage.challenge_window_blocks);
        assert_eq!(slow.storage.epoch_blocks, 15, "the epoch stays 30 s");
    }

    #[test]
    fn the_proof_epoch_is_set_in_seconds_and_bounds_the_answer_window() {
        let p = devnet_params(Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(p.storage.epoch_blocks, 50);
        assert_eq!(p.storage.challenge_window_blocks, 50);
        let p = devnet_params(Duration::from_millis(500), Duration::from_secs(2));
        assert_eq!(p.storage.epoch_blocks, 4);
        assert_eq!(p.storage.challenge_window_blocks, 4, "answers are due within the epoch");
        assert_eq!(devnet_params(Duration::from_millis(500), Duration::from_millis(10)).storage.epoch_blocks, 1);
    }
}
