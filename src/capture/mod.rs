//! Capture: what the control plane knows about an instance, read before anything
//! changes it and without contact with the guest. Every response is kept as AWS sent
//! it (raw XML or JSON, with its request id), and the pieces a reader needs are decoded
//! beside it: the UserData (CloudTrail redacts it, so this is often the only copy of the
//! attacker's launch script), the console output, the screenshot. CloudTrail's event
//! history says who launched the instance, with which access key, from where, and what
//! else that key did.
//!
//! Reads that fail for reasons other than the instance itself (a missing permission, a
//! console the hypervisor does not offer) are recorded as gaps in the summary, never
//! fatal: containment must not wait on a screenshot.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod stage;
pub mod trail;

use crate::cloud::ec2::{CAPTURED_ATTRIBUTES, InstanceStorage};
use crate::cloud::{Cloud, CloudError, CloudResult, Instance, Raw, Volume, retry};
use crate::ids::{AccountId, InstanceId, Region};
use crate::pipeline::custody::{CustodySink, EvidenceRef, Item};

pub const SUMMARY_SCHEMA: &str = "cleanroom.capture/1";
pub const RAW_SCHEMA: &str = "cleanroom.capture-raw/1";

/// The evidence item id of one capture item of an instance.
pub fn item_id(account: &AccountId, instance: &InstanceId, name: &str) -> String {
    format!("{account}/{instance}/capture/{name}")
}

/// What capture learned, as stored in `capture-summary.json`: our reading of the raw
/// items, for the report and the later stages. Every value read from the account is
/// attacker-controlled data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub schema: String,
    pub instance: InstanceId,
    pub account: AccountId,
    pub region: Region,
    pub captured_at: String,
    pub state: String,
    pub details: crate::cloud::ec2::InstanceDetails,
    pub tags: BTreeMap<String, String>,
    pub user_data: Option<Blob>,
    pub console_output: Option<Blob>,
    pub screenshot: Option<Blob>,
    pub volumes: Vec<Volume>,
    /// Instance-store disks of the instance type: they cannot be snapshotted and are
    /// not captured (lost when the instance stops).
    pub instance_store: Option<InstanceStorage>,
    pub iam: Option<IamSummary>,
    pub trail: trail::TrailSummary,
    /// What could not be captured, and why.
    pub gaps: Vec<Gap>,
}

/// A decoded binary item: size and digest, and (for text) a bounded preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub item: String,
    pub bytes: u64,
    pub sha256: String,
    /// The first bytes as text (lossy UTF-8), for a reader; the item holds them all.
    pub preview: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IamSummary {
    pub profile_arn: String,
    pub roles: Vec<RoleSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSummary {
    pub name: String,
    pub attached_policies: Vec<String>,
    pub inline_policies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub what: String,
    pub error: String,
}

/// Longest preview of a text blob kept in the summary.
const PREVIEW_BYTES: usize = 4096;

/// Raw responses of one service, stored as one item (a custody record per response
/// would be dozens per instance).
#[derive(Debug, Default, Clone)]
struct Bundle {
    responses: Vec<Raw>,
}

impl Bundle {
    fn push(&mut self, raw: Raw) {
        self.responses.push(raw);
    }

    fn to_json(&self, instance: &InstanceId) -> serde_json::Value {
        let responses: Vec<serde_json::Value> = self
            .responses
            .iter()
            .map(|r| {
                let mut v = serde_json::json!({
                    "operation": r.operation,
                    "request": r.request,
                    "request_id": r.request_id,
                    "content_type": r.content_type,
                });
                match std::str::from_utf8(&r.body) {
                    Ok(text) => v["body"] = serde_json::json!(text),
                    Err(_) => {
                        v["body_base64"] =
                            serde_json::json!(base64::engine::general_purpose::STANDARD.encode(&r.body))
                    }
                }
                v
            })
            .collect();
        serde_json::json!({"schema": RAW_SCHEMA, "instance": instance, "responses": responses})
    }
}

/// Everything read, before it is stored.
pub struct Reading {
    pub instance: Instance,
    ec2: Bundle,
    iam: Bundle,
    trail_raw: Bundle,
    user_data: Option<Vec<u8>>,
    console: Option<Vec<u8>>,
    screenshot: Option<Vec<u8>>,
    volumes: Vec<Volume>,
    instance_store: Option<InstanceStorage>,
    iam_summary: Option<IamSummary>,
    trail: trail::TrailSummary,
    gaps: Vec<Gap>,
    captured_at: String,
}

fn gap(gaps: &mut Vec<Gap>, what: &str, e: &CloudError) {
    gaps.push(Gap { what: what.to_owned(), error: e.to_string() });
}

fn decode(b64: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| e.to_string())
}

/// Reads everything capture keeps about `instance`. Fails only when the instance itself
/// cannot be described; every other failure becomes a gap.
pub async fn read(
    cloud: &dyn Cloud,
    instance: &Instance,
    now: OffsetDateTime,
    window: &trail::Window,
) -> CloudResult<Reading> {
    let id = &instance.id;
    let mut gaps = Vec::new();
    let enis: Vec<_> = instance.enis.iter().map(|e| e.id.clone()).collect();
    let mut groups: Vec<_> = instance.enis.iter().flat_map(|e| e.groups.clone()).collect();
    groups.sort();
    groups.dedup();
    let volume_ids: Vec<_> = instance.volumes.iter().map(|v| v.volume.clone()).collect();

    let attributes = futures::future::join_all(
        CAPTURED_ATTRIBUTES
            .iter()
            .map(|a| async move { (*a, retry(|| cloud.capture_attribute(id, a)).await) }),
    );
    let (
        described,
        attributes,
        enis_raw,
        groups_raw,
        volumes,
        associations,
        console,
        screenshot,
        storage,
        trail,
    ) = futures::join!(
        retry(|| cloud.capture_instance(id)),
        attributes,
        retry(|| cloud.capture_network_interfaces(&enis)),
        async {
            if groups.is_empty() {
                None
            } else {
                Some(retry(|| cloud.capture_security_groups(&groups)).await)
            }
        },
        async {
            if volume_ids.is_empty() {
                None
            } else {
                Some(retry(|| cloud.capture_volumes(&volume_ids)).await)
            }
        },
        retry(|| cloud.capture_profile_associations(id)),
        console_output(cloud, id),
        retry(|| cloud.console_screenshot(id)),
        async {
            match &instance.details.instance_type {
                Some(t) => retry(|| cloud.instance_storage(t)).await,
                None => Ok(None),
            }
        },
        trail::read(cloud, id, window)
    );
    let mut ec2 = Bundle::default();
    ec2.push(described?);
    let mut user_data = None;
    for (name, r) in attributes {
        match r {
            Ok(c) => {
                if name == "userData"
                    && let Some(b64) = &c.value
                {
                    match decode(b64) {
                        Ok(bytes) => user_data = Some(bytes),
                        Err(e) => gaps.push(Gap { what: "userData decoding".into(), error: e }),
                    }
                }
                ec2.push(c.raw);
            }
            // Some attributes are not offered on every instance type or account.
            Err(e) => gap(&mut gaps, &format!("instance attribute {name}"), &e),
        }
    }
    match enis_raw {
        Ok(r) => ec2.push(r),
        Err(e) => gap(&mut gaps, "network interfaces", &e),
    }
    match groups_raw {
        Some(Ok(r)) => ec2.push(r),
        Some(Err(e)) => gap(&mut gaps, "security groups", &e),
        None => {}
    }
    let volumes = match volumes {
        Some(Ok(c)) => {
            ec2.push(c.raw);
            c.value
        }
        Some(Err(e)) => {
            gap(&mut gaps, "volumes", &e);
            vec![]
        }
        None => vec![],
    };
    match associations {
        Ok(r) => ec2.push(r),
        Err(e) => gap(&mut gaps, "instance profile associations", &e),
    }
    let console = match console {
        Ok((raws, text)) => {
            for r in raws {
                ec2.push(r);
            }
            text
        }
        Err(e) => {
            gap(&mut gaps, "console output", &e);
            None
        }
    };
    let screenshot = match screenshot {
        Ok(c) => {
            let image = c.value.as_deref().map(decode).transpose();
            ec2.push(c.raw);
            match image {
                Ok(i) => i,
                Err(e) => {
                    gaps.push(Gap { what: "console screenshot decoding".into(), error: e });
                    None
                }
            }
        }
        Err(e) => {
            gap(&mut gaps, "console screenshot", &e);
            None
        }
    };
    let instance_store = storage.unwrap_or_else(|e| {
        gap(&mut gaps, "instance storage of the instance type", &e);
        None
    });
    let (iam, iam_summary) = match &instance.details.instance_profile_arn {
        Some(arn) => read_iam(cloud, arn, &mut gaps).await,
        None => (Bundle::default(), None),
    };
    let (trail_summary, trail_raw) = trail;
    let mut trail_bundle = Bundle::default();
    for r in trail_raw {
        trail_bundle.push(r);
    }
    gaps.extend(trail_summary.gaps.iter().cloned());
    Ok(Reading {
        instance: instance.clone(),
        ec2,
        iam,
        trail_raw: trail_bundle,
        user_data,
        console,
        screenshot,
        volumes,
        instance_store,
        iam_summary,
        trail: trail_summary,
        gaps,
        captured_at: crate::evidence::case::utc_ms(now),
    })
}

/// Live serial output (`Latest=true`, Nitro); where the hypervisor does not offer it,
/// the buffered output. Returns the raw answers and the decoded text.
async fn console_output(cloud: &dyn Cloud, id: &InstanceId) -> CloudResult<(Vec<Raw>, Option<Vec<u8>>)> {
    let mut raws = Vec::new();
    let latest = retry(|| cloud.console_output(id, true)).await;
    let c = match latest {
        Ok(c) => c,
        Err(e) if e.kind == crate::cloud::ErrorKind::Other => {
            tracing::info!("{id}: live console output not offered ({e}); reading the buffered output");
            retry(|| cloud.console_output(id, false)).await?
        }
        Err(e) => return Err(e),
    };
    let text = match &c.value {
        Some(b64) => Some(
            decode(b64)
                .map_err(|e| CloudError::new("ec2", "GetConsoleOutput", crate::cloud::ErrorKind::Other, e))?,
        ),
        None => None,
    };
    raws.push(c.raw);
    Ok((raws, text))
}

async fn read_iam(cloud: &dyn Cloud, profile_arn: &str, gaps: &mut Vec<Gap>) -> (Bundle, Option<IamSummary>) {
    let mut bundle = Bundle::default();
    let roles = match retry(|| cloud.capture_profile(profile_arn)).await {
        Ok(c) => {
            bundle.push(c.raw);
            c.value
        }
        Err(e) => {
            gap(gaps, &format!("instance profile {profile_arn}"), &e);
            return (bundle, None);
        }
    };
    let mut summaries = Vec::new();
    for role in roles {
        let (r, attached, inline) = futures::join!(
            retry(|| cloud.capture_role(&role)),
            retry(|| cloud.capture_attached_policies(&role)),
            retry(|| cloud.capture_inline_policy_names(&role))
        );
        match r {
            Ok(r) => bundle.push(r),
            Err(e) => gap(gaps, &format!("role {role}"), &e),
        }
        let attached = match attached {
            Ok(c) => {
                bundle.push(c.raw);
                c.value
            }
            Err(e) => {
                gap(gaps, &format!("attached policies of role {role}"), &e);
                vec![]
            }
        };
        let inline = match inline {
            Ok(c) => {
                bundle.push(c.raw);
                c.value
            }
            Err(e) => {
                gap(gaps, &format!("inline policies of role {role}"), &e);
                vec![]
            }
        };
        let (managed, inlines) = futures::join!(
            futures::future::join_all(attached.iter().map(|p| retry(|| cloud.capture_managed_policy(p)))),
            futures::future::join_all(inline.iter().map(|p| retry(|| cloud.capture_inline_policy(&role, p))))
        );
        for (p, r) in attached.iter().zip(managed) {
            match r {
                Ok(raws) => raws.into_iter().for_each(|r| bundle.push(r)),
                Err(e) => gap(gaps, &format!("managed policy {p}"), &e),
            }
        }
        for (p, r) in inline.iter().zip(inlines) {
            match r {
                Ok(r) => bundle.push(r),
                Err(e) => gap(gaps, &format!("inline policy {p} of role {role}"), &e),
            }
        }
        summaries.push(RoleSummary { name: role, attached_policies: attached, inline_policies: inline });
    }
    (bundle, Some(IamSummary { profile_arn: profile_arn.to_owned(), roles: summaries }))
}

/// What storing a reading produced: the summary and every item.
pub struct Stored {
    pub summary: Summary,
    pub items: Vec<EvidenceRef>,
}

/// Stores every capture item of a reading (each once: a rerun finds them stored), the
/// raw bundles first, then what is derived from them, then the summary.
pub async fn store(
    custody: &dyn CustodySink,
    account: &AccountId,
    region: &Region,
    reading: &Reading,
) -> Result<Stored, crate::pipeline::custody::CustodyError> {
    let id = &reading.instance.id;
    let item = |name: &str, source: &str, method: &str, derived: Vec<String>| Item {
        id: item_id(account, id, name),
        account: account.clone(),
        subject: id.to_string(),
        name: name.to_owned(),
        source: source.to_owned(),
        method: method.to_owned(),
        derived_from: derived,
    };
    // Every item is stored at once, each returning when the store holds it (S3 checked
    // its SHA-256): the reading was made before any change, and the change waits only
    // for these bytes to be in the bucket; read-backs and records follow, in this order.
    let ec2 = item(
        "capture-ec2.json",
        "ec2:DescribeInstances, DescribeInstanceAttribute (each attribute), DescribeNetworkInterfaces, DescribeSecurityGroups, DescribeVolumes, DescribeIamInstanceProfileAssociations, GetConsoleOutput, GetConsoleScreenshot",
        "cleanroom capture: the responses as EC2 sent them, with their request ids, read before any change",
        vec![],
    );
    let ec2_id = ec2.id.clone();
    let iam = (!reading.iam.responses.is_empty()).then(|| {
        item(
            "capture-iam.json",
            "iam:GetInstanceProfile, GetRole, ListAttachedRolePolicies, GetPolicy, GetPolicyVersion, ListRolePolicies, GetRolePolicy",
            "cleanroom capture: the instance profile, its roles and their policies as IAM sent them",
            vec![],
        )
    });
    let iam_id = iam.as_ref().map(|i| i.id.clone());
    let trail = item(
        "capture-cloudtrail.json",
        "cloudtrail:LookupEvents (ResourceName = the instance; AccessKeyId = the key that launched it)",
        "cleanroom capture: CloudTrail event history pages as sent, in this region",
        vec![],
    );
    let trail_id = trail.id.clone();
    let mut raw = vec![(ec2, reading.ec2.to_json(id))];
    raw.extend(iam.map(|i| (i, reading.iam.to_json(id))));
    raw.push((trail, reading.trail_raw.to_json(id)));

    let blob = |bytes: &Option<Vec<u8>>, name: &str, method: &str, text: bool| {
        bytes.as_ref().map(|b| {
            (
                item(name, "ec2 (decoded from the base64 of the response)", method, vec![ec2_id.clone()]),
                b.clone(),
                text,
            )
        })
    };
    let blobs: Vec<(Item, Vec<u8>, bool)> = [
        blob(&reading.user_data, "userdata.bin", "base64-decoded userData attribute, byte for byte", true),
        blob(
            &reading.console,
            "console-output.txt",
            "base64-decoded GetConsoleOutput output, byte for byte",
            true,
        ),
        blob(
            &reading.screenshot,
            "console-screenshot.jpg",
            "base64-decoded GetConsoleScreenshot ImageData",
            false,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (raw, blobs) = futures::join!(
        futures::future::join_all(
            raw.into_iter().map(|(i, v)| async move { custody.store_json_early(i, &v).await })
        ),
        futures::future::join_all(blobs.into_iter().map(|(i, bytes, text)| async move {
            let name = i.name.clone();
            let content_type = if text { "text/plain" } else { "image/jpeg" };
            let (r, recovered) = custody.store_bytes_early(i, bytes.clone(), content_type).await?;
            // An item recovered from an interrupted run is what it holds.
            Ok::<_, crate::pipeline::custody::CustodyError>((name, r, recovered.unwrap_or(bytes), text))
        }))
    );
    let mut refs = Vec::new();
    for r in raw {
        refs.push(r?.evidence);
    }
    let mut decoded: BTreeMap<String, Blob> = BTreeMap::new();
    for b in blobs {
        let (name, r, bytes, text) = b?;
        decoded.insert(
            name,
            Blob {
                item: r.id.clone(),
                bytes: bytes.len() as u64,
                sha256: r.sha256.clone(),
                preview: text
                    .then(|| String::from_utf8_lossy(&bytes[..bytes.len().min(PREVIEW_BYTES)]).into_owned()),
            },
        );
        refs.push(r);
    }

    let instance = &reading.instance;
    let summary = Summary {
        schema: SUMMARY_SCHEMA.into(),
        instance: id.clone(),
        account: account.clone(),
        region: region.clone(),
        captured_at: reading.captured_at.clone(),
        state: instance.state.clone(),
        details: instance.details.clone(),
        tags: instance.tags.clone(),
        user_data: decoded.remove("userdata.bin"),
        console_output: decoded.remove("console-output.txt"),
        screenshot: decoded.remove("console-screenshot.jpg"),
        volumes: reading.volumes.clone(),
        instance_store: reading.instance_store.clone(),
        iam: reading.iam_summary.clone(),
        trail: reading.trail.clone(),
        gaps: reading.gaps.clone(),
    };
    let mut derived = vec![ec2_id, trail_id];
    derived.extend(iam_id);
    let s = item(
        "capture-summary.json",
        "the capture items of this instance",
        "cleanroom capture: our reading of the raw items (decoded UserData, launcher, gaps)",
        derived,
    );
    let stored =
        custody.store_json_early(s, &serde_json::to_value(&summary).expect("summary serialises")).await?;
    refs.push(stored.evidence);
    // A summary recovered from an interrupted run is the one on record.
    let summary = match stored.recovered {
        Some(v) => serde_json::from_value(v).map_err(|e| {
            crate::pipeline::custody::CustodyError(format!(
                "the capture summary found in the case is unreadable: {e}"
            ))
        })?,
        None => summary,
    };
    Ok(Stored { summary, items: refs })
}
