//! EC2 adapter for containment: [`Ec2`] on [`AccountClients`], the only code that
//! knows the EC2 SDK types. Missing response fields become named errors.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::operation::RequestId;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, EbsInstanceBlockDeviceSpecification, Filter, IamInstanceProfileSpecification,
    InstanceAttributeName, InstanceBlockDeviceMappingSpecification, IpPermission, IpRange, Ipv6Range,
    PrefixListId, ResourceType, Tag, TagSpecification, UserIdGroupPair,
};

use super::AccountClients;
use super::raw::captured;
use crate::cloud::ec2::{
    ConnTrack, InstanceDetails, InstanceStorage, NetworkPaths, Route, RouteTable, VpcInterface,
};
use crate::cloud::{
    Attributes, Call, Captured, CloudResult, DryRun, Ec2, Eni, Group, Instance, NewGroup, NewInstance,
    ProfileAssociation, Purpose, Raw, Rule, TAG_CASE, TAG_PURPOSE, VolumeAttachment, missing,
};
use crate::cloud::{CloudError, ErrorKind};
use crate::ids::Region;
use crate::ids::{CaseId, InstanceId, NetworkInterfaceId, SecurityGroupId, VpcId};

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder().name(name).set_values(Some(values.iter().map(|v| v.to_string()).collect())).build()
}

fn parse<T: std::str::FromStr>(operation: &'static str, field: &str, value: Option<&str>) -> CloudResult<T> {
    value.and_then(|v| v.parse().ok()).ok_or_else(|| missing("ec2", operation, field))
}

fn instance_from(i: &aws_sdk_ec2::types::Instance) -> CloudResult<Instance> {
    const OP: &str = "DescribeInstances";
    let mut enis = Vec::new();
    for n in i.network_interfaces() {
        enis.push(Eni {
            id: parse(OP, "NetworkInterfaceId", n.network_interface_id())?,
            device_index: n.attachment().and_then(|a| a.device_index()).unwrap_or_default(),
            vpc: parse(OP, "NetworkInterface VpcId", n.vpc_id())?,
            groups: n
                .groups()
                .iter()
                .map(|g| parse(OP, "GroupId", g.group_id()))
                .collect::<CloudResult<Vec<SecurityGroupId>>>()?,
            ipv6_addresses: n
                .ipv6_addresses()
                .iter()
                .filter_map(|a| a.ipv6_address().map(str::to_owned))
                .collect(),
            subnet: n.subnet_id().and_then(|s| s.parse().ok()),
            interface_type: n.interface_type().map(str::to_owned),
            conntrack: n.connection_tracking_configuration().map(|c| ConnTrack {
                tcp_established: c.tcp_established_timeout(),
                udp_stream: c.udp_stream_timeout(),
                udp: c.udp_timeout(),
            }),
        });
    }
    enis.sort_by_key(|e| e.device_index);
    let mut volumes = Vec::new();
    for b in i.block_device_mappings() {
        let Some(ebs) = b.ebs() else { continue };
        volumes.push(VolumeAttachment {
            device: b.device_name().ok_or_else(|| missing("ec2", OP, "DeviceName"))?.to_owned(),
            volume: parse(OP, "VolumeId", ebs.volume_id())?,
            delete_on_termination: ebs.delete_on_termination().unwrap_or(false),
        });
    }
    Ok(Instance {
        id: parse(OP, "InstanceId", i.instance_id())?,
        state: i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_default(),
        vpc: i.vpc_id().and_then(|v| v.parse().ok()),
        enis,
        volumes,
        tags: i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect(),
        details: InstanceDetails {
            instance_type: i.instance_type().map(|t| t.as_str().to_owned()),
            image_id: i.image_id().map(str::to_owned),
            launch_time: i.launch_time().and_then(rfc3339),
            availability_zone: i.placement().and_then(|p| p.availability_zone()).map(str::to_owned),
            key_name: i.key_name().map(str::to_owned),
            instance_profile_arn: i.iam_instance_profile().and_then(|p| p.arn()).map(str::to_owned),
            private_ips: i
                .network_interfaces()
                .iter()
                .flat_map(|n| n.private_ip_addresses().iter().filter_map(|a| a.private_ip_address()))
                .map(str::to_owned)
                .collect(),
            public_ips: i.public_ip_address().into_iter().map(str::to_owned).collect(),
            imds_http_tokens: i
                .metadata_options()
                .and_then(|m| m.http_tokens())
                .map(|t| t.as_str().to_owned()),
            imds_endpoint: i
                .metadata_options()
                .and_then(|m| m.http_endpoint())
                .map(|t| t.as_str().to_owned()),
            root_device_name: i.root_device_name().map(str::to_owned),
        },
    })
}

/// An SDK time as UTC RFC 3339.
pub(crate) fn rfc3339(t: &aws_smithy_types::DateTime) -> Option<String> {
    t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()
}

fn json_ids<T: std::fmt::Display>(ids: &[T]) -> Vec<String> {
    ids.iter().map(|i| i.to_string()).collect()
}

fn rules_from(perms: &[IpPermission], egress: bool) -> Vec<Rule> {
    let mut rules = Vec::new();
    for p in perms {
        let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
        let ports = match (p.from_port(), p.to_port()) {
            (Some(f), Some(t)) if protocol != "-1" => Some((f, t)),
            _ => None,
        };
        let rule = |peer: &str| Rule { egress, protocol: protocol.clone(), ports, peer: peer.to_owned() };
        rules.extend(p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).map(rule));
        rules.extend(p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()).map(rule));
        rules.extend(p.user_id_group_pairs().iter().filter_map(|r| r.group_id()).map(rule));
        rules.extend(p.prefix_list_ids().iter().filter_map(|r| r.prefix_list_id()).map(rule));
    }
    rules
}

fn permission(rule: &Rule) -> IpPermission {
    let mut p = IpPermission::builder().ip_protocol(&rule.protocol);
    if let Some((from, to)) = rule.ports {
        p = p.from_port(from).to_port(to);
    }
    let peer = rule.peer.as_str();
    p = if peer.starts_with("sg-") {
        p.user_id_group_pairs(UserIdGroupPair::builder().group_id(peer).build())
    } else if peer.starts_with("pl-") {
        p.prefix_list_ids(PrefixListId::builder().prefix_list_id(peer).build())
    } else if peer.contains(':') {
        p.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(peer).build())
    } else {
        p.ip_ranges(IpRange::builder().cidr_ip(peer).build())
    };
    p.build()
}

fn call(operation: &str, out: &impl RequestId) -> Call {
    Call::new(operation, out.request_id())
}

#[async_trait]
impl Ec2 for AccountClients {
    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Option<Instance>> {
        let out = match self.ec2.describe_instances().instance_ids(id.as_str()).send().await {
            Ok(out) => out,
            Err(e) => {
                let e = CloudError::from_sdk("ec2", "DescribeInstances", e);
                return if e.is(ErrorKind::NotFound) { Ok(None) } else { Err(e) };
            }
        };
        for r in out.reservations() {
            for i in r.instances() {
                if i.instance_id() == Some(id.as_str()) {
                    return instance_from(i).map(Some);
                }
            }
        }
        Ok(None)
    }

    async fn find_instances(&self, tag_filters: &[(String, String)]) -> CloudResult<Vec<InstanceId>> {
        let mut req = self
            .ec2
            .describe_instances()
            .filters(filter("instance-state-name", &["pending", "running", "stopping", "stopped"]));
        for (k, v) in tag_filters {
            req = req.filters(filter(&format!("tag:{k}"), &[v]));
        }
        let pages: Vec<_> = req
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(CloudError::of("ec2", "DescribeInstances"))?;
        let mut ids = Vec::new();
        for page in pages {
            for r in page.reservations() {
                for i in r.instances() {
                    ids.push(parse("DescribeInstances", "InstanceId", i.instance_id())?);
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn attributes(&self, id: &InstanceId) -> CloudResult<Attributes> {
        let term = self
            .ec2
            .describe_instance_attribute()
            .instance_id(id.as_str())
            .attribute(InstanceAttributeName::DisableApiTermination)
            .send();
        let shut = self
            .ec2
            .describe_instance_attribute()
            .instance_id(id.as_str())
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .send();
        let (term, shut) = futures::join!(term, shut);
        let term = term.map_err(CloudError::of("ec2", "DescribeInstanceAttribute"))?;
        let shut = shut.map_err(CloudError::of("ec2", "DescribeInstanceAttribute"))?;
        Ok(Attributes {
            termination_protection: term.disable_api_termination().and_then(|v| v.value()).unwrap_or(false),
            shutdown_behavior: shut
                .instance_initiated_shutdown_behavior()
                .and_then(|v| v.value())
                .ok_or_else(|| {
                    missing("ec2", "DescribeInstanceAttribute", "InstanceInitiatedShutdownBehavior")
                })?
                .to_owned(),
        })
    }

    async fn profile_association(&self, id: &InstanceId) -> CloudResult<Option<ProfileAssociation>> {
        let out = self
            .ec2
            .describe_iam_instance_profile_associations()
            .filters(filter("instance-id", &[id.as_str()]))
            .send()
            .await
            .map_err(CloudError::of("ec2", "DescribeIamInstanceProfileAssociations"))?;
        let all = associations(out.iam_instance_profile_associations())?;
        Ok(all.into_iter().find(|a| a.state != "disassociated"))
    }

    async fn all_profile_associations(&self) -> CloudResult<Vec<ProfileAssociation>> {
        let pages: Vec<_> = self
            .ec2
            .describe_iam_instance_profile_associations()
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(CloudError::of("ec2", "DescribeIamInstanceProfileAssociations"))?;
        let mut all = Vec::new();
        for p in pages {
            all.extend(associations(p.iam_instance_profile_associations())?);
        }
        Ok(all)
    }

    async fn case_groups(&self, case: &CaseId) -> CloudResult<Vec<Group>> {
        let pages: Vec<_> = case_groups_request(&self.ec2, case)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(CloudError::of("ec2", "DescribeSecurityGroups"))?;
        let mut groups = Vec::new();
        for p in pages {
            for g in p.security_groups() {
                groups.push(group_from(g)?);
            }
        }
        Ok(groups)
    }

    async fn dry_run(&self, check: &DryRun) -> CloudResult<()> {
        let op = check.operation();
        let result = match check {
            DryRun::ModifyInstanceAttribute(id) => self
                .ec2
                .modify_instance_attribute()
                .instance_id(id.as_str())
                .disable_api_termination(AttributeBooleanValue::builder().value(true).build())
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(CloudError::of("ec2", "ModifyInstanceAttribute")),
            DryRun::ModifyNetworkInterfaceAttribute(eni, groups) => self
                .ec2
                .modify_network_interface_attribute()
                .network_interface_id(eni.as_str())
                .set_groups(Some(groups.iter().map(|g| g.to_string()).collect()))
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(CloudError::of("ec2", "ModifyNetworkInterfaceAttribute")),
            DryRun::CreateSecurityGroup(vpc) => self
                .ec2
                .create_security_group()
                .group_name("cleanroom-dry-run")
                .description("cleanroom permission check")
                .vpc_id(vpc.as_str())
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(CloudError::of("ec2", "CreateSecurityGroup")),
            DryRun::CreateTags(id) => self
                .ec2
                .create_tags()
                .resources(id.as_str())
                .tags(Tag::builder().key(TAG_CASE).value("dry-run").build())
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(CloudError::of("ec2", "CreateTags")),
        };
        match result {
            Err(e) if e.is(ErrorKind::DryRunAllowed) => Ok(()),
            Err(e) => Err(e),
            // A service that ignores DryRun would have made the change: say so loudly.
            Ok(()) => Err(CloudError {
                service: "ec2",
                operation: op,
                kind: ErrorKind::Other,
                code: None,
                message: "DryRun call succeeded instead of answering DryRunOperation".into(),
                request_id: None,
            }),
        }
    }

    async fn create_group(&self, group: &NewGroup) -> CloudResult<(SecurityGroupId, Call)> {
        let out = create_group_request(&self.ec2, group)
            .send()
            .await
            .map_err(CloudError::of("ec2", "CreateSecurityGroup"))?;
        let id = parse("CreateSecurityGroup", "GroupId", out.group_id())?;
        Ok((id, call("CreateSecurityGroup", &out)))
    }

    async fn authorize(&self, group: &SecurityGroupId, rules: &[Rule]) -> CloudResult<Vec<Call>> {
        let (egress, ingress): (Vec<&Rule>, Vec<&Rule>) = rules.iter().partition(|r| r.egress);
        let mut calls = Vec::new();
        if !ingress.is_empty() {
            let out = self
                .ec2
                .authorize_security_group_ingress()
                .group_id(group.as_str())
                .set_ip_permissions(Some(ingress.into_iter().map(permission).collect()))
                .send()
                .await
                .map_err(CloudError::of("ec2", "AuthorizeSecurityGroupIngress"))?;
            calls.push(call("AuthorizeSecurityGroupIngress", &out));
        }
        if !egress.is_empty() {
            let out = self
                .ec2
                .authorize_security_group_egress()
                .group_id(group.as_str())
                .set_ip_permissions(Some(egress.into_iter().map(permission).collect()))
                .send()
                .await
                .map_err(CloudError::of("ec2", "AuthorizeSecurityGroupEgress"))?;
            calls.push(call("AuthorizeSecurityGroupEgress", &out));
        }
        Ok(calls)
    }

    async fn revoke(&self, group: &SecurityGroupId, rules: &[Rule]) -> CloudResult<Vec<Call>> {
        let (egress, ingress): (Vec<&Rule>, Vec<&Rule>) = rules.iter().partition(|r| r.egress);
        let mut calls = Vec::new();
        if !ingress.is_empty() {
            let out = self
                .ec2
                .revoke_security_group_ingress()
                .group_id(group.as_str())
                .set_ip_permissions(Some(ingress.into_iter().map(permission).collect()))
                .send()
                .await
                .map_err(CloudError::of("ec2", "RevokeSecurityGroupIngress"))?;
            calls.push(call("RevokeSecurityGroupIngress", &out));
        }
        if !egress.is_empty() {
            let out = self
                .ec2
                .revoke_security_group_egress()
                .group_id(group.as_str())
                .set_ip_permissions(Some(egress.into_iter().map(permission).collect()))
                .send()
                .await
                .map_err(CloudError::of("ec2", "RevokeSecurityGroupEgress"))?;
            calls.push(call("RevokeSecurityGroupEgress", &out));
        }
        Ok(calls)
    }

    async fn set_eni_groups(
        &self,
        eni: &NetworkInterfaceId,
        groups: &[SecurityGroupId],
    ) -> CloudResult<Call> {
        let out = self
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(eni.as_str())
            .set_groups(Some(groups.iter().map(|g| g.to_string()).collect()))
            .send()
            .await
            .map_err(CloudError::of("ec2", "ModifyNetworkInterfaceAttribute"))?;
        Ok(call("ModifyNetworkInterfaceAttribute", &out))
    }

    async fn set_termination_protection(&self, id: &InstanceId, on: bool) -> CloudResult<Call> {
        let out = self
            .ec2
            .modify_instance_attribute()
            .instance_id(id.as_str())
            .disable_api_termination(AttributeBooleanValue::builder().value(on).build())
            .send()
            .await
            .map_err(CloudError::of("ec2", "ModifyInstanceAttribute"))?;
        Ok(call("ModifyInstanceAttribute", &out))
    }

    async fn set_shutdown_behavior(&self, id: &InstanceId, behavior: &str) -> CloudResult<Call> {
        let out = self
            .ec2
            .modify_instance_attribute()
            .instance_id(id.as_str())
            // The Attribute/Value form: equivalent in EC2, and the one moto 5.2.5 honours
            // (it drops InstanceInitiatedShutdownBehavior.Value into its Groups handler).
            .attribute(InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .value(behavior)
            .send()
            .await
            .map_err(CloudError::of("ec2", "ModifyInstanceAttribute"))?;
        Ok(call("ModifyInstanceAttribute", &out))
    }

    async fn set_delete_on_termination(
        &self,
        id: &InstanceId,
        devices: &[(String, bool)],
    ) -> CloudResult<Call> {
        let mappings = devices
            .iter()
            .map(|(device, delete)| {
                InstanceBlockDeviceMappingSpecification::builder()
                    .device_name(device)
                    .ebs(
                        EbsInstanceBlockDeviceSpecification::builder().delete_on_termination(*delete).build(),
                    )
                    .build()
            })
            .collect();
        let out = self
            .ec2
            .modify_instance_attribute()
            .instance_id(id.as_str())
            .set_block_device_mappings(Some(mappings))
            .send()
            .await
            .map_err(CloudError::of("ec2", "ModifyInstanceAttribute"))?;
        Ok(call("ModifyInstanceAttribute", &out))
    }

    async fn create_tags(&self, id: &InstanceId, tags: &BTreeMap<String, String>) -> CloudResult<Call> {
        let out = self
            .ec2
            .create_tags()
            .resources(id.as_str())
            .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
            .send()
            .await
            .map_err(CloudError::of("ec2", "CreateTags"))?;
        Ok(call("CreateTags", &out))
    }

    async fn disassociate_profile(&self, association_id: &str) -> CloudResult<Call> {
        let out = self
            .ec2
            .disassociate_iam_instance_profile()
            .association_id(association_id)
            .send()
            .await
            .map_err(CloudError::of("ec2", "DisassociateIamInstanceProfile"))?;
        Ok(call("DisassociateIamInstanceProfile", &out))
    }

    async fn associate_profile(&self, id: &InstanceId, profile_arn: &str) -> CloudResult<Call> {
        let out = self
            .ec2
            .associate_iam_instance_profile()
            .instance_id(id.as_str())
            .iam_instance_profile(IamInstanceProfileSpecification::builder().arn(profile_arn).build())
            .send()
            .await
            .map_err(CloudError::of("ec2", "AssociateIamInstanceProfile"))?;
        Ok(call("AssociateIamInstanceProfile", &out))
    }

    async fn groups_by_id(&self, ids: &[SecurityGroupId]) -> CloudResult<Vec<Group>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let out = match self.ec2.describe_security_groups().set_group_ids(Some(json_ids(ids))).send().await {
            Ok(out) => out,
            Err(e) => {
                let e = CloudError::from_sdk("ec2", "DescribeSecurityGroups", e);
                if !e.is(ErrorKind::NotFound) {
                    return Err(e);
                }
                // One deleted group fails the whole call: read them one by one, so the
                // ones still there are checked and the missing one reported missing.
                let mut found = Vec::new();
                for id in ids {
                    match self.ec2.describe_security_groups().group_ids(id.as_str()).send().await {
                        Ok(o) => {
                            for g in o.security_groups() {
                                found.push(group_from(g)?);
                            }
                        }
                        Err(e) => {
                            let e = CloudError::from_sdk("ec2", "DescribeSecurityGroups", e);
                            if !e.is(ErrorKind::NotFound) {
                                return Err(e);
                            }
                        }
                    }
                }
                return Ok(found);
            }
        };
        out.security_groups().iter().map(group_from).collect()
    }

    async fn network_paths(&self, vpc: &VpcId) -> CloudResult<NetworkPaths> {
        let tables = self
            .ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &[vpc.as_str()]))
            .into_paginator()
            .send()
            .try_collect();
        // Every interface of the VPC, typed client-side: the `interface-type` filter
        // would be cheaper on AWS, but the lab's moto 5.2.5 refuses it.
        let interfaces = self
            .ec2
            .describe_network_interfaces()
            .filters(filter("vpc-id", &[vpc.as_str()]))
            .into_paginator()
            .send()
            .try_collect();
        let (tables, interfaces) = futures::join!(tables, interfaces);
        let tables: Vec<_> = tables.map_err(CloudError::of("ec2", "DescribeRouteTables"))?;
        let interfaces: Vec<_> = interfaces.map_err(CloudError::of("ec2", "DescribeNetworkInterfaces"))?;
        let mut paths = NetworkPaths::default();
        for page in tables {
            for t in page.route_tables() {
                paths.route_tables.push(route_table_from(t)?);
            }
        }
        for page in interfaces {
            for n in page.network_interfaces() {
                let Some(kind) = n.interface_type().map(|t| t.as_str().to_owned()) else { continue };
                // Instances' own interfaces are what containment swaps; the rest are
                // service-owned paths.
                if kind == "interface" || kind == "efa" || kind == "trunk" {
                    continue;
                }
                paths.interfaces.push(VpcInterface {
                    id: n
                        .network_interface_id()
                        .ok_or_else(|| missing("ec2", "DescribeNetworkInterfaces", "NetworkInterfaceId"))?
                        .to_owned(),
                    interface_type: kind,
                });
            }
        }
        Ok(paths)
    }

    async fn set_conntrack(&self, eni: &NetworkInterfaceId, timeouts: &ConnTrack) -> CloudResult<Call> {
        let out = conntrack_request(&self.ec2, eni, timeouts)
            .send()
            .await
            .map_err(CloudError::of("ec2", "ModifyNetworkInterfaceAttribute"))?;
        Ok(call("ModifyNetworkInterfaceAttribute", &out))
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>> {
        let mut out = Vec::new();
        let mut pages =
            self.ec2.describe_instances().set_instance_ids(Some(json_ids(ids))).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    let e = CloudError::from_sdk("ec2", "DescribeInstances", e);
                    if e.is(ErrorKind::NotFound) {
                        // One unknown id fails the whole call: fall back to one by one.
                        let mut found = Vec::new();
                        for id in ids {
                            found.extend(self.describe_instance(id).await?);
                        }
                        return Ok(found);
                    }
                    return Err(e);
                }
            };
            for r in page.reservations() {
                for i in r.instances() {
                    out.push(instance_from(i)?);
                }
            }
        }
        Ok(out)
    }

    async fn capture_instance(&self, id: &InstanceId) -> CloudResult<Raw> {
        let req = serde_json::json!({"InstanceIds": [id]});
        let (_, raw) = captured(
            "ec2",
            "DescribeInstances",
            req,
            |o: &aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| self.ec2.describe_instances().instance_ids(id.as_str()).customize().interceptor(raw).send(),
        )
        .await?;
        Ok(raw)
    }

    async fn capture_attribute(
        &self,
        id: &InstanceId,
        attribute: &str,
    ) -> CloudResult<Captured<Option<String>>> {
        let req = serde_json::json!({"InstanceId": id, "Attribute": attribute});
        let (out, raw) = captured(
            "ec2",
            "DescribeInstanceAttribute",
            req,
            |o: &aws_sdk_ec2::operation::describe_instance_attribute::DescribeInstanceAttributeOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.ec2
                    .describe_instance_attribute()
                    .instance_id(id.as_str())
                    .attribute(InstanceAttributeName::from(attribute))
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        let text =
            |v: Option<&aws_sdk_ec2::types::AttributeValue>| v.and_then(|v| v.value()).map(str::to_owned);
        let flag = |v: Option<&AttributeBooleanValue>| v.and_then(|v| v.value()).map(|b| b.to_string());
        let value = match attribute {
            "userData" => text(out.user_data()),
            "instanceType" => text(out.instance_type()),
            "kernel" => text(out.kernel_id()),
            "ramdisk" => text(out.ramdisk_id()),
            "rootDeviceName" => text(out.root_device_name()),
            "instanceInitiatedShutdownBehavior" => text(out.instance_initiated_shutdown_behavior()),
            "sriovNetSupport" => text(out.sriov_net_support()),
            "disableApiTermination" => flag(out.disable_api_termination()),
            "disableApiStop" => flag(out.disable_api_stop()),
            "sourceDestCheck" => flag(out.source_dest_check()),
            "ebsOptimized" => flag(out.ebs_optimized()),
            "enaSupport" => flag(out.ena_support()),
            // The rest is kept in the raw answer only.
            _ => None,
        };
        Ok(Captured { value, raw })
    }

    async fn capture_network_interfaces(&self, ids: &[NetworkInterfaceId]) -> CloudResult<Raw> {
        let req = serde_json::json!({"NetworkInterfaceIds": json_ids(ids)});
        let (_, raw) = captured(
            "ec2",
            "DescribeNetworkInterfaces",
            req,
            |o: &aws_sdk_ec2::operation::describe_network_interfaces::DescribeNetworkInterfacesOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.ec2
                    .describe_network_interfaces()
                    .set_network_interface_ids(Some(json_ids(ids)))
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        Ok(raw)
    }

    async fn capture_security_groups(&self, ids: &[SecurityGroupId]) -> CloudResult<Raw> {
        let req = serde_json::json!({"GroupIds": json_ids(ids)});
        let (_, raw) = captured(
            "ec2",
            "DescribeSecurityGroups",
            req,
            |o: &aws_sdk_ec2::operation::describe_security_groups::DescribeSecurityGroupsOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.ec2
                    .describe_security_groups()
                    .set_group_ids(Some(json_ids(ids)))
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        Ok(raw)
    }

    async fn capture_profile_associations(&self, id: &InstanceId) -> CloudResult<Raw> {
        let req = serde_json::json!({"Filters": [{"Name": "instance-id", "Values": [id]}]});
        let (_, raw) = captured(
            "ec2",
            "DescribeIamInstanceProfileAssociations",
            req,
            |o: &aws_sdk_ec2::operation::describe_iam_instance_profile_associations::DescribeIamInstanceProfileAssociationsOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.ec2
                    .describe_iam_instance_profile_associations()
                    .filters(filter("instance-id", &[id.as_str()]))
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        Ok(raw)
    }

    async fn console_output(&self, id: &InstanceId, latest: bool) -> CloudResult<Captured<Option<String>>> {
        let req = serde_json::json!({"InstanceId": id, "Latest": latest});
        let (out, raw) = captured(
            "ec2",
            "GetConsoleOutput",
            req,
            |o: &aws_sdk_ec2::operation::get_console_output::GetConsoleOutputOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.ec2
                    .get_console_output()
                    .instance_id(id.as_str())
                    .latest(latest)
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        Ok(Captured { value: out.output().map(str::to_owned), raw })
    }

    async fn console_screenshot(&self, id: &InstanceId) -> CloudResult<Captured<Option<String>>> {
        let req = serde_json::json!({"InstanceId": id});
        let (out, raw) = captured(
            "ec2",
            "GetConsoleScreenshot",
            req,
            |o: &aws_sdk_ec2::operation::get_console_screenshot::GetConsoleScreenshotOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.ec2.get_console_screenshot().instance_id(id.as_str()).customize().interceptor(raw).send()
            },
        )
        .await?;
        Ok(Captured { value: out.image_data().map(str::to_owned), raw })
    }

    async fn instance_storage(&self, instance_type: &str) -> CloudResult<Option<InstanceStorage>> {
        let out = self
            .ec2
            .describe_instance_types()
            .instance_types(aws_sdk_ec2::types::InstanceType::from(instance_type))
            .send()
            .await
            .map_err(CloudError::of("ec2", "DescribeInstanceTypes"))?;
        let info = out.instance_types().first().and_then(|t| t.instance_storage_info());
        Ok(info.map(|i| InstanceStorage {
            disks: i.disks().iter().map(|d| d.count().unwrap_or(0)).sum(),
            total_gib: i.total_size_in_gb().unwrap_or(0),
        }))
    }

    async fn enabled_regions(&self) -> CloudResult<Vec<Region>> {
        let out = self
            .ec2
            .describe_regions()
            .all_regions(false)
            .send()
            .await
            .map_err(CloudError::of("ec2", "DescribeRegions"))?;
        let listed = out.regions().iter().filter_map(|r| Some((r.region_name()?, r.opt_in_status())));
        Ok(enabled_in_partition(listed, &self.region.partition()))
    }

    async fn subnet_zone(&self, subnet: &crate::ids::SubnetId) -> CloudResult<Option<String>> {
        let out = self
            .ec2
            .describe_subnets()
            .subnet_ids(subnet.as_str())
            .send()
            .await
            .map_err(CloudError::of("ec2", "DescribeSubnets"))?;
        Ok(out.subnets().first().and_then(|s| s.availability_zone()).map(str::to_owned))
    }

    async fn run_instance(&self, request: &NewInstance) -> CloudResult<(InstanceId, Call)> {
        const OP: &str = "RunInstances";
        let tags: Vec<Tag> =
            request.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
        let out = self
            .ec2
            .run_instances()
            .image_id(request.image.as_str())
            .instance_type(aws_sdk_ec2::types::InstanceType::from(request.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&request.client_token)
            .network_interfaces(
                aws_sdk_ec2::types::InstanceNetworkInterfaceSpecification::builder()
                    .device_index(0)
                    .subnet_id(request.subnet.as_str())
                    .groups(request.security_group.as_str())
                    // The clean room has no internet: never a public address.
                    .associate_public_ip_address(false)
                    .build(),
            )
            .iam_instance_profile(
                IamInstanceProfileSpecification::builder().name(&request.instance_profile).build(),
            )
            .metadata_options(
                aws_sdk_ec2::types::InstanceMetadataOptionsRequest::builder()
                    .http_tokens(aws_sdk_ec2::types::HttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder().resource_type(ResourceType::Volume).set_tags(Some(tags)).build(),
            )
            .send()
            .await
            .map_err(CloudError::of("ec2", OP))?;
        let id = parse(OP, "InstanceId", out.instances().first().and_then(|i| i.instance_id()))?;
        Ok((id, call(OP, &out)))
    }

    async fn terminate_instance(&self, id: &InstanceId) -> CloudResult<Call> {
        let out = self
            .ec2
            .terminate_instances()
            .instance_ids(id.as_str())
            .send()
            .await
            .map_err(CloudError::of("ec2", "TerminateInstances"))?;
        Ok(call("TerminateInstances", &out))
    }
}

/// The request that finds the case's groups: by the tag [`create_group_request`] sets.
fn case_groups_request(
    ec2: &aws_sdk_ec2::Client,
    case: &CaseId,
) -> aws_sdk_ec2::operation::describe_security_groups::builders::DescribeSecurityGroupsFluentBuilder {
    ec2.describe_security_groups().filters(filter(&format!("tag:{TAG_CASE}"), &[case.as_str()]))
}

/// CreateSecurityGroup with the group's tags in the same call.
fn create_group_request(
    ec2: &aws_sdk_ec2::Client,
    group: &NewGroup,
) -> aws_sdk_ec2::operation::create_security_group::builders::CreateSecurityGroupFluentBuilder {
    let tags = group.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    ec2.create_security_group()
        .group_name(&group.name)
        .description(&group.description)
        .vpc_id(group.vpc.as_str())
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::SecurityGroup)
                .set_tags(Some(tags))
                .build(),
        )
}

fn conntrack_request(
    ec2: &aws_sdk_ec2::Client,
    eni: &NetworkInterfaceId,
    timeouts: &ConnTrack,
) -> aws_sdk_ec2::operation::modify_network_interface_attribute::builders::ModifyNetworkInterfaceAttributeFluentBuilder{
    ec2.modify_network_interface_attribute()
        .network_interface_id(eni.as_str())
        .connection_tracking_specification(
            aws_sdk_ec2::types::ConnectionTrackingSpecificationRequest::builder()
                .set_tcp_established_timeout(timeouts.tcp_established)
                .set_udp_stream_timeout(timeouts.udp_stream)
                .set_udp_timeout(timeouts.udp)
                .build(),
        )
}

fn group_from(g: &aws_sdk_ec2::types::SecurityGroup) -> CloudResult<Group> {
    const OP: &str = "DescribeSecurityGroups";
    let tag = |k: &str| g.tags().iter().find(|t| t.key() == Some(k)).and_then(|t| t.value());
    let mut rules = rules_from(g.ip_permissions(), false);
    rules.extend(rules_from(g.ip_permissions_egress(), true));
    Ok(Group {
        id: parse(OP, "GroupId", g.group_id())?,
        vpc: parse(OP, "VpcId", g.vpc_id())?,
        name: g.group_name().unwrap_or_default().to_owned(),
        purpose: tag(TAG_PURPOSE).and_then(Purpose::from_tag),
        rules,
    })
}

fn route_table_from(t: &aws_sdk_ec2::types::RouteTable) -> CloudResult<RouteTable> {
    const OP: &str = "DescribeRouteTables";
    let mut routes = Vec::new();
    for r in t.routes() {
        let destination = r
            .destination_cidr_block()
            .or(r.destination_ipv6_cidr_block())
            .or(r.destination_prefix_list_id())
            .unwrap_or_default()
            .to_owned();
        let target = r
            .nat_gateway_id()
            .or(r.egress_only_internet_gateway_id())
            .or(r.transit_gateway_id())
            .or(r.gateway_id())
            .or(r.network_interface_id())
            .or(r.vpc_peering_connection_id())
            .or(r.local_gateway_id())
            .or(r.carrier_gateway_id())
            .or(r.core_network_arn())
            .or(r.instance_id())
            .unwrap_or_default()
            .to_owned();
        routes.push(Route { destination, target });
    }
    Ok(RouteTable {
        id: t.route_table_id().ok_or_else(|| missing("ec2", OP, "RouteTableId"))?.to_owned(),
        main: t.associations().iter().any(|a| a.main() == Some(true)),
        subnets: t
            .associations()
            .iter()
            .filter_map(|a| a.subnet_id())
            .filter_map(|s| s.parse().ok())
            .collect(),
        routes,
    })
}

fn associations(
    list: &[aws_sdk_ec2::types::IamInstanceProfileAssociation],
) -> CloudResult<Vec<ProfileAssociation>> {
    const OP: &str = "DescribeIamInstanceProfileAssociations";
    list.iter()
        .map(|a| {
            Ok(ProfileAssociation {
                association_id: a
                    .association_id()
                    .ok_or_else(|| missing("ec2", OP, "AssociationId"))?
                    .to_owned(),
                instance: parse(OP, "InstanceId", a.instance_id())?,
                profile_arn: a
                    .iam_instance_profile()
                    .and_then(|p| p.arn())
                    .ok_or_else(|| missing("ec2", OP, "IamInstanceProfile.Arn"))?
                    .to_owned(),
                state: a.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            })
        })
        .collect()
}

/// The regions of `listed` (name, OptInStatus) that are enabled and in `partition`.
/// AWS answers `AllRegions=false` with the enabled regions of the caller's partition
/// only; the lab (moto) lists every region it knows, opt-in regions as `not-opted-in`
/// and GovCloud and China as `opt-in-not-required`, and searching those would cost a
/// call each for nothing. A region without a status is kept: searching one region too
/// many is cheaper than missing the attacker's.
fn enabled_in_partition<'a>(
    listed: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    partition: &crate::ids::Partition,
) -> Vec<Region> {
    let mut regions: Vec<Region> = listed
        .filter(|(_, status)| status.is_none_or(|s| s == "opt-in-not-required" || s == "opted-in"))
        .filter_map(|(name, _)| name.parse::<Region>().ok())
        .filter(|r| &r.partition() == partition)
        .collect();
    regions.sort();
    regions.dedup();
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_permissions() {
        let rules = vec![
            Rule::all(false, "0.0.0.0/0"),
            Rule::all(true, "::/0"),
            Rule { egress: false, protocol: "tcp".into(), ports: Some((22, 22)), peer: "sg-01234567".into() },
            Rule {
                egress: true,
                protocol: "tcp".into(),
                ports: Some((443, 443)),
                peer: "pl-01234567".into(),
            },
        ];
        for r in &rules {
            let back = rules_from(&[permission(r)], r.egress);
            assert_eq!(back, vec![r.clone()]);
        }
    }

    fn client() -> aws_sdk_ec2::Client {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("eu-west-1"))
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }

    // Regression: this test used to compare the tag constant with itself. A group the
    // tool creates must be one its own search finds: the filter names the key the
    // create call tags with, and asks for the case's value.
    #[test]
    fn a_group_the_tool_creates_is_one_its_search_finds() {
        let case: CaseId = "IR-7".parse().unwrap();
        let new = NewGroup {
            vpc: "vpc-01234567".parse().unwrap(),
            name: Purpose::Isolation.group_name(&case),
            description: "d".into(),
            tags: [
                (TAG_CASE.to_owned(), case.to_string()),
                (TAG_PURPOSE.to_owned(), Purpose::Isolation.tag().to_owned()),
            ]
            .into(),
        };
        let ec2 = client();
        let create = create_group_request(&ec2, &new);
        let spec = &create.as_input().get_tag_specifications().as_ref().unwrap()[0];
        assert_eq!(spec.resource_type(), Some(&ResourceType::SecurityGroup));
        let search = case_groups_request(&ec2, &case);
        let filters = search.as_input().get_filters().as_ref().unwrap();
        assert_eq!(filters.len(), 1, "{filters:?}");
        let key = filters[0].name().unwrap().strip_prefix("tag:").expect("a tag filter");
        let tagged =
            spec.tags().iter().find(|t| t.key() == Some(key)).expect("the created group carries the key");
        assert_eq!(filters[0].values(), [tagged.value().unwrap().to_owned()]);
        assert_eq!(filters[0].values(), [case.to_string()]);
    }

    #[test]
    fn connection_tracking_asks_for_the_given_timeouts() {
        let eni: NetworkInterfaceId = "eni-01234567".parse().unwrap();
        let req = conntrack_request(&client(), &eni, &ConnTrack::MINIMAL);
        let spec = req.as_input().get_connection_tracking_specification().as_ref().unwrap();
        assert_eq!(
            (spec.tcp_established_timeout(), spec.udp_stream_timeout(), spec.udp_timeout()),
            (Some(60), Some(60), Some(30))
        );
        assert_eq!(req.as_input().get_groups(), &None, "groups are left alone");
    }
    #[test]
    fn only_enabled_regions_of_the_callers_partition_are_searched() {
        let listed = [
            ("eu-west-1", Some("opt-in-not-required")),
            ("us-east-1", Some("opt-in-not-required")),
            ("ap-east-1", Some("not-opted-in")),
            ("me-south-1", Some("opted-in")),
            ("us-gov-west-1", Some("opt-in-not-required")),
            ("cn-north-1", Some("opt-in-not-required")),
            ("eu-south-2", None),
            ("not a region", Some("opt-in-not-required")),
        ];
        let names = |p: &str| {
            let partition = p.parse::<Region>().unwrap().partition();
            enabled_in_partition(listed.iter().copied(), &partition)
                .into_iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("eu-west-1"), ["eu-south-2", "eu-west-1", "me-south-1", "us-east-1"]);
        assert_eq!(names("cn-northwest-1"), ["cn-north-1"]);
        assert_eq!(names("us-gov-east-1"), ["us-gov-west-1"]);
    }
}
