//! KMS: the asymmetric key (ECC_NIST_P256, SIGN_VERIFY) that signs custody checkpoints.

use async_trait::async_trait;
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};

use super::AwsError;
use crate::evidence::EvidenceError;
use crate::evidence::checkpoint::Signer;
use crate::ids::KmsKeyArn;

pub struct KmsSigner {
    client: aws_sdk_kms::Client,
    key: KmsKeyArn,
}

impl KmsSigner {
    pub fn new(client: aws_sdk_kms::Client, key: KmsKeyArn) -> Self {
        Self { client, key }
    }

    fn fail(&self, e: impl std::fmt::Display) -> EvidenceError {
        EvidenceError::Signing { key: self.key.to_string(), message: e.to_string() }
    }
}

#[async_trait]
impl Signer for KmsSigner {
    fn key_id(&self) -> String {
        self.key.to_string()
    }

    async fn public_key_der(&self) -> Result<Vec<u8>, EvidenceError> {
        let out = self
            .client
            .get_public_key()
            .key_id(self.key.as_str())
            .send()
            .await
            .map_err(|e| self.fail(AwsError::from_sdk("kms", "GetPublicKey", e)))?;
        let key = out.public_key().ok_or_else(|| self.fail("GetPublicKey response has no PublicKey"))?;
        Ok(key.as_ref().to_vec())
    }

    async fn sign_message(&self, message: &[u8]) -> Result<(Vec<u8>, Option<String>), EvidenceError> {
        let out = self
            .client
            .sign()
            .key_id(self.key.as_str())
            .message(Blob::new(message.to_vec()))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| self.fail(AwsError::from_sdk("kms", "Sign", e)))?;
        let sig = out.signature().ok_or_else(|| self.fail("Sign response has no Signature"))?;
        Ok((sig.as_ref().to_vec(), out.request_id().map(str::to_owned)))
    }
}
