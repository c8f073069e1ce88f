//! The piece server: `PUT /pieces/{hash}[?deal=ID]` (only pieces a deal assigns to this
//! provider, checked against their hash), `GET /pieces/{hash}` (re-checked on
//! every read), `GET /results/{hash}` (job results, re-checked against their
//! hash before they are sent), `GET /jobs/{id}/logs` and `/jobs/{id}/phase`,
//! `GET /health`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tessera_client::api::DealDto;
use tessera_client::Client;
use tessera_types::{Address, Hash32};

use crate::piece_store::{PieceError, PieceStore};

pub struct ServerState {
    pub store: Arc<PieceStore>,
    pub me: Address,
    pub rpc: String,
    /// The node's RPC, one connection pool for every request.
    pub node: Client,
    pub results: Arc<crate::results::ResultStore>,
    pub executor: Arc<crate::executor::Executor>,
}

pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/pieces/{hash}", get(get_piece).put(put_piece))
        .route("/results/{hash}", get(get_result))
        .route("/jobs/{id}/logs", get(job_logs))
        .route("/jobs/{id}/phase", get(job_phase))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(tessera_client::MAX_PIECE_BODY as usize))
        .with_state(state)
}

fn error(status: StatusCode, message: impl ToString) -> Response {
    (status, message.to_string()).into_response()
}

async fn get_piece(State(s): State<Arc<ServerState>>, Path(hash): Path<String>) -> Response {
    let Ok(hash) = hash.parse::<Hash32>() else { return error(StatusCode::BAD_REQUEST, "piece hash must be 64 hex digits") };
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.get(&hash)).await {
        Ok(Ok(bytes)) => bytes.into_response(),
        Ok(Err(e @ PieceError::Missing(_))) => error(StatusCode::NOT_FOUND, e),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// True if an active deal (deal `deal` when the uploader names it) assigns a
/// piece with this hash to `me`.
pub fn assigned(client: &Client, me: &Address, hash: &Hash32, deal: Option<u64>) -> Result<bool, String> {
    let deals: Vec<DealDto> = match deal {
        Some(id) => match client.get::<DealDto>(&format!("/deals/{id}?members=false")) {
            Ok(d) => vec![d],
            Err(tessera_client::ClientError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.to_string()),
        },
        None => client.get(&format!("/deals?provider={me}")).map_err(|e| e.to_string())?,
    };
    Ok(deals.iter().filter(|d| d.active).flat_map(|d| &d.pieces).any(|p| p.hash == *hash && p.provider == *me))
}

#[derive(serde::Deserialize)]
struct PutPieceQuery {
    /// The deal that assigns the piece, so that only it is looked up.
    deal: Option<u64>,
}

async fn put_piece(State(s): State<Arc<ServerState>>, Path(hash): Path<String>, Query(q): Query<PutPieceQuery>, body: Bytes) -> Response {
    let Ok(hash) = hash.parse::<Hash32>() else { return error(StatusCode::BAD_REQUEST, "piece hash must be 64 hex digits") };
    let state = s.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), (StatusCode, String)> {
        match assigned(&state.node, &state.me, &hash, q.deal) {
            Ok(true) => {}
            Ok(false) => return Err((StatusCode::FORBIDDEN, format!("no active deal assigns piece {hash} to {}", state.me))),
            Err(e) => return Err((StatusCode::SERVICE_UNAVAILABLE, format!("cannot check the deal: {e}"))),
        }
        state.store.put(&hash, &body).map_err(|e| match e {
            PieceError::Corrupted { .. } | PieceError::TooLarge { .. } => (StatusCode::BAD_REQUEST, e.to_string()),
            PieceError::Full { .. } => (StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })
    })
    .await;
    match result {
        Ok(Ok(())) => StatusCode::CREATED.into_response(),
        Ok(Err((status, message))) => error(status, message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn get_result(State(s): State<Arc<ServerState>>, Path(hash): Path<String>) -> Response {
    let Ok(hash) = hash.parse::<Hash32>() else { return error(StatusCode::BAD_REQUEST, "result hash must be 64 hex digits") };
    let results = s.results.clone();
    let path = match tokio::task::spawn_blocking(move || results.checked(&hash)).await {
        Ok(Ok(Some(crate::results::Stored::Inline(bytes)))) => return bytes.into_response(),
        Ok(Ok(Some(crate::results::Stored::File(p)))) => p,
        Ok(Ok(None)) => return error(StatusCode::NOT_FOUND, format!("no result {hash} here")),
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    match tokio::fs::File::open(&path).await {
        Ok(f) => axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(f)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn job_logs(State(s): State<Arc<ServerState>>, Path(id): Path<u64>) -> Response {
    let executor = s.executor.clone();
    match tokio::task::spawn_blocking(move || executor.log_text(id)).await {
        Ok(Some(bytes)) => bytes.into_response(),
        _ => error(StatusCode::NOT_FOUND, format!("no log of job {id} here")),
    }
}

async fn job_phase(State(s): State<Arc<ServerState>>, Path(id): Path<u64>) -> Response {
    let executor = s.executor.clone();
    match tokio::task::spawn_blocking(move || executor.phase(id)).await {
        Ok(Some(p)) => p.into_response(),
        _ => error(StatusCode::NOT_FOUND, format!("job {id} has not started here")),
    }
}
