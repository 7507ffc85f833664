//! STS: who is calling. Recorded as the machine principal of every custody record.

use crate::cloud::CloudError;

/// The principal behind a set of credentials.
pub type CallerIdentity = crate::cloud::Identity;

#[async_trait::async_trait]
impl crate::cloud::Sts for super::AccountClients {
    async fn caller_identity(&self) -> crate::cloud::CloudResult<crate::cloud::Identity> {
        caller_identity(&self.sts).await
    }
}

pub async fn caller_identity(sts: &aws_sdk_sts::Client) -> Result<CallerIdentity, CloudError> {
    let out = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| CloudError::from_sdk("sts", "GetCallerIdentity", e))?;
    let missing = |field: &str| CloudError {
        service: "sts",
        operation: "GetCallerIdentity",
        kind: crate::cloud::ErrorKind::Other,
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
