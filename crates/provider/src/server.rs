//! The piece server: `PUT /pieces/{hash}` (only pieces a deal assigns to this
//! provider, checked against their hash), `GET /pieces/{hash}` (re-checked on
//! every read), `GET /health`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
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
}

pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/pieces/{hash}", get(get_piece).put(put_piece))
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

/// True if an active deal assigns a piece with this hash to `me`.
pub fn assigned(rpc: &str, me: &Address, hash: &Hash32) -> Result<bool, String> {
    let deals: Vec<DealDto> = Client::new(rpc).get("/deals").map_err(|e| e.to_string())?;
    Ok(deals.iter().filter(|d| d.active).flat_map(|d| &d.pieces).any(|p| p.hash == *hash && p.provider == *me))
}

async fn put_piece(State(s): State<Arc<ServerState>>, Path(hash): Path<String>, body: Bytes) -> Response {
    let Ok(hash) = hash.parse::<Hash32>() else { return error(StatusCode::BAD_REQUEST, "piece hash must be 64 hex digits") };
    let state = s.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<(), (StatusCode, String)> {
        match assigned(&state.rpc, &state.me, &hash) {
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
