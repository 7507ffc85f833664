//! Test support: one lab per test binary, fresh accounts per test, and a runner for the
//! `cleanroom` binary that reads like a spec.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use cleanroom::aws::AccountClients;
use cleanroom::config::Config;
use cleanroom::ids::{AccountId, BucketName, Region};
use cleanroom::lab::{Lab, LabOptions, seed};

/// The region every lab test works in.
pub const REGION: &str = "eu-west-1";

/// The lab shared by every test of this binary; it stops when the binary exits (the
/// server exits when its stdin closes).
pub fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        // SAFETY of the process: the SDK must never reach the metadata address.
        // SAFETY: set once, before any test thread reads the environment through the SDK.
        unsafe { std::env::set_var("AWS_EC2_METADATA_DISABLED", "true") };
        Lab::start(&LabOptions::default()).expect("the lab starts (lab/bootstrap.sh installs it)")
    })
}

pub fn region() -> Region {
    REGION.parse().unwrap()
}

/// A 12-digit account id no other test of this run uses.
pub fn unique_account() -> AccountId {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Process id in the middle keeps accounts apart across test binaries sharing a lab.
    format!("3{:05}{:06}", std::process::id() % 100_000, n).parse().unwrap()
}

/// A bucket name no other test uses (S3 bucket names are global in the lab too).
pub fn unique_bucket(purpose: &str) -> BucketName {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{purpose}-{}-{n}", std::process::id()).parse().unwrap()
}

/// Clients acting as `account` in the lab (seeding and checking).
pub fn clients(account: &AccountId) -> AccountClients {
    lab().clients(account, &region())
}

/// A correctly set-up forensics account, with its configuration written to a file.
pub struct Forensics {
    pub account: AccountId,
    pub config: Config,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Forensics {
    pub async fn seed() -> Self {
        let account = unique_account();
        let bucket = unique_bucket("evidence");
        let seeded = seed::forensics_account(lab(), &account, &region(), &bucket, 1)
            .await
            .expect("forensics account seeds");
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("cleanroom.toml");
        std::fs::write(&config_path, seed::config_toml(&seeded.config)).unwrap();
        Self { account, config: seeded.config, dir, config_path }
    }

    /// Rewrites the configuration file after a change to `config`.
    pub fn save(&self) {
        std::fs::write(&self.config_path, seed::config_toml(&self.config)).unwrap();
    }

    pub fn clients(&self) -> AccountClients {
        clients(&self.account)
    }

    /// `cleanroom --config <this config> <args>` against the lab.
    pub fn cleanroom(&self, args: &[&str]) -> Run {
        let mut all = vec!["--config", self.config_path.to_str().unwrap()];
        all.extend_from_slice(args);
        cleanroom(&all)
    }
}

/// Runs the `cleanroom` binary against the lab with `args`.
pub fn cleanroom(args: &[&str]) -> Run {
    cleanroom_in(Path::new("."), args)
}

pub fn cleanroom_in(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cleanroom"));
    cmd.current_dir(dir).args(args).env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in lab().env(REGION) {
        cmd.env(k, v);
    }
    let output = cmd.output().expect("cleanroom runs");
    Run { args: args.iter().map(|s| s.to_string()).collect(), output }
}

/// A loopback port that counts every connection and closes it at once: a process
/// pointed at it cannot make an AWS call unseen (and fails fast if it tries). The lab
/// would answer such a call, and no one would know it was made.
pub struct Tripwire {
    pub url: String,
    connections: std::sync::Arc<AtomicU64>,
}

impl Tripwire {
    pub fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(AtomicU64::new(0));
        let seen = connections.clone();
        // The thread lives as long as the test binary; the listener is loopback only.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { url, connections }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Runs the `cleanroom` binary with every AWS endpoint pointed here.
    pub fn cleanroom(&self, args: &[&str]) -> Run {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cleanroom"));
        cmd.args(args).env_clear();
        cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for (k, v) in [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIATRIPWIRE00000000"),
            ("AWS_SECRET_ACCESS_KEY", "tripwire"),
            ("AWS_REGION", REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            // One attempt, short timeouts: a call here fails at once.
            ("AWS_MAX_ATTEMPTS", "1"),
        ] {
            cmd.env(k, v);
        }
        let output = cmd.output().expect("cleanroom runs");
        Run { args: args.iter().map(|s| s.to_string()).collect(), output }
    }
}

impl Default for Tripwire {
    fn default() -> Self {
        Self::new()
    }
}

/// The outcome of one `cleanroom` run, with assertions that print what happened.
pub struct Run {
    pub args: Vec<String>,
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "cleanroom {:?} exited {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }

    /// The stdout parsed as JSON (for `--json` runs).
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout()).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}):\n{}\n--- stderr\n{}", self.stdout(), self.stderr())
        })
    }

    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr().contains(needle), "stderr lacks {needle:?}:\n{}", self.stderr());
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(self.stdout().contains(needle), "stdout lacks {needle:?}:\n{}", self.stdout());
        self
    }
}
