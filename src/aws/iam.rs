//! IAM adapter for containment: [`Iam`] on [`AccountClients`].

use async_trait::async_trait;
use aws_sdk_iam::operation::RequestId;

use super::error::AwsErrorKind;
use super::{AccountClients, AwsError};
use crate::isolate::cloud::{Call, CloudResult, Iam, missing};

/// `arn:aws:iam::ACCOUNT:instance-profile/path/NAME` -> `NAME`.
pub fn profile_name(arn: &str) -> Option<&str> {
    arn.split_once(":instance-profile/").map(|(_, rest)| rest.rsplit('/').next().unwrap_or(rest))
}

#[async_trait]
impl Iam for AccountClients {
    async fn profile_roles(&self, profile_arn: &str) -> CloudResult<Vec<String>> {
        let name = profile_name(profile_arn)
            .ok_or_else(|| missing("iam", "GetInstanceProfile", "profile name in ARN"))?;
        let out = self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .map_err(AwsError::of("iam", "GetInstanceProfile"))?;
        let profile =
            out.instance_profile().ok_or_else(|| missing("iam", "GetInstanceProfile", "InstanceProfile"))?;
        Ok(profile.roles().iter().map(|r| r.role_name().to_owned()).collect())
    }

    async fn profiles_for_role(&self, role: &str) -> CloudResult<Vec<String>> {
        let pages: Vec<_> = self
            .iam
            .list_instance_profiles_for_role()
            .role_name(role)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(AwsError::of("iam", "ListInstanceProfilesForRole"))?;
        Ok(pages.iter().flat_map(|p| p.instance_profiles().iter().map(|ip| ip.arn().to_owned())).collect())
    }

    async fn role_policy(&self, role: &str, policy: &str) -> CloudResult<Option<serde_json::Value>> {
        match self.iam.get_role_policy().role_name(role).policy_name(policy).send().await {
            Ok(out) => {
                // IAM returns the document URL-encoded; moto returns it plain.
                let raw = out.policy_document();
                let text = url::form_urlencoded::parse(format!("d={raw}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .filter(|t| serde_json::from_str::<serde_json::Value>(t).is_ok())
                    .unwrap_or_else(|| raw.to_owned());
                Ok(Some(serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))))
            }
            Err(e) => {
                let e = AwsError::from_sdk("iam", "GetRolePolicy", e);
                if e.is(AwsErrorKind::NotFound) { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn put_role_policy(
        &self,
        role: &str,
        policy: &str,
        document: &serde_json::Value,
    ) -> CloudResult<Call> {
        let out = self
            .iam
            .put_role_policy()
            .role_name(role)
            .policy_name(policy)
            .policy_document(document.to_string())
            .send()
            .await
            .map_err(AwsError::of("iam", "PutRolePolicy"))?;
        Ok(Call::new("PutRolePolicy", out.request_id()))
    }

    async fn delete_role_policy(&self, role: &str, policy: &str) -> CloudResult<Call> {
        let out = self
            .iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(policy)
            .send()
            .await
            .map_err(AwsError::of("iam", "DeleteRolePolicy"))?;
        Ok(Call::new("DeleteRolePolicy", out.request_id()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn profile_names_come_from_arns() {
        assert_eq!(super::profile_name("arn:aws:iam::111122223333:instance-profile/web"), Some("web"));
        assert_eq!(super::profile_name("arn:aws:iam::111122223333:instance-profile/a/b/web"), Some("web"));
        assert_eq!(super::profile_name("arn:aws:iam::111122223333:role/web"), None);
    }
}
