//! A signer holding a P-256 key in memory, standing in for the KMS signing key in
//! tests with the fake store. Never for evidence: its private key is in the process.

use async_trait::async_trait;
use p256::ecdsa::Signature;
use p256::pkcs8::EncodePublicKey;

use crate::evidence::EvidenceError;
use crate::evidence::checkpoint::Signer;

pub struct LocalSigner {
    key: p256::ecdsa::SigningKey,
    key_id: String,
}

impl LocalSigner {
    /// A deterministic key per seed: the same seed is the same key (and key id).
    pub fn from_seed(seed: u8) -> Self {
        let mut bytes = [0u8; 32];
        bytes[31] = seed.max(1);
        bytes[0] = 0x11;
        Self {
            key: p256::ecdsa::SigningKey::from_bytes(&bytes.into()).expect("a valid scalar"),
            key_id: format!("local-test-key-{}", seed.max(1)),
        }
    }

    /// The public key, PEM (what a user would be handed out of band).
    pub fn public_key_pem(&self) -> String {
        self.key
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("a P-256 key encodes as PEM")
    }
}

#[async_trait]
impl Signer for LocalSigner {
    fn key_id(&self) -> String {
        self.key_id.clone()
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
