//! Runs the real `tessera` binary: a devnet process on a free loopback port and
//! CLI commands against it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tessera");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Devnet {
    pub child: Option<Child>,
    pub home: PathBuf,
    pub rpc: String,
    /// Port of the devnet's S3 endpoint.
    pub s3_port: u16,
}

impl Devnet {
    pub fn start(home: &Path, port: u16) -> Devnet {
        Devnet::start_with(home, port, &[])
    }

    pub fn start_with(home: &Path, port: u16, extra: &[&str]) -> Devnet {
        let rpc = format!("127.0.0.1:{port}");
        let s3_port = free_port();
        let s3 = format!("127.0.0.1:{s3_port}");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(home.join("devnet.log")).unwrap();
        let child = Command::new(BIN)
            .args(["--home", home.to_str().unwrap(), "--rpc", &rpc, "devnet", "--block-time-ms", "100", "--s3", &s3])
            // Tests wait for proofs, faults and repairs: 5 s proof epochs.
            .args(["--proof-epoch-secs", "5"])
            .args(extra)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn devnet");
        let d = Devnet { child: Some(child), home: home.to_path_buf(), rpc, s3_port };
        d.wait_ready();
        d
    }

    /// Polls `/status` until the node answers with a committed block.
    pub fn wait_ready(&self) {
        let client = tessera_client::Client::new(&format!("http://{}", self.rpc));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(s) = client.status()
                && s.height >= 1 {
                    return;
                }
            assert!(Instant::now() < deadline, "devnet did not start; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `check` holds, polling; panics with `what` after `secs`.
    pub fn wait_until(&self, secs: u64, what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}; devnet log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn client(&self) -> tessera_client::Client {
        tessera_client::Client::new(&format!("http://{}", self.rpc))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("devnet.log")).unwrap_or_default()
    }

    /// The log of the devnet's S3 endpoint (as the devnet started it).
    pub fn s3_log(&self) -> String {
        std::fs::read_to_string(self.home.join("devnet").join("s3.log")).unwrap_or_default()
    }

    /// Runs the aws CLI with `args` against this devnet's S3 endpoint, as
    /// the holder of S3 key `access`/`secret`, with no configuration of
    /// this machine's.
    pub fn aws(&self, access: &str, secret: &str, args: &[&str]) -> Output {
        Command::new("aws")
            .args(["--endpoint-url", &format!("http://127.0.0.1:{}", self.s3_port)])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", access)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .expect("aws CLI is missing: run the tests through scripts/test.sh, which installs it")
    }

    /// Runs `tessera <args>` against this devnet.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--home", self.home.to_str().unwrap(), "--rpc", &self.rpc])
            .args(args)
            .output()
            .expect("run tessera")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "tessera {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "tessera {args:?} should have failed: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("json output")
    }

    /// The name and process id of a provider agent of this devnet (by its address).
    fn provider_process(&self, address: &tessera_types::Address) -> (String, u32) {
        let keys = tessera_client::Keyring::new(self.home.join("keys"));
        let name = keys.list().unwrap().into_iter().find(|(_, a)| a == address).expect("provider key").0;
        let pid: u32 = self
            .log()
            .lines()
            .find(|l| l.contains("provider") && l.contains(&format!(" {name} ")) && l.contains("pid"))
            .and_then(|l| l.split("pid ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("provider pid in the devnet banner");
        (name, pid)
    }

    /// Kills a provider agent of this devnet with SIGKILL (by its address).
    pub fn kill_provider(&self, address: &tessera_types::Address) -> String {
        let (name, pid) = self.provider_process(address);
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        name
    }

    /// SIGKILLs a provider agent and starts it again at once with the same
    /// arguments (key, data dir, profile), listening on `listen`.
    pub fn restart_provider(&self, address: &tessera_types::Address, listen: &str) -> Child {
        let (_, pid) = self.provider_process(address);
        self.restart_process(pid, "restarted-provider.log", Some(listen))
    }

    /// Process ids of the devnet's provider agents (from the devnet banner).
    pub fn provider_pids(&self) -> Vec<u32> {
        self.log()
            .lines()
            .filter(|l| l.trim_start().starts_with("provider ") && l.contains("pid"))
            .filter_map(|l| l.split("pid ").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Process id of the devnet's S3 endpoint (from the devnet banner).
    pub fn s3_pid(&self) -> u32 {
        self.log()
            .lines()
            .find(|l| l.trim_start().starts_with("S3 ") && l.contains("pid"))
            .and_then(|l| l.split("pid ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .expect("S3 pid in the devnet banner")
    }

    /// SIGKILLs the S3 endpoint and starts it again with the same arguments
    /// (data dir, listen address); its output goes to `restarted-s3.log`.
    pub fn restart_s3(&self) -> Child {
        self.restart_process(self.s3_pid(), "restarted-s3.log", None)
    }

    /// SIGKILLs child process `pid` of the devnet and starts it again at once
    /// with the same arguments (`--listen` replaced when given).
    fn restart_process(&self, pid: u32, log_name: &str, listen: Option<&str>) -> Child {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let mut args: Vec<String> =
            cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).skip(1).map(|a| String::from_utf8_lossy(a).to_string()).collect();
        if let (Some(listen), Some(i)) = (listen, args.iter().position(|a| a == "--listen")) {
            args[i + 1] = listen.to_string();
        }
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        // The address and the database locks are free again only once every
        // thread of the killed process is gone: its main thread turns zombie
        // while others may still be exiting with the shared file table open.
        let deadline = Instant::now() + Duration::from_secs(10);
        let gone = || match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Err(_) => true,
            Ok(s) => s.contains("State:\tZ") && s.contains("Threads:\t1\n"),
        };
        while !gone() {
            assert!(Instant::now() < deadline, "process {pid} did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.home.join(log_name)).unwrap();
        Command::new(BIN)
            .args(&args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("restart process")
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM (what Ctrl-C's handler also does) and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "devnet did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The example's word count computed here, the way the guest program does.
pub fn expected_wordcount(text: &str) -> (String, String) {
    let words: Vec<&str> = text.split_whitespace().collect();
    let stdout = format!("{:8} {:8} {:8} poem.txt\n", text.lines().count(), words.len(), text.len());
    let mut freq = std::collections::BTreeMap::<String, u64>::new();
    for w in words {
        let w: String = w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
        if !w.is_empty() {
            *freq.entry(w).or_default() += 1;
        }
    }
    let mut top: Vec<(String, u64)> = freq.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let report: String = top.iter().take(10).map(|(w, n)| format!("{n} {w}\n")).collect();
    (stdout, report)
}
