//! Auto Scaling adapter for containment: [`AutoScaling`] on [`AccountClients`].

use async_trait::async_trait;
use aws_sdk_autoscaling::operation::RequestId;

use super::AccountClients;
use crate::cloud::CloudError;
use crate::cloud::{AsgGroup, AutoScaling, Call, CloudResult, missing};
use crate::ids::InstanceId;

#[async_trait]
impl AutoScaling for AccountClients {
    async fn group_of(&self, id: &InstanceId) -> CloudResult<Option<String>> {
        let out = self
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(id.as_str())
            .send()
            .await
            .map_err(CloudError::of("autoscaling", "DescribeAutoScalingInstances"))?;
        Ok(out
            .auto_scaling_instances()
            .iter()
            // A detached instance shows as Detaching (then Detached) for a while.
            .find(|i| {
                i.instance_id() == Some(id.as_str())
                    && !matches!(i.lifecycle_state(), Some("Detaching" | "Detached"))
            })
            .and_then(|i| i.auto_scaling_group_name().map(str::to_owned)))
    }

    async fn group(&self, name: &str) -> CloudResult<Option<AsgGroup>> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(CloudError::of("autoscaling", "DescribeAutoScalingGroups"))?;
        let Some(g) = out.auto_scaling_groups().iter().find(|g| g.auto_scaling_group_name() == Some(name))
        else {
            return Ok(None);
        };
        let field = |f: &str| missing("autoscaling", "DescribeAutoScalingGroups", f);
        Ok(Some(AsgGroup {
            name: name.to_owned(),
            min: g.min_size().ok_or_else(|| field("MinSize"))?,
            max: g.max_size().ok_or_else(|| field("MaxSize"))?,
            desired: g.desired_capacity().ok_or_else(|| field("DesiredCapacity"))?,
            instances: g.instances().iter().filter_map(|i| i.instance_id()?.parse().ok()).collect(),
        }))
    }

    async fn detach(&self, group: &str, id: &InstanceId) -> CloudResult<Call> {
        let out = self
            .autoscaling
            .detach_instances()
            .auto_scaling_group_name(group)
            .instance_ids(id.as_str())
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map_err(CloudError::of("autoscaling", "DetachInstances"))?;
        Ok(Call::new("DetachInstances", out.request_id()))
    }

    async fn attach(&self, group: &str, id: &InstanceId) -> CloudResult<Call> {
        let out = self
            .autoscaling
            .attach_instances()
            .auto_scaling_group_name(group)
            .instance_ids(id.as_str())
            .send()
            .await
            .map_err(CloudError::of("autoscaling", "AttachInstances"))?;
        Ok(Call::new("AttachInstances", out.request_id()))
    }
}
