//! IAM adapter for containment: [`Iam`] on [`AccountClients`].

use async_trait::async_trait;
use aws_sdk_iam::operation::RequestId;

use super::AccountClients;
use super::raw::captured;
use crate::cloud::{Call, Captured, CloudError, CloudResult, ErrorKind, Iam, Raw, missing};

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
            .map_err(CloudError::of("iam", "GetInstanceProfile"))?;
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
            .map_err(CloudError::of("iam", "ListInstanceProfilesForRole"))?;
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
                let e = CloudError::from_sdk("iam", "GetRolePolicy", e);
                if e.is(ErrorKind::NotFound) { Ok(None) } else { Err(e) }
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
            .map_err(CloudError::of("iam", "PutRolePolicy"))?;
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
            .map_err(CloudError::of("iam", "DeleteRolePolicy"))?;
        Ok(Call::new("DeleteRolePolicy", out.request_id()))
    }

    async fn capture_profile(&self, profile_arn: &str) -> CloudResult<Captured<Vec<String>>> {
        let name = profile_name(profile_arn)
            .ok_or_else(|| missing("iam", "GetInstanceProfile", "profile name in ARN"))?;
        let (out, raw) = captured(
            "iam",
            "GetInstanceProfile",
            serde_json::json!({"InstanceProfileName": name}),
            |o: &aws_sdk_iam::operation::get_instance_profile::GetInstanceProfileOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.iam
                    .get_instance_profile()
                    .instance_profile_name(name)
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        let roles =
            out.instance_profile().map(|p| p.roles().iter().map(|r| r.role_name().to_owned()).collect());
        Ok(Captured { value: roles.unwrap_or_default(), raw })
    }

    async fn capture_role(&self, role: &str) -> CloudResult<Raw> {
        let (_, raw) = captured(
            "iam",
            "GetRole",
            serde_json::json!({"RoleName": role}),
            |o: &aws_sdk_iam::operation::get_role::GetRoleOutput| o.request_id().map(str::to_owned),
            |raw| self.iam.get_role().role_name(role).customize().interceptor(raw).send(),
        )
        .await?;
        Ok(raw)
    }

    async fn capture_attached_policies(&self, role: &str) -> CloudResult<Captured<Vec<String>>> {
        // One page of 1000: a role has at most 20 managed policies attached (IAM quota).
        let (out, raw) = captured(
            "iam",
            "ListAttachedRolePolicies",
            serde_json::json!({"RoleName": role, "MaxItems": 1000}),
            |o: &aws_sdk_iam::operation::list_attached_role_policies::ListAttachedRolePoliciesOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.iam
                    .list_attached_role_policies()
                    .role_name(role)
                    .max_items(1000)
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        let arns = out.attached_policies().iter().filter_map(|p| p.policy_arn().map(str::to_owned)).collect();
        Ok(Captured { value: arns, raw })
    }

    async fn capture_inline_policy_names(&self, role: &str) -> CloudResult<Captured<Vec<String>>> {
        let (out, raw) = captured(
            "iam",
            "ListRolePolicies",
            serde_json::json!({"RoleName": role, "MaxItems": 1000}),
            |o: &aws_sdk_iam::operation::list_role_policies::ListRolePoliciesOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.iam
                    .list_role_policies()
                    .role_name(role)
                    .max_items(1000)
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        Ok(Captured { value: out.policy_names().to_vec(), raw })
    }

    async fn capture_inline_policy(&self, role: &str, policy: &str) -> CloudResult<Raw> {
        let (_, raw) = captured(
            "iam",
            "GetRolePolicy",
            serde_json::json!({"RoleName": role, "PolicyName": policy}),
            |o: &aws_sdk_iam::operation::get_role_policy::GetRolePolicyOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.iam
                    .get_role_policy()
                    .role_name(role)
                    .policy_name(policy)
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        Ok(raw)
    }

    async fn capture_managed_policy(&self, policy_arn: &str) -> CloudResult<Vec<Raw>> {
        let (out, policy) = captured(
            "iam",
            "GetPolicy",
            serde_json::json!({"PolicyArn": policy_arn}),
            |o: &aws_sdk_iam::operation::get_policy::GetPolicyOutput| o.request_id().map(str::to_owned),
            |raw| self.iam.get_policy().policy_arn(policy_arn).customize().interceptor(raw).send(),
        )
        .await?;
        let mut raws = vec![policy];
        if let Some(version) = out.policy().and_then(|p| p.default_version_id()) {
            let (_, v) = captured(
                "iam",
                "GetPolicyVersion",
                serde_json::json!({"PolicyArn": policy_arn, "VersionId": version}),
                |o: &aws_sdk_iam::operation::get_policy_version::GetPolicyVersionOutput| {
                    o.request_id().map(str::to_owned)
                },
                |raw| {
                    self.iam
                        .get_policy_version()
                        .policy_arn(policy_arn)
                        .version_id(version)
                        .customize()
                        .interceptor(raw)
                        .send()
                },
            )
            .await?;
            raws.push(v);
        }
        Ok(raws)
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
