//! A small S3 client for job specs: `s3://bucket/key` inputs resolve to the
//! content id the S3 endpoint stored the object under (`x-amz-meta-tessera-cid`),
//! and output buckets are checked before a job is paid for. Requests are
//! bodiless HEADs signed with AWS Signature Version 4 (header form).

use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ClientError;

/// Metadata header under which the endpoint reports an object's content id.
pub const CID_META: &str = "x-amz-meta-tessera-cid";
/// `pending` while the endpoint is still placing the content, then `stored`.
pub const STATE_META: &str = "x-amz-meta-tessera-state";

/// `s3://bucket/key` split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// Parses `s3://bucket/key` (the key may be empty: `s3://bucket/` or `s3://bucket`).
    pub fn parse(text: &str) -> Result<S3Url, String> {
        let rest = text.strip_prefix("s3://").ok_or_else(|| format!("{text:?} is not an s3://bucket/key address"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(format!("{text:?}: {bucket:?} is not a bucket name (3-63 lowercase letters, digits, '-' and '.')"));
        }
        Ok(S3Url { bucket: bucket.to_string(), key: key.to_string() })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// What a HEAD of an object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    /// Content id in the storage network; `None` for an empty object.
    pub cid: Option<String>,
    /// Acknowledged by the endpoint but not yet on the storage network.
    pub pending: bool,
}

pub struct S3Client {
    endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
    agent: ureq::Agent,
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Percent-encodes everything but unreserved characters (and `/` when `keep_slash`).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the Unix epoch (UTC).
fn amz_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl S3Client {
    pub fn new(endpoint: &str, access_key: &str, secret_key: &str) -> S3Client {
        S3Client {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            region: "us-east-1".to_string(),
            agent: ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build(),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The `Authorization`, `x-amz-date` and `x-amz-content-sha256` values for a bodiless request.
    fn sign(&self, method: &str, path: &str, host: &str, secs: u64) -> (String, String, String) {
        let date = amz_date(secs);
        let day = &date[..8];
        let payload = hex_sha256(b"");
        let signed = "host;x-amz-content-sha256;x-amz-date";
        let canonical = format!("{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{date}\n\n{signed}\n{payload}");
        let scope = format!("{day}/{}/s3/aws4_request", self.region);
        let to_sign = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex_sha256(canonical.as_bytes()));
        let mut key = hmac_sha256(format!("AWS4{}", self.secret_key).as_bytes(), day.as_bytes());
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac_sha256(&key, part.as_bytes());
        }
        let signature = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
        let auth = format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}", self.access_key);
        (auth, date, payload)
    }

    fn head(&self, path: &str) -> Result<Option<ureq::Response>, ClientError> {
        let url = format!("{}{path}", self.endpoint);
        let host = self
            .endpoint
            .split_once("://")
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
            .unwrap_or(&self.endpoint)
            .to_string();
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let (auth, date, payload) = self.sign("HEAD", path, &host, secs);
        let req = self
            .agent
            .head(&url)
            .set("Authorization", &auth)
            .set("x-amz-date", &date)
            .set("x-amz-content-sha256", &payload);
        match req.call() {
            Ok(r) => Ok(Some(r)),
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(403, _)) => Err(ClientError::Rejected(format!(
                "the S3 endpoint {} refused the access key {} (403): the key is unknown there, or the bucket belongs to another account",
                self.endpoint, self.access_key
            ))),
            Err(ureq::Error::Status(code, _)) => Err(ClientError::Rejected(format!("the S3 endpoint {} answered {code} for HEAD {path}", self.endpoint))),
            Err(e) => Err(ClientError::Unreachable { url, reason: e.to_string() }),
        }
    }

    /// Whether `bucket` exists and belongs to this key's account.
    pub fn bucket_exists(&self, bucket: &str) -> Result<bool, ClientError> {
        Ok(self.head(&format!("/{}", uri_encode(bucket, false)))?.is_some())
    }

    /// Size and content id of an object; `None` when there is no such object.
    pub fn head_object(&self, url: &S3Url) -> Result<Option<ObjectHead>, ClientError> {
        let path = format!("/{}/{}", uri_encode(&url.bucket, false), uri_encode(&url.key, true));
        let Some(resp) = self.head(&path)? else { return Ok(None) };
        let size = resp
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("HEAD {url}: no content length")))?;
        let cid = resp.header(CID_META).map(str::to_string);
        if size > 0 && cid.is_none() {
            return Err(ClientError::Protocol(format!(
                "{} does not say where {url} is stored ({CID_META}): it is not a Tessera S3 endpoint",
                self.endpoint
            )));
        }
        let pending = resp.header(STATE_META) == Some("pending");
        Ok(Some(ObjectHead { size, cid, pending }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_buckets_say_why() {
        assert_eq!(S3Url::parse("s3://data/a/b.txt").unwrap(), S3Url { bucket: "data".into(), key: "a/b.txt".into() });
        assert_eq!(S3Url::parse("s3://out").unwrap().key, "");
        assert!(S3Url::parse("s3://Bad_Bucket/x").unwrap_err().contains("bucket name"));
        assert!(S3Url::parse("/tmp/x").unwrap_err().contains("s3://"));
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(1_795_612_345), "20261125T131225Z");
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
