//! Capture of the state containment alters, before anything changes it: security
//! groups per ENI, instance profile and its roles, Auto Scaling group, target groups
//! (with ports) and classic load balancers, termination and shutdown settings,
//! DeleteOnTermination per volume, tags. Stored as one evidence item whose id is stable
//! across reruns, so a rerun and `release` read back the state from *before* the first
//! change, never a half-contained one.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::cloud::CloudError;
use crate::cloud::retry;
use crate::cloud::{
    AsgGroup, Attributes, Cloud, CloudResult, Eni, Instance, ProfileAssociation, Target, VolumeAttachment,
};
use crate::ids::{AccountId, InstanceId, Region};

/// Version of the [`PriorState`] document.
pub const PRIOR_STATE_SCHEMA: u32 = 1;

/// The evidence item id of an instance's prior state.
pub fn prior_state_item(account: &AccountId, instance: &InstanceId) -> String {
    format!("{account}/{instance}/containment/prior-state.json")
}

/// The ARN of an instance, the subject of its custody records.
pub fn instance_arn(region: &Region, account: &AccountId, instance: &InstanceId) -> String {
    crate::ids::instance_arn(region, account, instance)
}

/// Everything containment changes, as it was before: what `release` restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorState {
    pub schema: u32,
    pub instance: InstanceId,
    pub account: AccountId,
    pub region: Region,
    /// UTC, RFC 3339.
    pub captured_at: String,
    pub state: String,
    pub enis: Vec<Eni>,
    pub volumes: Vec<VolumeAttachment>,
    pub termination_protection: bool,
    pub shutdown_behavior: String,
    pub profile: Option<ProfileAssociation>,
    pub profile_roles: Vec<String>,
    pub auto_scaling_group: Option<AsgGroup>,
    pub target_groups: Vec<Target>,
    pub classic_load_balancers: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// What the cloud says now about one instance and everything containment touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub instance: Instance,
    pub attributes: Attributes,
    pub profile: Option<ProfileAssociation>,
    pub profile_roles: Vec<String>,
    pub asg: Option<AsgGroup>,
    pub targets: Vec<Target>,
    pub classic: Vec<String>,
}

impl Observed {
    pub fn prior_state(&self, account: &AccountId, region: &Region, now: &str) -> PriorState {
        PriorState {
            schema: PRIOR_STATE_SCHEMA,
            instance: self.instance.id.clone(),
            account: account.clone(),
            region: region.clone(),
            captured_at: now.to_owned(),
            state: self.instance.state.clone(),
            enis: self.instance.enis.clone(),
            volumes: self.instance.volumes.clone(),
            termination_protection: self.attributes.termination_protection,
            shutdown_behavior: self.attributes.shutdown_behavior.clone(),
            profile: self.profile.clone(),
            profile_roles: self.profile_roles.clone(),
            auto_scaling_group: self.asg.clone(),
            target_groups: self.targets.clone(),
            classic_load_balancers: self.classic.clone(),
            tags: self.instance.tags.clone(),
        }
    }
}

/// Where each instance is registered with a load balancer, for one account and region.
/// Built once per fleet run (one listing, one DescribeTargetHealth per target group),
/// not once per instance.
#[derive(Debug, Clone, Default)]
pub struct LbIndex {
    pub targets: HashMap<String, Vec<Target>>,
    pub classic: HashMap<String, Vec<String>>,
}

impl LbIndex {
    pub fn targets_of(&self, id: &InstanceId) -> Vec<Target> {
        let mut t = self.targets.get(id.as_str()).cloned().unwrap_or_default();
        t.sort();
        t
    }
    pub fn classic_of(&self, id: &InstanceId) -> Vec<String> {
        let mut c = self.classic.get(id.as_str()).cloned().unwrap_or_default();
        c.sort();
        c
    }
}

/// Lists every target group and classic load balancer, then reads the targets of every
/// target group (in parallel): two round trips.
pub async fn lb_index(
    cloud: &dyn Cloud,
    only: Option<&[String]>,
    with_classic: bool,
) -> CloudResult<LbIndex> {
    let (groups, classic) = futures::join!(
        async {
            match only {
                Some(arns) => Ok(arns.to_vec()),
                None => retry(|| cloud.target_groups()).await,
            }
        },
        async { if with_classic { retry(|| cloud.classic_balancers()).await } else { Ok(vec![]) } }
    );
    let groups = groups?;
    let mut index = LbIndex::default();
    for (name, ids) in classic? {
        for id in ids {
            index.classic.entry(id).or_default().push(name.clone());
        }
    }
    let regs = futures::future::join_all(groups.iter().map(|g| retry(|| cloud.registrations(g)))).await;
    for r in regs {
        for (id, target) in r? {
            index.targets.entry(id).or_default().push(target);
        }
    }
    Ok(index)
}

/// Why an instance cannot be contained as named.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObserveError {
    #[error("instance {id} not found in account {account}, region {region} (a wrong region or account?)")]
    NotFound { id: InstanceId, account: AccountId, region: Region },
    #[error(
        "instance {id} is {state}: there is nothing left to contain (its volumes may survive: check DeleteOnTermination)"
    )]
    Gone { id: InstanceId, state: String },
    #[error("instance {id} is not in a VPC: EC2-Classic instances cannot be isolated with security groups")]
    NoVpc { id: InstanceId },
    #[error(transparent)]
    Aws(#[from] CloudError),
}

/// Reads the instance, its attributes, profile, Auto Scaling group and load balancer
/// registrations. `lb` is the account's shared index (built by the caller, concurrently).
pub async fn observe_instance(
    cloud: &dyn Cloud,
    account: &AccountId,
    region: &Region,
    id: &InstanceId,
) -> Result<(Instance, Attributes, Option<ProfileAssociation>, Option<String>), ObserveError> {
    let (instance, attributes, profile, asg) = futures::join!(
        retry(|| cloud.describe_instance(id)),
        retry(|| cloud.attributes(id)),
        retry(|| cloud.profile_association(id)),
        retry(|| cloud.group_of(id))
    );
    let instance = instance?.ok_or_else(|| ObserveError::NotFound {
        id: id.clone(),
        account: account.clone(),
        region: region.clone(),
    })?;
    if instance.is_gone() {
        return Err(ObserveError::Gone { id: id.clone(), state: instance.state });
    }
    if instance.vpc.is_none() || instance.enis.is_empty() {
        return Err(ObserveError::NoVpc { id: id.clone() });
    }
    Ok((instance, attributes?, profile?, asg?))
}

/// The second round of observation: details that need the first (Auto Scaling group
/// capacity, the profile's roles).
pub async fn observe_details(
    cloud: &dyn Cloud,
    profile: Option<&ProfileAssociation>,
    asg: Option<&str>,
) -> CloudResult<(Vec<String>, Option<AsgGroup>)> {
    let (roles, group) = futures::join!(
        async {
            match profile {
                Some(p) => retry(|| cloud.profile_roles(&p.profile_arn)).await,
                None => Ok(vec![]),
            }
        },
        async {
            match asg {
                Some(name) => retry(|| cloud.group(name)).await,
                None => Ok(None),
            }
        }
    );
    Ok((roles?, group?))
}

/// Observes one instance completely (used by verification and release, where the
/// load-balancer index is read fresh for the target groups that matter, and classic
/// load balancers only when the instance was registered with one).
pub async fn observe(
    cloud: &dyn Cloud,
    account: &AccountId,
    region: &Region,
    id: &InstanceId,
    target_groups: &[String],
    with_classic: bool,
) -> Result<Observed, ObserveError> {
    let (first, lb) = futures::join!(
        observe_instance(cloud, account, region, id),
        lb_index(cloud, Some(target_groups), with_classic)
    );
    let (instance, attributes, profile, asg) = first?;
    let (profile_roles, asg) = observe_details(cloud, profile.as_ref(), asg.as_deref()).await?;
    let lb = lb?;
    Ok(Observed {
        targets: lb.targets_of(id),
        classic: lb.classic_of(id),
        instance,
        attributes,
        profile,
        profile_roles,
        asg,
    })
}

/// The evidence item of an instance's prior state.
pub fn prior_state_new_item(account: &AccountId, instance: &InstanceId) -> crate::pipeline::custody::Item {
    crate::pipeline::custody::Item {
        id: prior_state_item(account, instance),
        account: account.clone(),
        subject: instance.to_string(),
        name: "containment-prior-state.json".into(),
        source: "ec2:DescribeInstances, DescribeInstanceAttribute, DescribeIamInstanceProfileAssociations; iam:GetInstanceProfile; autoscaling:DescribeAutoScalingInstances, DescribeAutoScalingGroups; elbv2:DescribeTargetGroups, DescribeTargetHealth; elb:DescribeLoadBalancers".into(),
        method: "cleanroom: captured before any change, for release".into(),
        derived_from: vec![],
    }
}

/// Observes everything containment will change (every target group and classic load
/// balancer of the account and region included) and stores it as the prior state,
/// unless it is stored already. Called before the first change of acquire.
pub async fn store_prior_state(
    cloud: &dyn Cloud,
    custody: &dyn crate::pipeline::custody::CustodySink,
    account: &AccountId,
    region: &Region,
    id: &InstanceId,
    now: &str,
) -> Result<crate::pipeline::custody::EvidenceRef, PriorStateError> {
    let item = prior_state_new_item(account, id);
    if let Some(r) = custody.find(&item.id).await? {
        return Ok(r);
    }
    let (first, lb) =
        futures::join!(observe_instance(cloud, account, region, id), lb_index(cloud, None, true));
    let (instance, attributes, profile, asg) = first?;
    let (profile_roles, asg) = observe_details(cloud, profile.as_ref(), asg.as_deref()).await?;
    let lb = lb?;
    let obs = Observed {
        targets: lb.targets_of(id),
        classic: lb.classic_of(id),
        instance,
        attributes,
        profile,
        profile_roles,
        asg,
    };
    let prior = obs.prior_state(account, region, now);
    Ok(custody.store_json(item, &serde_json::to_value(&prior).expect("prior state serialises")).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum PriorStateError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Custody(#[from] crate::pipeline::custody::CustodyError),
}

impl From<CloudError> for PriorStateError {
    fn from(e: CloudError) -> Self {
        PriorStateError::Observe(ObserveError::Aws(e))
    }
}
