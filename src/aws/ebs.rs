//! EBS adapter: [`Ebs`] on [`AccountClients`] through the EC2 API (snapshots, copies,
//! sharing, volumes).

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::operation::RequestId;
use aws_sdk_ec2::types::{
    CreateVolumePermission, CreateVolumePermissionModifications, Filter, InstanceSpecification, ResourceType,
    SnapshotAttributeName, Tag, TagSpecification,
};

use super::AccountClients;
use super::ec2::rfc3339;
use super::raw::captured;
use crate::cloud::{
    Call, Captured, CloudError, CloudResult, CopyRequest, Ebs, ErrorKind, NewVolume, Snapshot, SnapshotState,
    Volume, missing,
};
use crate::ids::{AccountId, InstanceId, SnapshotId, VolumeId};

fn tags_of(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
        .collect()
}

fn tag_spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()))
        .build()
}

fn parse<T: std::str::FromStr>(operation: &'static str, field: &str, value: Option<&str>) -> CloudResult<T> {
    value.and_then(|v| v.parse().ok()).ok_or_else(|| missing("ec2", operation, field))
}

fn snapshot_from(s: &aws_sdk_ec2::types::Snapshot) -> CloudResult<Snapshot> {
    const OP: &str = "DescribeSnapshots";
    Ok(Snapshot {
        id: parse(OP, "SnapshotId", s.snapshot_id())?,
        volume: s.volume_id().and_then(|v| v.parse().ok()),
        state: SnapshotState::parse(s.state().map(|s| s.as_str()).unwrap_or("unknown")),
        progress: s.progress().map(str::to_owned),
        state_message: s.state_message().map(str::to_owned),
        encrypted: s.encrypted().unwrap_or(false),
        kms_key: s.kms_key_id().map(str::to_owned),
        owner: s.owner_id().and_then(|o| o.parse().ok()),
        size_gib: s.volume_size(),
        start_time: s.start_time().and_then(rfc3339),
        description: s.description().map(str::to_owned),
        tags: tags_of(s.tags()),
    })
}

fn volume_from(v: &aws_sdk_ec2::types::Volume) -> CloudResult<Volume> {
    const OP: &str = "DescribeVolumes";
    Ok(Volume {
        id: parse(OP, "VolumeId", v.volume_id())?,
        size_gib: v.size().unwrap_or_default(),
        volume_type: v.volume_type().map(|t| t.as_str().to_owned()),
        encrypted: v.encrypted().unwrap_or(false),
        kms_key: v.kms_key_id().map(str::to_owned),
        availability_zone: v.availability_zone().map(str::to_owned),
        state: v.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        snapshot: v.snapshot_id().filter(|s| !s.is_empty()).and_then(|s| s.parse().ok()),
        attachments: v
            .attachments()
            .iter()
            .filter_map(|a| Some((a.instance_id()?.parse().ok()?, a.device().unwrap_or_default().to_owned())))
            .collect(),
        tags: tags_of(v.tags()),
    })
}

fn ids<T: std::fmt::Display>(ids: &[T]) -> Vec<String> {
    ids.iter().map(|i| i.to_string()).collect()
}

#[async_trait]
impl Ebs for AccountClients {
    async fn capture_volumes(&self, volume_ids: &[VolumeId]) -> CloudResult<Captured<Vec<Volume>>> {
        let req = serde_json::json!({"VolumeIds": ids(volume_ids)});
        let (out, raw) = captured(
            "ec2",
            "DescribeVolumes",
            req,
            |o: &aws_sdk_ec2::operation::describe_volumes::DescribeVolumesOutput| {
                o.request_id().map(str::to_owned)
            },
            |raw| {
                self.ec2
                    .describe_volumes()
                    .set_volume_ids(Some(ids(volume_ids)))
                    .customize()
                    .interceptor(raw)
                    .send()
            },
        )
        .await?;
        let value = out.volumes().iter().map(volume_from).collect::<CloudResult<Vec<_>>>()?;
        Ok(Captured { value, raw })
    }

    async fn create_snapshots(
        &self,
        instance: &InstanceId,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<(Vec<Snapshot>, Call)> {
        const OP: &str = "CreateSnapshots";
        let out = self
            .ec2
            .create_snapshots()
            .instance_specification(
                InstanceSpecification::builder()
                    .instance_id(instance.as_str())
                    .exclude_boot_volume(false)
                    .build(),
            )
            .description(description)
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
            .send()
            .await
            .map_err(CloudError::of("ec2", OP))?;
        let mut snapshots = Vec::new();
        for s in out.snapshots() {
            snapshots.push(Snapshot {
                id: parse(OP, "SnapshotId", s.snapshot_id())?,
                volume: s.volume_id().and_then(|v| v.parse().ok()),
                state: SnapshotState::parse(s.state().map(|s| s.as_str()).unwrap_or("pending")),
                progress: s.progress().map(str::to_owned),
                state_message: None,
                encrypted: s.encrypted().unwrap_or(false),
                kms_key: None,
                owner: s.owner_id().and_then(|o| o.parse().ok()),
                size_gib: s.volume_size(),
                start_time: s.start_time().and_then(rfc3339),
                description: s.description().map(str::to_owned),
                tags: tags_of(s.tags()),
            });
        }
        Ok((snapshots, Call::new(&format!("ec2:{OP}"), out.request_id())))
    }

    async fn create_snapshot(
        &self,
        volume: &VolumeId,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<(Snapshot, Call)> {
        const OP: &str = "CreateSnapshot";
        let out = self
            .ec2
            .create_snapshot()
            .volume_id(volume.as_str())
            .description(description)
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
            .send()
            .await
            .map_err(CloudError::of("ec2", OP))?;
        let snapshot = Snapshot {
            id: parse(OP, "SnapshotId", out.snapshot_id())?,
            volume: out.volume_id().and_then(|v| v.parse().ok()),
            state: SnapshotState::parse(out.state().map(|s| s.as_str()).unwrap_or("pending")),
            progress: out.progress().map(str::to_owned),
            state_message: out.state_message().map(str::to_owned),
            encrypted: out.encrypted().unwrap_or(false),
            kms_key: out.kms_key_id().map(str::to_owned),
            owner: out.owner_id().and_then(|o| o.parse().ok()),
            size_gib: out.volume_size(),
            start_time: out.start_time().and_then(rfc3339),
            description: out.description().map(str::to_owned),
            tags: tags_of(out.tags()),
        };
        Ok((snapshot, Call::new(&format!("ec2:{OP}"), out.request_id())))
    }

    async fn snapshots(&self, snapshot_ids: &[SnapshotId]) -> CloudResult<Vec<Snapshot>> {
        let out = self
            .ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(ids(snapshot_ids)))
            .send()
            .await
            .map_err(CloudError::of("ec2", "DescribeSnapshots"))?;
        out.snapshots().iter().map(snapshot_from).collect()
    }

    async fn find_snapshots(&self, tags: &[(String, String)]) -> CloudResult<Vec<Snapshot>> {
        let filters: Vec<Filter> =
            tags.iter().map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build()).collect();
        let mut pages = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .set_filters(Some(filters))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(CloudError::of("ec2", "DescribeSnapshots"))?;
            for s in page.snapshots() {
                out.push(snapshot_from(s)?);
            }
        }
        Ok(out)
    }

    async fn copy_snapshot(&self, request: &CopyRequest) -> CloudResult<(SnapshotId, Call)> {
        const OP: &str = "CopySnapshot";
        let mut req = self
            .ec2
            .copy_snapshot()
            .source_snapshot_id(request.source.as_str())
            .source_region(request.source_region.as_str())
            .description(&request.description)
            .tag_specifications(tag_spec(ResourceType::Snapshot, &request.tags));
        if let Some(key) = &request.kms_key {
            req = req.encrypted(true).kms_key_id(key);
        }
        let out = req.send().await.map_err(CloudError::of("ec2", OP))?;
        Ok((parse(OP, "SnapshotId", out.snapshot_id())?, Call::new(&format!("ec2:{OP}"), out.request_id())))
    }

    async fn share_snapshot(&self, id: &SnapshotId, account: &AccountId) -> CloudResult<Call> {
        let out = self
            .ec2
            .modify_snapshot_attribute()
            .snapshot_id(id.as_str())
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(
                CreateVolumePermissionModifications::builder()
                    .add(CreateVolumePermission::builder().user_id(account.as_str()).build())
                    .build(),
            )
            .send()
            .await
            .map_err(CloudError::of("ec2", "ModifySnapshotAttribute"))?;
        Ok(Call::new("ec2:ModifySnapshotAttribute", out.request_id()))
    }

    async fn unshare_snapshot(&self, id: &SnapshotId, account: &AccountId) -> CloudResult<Call> {
        let out = self
            .ec2
            .modify_snapshot_attribute()
            .snapshot_id(id.as_str())
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .create_volume_permission(
                CreateVolumePermissionModifications::builder()
                    .remove(CreateVolumePermission::builder().user_id(account.as_str()).build())
                    .build(),
            )
            .send()
            .await
            .map_err(CloudError::of("ec2", "ModifySnapshotAttribute"))?;
        Ok(Call::new("ec2:ModifySnapshotAttribute", out.request_id()))
    }

    async fn snapshot_shares(&self, id: &SnapshotId) -> CloudResult<Vec<String>> {
        let out = self
            .ec2
            .describe_snapshot_attribute()
            .snapshot_id(id.as_str())
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .map_err(CloudError::of("ec2", "DescribeSnapshotAttribute"))?;
        Ok(out
            .create_volume_permissions()
            .iter()
            .filter_map(|p| {
                p.user_id().map(str::to_owned).or_else(|| p.group().map(|g| g.as_str().to_owned()))
            })
            .collect())
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> CloudResult<Call> {
        match self.ec2.delete_snapshot().snapshot_id(id.as_str()).send().await {
            Ok(out) => Ok(Call::new("ec2:DeleteSnapshot", out.request_id())),
            Err(e) => {
                let e = CloudError::from_sdk("ec2", "DeleteSnapshot", e);
                if e.is(ErrorKind::NotFound) { Ok(Call::new("ec2:DeleteSnapshot", None)) } else { Err(e) }
            }
        }
    }

    async fn create_volume(&self, request: &NewVolume) -> CloudResult<(VolumeId, Call)> {
        const OP: &str = "CreateVolume";
        let mut req = self
            .ec2
            .create_volume()
            .snapshot_id(request.snapshot.as_str())
            .availability_zone(&request.availability_zone)
            .volume_type(aws_sdk_ec2::types::VolumeType::Gp3)
            .tag_specifications(tag_spec(ResourceType::Volume, &request.tags));
        if let Some(key) = &request.kms_key {
            req = req.encrypted(true).kms_key_id(key);
        }
        let out = req.send().await.map_err(CloudError::of("ec2", OP))?;
        Ok((parse(OP, "VolumeId", out.volume_id())?, Call::new(&format!("ec2:{OP}"), out.request_id())))
    }

    async fn volumes(&self, volume_ids: &[VolumeId]) -> CloudResult<Vec<Volume>> {
        let out = self
            .ec2
            .describe_volumes()
            .set_volume_ids(Some(ids(volume_ids)))
            .send()
            .await
            .map_err(CloudError::of("ec2", "DescribeVolumes"))?;
        out.volumes().iter().map(volume_from).collect()
    }

    async fn find_volumes(&self, tags: &[(String, String)]) -> CloudResult<Vec<Volume>> {
        let filters: Vec<Filter> =
            tags.iter().map(|(k, v)| Filter::builder().name(format!("tag:{k}")).values(v).build()).collect();
        let mut pages = self.ec2.describe_volumes().set_filters(Some(filters)).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(CloudError::of("ec2", "DescribeVolumes"))?;
            for v in page.volumes() {
                out.push(volume_from(v)?);
            }
        }
        Ok(out)
    }

    async fn attach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<Call> {
        let out = self
            .ec2
            .attach_volume()
            .volume_id(volume.as_str())
            .instance_id(instance.as_str())
            .device(device)
            .send()
            .await
            .map_err(CloudError::of("ec2", "AttachVolume"))?;
        Ok(Call::new("ec2:AttachVolume", out.request_id()))
    }

    async fn detach_volume(&self, volume: &VolumeId, instance: &InstanceId) -> CloudResult<Call> {
        let out = self
            .ec2
            .detach_volume()
            .volume_id(volume.as_str())
            .instance_id(instance.as_str())
            .send()
            .await
            .map_err(CloudError::of("ec2", "DetachVolume"))?;
        Ok(Call::new("ec2:DetachVolume", out.request_id()))
    }

    async fn delete_volume(&self, volume: &VolumeId) -> CloudResult<Call> {
        let out = self
            .ec2
            .delete_volume()
            .volume_id(volume.as_str())
            .send()
            .await
            .map_err(CloudError::of("ec2", "DeleteVolume"))?;
        Ok(Call::new("ec2:DeleteVolume", out.request_id()))
    }
}
