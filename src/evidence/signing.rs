//! Authenticity: every custody record is signed with the case's signing key (an
//! asymmetric KMS key, ECDSA P-256, whose private half never leaves KMS), and checked
//! against a key the checker trusts for a reason other than finding it in the case.
//!
//! What is signed, for a record and for a checkpoint alike, is the canonical JSON of
//! [`Signed`]: `{"case","hash","purpose","seq"}` (about 150 bytes), sent to KMS as
//! message type RAW: KMS hashes it with SHA-256 and signs, which is exactly what
//! `openssl dgst -sha256 -verify key.pem -signature sig.der signed.json` checks.
//! (Signing our own SHA-256 as message type DIGEST gives the same signature on AWS,
//! but moto 5.2.5 ignores DIGEST and hashes again.) `purpose` keeps a record signature
//! from being replayed as a checkpoint and back; `case` and `seq` keep it from being
//! replayed at another place; `hash` covers every other field of the record,
//! including `prev`, so the signature of record N also vouches for records 1..N-1.

use async_trait::async_trait;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};

use super::custody::{CustodyRecord, RecordSignature, canonical};
use super::digest::{sha256_raw, sha256_tagged};
use super::error::EvidenceError;
use crate::ids::CaseId;

/// The one signing algorithm: ECDSA on P-256 over SHA-256 (KMS `ECDSA_SHA_256`).
pub const ALGORITHM: &str = "ECDSA_SHA_256";
/// `purpose` of a record signature.
pub const RECORD_PURPOSE: &str = "cleanroom.custody-record/1";
/// `purpose` of a checkpoint signature.
pub const CHECKPOINT_PURPOSE: &str = "cleanroom.checkpoint/1";

/// Signs messages with a key whose private half never leaves its keeper (KMS).
#[async_trait]
pub trait Signer: Send + Sync {
    /// The key's ARN or id, recorded with each signature.
    fn key_id(&self) -> String;
    /// The public key, DER SubjectPublicKeyInfo.
    async fn public_key_der(&self) -> Result<Vec<u8>, EvidenceError>;
    /// An ECDSA P-256 / SHA-256 signature (DER) over `message`; and the request id.
    async fn sign_message(&self, message: &[u8]) -> Result<(Vec<u8>, Option<String>), EvidenceError>;
}

/// What a signature signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub purpose: String,
    pub case: String,
    pub seq: u64,
    pub hash: String,
}

impl Signed {
    /// The statement that record `seq` of `case` has hash `hash`.
    pub fn record(case: &CaseId, seq: u64, hash: &str) -> Self {
        Self { purpose: RECORD_PURPOSE.into(), case: case.to_string(), seq, hash: hash.into() }
    }

    /// The statement that the chain of `case` had head `seq` / `hash`.
    pub fn checkpoint(case: &CaseId, seq: u64, hash: &str) -> Self {
        Self { purpose: CHECKPOINT_PURPOSE.into(), case: case.to_string(), seq, hash: hash.into() }
    }

    /// The bytes signed: canonical JSON.
    pub fn message(&self) -> Vec<u8> {
        canonical(self)
    }

    pub fn digest(&self) -> Vec<u8> {
        sha256_raw(&self.message())
    }
}

/// Where a trusted key came from: what makes it trustworthy, said in the verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeySource {
    /// KMS GetPublicKey of the configuration's `signing_key_arn`.
    Configured { key_id: String },
    /// A file the user gave (`--public-key`), obtained out of band.
    File { path: String },
    /// The key stored in the case itself (`--trust-case-key`): not independent of it.
    CaseFolder { key: String },
    /// The signer of the running process (what it signs with, it checks against).
    Signer { key_id: String },
}

impl KeySource {
    /// False when the key comes from the data being checked.
    pub fn independent(&self) -> bool {
        !matches!(self, KeySource::CaseFolder { .. })
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Configured { key_id } => write!(f, "the configured signing key {key_id}"),
            KeySource::File { path } => write!(f, "the public key given in {path}"),
            KeySource::CaseFolder { key } => {
                write!(f, "the key stored in the case itself ({key}), not given independently")
            }
            KeySource::Signer { key_id } => write!(f, "the signing key {key_id}"),
        }
    }
}

/// A public key trusted to vouch for records, with its fingerprint and its source.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    key: VerifyingKey,
    /// `sha256:` of the DER SubjectPublicKeyInfo.
    pub fingerprint: String,
    pub source: KeySource,
}

impl TrustedKey {
    /// From a PEM or DER public key.
    pub fn from_bytes(bytes: &[u8], source: KeySource) -> Result<Self, String> {
        let key = parse_public_key(bytes)?;
        let der = key.to_public_key_der().map_err(|e| e.to_string())?;
        Ok(Self { key, fingerprint: sha256_tagged(der.as_bytes()), source })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn der(&self) -> Vec<u8> {
        self.key.to_public_key_der().map(|d| d.into_vec()).unwrap_or_default()
    }

    /// The PEM form, as stored in the case and given to `openssl`.
    pub fn pem(&self) -> String {
        self.key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Checks a DER signature over `signed`.
    pub fn verify(&self, signed: &Signed, signature_b64: &str) -> Result<(), String> {
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, signature_b64)
            .map_err(|e| format!("signature is not base64: {e}"))?;
        let sig = Signature::from_der(&der).map_err(|e| format!("signature is not DER ECDSA: {e}"))?;
        self.key
            .verify_prehash(&signed.digest(), &sig)
            .map_err(|_| format!("signature does not verify with the trusted key {}", self.fingerprint))
    }

    /// Why `record` (of `case`) is not vouched for by this key, if it is not: the
    /// signature must name this key and verify over the record's own content.
    pub fn authenticate(&self, case: &CaseId, record: &CustodyRecord) -> Result<(), String> {
        let Some(sig) = &record.signature else {
            return Err(format!("not signed (the trusted key is {})", self.fingerprint));
        };
        if sig.algorithm != ALGORITHM {
            return Err(format!("signature algorithm {:?} is not {ALGORITHM}", sig.algorithm));
        }
        if sig.public_key_sha256 != self.fingerprint {
            return Err(format!(
                "signed by key {} ({}), not the trusted key {}",
                sig.public_key_sha256, sig.key_id, self.fingerprint
            ));
        }
        // The signature is over the hash the content computes to, never over the
        // `hash` field alone: an edited record keeping its old hash fails here too.
        let computed = record.compute_hash();
        self.verify(&Signed::record(case, record.seq, &computed), &sig.value)
    }
}

/// Parses a PEM or DER P-256 public key.
pub fn parse_public_key(bytes: &[u8]) -> Result<VerifyingKey, String> {
    match std::str::from_utf8(bytes) {
        Ok(pem) if pem.contains("BEGIN PUBLIC KEY") => {
            VerifyingKey::from_public_key_pem(pem).map_err(|e| format!("not an EC P-256 public key: {e}"))
        }
        _ => VerifyingKey::from_public_key_der(bytes).map_err(|e| format!("not an EC P-256 public key: {e}")),
    }
}

/// `sha256:` of the DER form of a PEM or DER public key.
pub fn fingerprint(public_key: &[u8]) -> Result<String, String> {
    TrustedKey::from_bytes(public_key, KeySource::File { path: String::new() }).map(|k| k.fingerprint)
}

/// Signs `signed` (base64 DER, and the request id) and checks the signature with
/// `key` before anything relies on it: a signer answering with another key or garbage
/// must not produce records nobody can verify.
pub(crate) async fn sign_checked(
    signer: &dyn Signer,
    key: &TrustedKey,
    signed: &Signed,
) -> Result<(String, Option<String>), EvidenceError> {
    let (der, request_id) = signer.sign_message(&signed.message()).await?;
    let value = super::digest::b64(&der);
    key.verify(signed, &value).map_err(|message| EvidenceError::Signing { key: signer.key_id(), message })?;
    Ok((value, request_id))
}

/// A signer and the public key it signs with (fetched once, when the case opens).
#[derive(Clone)]
pub(crate) struct CaseSigner {
    pub signer: std::sync::Arc<dyn Signer>,
    pub key: TrustedKey,
}

impl CaseSigner {
    pub async fn new(signer: std::sync::Arc<dyn Signer>) -> Result<Self, EvidenceError> {
        let der = signer.public_key_der().await?;
        let key = TrustedKey::from_bytes(&der, KeySource::Signer { key_id: signer.key_id() })
            .map_err(|message| EvidenceError::Signing { key: signer.key_id(), message })?;
        Ok(Self { signer, key })
    }

    pub async fn sign(&self, signed: &Signed) -> Result<(String, Option<String>), EvidenceError> {
        sign_checked(self.signer.as_ref(), &self.key, signed).await
    }

    /// The signature block of a record with this hash.
    pub async fn sign_record(
        &self,
        case: &CaseId,
        seq: u64,
        hash: &str,
    ) -> Result<RecordSignature, EvidenceError> {
        let (value, request_id) = self.sign(&Signed::record(case, seq, hash)).await?;
        Ok(RecordSignature {
            key_id: self.signer.key_id(),
            public_key_sha256: self.key.fingerprint.clone(),
            algorithm: ALGORITHM.into(),
            value,
            request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_message_is_canonical_json_openssl_can_check() {
        let case: CaseId = "IR-1".parse().unwrap();
        let s = Signed::record(&case, 3, "sha256:ab");
        assert_eq!(
            String::from_utf8(s.message()).unwrap(),
            r#"{"case":"IR-1","hash":"sha256:ab","purpose":"cleanroom.custody-record/1","seq":3}"#
        );
        assert_ne!(s.message(), Signed::checkpoint(&case, 3, "sha256:ab").message());
    }
}
