//! `cleanroom preflight` against the lab.

use crate::support::*;

#[tokio::test]
async fn a_seeded_forensics_account_has_an_object_lock_bucket() {
    let f = Forensics::seed().await;
    let lock = f
        .clients()
        .s3
        .get_object_lock_configuration()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .send()
        .await
        .unwrap();
    let rule = lock.object_lock_configuration().unwrap().rule().unwrap();
    assert_eq!(rule.default_retention().unwrap().days(), Some(1));
}
