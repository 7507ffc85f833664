//! Signed checkpoints over the custody chain, after CloudTrail's digest files: the
//! chain head (case, seq, hash) is signed with an asymmetric KMS key (ECDSA P-256,
//! ECDSA_SHA_256); the public key is stored in the case, so verification needs
//! nothing but that key, offline.
//!
//! The signed message is the canonical JSON of [`Signed`] (about 150 bytes), sent as
//! message type RAW: KMS hashes it with SHA-256 and signs, which is exactly what
//! `openssl dgst -sha256 -verify` checks. Signing our own SHA-256 as type DIGEST would
//! give the same signature on AWS, but moto 5.2.5 ignores DIGEST and hashes again.

use async_trait::async_trait;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};

use super::case::{Case, ChainHead};
use super::custody::{Action, CustodyEvent, CustodyReceipt, EvidenceRef, canonical};
use super::digest::{b64, sha256_raw, sha256_tagged};
use super::error::EvidenceError;

pub const CHECKPOINT_PURPOSE: &str = "cleanroom.checkpoint/1";
pub const ALGORITHM: &str = "ECDSA_SHA_256";

/// Signs digests with a key whose private half never leaves its keeper (KMS).
#[async_trait]
pub trait Signer: Send + Sync {
    /// The key's ARN or id, recorded with the signature.
    fn key_id(&self) -> String;
    /// The public key, DER SubjectPublicKeyInfo.
    async fn public_key_der(&self) -> Result<Vec<u8>, EvidenceError>;
    /// An ECDSA P-256 / SHA-256 signature (DER) over `message`; and the request id.
    async fn sign_message(&self, message: &[u8]) -> Result<(Vec<u8>, Option<String>), EvidenceError>;
}

/// What a checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub purpose: String,
    pub case: String,
    pub seq: u64,
    pub hash: String,
}

impl Signed {
    /// The bytes signed: canonical JSON.
    pub fn message(&self) -> Vec<u8> {
        canonical(self)
    }

    pub fn digest(&self) -> Vec<u8> {
        sha256_raw(&self.message())
    }
}

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

/// Checks a checkpoint's signature against a PEM or DER public key.
pub fn verify_signature(details: &CheckpointDetails, public_key: &[u8]) -> Result<(), String> {
    let key = match std::str::from_utf8(public_key) {
        Ok(pem) if pem.contains("BEGIN PUBLIC KEY") => {
            VerifyingKey::from_public_key_pem(pem).map_err(|e| e.to_string())?
        }
        _ => VerifyingKey::from_public_key_der(public_key).map_err(|e| e.to_string())?,
    };
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &details.signature)
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let sig = Signature::from_der(&der).map_err(|e| format!("signature is not DER ECDSA: {e}"))?;
    key.verify_prehash(&details.signed.digest(), &sig).map_err(|_| "signature does not verify".to_owned())
}

/// `sha256:` of the DER form of a PEM or DER public key.
pub fn fingerprint(public_key: &[u8]) -> Result<String, String> {
    let key = match std::str::from_utf8(public_key) {
        Ok(pem) if pem.contains("BEGIN PUBLIC KEY") => {
            VerifyingKey::from_public_key_pem(pem).map_err(|e| e.to_string())?
        }
        _ => VerifyingKey::from_public_key_der(public_key).map_err(|e| e.to_string())?,
    };
    let der = key.to_public_key_der().map_err(|e| e.to_string())?;
    Ok(sha256_tagged(der.as_bytes()))
}

/// PEM of a DER public key.
pub fn pem_of(der: &[u8]) -> Result<String, String> {
    let key =
        VerifyingKey::from_public_key_der(der).map_err(|e| format!("not an EC P-256 public key: {e}"))?;
    key.to_public_key_pem(LineEnding::LF).map_err(|e| e.to_string())
}

impl Case {
    /// Signs the current chain head and records `checkpoint_signed`.
    pub async fn checkpoint(&self, signer: &dyn Signer) -> Result<CustodyReceipt, EvidenceError> {
        let head: ChainHead = match self.head().await {
            Some(h) => h,
            None => {
                return Err(EvidenceError::Signing {
                    key: signer.key_id(),
                    message: "the chain is empty".into(),
                });
            }
        };
        let der = signer.public_key_der().await?;
        let pem = pem_of(&der).map_err(|message| EvidenceError::Signing { key: signer.key_id(), message })?;
        let fingerprint = sha256_tagged(&der);
        let relative = format!("keys/{}.pem", &fingerprint["sha256:".len().."sha256:".len() + 16]);
        let key_ref = self.store_public_key(&relative, pem.into_bytes()).await?;
        let signed = Signed {
            purpose: CHECKPOINT_PURPOSE.into(),
            case: self.id().to_string(),
            seq: head.seq,
            hash: head.hash,
        };
        let (signature, request_id) = signer.sign_message(&signed.message()).await?;
        let details = CheckpointDetails {
            signed,
            key_id: signer.key_id(),
            algorithm: ALGORITHM.into(),
            message_type: "RAW".into(),
            signature: b64(&signature),
            public_key_sha256: fingerprint,
            public_key_s3_key: key_ref.s3_key.clone(),
        };
        verify_signature(&details, &der)
            .map_err(|message| EvidenceError::Signing { key: signer.key_id(), message })?;
        self.record(CustodyEvent {
            action: Action::CheckpointSigned,
            subject: signer.key_id(),
            evidence: vec![key_ref],
            aws_request_ids: request_id.into_iter().collect(),
            details: serde_json::to_value(&details).expect("details serialise"),
        })
        .await
    }

    async fn store_public_key(&self, relative: &str, pem: Vec<u8>) -> Result<EvidenceRef, EvidenceError> {
        let key = format!("cases/{}/{relative}", self.id());
        let lock = self.lock_now_pub();
        let stored = super::upload::store_bytes(
            self.store().as_ref(),
            relative,
            &key,
            pem.into(),
            "application/x-pem-file",
            lock,
        )
        .await?;
        Ok(EvidenceRef {
            id: relative.into(),
            sha256: stored.digests.sha256,
            s3_key: key,
            version_id: stored.version_id,
        })
    }
}

/// A signer holding a P-256 key in memory: for tests and the fake store only.
pub struct LocalSigner {
    key: p256::ecdsa::SigningKey,
}

impl LocalSigner {
    pub fn from_seed(seed: u8) -> Self {
        let mut bytes = [0u8; 32];
        bytes[31] = seed.max(1);
        bytes[0] = 0x11;
        Self { key: p256::ecdsa::SigningKey::from_bytes(&bytes.into()).expect("a valid scalar") }
    }
}

#[async_trait]
impl Signer for LocalSigner {
    fn key_id(&self) -> String {
        "local-test-key".into()
    }
    async fn public_key_der(&self) -> Result<Vec<u8>, EvidenceError> {
        Ok(self
            .key
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| EvidenceError::Signing { key: self.key_id(), message: e.to_string() })?
            .into_vec())
    }
    async fn sign_message(&self, message: &[u8]) -> Result<(Vec<u8>, Option<String>), EvidenceError> {
        use p256::ecdsa::signature::Signer as _;
        let sig: Signature = self
            .key
            .try_sign(message)
            .map_err(|e| EvidenceError::Signing { key: self.key_id(), message: e.to_string() })?;
        Ok((sig.to_der().as_bytes().to_vec(), None))
    }
}
