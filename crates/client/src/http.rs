//! Blocking HTTP client for the node's JSON RPC.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::{Duration, Instant};
use tessera_crypto::KeyPair;
use tessera_ledger::{Msg, SignedTx, TxBody};
use tessera_types::{Address, Amount, Hash32, PublicKey};

use crate::api::*;

#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error; the message is the node's.
    #[error("{0}")]
    Rejected(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("cannot reach the node at {url}: {reason} (is `tessera devnet` running? set --rpc or TESSERA_RPC)")]
    Unreachable { url: String, reason: String },
    #[error("unexpected answer from the node: {0}")]
    Protocol(String),
    #[error("transaction {0} was not included within {1:?}")]
    Timeout(Hash32, Duration),
}

/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base_url: &str) -> Client {
        let base = base_url.trim_end_matches('/').to_string();
        // Threads sharing a client keep their connections open for reuse.
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .max_idle_connections(256)
            .max_idle_connections_per_host(256)
            .build();
        Client { base, agent }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn handle<T: DeserializeOwned>(&self, url: &str, result: Result<ureq::Response, ureq::Error>) -> Result<T, ClientError> {
        match result {
            Ok(resp) => resp.into_json::<T>().map_err(|e| ClientError::Protocol(e.to_string())),
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let message = serde_json::from_str::<ErrorBody>(&text).map(|b| b.error).unwrap_or(text);
                if code == 404 {
                    Err(ClientError::NotFound(message))
                } else {
                    Err(ClientError::Rejected(message))
                }
            }
            Err(e) => Err(ClientError::Unreachable { url: url.to_string(), reason: e.to_string() }),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let result = self.agent.get(&url).call();
        self.handle(&url, result)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let url = format!("{}{}", self.base, path);
        let result = self.agent.post(&url).send_json(body);
        self.handle(&url, result)
    }

    pub fn status(&self) -> Result<StatusDto, ClientError> {
        self.get("/status")
    }

    /// The status once the chain is past `height`, or after `wait` (at
    /// most 10 s) at the latest: one request a block for a follower.
    pub fn status_after(&self, height: u64, wait: Duration) -> Result<StatusDto, ClientError> {
        self.get(&format!("/status?after={height}&wait_ms={}", wait.as_millis()))
    }

    pub fn account(&self, address: &Address) -> Result<AccountDto, ClientError> {
        self.get(&format!("/accounts/{address}"))
    }

    pub fn balance_proof(&self, address: &Address) -> Result<BalanceProofDto, ClientError> {
        self.get(&format!("/accounts/{address}/proof"))
    }

    pub fn block(&self, height: Option<u64>) -> Result<BlockDto, ClientError> {
        match height {
            Some(h) => self.get(&format!("/blocks/{h}")),
            None => self.get("/blocks/latest"),
        }
    }

    pub fn tx(&self, hash: &Hash32) -> Result<TxResultDto, ClientError> {
        self.get(&format!("/txs/{hash}"))
    }

    pub fn submit(&self, tx: &SignedTx) -> Result<Hash32, ClientError> {
        // The encoded bytes as they are: hex in JSON doubles them and costs both ends a pass.
        let url = format!("{}/txs", self.base);
        let result = self.agent.post(&url).set("Content-Type", "application/octet-stream").send_bytes(&tx.encode());
        let resp: SubmitResponse = self.handle(&url, result)?;
        Ok(resp.hash)
    }

    /// Signs `msg` with `key` at the account's next nonce (pending transactions
    /// counted) and submits it; returns the transaction hash.
    /// Submissions for one key from this process take turns; another process
    /// using the key may take the nonce first, and the transaction is then
    /// signed again at the new next nonce (a few times).
    pub fn sign_and_submit(&self, key: &KeyPair, chain_id: &str, fee: Amount, msg: Msg) -> Result<Hash32, ClientError> {
        let turn = self.submit_turn(&key.address());
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        self.submit_next(key, chain_id, fee, msg)
    }

    /// The lock that every submission for `address` to this node takes in
    /// this process, whichever clone of the client makes it: two threads
    /// paying with one key (an S3 endpoint's PUTs) then never read the same
    /// next nonce, and only another process can take one first.
    fn submit_turn(&self, address: &Address) -> std::sync::Arc<std::sync::Mutex<()>> {
        /// (node URL, address) -> that key's turn.
        type Turns = std::collections::HashMap<(String, Address), std::sync::Arc<std::sync::Mutex<()>>>;
        static TURNS: std::sync::LazyLock<std::sync::Mutex<Turns>> = std::sync::LazyLock::new(Default::default);
        let mut turns = TURNS.lock().unwrap_or_else(|p| p.into_inner());
        turns.entry((self.base.clone(), *address)).or_default().clone()
    }

    /// [`Client::sign_and_submit`] with the key's turn held.
    fn submit_next(&self, key: &KeyPair, chain_id: &str, fee: Amount, msg: Msg) -> Result<Hash32, ClientError> {
        let mut attempts = 0;
        loop {
            let nonce = self.account(&key.address())?.next_nonce;
            match self.submit_at(key, chain_id, fee, &msg, nonce) {
                Err(e) if wrong_nonce(&e) && attempts < 8 => attempts += 1,
                other => return other,
            }
        }
    }

    /// Signs `msg` at `nonce` and submits it.
    fn submit_at(&self, key: &KeyPair, chain_id: &str, fee: Amount, msg: &Msg, nonce: u64) -> Result<Hash32, ClientError> {
        let body = TxBody { chain_id: chain_id.to_string(), signer: PublicKey(key.public_key()), nonce, fee, msg: msg.clone() };
        self.submit(&body.sign(key))
    }

    /// Signs and submits `msgs` in order at consecutive nonces, reading the
    /// account's next nonce once; one result per message. A message refused
    /// at admission takes no nonce; a nonce taken meanwhile by another
    /// process using the key sends the rest through `sign_and_submit`.
    pub fn sign_and_submit_many(&self, key: &KeyPair, chain_id: &str, fee: Amount, msgs: Vec<Msg>) -> Vec<Result<Hash32, ClientError>> {
        let turn = self.submit_turn(&key.address());
        let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
        let mut nonce = match self.account(&key.address()) {
            Ok(a) => Some(a.next_nonce),
            Err(e) => return msgs.iter().map(|_| Err(e.clone())).collect(),
        };
        msgs.into_iter()
            .map(|msg| {
                if let Some(n) = nonce {
                    match self.submit_at(key, chain_id, fee, &msg, n) {
                        Ok(h) => {
                            nonce = Some(n + 1);
                            return Ok(h);
                        }
                        Err(e) if wrong_nonce(&e) => nonce = None,
                        Err(e) => return Err(e),
                    }
                }
                self.submit_next(key, chain_id, fee, msg)
            })
            .collect()
    }

    /// Waits until the transaction is in a committed block or `timeout`
    /// passes: the node holds each request until the next commit (up to
    /// `TX_WAIT`), so the answer comes with the block, not with a poll.
    pub fn wait_for_tx(&self, hash: &Hash32, timeout: Duration) -> Result<TxResultDto, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now()).min(TX_WAIT);
            match self.get(&format!("/txs/{hash}?wait_ms={}", wait.as_millis())) {
                Ok(result) => return Ok(result),
                Err(ClientError::NotFound(_)) if Instant::now() < deadline => {
                    // A node without waiting answers at once: do not spin on it.
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(ClientError::NotFound(_)) => return Err(ClientError::Timeout(*hash, timeout)),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Longest one waiting request for a transaction is held by the node.
const TX_WAIT: Duration = Duration::from_secs(5);

/// Largest piece body a provider accepts or a client downloads.
pub const MAX_PIECE_BODY: u64 = 64 * 1024 * 1024;

/// The node refused a transaction because its nonce was taken or skipped.
fn wrong_nonce(e: &ClientError) -> bool {
    matches!(e, ClientError::Rejected(reason) if reason.contains("wrong nonce"))
}

/// One connection pool for piece traffic to every provider in this process.
fn piece_agent() -> &'static ureq::Agent {
    static AGENT: std::sync::LazyLock<ureq::Agent> =
        std::sync::LazyLock::new(|| ureq::AgentBuilder::new().max_idle_connections(256).max_idle_connections_per_host(16).build());
    &AGENT
}

/// Uploads piece `hash` of deal `deal` to a provider's piece server.
pub fn upload_piece(endpoint: &str, hash: &Hash32, deal: u64, bytes: &[u8]) -> Result<(), ClientError> {
    let url = format!("{}/pieces/{hash}?deal={deal}", endpoint.trim_end_matches('/'));
    match piece_agent().put(&url).timeout(Duration::from_secs(120)).send_bytes(bytes) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(_, resp)) => Err(ClientError::Rejected(resp.into_string().unwrap_or_default())),
        Err(e) => Err(ClientError::Unreachable { url, reason: e.to_string() }),
    }
}

/// Downloads a piece and checks it against its hash; a wrong piece is an error.
pub fn fetch_piece(endpoint: &str, hash: &Hash32) -> Result<Vec<u8>, ClientError> {
    use std::io::Read;
    let url = format!("{}/pieces/{hash}", endpoint.trim_end_matches('/'));
    let resp = match piece_agent().get(&url).timeout(Duration::from_secs(120)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(404, _)) => return Err(ClientError::NotFound(format!("piece {hash} at {endpoint}"))),
        Err(ureq::Error::Status(_, resp)) => return Err(ClientError::Rejected(resp.into_string().unwrap_or_default())),
        Err(e) => return Err(ClientError::Unreachable { url, reason: e.to_string() }),
    };
    // Sized up front from the length the provider sends (within the limit):
    // a MiB read into a growing buffer is copied about once more on the way.
    let announced = resp.header("content-length").and_then(|l| l.parse::<u64>().ok()).unwrap_or(0).min(MAX_PIECE_BODY);
    let mut bytes = Vec::with_capacity(announced as usize);
    resp.into_reader().take(MAX_PIECE_BODY + 1).read_to_end(&mut bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
    if bytes.len() as u64 > MAX_PIECE_BODY {
        return Err(ClientError::Protocol(format!("piece {hash} from {endpoint} is over the size limit")));
    }
    if tessera_storage::piece_hash(&bytes) != *hash {
        return Err(ClientError::Protocol(format!("piece {hash} from {endpoint} failed its hash check")));
    }
    Ok(bytes)
}
