//! Serving the S3 endpoint: SigV4 against the access-key files, one HTTP/1.1
//! connection per task, TCP_NODELAY on every socket (small GETs must not wait
//! on Nagle's algorithm).

use s3s::auth::{S3Auth, SecretKey};
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Result};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::keys::AccessKeys;
use crate::service::{Endpoint, Gateway};

struct KeyAuth {
    keys: AccessKeys,
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.keys.get(access_key).map(|k| SecretKey::from(k.secret_key)).ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }
}

/// Serves until `stop` is set; also places acknowledged bodies on the
/// storage network (`placer`) and writes job results into buckets (`export`).
pub async fn serve(gateway: Gateway, listen: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let auth = KeyAuth { keys: AccessKeys::new(gateway.keys.dir().to_path_buf()) };
    let gateway = Arc::new(gateway);
    let mut builder = S3ServiceBuilder::new(Endpoint(gateway.clone()));
    builder.set_auth(auth);
    let service = builder.build();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (in use? pick another with --listen): {e}"))?;
    println!("S3 endpoint on http://{listen}");
    tokio::spawn(crate::placer::run(gateway.clone(), stop.clone()));
    tokio::spawn(crate::export::run(gateway, stop.clone()));
    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    while !stop.load(Ordering::Relaxed) {
        let accepted = tokio::time::timeout(std::time::Duration::from_millis(200), listener.accept()).await;
        let Ok(accepted) = accepted else { continue };
        let (socket, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service).await;
        });
    }
    Ok(())
}
