//! The AWS adapters: the only place that knows the SDK's types.
//!
//! This file builds every client, in one function: profile, region, role chain,
//! endpoint (the lab), timeouts and retries. Each service has its own module that turns
//! SDK calls into the domain types the stages work with.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use tokio::sync::Mutex;

use crate::cloud::CloudError;
use crate::ids::{AccountId, Partition, Region, RoleArn, RoleName};
use sha2::Digest;

pub mod autoscaling;
pub mod cloudtrail;
pub mod ebs;
pub mod ec2;
pub mod elb;
pub mod error;
pub mod iam;
pub mod identity;
pub mod kms;
pub mod preflight;
pub mod raw;
pub mod s3;
pub mod ssm;

/// Attempts per call, with the SDK's standard exponential backoff and jitter. AWS
/// recommends 3 for interactive tools; an incident response is worth waiting a little
/// longer through a throttling burst, and 5 attempts span about 20 s at most.
pub const MAX_ATTEMPTS: u32 = 5;

/// A TCP connect that takes longer than this is a network problem, not load.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One attempt of a control-plane call (EC2, IAM, STS, SSM, KMS); they answer in
/// well under a second normally, so a minute means the call is hung.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// A whole control-plane call including retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(180);
/// One attempt of an S3 call: a multipart part of up to 64 MiB over a slow
/// responder's link (2 MB/s) takes about 35 s, so allow 5 minutes per attempt.
const S3_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Time allowed between bytes on an established connection.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What the user chose on the command line about where to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub profile: Option<String>,
    pub region: Option<Region>,
}

/// Every client for one account and region, built from one [`SdkConfig`].
#[derive(Clone, Debug)]
pub struct AccountClients {
    pub region: Region,
    pub sdk: SdkConfig,
    pub ec2: aws_sdk_ec2::Client,
    pub s3: aws_sdk_s3::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub sts: aws_sdk_sts::Client,
    pub kms: aws_sdk_kms::Client,
    pub iam: aws_sdk_iam::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub elb: aws_sdk_elasticloadbalancing::Client,
    pub cloudtrail: aws_sdk_cloudtrail::Client,
}

/// Builds a service client from the shared config, with an optional extra interceptor
/// (the lab uses one to pick the emulated account when seeding).
macro_rules! client {
    ($krate:ident, $sdk:expr, $interceptor:expr) => {{
        let mut builder = $krate::config::Builder::from($sdk);
        if let Some(i) = $interceptor {
            builder.push_interceptor(i.clone());
        }
        $krate::Client::from_conf(builder.build())
    }};
}

impl AccountClients {
    pub fn new(sdk: SdkConfig, region: Region) -> Self {
        Self::with_interceptor(sdk, region, None)
    }

    pub fn with_interceptor(sdk: SdkConfig, region: Region, interceptor: Option<SharedInterceptor>) -> Self {
        let interceptor = interceptor.as_ref();
        // S3 against an endpoint override (the lab on localhost) must use path-style
        // addressing: virtual-host style would ask for <bucket>.localhost.
        let path_style = sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3_timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .operation_attempt_timeout(S3_ATTEMPT_TIMEOUT)
            .build();
        let mut s3 =
            aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).timeout_config(s3_timeouts);
        if let Some(i) = interceptor {
            s3.push_interceptor(i.clone());
        }
        Self {
            ec2: client!(aws_sdk_ec2, &sdk, interceptor),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            ssm: client!(aws_sdk_ssm, &sdk, interceptor),
            sts: client!(aws_sdk_sts, &sdk, interceptor),
            kms: client!(aws_sdk_kms, &sdk, interceptor),
            iam: client!(aws_sdk_iam, &sdk, interceptor),
            autoscaling: client!(aws_sdk_autoscaling, &sdk, interceptor),
            elbv2: client!(aws_sdk_elasticloadbalancingv2, &sdk, interceptor),
            elb: client!(aws_sdk_elasticloadbalancing, &sdk, interceptor),
            cloudtrail: client!(aws_sdk_cloudtrail, &sdk, interceptor),
            sdk,
            region,
        }
    }
}

/// Loads the caller's own configuration: credentials the AWS way (environment,
/// profiles, SSO, credential_process), the region from the flag, the environment or
/// the profile, else `fallback_region`; `AWS_ENDPOINT_URL` is honoured by the loader.
pub async fn base_config(opts: &ConnectOptions, fallback_region: &Region) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(control_plane_timeouts())
        .retry_config(retry_config());
    if let Some(profile) = &opts.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &opts.region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    let sdk = loader.load().await;
    if sdk.region().is_some() {
        return sdk;
    }
    sdk.to_builder().region(aws_config::Region::new(fallback_region.to_string())).build()
}

/// The SDK's standard retry mode: exponential backoff with jitter per call, so a throttled
/// call waits its own turn while the others go on. Not the adaptive mode: its client-side
/// limiter is shared by every client of a service and region (the SDK's retry partition,
/// `ec2-eu-west-1`: every account, every action), so one throttled ModifyInstanceAttribute
/// slowed every EC2 call of the fleet; under the lab's EC2 buckets the 100-instance fleet
/// took 21.0 s with it and 13.5 s without (`scripts/bench-aws`, README "Performance").
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

fn control_plane_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// `base` with `role` assumed (credentials refreshed by the SDK as they expire) in
/// `region`. The session name is recorded in CloudTrail for every call made with it.
pub async fn assume_role(base: &SdkConfig, role: &RoleArn, session_name: &str, region: &Region) -> SdkConfig {
    let provider =
        AssumeRoleProvider::builder(role.as_str()).session_name(session_name).configure(base).build().await;
    base.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .region(aws_config::Region::new(region.to_string()))
        .build()
}

/// STS accepts role session names of 2 to 64 characters of `[\w+=,.@-]`.
const SESSION_NAME_MAX: usize = 64;
/// Hex digits of SHA-256 kept when a name must be shortened or rewritten: 48 bits, so
/// two case ids collide by chance about once in 2^24 pairs with the same readable part.
const SESSION_DIGEST_HEX: usize = 12;

/// The STS session name for `purpose` (a case id, or a command such as `preflight`):
/// `cleanroom-<purpose>` when that is a valid session name as it stands; otherwise the
/// readable part, cut to fit, then `=` and a digest of the whole purpose, so two purposes
/// never share a name (every call shows up in CloudTrail under its own case). `=` never
/// appears in a name kept as it stands: the readable part replaces it.
pub fn session_name(purpose: &str) -> String {
    let plain = format!("cleanroom-{purpose}");
    let readable: String = plain
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "+,.@-_".contains(c) { c } else { '-' })
        .collect();
    if readable == plain && plain.len() <= SESSION_NAME_MAX {
        return plain;
    }
    let digest = hex::encode(sha2::Sha256::digest(purpose.as_bytes()));
    let keep = SESSION_NAME_MAX - 1 - SESSION_DIGEST_HEX;
    // `readable` is ASCII, so any byte index is a character boundary.
    format!("{}={}", &readable[..readable.len().min(keep)], &digest[..SESSION_DIGEST_HEX])
}

/// Clients are cached per account (`None`: the caller's own) and region.
type ClientKey = (Option<AccountId>, Region);

/// Where the tool acts: the caller's own credentials, the forensics account through its
/// role, and member accounts through the member role, each built once and shared.
pub struct Aws {
    base: SdkConfig,
    base_region: Region,
    session_name: String,
    forensics_role: Option<RoleArn>,
    forensics_account: AccountId,
    forensics_region: Region,
    member_role: RoleName,
    caller: Mutex<Option<(AccountId, Partition)>>,
    cache: Mutex<HashMap<ClientKey, Arc<AccountClients>>>,
}

impl Aws {
    pub async fn connect(
        opts: &ConnectOptions,
        config: &crate::config::Config,
        session_name: String,
    ) -> Self {
        let base = base_config(opts, config.member_region()).await;
        let base_region = base
            .region()
            .and_then(|r| r.as_ref().parse().ok())
            .unwrap_or_else(|| config.member_region().clone());
        Self {
            base,
            base_region,
            session_name,
            forensics_role: config.forensics.role_arn.clone(),
            forensics_account: config.forensics.account_id.clone(),
            forensics_region: config.forensics.region.clone(),
            member_role: config.member.role_name.clone(),
            caller: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The region of the caller's own configuration (flag, environment or profile).
    pub fn default_region(&self) -> &Region {
        &self.base_region
    }

    pub fn session_name(&self) -> &str {
        &self.session_name
    }

    /// The caller's own credentials in `region`.
    pub async fn caller(&self, region: &Region) -> Arc<AccountClients> {
        self.clients(None, region).await
    }

    /// The forensics account: its role assumed when configured, in its region.
    pub async fn forensics(&self) -> Arc<AccountClients> {
        let key = (self.forensics_role.as_ref().map(|r| r.account()), self.forensics_region.clone());
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(&key) {
            return c.clone();
        }
        let sdk = match &self.forensics_role {
            Some(role) => assume_role(&self.base, role, &self.session_name, &self.forensics_region).await,
            None => self.with_region(&self.forensics_region),
        };
        let clients = Arc::new(AccountClients::new(sdk, self.forensics_region.clone()));
        cache.insert(key, clients.clone());
        clients
    }

    /// A member account: the caller's own credentials when `account` is the caller's
    /// (or not given), else the member role assumed in that account.
    pub async fn member(
        &self,
        account: Option<&AccountId>,
        region: &Region,
    ) -> Result<Arc<AccountClients>, CloudError> {
        let account = match account {
            None => None,
            Some(a) if Some(a) == self.caller_account().await?.as_ref() => None,
            Some(a) => Some(a.clone()),
        };
        Ok(self.clients(account, region).await)
    }

    /// The account of the caller's own credentials (one STS call, then cached).
    pub async fn caller_account(&self) -> Result<Option<AccountId>, CloudError> {
        Ok(Some(self.caller_and_partition().await?.0))
    }

    /// The caller's account and partition, from its identity ARN (one STS call, cached).
    async fn caller_and_partition(&self) -> Result<(AccountId, Partition), CloudError> {
        let mut cached = self.caller.lock().await;
        if let Some(known) = cached.as_ref() {
            return Ok(known.clone());
        }
        let clients = AccountClients::new(self.base.clone(), self.base_region.clone());
        let who = identity::caller_identity(&clients.sts).await?;
        let partition = Partition::of_arn(&who.arn)
            .ok_or_else(|| CloudError::missing("sts", "GetCallerIdentity", "an ARN with a partition"))?;
        let known = (who.account, partition);
        *cached = Some(known.clone());
        Ok(known)
    }

    /// The member role's ARN in `account`, in the caller's partition (a role cannot be
    /// assumed across partitions); the base region's partition if the caller is unknown.
    pub async fn member_role(&self, account: &AccountId) -> RoleArn {
        let partition = match self.caller_and_partition().await {
            Ok((_, partition)) => partition,
            Err(_) => self.base_region.partition(),
        };
        RoleArn::in_account(&partition, account, &self.member_role)
    }

    async fn clients(&self, account: Option<AccountId>, region: &Region) -> Arc<AccountClients> {
        let key = (account.clone(), region.clone());
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(&key) {
            return c.clone();
        }
        let sdk = match &account {
            None => self.with_region(region),
            Some(a) => {
                let role = self.member_role(a).await;
                assume_role(&self.base, &role, &self.session_name, region).await
            }
        };
        let clients = Arc::new(AccountClients::new(sdk, region.clone()));
        cache.insert(key, clients.clone());
        clients
    }

    fn with_region(&self, region: &Region) -> SdkConfig {
        self.base.to_builder().region(aws_config::Region::new(region.to_string())).build()
    }

    /// Clients for an explicit role (preflight checks the configured roles one by one).
    pub async fn assumed(&self, role: &RoleArn, region: &Region) -> AccountClients {
        let sdk = assume_role(&self.base, role, &self.session_name, region).await;
        AccountClients::new(sdk, region.clone())
    }
}

/// The cross-account seam on real AWS: member accounts through the member role, the
/// forensics account through its role.
#[async_trait::async_trait]
impl crate::cloud::Accounts for Aws {
    async fn caller_account(&self) -> crate::cloud::CloudResult<AccountId> {
        self.caller_account().await?.ok_or_else(|| CloudError::missing("sts", "GetCallerIdentity", "Account"))
    }

    async fn member(
        &self,
        account: &AccountId,
        region: &Region,
    ) -> crate::cloud::CloudResult<crate::cloud::Side> {
        let clients = Aws::member(self, Some(account), region).await?;
        Ok(crate::cloud::Side { account: account.clone(), region: region.clone(), cloud: clients })
    }

    async fn forensics(&self) -> crate::cloud::CloudResult<crate::cloud::Side> {
        let clients = Aws::forensics(self).await;
        Ok(crate::cloud::Side {
            account: self.forensics_account.clone(),
            region: self.forensics_region.clone(),
            cloud: clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Rust SDK sets no timeouts by default: a hung endpoint would hang a response.
    #[tokio::test]
    async fn every_client_has_timeouts_and_retries() {
        let region: Region = "eu-west-1".parse().unwrap();
        let credentials = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let opts = ConnectOptions { profile: None, region: Some(region.clone()) };
        // Region and credentials are explicit: nothing is resolved from the machine.
        let sdk = base_config(&opts, &region)
            .await
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build();
        let timeouts = sdk.timeout_config().expect("timeouts are set");
        assert_eq!(timeouts.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(sdk.retry_config().expect("retries are set").max_attempts(), MAX_ATTEMPTS);
        let clients = AccountClients::new(sdk, region);
        let s3 = clients.s3.config().timeout_config().expect("S3 timeouts are set").clone();
        assert_eq!(s3.operation_attempt_timeout(), Some(S3_ATTEMPT_TIMEOUT));
        assert_eq!(s3.connect_timeout(), Some(CONNECT_TIMEOUT));
    }

    fn sts_accepts(name: &str) -> bool {
        (2..=SESSION_NAME_MAX).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    #[test]
    fn session_names_are_what_sts_accepts() {
        assert_eq!(session_name("IR-2026-0042"), "cleanroom-IR-2026-0042");
        for purpose in ["IR-2026/01 x", &"a".repeat(100), "IR=1", "é", "preflight"] {
            let name = session_name(purpose);
            assert!(sts_accepts(&name), "{purpose:?} -> {name:?}");
            assert!(name.starts_with("cleanroom-"), "{name}");
        }
    }

    // Two long case ids that differ only after the 54th character used to share one
    // truncated session name, so CloudTrail could not tell their calls apart.
    #[test]
    fn long_case_ids_differing_at_the_end_get_different_session_names() {
        let base = "IR-2026-0042-".to_owned() + &"x".repeat(50);
        let (a, b) = (format!("{base}-a"), format!("{base}-b"));
        assert_ne!(session_name(&a), session_name(&b));
        assert_eq!(session_name(&a).len(), SESSION_NAME_MAX);
        assert!(session_name(&a).starts_with("cleanroom-IR-2026-0042-xxx"), "still readable");
        // Rewritten characters no longer merge names either.
        assert_ne!(session_name("IR/1"), session_name("IR 1"));
        assert_ne!(session_name("IR/1"), session_name("IR-1"));
        // Stable: the same case always gets the same name (a rerun is the same session).
        assert_eq!(session_name(&a), session_name(&a));
    }
}
