//! KMS: the asymmetric key (ECC_NIST_P256, SIGN_VERIFY) that signs custody checkpoints.

use async_trait::async_trait;
use aws_sdk_kms::operation::RequestId;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};

use crate::cloud::CloudError;
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
            .map_err(|e| self.fail(CloudError::from_sdk("kms", "GetPublicKey", e)))?;
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
            .map_err(|e| self.fail(CloudError::from_sdk("kms", "Sign", e)))?;
        let sig = out.signature().ok_or_else(|| self.fail("Sign response has no Signature"))?;
        Ok((sig.as_ref().to_vec(), out.request_id().map(str::to_owned)))
    }
}

#[async_trait]
impl crate::cloud::Kms for super::AccountClients {
    async fn describe_key(&self, key: &str) -> crate::cloud::CloudResult<Option<crate::cloud::KeyInfo>> {
        match self.kms.describe_key().key_id(key).send().await {
            Ok(out) => {
                let meta = out
                    .key_metadata()
                    .ok_or_else(|| crate::cloud::missing("kms", "DescribeKey", "KeyMetadata"))?;
                Ok(Some(crate::cloud::KeyInfo {
                    arn: meta.arn().unwrap_or(meta.key_id()).to_owned(),
                    manager: meta
                        .key_manager()
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_else(|| "CUSTOMER".into()),
                    state: meta.key_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                }))
            }
            Err(e) => {
                let e = CloudError::from_sdk("kms", "DescribeKey", e);
                if e.is(crate::cloud::ErrorKind::NotFound) { Ok(None) } else { Err(e) }
            }
        }
    }
}
