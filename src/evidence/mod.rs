//! The evidence layer every stage writes through: a case in the evidence bucket, its
//! hash-chained custody log, its evidence items (locked, checksummed, read back) and
//! its manifest.
//!
//! ```text
//! cases/<case>/case.json                 who opened it, when, config digest, tool
//! cases/<case>/custody/<seq>.json        one record per event, RFC 8785, chained
//! cases/<case>/evidence/<account>/<subject>/<name>
//! cases/<case>/manifest.json             every item and the custody head (versions)
//! cases/<case>/keys/<fingerprint>.pem    public keys of signed checkpoints
//! cases/<case>/report/report.html|md|json
//! ```

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub mod case;
pub mod checkpoint;
pub mod custody;
pub mod digest;
pub mod error;
pub mod folder;
pub mod store;
pub mod upload;

pub use case::{Case, CaseFile, ChainHead, Manifest, ManifestItem, NewItem, Retention};
pub use custody::{
    Action, Actor, CustodyEvent, CustodyReceipt, CustodyRecord, EvidenceRef, HostInfo, ToolInfo,
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

/// Opens (or creates) `case` in the configured evidence bucket, as the caller STS
/// names, with COMPLIANCE retention of `retention_days` on everything written.
pub async fn open_case(
    aws: &crate::aws::Aws,
    config: &Config,
    case: &CaseId,
    examiner: &str,
) -> Result<Case, crate::error::Error> {
    let clients = aws.forensics().await;
    let who =
        crate::aws::identity::caller_identity(&clients.sts).await.map_err(crate::error::Error::failed)?;
    let actor = Actor {
        examiner: examiner.into(),
        principal_arn: who.arn,
        account: who.account,
        session_name: aws.session_name().into(),
    };
    let store = evidence_store(aws, config).await;
    let retention = Retention::explicit(LockMode::Compliance, config.forensics.retention_days);
    Ok(Case::open_with(store, case, actor, tool_info(), config_digest(config), retention).await?)
}
