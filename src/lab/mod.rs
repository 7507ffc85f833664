//! The local lab: moto server with our extensions (see `lab/README.md`), started on a
//! loopback port for the drill and the tests. Nothing here runs against real AWS: the
//! lab is always a child process on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::aws::AccountClients;
use crate::ids::{AccountId, Region};

pub mod scenario;
pub mod seed;
pub mod unauthorized;

/// The lab's cold bootstrap (a new venv) downloads and installs about 60 packages.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(600);
/// Measured start of moto with our extensions is about 1.5 s; allow for a loaded CI box.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The credentials the lab is driven with. moto accepts any; these say what they are.
pub const ACCESS_KEY: &str = "AKIALABLABLABLAB0000";
pub const SECRET_KEY: &str = "lab-secret-not-a-real-credential";
/// moto's default account: the responder's own account in the lab.
pub const HOME_ACCOUNT: &str = "123456789012";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "lab bootstrap failed ({script}): {detail}\nfix: run {script} by hand to see why (it needs python3 and PyPI)"
    )]
    Bootstrap { script: PathBuf, detail: String },
    #[error("cannot start the lab server: {0}")]
    Spawn(std::io::Error),
    #[error("the lab server did not report ready within {0:?}")]
    NotReady(Duration),
    #[error("the lab server exited before it was ready")]
    Exited,
    #[error("lab admin call {path} failed: {detail}")]
    Admin { path: String, detail: String },
}

/// Options for a lab process.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// DescribeSnapshots polls before a snapshot completes (0: at once).
    pub snapshot_polls: u32,
}

/// A running lab. Dropping it closes the server's stdin, which makes it exit.
pub struct Lab {
    url: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Where the lab's files are: `CLEANROOM_LAB_DIR`, else `lab/` of this source tree.
pub fn lab_dir() -> PathBuf {
    std::env::var_os("CLEANROOM_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("lab"))
}

impl Lab {
    /// Installs the lab's venv if needed, starts the server on a free loopback port and
    /// waits until it answers.
    pub fn start(options: &LabOptions) -> Result<Self, LabError> {
        let dir = lab_dir();
        bootstrap(&dir)?;
        let python = dir.join(".venv/bin/python");
        let mut child = Command::new(&python)
            .arg(dir.join("server.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof"])
            .args(["--snapshot-polls", &options.snapshot_polls.to_string()])
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(LabError::Spawn)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or(LabError::Exited)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("LAB_READY ") {
                    let _ = tx.send(url.trim().to_owned());
                    break;
                }
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let url = match rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                return Err(LabError::NotReady(START_TIMEOUT));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.kill();
                return Err(LabError::Exited);
            }
        };
        Ok(Self { url, child, stdin })
    }

    /// The lab's endpoint, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Environment for a `cleanroom` process driven against this lab: the endpoint,
    /// explicit lab credentials and region, and no instance metadata lookups, so
    /// nothing ever leaves loopback. No profile files are read.
    pub fn env(&self, region: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", region.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ]
    }

    /// Clients acting as `account` in the lab, for seeding and for checking results.
    /// The account is chosen with moto's `x-moto-account-id` header; the tool itself
    /// never does this, it assumes roles as it would in AWS.
    pub fn clients(&self, account: &AccountId, region: &Region) -> AccountClients {
        let credentials = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "lab");
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(&self.url)
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(credentials))
            .retry_config(aws_config::retry::RetryConfig::standard())
            .build();
        let interceptor = SharedInterceptor::new(Header("x-moto-account-id", account.to_string()));
        AccountClients::with_interceptor(sdk, region.clone(), Some(interceptor))
    }

    /// Clients signing with an access key the lab issued (an IAM user's key): moto maps
    /// the key to its account, and the lab's CloudTrail records the calls under it, as
    /// coming from `source_ip`. How a scenario plays the attacker with a leaked key.
    pub fn clients_with_key(
        &self,
        key: &str,
        secret: &str,
        region: &Region,
        source_ip: &str,
    ) -> AccountClients {
        let credentials = aws_credential_types::Credentials::new(key, secret, None, None, "leaked");
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(&self.url)
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(credentials))
            .retry_config(aws_config::retry::RetryConfig::standard())
            .build();
        let interceptor = SharedInterceptor::new(Header("x-lab-source-ip", source_ip.to_owned()));
        AccountClients::with_interceptor(sdk, region.clone(), Some(interceptor))
    }

    /// Calls the lab's admin endpoint (`/_lab/...`).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        account: Option<&AccountId>,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, LabError> {
        let err = |detail: String| LabError::Admin { path: path.to_owned(), detail };
        let mut req = reqwest::Client::new().request(method, format!("{}{path}", self.url));
        if let Some(account) = account {
            req = req.header("x-moto-account-id", account.as_str());
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| err(e.to_string()))?;
        if !status.is_success() {
            return Err(err(format!("{status}: {text}")));
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    /// Sends raw bytes to an admin route (console output, screenshots, small images).
    pub async fn admin_put_bytes(
        &self,
        path: &str,
        account: &AccountId,
        region: &Region,
        bytes: Vec<u8>,
    ) -> Result<(), LabError> {
        let err = |detail: String| LabError::Admin { path: path.to_owned(), detail };
        let resp = reqwest::Client::new()
            .put(format!("{}{path}?region={region}", self.url))
            .header("x-moto-account-id", account.as_str())
            .body(bytes)
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(err(format!("{status}: {}", resp.text().await.unwrap_or_default())));
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `lab/bootstrap.sh` (idempotent: instant when the venv matches requirements).
fn bootstrap(dir: &Path) -> Result<(), LabError> {
    let script = dir.join("bootstrap.sh");
    let err = |detail: String| LabError::Bootstrap { script: script.clone(), detail };
    let mut child = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(err(format!("exited with {status}"))),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                return Err(err(format!("did not finish within {BOOTSTRAP_TIMEOUT:?}")));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(err(e.to_string())),
        }
    }
}

/// Adds a lab header to every request of a seeding client: moto's account header, or
/// the source IP the lab's CloudTrail records.
#[derive(Debug)]
struct Header(&'static str, String);

impl Intercept for Header {
    fn name(&self) -> &'static str {
        "LabHeader"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        context.request_mut().headers_mut().insert(self.0, self.1.clone());
        Ok(())
    }
}
