//! `cleanroom.toml`: the forensics account, the evidence bucket, the clean room and the
//! member-account role. Validated on load; every error names the key and the fix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{
    AccountId, AmiId, BucketName, KmsKeyArn, Region, RoleArn, RoleName, SecurityGroupId, SubnetId,
};

/// The name looked for in the working directory when `--config` is not given.
pub const DEFAULT_FILE: &str = "cleanroom.toml";

/// Longest COMPLIANCE retention the tool will ask for: S3 allows up to 100 years, but a
/// typo of extra digits must not lock evidence (and its storage bill) for a century.
const MAX_RETENTION_DAYS: u32 = 36_500;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The human accountable for the actions, recorded in every custody record.
    /// `--examiner` or CLEANROOM_EXAMINER override it.
    #[serde(default)]
    pub examiner: Option<String>,
    pub forensics: Forensics,
    pub member: Member,
    pub analysis: Analysis,
    #[serde(default)]
    pub ssm: SsmDocuments,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forensics {
    pub account_id: AccountId,
    /// Role assumed in the forensics account for every evidence and clean-room action.
    /// Omit it when the caller already is in the forensics account.
    #[serde(default)]
    pub role_arn: Option<RoleArn>,
    pub region: Region,
    pub evidence_bucket: BucketName,
    /// Customer-managed key for the forensics snapshot copies and evidence objects.
    pub kms_key_arn: KmsKeyArn,
    /// Asymmetric ECDSA P-256 key that signs custody checkpoints (optional).
    #[serde(default)]
    pub signing_key_arn: Option<KmsKeyArn>,
    /// Object Lock retention for evidence written by the tool, in days.
    pub retention_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The role assumed in each suspect's account (same name in every member account).
    pub role_name: RoleName,
    /// Region of instances named by bare id (an ARN names its own). Defaults to the
    /// forensics region.
    #[serde(default)]
    pub default_region: Option<Region>,
    /// Customer-managed key (alias or ARN, same in every member account) under which
    /// snapshots the forensics account cannot use as they are (aws/ebs, other keys) are
    /// copied before the hand-off. The member-account stack creates it.
    #[serde(default = "default_handoff_key")]
    pub handoff_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    pub subnet_id: SubnetId,
    pub security_group_id: SecurityGroupId,
    /// Instance profile name for the analysis instance.
    pub instance_profile: String,
    /// The forensic tooling AMI: an id, or `ssm:<parameter name>` resolving to one.
    pub ami: AmiSource,
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmiSource {
    Id(AmiId),
    SsmParameter(String),
}

impl Serialize for AmiSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AmiSource::Id(id) => s.serialize_str(id.as_str()),
            AmiSource::SsmParameter(name) => s.serialize_str(&format!("ssm:{name}")),
        }
    }
}

impl<'de> Deserialize<'de> for AmiSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.strip_prefix("ssm:") {
            Some(name) if name.starts_with('/') && name.len() > 1 => {
                Ok(AmiSource::SsmParameter(name.to_owned()))
            }
            Some(_) => Err(serde::de::Error::custom(format!(
                "invalid AMI parameter {s:?}: expected ssm:/<parameter path>, e.g. ssm:/cleanroom/forensic-ami"
            ))),
            None => s.parse().map(AmiSource::Id).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SsmDocuments {
    #[serde(default = "doc_disk_image")]
    pub disk_image: String,
    #[serde(default = "doc_triage")]
    pub triage: String,
    #[serde(default = "doc_yara")]
    pub yara: String,
}

impl Default for SsmDocuments {
    fn default() -> Self {
        Self { disk_image: doc_disk_image(), triage: doc_triage(), yara: doc_yara() }
    }
}

impl SsmDocuments {
    pub fn names(&self) -> [&str; 3] {
        [&self.disk_image, &self.triage, &self.yara]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Instances worked on at once in a fleet command.
    #[serde(default = "default_concurrency")]
    pub instance_concurrency: usize,
    /// Longest wait for a snapshot or a copy to complete, in minutes.
    #[serde(default = "default_snapshot_timeout")]
    pub snapshot_timeout_minutes: u64,
    /// Analysis instances a case runs at once (a fleet's volumes are spread over them).
    #[serde(default = "default_analysis_instances")]
    pub analysis_instances: usize,
    /// Evidence volumes attached to one analysis instance.
    #[serde(default = "default_volumes_per_instance")]
    pub volumes_per_analysis_instance: usize,
    /// Longest wait for a new analysis instance to come online in SSM, in minutes.
    #[serde(default = "default_online_timeout")]
    pub ssm_online_timeout_minutes: u64,
    /// Longest wait for one collection document to finish, in minutes.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_minutes: u64,
    /// Clean-room outputs up to this size are read back and hashed again by cleanroom
    /// when imported; larger ones keep the clean room's two reads until `verify`.
    #[serde(default = "default_rehash_gib")]
    pub rehash_max_gib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            instance_concurrency: default_concurrency(),
            snapshot_timeout_minutes: default_snapshot_timeout(),
            analysis_instances: default_analysis_instances(),
            volumes_per_analysis_instance: default_volumes_per_instance(),
            ssm_online_timeout_minutes: default_online_timeout(),
            command_timeout_minutes: default_command_timeout(),
            rehash_max_gib: default_rehash_gib(),
        }
    }
}

fn default_analysis_instances() -> usize {
    4
}
/// Nitro instances take 28 attachments in all (ENIs and the root volume included);
/// 20 evidence volumes leave room for both.
fn default_volumes_per_instance() -> usize {
    20
}
/// The agent of a fresh instance usually registers within two or three minutes.
fn default_online_timeout() -> u64 {
    15
}
/// Imaging reads a whole volume lazily from S3: a 1 TiB first read can take hours.
fn default_command_timeout() -> u64 {
    720
}
fn default_rehash_gib() -> u64 {
    64
}

fn default_handoff_key() -> String {
    "alias/cleanroom-handoff".into()
}
/// A first snapshot of a 1 TiB volume can take hours; six is generous without being
/// forever. A rerun keeps waiting where this one stopped.
fn default_snapshot_timeout() -> u64 {
    360
}

fn default_instance_type() -> String {
    "m6i.large".into()
}
fn doc_disk_image() -> String {
    "Cleanroom-DiskImage".into()
}
fn doc_triage() -> String {
    "Cleanroom-Triage".into()
}
fn doc_yara() -> String {
    "Cleanroom-Yara".into()
}
/// EC2's default request rate bucket refills at about 20 mutating calls a second per
/// account; eight instances in flight, each making a handful of calls, stays under it.
fn default_concurrency() -> usize {
    8
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "no configuration at {path}\nfix: run `cleanroom init` to write a commented example there, or pass --config <file>"
    )]
    Missing { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "invalid configuration in {path}:\n{message}\nfix: correct that key (`cleanroom init --stdout` prints a commented example)"
    )]
    Invalid { path: PathBuf, message: String },
    #[error("invalid configuration in {path}: {key} {problem}\nfix: {fix}")]
    Rule { path: PathBuf, key: &'static str, problem: String, fix: String },
    #[error(
        "{path} already exists; refusing to overwrite it\nfix: choose another path with --config, or move the file away"
    )]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConfigError::Missing { path: path.to_owned() }
            } else {
                ConfigError::Read { path: path.to_owned(), source }
            }
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Invalid { path: path.to_owned(), message: e.to_string() })?;
        config.check_rules(path)?;
        Ok(config)
    }

    /// Rules that span keys or bound numbers, which serde cannot express.
    fn check_rules(&self, path: &Path) -> Result<(), ConfigError> {
        let rule = |key, problem: String, fix: String| ConfigError::Rule {
            path: path.to_owned(),
            key,
            problem,
            fix,
        };
        let f = &self.forensics;
        if let Some(role) = &f.role_arn
            && role.account() != f.account_id
        {
            return Err(rule(
                "forensics.role_arn",
                format!("is in account {} but forensics.account_id is {}", role.account(), f.account_id),
                "use the role of the forensics account, or correct forensics.account_id".into(),
            ));
        }
        if f.kms_key_arn.account() != f.account_id {
            return Err(rule(
                "forensics.kms_key_arn",
                format!(
                    "is in account {} but forensics.account_id is {}",
                    f.kms_key_arn.account(),
                    f.account_id
                ),
                "evidence copies must be encrypted under a key the forensics account owns".into(),
            ));
        }
        if f.retention_days == 0 || f.retention_days > MAX_RETENTION_DAYS {
            return Err(rule(
                "forensics.retention_days",
                format!("is {}, outside 1..={MAX_RETENTION_DAYS}", f.retention_days),
                "set the number of days evidence must stay locked (e.g. 2555 for seven years)".into(),
            ));
        }
        if self.limits.instance_concurrency == 0 || self.limits.instance_concurrency > 64 {
            return Err(rule(
                "limits.instance_concurrency",
                format!("is {}, outside 1..=64", self.limits.instance_concurrency),
                "use a small number such as 8; EC2 throttles bursts of mutating calls".into(),
            ));
        }
        for (key, name) in [
            ("ssm.disk_image", &self.ssm.disk_image),
            ("ssm.triage", &self.ssm.triage),
            ("ssm.yara", &self.ssm.yara),
        ] {
            let valid = (3..=128).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
            if !valid {
                return Err(rule(
                    key,
                    format!("{name:?} is not an SSM document name"),
                    "use 3 to 128 letters, digits, '_', '-' or '.'".into(),
                ));
            }
        }
        if self.analysis.instance_profile.is_empty() {
            return Err(rule(
                "analysis.instance_profile",
                "is empty".into(),
                "name the analysis instance profile".into(),
            ));
        }
        Ok(())
    }

    /// SHA-256 of the canonical JSON of the configuration in force, recorded in the case
    /// so a reader can tell which settings produced the evidence.
    pub fn digest(&self) -> String {
        let canonical = serde_jcs::to_vec(self).expect("config serialises");
        format!("sha256:{}", hex::encode(Sha256::digest(&canonical)))
    }

    /// The region for instances given by bare id.
    pub fn member_region(&self) -> &Region {
        self.member.default_region.as_ref().unwrap_or(&self.forensics.region)
    }
}

/// The commented example `cleanroom init` writes.
pub const EXAMPLE: &str = include_str!("../cleanroom.example.toml");

/// Writes the example configuration to `path`, never over an existing file.
pub fn write_example(path: &Path) -> Result<(), ConfigError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            ConfigError::Exists { path: path.to_owned() }
        } else {
            ConfigError::Write { path: path.to_owned(), source }
        }
    })?;
    file.write_all(EXAMPLE.as_bytes()).map_err(|source| ConfigError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("cleanroom.toml"))
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let config = parse(EXAMPLE).unwrap();
        assert_eq!(config.forensics.retention_days, 2555);
        assert!(config.digest().starts_with("sha256:"));
    }

    #[test]
    fn a_malformed_account_names_the_key_and_the_form() {
        let text = EXAMPLE.replace("account_id = \"111122223333\"", "account_id = \"1111\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("account_id"), "{err}");
        assert!(err.contains("exactly 12 digits"), "{err}");
        assert!(err.contains("fix:"), "{err}");
    }

    #[test]
    fn an_unknown_key_is_refused() {
        let text = EXAMPLE.replace("retention_days = 2555", "retention_days = 2555\nretention_dayz = 1");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("retention_dayz"), "{err}");
    }

    #[test]
    fn cross_key_rules_name_the_key() {
        let text = EXAMPLE.replace("retention_days = 2555", "retention_days = 0");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("forensics.retention_days"), "{err}");
        let text = EXAMPLE.replace("kms:eu-west-1:111122223333", "kms:eu-west-1:999999999999");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("forensics.kms_key_arn"), "{err}");
    }

    #[test]
    fn ami_may_be_an_ssm_parameter() {
        let text =
            EXAMPLE.replace("ami = \"ami-0123456789abcdef0\"", "ami = \"ssm:/cleanroom/forensic-ami\"");
        let config = parse(&text).unwrap();
        assert_eq!(config.analysis.ami, AmiSource::SsmParameter("/cleanroom/forensic-ami".into()));
        let text = EXAMPLE.replace("ami = \"ami-0123456789abcdef0\"", "ami = \"forensic\"");
        assert!(parse(&text).unwrap_err().to_string().contains("ami-"));
    }

    #[test]
    fn init_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cleanroom.toml");
        write_example(&path).unwrap();
        assert!(matches!(write_example(&path), Err(ConfigError::Exists { .. })));
        assert!(Config::load(&path).is_ok());
    }
}
