//! EBS through the EC2 API: volumes, crash-consistent snapshots, copies under another
//! key, sharing with another account.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Call, Captured, CloudResult};
use crate::ids::{AccountId, InstanceId, Region, SnapshotId, VolumeId};

/// A snapshot's state as EC2 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotState {
    Pending,
    Completed,
    Error,
    /// Archive and recycle-bin states, or anything newer than this code.
    Other(String),
}

impl SnapshotState {
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => SnapshotState::Pending,
            "completed" => SnapshotState::Completed,
            "error" => SnapshotState::Error,
            other => SnapshotState::Other(other.to_owned()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    /// The volume it was taken from (for a copy: the original volume, as EC2 keeps it).
    pub volume: Option<VolumeId>,
    pub state: SnapshotState,
    /// `"42%"` as EC2 gives it.
    pub progress: Option<String>,
    pub state_message: Option<String>,
    pub encrypted: bool,
    /// Key ARN (or id) of an encrypted snapshot.
    pub kms_key: Option<String>,
    pub owner: Option<AccountId>,
    pub size_gib: Option<i32>,
    pub start_time: Option<String>,
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl Snapshot {
    /// Percent done, 0 to 100, when EC2 says.
    pub fn percent(&self) -> Option<u8> {
        self.progress.as_deref()?.trim_end_matches('%').trim().parse().ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub id: VolumeId,
    pub size_gib: i32,
    pub volume_type: Option<String>,
    pub encrypted: bool,
    pub kms_key: Option<String>,
    pub availability_zone: Option<String>,
    pub state: String,
    pub snapshot: Option<SnapshotId>,
    /// (instance, device) of each attachment.
    pub attachments: Vec<(InstanceId, String)>,
    pub tags: BTreeMap<String, String>,
}

/// CopySnapshot, called in the account and region that receives the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRequest {
    pub source: SnapshotId,
    pub source_region: Region,
    /// The key of the copy; `None`: the source's encryption as it is (unencrypted stays so).
    pub kms_key: Option<String>,
    pub description: String,
    /// Set in the same call (TagSpecifications): a crash after the copy cannot leave an
    /// untagged copy that a rerun would not find and would duplicate.
    pub tags: BTreeMap<String, String>,
}

#[async_trait]
pub trait Ebs: Send + Sync {
    /// DescribeVolumes of the given ids, with the raw answer.
    async fn capture_volumes(&self, ids: &[VolumeId]) -> CloudResult<Captured<Vec<Volume>>>;
    /// CreateSnapshots: every EBS volume of the instance at one point in time
    /// (crash-consistent), each snapshot tagged with `tags` and its source volume's tags.
    async fn create_snapshots(
        &self,
        instance: &InstanceId,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<(Vec<Snapshot>, Call)>;
    /// CreateSnapshot of one volume: the retry of a snapshot that ended in `error` (not
    /// crash-consistent with its siblings; the custody record says so).
    async fn create_snapshot(
        &self,
        volume: &VolumeId,
        description: &str,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<(Snapshot, Call)>;
    async fn snapshots(&self, ids: &[SnapshotId]) -> CloudResult<Vec<Snapshot>>;
    /// Snapshots owned by this account carrying every tag `K` = `V` given.
    async fn find_snapshots(&self, tags: &[(String, String)]) -> CloudResult<Vec<Snapshot>>;
    async fn copy_snapshot(&self, request: &CopyRequest) -> CloudResult<(SnapshotId, Call)>;
    /// Adds `account` to the snapshot's createVolumePermission.
    async fn share_snapshot(&self, id: &SnapshotId, account: &AccountId) -> CloudResult<Call>;
    /// Removes `account` from it (a separate call: EC2 cannot add and remove in one).
    async fn unshare_snapshot(&self, id: &SnapshotId, account: &AccountId) -> CloudResult<Call>;
    /// Accounts the snapshot is shared with (`all` when public).
    async fn snapshot_shares(&self, id: &SnapshotId) -> CloudResult<Vec<String>>;
    async fn delete_snapshot(&self, id: &SnapshotId) -> CloudResult<Call>;

    // Volumes of the clean room.
    async fn create_volume(&self, request: &NewVolume) -> CloudResult<(VolumeId, Call)>;
    async fn volumes(&self, ids: &[VolumeId]) -> CloudResult<Vec<Volume>>;
    /// Volumes carrying every tag `K` = `V` given (not deleted).
    async fn find_volumes(&self, tags: &[(String, String)]) -> CloudResult<Vec<Volume>>;
    async fn attach_volume(
        &self,
        volume: &VolumeId,
        instance: &InstanceId,
        device: &str,
    ) -> CloudResult<Call>;
    /// Detaches `volume` from `instance` (named: an emulator and a careful caller both want it).
    async fn detach_volume(&self, volume: &VolumeId, instance: &InstanceId) -> CloudResult<Call>;
    async fn delete_volume(&self, volume: &VolumeId) -> CloudResult<Call>;
}

/// CreateVolume from a snapshot, tagged in the same call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVolume {
    pub snapshot: SnapshotId,
    pub availability_zone: String,
    pub kms_key: Option<String>,
    pub tags: BTreeMap<String, String>,
}
