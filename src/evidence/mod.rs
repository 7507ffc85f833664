//! The evidence layer every stage writes through: a case in the evidence bucket, its
//! hash-chained, signed custody log, its evidence items (locked, checksummed, read
//! back) and its manifest. Where each object lives is [`layout`]'s to say.
//!
//! ```text
//! cases/<case>/case.json                 who opened it, when, config digest, tool
//! cases/<case>/custody/<seq>.json        one record per event, RFC 8785, chained, signed
//! cases/<case>/evidence/<account>/<subject>/[<sub>/]<name>
//! cases/<case>/manifest.json             every item and the custody head (versions)
//! cases/<case>/keys/<sha256>.pem         public key the records are signed with
//! cases/<case>/report/report.html|md|json
//! cases/<case>/journal/<entry>.json      the operational journal
//! ```

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub mod case;
pub mod checkpoint;
pub mod custody;
pub mod digest;
pub mod error;
pub mod folder;
pub mod layout;
pub mod signing;
pub mod store;
pub mod upload;

pub use case::{Case, CaseFile, ChainHead, Manifest, ManifestItem, NewItem, Retention};
pub use custody::{
    Action, Actor, CustodyEvent, CustodyReceipt, CustodyRecord, EvidenceRef, HostInfo, RecordSignature,
    ToolInfo,
};
pub use error::EvidenceError;
pub use store::{LockMode, ObjectStore};

use crate::config::Config;
use crate::ids::CaseId;

/// The running tool: name, version and the SHA-256 of its own binary.
pub fn tool_info() -> ToolInfo {
    let binary_sha256 = std::env::current_exe()
        .and_then(|p| {
            use std::io::Read;
            let mut f = std::fs::File::open(p)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok::<_, std::io::Error>(digest::tagged("sha256", &h.finalize()))
        })
        .unwrap_or_else(|e| format!("unavailable: {e}"));
    ToolInfo { name: env!("CARGO_PKG_NAME").into(), version: env!("CARGO_PKG_VERSION").into(), binary_sha256 }
}

/// `sha256:` of the configuration in force (its canonical JSON form).
pub fn config_digest(config: &Config) -> String {
    digest::sha256_tagged(&custody::canonical(config))
}

/// The S3 store on the configured evidence bucket, through the forensics account.
pub async fn evidence_store(aws: &crate::aws::Aws, config: &Config) -> Arc<dyn ObjectStore> {
    let clients = aws.forensics().await;
    Arc::new(crate::aws::s3::S3Store::new(clients.s3.clone(), config.forensics.evidence_bucket.clone()))
}

/// The configured signing key as a trusted key (KMS GetPublicKey of
/// `signing_key_arn`), or None when none is configured.
pub async fn configured_key(
    aws: &crate::aws::Aws,
    config: &Config,
) -> Result<Option<signing::TrustedKey>, EvidenceError> {
    let Some(arn) = &config.forensics.signing_key_arn else { return Ok(None) };
    let clients = aws.forensics().await;
    let signer = crate::aws::kms::KmsSigner::new(clients.kms.clone(), arn.clone());
    let der = signing::Signer::public_key_der(&signer).await?;
    let key =
        signing::TrustedKey::from_bytes(&der, signing::KeySource::Configured { key_id: arn.to_string() })
            .map_err(|message| EvidenceError::Signing { key: arn.to_string(), message })?;
    Ok(Some(key))
}

/// Opens (or creates) `case` in the configured evidence bucket, as the caller STS
/// names, with COMPLIANCE retention of `retention_days` on everything written, every
/// record signed with the configured `signing_key_arn`. Without a signing key the case
/// still opens (containment must not wait for a key), with a loud warning: its records
/// prove integrity only, and anyone who can write to the bucket could forge them.
pub async fn open_case(
    aws: &crate::aws::Aws,
    config: &Config,
    case: &CaseId,
    examiner: &str,
) -> Result<Case, crate::error::Error> {
    let clients = aws.forensics().await;
    let signer = config.forensics.signing_key_arn.as_ref().map(|arn| {
        Arc::new(crate::aws::kms::KmsSigner::new(clients.kms.clone(), arn.clone()))
            as Arc<dyn signing::Signer>
    });
    // Who the caller is (STS), the binary's digest (a read of the whole binary) and the
    // signing key (KMS), at once: each is one round trip or more on AWS.
    let (who, tool, signing) = futures::join!(
        crate::aws::identity::caller_identity(&clients.sts),
        tokio::task::spawn_blocking(tool_info),
        async {
            match signer {
                Some(s) => signing::CaseSigner::new(s).await.map(Some),
                None => Ok(None),
            }
        }
    );
    let who = who.map_err(crate::error::Error::failed)?;
    let tool = tool.map_err(|e| crate::error::Error::failed(format!("hashing the cleanroom binary: {e}")))?;
    let signing = signing?;
    let actor = Actor {
        examiner: examiner.into(),
        principal_arn: who.arn,
        account: who.account,
        session_name: aws.session_name().into(),
    };
    let store = evidence_store(aws, config).await;
    let retention = Retention::explicit(LockMode::Compliance, config.forensics.retention_days);
    if signing.is_none() {
        tracing::warn!(
            case = %case,
            "NO SIGNING KEY CONFIGURED: the custody records of this case are not signed; anyone who can write to the evidence bucket could forge them, and `verify` can prove integrity only (set forensics.signing_key_arn)"
        );
    }
    Ok(Case::open_inner(store, case, actor, tool, config_digest(config), retention, signing).await?)
}
