//! `cleanroom acquire` end to end against the lab: the cryptomining incident (an
//! instance launched with a leaked key, a miner in its UserData, a root volume under the
//! default aws/ebs key and an unencrypted data volume) acquired with `--no-analysis`.

use aws_sdk_ec2::types::Filter;
use cleanroom::aws::s3::S3Store;
use cleanroom::evidence::store::get_all;
use cleanroom::lab::scenario::{self, Suspect};

use crate::support::*;

/// The cryptomining incident seeded in a member account, with a forensics account
/// (the clean-room tests add their own methods).
pub(super) struct Incident {
    pub(super) f: Forensics,
    pub(super) suspect: Suspect,
    _work: tempfile::TempDir,
}

impl Incident {
    pub(super) async fn seed() -> Self {
        let f = Forensics::seed().await;
        let work = tempfile::tempdir().unwrap();
        let member = unique_account();
        let suspect =
            scenario::cryptomining(lab(), &member, &region(), &f.account, work.path()).await.unwrap();
        Self { f, suspect, _work: work }
    }

    pub(super) fn store(&self) -> S3Store {
        S3Store::new(self.f.clients().s3, self.f.config.forensics.evidence_bucket.clone())
    }

    async fn item(&self, case: &str, name: &str) -> String {
        let key = format!("cases/{case}/evidence/{}/{}/{name}", self.suspect.account, self.suspect.instance);
        let bytes =
            get_all(&self.store(), &key, None, 1 << 24).await.unwrap_or_else(|e| panic!("{key}: {e}"));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Snapshots of the case in the forensics account.
    async fn forensics_copies(&self, case: &str) -> Vec<aws_sdk_ec2::types::Snapshot> {
        self.f
            .clients()
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name("tag:cleanroom:case").values(case).build())
            .send()
            .await
            .unwrap()
            .snapshots()
            .to_vec()
    }

    /// Accounts each member snapshot of the case is still shared with.
    async fn member_shares(&self, case: &str) -> Vec<(String, Vec<String>)> {
        let c = clients(&self.suspect.account);
        let snaps = c
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name("tag:cleanroom:case").values(case).build())
            .send()
            .await
            .unwrap();
        let mut out = Vec::new();
        for s in snaps.snapshots() {
            let id = s.snapshot_id().unwrap().to_owned();
            let attr = c
                .ec2
                .describe_snapshot_attribute()
                .snapshot_id(&id)
                .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                .send()
                .await
                .unwrap();
            out.push((
                id,
                attr.create_volume_permissions()
                    .iter()
                    .filter_map(|p| p.user_id().map(str::to_owned))
                    .collect(),
            ));
        }
        out
    }
}

#[tokio::test]
async fn acquire_hands_off_both_disks_captures_the_launch_and_verifies_online_and_offline() {
    let w = Incident::seed().await;
    let case = "IR-ACQ-LAB-1";
    let run = w.f.cleanroom(&["acquire", &w.suspect.arn(), "--case", case, "--no-analysis"]);
    run.success().stdout_has("isolated").stdout_has("next: cleanroom verify");

    // Two completed copies in the forensics account, under its key.
    let copies = w.forensics_copies(case).await;
    assert_eq!(copies.len(), 2, "{copies:#?}");
    for c in &copies {
        assert_eq!(c.state().map(|s| s.as_str()), Some("completed"));
        assert_eq!(c.kms_key_id(), Some(w.f.config.forensics.kms_key_arn.as_str()), "{c:?}");
    }
    // The member account keeps no share.
    for (snap, shares) in w.member_shares(case).await {
        assert!(shares.is_empty(), "{snap} still shared with {shares:?}");
    }
    // Capture: decoded UserData with the miner line, console output, the launch event.
    assert!(w.item(case, "userdata.bin").await.contains("stratum+tcp://pool.minexmr.example"), "userdata");
    assert!(w.item(case, "console-output.txt").await.contains("xmrig"));
    let trail = w.item(case, "capture-cloudtrail.json").await;
    assert!(trail.contains("RunInstances") && trail.contains(&w.suspect.access_key), "{trail}");
    let summary: serde_json::Value =
        serde_json::from_str(&w.item(case, "capture-summary.json").await).unwrap();
    assert_eq!(summary["trail"]["launched_by"]["access_key_id"], w.suspect.access_key.as_str());
    assert_eq!(summary["trail"]["launched_by"]["source_ip"], scenario::ATTACKER_IP);

    w.f.cleanroom(&["verify", "--case", case]).success();
    let (_dir, folder, key) = crate::evidence::forgery::hand_over(&w.f, case).await;
    w.f.cleanroom(&["verify", "--case", case, "--dir", &folder, "--public-key", &key])
        .success()
        .stdout_has("VERIFIED");

    // A rerun changes nothing and makes nothing twice.
    w.f.cleanroom(&["acquire", &w.suspect.arn(), "--case", case, "--no-analysis"]).success();
    assert_eq!(w.forensics_copies(case).await.len(), 2);
}

/// Keys of the case's objects under `prefix`.
async fn keys(w: &Incident, prefix: &str) -> Vec<String> {
    use cleanroom::evidence::store::ObjectStore;
    w.store().list(prefix).await.unwrap()
}

#[tokio::test]
async fn acquire_examines_the_disks_in_the_clean_room_and_teardown_removes_only_what_the_case_made() {
    let w = Incident::seed().await;
    let case = "IR-ACQ-LAB-CR";
    let run = w.f.cleanroom(&["acquire", &w.suspect.arn(), "--case", case]);
    run.success().stdout_has("findings").stdout_has("xmrig").stdout_has("authorized_key");
    // The data volume's image, triage and YARA results are evidence items of the case.
    let evidence =
        keys(&w, &format!("cases/{case}/evidence/{}/{}/", w.suspect.account, w.suspect.instance)).await;
    for name in ["image.raw", "image.json", "triage.json", "key-files.tar.gz", "timeline.csv", "yara.json"] {
        assert!(evidence.iter().any(|k| k.ends_with(&format!("/{name}"))), "no {name} in {evidence:#?}");
    }
    w.f.cleanroom(&["verify", "--case", case]).success().stdout_has("VERIFIED");

    let fc = w.f.clients();
    let analysis = |states: &'static [&'static str]| {
        let fc = fc.clone();
        async move {
            let volumes = fc
                .ec2
                .describe_volumes()
                .filters(Filter::builder().name("tag:cleanroom:purpose").values("analysis").build())
                .filters(Filter::builder().name("tag:cleanroom:case").values(case).build())
                // Evidence volumes (the analysis instance's root volume is tagged too).
                .filters(Filter::builder().name("tag-key").values("cleanroom:source-snapshot").build())
                .send()
                .await
                .unwrap();
            let instances = fc
                .ec2
                .describe_instances()
                .filters(Filter::builder().name("tag:cleanroom:case").values(case).build())
                .filters(
                    Filter::builder()
                        .name("instance-state-name")
                        .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
                        .build(),
                )
                .send()
                .await
                .unwrap();
            (
                volumes.volumes().len(),
                instances.reservations().iter().map(|r| r.instances().len()).sum::<usize>(),
            )
        }
    };
    assert_eq!(analysis(&["running"]).await, (2, 1), "two evidence volumes on one analysis instance");
    let down = w.f.cleanroom(&["teardown", "--case", case]);
    down.success().stdout_has("removed");
    assert_eq!(analysis(&["pending", "running", "stopping", "stopped"]).await, (0, 0), "{}", down.stdout());
    assert_eq!(w.forensics_copies(case).await.len(), 2, "the forensics copies stay");
    w.f.cleanroom(&["verify", "--case", case]).success();
}
