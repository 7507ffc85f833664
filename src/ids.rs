//! Validating newtypes for every identifier the tool takes from a user or from AWS.
//!
//! A malformed id is refused when it is parsed, before any AWS call, with a message
//! that shows the expected form. Each type keeps its string private so a value of the
//! type is always well-formed.

use std::fmt;
use std::str::FromStr;

/// Why an identifier was refused: what was given, what kind it should be, and the form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {given:?}: expected {expected}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub given: String,
    pub expected: &'static str,
}

/// Implements the string-like traits for a validating newtype whose inner value is a
/// `String` named `0` and which has a `fn validate(&str) -> bool` and `KIND`/`FORM` consts.
macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, kind = $kind:literal, form = $form:literal, valid = $valid:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const KIND: &'static str = $kind;
            pub const FORM: &'static str = $form;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                let valid: fn(&str) -> bool = $valid;
                if valid(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(InvalidId { kind: $kind, given: s.to_owned(), expected: $form })
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                s.parse()
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// `prefix-` followed by 8 or 17 lowercase hex digits, the form of EC2 resource ids.
fn ec2_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('-')).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17)
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

string_id!(
    /// An EC2 instance id, `i-` and 8 or 17 hex digits.
    InstanceId, kind = "instance id", form = "i- followed by 8 or 17 lowercase hex digits, e.g. i-0123456789abcdef0",
    valid = |s| ec2_id(s, "i")
);
string_id!(
    /// An EBS volume id.
    VolumeId, kind = "volume id", form = "vol- followed by 8 or 17 lowercase hex digits, e.g. vol-0123456789abcdef0",
    valid = |s| ec2_id(s, "vol")
);
string_id!(
    /// An EBS snapshot id.
    SnapshotId, kind = "snapshot id", form = "snap- followed by 8 or 17 lowercase hex digits, e.g. snap-0123456789abcdef0",
    valid = |s| ec2_id(s, "snap")
);
string_id!(
    /// A VPC security group id.
    SecurityGroupId, kind = "security group id", form = "sg- followed by 8 or 17 lowercase hex digits, e.g. sg-0123456789abcdef0",
    valid = |s| ec2_id(s, "sg")
);
string_id!(
    /// An elastic network interface id.
    NetworkInterfaceId, kind = "network interface id", form = "eni- followed by 8 or 17 lowercase hex digits, e.g. eni-0123456789abcdef0",
    valid = |s| ec2_id(s, "eni")
);
string_id!(
    /// A VPC id.
    VpcId, kind = "VPC id", form = "vpc- followed by 8 or 17 lowercase hex digits, e.g. vpc-0123456789abcdef0",
    valid = |s| ec2_id(s, "vpc")
);
string_id!(
    /// A subnet id.
    SubnetId, kind = "subnet id", form = "subnet- followed by 8 or 17 lowercase hex digits, e.g. subnet-0123456789abcdef0",
    valid = |s| ec2_id(s, "subnet")
);
string_id!(
    /// An AMI id.
    AmiId, kind = "AMI id", form = "ami- followed by 8 or 17 lowercase hex digits, e.g. ami-0123456789abcdef0",
    valid = |s| ec2_id(s, "ami")
);
string_id!(
    /// A 12-digit AWS account id.
    AccountId, kind = "account id", form = "exactly 12 digits, e.g. 111122223333",
    valid = |s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
);
string_id!(
    /// A case id: it becomes part of S3 keys and resource tags, so it is kept to a
    /// conservative alphabet.
    CaseId, kind = "case id", form = "1 to 64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit, no '..', e.g. IR-2026-0042",
    // No "..": the id names local folders and S3 prefixes, and tools that copy a case
    // out of S3 treat a ".." anywhere in a key as suspicious (or as a step up).
    valid = |s| {
        (1..=64).contains(&s.len())
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !s.contains("..")
    }
);
string_id!(
    /// An AWS region name such as `eu-west-1`.
    Region, kind = "region", form = "a region name such as us-east-1 or eu-central-2",
    valid = |s| {
        let parts: Vec<&str> = s.split('-').collect();
        parts.len() >= 3
            && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
            && parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
    }
);
string_id!(
    /// An S3 bucket name (the DNS-compatible rules AWS enforces for new buckets).
    BucketName, kind = "S3 bucket name", form = "3 to 63 characters of lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
    valid = |s| {
        (3..=63).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
            && !s.contains("..")
    }
);
string_id!(
    /// An IAM role ARN, `arn:<partition>:iam::<account>:role/<path/name>`.
    RoleArn, kind = "IAM role ARN", form = "arn:aws:iam::<12-digit account>:role/<name>, e.g. arn:aws:iam::111122223333:role/CleanroomForensics",
    valid = |s| parse_arn(s).is_some_and(|a| a.service == "iam" && a.region.is_empty() && AccountId::from_str(a.account).is_ok() && a.resource.strip_prefix("role/").is_some_and(|n| !n.is_empty()))
);
string_id!(
    /// A KMS key ARN (`key/<uuid>`) or alias ARN (`alias/<name>`). Only ARNs are taken:
    /// a bare key id is ambiguous about which account holds the key.
    KmsKeyArn, kind = "KMS key ARN", form = "arn:aws:kms:<region>:<12-digit account>:key/<key id> or ...:alias/<name>",
    valid = |s| parse_arn(s).is_some_and(|a| a.service == "kms" && Region::from_str(a.region).is_ok() && AccountId::from_str(a.account).is_ok() && (a.resource.strip_prefix("key/").is_some_and(|k| !k.is_empty()) || a.resource.strip_prefix("alias/").is_some_and(|k| !k.is_empty())))
);
string_id!(
    /// An IAM role name (the member-account role to assume).
    RoleName, kind = "IAM role name", form = "1 to 64 characters of letters, digits and +=,.@_-",
    valid = |s| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
);

string_id!(
    /// An AWS partition, the second field of every ARN: `aws`, `aws-cn`, `aws-us-gov`, ...
    Partition, kind = "AWS partition", form = "aws, or aws- followed by lowercase letters and '-', e.g. aws-cn or aws-us-gov",
    valid = |s| s == "aws" || s.strip_prefix("aws-").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
);

/// Region name prefixes of the partitions other than `aws`, longest first so `us-isob-`
/// is not taken for `us-iso-` (AWS SDK `partitions.json`, the `regionRegex` of each).
const PARTITION_PREFIXES: [(&str, &str); 7] = [
    ("us-gov-", "aws-us-gov"),
    ("us-isob-", "aws-iso-b"),
    ("us-isof-", "aws-iso-f"),
    ("us-iso-", "aws-iso"),
    ("eu-isoe-", "aws-iso-e"),
    ("eusc-", "aws-eusc"),
    ("cn-", "aws-cn"),
];

impl Partition {
    /// The partition every ARN of `region` is in: a region belongs to exactly one.
    pub fn of_region(region: &Region) -> Self {
        let name = PARTITION_PREFIXES
            .iter()
            .find(|(prefix, _)| region.as_str().starts_with(prefix))
            .map_or("aws", |(_, partition)| partition);
        Self(name.to_owned())
    }

    /// The partition of an ARN (`arn:<partition>:...`), if it is one.
    pub fn of_arn(arn: &str) -> Option<Self> {
        parse_arn(arn).and_then(|a| a.partition.parse().ok())
    }
}

impl Region {
    pub fn partition(&self) -> Partition {
        Partition::of_region(self)
    }
}

impl KmsKeyArn {
    /// The account that owns the key.
    pub fn account(&self) -> AccountId {
        let arn = parse_arn(&self.0).expect("validated at construction");
        AccountId(arn.account.to_owned())
    }
}

impl RoleArn {
    pub fn partition(&self) -> Partition {
        let arn = parse_arn(&self.0).expect("validated at construction");
        Partition(arn.partition.to_owned())
    }

    pub fn account(&self) -> AccountId {
        let arn = parse_arn(&self.0).expect("validated at construction");
        AccountId(arn.account.to_owned())
    }

    /// The role name, the last path segment of the resource.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    /// The ARN of `role_name` in `account` of `partition` (IAM is global within a
    /// partition: the caller's, since no role can be assumed across partitions).
    pub fn in_account(partition: &Partition, account: &AccountId, role_name: &RoleName) -> Self {
        Self(format!("arn:{partition}:iam::{account}:role/{role_name}"))
    }
}

/// The ARN of an EC2 resource of `kind` (`instance`, `volume`, ...), in its region's
/// partition; snapshots have no account field (see [`snapshot_arn`]).
pub fn ec2_arn(region: &Region, account: Option<&AccountId>, kind: &str, id: &str) -> String {
    let account = account.map(AccountId::as_str).unwrap_or_default();
    format!("arn:{}:ec2:{region}:{account}:{kind}/{id}", region.partition())
}

/// The ARN of an instance, in its region's partition.
pub fn instance_arn(region: &Region, account: &AccountId, instance: &InstanceId) -> String {
    ec2_arn(region, Some(account), "instance", instance.as_str())
}

/// The ARN of a snapshot: EC2 snapshot ARNs have no account field (Service
/// Authorization Reference, `arn:${Partition}:ec2:${Region}::snapshot/${SnapshotId}`).
pub fn snapshot_arn(region: &Region, snapshot: &SnapshotId) -> String {
    ec2_arn(region, None, "snapshot", snapshot.as_str())
}

/// The parts of an ARN, borrowed from the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    pub partition: &'a str,
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

/// Splits `arn:partition:service:region:account:resource`; `None` if it is not one.
pub fn parse_arn(s: &str) -> Option<Arn<'_>> {
    let mut parts = s.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let partition = parts.next()?;
    let service = parts.next()?;
    let region = parts.next()?;
    let account = parts.next()?;
    let resource = parts.next()?;
    if Partition::from_str(partition).is_err() || service.is_empty() || resource.is_empty() {
        return None;
    }
    Some(Arn { partition, service, region, account, resource })
}

/// An S3 location given as `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct S3Uri {
    pub bucket: BucketName,
    pub key: String,
}

impl FromStr for S3Uri {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        let invalid = || InvalidId {
            kind: "S3 URI",
            given: s.to_owned(),
            expected: "s3://<bucket>/<optional key prefix>, e.g. s3://acme-forensics-evidence/cases",
        };
        let rest = s.strip_prefix("s3://").ok_or_else(invalid)?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket = bucket.parse::<BucketName>().map_err(|_| invalid())?;
        Ok(Self { bucket, key: key.to_owned() })
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// An instance named on the command line: a bare id in the caller's (or configured)
/// account and region, or an ARN naming another account and region.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceRef {
    pub id: InstanceId,
    pub account: Option<AccountId>,
    pub region: Option<Region>,
}

impl FromStr for InstanceRef {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        if s.starts_with("arn:") {
            let invalid = || InvalidId {
                kind: "instance ARN",
                given: s.to_owned(),
                expected: "arn:aws:ec2:<region>:<12-digit account>:instance/<i-...>, e.g. arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0",
            };
            let arn = parse_arn(s).filter(|a| a.service == "ec2").ok_or_else(invalid)?;
            let id = arn.resource.strip_prefix("instance/").ok_or_else(invalid)?;
            let region: Region = arn.region.parse()?;
            // The region decides the partition: an ARN naming another one is no instance's.
            if region.partition().as_str() != arn.partition {
                return Err(InvalidId {
                    kind: "instance ARN",
                    given: s.to_owned(),
                    expected: "the partition of the region: arn:aws:ec2:eu-west-1:..., arn:aws-cn:ec2:cn-north-1:..., arn:aws-us-gov:ec2:us-gov-west-1:...",
                });
            }
            return Ok(Self { id: id.parse()?, account: Some(arn.account.parse()?), region: Some(region) });
        }
        Ok(Self { id: s.parse()?, account: None, region: None })
    }
}

impl fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.account, &self.region) {
            (Some(a), Some(r)) => write!(f, "{}", instance_arn(r, a, &self.id)),
            _ => write!(f, "{}", self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_accept_both_lengths_and_refuse_the_rest() {
        for good in ["i-01234567", "i-0123456789abcdef0"] {
            assert_eq!(good.parse::<InstanceId>().unwrap().as_str(), good);
        }
        for bad in [
            "",
            "i-",
            "i-0123",
            "i-0123456789ABCDEF0",
            "vol-01234567",
            "i_01234567",
            "i-0123456789abcdef01",
            " i-01234567",
        ] {
            let err = bad.parse::<InstanceId>().unwrap_err();
            assert!(err.to_string().contains("i- followed by 8 or 17"), "{err}");
        }
    }

    #[test]
    fn case_ids_are_safe_for_keys_and_tags() {
        assert!("IR-2026-0042".parse::<CaseId>().is_ok());
        for bad in ["", "-lead", "a/b", "a b", "../x", "IR..1", "IR-1..", &"x".repeat(65)] {
            assert!(bad.parse::<CaseId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!("111122223333".parse::<AccountId>().is_ok());
        for bad in ["11112222333", "1111222233334", "11112222333a", "arn:aws:iam::111122223333:root"] {
            let err = bad.parse::<AccountId>().unwrap_err();
            assert!(err.to_string().contains("exactly 12 digits"));
        }
    }

    #[test]
    fn role_and_key_arns_expose_their_account() {
        let role: RoleArn = "arn:aws:iam::111122223333:role/path/Forensics".parse().unwrap();
        assert_eq!(role.account().as_str(), "111122223333");
        assert_eq!(role.name(), "Forensics");
        assert!("arn:aws:iam::111122223333:user/x".parse::<RoleArn>().is_err());
        assert!("arn:aws:iam::1111:role/x".parse::<RoleArn>().is_err());
        let key: KmsKeyArn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab".parse().unwrap();
        assert_eq!(key.account().as_str(), "111122223333");
        assert!("1234abcd-12ab".parse::<KmsKeyArn>().is_err());
        assert!("arn:aws:kms:eu-west-1:111122223333:alias/forensics".parse::<KmsKeyArn>().is_ok());
    }

    #[test]
    fn instance_refs_take_ids_and_arns() {
        let r: InstanceRef = "i-0123456789abcdef0".parse().unwrap();
        assert_eq!(r.account, None);
        let r: InstanceRef =
            "arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0".parse().unwrap();
        assert_eq!(r.account.unwrap().as_str(), "111122223333");
        assert_eq!(r.region.unwrap().as_str(), "eu-west-1");
        assert!("arn:aws:ec2:eu-west-1:111122223333:volume/vol-01234567".parse::<InstanceRef>().is_err());
        assert!("arn:aws:ec2:eu-west-1:1111:instance/i-01234567".parse::<InstanceRef>().is_err());
    }

    #[test]
    fn s3_uris_and_bucket_names() {
        let u: S3Uri = "s3://acme-evidence/cases/x".parse().unwrap();
        assert_eq!(u.bucket.as_str(), "acme-evidence");
        assert_eq!(u.key, "cases/x");
        assert!("https://acme-evidence/x".parse::<S3Uri>().is_err());
        assert!("s3://Acme/x".parse::<S3Uri>().is_err());
    }

    #[test]
    fn partitions_come_from_the_region_or_the_arn() {
        let of = |r: &str| r.parse::<Region>().unwrap().partition().to_string();
        assert_eq!(of("eu-west-1"), "aws");
        assert_eq!(of("cn-north-1"), "aws-cn");
        assert_eq!(of("cn-northwest-1"), "aws-cn");
        assert_eq!(of("us-gov-west-1"), "aws-us-gov");
        assert_eq!(of("us-isob-east-1"), "aws-iso-b");
        assert_eq!(of("us-iso-east-1"), "aws-iso");
        let role: RoleArn = "arn:aws-cn:iam::111122223333:role/CleanroomForensics".parse().unwrap();
        assert_eq!(role.partition().as_str(), "aws-cn");
        let member =
            RoleArn::in_account(&role.partition(), &"444455556666".parse().unwrap(), &"R".parse().unwrap());
        assert_eq!(member.as_str(), "arn:aws-cn:iam::444455556666:role/R");
        assert!("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k".parse::<KmsKeyArn>().is_ok());
        assert!("arn:awsx:iam::111122223333:role/R".parse::<RoleArn>().is_err());
        assert_eq!(
            Partition::of_arn("arn:aws-us-gov:sts::111122223333:assumed-role/R/s").unwrap().as_str(),
            "aws-us-gov"
        );
    }

    #[test]
    fn instance_arns_keep_their_partition_and_refuse_a_mismatch() {
        for arn in [
            "arn:aws-cn:ec2:cn-north-1:111122223333:instance/i-0123456789abcdef0",
            "arn:aws-us-gov:ec2:us-gov-west-1:111122223333:instance/i-0123456789abcdef0",
            "arn:aws:ec2:eu-west-1:111122223333:instance/i-0123456789abcdef0",
        ] {
            assert_eq!(arn.parse::<InstanceRef>().unwrap().to_string(), arn);
        }
        let err = "arn:aws:ec2:cn-north-1:111122223333:instance/i-0123456789abcdef0".parse::<InstanceRef>();
        assert!(err.unwrap_err().to_string().contains("partition of the region"));
        let snap = snapshot_arn(&"cn-north-1".parse().unwrap(), &"snap-01234567".parse().unwrap());
        assert_eq!(snap, "arn:aws-cn:ec2:cn-north-1::snapshot/snap-01234567");
        // The analysis volumes' custody subjects: their region's partition too (they
        // were written as arn:aws: whatever the region).
        let gov: Region = "us-gov-west-1".parse().unwrap();
        let vol = ec2_arn(&gov, Some(&"111122223333".parse().unwrap()), "volume", "vol-01234567");
        assert_eq!(vol, "arn:aws-us-gov:ec2:us-gov-west-1:111122223333:volume/vol-01234567");
    }

    #[test]
    fn regions() {
        assert!("us-east-1".parse::<Region>().is_ok());
        assert!("us-gov-west-1".parse::<Region>().is_ok());
        for bad in ["useast1", "us-east", "US-EAST-1", "us-east-1a"] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }
}
