//! Rebuilding a piece from the other pieces of its segment: fetch any K that
//! pass their hash check, decode, re-encode, and keep the one that was missing.

use tessera_client::api::{DealDto, ProviderDto};
use tessera_client::{fetch_piece, Client};
use tessera_storage::{ErasureScheme, SegmentCodec};


/// First endpoint of a provider, from the registry.
pub fn endpoint_of(client: &Client, provider: &tessera_types::Address) -> anyhow::Result<String> {
    let p: ProviderDto = client.get(&format!("/providers/{provider}"))?;
    p.info.endpoints.first().cloned().ok_or_else(|| anyhow::anyhow!("provider {provider} lists no endpoint"))
}

/// The bytes of piece `piece` of `deal`, rebuilt from the rest of its segment.
pub fn rebuild_piece(client: &Client, deal: &DealDto, piece: usize) -> anyhow::Result<Vec<u8>> {
    let scheme: ErasureScheme = deal.erasure.parse().map_err(anyhow::Error::msg)?;
    let target = deal.pieces.get(piece).ok_or_else(|| anyhow::anyhow!("deal {} has no piece {piece}", deal.id))?;
    let k = scheme.data as usize;
    let mut have: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, p) in deal.pieces.iter().enumerate() {
        if i == piece || p.segment != target.segment || have.len() >= k {
            continue;
        }
        let Ok(endpoint) = endpoint_of(client, &p.provider) else { continue };
        if let Ok(bytes) = fetch_piece(&endpoint, &p.hash) {
            have.push((p.index as usize, bytes));
        }
    }
    anyhow::ensure!(have.len() >= k, "only {} of the {k} pieces needed to rebuild are reachable", have.len());
    let mut codec = SegmentCodec::new(scheme)?;
    let refs: Vec<(usize, &[u8])> = have.iter().map(|(i, b)| (*i, b.as_slice())).collect();
    let padded_len = target.len as usize * k;
    let segment = codec.decode(padded_len, &refs)?;
    let shards = codec.encode(&segment)?;
    let bytes = shards.get(target.index as usize).ok_or_else(|| anyhow::anyhow!("no shard {}", target.index))?.to_vec();
    anyhow::ensure!(tessera_storage::piece_hash(&bytes) == target.hash, "rebuilt piece does not match its hash");
    Ok(bytes)
}
