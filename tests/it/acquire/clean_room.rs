//! The clean room's failures against the lab: the cryptomining incident acquired while
//! the analysis AMI, the SSM agent, a collection document or the process itself fails.
//! Each test checks the exit code of the CLI contract (1: failed, state recorded,
//! resumable), a message that names the problem and the fix, the custody record (or that
//! nothing was made), and that `teardown` and `verify` still work on the case.

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use cleanroom::config::AmiSource;
use cleanroom::evidence::store::{ObjectStore, get_all};
use serde_json::json;

use super::lab::Incident;
use crate::support::*;

/// What the case has in the forensics account's clean room.
#[derive(Debug, PartialEq, Eq)]
struct Room {
    /// Evidence volumes (made from forensics copies) that still exist.
    volumes: usize,
    /// Analysis instances not terminated.
    instances: usize,
}

impl Incident {
    fn acquire(&self, case: &str) -> Run {
        self.f.cleanroom(&["acquire", &self.suspect.arn(), "--case", case])
    }

    async fn room(&self, case: &str) -> Room {
        let ec2 = self.f.clients().ec2;
        let volumes = ec2
            .describe_volumes()
            .filters(Filter::builder().name("tag:cleanroom:case").values(case).build())
            .filters(Filter::builder().name("tag-key").values("cleanroom:source-snapshot").build())
            .send()
            .await
            .unwrap();
        let instances = ec2
            .describe_instances()
            .filters(Filter::builder().name("tag:cleanroom:case").values(case).build())
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(
                        ["pending", "running", "stopping", "stopped"].map(String::from).to_vec(),
                    ))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        Room {
            volumes: volumes.volumes().len(),
            instances: instances.reservations().iter().map(|r| r.instances().len()).sum(),
        }
    }

    /// The case's custody records, in order.
    async fn custody(&self, case: &str) -> Vec<serde_json::Value> {
        let store = self.store();
        let mut keys = store.list(&format!("cases/{case}/custody/")).await.unwrap();
        keys.sort();
        let mut out = Vec::new();
        for key in keys {
            let bytes = get_all(&store, &key, None, 1 << 20).await.unwrap();
            out.push(serde_json::from_slice(&bytes).unwrap());
        }
        out
    }

    async fn actions(&self, case: &str, action: &str) -> Vec<serde_json::Value> {
        self.custody(case).await.into_iter().filter(|r| r["action"] == action).collect()
    }

    /// Arms a lab fault in the forensics account (`/_lab/faults`).
    async fn fault(&self, body: serde_json::Value) {
        lab()
            .admin(
                reqwest::Method::POST,
                &format!("/_lab/faults?region={REGION}"),
                Some(&self.f.account),
                Some(body),
            )
            .await
            .unwrap();
    }

    /// `teardown --case` twice: the first removes what is listed, the second nothing,
    /// and says so, without a custody record.
    #[track_caller]
    fn teardown_twice(&self, case: &str) -> (Run, Run) {
        let first = self.f.cleanroom(&["teardown", "--case", case]);
        first.success();
        let second = self.f.cleanroom(&["teardown", "--case", case]);
        second.success().stdout_has("nothing removed");
        (first, second)
    }
}

/// The whole custody chain, offline keys aside, still verifies.
#[track_caller]
fn verifies(w: &Incident, case: &str) {
    w.f.cleanroom(&["verify", "--case", case]).success().stdout_has("VERIFIED");
}

#[tokio::test]
async fn analysis_ami_parameter_missing_or_not_an_ami_id_launches_nothing_and_names_the_fix() {
    let mut w = Incident::seed().await;
    let case = "IR-CR-AMI-PARAM";
    let parameter = "/cleanroom/forensic-ami-test";
    w.f.config.analysis.ami = AmiSource::SsmParameter(parameter.into());
    w.f.save();

    let missing = w.acquire(case);
    missing
        .expect_code(1)
        .stdout_has(&format!("the analysis AMI parameter {parameter} does not exist"))
        .stdout_has("fix: publish the tooling AMI id there");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 0 }, "nothing launched");

    // Garbage in the parameter: named, with its value, and still nothing launched.
    w.f.clients()
        .ssm
        .put_parameter()
        .name(parameter)
        .value("latest\u{1b}[31m")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let garbage = w.acquire(case);
    garbage
        .expect_code(1)
        .stdout_has(&format!("the analysis AMI parameter {parameter} holds \"latest\\u{{1b}}[31m\""))
        .stdout_has("fix: put the tooling AMI's id (ami-...) in it");
    assert!(!garbage.stdout().contains('\u{1b}'), "the value reaches the terminal raw");

    // An AMI id that does not exist: RunInstances refuses, the fix is named. (The lab's
    // moto launches from any id; AWS answers this.)
    w.fault(
        json!({"service": "ec2", "action": "RunInstances", "code": "InvalidAMIID.NotFound", "status": 400,
                   "message": "The image id '[ami-0badc0ffee0000000]' does not exist"}),
    )
    .await;
    w.f.clients()
        .ssm
        .put_parameter()
        .name(parameter)
        .value("ami-0badc0ffee0000000")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .unwrap();
    let absent = w.acquire(case);
    absent
        .expect_code(1)
        .stdout_has("the analysis AMI ami-0badc0ffee0000000 (SSM parameter")
        .stdout_has("fix: build the tooling AMI");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 0 }, "nothing launched");
    assert!(w.actions(case, "analysis_instance_launched").await.is_empty());

    let (first, _) = w.teardown_twice(case);
    first.stdout_has("nothing removed");
    verifies(&w, case);
}

#[tokio::test]
async fn analysis_instance_that_never_comes_online_in_ssm_is_named_and_teardown_removes_it() {
    let mut w = Incident::seed().await;
    let case = "IR-CR-OFFLINE";
    // A tooling AMI without the SSM agent: the lab never registers its instances.
    let image =
        w.f.clients()
            .ec2
            .register_image()
            .name("tooling-without-agent")
            .root_device_name("/dev/xvda")
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .tags(Tag::builder().key("cleanroom:role").value("forensic-tooling").build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
    let ami = image.image_id().unwrap().to_owned();
    w.f.config.analysis.ami = AmiSource::Id(ami.parse().unwrap());
    // No waiting: one look at SSM, then the error.
    w.f.config.limits.ssm_online_timeout_minutes = 0;
    w.f.save();

    let run = w.acquire(case);
    run.expect_code(1)
        .stdout_has("did not come online in SSM")
        .stdout_has("limits.ssm_online_timeout_minutes = 0")
        .stdout_has("fix: check that the tooling AMI runs the SSM agent")
        .stdout_has(&format!("cleanroom teardown --case {case}"));
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 1 });
    let launched = w.actions(case, "analysis_instance_launched").await;
    assert_eq!(launched.len(), 1, "{launched:#?}");
    assert_eq!(launched[0]["details"]["ami"], ami.as_str());
    assert!(w.actions(case, "collection_started").await.is_empty(), "no document was sent");

    let (first, _) = w.teardown_twice(case);
    first.stdout_has("removed");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 0 });
    let removed = w.actions(case, "resource_removed").await;
    assert_eq!(removed.len(), 1, "one removal, recorded once: {removed:#?}");
    verifies(&w, case);
}

#[tokio::test]
async fn collection_document_failing_on_the_instance_is_reported_and_a_rerun_sends_it_again() {
    let w = Incident::seed().await;
    let case = "IR-CR-DOC-FAILS";
    // Triage fails on the first volume it runs on, as a tooling AMI without YARA would.
    lab()
        .admin(
            reqwest::Method::POST,
            &format!("/_lab/ssm/step-failures?region={REGION}"),
            Some(&w.f.account),
            Some(json!({"document": w.f.config.ssm.triage, "exit_code": 5,
                        "stderr": "triage.sh: fls is missing: run scripts/setup", "times": 1})),
        )
        .await
        .unwrap();

    let failed = w.acquire(case);
    failed
        .expect_code(1)
        .stdout_has(&format!("{} on volume vol-", w.f.config.ssm.triage))
        .stdout_has("failed (exit 5): a tool the document calls is missing on the analysis instance")
        .stdout_has("triage.sh: fls is missing")
        .stdout_has("fix: rebuild the tooling AMI");
    // The root volume holds no file system the Sleuth Kit reads (exit 3: a recorded
    // gap, not a failure); the injected failure is the one other record.
    let (records, gaps): (Vec<_>, Vec<_>) = w
        .actions(case, "collection_failed")
        .await
        .into_iter()
        .partition(|r| r["details"]["response_code"] != 3);
    assert_eq!(records.len(), 1, "{records:#?}");
    assert!(gaps.len() <= 2, "{gaps:#?}");
    assert_eq!(records[0]["details"]["response_code"], 5);
    assert_eq!(records[0]["details"]["document"], w.f.config.ssm.triage.as_str());
    // The agent's stderr is evidence of the attempt, with its digest.
    let logs = records[0]["evidence"].as_array().unwrap();
    assert!(logs.iter().any(|e| e["s3_key"].as_str().unwrap().ends_with("/stderr")), "{logs:#?}");

    // The cause gone, the same command finishes the case: the failed document is sent
    // again, nothing else is made twice.
    let rerun = w.acquire(case);
    rerun.success().stdout_has("xmrig");
    assert_eq!(w.room(case).await, Room { volumes: 2, instances: 1 });
    let triage_started = w
        .actions(case, "collection_started")
        .await
        .into_iter()
        .filter(|r| r["details"]["document"] == w.f.config.ssm.triage.as_str())
        .count();
    assert_eq!(triage_started, 3, "two volumes, one sent again");

    let (first, _) = w.teardown_twice(case);
    first.stdout_has("removed");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 0 });
    verifies(&w, case);
}

#[tokio::test]
async fn collection_document_that_outlasts_the_command_timeout_is_recorded_and_a_rerun_waits_for_it() {
    let mut w = Incident::seed().await;
    let case = "IR-CR-CMD-TIMEOUT";
    // The disk image takes 20 s more on the first volume; cleanroom waits 0 minutes.
    lab()
        .admin(
            reqwest::Method::POST,
            &format!("/_lab/ssm/step-failures?region={REGION}"),
            Some(&w.f.account),
            Some(json!({"document": w.f.config.ssm.disk_image, "delay_seconds": 20, "times": 1})),
        )
        .await
        .unwrap();
    w.f.config.limits.command_timeout_minutes = 0;
    w.f.save();
    w.acquire(case)
        .expect_code(1)
        .stdout_has(&format!("{} on volume vol-", w.f.config.ssm.disk_image))
        .stdout_has("did not finish within 0 minute(s)")
        .stdout_has("rerun to keep waiting");
    let stopped: Vec<_> = w
        .actions(case, "collection_failed")
        .await
        .into_iter()
        .filter(|r| r["details"]["still_running"] == true)
        .collect();
    // Each volume's image command (they run side by side) was still running.
    assert!(!stopped.is_empty());
    assert!(
        stopped.iter().all(|r| r["details"]["document"] == w.f.config.ssm.disk_image.as_str()),
        "{stopped:#?}"
    );
    let commands: Vec<String> =
        stopped.iter().map(|r| r["details"]["command_id"].as_str().unwrap().to_owned()).collect();

    // The rerun waits for that same command (not a new one) and finishes the case.
    w.f.config.limits.command_timeout_minutes = 720;
    w.f.save();
    w.acquire(case).success().stdout_has("xmrig");
    let sent: Vec<(String, String)> = w
        .actions(case, "collection_started")
        .await
        .into_iter()
        .map(|r| (r["details"]["document"].as_str().unwrap().to_owned(), r["details"]["volume"].to_string()))
        .collect();
    let mut unique = sent.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), sent.len(), "a document sent twice to a volume: {sent:#?}");
    assert_eq!(sent.len(), 6, "three documents on two volumes: {sent:#?}");
    let started = w.actions(case, "collection_started").await;
    for command in &commands {
        let n = started.iter().filter(|r| r["details"]["command_id"] == command.as_str()).count();
        assert_eq!(n, 1, "the command waited for, {command}, is one the case sent once");
    }
    let (first, _) = w.teardown_twice(case);
    first.stdout_has("removed");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 0 });
    verifies(&w, case);
}

#[tokio::test]
async fn acquire_interrupted_after_the_launch_resumes_without_a_second_instance_or_volume() {
    let w = Incident::seed().await;
    let case = "IR-CR-INTERRUPTED";
    // RunInstances launches, but its answer is lost (as when the process is killed
    // right after the call): the journal never learns the instance id.
    w.fault(json!({"service": "ec2", "action": "RunInstances", "code": "IncorrectState", "status": 400,
                   "message": "lab: the answer to RunInstances was lost", "after_call": true}))
        .await;
    w.acquire(case).expect_code(1).stdout_has("RunInstances").stdout_has("rerun the same command");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 1 });

    // The rerun finds that instance; then both CreateVolume answers are lost.
    w.fault(json!({"service": "ec2", "action": "CreateVolume", "code": "IncorrectState", "status": 400,
                   "message": "lab: the answer to CreateVolume was lost", "after_call": true, "times": 2}))
        .await;
    w.acquire(case).expect_code(1).stdout_has("CreateVolume");
    assert_eq!(w.room(case).await, Room { volumes: 2, instances: 1 }, "no second instance");
    let launched = w.actions(case, "analysis_instance_launched").await;
    assert_eq!(launched.len(), 1, "{launched:#?}");
    assert!(launched[0]["details"]["found_by"].as_str().unwrap().contains("client-token"));

    // The third run finishes with what the first two made.
    w.acquire(case).success().stdout_has("xmrig");
    assert_eq!(w.room(case).await, Room { volumes: 2, instances: 1 }, "nothing made twice");

    let (first, _) = w.teardown_twice(case);
    first.stdout_has("removed");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 0 });
    verifies(&w, case);
}

#[tokio::test]
async fn teardown_removes_an_analysis_instance_whose_launch_answer_was_lost() {
    let w = Incident::seed().await;
    let case = "IR-CR-LOST-LAUNCH";
    w.fault(json!({"service": "ec2", "action": "RunInstances", "code": "IncorrectState", "status": 400,
                   "message": "lab: the answer to RunInstances was lost", "after_call": true}))
        .await;
    w.acquire(case).expect_code(1).stdout_has("RunInstances");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 1 });

    let (first, _) = w.teardown_twice(case);
    first.stdout_has("AnalysisInstance").stdout_has("removed");
    assert_eq!(w.room(case).await, Room { volumes: 0, instances: 0 }, "{}", first.stdout());
    let removed = w.actions(case, "resource_removed").await;
    assert_eq!(removed.len(), 1, "{removed:#?}");
    verifies(&w, case);
}
