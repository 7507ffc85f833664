//! Analyze: the clean room. In the forensics account, a volume is made from each
//! forensics copy in the analysis subnet's zone, an analysis instance is launched from
//! the tooling AMI (IMDSv2 only, no public address, the configured profile and group),
//! and once its SSM agent is online the volumes are attached and the collection
//! documents run against them: disk image, Sleuth Kit triage, YARA. The documents write
//! their outputs straight into the evidence bucket under the case; the collect stage
//! imports them. Nothing of the suspect's is ever mounted: the scripts read the block
//! devices with the Sleuth Kit.
//!
//! Every resource is tagged with the case and journaled; an instance is launched with a
//! client token, a command once sent is resumed (polled), not sent again: a rerun after
//! any interruption completes without creating anything twice. Teardown removes them.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod documents;

use crate::cloud::{
    CloudError, CommandRequest, Instance, NewInstance, NewVolume, Side, TAG_CASE, TAG_PURPOSE, TAG_ROLE,
    Volume, retry,
};
use crate::config::{AmiSource, SsmDocuments};
use crate::ids::{AmiId, BucketName, InstanceId, Region, SecurityGroupId, SubnetId, VolumeId};
use crate::pipeline::custody::{Action, Event};
use crate::pipeline::journal::{Fact, NewFact, ResourceKind};
use crate::pipeline::{Check, MAX_POLL, Run, Stage, StageWork, TargetState};
use crate::share::HandedOff;
use crate::snapshot::{TAG_SOURCE_INSTANCE, TAG_SOURCE_SNAPSHOT, TAG_SOURCE_VOLUME};
use documents::{Kind, Registered};

pub const PURPOSE_ANALYSIS: &str = "analysis";
/// Largest result JSON read back from the bucket (a triage of a big disk lists many
/// key files and findings; the documents cap findings at 2,000).
const RESULT_LIMIT: usize = 64 << 20;
/// Characters of a wrong AMI parameter value shown in the error (a parameter holds up
/// to 8 KB; an AMI id is 21 characters).
const SHOWN_PARAMETER_CHARS: usize = 80;
/// Device names for evidence volumes: /dev/sdf to /dev/sdz (21 of them).
const DEVICES: &str = "fghijklmnopqrstuvwxyz";

/// What the clean room needs, from the configuration.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    pub ami: AmiSource,
    pub instance_type: String,
    pub subnet: SubnetId,
    pub security_group: SecurityGroupId,
    pub instance_profile: String,
    pub documents: SsmDocuments,
    pub bucket: BucketName,
    pub region: Region,
    pub volumes_per_instance: usize,
    pub max_instances: usize,
    pub online_timeout: Duration,
    pub command_timeout: Duration,
    pub rehash_limit: u64,
}

/// One disk examined in the clean room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Examined {
    pub copy: HandedOff,
    pub analysis_volume: VolumeId,
    pub analysis_instance: InstanceId,
    /// `cases/<case>/evidence/<account>/<instance>/<analysis volume>/`.
    pub prefix: String,
    /// Document results (`image.json`, `triage.json`, `yara.json`) by kind.
    pub results: BTreeMap<String, serde_json::Value>,
    /// Which document version produced each result.
    pub documents: Vec<Registered>,
    /// Documents that could not examine this volume, and why (no file system the Sleuth
    /// Kit reads: the image is still taken).
    pub not_examined: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{step}: {source}{}", hint(source))]
    Call { step: String, source: CloudError },
    #[error(
        "the analysis AMI parameter {parameter} does not exist in the forensics account ({region})\nfix: publish the tooling AMI id there (amis/README or the forensics stack does), or set analysis.ami to an AMI id"
    )]
    AmiParameterMissing { parameter: String, region: String },
    #[error(
        "the analysis AMI parameter {parameter} holds {value:?}, which is not an AMI id\nfix: put the tooling AMI's id (ami-...) in it"
    )]
    AmiParameterInvalid { parameter: String, value: String },
    #[error(
        "analysis instance {instance} did not come online in SSM within {waited} s (limits.ssm_online_timeout_minutes = {minutes}; SSM says: {last})\nfix: check that the tooling AMI runs the SSM agent, that the instance profile {profile} allows SSM (AmazonSSMManagedInstanceCore), and that the analysis subnet reaches SSM through its VPC endpoints (ssm, ssmmessages, ec2messages); then `cleanroom teardown --case {case}` and rerun"
    )]
    NeverOnline {
        instance: InstanceId,
        waited: u64,
        minutes: u64,
        last: String,
        profile: String,
        case: String,
    },
    #[error(
        "the analysis AMI {ami} ({how}) does not exist in the forensics account: {source}\nfix: build the tooling AMI (amis/) in the forensics account and region, and set analysis.ami (or its SSM parameter) to its id; then rerun"
    )]
    AmiNotFound { ami: AmiId, how: String, source: CloudError },
    #[error(
        "analysis instance {instance} is {state}\nfix: `cleanroom teardown --case {case}` and rerun: a new instance is launched"
    )]
    InstanceGone { instance: InstanceId, state: String, case: String },
    #[error("volume {volume} did not become {wanted} within {seconds} s (state {state})")]
    VolumeStuck { volume: VolumeId, wanted: &'static str, seconds: u64, state: String },
    #[error("{0}")]
    CommandFailed(Box<CommandFailure>),
    #[error(
        "{document} on volume {volume} did not finish within {minutes} minute(s) (command {command}, still {status}); rerun to keep waiting"
    )]
    CommandTimeout { document: String, volume: VolumeId, minutes: u64, command: String, status: String },
    #[error("the result {key} of {document} is not JSON: {problem}")]
    BadResult { document: String, key: String, problem: String },
    #[error("journal: {0}")]
    Journal(#[from] crate::pipeline::journal::JournalError),
    #[error(transparent)]
    Custody(#[from] crate::pipeline::custody::CustodyError),
}

/// A collection document that ended in failure, with where its full output is.
#[derive(Debug, thiserror::Error)]
#[error(
    "{document} on volume {volume} {status}{}: {meaning}\n{stderr}full output: s3://{bucket}/{output}\nfix: {fix}",
    code.map(|c| format!(" (exit {c})")).unwrap_or_default()
)]
pub struct CommandFailure {
    pub document: String,
    pub volume: VolumeId,
    pub status: String,
    pub code: Option<i32>,
    pub meaning: &'static str,
    pub stderr: String,
    pub bucket: String,
    pub output: String,
    pub fix: String,
}

fn hint(e: &CloudError) -> &'static str {
    match e.kind {
        crate::cloud::ErrorKind::AccessDenied => {
            "\nfix: the forensics role lacks that permission: deploy cloudformation/forensics-account.yaml"
        }
        _ => "",
    }
}

fn call(step: impl Into<String>) -> impl FnOnce(CloudError) -> AnalyzeError {
    let step = step.into();
    move |source| AnalyzeError::Call { step, source }
}

/// What a document's exit status means (ssm-documents/README.md, "Exit codes").
fn meaning(code: Option<i32>) -> (&'static str, &'static str) {
    match code {
        Some(2) => ("a bad or missing parameter", "report it: the parameters come from cleanroom"),
        Some(3) => (
            "the volume holds no file system the Sleuth Kit reads (an image is still taken)",
            "look at the disk image with other tools; XFS, LUKS and LVM are not read by the Sleuth Kit 4.11",
        ),
        Some(4) => (
            "the file system runs past the end of the volume (truncated)",
            "compare the volume size with the source; the image is kept",
        ),
        Some(5) => (
            "a tool the document calls is missing on the analysis instance",
            "rebuild the tooling AMI from amis/forensic-tooling.yaml",
        ),
        Some(6) => {
            ("the volume is not attached to the analysis instance", "rerun: the volume is attached again")
        }
        Some(7) => (
            "an upload failed, or the evidence key exists already (evidence is never overwritten)",
            "if an earlier attempt left outputs, `cleanroom teardown` and rerun: a new analysis volume writes to a new folder, the earlier outputs stay as evidence of the attempt",
        ),
        Some(8) => (
            "the second, independent check of the image does not match",
            "a human must look: the image is kept, marked unmatched",
        ),
        Some(137) => {
            ("killed (timeout or cancel)", "rerun; raise limits.command_timeout_minutes for big volumes")
        }
        _ => ("an unexpected failure", "read the output named below"),
    }
}

/// The clean room of one run: the forensics side, the documents, the AMI, the zone.
struct Room {
    side: Side,
    documents: Vec<Registered>,
    ami: AmiId,
    /// How the AMI was resolved (configured id, or the parameter and its value).
    ami_how: String,
    zone: String,
}

/// Tags of what the clean room creates; `cleanroom:role=analysis` is what the forensics
/// role's policy lets it attach, run commands on and remove.
fn tags(run: &Run, purpose: &str) -> BTreeMap<String, String> {
    [
        (TAG_CASE.to_owned(), run.case.to_string()),
        (TAG_PURPOSE.to_owned(), purpose.to_owned()),
        (TAG_ROLE.to_owned(), PURPOSE_ANALYSIS.to_owned()),
    ]
    .into()
}

fn fact(
    side: &Side,
    fact: Fact,
    kind: ResourceKind,
    id: &str,
    subject: Option<String>,
    details: serde_json::Value,
) -> NewFact {
    NewFact {
        stage: Stage::Analyze,
        fact,
        kind,
        id: id.to_owned(),
        account: side.account.to_string(),
        region: side.region.to_string(),
        subject,
        details,
    }
}

async fn resolve_ami(side: &Side, source: &AmiSource) -> Result<(AmiId, String), AnalyzeError> {
    match source {
        AmiSource::Id(id) => Ok((id.clone(), format!("configured id {id}"))),
        AmiSource::SsmParameter(name) => {
            let value = retry(|| side.cloud.parameter(name))
                .await
                .map_err(call(format!("ssm:GetParameter {name}")))?;
            let value = value.ok_or_else(|| AnalyzeError::AmiParameterMissing {
                parameter: name.clone(),
                region: side.region.to_string(),
            })?;
            let id: AmiId = value.trim().parse().map_err(|_| AnalyzeError::AmiParameterInvalid {
                parameter: name.clone(),
                value: value.chars().take(SHOWN_PARAMETER_CHARS).collect(),
            })?;
            Ok((id, format!("SSM parameter {name} = {value}")))
        }
    }
}

async fn prepare(run: &Run, cfg: &AnalysisSettings) -> Result<Room, AnalyzeError> {
    let side = run.accounts.forensics().await.map_err(call("reaching the forensics account"))?;
    let (ami, how) = resolve_ami(&side, &cfg.ami).await?;
    let mut documents = Vec::new();
    for kind in Kind::ALL {
        let name = kind.name(&cfg.documents);
        let r = documents::register(side.cloud.as_ref(), kind, &name)
            .await
            .map_err(call(format!("registering SSM document {name}")))?;
        if r.created {
            run.journal
                .write(fact(
                    &side,
                    Fact::Created,
                    ResourceKind::Document,
                    &format!("{name}-v{}", r.version),
                    None,
                    serde_json::json!({"sha256": r.sha256}),
                ))
                .await?;
        }
        documents.push(r);
    }
    run.custody
        .record(Event {
            action: Action::DocumentsRegistered,
            subject: format!("arn:aws:ssm:{}:{}:document", side.region, side.account),
            evidence: vec![],
            aws_request_ids: documents
                .iter()
                .flat_map(|d| d.calls.iter().filter_map(|c| c.request_id.clone()))
                .collect(),
            details: serde_json::json!({"documents": documents, "ami": ami, "ami_resolved_from": how}),
        })
        .await?;
    let zone = retry(|| side.cloud.subnet_zone(&cfg.subnet))
        .await
        .map_err(call(format!("ec2:DescribeSubnets {}", cfg.subnet)))?
        .ok_or_else(|| AnalyzeError::Call {
            step: format!("the analysis subnet {}", cfg.subnet),
            source: CloudError::new(
                "ec2",
                "DescribeSubnets",
                crate::cloud::ErrorKind::NotFound,
                "no such subnet",
            ),
        })?;
    Ok(Room { side, documents, ami, ami_how: how, zone })
}

/// The analysis volume of one forensics copy: journaled, found by tags, or made.
async fn ensure_volume(
    run: &Run,
    room: &Room,
    subject: &str,
    copy: &HandedOff,
) -> Result<VolumeId, AnalyzeError> {
    let side = &room.side;
    let journaled: Vec<VolumeId> = run
        .journal
        .created(ResourceKind::AnalysisVolume, Some(subject))
        .await
        .into_iter()
        .filter(|e| {
            e.details.get("forensics_snapshot").and_then(|v| v.as_str())
                == Some(copy.forensics_snapshot.as_str())
        })
        .filter_map(|e| e.id.parse().ok())
        .collect();
    let existing: Vec<Volume> = if journaled.is_empty() {
        let wanted = [
            (TAG_CASE.to_owned(), run.case.to_string()),
            (TAG_PURPOSE.to_owned(), PURPOSE_ANALYSIS.to_owned()),
            (TAG_SOURCE_SNAPSHOT.to_owned(), copy.forensics_snapshot.to_string()),
        ];
        let found = retry(|| side.cloud.find_volumes(&wanted)).await.map_err(call("ec2:DescribeVolumes"))?;
        for v in &found {
            let details = serde_json::json!({"forensics_snapshot": copy.forensics_snapshot, "recovered_by": "case tags"});
            run.journal
                .write(fact(
                    side,
                    Fact::Recovered,
                    ResourceKind::AnalysisVolume,
                    v.id.as_str(),
                    Some(subject.to_owned()),
                    details,
                ))
                .await?;
        }
        found
    } else {
        retry(|| side.cloud.volumes(&journaled)).await.map_err(call("ec2:DescribeVolumes"))?
    };
    if let Some(v) =
        existing.into_iter().find(|v| v.state != "deleting" && v.state != "deleted" && v.state != "error")
    {
        return Ok(v.id);
    }
    let mut tags = tags(run, PURPOSE_ANALYSIS);
    tags.insert(TAG_SOURCE_SNAPSHOT.to_owned(), copy.forensics_snapshot.to_string());
    tags.insert(TAG_SOURCE_INSTANCE.to_owned(), copy.instance.clone());
    if let Some(v) = &copy.volume {
        tags.insert(TAG_SOURCE_VOLUME.to_owned(), v.clone());
    }
    tags.insert(
        "Name".to_owned(),
        format!("cleanroom {} evidence {}", run.case, copy.volume.as_deref().unwrap_or("?")),
    );
    let request = NewVolume {
        snapshot: copy.forensics_snapshot.clone(),
        availability_zone: room.zone.clone(),
        kms_key: Some(run.settings.forensics_key.clone()),
        tags,
    };
    run.journal
        .write(fact(
            side,
            Fact::Asked,
            ResourceKind::AnalysisVolume,
            &format!("from-{}", copy.forensics_snapshot),
            Some(subject.to_owned()),
            serde_json::json!({}),
        ))
        .await?;
    let (id, c) = retry(|| side.cloud.create_volume(&request)).await.map_err(call("ec2:CreateVolume"))?;
    let details = serde_json::json!({"forensics_snapshot": copy.forensics_snapshot, "zone": room.zone, "request_id": c.request_id});
    run.journal
        .write(fact(
            side,
            Fact::Created,
            ResourceKind::AnalysisVolume,
            id.as_str(),
            Some(subject.to_owned()),
            details,
        ))
        .await?;
    Ok(id)
}

async fn wait_volume(
    run: &Run,
    side: &Side,
    id: &VolumeId,
    ready: impl Fn(&Volume) -> bool,
    wanted: &'static str,
) -> Result<Volume, AnalyzeError> {
    let started = tokio::time::Instant::now();
    let mut delay = run.settings.first_poll;
    let limit = Duration::from_secs(600);
    loop {
        let v = retry(|| side.cloud.volumes(std::slice::from_ref(id)))
            .await
            .map_err(call("ec2:DescribeVolumes"))?;
        let Some(v) = v.into_iter().next() else {
            return Err(AnalyzeError::VolumeStuck {
                volume: id.clone(),
                wanted,
                seconds: 0,
                state: "gone".into(),
            });
        };
        if ready(&v) {
            return Ok(v);
        }
        if v.state == "error" || started.elapsed() > limit {
            return Err(AnalyzeError::VolumeStuck {
                volume: id.clone(),
                wanted,
                seconds: limit.as_secs(),
                state: v.state,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_POLL);
    }
}

/// Tag carrying the client token an analysis instance was launched with: on AWS the
/// token alone makes a repeated RunInstances return the same instance; the tag lets a
/// rerun (and teardown) find an instance whose launch answer was lost before the
/// journal learned its id.
pub const TAG_CLIENT_TOKEN: &str = "cleanroom:client-token";

/// The client token of batch `n`'s analysis instance, attempt `attempt` (the number of
/// earlier instances of that batch teardown removed: AWS answers a reused token with the
/// first, terminated, instance).
fn client_token(run: &Run, n: usize, attempt: usize) -> String {
    let seed = if attempt == 0 {
        format!("cleanroom {} analysis {n}", run.case)
    } else {
        format!("cleanroom {} analysis {n} attempt {attempt}", run.case)
    };
    hex::encode(&crate::evidence::digest::sha256_raw(seed.as_bytes())[..16])
}

/// The analysis instance of batch `n`: journaled, found by its client-token tag (a
/// launch whose answer was lost), or launched with a client token that makes a repeated
/// launch return the same instance. Waits until SSM has it online.
async fn ensure_instance(
    run: &Run,
    room: &Room,
    cfg: &AnalysisSettings,
    n: usize,
) -> Result<InstanceId, AnalyzeError> {
    let side = &room.side;
    let of_batch = |e: &crate::pipeline::journal::Entry| {
        e.details.get("batch").and_then(|b| b.as_u64()) == Some(n as u64)
    };
    let journaled = run
        .journal
        .created(ResourceKind::AnalysisInstance, None)
        .await
        .into_iter()
        .find(|e| of_batch(e))
        .and_then(|e| e.id.parse::<InstanceId>().ok());
    let id = match journaled {
        Some(id) => id,
        None => {
            // Instances of this batch that teardown removed: each used up its token.
            let removed = run
                .journal
                .resources(ResourceKind::AnalysisInstance, None)
                .await
                .into_values()
                .filter(|facts| facts.iter().any(of_batch) && facts.iter().any(|f| f.fact == Fact::Removed))
                .count();
            let token = client_token(run, n, removed);
            let wanted =
                [(TAG_CASE.to_owned(), run.case.to_string()), (TAG_CLIENT_TOKEN.to_owned(), token.clone())];
            let found = retry(|| side.cloud.find_instances(&wanted))
                .await
                .map_err(call("ec2:DescribeInstances (an earlier launch of this batch)"))?;
            match found.first() {
                Some(id) => {
                    for other in &found {
                        run.journal
                            .write(fact(
                                side,
                                Fact::Recovered,
                                ResourceKind::AnalysisInstance,
                                other.as_str(),
                                None,
                                serde_json::json!({"batch": n, "client_token": token, "ami": room.ami, "recovered_by": "client-token tag"}),
                            ))
                            .await?;
                    }
                    run.custody
                        .record(Event {
                            action: Action::AnalysisInstanceLaunched,
                            subject: crate::ids::instance_arn(&side.region, &side.account, id),
                            evidence: vec![],
                            aws_request_ids: vec![],
                            details: serde_json::json!({
                                "ami": room.ami, "instance_type": cfg.instance_type, "subnet": cfg.subnet,
                                "security_group": cfg.security_group, "instance_profile": cfg.instance_profile,
                                "imds": "v2 only (HttpTokens=required, hop limit 1)", "public_ip": false, "batch": n,
                                "found_by": "its client-token tag: the answer to an earlier RunInstances was lost",
                                "client_token": token,
                            }),
                        })
                        .await?;
                    id.clone()
                }
                None => launch(run, room, cfg, n, token).await?,
            }
        }
    };
    wait_online(run, side, cfg, &id).await?;
    Ok(id)
}

async fn launch(
    run: &Run,
    room: &Room,
    cfg: &AnalysisSettings,
    n: usize,
    token: String,
) -> Result<InstanceId, AnalyzeError> {
    let side = &room.side;
    let mut tags = tags(run, PURPOSE_ANALYSIS);
    tags.insert("Name".to_owned(), format!("cleanroom {} analysis {n}", run.case));
    tags.insert(TAG_CLIENT_TOKEN.to_owned(), token.clone());
    let request = NewInstance {
        image: room.ami.clone(),
        instance_type: cfg.instance_type.clone(),
        subnet: cfg.subnet.clone(),
        security_group: cfg.security_group.clone(),
        instance_profile: cfg.instance_profile.clone(),
        tags,
        client_token: token.clone(),
    };
    run.journal
        .write(fact(
            side,
            Fact::Asked,
            ResourceKind::AnalysisInstance,
            &format!("batch-{n}"),
            None,
            serde_json::json!({"client_token": token}),
        ))
        .await?;
    let (id, c) = retry(|| side.cloud.run_instance(&request)).await.map_err(|source| {
        if source.is(crate::cloud::ErrorKind::NotFound) {
            AnalyzeError::AmiNotFound { ami: room.ami.clone(), how: room.ami_how.clone(), source }
        } else {
            AnalyzeError::Call { step: "ec2:RunInstances (analysis instance)".into(), source }
        }
    })?;
    run.journal
        .write(fact(
            side,
            Fact::Created,
            ResourceKind::AnalysisInstance,
            id.as_str(),
            None,
            serde_json::json!({"batch": n, "client_token": token, "ami": room.ami}),
        ))
        .await?;
    run.custody
        .record(Event {
            action: Action::AnalysisInstanceLaunched,
            subject: crate::ids::instance_arn(&side.region, &side.account, &id),
            evidence: vec![],
            aws_request_ids: c.request_id.into_iter().collect(),
            details: serde_json::json!({
                "ami": room.ami, "instance_type": cfg.instance_type, "subnet": cfg.subnet,
                "security_group": cfg.security_group, "instance_profile": cfg.instance_profile,
                "imds": "v2 only (HttpTokens=required, hop limit 1)", "public_ip": false, "batch": n,
                "client_token": token,
            }),
        })
        .await?;
    Ok(id)
}

async fn wait_online(
    run: &Run,
    side: &Side,
    cfg: &AnalysisSettings,
    id: &InstanceId,
) -> Result<(), AnalyzeError> {
    let started = tokio::time::Instant::now();
    let mut delay = run.settings.first_poll;
    let mut last = "not registered".to_owned();
    loop {
        run.reporter.step(id.as_str(), &format!("waiting for the SSM agent ({last})"));
        let instance: Option<Instance> =
            retry(|| side.cloud.describe_instance(id)).await.map_err(call("ec2:DescribeInstances"))?;
        match instance {
            Some(i) if i.is_gone() || i.state == "stopped" || i.state == "stopping" => {
                return Err(AnalyzeError::InstanceGone {
                    instance: id.clone(),
                    state: i.state,
                    case: run.case.to_string(),
                });
            }
            None => {
                return Err(AnalyzeError::InstanceGone {
                    instance: id.clone(),
                    state: "unknown".into(),
                    case: run.case.to_string(),
                });
            }
            Some(_) => {}
        }
        match retry(|| side.cloud.ping_status(id)).await.map_err(call("ssm:DescribeInstanceInformation"))? {
            Some(s) if s == "Online" => {
                run.reporter.done(id.as_str(), "SSM agent online");
                return Ok(());
            }
            Some(s) => last = s,
            None => {}
        }
        if started.elapsed() >= cfg.online_timeout {
            return Err(AnalyzeError::NeverOnline {
                instance: id.clone(),
                waited: started.elapsed().as_secs(),
                minutes: cfg.online_timeout.as_secs().div_ceil(60),
                last,
                profile: cfg.instance_profile.clone(),
                case: run.case.to_string(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_POLL);
    }
}

/// Attaches `volume` to `instance` unless it already is; waits until attached.
async fn attach(
    run: &Run,
    side: &Side,
    subject: &str,
    volume: &VolumeId,
    instance: &InstanceId,
    slot: usize,
) -> Result<(), AnalyzeError> {
    let now = retry(|| side.cloud.volumes(std::slice::from_ref(volume)))
        .await
        .map_err(call("ec2:DescribeVolumes"))?;
    let attached_here = now.first().is_some_and(|v| v.attachments.iter().any(|(i, _)| i == instance));
    if !attached_here {
        wait_volume(run, side, volume, |v| v.state == "available", "available").await?;
        let device = format!("/dev/sd{}", DEVICES.chars().nth(slot % DEVICES.len()).unwrap_or('f'));
        let c = retry(|| side.cloud.attach_volume(volume, instance, &device))
            .await
            .map_err(call(format!("ec2:AttachVolume {volume}")))?;
        run.custody
            .record(Event {
                action: Action::AnalysisVolumeAttached,
                subject: crate::ids::ec2_arn(&side.region, Some(&side.account), "volume", volume.as_str()),
                evidence: vec![],
                aws_request_ids: c.request_id.into_iter().collect(),
                details: serde_json::json!({"instance": instance, "device": device, "source": subject,
                    "mounted": false, "how_read": "block device only, by the Sleuth Kit; never mounted"}),
            })
            .await?;
    }
    wait_volume(
        run,
        side,
        volume,
        |v| v.attachments.iter().any(|(i, _)| i == instance) && v.state == "in-use",
        "attached",
    )
    .await?;
    Ok(())
}

/// Runs one document against one attached volume (or resumes the command a previous
/// run sent), and returns its result JSON as the document wrote it to the bucket.
#[allow(clippy::too_many_arguments)]
async fn collect_one(
    run: &Run,
    room: &Room,
    cfg: &AnalysisSettings,
    doc: &Registered,
    instance: &InstanceId,
    volume: &VolumeId,
    prefix: &str,
    subject: &str,
) -> Result<Option<serde_json::Value>, AnalyzeError> {
    let side = &room.side;
    let result_key = format!("{prefix}{}", doc.kind.result());
    let parse = |bytes: Vec<u8>| -> Result<serde_json::Value, Box<AnalyzeError>> {
        serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| {
            Box::new(AnalyzeError::BadResult {
                document: doc.name.clone(),
                key: result_key.clone(),
                problem: e.to_string(),
            })
        })
    };
    if let Some((bytes, _)) = run.custody.read_object(&result_key, RESULT_LIMIT).await? {
        return parse(bytes).map(Some).map_err(|e| *e);
    }
    let label = format!("{volume} {}", doc.kind.step());
    let command_key = format!("{}-{volume}-v{}", doc.kind.step(), doc.version);
    // A command that ended in failure is sent again (after the cause is fixed, a rerun
    // must not read the same failure back); one still running, or whose outcome is final
    // (a volume the Sleuth Kit cannot read), is resumed.
    let ended_in_failure: Vec<String> = run
        .journal
        .facts()
        .await
        .into_iter()
        .filter(|f| f.kind == ResourceKind::Command && f.fact == Fact::Completed)
        .filter(|f| {
            let status = f.details.get("status").and_then(|v| v.as_str());
            let code = f.details.get("response_code").and_then(|v| v.as_i64());
            status != Some("Success") && !(code == Some(3) && doc.kind != Kind::DiskImage)
        })
        .map(|f| f.id)
        .collect();
    let sent = run
        .journal
        .created(ResourceKind::Command, Some(subject))
        .await
        .into_iter()
        .filter(|e| !ended_in_failure.contains(&e.id))
        .find(|e| e.details.get("for").and_then(|v| v.as_str()) == Some(command_key.as_str()))
        .map(|e| e.id);
    // The agent's own stdout and stderr (GetCommandInvocation keeps only 24,000
    // characters), in the volume's evidence folder (the only place the analysis role
    // may write); the record of the command names each object with its digest.
    let output_prefix = format!("{prefix}ssm/{}", doc.kind.step());
    let command = match sent {
        Some(c) => c,
        None => {
            let request = CommandRequest {
                document: doc.name.clone(),
                version: doc.version.clone(),
                instance: instance.clone(),
                parameters: vec![
                    ("VolumeId".into(), volume.to_string()),
                    ("EvidenceBucket".into(), cfg.bucket.to_string()),
                    ("EvidencePrefix".into(), prefix.to_owned()),
                    ("Region".into(), cfg.region.to_string()),
                    ("CaseId".into(), run.case.to_string()),
                ],
                output_bucket: cfg.bucket.to_string(),
                output_prefix: output_prefix.clone(),
                comment: format!("cleanroom {} {}", run.case, doc.kind.step()),
                delivery_timeout_seconds: 600,
            };
            let (id, c) = retry(|| side.cloud.send_command(&request))
                .await
                .map_err(call(format!("ssm:SendCommand {}", doc.name)))?;
            run.journal
                .write(fact(
                    side,
                    Fact::Created,
                    ResourceKind::Command,
                    &id,
                    Some(subject.to_owned()),
                    serde_json::json!({"for": command_key, "document": doc.name}),
                ))
                .await?;
            run.custody
                .record(Event {
                    action: Action::CollectionStarted,
                    subject: crate::ids::ec2_arn(&side.region, Some(&side.account), "volume", volume.as_str()),
                    evidence: vec![],
                    aws_request_ids: c.request_id.into_iter().collect(),
                    details: serde_json::json!({
                        "command_id": id, "document": doc.name, "document_version": doc.version,
                        "document_sha256": doc.sha256, "instance": instance, "volume": volume, "evidence_prefix": prefix,
                        "source": subject,
                    }),
                })
                .await?;
            id
        }
    };
    // The custody record of how the command ended (or that it was still running).
    let outcome =
        |action: Action, evidence: Vec<crate::pipeline::custody::EvidenceRef>, how: serde_json::Value| {
            let mut details = serde_json::json!({
                "command_id": command, "document": doc.name, "document_sha256": doc.sha256,
                "output": format!("s3://{}/{output_prefix}/{command}/", cfg.bucket),
            });
            if let (Some(all), serde_json::Value::Object(how)) = (details.as_object_mut(), how) {
                all.extend(how);
            }
            Event {
                action,
                subject: crate::ids::ec2_arn(&side.region, Some(&side.account), "volume", volume.as_str()),
                evidence,
                aws_request_ids: vec![],
                details,
            }
        };
    let started = tokio::time::Instant::now();
    let mut delay = run.settings.first_poll;
    let invocation = loop {
        let inv = retry(|| side.cloud.invocation(&command, instance, doc.kind.step()))
            .await
            .map_err(call("ssm:GetCommandInvocation"))?;
        let status = inv.as_ref().map(|i| i.status.clone()).unwrap_or_else(|| "Pending".into());
        run.reporter.step(&label, &format!("{status} ({} s)", started.elapsed().as_secs()));
        if let Some(inv) = inv.filter(|i| i.is_terminal()) {
            break inv;
        }
        if started.elapsed() >= cfg.command_timeout {
            // Recorded, but not journaled as completed: the command runs on, and a rerun
            // waits for the same command instead of sending it again.
            let waited = serde_json::json!({"status": status, "still_running": true,
                "waited_minutes": cfg.command_timeout.as_secs() / 60});
            run.custody.record(outcome(Action::CollectionFailed, vec![], waited)).await?;
            return Err(AnalyzeError::CommandTimeout {
                document: doc.name.clone(),
                volume: volume.clone(),
                minutes: cfg.command_timeout.as_secs() / 60,
                command: command.clone(),
                status,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_POLL);
    };
    let ok = invocation.status == "Success";
    let logs = agent_logs(run, &format!("{output_prefix}/{command}/")).await?;
    let ended = serde_json::json!({"status": invocation.status, "status_details": invocation.status_details,
        "response_code": invocation.response_code});
    let action = if ok { Action::CollectionCompleted } else { Action::CollectionFailed };
    run.custody.record(outcome(action, logs, ended)).await?;
    run.journal
        .write(fact(
            side,
            Fact::Completed,
            ResourceKind::Command,
            &command,
            Some(subject.to_owned()),
            serde_json::json!({"for": command_key, "status": invocation.status, "response_code": invocation.response_code}),
        ))
        .await?;
    // Triage and YARA of a volume without a file system the Sleuth Kit reads: not a
    // failure of the case (the image is taken), a gap that is recorded and shown.
    if !ok && invocation.response_code == Some(3) && doc.kind != Kind::DiskImage {
        run.reporter.warn(&label, meaning(Some(3)).0);
        return Ok(None);
    }
    if !ok {
        let (what, fix) = meaning(invocation.response_code);
        let tail: String = invocation
            .stderr
            .lines()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(AnalyzeError::CommandFailed(Box::new(CommandFailure {
            document: doc.name.clone(),
            volume: volume.clone(),
            status: invocation.status.to_lowercase(),
            code: invocation.response_code,
            meaning: what,
            stderr: if tail.is_empty() {
                String::new()
            } else {
                format!("{}\n", crate::text::sanitize_lines(&tail))
            },
            bucket: cfg.bucket.to_string(),
            output: format!("{output_prefix}/{command}/"),
            fix: fix.to_owned(),
        })));
    }
    run.reporter.done(&label, "done");
    let (bytes, _) =
        run.custody.read_object(&result_key, RESULT_LIMIT).await?.ok_or_else(|| AnalyzeError::BadResult {
            document: doc.name.clone(),
            key: result_key.clone(),
            problem: "the document succeeded but wrote no result".into(),
        })?;
    parse(bytes).map(Some).map_err(|e| *e)
}

/// The agent's output objects of one command, each with its digest, for the custody
/// record of the command (acquisition logs of the hand-off package).
async fn agent_logs(
    run: &Run,
    prefix: &str,
) -> Result<Vec<crate::pipeline::custody::EvidenceRef>, AnalyzeError> {
    let mut refs = Vec::new();
    for key in run.custody.list(prefix).await? {
        if let Some((bytes, version)) = run.custody.read_object(&key, RESULT_LIMIT).await? {
            refs.push(crate::pipeline::custody::EvidenceRef {
                id: format!(
                    "ssm-output:{}",
                    key.rsplit('/')
                        .take(2)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("/")
                ),
                sha256: crate::evidence::digest::sha256_tagged(&bytes),
                s3_key: key,
                version_id: version,
            });
        }
    }
    Ok(refs)
}

/// The disks of the live targets, in target order: (target index, copy).
fn disks(targets: &[TargetState]) -> Vec<(usize, HandedOff)> {
    targets
        .iter()
        .enumerate()
        .filter(|(_, t)| t.failed.is_none())
        .flat_map(|(i, t)| t.copies.iter().map(move |c| (i, c.clone())))
        .collect()
}

/// Which batch (analysis instance) each disk goes to: round robin over at most
/// `max_instances`, each with at most `per_instance` volumes.
pub fn batches(disks: usize, per_instance: usize, max_instances: usize) -> Vec<usize> {
    let instances = disks.div_ceil(per_instance.max(1)).clamp(1, max_instances.max(1));
    (0..disks).map(|i| i % instances).collect()
}

async fn examine(
    run: &Run,
    cfg: &AnalysisSettings,
    targets: &[TargetState],
) -> Result<Vec<(usize, Result<Examined, String>)>, AnalyzeError> {
    let disks = disks(targets);
    let room = prepare(run, cfg).await?;
    let plan = batches(disks.len(), cfg.volumes_per_instance, cfg.max_instances);
    let instances = plan.iter().copied().max().map_or(0, |m| m + 1);
    if disks.len() > instances * cfg.volumes_per_instance {
        run.reporter.warn(
            "analyze",
            &format!(
                "{} disks over {instances} analysis instance(s) of {} volumes: raise limits.analysis_instances",
                disks.len(),
                cfg.volumes_per_instance
            ),
        );
    }
    let launched =
        futures::future::join_all((0..instances).map(|n| ensure_instance(run, &room, cfg, n))).await;
    let mut out = Vec::new();
    let work = disks.iter().zip(&plan).enumerate().map(|(slot, ((ti, copy), batch))| {
        let t = &targets[*ti];
        let room = &room;
        let instance = launched[*batch].as_ref().map(Clone::clone).map_err(|e| e.to_string());
        async move {
            let subject = t.target.id.to_string();
            let r = async {
                let instance = instance.map_err(|e| format!("analysis instance: {e}"))?;
                let volume = ensure_volume(run, room, &subject, copy).await.map_err(|e| e.to_string())?;
                attach(run, &room.side, &subject, &volume, &instance, slot / instances.max(1))
                    .await
                    .map_err(|e| e.to_string())?;
                let prefix = crate::evidence::layout::evidence_folder(
                    &run.case,
                    &t.target.side.account,
                    &subject,
                    volume.as_str(),
                )
                .map_err(|e| e.to_string())?;
                let mut results = BTreeMap::new();
                let mut not_examined = Vec::new();
                for doc in &room.documents {
                    match collect_one(run, room, cfg, doc, &instance, &volume, &prefix, &subject)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        Some(v) => {
                            results.insert(doc.kind.step().to_owned(), v);
                        }
                        None => {
                            not_examined.push((doc.kind.step().to_owned(), meaning(Some(3)).0.to_owned()))
                        }
                    }
                }
                Ok::<_, String>(Examined {
                    copy: copy.clone(),
                    analysis_volume: volume,
                    analysis_instance: instance,
                    prefix,
                    results,
                    documents: room.documents.clone(),
                    not_examined,
                })
            }
            .await;
            (*ti, r)
        }
    });
    // Volumes are examined in parallel (each instance reads several devices at once);
    // the documents of one volume run one after the other.
    out.extend(futures::future::join_all(work).await);
    Ok(out)
}

pub struct AnalyzeStage;

#[async_trait]
impl StageWork for AnalyzeStage {
    fn stage(&self) -> Stage {
        Stage::Analyze
    }

    async fn plan(&self, run: &Run, state: &TargetState) -> Vec<String> {
        let Some(cfg) = &run.settings.analysis else {
            return vec!["no clean room configured: skipped".into()];
        };
        let mut calls = vec![
            format!(
                "ssm:DescribeDocument/CreateDocument/UpdateDocument {} {} {} (by content digest)",
                cfg.documents.disk_image, cfg.documents.triage, cfg.documents.yara
            ),
            format!(
                "ec2:RunInstances {} ({:?}) in {}, IMDSv2 only, no public IP, profile {} (one per {} volumes)",
                cfg.instance_type, cfg.ami, cfg.subnet, cfg.instance_profile, cfg.volumes_per_instance
            ),
        ];
        for v in &state.instance.volumes {
            calls.push(format!("{}: ec2:CreateVolume from its forensics copy, AttachVolume; ssm:SendCommand disk image, triage, YARA", v.volume));
        }
        calls
    }

    async fn run(&self, run: &Run, targets: &mut [TargetState]) {
        let Some(cfg) = run.settings.analysis.clone() else { return };
        if disks(targets).is_empty() {
            return;
        }
        match examine(run, &cfg, targets).await {
            Err(e) => {
                for t in targets.iter_mut().filter(|t| t.failed.is_none()) {
                    t.fail(Stage::Analyze, &e);
                }
            }
            Ok(results) => {
                for (i, r) in results {
                    match r {
                        Ok(x) => targets[i].examined.push(x),
                        Err(e) => targets[i].fail(Stage::Analyze, e),
                    }
                }
            }
        }
    }

    async fn check(&self, _run: &Run, state: &TargetState) -> Vec<Check> {
        state
            .examined
            .iter()
            .map(|x| {
                let done = x.results.len() + x.not_examined.len() == Kind::ALL.len()
                    && x.results.contains_key("image");
                Check::new(
                    format!("clean room {}", x.copy.volume.as_deref().unwrap_or("?")),
                    done,
                    format!(
                        "{} of {} documents, volume {}",
                        x.results.len(),
                        Kind::ALL.len(),
                        x.analysis_volume
                    ),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_spread_over_instances_within_the_limits() {
        assert_eq!(batches(3, 20, 4), vec![0, 0, 0]);
        assert_eq!(batches(25, 20, 4), (0..25).map(|i| i % 2).collect::<Vec<_>>());
        // More disks than the instances can take: still at most max_instances.
        assert!(batches(200, 20, 4).iter().all(|b| *b < 4));
        assert_eq!(batches(0, 20, 4), Vec::<usize>::new());
    }
}
