//! STS: who is calling. Recorded as the machine principal of every custody record.

use serde::Serialize;

use super::AwsError;
use crate::ids::AccountId;

/// The principal behind a set of credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallerIdentity {
    pub arn: String,
    pub account: AccountId,
    pub user_id: String,
}

pub async fn caller_identity(sts: &aws_sdk_sts::Client) -> Result<CallerIdentity, AwsError> {
    let out = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("sts", "GetCallerIdentity", e))?;
    let missing = |field: &str| AwsError {
        service: "sts",
        operation: "GetCallerIdentity",
        kind: super::error::AwsErrorKind::Other,
        code: None,
        message: format!("response has no {field}"),
        request_id: None,
    };
    let account = out.account().ok_or_else(|| missing("Account"))?;
    Ok(CallerIdentity {
        arn: out.arn().ok_or_else(|| missing("Arn"))?.to_owned(),
        account: account.parse().map_err(|_| missing("valid Account"))?,
        user_id: out.user_id().unwrap_or_default().to_owned(),
    })
}
