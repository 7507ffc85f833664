//! Load balancer adapter for containment: [`LoadBalancing`] on [`AccountClients`],
//! ELBv2 target groups and classic load balancers. Every listing paginates: the one
//! public tool that deregisters reads only the first page.

use async_trait::async_trait;
use aws_sdk_elasticloadbalancing::types::Instance as ClassicInstance;
use aws_sdk_elasticloadbalancingv2::operation::RequestId;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;

use super::AccountClients;
use crate::cloud::CloudError;
use crate::cloud::ErrorKind;
use crate::cloud::{Call, CloudResult, LoadBalancing, Target};
use crate::ids::InstanceId;

fn description(target: &Target, id: &InstanceId) -> TargetDescription {
    TargetDescription::builder()
        .id(id.as_str())
        .set_port(target.port)
        .set_availability_zone(target.availability_zone.clone())
        .build()
}

#[async_trait]
impl LoadBalancing for AccountClients {
    async fn target_groups(&self) -> CloudResult<Vec<String>> {
        let pages: Vec<_> = self
            .elbv2
            .describe_target_groups()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(CloudError::of("elbv2", "DescribeTargetGroups"))?;
        Ok(pages
            .iter()
            .flat_map(|p| p.target_groups().iter().filter_map(|t| t.target_group_arn().map(str::to_owned)))
            .collect())
    }

    async fn registrations(&self, target_group: &str) -> CloudResult<Vec<(String, Target)>> {
        let out = match self.elbv2.describe_target_health().target_group_arn(target_group).send().await {
            Ok(out) => out,
            Err(e) => {
                // A target group deleted between the listing and this call holds nothing.
                let e = CloudError::from_sdk("elbv2", "DescribeTargetHealth", e);
                return if e.is(ErrorKind::NotFound) || e.code.as_deref() == Some("TargetGroupNotFound") {
                    Ok(vec![])
                } else {
                    Err(e)
                };
            }
        };
        let mut targets: Vec<(String, Target)> = out
            .target_health_descriptions()
            .iter()
            // A deregistered target drains for the deregistration delay (300 s by
            // default): it takes no new connections and is on its way out.
            .filter(|d| d.target_health().and_then(|h| h.state()).map(|s| s.as_str()) != Some("draining"))
            .filter_map(|d| d.target())
            .filter_map(|t| {
                Some((
                    t.id()?.to_owned(),
                    Target {
                        target_group_arn: target_group.to_owned(),
                        port: t.port(),
                        availability_zone: t.availability_zone().map(str::to_owned),
                    },
                ))
            })
            .collect();
        targets.sort();
        Ok(targets)
    }

    async fn deregister(&self, target: &Target, id: &InstanceId) -> CloudResult<Call> {
        let out = self
            .elbv2
            .deregister_targets()
            .target_group_arn(&target.target_group_arn)
            .targets(description(target, id))
            .send()
            .await
            .map_err(CloudError::of("elbv2", "DeregisterTargets"))?;
        Ok(Call::new("DeregisterTargets", out.request_id()))
    }

    async fn register(&self, target: &Target, id: &InstanceId) -> CloudResult<Call> {
        let out = self
            .elbv2
            .register_targets()
            .target_group_arn(&target.target_group_arn)
            .targets(description(target, id))
            .send()
            .await
            .map_err(CloudError::of("elbv2", "RegisterTargets"))?;
        Ok(Call::new("RegisterTargets", out.request_id()))
    }

    async fn classic_balancers(&self) -> CloudResult<Vec<(String, Vec<String>)>> {
        let pages: Vec<_> = self
            .elb
            .describe_load_balancers()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(CloudError::of("elb", "DescribeLoadBalancers"))?;
        Ok(pages
            .iter()
            .flat_map(|p| p.load_balancer_descriptions().iter())
            .filter_map(|lb| {
                let ids = lb.instances().iter().filter_map(|i| i.instance_id().map(str::to_owned)).collect();
                Some((lb.load_balancer_name()?.to_owned(), ids))
            })
            .collect())
    }

    async fn classic_deregister(&self, balancer: &str, id: &InstanceId) -> CloudResult<Call> {
        let out = self
            .elb
            .deregister_instances_from_load_balancer()
            .load_balancer_name(balancer)
            .instances(ClassicInstance::builder().instance_id(id.as_str()).build())
            .send()
            .await
            .map_err(CloudError::of("elb", "DeregisterInstancesFromLoadBalancer"))?;
        Ok(Call::new(
            "DeregisterInstancesFromLoadBalancer",
            aws_sdk_elasticloadbalancing::operation::RequestId::request_id(&out),
        ))
    }

    async fn classic_register(&self, balancer: &str, id: &InstanceId) -> CloudResult<Call> {
        let out = self
            .elb
            .register_instances_with_load_balancer()
            .load_balancer_name(balancer)
            .instances(ClassicInstance::builder().instance_id(id.as_str()).build())
            .send()
            .await
            .map_err(CloudError::of("elb", "RegisterInstancesWithLoadBalancer"))?;
        Ok(Call::new(
            "RegisterInstancesWithLoadBalancer",
            aws_sdk_elasticloadbalancing::operation::RequestId::request_id(&out),
        ))
    }
}
