//! JSON-over-HTTP RPC (see the README for the endpoint list) and the `/events`
//! server-sent event stream of committed blocks.

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use std::sync::Arc;
use tessera_client::api::*;
use tessera_ledger::{bank, genesis, market, params, registry, rewards, staking, storage, Overlay, SignedTx};
use tessera_state::Snapshot;
use tessera_types::{Address, Hash32};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use crate::app::{validator_set_keys, NodeShared};
use crate::block::BlockRecord;
use crate::mempool::AdmitError;
use crate::rpc_dto::*;

/// Largest request body; a transaction is at most 64 KiB, hex doubles it.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

type ApiResult<T> = Result<Json<T>, ApiError>;
type Shared = State<Arc<NodeShared>>;

pub fn router(shared: Arc<NodeShared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/blocks/latest", get(latest_block))
        .route("/blocks/{height}", get(block_at))
        .route("/txs", post(submit_tx))
        .route("/txs/{hash}", get(tx_by_hash))
        .route("/accounts/{address}", get(account))
        .route("/accounts/{address}/proof", get(account_proof))
        .route("/accounts/{address}/unbonding", get(unbondings))
        .route("/supply", get(supply))
        .route("/params", get(get_params))
        .route("/validators", get(validators))
        .route("/providers", get(providers))
        .route("/providers/{address}", get(provider))
        .route("/orders", get(orders))
        .route("/orders/{id}", get(order))
        .route("/leases", get(leases))
        .route("/leases/{id}", get(lease))
        .route("/deals", get(deals))
        .route("/deals/{id}", get(deal))
        .route("/storage/challenges", get(challenges))
        .route("/storage/challenges/next", get(next_challenges))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/market/base-prices", get(base_prices))
        .route("/events", get(events))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .with_state(shared)
}

/// Answers 413 from a too-large `Content-Length` before reading any of the body
/// (bodies without a declared length are still cut at the limit while read).
async fn refuse_declared_oversize(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {} bytes is over the limit of {MAX_BODY_BYTES}", declared.unwrap_or(0)),
        )
        .into_response();
    }
    next.run(req).await
}

fn snapshot(s: &NodeShared) -> Result<(Snapshot, u64), ApiError> {
    let snap = s.store.snapshot().map_err(internal)?;
    let height = snap.height().map_err(internal)?.unwrap_or(0);
    Ok((snap, height))
}

fn parse_address(text: &str) -> Result<Address, ApiError> {
    text.parse().map_err(|e: tessera_types::AddressError| bad(e.to_string()))
}

/// A committed block, decoded once and kept among the recent ones (committed
/// blocks never change, so the cache needs no invalidation).
fn record_at(s: &NodeShared, snap: &Snapshot, height: u64) -> Result<Option<Arc<BlockRecord>>, ApiError> {
    if height <= snap.pruned_through().map_err(internal)? {
        return Ok(None);
    }
    let cached = |s: &NodeShared| {
        s.recent_blocks.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(h, _)| *h == height).map(|(_, r)| r.clone())
    };
    if let Some(r) = cached(s) {
        return Ok(Some(r));
    }
    let Some(bytes) = snap.block(height).map_err(internal)? else { return Ok(None) };
    let record = Arc::new(BlockRecord::decode(&bytes).map_err(internal)?);
    let mut recent = s.recent_blocks.lock().unwrap_or_else(|p| p.into_inner());
    if !recent.iter().any(|(h, _)| *h == height) {
        if recent.len() >= crate::app::RECENT_BLOCKS {
            recent.pop_front();
        }
        recent.push_back((height, record.clone()));
    }
    Ok(Some(record))
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    /// Answer once the chain is past this height (or the wait is over).
    after: Option<u64>,
    /// Wait up to this long (at most `MAX_TX_WAIT_MS`) for a block past `after`.
    wait_ms: Option<u64>,
}

/// The node's status. With `after` and `wait_ms`, a chain not yet past
/// height `after` is answered when a block past it commits (woken by the
/// block event stream) or once the wait is over, so that a follower of the
/// chain asks once a block instead of polling.
async fn status(State(s): Shared, Query(q): Query<StatusQuery>) -> ApiResult<StatusDto> {
    let past = |seen: &Result<(Snapshot, u64), ApiError>| q.after.is_none_or(|after| seen.as_ref().map_or(true, |(_, height)| *height > after));
    let (snap, height) = look_until(&s, q.wait_ms, || snapshot(&s), past).await?;
    let app_hash = Hash32(snap.app_hash().map_err(internal)?.unwrap_or_default());
    let (latest_block_hash, latest_block_time_ms) = match record_at(&s, &snap, height)? {
        Some(r) => (r.block.header.hash(), r.block.header.time_ms),
        None => (Hash32::ZERO, 0),
    };
    let voting_power =
        validator_set_keys(&snap).into_iter().find(|(k, _)| *k == s.validator_key).map(|(_, p)| p).unwrap_or(0);
    Ok(Json(StatusDto {
        chain_id: s.chain_id.clone(),
        height,
        app_hash,
        latest_block_hash,
        latest_block_time_ms,
        peers: 0,
        validator: ValidatorIdentity { consensus_key: s.validator_key, voting_power },
        mempool_size: s.mempool.lock().expect("mempool lock").len(),
    }))
}

async fn latest_block(State(s): Shared) -> ApiResult<BlockDto> {
    let (snap, height) = snapshot(&s)?;
    let record = record_at(&s, &snap, height)?.ok_or_else(|| not_found("no block committed yet"))?;
    Ok(Json(block_dto(&record)))
}

async fn block_at(State(s): Shared, Path(height): Path<String>) -> ApiResult<BlockDto> {
    let height: u64 = height.parse().map_err(|_| bad(format!("block height {height:?} is not a number")))?;
    let (snap, latest) = snapshot(&s)?;
    let record = record_at(&s, &snap, height)?.ok_or_else(|| match snap.pruned_through() {
        Ok(p) if height <= p => not_found(format!("block {height} was pruned: this node keeps blocks {} to {latest} (--retain-blocks)", p + 1)),
        _ => not_found(format!("no block at height {height} (latest is {latest})")),
    })?;
    Ok(Json(block_dto(&record)))
}

/// `POST /txs`: the encoded transaction itself (`Content-Type:
/// application/octet-stream`, what the CLI and agents send), or JSON
/// `{"tx": "<hex>"}`.
async fn submit_tx(State(s): Shared, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> ApiResult<SubmitResponse> {
    let raw = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let bytes = if raw {
        body.to_vec()
    } else {
        let req: SubmitRequest = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("body must be an encoded transaction (application/octet-stream) or JSON {{\"tx\": \"<hex>\"}}: {e}")))?;
        hex::decode(req.tx.trim()).map_err(|_| bad("field \"tx\" must be hex of an encoded transaction"))?
    };
    let tx = SignedTx::decode(&bytes).map_err(|e| bad(format!("transaction does not decode: {e}")))?;
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let hash = s
        .mempool
        .lock()
        .expect("mempool lock")
        .admit(&st, tx, bytes.len())
        .map_err(|e| match e {
            AdmitError::Full(_) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            _ => bad(e.to_string()),
        })?;
    Ok(Json(SubmitResponse { hash }))
}

#[derive(serde::Deserialize)]
struct TxQuery {
    /// Wait up to this long (at most `MAX_TX_WAIT_MS`) for the transaction's block.
    wait_ms: Option<u64>,
}

/// Longest a `GET /txs/{hash}?wait_ms=`, `GET /status?after=` or `GET
/// /storage/challenges/next` holds its request.
pub const MAX_TX_WAIT_MS: u64 = 10_000;

/// A committed transaction's result. With `wait_ms`, a transaction not yet
/// committed is answered as soon as a block holding it commits (or 404 once
/// the wait is over), so that a client waiting for its transaction hears of
/// it at the commit instead of at its next poll.
async fn tx_by_hash(State(s): Shared, Path(hash): Path<String>, Query(q): Query<TxQuery>) -> ApiResult<TxResultDto> {
    let hash: Hash32 = hash.parse().map_err(bad)?;
    let committed = |seen: &Result<TxResultDto, ApiError>| !matches!(seen, Err(e) if e.0 == StatusCode::NOT_FOUND);
    look_until(&s, q.wait_ms, || committed_tx(&s, &hash), committed).await.map(Json)
}

/// Looks with `look` at once and again each time a block commits, until
/// `done` accepts what it saw or `wait_ms` (at most `MAX_TX_WAIT_MS`) is
/// over; returns the last look. Holds a request open without polling.
async fn look_until<T>(s: &NodeShared, wait_ms: Option<u64>, mut look: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(wait_ms.unwrap_or(0).min(MAX_TX_WAIT_MS));
    loop {
        // Subscribed before looking, so that a block committed in between still wakes this request.
        let mut blocks = s.events.subscribe();
        let seen = look();
        if done(&seen) {
            return seen;
        }
        match tokio::time::timeout_at(deadline, blocks.recv()).await {
            // A block (or blocks missed while lagging): look again.
            Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            // The wait is over, or the node is stopping.
            Err(_) | Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return seen,
        }
    }
}

fn committed_tx(s: &NodeShared, hash: &Hash32) -> Result<TxResultDto, ApiError> {
    let (snap, _) = snapshot(s)?;
    let loc = snap.tx_location(&hash.0).map_err(internal)?.ok_or_else(|| match snap.pruned_through() {
        Ok(p) if p > 0 => not_found(format!(
            "transaction {hash} is not in a committed block (yet), or its block was pruned (this node keeps blocks after {p})"
        )),
        _ => not_found(format!("transaction {hash} is not in a committed block (yet)")),
    })?;
    let record = record_at(s, &snap, loc.height)?.ok_or_else(|| internal("indexed block missing"))?;
    tx_result_dto(&record, loc.index as usize).ok_or_else(|| internal("indexed tx missing"))
}

async fn account(State(s): Shared, Path(address): Path<String>) -> ApiResult<AccountDto> {
    let address = parse_address(&address)?;
    let (snap, height) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let acct = bank::account(&st, &address);
    let next_nonce = s.mempool.lock().expect("mempool lock").pending_nonce(&address).unwrap_or(acct.nonce);
    Ok(Json(AccountDto { address, balance: acct.balance, nonce: acct.nonce, next_nonce, height }))
}

async fn account_proof(State(s): Shared, Path(address): Path<String>) -> ApiResult<BalanceProofDto> {
    let address = parse_address(&address)?;
    let (snap, height) = snapshot(&s)?;
    let key = bank::account_key(&address);
    let (value, proof) = snap.prove(&key).map_err(internal)?;
    let acct: bank::Account = match &value {
        Some(v) => borsh::from_slice(v).map_err(internal)?,
        None => bank::Account::default(),
    };
    Ok(Json(BalanceProofDto {
        address,
        balance: acct.balance,
        nonce: acct.nonce,
        height,
        app_hash: Hash32(snap.app_hash().map_err(internal)?.unwrap_or_default()),
        key: hex::encode(&key),
        value: value.map(hex::encode),
        proof: hex::encode(proof.to_bytes()),
    }))
}

async fn unbondings(State(s): Shared, Path(address): Path<String>) -> ApiResult<Vec<UnbondingDto>> {
    let address = parse_address(&address)?;
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    Ok(Json(
        staking::unbondings_of(&st, &address)
            .into_iter()
            .map(|u| UnbondingDto { validator: u.validator, amount: u.amount, completes_at: u.completes_at })
            .collect(),
    ))
}

async fn supply(State(s): Shared) -> ApiResult<SupplyDto> {
    let (snap, height) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    Ok(Json(SupplyDto {
        height,
        supply: bank::supply(&st),
        genesis_supply: genesis::genesis_supply(&st),
        issued: rewards::issued(&st),
        burned: bank::burned(&st),
    }))
}

async fn get_params(State(s): Shared) -> ApiResult<tessera_ledger::Params> {
    let (snap, _) = snapshot(&s)?;
    Ok(Json(params::params(&Overlay::new(&snap))))
}

async fn validators(State(s): Shared) -> ApiResult<Vec<ValidatorDto>> {
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let p = params::params(&st);
    let active = staking::validator_set(&st, &p);
    Ok(Json(
        staking::all_validators(&st)
            .into_iter()
            .map(|v| {
                let power = active.iter().find(|(a, _)| a.operator == v.operator).map(|(_, p)| *p);
                ValidatorDto {
                    operator: v.operator,
                    consensus_key: v.consensus_key,
                    moniker: v.moniker,
                    tokens: v.tokens,
                    jailed: v.jailed,
                    voting_power: power.unwrap_or(0),
                    in_active_set: power.is_some(),
                }
            })
            .collect(),
    ))
}

async fn providers(State(s): Shared) -> ApiResult<Vec<ProviderDto>> {
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    Ok(Json(registry::all_providers(&st).iter().map(provider_dto).collect()))
}

async fn provider(State(s): Shared, Path(address): Path<String>) -> ApiResult<ProviderDto> {
    let address = parse_address(&address)?;
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let p = registry::provider(&st, &address).ok_or_else(|| not_found(format!("no provider {address}")))?;
    Ok(Json(provider_dto(&p)))
}

fn parse_id(text: &str, what: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| bad(format!("{what} id {text:?} is not a number")))
}

async fn orders(State(s): Shared) -> ApiResult<Vec<OrderDto>> {
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    Ok(Json(market::all_orders(&st).iter().map(|o| order_dto(o, &market::bids_for(&st, o.id))).collect()))
}

async fn order(State(s): Shared, Path(id): Path<String>) -> ApiResult<OrderDto> {
    let id = parse_id(&id, "order")?;
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let o = market::order(&st, id).ok_or_else(|| not_found(format!("no order {id}")))?;
    Ok(Json(order_dto(&o, &market::bids_for(&st, id))))
}

/// Jobs, newest first; `?buyer=ADDRESS` keeps one buyer's, `?limit=N` (default 100, at most 1000).
async fn jobs(State(s): Shared, Query(q): Query<JobsQuery>) -> ApiResult<Vec<JobDto>> {
    let buyer = match &q.buyer {
        Some(b) => Some(b.parse::<tessera_types::Address>().map_err(|e| bad(format!("buyer: {e}")))?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let mut all = tessera_ledger::jobs::all_jobs(&st);
    all.reverse();
    Ok(Json(all.iter().filter(|j| buyer.is_none_or(|b| j.buyer == b)).take(limit).map(|j| job_dto(j, &st)).collect()))
}

#[derive(serde::Deserialize)]
struct JobsQuery {
    buyer: Option<String>,
    limit: Option<usize>,
}

async fn job(State(s): Shared, Path(id): Path<String>) -> ApiResult<JobDto> {
    let id = parse_id(&id, "job")?;
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let j = tessera_ledger::jobs::job(&st, id).ok_or_else(|| not_found(format!("no job {id}")))?;
    Ok(Json(job_dto(&j, &st)))
}

/// The dynamic base price of each resource class and the utilisation behind it.
async fn base_prices(State(s): Shared) -> ApiResult<market::BasePrices> {
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let p = params::params(&st);
    Ok(Json(market::base_prices(&st).unwrap_or(market::BasePrices {
        cpu: p.market.initial_base_price_cpu,
        gpu: p.market.initial_base_price_gpu,
        ..Default::default()
    })))
}

async fn leases(State(s): Shared) -> ApiResult<Vec<LeaseDto>> {
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    Ok(Json(market::all_leases(&st).iter().map(lease_dto).collect()))
}

async fn lease(State(s): Shared, Path(id): Path<String>) -> ApiResult<LeaseDto> {
    let id = parse_id(&id, "lease")?;
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let l = market::lease(&st, id).ok_or_else(|| not_found(format!("no lease {id}")))?;
    Ok(Json(lease_dto(&l)))
}

/// Every deal, or with `?cid=` (`tcid1...` or hex) those of one content id,
/// with `?provider=` those that place a piece on that provider.
async fn deals(State(s): Shared, Query(q): Query<DealsQuery>) -> ApiResult<Vec<DealDto>> {
    let cid = match &q.cid {
        Some(c) => Some(c.strip_prefix("tcid1").unwrap_or(c).parse::<Hash32>().map_err(|e| bad(format!("cid: {e}")))?),
        None => None,
    };
    let provider = match &q.provider {
        Some(p) => Some(p.parse::<Address>().map_err(|e| bad(format!("provider: {e}")))?),
        None => None,
    };
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let listed = match (cid, provider) {
        (None, None) => Vec::new(),
        (None, Some(p)) => storage::deals_of_provider(&st, &p),
        (Some(cid), _) => storage::deals_of_cid(&st, &cid),
    };
    let deals = match listed {
        // No query, or a chain begun before the indexes: look through every deal.
        found if found.is_empty() => storage::all_deals(&st).into_iter().filter(|d| cid.is_none_or(|c| d.cid == c)).collect(),
        found => found,
    };
    let on_provider = |d: &&storage::Deal| provider.is_none_or(|p| d.pieces.iter().any(|piece| piece.provider == p));
    let dto = |d: &storage::Deal| {
        let packed = storage::pack_member_count(&st, d.id);
        let shown = match cid {
            Some(cid) if d.cid != cid && packed > 0 => storage::pack_members(&st, d.id).into_iter().filter(|m| m.cid == cid).collect(),
            _ => Vec::new(),
        };
        deal_dto(d, packed, shown)
    };
    Ok(Json(deals.iter().filter(on_provider).map(dto).collect()))
}

#[derive(serde::Deserialize)]
struct DealsQuery {
    cid: Option<String>,
    provider: Option<String>,
}

#[derive(serde::Deserialize)]
struct DealQuery {
    /// `false`: leave a pack's member list out (its count stays), for callers
    /// that only look at the pieces: the providers checking an upload and
    /// the uploader, once per deal each, where a pack of a thousand objects
    /// would otherwise cost every one of them a hundred kilobytes of JSON.
    members: Option<bool>,
}

async fn deal(State(s): Shared, Path(id): Path<String>, Query(q): Query<DealQuery>) -> ApiResult<DealDto> {
    let id = parse_id(&id, "deal")?;
    let (snap, _) = snapshot(&s)?;
    let st = Overlay::new(&snap);
    let d = storage::deal(&st, id).ok_or_else(|| not_found(format!("no deal {id}")))?;
    if q.members == Some(false) {
        return Ok(Json(deal_dto(&d, storage::pack_member_count(&st, id), Vec::new())));
    }
    let members = storage::pack_members(&st, id);
    Ok(Json(deal_dto(&d, members.len(), members)))
}

/// Open storage challenges with the leaves each one asks for.
async fn challenges(State(s): Shared, Query(q): Query<ChallengesQuery>) -> ApiResult<Vec<ChallengeDto>> {
    let provider = match &q.provider {
        Some(p) => Some(p.parse::<Address>().map_err(|e| bad(format!("provider: {e}")))?),
        None => None,
    };
    let (snap, _) = snapshot(&s)?;
    Ok(Json(open_challenges(&snap, provider)))
}

#[derive(serde::Deserialize)]
struct NextChallengesQuery {
    provider: String,
    /// Answer once the chain is past this height, and then ...
    after: Option<u64>,
    /// ... only once it holds a challenge for the provider or has reached
    /// this height (or the wait is over).
    until: Option<u64>,
    /// Wait up to this long (at most `MAX_TX_WAIT_MS`).
    wait_ms: Option<u64>,
}

/// `GET /storage/challenges/next?provider=&after=H&until=U&wait_ms=`: one
/// provider's open challenges and the chain's height, held until a block
/// past `H` holds a challenge for it or the chain reaches `U` (woken by the
/// block event stream, like `/status?after=`). A provider agent asks once
/// per challenge or wait instead of twice every block.
async fn next_challenges(State(s): Shared, Query(q): Query<NextChallengesQuery>) -> ApiResult<ChallengesAtDto> {
    let provider = q.provider.parse::<Address>().map_err(|e| bad(format!("provider: {e}")))?;
    let look = || snapshot(&s).map(|(snap, height)| ChallengesAtDto { height, challenges: open_challenges(&snap, Some(provider)) });
    let due = |seen: &Result<ChallengesAtDto, ApiError>| {
        seen.as_ref().map_or(true, |c| {
            q.after.is_none_or(|after| c.height > after) && (!c.challenges.is_empty() || q.until.is_none_or(|until| c.height >= until))
        })
    };
    Ok(Json(look_until(&s, q.wait_ms, look, due).await?))
}

/// Open challenges with the leaves they ask for: all, or one provider's.
fn open_challenges(snap: &Snapshot, provider: Option<Address>) -> Vec<ChallengeDto> {
    let st = Overlay::new(snap);
    let p = params::params(&st);
    let mut out = Vec::new();
    // Challenges come in deal order within a deadline: decode each deal once.
    let mut last: Option<storage::Deal> = None;
    for c in storage::pending_challenges(&st) {
        if last.as_ref().is_none_or(|d| d.id != c.deal) {
            last = storage::deal(&st, c.deal);
        }
        let Some(d) = &last else { continue };
        let Some(piece) = d.pieces.get(c.piece as usize) else { continue };
        if provider.is_some_and(|p| p != piece.provider) {
            continue;
        }
        let Some(beacon) = storage::beacon(&st, c.epoch) else { continue };
        let leaves = tessera_storage::challenge_indices(
            &beacon,
            &piece.hash,
            c.epoch,
            tessera_storage::leaf_count(piece.len),
            p.storage.challenges_per_piece,
        );
        out.push(ChallengeDto {
            deal: c.deal,
            piece: c.piece,
            epoch: c.epoch,
            deadline: c.deadline,
            provider: piece.provider,
            piece_hash: piece.hash,
            leaves,
        });
    }
    out
}

#[derive(serde::Deserialize)]
struct ChallengesQuery {
    provider: Option<String>,
}

/// Each committed block as one `block` event whose data is a `BlockEventDto`.
/// A client that falls behind gets a `lagged` event and should re-read blocks.
async fn events(State(s): Shared) -> Sse<impl Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let stream = BroadcastStream::new(s.events.subscribe()).map(|item| {
        Ok(match item {
            Ok(json) => SseEvent::default().event("block").data(json.as_str()),
            Err(e) => SseEvent::default().event("lagged").data(e.to_string()),
        })
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
