//! Signed checkpoints over the custody chain, after CloudTrail's digest files: a
//! `checkpoint_signed` record carries the signing key's signature over the record
//! right before it (case, seq, hash), so one `openssl dgst -verify` with the public key
//! checks the whole chain up to there. Every record is signed as well (`signing.rs`);
//! a checkpoint is the explicit, self-contained statement "at this point the chain
//! was this", written by `verify`.
//!
//! A checkpoint is checked against a trusted key (the configuration's, or one the user
//! gave), never against a key the case or the record names, and it must sign the
//! record right before it: an old checkpoint replayed later signs the wrong record.

use serde::{Deserialize, Serialize};

pub use super::signing::{ALGORITHM, CHECKPOINT_PURPOSE, Signed, Signer, TrustedKey, fingerprint};

/// The `details` of a `checkpoint_signed` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointDetails {
    pub signed: Signed,
    pub key_id: String,
    pub algorithm: String,
    pub message_type: String,
    /// Base64 DER ECDSA signature.
    pub signature: String,
    /// `sha256:` of the DER public key.
    pub public_key_sha256: String,
    pub public_key_s3_key: String,
}

/// Why a checkpoint record at `seq` does not hold, given the hash of the record
/// before it and a trusted key (None: the signature cannot be judged).
pub fn check_checkpoint(
    case: &crate::ids::CaseId,
    seq: u64,
    details: &CheckpointDetails,
    previous_hash: Option<&str>,
    key: Option<&TrustedKey>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let s = &details.signed;
    if s.purpose != CHECKPOINT_PURPOSE {
        problems.push(format!("signs a {:?} statement, not a checkpoint", s.purpose));
    }
    if s.case != case.as_str() {
        problems.push(format!("signs case {:?}, not {:?}", s.case, case.as_str()));
    }
    if s.seq + 1 != seq || previous_hash != Some(s.hash.as_str()) {
        problems.push(format!(
            "signs record {} ({}), but the record before it is {} ({}): an old checkpoint replayed, or the chain changed under it",
            s.seq,
            s.hash,
            seq.saturating_sub(1),
            previous_hash.unwrap_or("absent")
        ));
    }
    if let Some(key) = key {
        if details.public_key_sha256 != key.fingerprint {
            problems.push(format!(
                "signed by key {} ({}), not the trusted key {}",
                details.public_key_sha256, details.key_id, key.fingerprint
            ));
        } else if let Err(e) = key.verify(s, &details.signature) {
            problems.push(e);
        }
    }
    problems
}
