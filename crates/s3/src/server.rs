//! Serving the S3 endpoint: SigV4 against the access-key files, one HTTP/1.1
//! connection per task, TCP_NODELAY on every socket (small GETs must not wait
//! on Nagle's algorithm), and the unread rest of a refused request's body
//! read so that the client gets its error and keeps its connection.

use hyper::body::{Body, Frame, Incoming, SizeHint};
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{s3_error, S3Result};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

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
    let (placing, stopping) = (gateway.clone(), stop.clone());
    tokio::spawn(async move {
        crate::placer::end_unrecorded(&placing, &stopping).await;
        tokio::spawn(crate::compact::run(placing.clone(), stopping.clone()));
        crate::placer::run(placing, stopping).await;
    });
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
            let answer = hyper::service::service_fn(move |req| answer(service.clone(), req));
            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(socket), answer).await;
        });
    }
    Ok(())
}

/// Most of a refused request's body read (and dropped) to keep its
/// connection; past it, or past `DRAIN_TIME`, the connection closes instead.
const DRAIN_MAX_BYTES: u64 = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Answers one request. A request refused before its body was read (a PUT
/// to a missing bucket, a bad signature) still has the rest of that body on
/// its way: the server reads it and drops it, so that the client, still
/// writing, gets the S3 error rather than a broken pipe, and the connection
/// serves its next request. A body past `DRAIN_MAX_BYTES`, or one the client
/// is waiting to send (`Expect: 100-continue`), is not read: the answer says
/// `Connection: close`.
async fn answer(service: S3Service, req: hyper::Request<Incoming>) -> Result<s3s::HttpResponse, s3s::HttpError> {
    if req.body().is_end_stream() {
        return hyper::service::Service::call(&service, req).await;
    }
    let waits_to_send = req.headers().get(hyper::header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, body) = req.into_parts();
    let body = SharedBody(Arc::new(Mutex::new(Some(body))));
    let mut resp = service.call(hyper::Request::from_parts(parts, s3s::Body::http_body(body.clone()))).await?;
    let unread = body.0.lock().expect("request body lock").take().filter(|b| !b.is_end_stream());
    if let Some(unread) = unread
        && (resp.status().is_client_error() || resp.status().is_server_error())
        && (waits_to_send || !drain(unread).await)
    {
        resp.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    }
    Ok(resp)
}

/// Reads `body` to its end, within the bounds; whether it ended.
async fn drain(mut body: Incoming) -> bool {
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut read = 0u64;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        match tokio::time::timeout_at(deadline, frame).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > DRAIN_MAX_BYTES {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// A request body the service reads while `answer` keeps a hold on it, to
/// take back what the service left unread.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<Option<Incoming>>>);

impl Body for SharedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<bytes::Bytes>, hyper::Error>>> {
        match self.0.lock().expect("request body lock").as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().expect("request body lock").as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().expect("request body lock").as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
