//! The custody record: one JSON object per event, canonical bytes (RFC 8785), chained
//! by the previous record's hash and signed (see `signing.rs`). Pure data and pure
//! checks; writing is in `case.rs`.

use serde::{Deserialize, Serialize};

use super::digest::sha256_tagged;
use super::layout;
use crate::ids::{AccountId, CaseId};

/// Schema of every custody record this version writes: `hash` covers every field
/// but `hash` and `signature`; `signature` signs `hash`.
pub const SCHEMA: &str = "cleanroom.custody/2";
/// Records written before per-record signatures: the same fields, never signed.
pub const SCHEMA_UNSIGNED: &str = "cleanroom.custody/1";
/// Largest custody record (canonical bytes) written or read. The biggest records are a
/// containment plan (tens of KiB for an instance with many ENIs and target groups) and
/// a `verified` record, whose findings are capped (`cli::verify`); 1 MiB is over ten
/// times either. A larger object among the records is refused before it is read whole.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Clock source named in every record: order comes from `seq`, never from clocks.
pub const CLOCK_SOURCE: &str = "system clock (UTC) of the host running cleanroom";

/// The kinds of custody event: a closed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    CaseOpened,
    EvidenceStored,
    /// The changes containment is about to make (written before the first one).
    ContainmentPlanned,
    InstanceProtected,
    ServiceDetached,
    NetworkIsolated,
    CredentialsRevoked,
    ContainmentVerified,
    ContainmentFailed,
    Released,
    /// A release that did not restore everything (not a containment failure).
    ReleaseFailed,
    /// Everything capture read is stored; gaps named in the details.
    CaptureCompleted,
    /// One crash-consistent snapshot set of an instance's volumes.
    SnapshotsCreated,
    /// A snapshot ended in `error` (and what was done about it).
    SnapshotFailed,
    /// A copy under the hand-off key, in the member account.
    RelayCopyCreated,
    /// createVolumePermission given to the forensics account.
    SnapshotShared,
    /// The forensics account's copy is complete under its key: the disk evidence.
    ForensicsCopyCompleted,
    /// createVolumePermission taken back.
    ShareRemoved,
    /// The hand-off of a snapshot failed (why, and the state left).
    HandOffFailed,
    /// The collection documents in use: names, versions, SHA-256 of their content.
    DocumentsRegistered,
    /// An analysis instance launched (AMI and how it was resolved, settings).
    AnalysisInstanceLaunched,
    /// An evidence volume made from a forensics copy and attached, read-only by design.
    AnalysisVolumeAttached,
    /// A collection document sent to the clean room (command id, document digest).
    CollectionStarted,
    /// A collection document finished, with its status.
    CollectionCompleted,
    CollectionFailed,
    /// An analysis resource the case created, removed by teardown.
    ResourceRemoved,
    Verified,
    ReportWritten,
    CheckpointSigned,
    ManifestSealed,
}

impl Action {
    pub fn as_str(&self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

/// Who acted: the accountable human and the machine principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub examiner: String,
    pub principal_arn: String,
    pub account: AccountId,
    pub session_name: String,
}

/// The tool that acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of the running binary.
    pub binary_sha256: String,
}

/// The machine the tool ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub arch: String,
}

impl HostInfo {
    pub fn current() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into());
        Self { hostname, os: std::env::consts::OS.into(), arch: std::env::consts::ARCH.into() }
    }
}

/// An evidence item touched by an event: its digest and where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRef {
    pub id: String,
    pub sha256: String,
    pub s3_key: String,
    pub version_id: Option<String>,
}

/// What a caller records; the case adds sequence, time, actor, host, tool and chain.
#[derive(Debug, Clone)]
pub struct CustodyEvent {
    pub action: Action,
    /// ARN or id of what the event is about.
    pub subject: String,
    pub evidence: Vec<EvidenceRef>,
    pub aws_request_ids: Vec<String>,
    pub details: serde_json::Value,
}

/// One custody record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustodyRecord {
    pub schema: String,
    pub seq: u64,
    pub case: String,
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    pub clock: String,
    pub actor: Actor,
    pub host: HostInfo,
    pub tool: ToolInfo,
    pub action: Action,
    pub subject: String,
    pub evidence: Vec<EvidenceRef>,
    pub aws_request_ids: Vec<String>,
    pub details: serde_json::Value,
    /// `hash` of record `seq - 1`; None only for seq 1.
    pub prev: Option<String>,
    /// `sha256:` of the canonical bytes of this record without `hash` and `signature`.
    pub hash: String,
    /// The signing key's signature over (case, seq, hash); absent when the case has
    /// no signing key (integrity only: anyone who can write the bucket could have
    /// written the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<RecordSignature>,
}

/// A record's signature: which key, and the signature itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSignature {
    /// The KMS key's ARN (informative: the check is against a trusted key, by fingerprint).
    pub key_id: String,
    /// `sha256:` of the DER public key that checks the signature.
    pub public_key_sha256: String,
    pub algorithm: String,
    /// Base64 DER ECDSA signature over `signing::Signed::record(case, seq, hash)`.
    pub value: String,
    /// The KMS Sign request id (ties the signature to CloudTrail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The receipt for a recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustodyReceipt {
    pub seq: u64,
    pub hash: String,
    pub s3_key: String,
    pub version_id: Option<String>,
}

/// Canonical JSON (RFC 8785) of any value.
pub fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    serde_jcs::to_vec(value).expect("custody values serialise (no maps with non-string keys)")
}

impl CustodyRecord {
    /// The hash this record must carry: over its canonical form without `hash` and
    /// `signature` (the signature signs the hash).
    pub fn compute_hash(&self) -> String {
        let mut v = serde_json::to_value(self).expect("records serialise");
        if let Some(o) = v.as_object_mut() {
            o.remove("hash");
            o.remove("signature");
        }
        sha256_tagged(&canonical(&v))
    }

    /// Sets `hash` (the signature, if any, stays as it is) and returns the canonical
    /// bytes to store.
    pub fn seal(mut self) -> (Self, Vec<u8>) {
        self.hash = self.compute_hash();
        let bytes = canonical(&self);
        (self, bytes)
    }

    /// The canonical bytes as stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical(self)
    }
}

/// A problem found in the chain, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainFinding {
    pub seq: Option<u64>,
    pub key: String,
    pub problem: String,
}

/// Checks one stored record: parses, canonical, hash, case, seq matches its key.
/// Returns the record when it can be parsed (even if other checks fail). Its
/// signature is checked apart, against a trusted key (`signing::TrustedKey`).
pub fn check_record(
    case: &CaseId,
    key: &str,
    bytes: &[u8],
    findings: &mut Vec<ChainFinding>,
) -> Option<CustodyRecord> {
    let seq = layout::custody_seq(case, key);
    let mut find = |problem: String| findings.push(ChainFinding { seq, key: key.to_owned(), problem });
    let record: CustodyRecord = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => {
            find(format!("not a custody record: {e}"));
            return None;
        }
    };
    if record.schema == SCHEMA_UNSIGNED && record.signature.is_some() {
        find(format!("schema {SCHEMA_UNSIGNED} has no signatures, but this record has one"));
    } else if record.schema != SCHEMA && record.schema != SCHEMA_UNSIGNED {
        find(format!("unknown schema {:?}", record.schema));
    }
    let computed = record.compute_hash();
    if computed != record.hash {
        find(format!(
            "content does not match its hash: recorded {}, computed {computed} (record edited)",
            record.hash
        ));
    } else if canonical(&record) != bytes {
        find("bytes are not the canonical (RFC 8785) form of the record (re-serialised or edited)".into());
    }
    if record.case != case.as_str() {
        find(format!("belongs to case {:?}, not {:?}", record.case, case.as_str()));
    }
    if Some(record.seq) != seq {
        find(format!("says seq {} but is stored as {key} (records moved or swapped)", record.seq));
    }
    Some(record)
}

/// Checks the links of an ordered run of records (by key order): gap-free from 1,
/// each `prev` the previous record's `hash`.
pub fn check_links(
    case: &CaseId,
    records: &[(u64, Option<CustodyRecord>)],
    findings: &mut Vec<ChainFinding>,
) {
    let mut expected = 1u64;
    let mut prev_hash: Option<String> = None;
    for (seq, record) in records {
        if *seq != expected {
            findings.push(ChainFinding {
                seq: Some(expected),
                key: layout::custody_record(case, expected),
                problem: if *seq > expected {
                    format!("missing: records {expected}..{} absent (deleted)", seq - 1)
                } else {
                    format!("duplicate sequence number {seq}")
                },
            });
        }
        expected = seq + 1;
        if let Some(r) = record {
            if *seq > 1 && prev_hash.is_some() && r.prev != prev_hash {
                findings.push(ChainFinding {
                    seq: Some(*seq),
                    key: layout::custody_record(case, *seq),
                    problem: format!(
                        "prev is {} but record {} hashes to {} (chain broken: inserted, removed or reordered)",
                        r.prev.as_deref().unwrap_or("null"),
                        seq - 1,
                        prev_hash.as_deref().unwrap_or("?")
                    ),
                });
            }
            if *seq == 1 && r.prev.is_some() {
                findings.push(ChainFinding {
                    seq: Some(1),
                    key: layout::custody_record(case, 1),
                    problem: "first record has a prev (records before it removed?)".into(),
                });
            }
            prev_hash = Some(r.hash.clone());
        } else {
            prev_hash = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(seq: u64, prev: Option<String>) -> CustodyRecord {
        CustodyRecord {
            schema: SCHEMA.into(),
            seq,
            case: "IR-1".into(),
            time: "2026-01-01T00:00:00.000Z".into(),
            clock: CLOCK_SOURCE.into(),
            actor: Actor {
                examiner: "Ada".into(),
                principal_arn: "arn:aws:sts::111122223333:assumed-role/R/s".into(),
                account: "111122223333".parse().unwrap(),
                session_name: "s".into(),
            },
            host: HostInfo { hostname: "h".into(), os: "linux".into(), arch: "x86_64".into() },
            tool: ToolInfo {
                name: "cleanroom".into(),
                version: "0".into(),
                binary_sha256: sha256_tagged(b"bin"),
            },
            action: Action::Verified,
            subject: "case".into(),
            evidence: vec![],
            aws_request_ids: vec!["req-1".into()],
            details: serde_json::json!({"b": 1, "a": "é"}),
            prev,
            hash: String::new(),
            signature: None,
        }
    }

    fn ir1() -> CaseId {
        "IR-1".parse().unwrap()
    }

    fn chain(n: u64) -> Vec<(u64, Option<CustodyRecord>)> {
        let mut out = Vec::new();
        let mut prev = None;
        for seq in 1..=n {
            let (r, _) = sample(seq, prev.clone()).seal();
            prev = Some(r.hash.clone());
            out.push((seq, Some(r)));
        }
        out
    }

    #[test]
    fn sealed_record_checks_clean_and_is_canonical() {
        let (r, bytes) = sample(1, None).seal();
        let mut f = Vec::new();
        assert_eq!(check_record(&ir1(), &layout::custody_record(&ir1(), 1), &bytes, &mut f), Some(r));
        assert!(f.is_empty(), "{f:?}");
        // Keys sorted, no whitespace.
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("{\"action\":\"verified\",\"actor\":"), "{text}");
    }

    #[test]
    fn one_flipped_byte_is_found() {
        let (_, mut bytes) = sample(1, None).seal();
        let i = bytes.iter().position(|&b| b == b'A').unwrap();
        bytes[i] = b'B';
        let mut f = Vec::new();
        check_record(&ir1(), &layout::custody_record(&ir1(), 1), &bytes, &mut f);
        assert!(f[0].problem.contains("does not match its hash"), "{f:?}");
    }

    #[test]
    fn gap_and_broken_link_are_found() {
        let mut c = chain(4);
        c.remove(2);
        let mut f = Vec::new();
        check_links(&ir1(), &c, &mut f);
        assert!(f.iter().any(|x| x.seq == Some(3) && x.problem.starts_with("missing")), "{f:?}");

        let mut c = chain(3);
        let (forged, _) = sample(2, Some("sha256:00".into())).seal();
        c[1].1 = Some(forged);
        let mut f = Vec::new();
        check_links(&ir1(), &c, &mut f);
        assert!(f.iter().any(|x| x.seq == Some(2)) && f.iter().any(|x| x.seq == Some(3)), "{f:?}");
    }

    #[test]
    fn the_hash_leaves_the_signature_out_and_unsigned_schema_1_still_reads() {
        let (r, _) = sample(1, None).seal();
        let mut signed = r.clone();
        signed.signature = Some(RecordSignature {
            key_id: "k".into(),
            public_key_sha256: "sha256:00".into(),
            algorithm: "ECDSA_SHA_256".into(),
            value: "AA==".into(),
            request_id: None,
        });
        assert_eq!(signed.compute_hash(), r.hash);
        let mut f = Vec::new();
        check_record(&ir1(), &layout::custody_record(&ir1(), 1), &signed.to_bytes(), &mut f);
        assert!(f.is_empty(), "{f:?}");

        let mut v1 = sample(1, None);
        v1.schema = SCHEMA_UNSIGNED.into();
        let (v1, bytes) = v1.seal();
        check_record(&ir1(), &layout::custody_record(&ir1(), 1), &bytes, &mut f);
        assert!(f.is_empty(), "{f:?}");
        let mut v1_signed = v1;
        v1_signed.signature = signed.signature;
        check_record(&ir1(), &layout::custody_record(&ir1(), 1), &v1_signed.to_bytes(), &mut f);
        assert!(f.iter().any(|x| x.problem.contains("has no signatures")), "{f:?}");
    }
}
