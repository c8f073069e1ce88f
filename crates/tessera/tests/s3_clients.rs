//! The S3 endpoint with real clients: boto3 runs `tests/s3/boto3_flows.py`
//! (buckets, objects, ranges, listing with pagination, multipart, copy,
//! presigned URLs, error codes) and the aws CLI copies a file in and out.

mod support;

use std::process::Command;
use support::*;

fn python_has_boto3() -> bool {
    Command::new("python3").args(["-c", "import boto3"]).status().map(|s| s.success()).unwrap_or(false)
}

#[test]
fn boto3_and_aws_cli_against_the_devnet_endpoint() {
    assert!(python_has_boto3(), "boto3 is missing: run the tests through scripts/test.sh, which installs it");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let net = Devnet::start(dir.path(), port);
    let client = net.client();
    net.wait_until(60, "6 registered storage providers", || {
        client.get::<Vec<tessera_client::api::ProviderDto>>("/providers").map(|p| p.len() == 6).unwrap_or(false)
    });
    let endpoint = format!("http://127.0.0.1:{}", net.s3_port);
    net.wait_until(30, "the S3 endpoint", || std::net::TcpStream::connect(("127.0.0.1", net.s3_port)).is_ok());
    let key = net.json(&["storage", "s3-key", "create", "--from", "dev"]);
    let access = key["access_key"].as_str().unwrap();
    let secret = key["secret_key"].as_str().unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/s3/boto3_flows.py");
    let out = Command::new("python3").args([script, &endpoint, access, secret]).output().unwrap();
    assert!(
        out.status.success(),
        "boto3 flows failed:\n{}\n{}\nS3 log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("devnet").join("s3.log")).unwrap_or_default()
    );

    let aws = |args: &[&str]| {
        Command::new("aws")
            .args(["--endpoint-url", &endpoint])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", access)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("aws CLI is missing: run the tests through scripts/test.sh, which installs it")
    };
    let input = dir.path().join("weights.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    for args in [
        vec!["s3", "mb", "s3://cli-bucket"],
        vec!["s3", "cp", input.to_str().unwrap(), "s3://cli-bucket/models/weights.bin"],
    ] {
        let o = aws(&args);
        assert!(o.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let ls = aws(&["s3", "ls", "s3://cli-bucket/models/"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("weights.bin"));
    let back = dir.path().join("back.bin");
    let o = aws(&["s3", "cp", "s3://cli-bucket/models/weights.bin", back.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&back).unwrap(), data);
    let o = aws(&["s3", "rm", "s3://cli-bucket/models/weights.bin"]);
    assert!(o.status.success());
    let missing = aws(&["s3api", "head-object", "--bucket", "cli-bucket", "--key", "models/weights.bin"]);
    assert!(!missing.status.success());
}
