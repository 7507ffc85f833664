//! An in-memory cloud behind the containment traits ([`crate::isolate::cloud`]), with
//! fault injection for what no emulator produces: throttling N times, a named call that
//! fails, a crash (every call after the K-th fails, as if the process died), and a
//! per-call latency so tests can count sequential round trips in virtual time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::cloud::CloudError;
use crate::cloud::ErrorKind;
use crate::cloud::ec2::{ConnTrack, InstanceDetails, InstanceStorage, NetworkPaths};
use crate::cloud::{
    AsgGroup, Attributes, AutoScaling, Call, CloudResult, DryRun, Ec2, Eni, Group, Iam, Instance,
    LoadBalancing, NewGroup, NewInstance, ProfileAssociation, Purpose, Rule, TAG_CASE, TAG_PURPOSE, Target,
    V4_ANY, V6_ANY, VolumeAttachment,
};
use crate::cloud::{Captured, Raw};
use crate::ids::{AccountId, CaseId, InstanceId, NetworkInterfaceId, Region, SecurityGroupId, VpcId};

#[derive(Debug, Clone)]
pub struct FakeInstance {
    pub state: String,
    pub vpc: VpcId,
    pub enis: Vec<NetworkInterfaceId>,
    pub volumes: Vec<VolumeAttachment>,
    pub tags: BTreeMap<String, String>,
    pub attributes: Attributes,
    pub details: InstanceDetails,
    /// Base64, as the API gives it.
    pub user_data: Option<String>,
    pub console: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct FakeGroup {
    pub group: Group,
    pub tags: BTreeMap<String, String>,
}

/// The fake's whole state, public so tests can seed and inspect it.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub next_id: u64,
    pub instances: BTreeMap<InstanceId, FakeInstance>,
    pub enis: BTreeMap<NetworkInterfaceId, Eni>,
    pub groups: BTreeMap<SecurityGroupId, FakeGroup>,
    pub vpc_ipv6: BTreeMap<VpcId, bool>,
    pub associations: Vec<ProfileAssociation>,
    /// Instance profile ARN -> role names.
    pub profiles: BTreeMap<String, Vec<String>>,
    pub role_policies: BTreeMap<(String, String), serde_json::Value>,
    pub asgs: BTreeMap<String, AsgGroup>,
    /// Target group ARN -> (instance id, registration).
    pub target_groups: BTreeMap<String, Vec<(String, Target)>>,
    pub classic: BTreeMap<String, Vec<String>>,
    /// Route tables and service-owned interfaces, per VPC.
    pub paths: BTreeMap<VpcId, NetworkPaths>,
    /// Reads of the profile association that still show `disassociating` after
    /// DisassociateIamInstanceProfile (AWS takes a moment); 0: gone at once.
    pub disassociation_reads: u32,
    /// Associations being disassociated: association id -> reads left.
    pub disassociating: BTreeMap<String, u32>,
}

impl State {
    pub fn hex(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }

    pub fn instance(&self, id: &InstanceId, i: &FakeInstance) -> Instance {
        Instance {
            id: id.clone(),
            state: i.state.clone(),
            vpc: Some(i.vpc.clone()),
            enis: i.enis.iter().map(|e| self.enis[e].clone()).collect(),
            volumes: i.volumes.clone(),
            tags: i.tags.clone(),
            details: i.details.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct Faults {
    throttle: HashMap<String, u32>,
    /// (operation, substring of the call's detail, remaining failures or None = always)
    fail: Vec<(String, Option<String>, Option<u32>)>,
    crash_after: Option<usize>,
    denied: Vec<String>,
    calls: usize,
    /// (operation, substring of the detail, remaining): the change is made, then the
    /// answer is lost (a timeout after AWS applied it).
    lost: Vec<(String, Option<String>, u32)>,
}

/// One call the fake received: operation and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub operation: String,
    pub detail: String,
    pub failed: bool,
}

/// One account and region of the fake world: its own EC2/IAM/... state, and the world
/// shared with the other accounts (faults, the call log, snapshots, keys, CloudTrail).
pub struct FakeCloud {
    pub account: AccountId,
    pub region: Region,
    pub state: Arc<Mutex<State>>,
    pub world: Arc<World>,
}

/// One account and region's state, shared by its views.
type SharedState = Arc<Mutex<State>>;

/// What every account of a fake world shares.
#[derive(Default)]
pub struct World {
    faults: Mutex<Faults>,
    log: Mutex<Vec<Logged>>,
    latency: Mutex<Option<Duration>>,
    /// Snapshots, volumes, keys and events, across accounts.
    pub ebs: Mutex<super::world::EbsWorld>,
    states: Mutex<BTreeMap<(AccountId, Region), SharedState>>,
}

/// The account and region of `FakeCloud::new()`.
pub const FAKE_ACCOUNT: &str = "111122223333";
pub const FAKE_REGION: &str = "eu-west-1";

impl Default for FakeCloud {
    fn default() -> Self {
        let world = Arc::new(World::default());
        let account: AccountId = FAKE_ACCOUNT.parse().expect("account id");
        let region: Region = FAKE_REGION.parse().expect("region");
        let state = world.state_of(&account, &region);
        Self { account, region, state, world }
    }
}

impl World {
    /// Every (account, region) that has state.
    pub fn regions(&self) -> Vec<(AccountId, Region)> {
        self.states.lock().expect("states lock").keys().cloned().collect()
    }

    fn state_of(&self, account: &AccountId, region: &Region) -> Arc<Mutex<State>> {
        self.states.lock().expect("states lock").entry((account.clone(), region.clone())).or_default().clone()
    }
}

pub(super) fn fault(operation: &str, kind: ErrorKind, code: &str, message: &str) -> CloudError {
    CloudError {
        service: "fake",
        operation: leak(operation),
        kind,
        code: Some(code.into()),
        message: message.into(),
        request_id: Some("fake-request-failed".into()),
    }
}

/// Operation names are few and fixed; `CloudError` wants `&'static str`.
fn leak(s: &str) -> &'static str {
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().expect("names lock");
    if let Some(n) = names.iter().find(|n| **n == s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_owned().into_boxed_str());
    names.push(n);
    n
}

impl FakeCloud {
    pub fn new() -> Self {
        Self::default()
    }

    /// Another account and region of the same world (faults, log, snapshots shared).
    pub fn view(&self, account: &AccountId, region: &Region) -> Arc<FakeCloud> {
        Arc::new(FakeCloud {
            account: account.clone(),
            region: region.clone(),
            state: self.world.state_of(account, region),
            world: self.world.clone(),
        })
    }

    /// Every call takes `latency` (virtual time in paused-clock tests).
    pub fn with_latency(self, latency: Duration) -> Self {
        *self.world.latency.lock().expect("latency lock") = Some(latency);
        self
    }

    /// The next `times` calls of `operation` are throttled.
    pub fn throttle(&self, operation: &str, times: u32) {
        self.world.faults.lock().expect("faults lock").throttle.insert(operation.into(), times);
    }

    /// Calls of `operation` whose detail contains `matching` fail (`times` times, or always).
    pub fn fail(&self, operation: &str, matching: Option<&str>, times: Option<u32>) {
        self.world.faults.lock().expect("faults lock").fail.push((
            operation.into(),
            matching.map(str::to_owned),
            times,
        ));
    }

    /// Every call of `operation` is refused as UnauthorizedOperation (a missing permission).
    pub fn deny(&self, operation: &str) {
        self.world.faults.lock().expect("faults lock").denied.push(operation.into());
    }

    /// The next `times` calls of `operation` whose detail contains `matching` are
    /// applied, then answer with a timeout: the caller cannot know the change was made.
    pub fn lose_response(&self, operation: &str, matching: Option<&str>, times: u32) {
        self.world.faults.lock().expect("faults lock").lost.push((
            operation.into(),
            matching.map(str::to_owned),
            times,
        ));
    }

    /// After a change was applied: the timeout [`FakeCloud::lose_response`] asked for.
    fn answer(&self, call: Call, detail: &str) -> CloudResult<Call> {
        let mut f = self.world.faults.lock().expect("faults lock");
        let op = call.operation.clone();
        if let Some(rule) = f.lost.iter_mut().find(|(o, m, left)| {
            *o == op && m.as_ref().is_none_or(|m| detail.contains(m.as_str())) && *left > 0
        }) {
            rule.2 -= 1;
            drop(f);
            let mut log = self.world.log.lock().expect("log lock");
            if let Some(l) = log.iter_mut().rev().find(|l| l.operation == op && l.detail == detail) {
                l.failed = true;
                l.detail.push_str(" (applied, answer lost)");
            }
            return Err(CloudError {
                service: "fake",
                operation: leak(&op),
                kind: ErrorKind::Unreachable,
                code: None,
                message: "operation timed out (the change was applied)".into(),
                request_id: None,
            });
        }
        Ok(call)
    }

    /// Whether the role's inline policies deny a request made with a session of
    /// `role` issued at `issued_at` (RFC 3339) and, for instance credentials, carrying
    /// `source_instance` as `ec2:SourceInstanceARN`. Evaluates Deny statements with
    /// `StringEquals` and `DateLessThan` conditions, as IAM does: every condition of a
    /// statement must hold; a key absent from the request fails a positive operator.
    pub fn session_denied(&self, role: &str, source_instance: Option<&str>, issued_at: &str) -> bool {
        let s = self.state.lock().expect("state lock");
        let parse =
            |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok();
        let issued = parse(issued_at);
        let key = |k: &str| -> Option<String> {
            match k.to_ascii_lowercase().as_str() {
                "ec2:sourceinstancearn" => source_instance.map(str::to_owned),
                "aws:tokenissuetime" => Some(issued_at.to_owned()),
                _ => None,
            }
        };
        let values = |v: &serde_json::Value| -> Vec<String> {
            match v {
                serde_json::Value::Array(a) => {
                    a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()
                }
                serde_json::Value::String(x) => vec![x.clone()],
                _ => vec![],
            }
        };
        for ((r, _), doc) in &s.role_policies {
            if r != role {
                continue;
            }
            let statements = match &doc["Statement"] {
                serde_json::Value::Array(a) => a.clone(),
                other => vec![other.clone()],
            };
            for st in statements {
                if st["Effect"] != "Deny" || st["Action"] != "*" {
                    continue;
                }
                let Some(conditions) = st["Condition"].as_object() else { continue };
                let holds = conditions.iter().all(|(op, kv)| {
                    kv.as_object().is_some_and(|kv| {
                        kv.iter().all(|(k, want)| match (op.as_str(), key(k)) {
                            ("StringEquals", Some(have)) => values(want).contains(&have),
                            ("DateLessThan", Some(_)) => values(want)
                                .iter()
                                .any(|w| matches!((issued, parse(w)), (Some(i), Some(w)) if i < w)),
                            _ => false,
                        })
                    })
                });
                if holds {
                    return true;
                }
            }
        }
        false
    }

    /// Every call after the `calls`-th fails, as if the process had died there.
    pub fn crash_after(&self, calls: usize) {
        let mut f = self.world.faults.lock().expect("faults lock");
        f.crash_after = Some(f.calls + calls);
    }

    /// Clears every fault (a new process after a crash).
    pub fn heal(&self) {
        let mut f = self.world.faults.lock().expect("faults lock");
        let calls = f.calls;
        *f = Faults { calls, ..Faults::default() };
    }

    pub fn log(&self) -> Vec<Logged> {
        self.world.log.lock().expect("log lock").clone()
    }

    pub fn calls_of(&self, operation: &str) -> Vec<Logged> {
        self.log().into_iter().filter(|l| l.operation == operation).collect()
    }

    pub fn snapshot(&self) -> State {
        self.state.lock().expect("state lock").clone()
    }

    /// Names of the groups, each with its rule count when the call is made (so a test
    /// sees what a group allowed at the moment an ENI went onto it).
    fn group_names(&self, ids: &[SecurityGroupId]) -> String {
        let s = self.state.lock().expect("state lock");
        ids.iter()
            .map(|g| {
                s.groups
                    .get(g)
                    .map(|f| format!("{}[{} rules]", f.group.name, f.group.rules.len()))
                    .unwrap_or_else(|| g.to_string())
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub(super) async fn enter(&self, operation: &str, detail: String) -> CloudResult<Call> {
        let latency = *self.world.latency.lock().expect("latency lock");
        if let Some(l) = latency {
            tokio::time::sleep(l).await;
        }
        let result = {
            let mut f = self.world.faults.lock().expect("faults lock");
            f.calls += 1;
            let n = f.calls;
            if f.crash_after.is_some_and(|k| n > k) {
                Err(fault(operation, ErrorKind::Other, "FakeCrash", "the process stopped here"))
            } else if f.denied.iter().any(|d| d == operation) {
                Err(fault(
                    operation,
                    ErrorKind::AccessDenied,
                    "UnauthorizedOperation",
                    "You are not authorized to perform this operation.",
                ))
            } else if let Some(t) = f.throttle.get_mut(operation).filter(|t| **t > 0) {
                *t -= 1;
                Err(fault(operation, ErrorKind::Throttled, "RequestLimitExceeded", "Request limit exceeded."))
            } else if let Some(rule) = f.fail.iter_mut().find(|(op, m, left)| {
                op == operation
                    && m.as_ref().is_none_or(|m| detail.contains(m.as_str()))
                    && left.is_none_or(|l| l > 0)
            }) {
                if let Some(l) = rule.2.as_mut() {
                    *l -= 1;
                }
                Err(fault(operation, ErrorKind::Other, "InternalError", "injected failure"))
            } else {
                Ok(Call::new(operation, Some(&format!("fake-{operation}-{n}"))))
            }
        };
        self.world.log.lock().expect("log lock").push(Logged {
            operation: operation.into(),
            detail,
            failed: result.is_err(),
        });
        result
    }

    pub(super) fn not_found(operation: &str, what: &str) -> CloudError {
        fault(operation, ErrorKind::NotFound, "InvalidID.NotFound", &format!("{what} does not exist"))
    }

    /// Seeds a contained-service scenario like the acceptance test: an instance with two
    /// ENIs (one with IPv6) in an IPv6 VPC, two volumes, an instance profile whose role
    /// another instance shares, an Auto Scaling group, a target group (port 8080) and a
    /// classic load balancer. Returns the instance id.
    pub fn seed_service_instance(&self) -> InstanceId {
        let mut s = self.state.lock().expect("state lock");
        let vpc: VpcId = s.hex("vpc").parse().expect("id");
        s.vpc_ipv6.insert(vpc.clone(), true);
        let web_sg: SecurityGroupId = s.hex("sg").parse().expect("id");
        let admin_sg: SecurityGroupId = s.hex("sg").parse().expect("id");
        for (id, name) in [(&web_sg, "web"), (&admin_sg, "admin")] {
            s.groups.insert(
                id.clone(),
                FakeGroup {
                    group: Group {
                        id: id.clone(),
                        vpc: vpc.clone(),
                        name: name.into(),
                        purpose: None,
                        rules: vec![Rule::all(false, V4_ANY)],
                    },
                    tags: BTreeMap::new(),
                },
            );
        }
        let id: InstanceId = s.hex("i").parse().expect("id");
        let other: InstanceId = s.hex("i").parse().expect("id");
        let eni0: NetworkInterfaceId = s.hex("eni").parse().expect("id");
        let eni1: NetworkInterfaceId = s.hex("eni").parse().expect("id");
        s.enis.insert(
            eni0.clone(),
            Eni {
                id: eni0.clone(),
                device_index: 0,
                vpc: vpc.clone(),
                groups: vec![web_sg.clone()],
                ipv6_addresses: vec![],
                subnet: Some("subnet-0000000a".parse().expect("id")),
                interface_type: Some("interface".into()),
                conntrack: None,
            },
        );
        s.enis.insert(
            eni1.clone(),
            Eni {
                id: eni1.clone(),
                device_index: 1,
                vpc: vpc.clone(),
                groups: vec![web_sg.clone(), admin_sg],
                ipv6_addresses: vec!["2001:db8::10".into()],
                subnet: Some("subnet-0000000a".parse().expect("id")),
                interface_type: Some("interface".into()),
                conntrack: None,
            },
        );
        let vol = |s: &mut State, device: &str, delete: bool| VolumeAttachment {
            device: device.into(),
            volume: s.hex("vol").parse().expect("id"),
            delete_on_termination: delete,
        };
        let volumes = vec![vol(&mut s, "/dev/xvda", true), vol(&mut s, "/dev/xvdf", false)];
        s.instances.insert(
            id.clone(),
            FakeInstance {
                state: "running".into(),
                vpc: vpc.clone(),
                enis: vec![eni0, eni1],
                volumes,
                tags: [("Name".to_owned(), "web-1".to_owned())].into(),
                attributes: Attributes {
                    termination_protection: false,
                    shutdown_behavior: "terminate".into(),
                },
                details: InstanceDetails {
                    instance_type: Some("m5.large".into()),
                    launch_time: Some("2026-11-30T08:00:00Z".into()),
                    availability_zone: Some("eu-west-1a".into()),
                    instance_profile_arn: Some("arn:aws:iam::111122223333:instance-profile/web".into()),
                    ..InstanceDetails::default()
                },
                user_data: None,
                console: None,
            },
        );
        let profile = "arn:aws:iam::111122223333:instance-profile/web".to_owned();
        s.profiles.insert(profile.clone(), vec!["web-role".into()]);
        for (n, i) in [(1, &id), (2, &other)] {
            s.associations.push(ProfileAssociation {
                association_id: format!("iip-assoc-{n:017x}"),
                instance: i.clone(),
                profile_arn: profile.clone(),
                state: "associated".into(),
            });
        }
        s.asgs.insert(
            "web".into(),
            AsgGroup { name: "web".into(), min: 1, max: 4, desired: 2, instances: vec![id.clone(), other] },
        );
        let tg =
            "arn:aws:elasticloadbalancing:eu-west-1:111122223333:targetgroup/web/0123456789abcdef".to_owned();
        s.target_groups.insert(
            tg.clone(),
            vec![(
                id.to_string(),
                Target { target_group_arn: tg, port: Some(8080), availability_zone: None },
            )],
        );
        s.classic.insert("web-classic".into(), vec![id.to_string()]);
        id
    }

    /// A plain instance with one ENI on `group` in the VPC of `like` (fleet tests).
    pub fn seed_plain_instance(&self, like: &InstanceId) -> InstanceId {
        let mut s = self.state.lock().expect("state lock");
        let vpc = s.instances[like].vpc.clone();
        let group = s.enis[&s.instances[like].enis[0]].groups[0].clone();
        let id: InstanceId = s.hex("i").parse().expect("id");
        let eni: NetworkInterfaceId = s.hex("eni").parse().expect("id");
        s.enis.insert(
            eni.clone(),
            Eni {
                id: eni.clone(),
                device_index: 0,
                vpc: vpc.clone(),
                groups: vec![group],
                ipv6_addresses: vec![],
                subnet: Some("subnet-0000000a".parse().expect("id")),
                interface_type: Some("interface".into()),
                conntrack: None,
            },
        );
        let volume = s.hex("vol").parse().expect("id");
        s.instances.insert(
            id.clone(),
            FakeInstance {
                state: "running".into(),
                vpc,
                enis: vec![eni],
                volumes: vec![VolumeAttachment {
                    device: "/dev/xvda".into(),
                    volume,
                    delete_on_termination: true,
                }],
                tags: [("fleet".to_owned(), "yes".to_owned())].into(),
                attributes: Attributes { termination_protection: false, shutdown_behavior: "stop".into() },
                details: InstanceDetails {
                    instance_type: Some("t3.micro".into()),
                    ..InstanceDetails::default()
                },
                user_data: None,
                console: None,
            },
        );
        id
    }

    /// Groups of the case in the fake, by purpose.
    pub fn case_groups_of(&self, case: &CaseId, purpose: Purpose) -> Vec<Group> {
        let s = self.state.lock().expect("state lock");
        s.groups
            .values()
            .filter(|g| {
                g.tags.get(TAG_CASE).map(String::as_str) == Some(case.as_str())
                    && g.group.purpose == Some(purpose)
            })
            .map(|g| g.group.clone())
            .collect()
    }

    pub fn eni_groups(&self, id: &InstanceId) -> Vec<Vec<SecurityGroupId>> {
        let s = self.state.lock().expect("state lock");
        s.instances[id].enis.iter().map(|e| s.enis[e].groups.clone()).collect()
    }
}

#[async_trait]
impl Ec2 for FakeCloud {
    async fn describe_instance(&self, id: &InstanceId) -> CloudResult<Option<Instance>> {
        self.enter("DescribeInstances", id.to_string()).await?;
        let s = self.state.lock().expect("state lock");
        Ok(s.instances.get(id).map(|i| s.instance(id, i)))
    }

    async fn find_instances(&self, tag_filters: &[(String, String)]) -> CloudResult<Vec<InstanceId>> {
        self.enter("DescribeInstances", format!("{tag_filters:?}")).await?;
        let s = self.state.lock().expect("state lock");
        Ok(s.instances
            .iter()
            .filter(|(_, i)| {
                i.state != "terminated" && tag_filters.iter().all(|(k, v)| i.tags.get(k) == Some(v))
            })
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn attributes(&self, id: &InstanceId) -> CloudResult<Attributes> {
        self.enter("DescribeInstanceAttribute", id.to_string()).await?;
        let s = self.state.lock().expect("state lock");
        s.instances
            .get(id)
            .map(|i| i.attributes.clone())
            .ok_or_else(|| Self::not_found("DescribeInstanceAttribute", id.as_str()))
    }

    async fn profile_association(&self, id: &InstanceId) -> CloudResult<Option<ProfileAssociation>> {
        self.enter("DescribeIamInstanceProfileAssociations", id.to_string()).await?;
        let mut s = self.state.lock().expect("state lock");
        let found = s.associations.iter().find(|a| &a.instance == id).cloned();
        if let Some(a) = &found {
            if let Some(left) = s.disassociating.get_mut(&a.association_id) {
                if *left == 0 {
                    let gone = a.association_id.clone();
                    s.disassociating.remove(&gone);
                    s.associations.retain(|x| x.association_id != gone);
                    return Ok(None);
                }
                *left -= 1;
            }
        }
        Ok(found)
    }

    async fn all_profile_associations(&self) -> CloudResult<Vec<ProfileAssociation>> {
        self.enter("DescribeIamInstanceProfileAssociations", "all".into()).await?;
        Ok(self.state.lock().expect("state lock").associations.clone())
    }

    async fn case_groups(&self, case: &CaseId) -> CloudResult<Vec<Group>> {
        self.enter("DescribeSecurityGroups", case.to_string()).await?;
        let s = self.state.lock().expect("state lock");
        Ok(s.groups
            .values()
            .filter(|g| g.tags.get(TAG_CASE).map(String::as_str) == Some(case.as_str()))
            .map(|g| g.group.clone())
            .collect())
    }

    async fn dry_run(&self, check: &DryRun) -> CloudResult<()> {
        self.enter(&format!("DryRun:{}", check.operation()), format!("{check:?}")).await.map(|_| ())
    }

    async fn create_group(&self, new: &NewGroup) -> CloudResult<(SecurityGroupId, Call)> {
        let call = self.enter("CreateSecurityGroup", format!("{} {}", new.vpc, new.name)).await?;
        let mut s = self.state.lock().expect("state lock");
        if s.groups.values().any(|g| g.group.vpc == new.vpc && g.group.name == new.name) {
            return Err(fault(
                "CreateSecurityGroup",
                ErrorKind::Other,
                "InvalidGroup.Duplicate",
                "group name exists in VPC",
            ));
        }
        let id: SecurityGroupId = s.hex("sg").parse().expect("id");
        let mut rules = vec![Rule::all(true, V4_ANY)];
        if s.vpc_ipv6.get(&new.vpc).copied().unwrap_or(false) {
            rules.push(Rule::all(true, V6_ANY));
        }
        let purpose = new.tags.get(TAG_PURPOSE).and_then(|p| Purpose::from_tag(p));
        s.groups.insert(
            id.clone(),
            FakeGroup {
                group: Group { id: id.clone(), vpc: new.vpc.clone(), name: new.name.clone(), purpose, rules },
                tags: new.tags.clone(),
            },
        );
        Ok((id, call))
    }

    async fn authorize(&self, group: &SecurityGroupId, rules: &[Rule]) -> CloudResult<Vec<Call>> {
        let call = self.enter("AuthorizeSecurityGroup", format!("{group} {rules:?}")).await?;
        let mut s = self.state.lock().expect("state lock");
        let g = s
            .groups
            .get_mut(group)
            .ok_or_else(|| Self::not_found("AuthorizeSecurityGroup", group.as_str()))?;
        if rules.iter().any(|r| g.group.rules.contains(r)) {
            return Err(fault(
                "AuthorizeSecurityGroup",
                ErrorKind::Other,
                "InvalidPermission.Duplicate",
                "rule exists",
            ));
        }
        g.group.rules.extend(rules.iter().cloned());
        Ok(vec![call])
    }

    async fn revoke(&self, group: &SecurityGroupId, rules: &[Rule]) -> CloudResult<Vec<Call>> {
        let call = self.enter("RevokeSecurityGroup", format!("{group} {rules:?}")).await?;
        let mut s = self.state.lock().expect("state lock");
        let g =
            s.groups.get_mut(group).ok_or_else(|| Self::not_found("RevokeSecurityGroup", group.as_str()))?;
        if rules.iter().any(|r| !g.group.rules.contains(r)) {
            return Err(fault(
                "RevokeSecurityGroup",
                ErrorKind::NotFound,
                "InvalidPermission.NotFound",
                "no such rule",
            ));
        }
        g.group.rules.retain(|r| !rules.contains(r));
        Ok(vec![call])
    }

    async fn set_eni_groups(
        &self,
        eni: &NetworkInterfaceId,
        groups: &[SecurityGroupId],
    ) -> CloudResult<Call> {
        let names = self.group_names(groups);
        let detail = format!("{eni} -> {names}");
        let call = self.enter("ModifyNetworkInterfaceAttribute", detail.clone()).await?;
        {
            let mut s = self.state.lock().expect("state lock");
            if groups.iter().any(|g| !s.groups.contains_key(g)) {
                return Err(Self::not_found("ModifyNetworkInterfaceAttribute", "group"));
            }
            let e = s
                .enis
                .get_mut(eni)
                .ok_or_else(|| Self::not_found("ModifyNetworkInterfaceAttribute", eni.as_str()))?;
            e.groups = groups.to_vec();
        }
        self.answer(call, &detail)
    }

    async fn set_termination_protection(&self, id: &InstanceId, on: bool) -> CloudResult<Call> {
        let call = self.enter("ModifyInstanceAttribute", format!("{id} DisableApiTermination={on}")).await?;
        let mut s = self.state.lock().expect("state lock");
        s.instances
            .get_mut(id)
            .ok_or_else(|| Self::not_found("ModifyInstanceAttribute", id.as_str()))?
            .attributes
            .termination_protection = on;
        Ok(call)
    }

    async fn set_shutdown_behavior(&self, id: &InstanceId, behavior: &str) -> CloudResult<Call> {
        let call = self
            .enter("ModifyInstanceAttribute", format!("{id} InstanceInitiatedShutdownBehavior={behavior}"))
            .await?;
        let mut s = self.state.lock().expect("state lock");
        s.instances
            .get_mut(id)
            .ok_or_else(|| Self::not_found("ModifyInstanceAttribute", id.as_str()))?
            .attributes
            .shutdown_behavior = behavior.into();
        Ok(call)
    }

    async fn set_delete_on_termination(
        &self,
        id: &InstanceId,
        devices: &[(String, bool)],
    ) -> CloudResult<Call> {
        let call =
            self.enter("ModifyInstanceAttribute", format!("{id} BlockDeviceMappings={devices:?}")).await?;
        let mut s = self.state.lock().expect("state lock");
        let i =
            s.instances.get_mut(id).ok_or_else(|| Self::not_found("ModifyInstanceAttribute", id.as_str()))?;
        for (d, v) in devices {
            if let Some(vol) = i.volumes.iter_mut().find(|x| &x.device == d) {
                vol.delete_on_termination = *v;
            }
        }
        Ok(call)
    }

    async fn create_tags(&self, id: &InstanceId, tags: &BTreeMap<String, String>) -> CloudResult<Call> {
        let call = self.enter("CreateTags", format!("{id} {tags:?}")).await?;
        let mut s = self.state.lock().expect("state lock");
        s.instances
            .get_mut(id)
            .ok_or_else(|| Self::not_found("CreateTags", id.as_str()))?
            .tags
            .extend(tags.clone());
        Ok(call)
    }

    async fn disassociate_profile(&self, association_id: &str) -> CloudResult<Call> {
        let call = self.enter("DisassociateIamInstanceProfile", association_id.into()).await?;
        {
            let mut s = self.state.lock().expect("state lock");
            let lag = s.disassociation_reads;
            let Some(a) = s.associations.iter_mut().find(|a| a.association_id == association_id) else {
                return Err(Self::not_found("DisassociateIamInstanceProfile", association_id));
            };
            if lag == 0 {
                s.associations.retain(|a| a.association_id != association_id);
            } else {
                a.state = "disassociating".into();
                s.disassociating.insert(association_id.to_owned(), lag);
            }
        }
        self.answer(call, association_id)
    }

    async fn associate_profile(&self, id: &InstanceId, profile_arn: &str) -> CloudResult<Call> {
        let call = self.enter("AssociateIamInstanceProfile", format!("{id} {profile_arn}")).await?;
        let mut s = self.state.lock().expect("state lock");
        let association_id = s.hex("iip-assoc");
        s.associations.push(ProfileAssociation {
            association_id,
            instance: id.clone(),
            profile_arn: profile_arn.into(),
            state: "associated".into(),
        });
        Ok(call)
    }

    async fn groups_by_id(&self, ids: &[SecurityGroupId]) -> CloudResult<Vec<Group>> {
        self.enter("DescribeSecurityGroups", format!("{ids:?}")).await?;
        let s = self.state.lock().expect("state lock");
        Ok(ids.iter().filter_map(|id| s.groups.get(id).map(|g| g.group.clone())).collect())
    }

    async fn network_paths(&self, vpc: &VpcId) -> CloudResult<NetworkPaths> {
        self.enter("DescribeRouteTables", vpc.to_string()).await?;
        self.enter("DescribeNetworkInterfaces", vpc.to_string()).await?;
        Ok(self.state.lock().expect("state lock").paths.get(vpc).cloned().unwrap_or_default())
    }

    async fn set_conntrack(&self, eni: &NetworkInterfaceId, timeouts: &ConnTrack) -> CloudResult<Call> {
        let detail = format!("{eni} conntrack {timeouts:?}");
        let call = self.enter("ModifyNetworkInterfaceAttribute", detail.clone()).await?;
        {
            let mut s = self.state.lock().expect("state lock");
            let e = s
                .enis
                .get_mut(eni)
                .ok_or_else(|| Self::not_found("ModifyNetworkInterfaceAttribute", eni.as_str()))?;
            e.conntrack = Some(*timeouts);
        }
        self.answer(call, &detail)
    }

    async fn describe_instances(&self, ids: &[InstanceId]) -> CloudResult<Vec<Instance>> {
        self.enter("DescribeInstances", format!("{ids:?}")).await?;
        let s = self.state.lock().expect("state lock");
        Ok(ids.iter().filter_map(|id| s.instances.get(id).map(|i| s.instance(id, i))).collect())
    }

    async fn capture_instance(&self, id: &InstanceId) -> CloudResult<Raw> {
        self.capture_instance_raw(id).await
    }

    async fn capture_attribute(
        &self,
        id: &InstanceId,
        attribute: &str,
    ) -> CloudResult<Captured<Option<String>>> {
        self.capture_attribute_raw(id, attribute).await
    }

    async fn capture_network_interfaces(&self, ids: &[NetworkInterfaceId]) -> CloudResult<Raw> {
        self.capture_list_raw("DescribeNetworkInterfaces", serde_json::json!({ "NetworkInterfaceIds": ids }))
            .await
    }

    async fn capture_security_groups(&self, ids: &[SecurityGroupId]) -> CloudResult<Raw> {
        self.capture_list_raw("DescribeSecurityGroups", serde_json::json!({ "GroupIds": ids })).await
    }

    async fn capture_profile_associations(&self, id: &InstanceId) -> CloudResult<Raw> {
        self.capture_list_raw(
            "DescribeIamInstanceProfileAssociations",
            serde_json::json!({ "InstanceId": id }),
        )
        .await
    }

    async fn console_output(&self, id: &InstanceId, _latest: bool) -> CloudResult<Captured<Option<String>>> {
        self.console_raw(id, false).await
    }

    async fn console_screenshot(&self, id: &InstanceId) -> CloudResult<Captured<Option<String>>> {
        self.console_raw(id, true).await
    }

    async fn instance_storage(&self, instance_type: &str) -> CloudResult<Option<InstanceStorage>> {
        self.enter("DescribeInstanceTypes", instance_type.into()).await?;
        // The m5d family has local NVMe disks; the rest of what the fake seeds has none.
        Ok(instance_type.starts_with("m5d.").then_some(InstanceStorage { disks: 1, total_gib: 75 }))
    }

    async fn enabled_regions(&self) -> CloudResult<Vec<Region>> {
        self.enter("DescribeRegions", String::new()).await?;
        let mut regions: Vec<Region> =
            self.world.regions().into_iter().filter(|(a, _)| a == &self.account).map(|(_, r)| r).collect();
        regions.sort();
        regions.dedup();
        Ok(regions)
    }

    async fn subnet_zone(&self, subnet: &crate::ids::SubnetId) -> CloudResult<Option<String>> {
        self.enter("DescribeSubnets", subnet.to_string()).await?;
        Ok(Some(format!("{}a", self.region)))
    }

    async fn run_instance(&self, request: &NewInstance) -> CloudResult<(InstanceId, Call)> {
        let call = self.enter("RunInstances", request.client_token.clone()).await?;
        let mut s = self.state.lock().expect("state lock");
        // The client token makes a repeated launch return the first instance.
        if let Some((id, _)) =
            s.instances.iter().find(|(_, i)| i.tags.get("lab:client-token") == Some(&request.client_token))
        {
            return Ok((id.clone(), call));
        }
        let id: InstanceId = s.hex("i").parse().expect("id");
        let vpc: VpcId = s.hex("vpc").parse().expect("id");
        let eni: NetworkInterfaceId = s.hex("eni").parse().expect("id");
        s.enis.insert(
            eni.clone(),
            Eni {
                id: eni.clone(),
                device_index: 0,
                vpc: vpc.clone(),
                groups: vec![request.security_group.clone()],
                ipv6_addresses: vec![],
                subnet: Some(request.subnet.clone()),
                interface_type: Some("interface".into()),
                conntrack: None,
            },
        );
        let mut tags = request.tags.clone();
        tags.insert("lab:client-token".into(), request.client_token.clone());
        s.instances.insert(
            id.clone(),
            FakeInstance {
                state: "running".into(),
                vpc,
                enis: vec![eni],
                volumes: vec![],
                tags,
                attributes: Attributes { termination_protection: false, shutdown_behavior: "stop".into() },
                details: InstanceDetails {
                    instance_type: Some(request.instance_type.clone()),
                    ..InstanceDetails::default()
                },
                user_data: None,
                console: None,
            },
        );
        drop(s);
        self.world.ebs.lock().expect("ebs lock").online.insert(id.clone());
        Ok((id, call))
    }

    async fn terminate_instance(&self, id: &InstanceId) -> CloudResult<Call> {
        let call = self.enter("TerminateInstances", id.to_string()).await?;
        let mut s = self.state.lock().expect("state lock");
        s.instances.get_mut(id).ok_or_else(|| Self::not_found("TerminateInstances", id.as_str()))?.state =
            "terminated".into();
        Ok(call)
    }
}

#[async_trait]
impl Iam for FakeCloud {
    async fn profile_roles(&self, profile_arn: &str) -> CloudResult<Vec<String>> {
        self.enter("GetInstanceProfile", profile_arn.into()).await?;
        let s = self.state.lock().expect("state lock");
        s.profiles.get(profile_arn).cloned().ok_or_else(|| Self::not_found("GetInstanceProfile", profile_arn))
    }

    async fn profiles_for_role(&self, role: &str) -> CloudResult<Vec<String>> {
        self.enter("ListInstanceProfilesForRole", role.into()).await?;
        let s = self.state.lock().expect("state lock");
        Ok(s.profiles
            .iter()
            .filter(|(_, roles)| roles.iter().any(|r| r == role))
            .map(|(p, _)| p.clone())
            .collect())
    }

    async fn role_policy(&self, role: &str, policy: &str) -> CloudResult<Option<serde_json::Value>> {
        self.enter("GetRolePolicy", format!("{role} {policy}")).await?;
        Ok(self.state.lock().expect("state lock").role_policies.get(&(role.into(), policy.into())).cloned())
    }

    async fn put_role_policy(
        &self,
        role: &str,
        policy: &str,
        document: &serde_json::Value,
    ) -> CloudResult<Call> {
        let detail = format!("{role} {policy}");
        let call = self.enter("PutRolePolicy", detail.clone()).await?;
        self.state
            .lock()
            .expect("state lock")
            .role_policies
            .insert((role.into(), policy.into()), document.clone());
        self.answer(call, &detail)
    }

    async fn delete_role_policy(&self, role: &str, policy: &str) -> CloudResult<Call> {
        let call = self.enter("DeleteRolePolicy", format!("{role} {policy}")).await?;
        self.state
            .lock()
            .expect("state lock")
            .role_policies
            .remove(&(role.into(), policy.into()))
            .ok_or_else(|| Self::not_found("DeleteRolePolicy", policy))?;
        Ok(call)
    }

    async fn capture_profile(&self, profile_arn: &str) -> CloudResult<Captured<Vec<String>>> {
        let roles = self.profile_roles(profile_arn).await?;
        let raw = self
            .capture_list_raw("GetInstanceProfile", serde_json::json!({"arn": profile_arn, "roles": roles}))
            .await?;
        Ok(Captured { value: roles, raw })
    }

    async fn capture_role(&self, role: &str) -> CloudResult<Raw> {
        self.capture_list_raw("GetRole", serde_json::json!({ "RoleName": role })).await
    }

    async fn capture_attached_policies(&self, role: &str) -> CloudResult<Captured<Vec<String>>> {
        let raw = self
            .capture_list_raw("ListAttachedRolePolicies", serde_json::json!({ "RoleName": role }))
            .await?;
        Ok(Captured { value: vec![], raw })
    }

    async fn capture_inline_policy_names(&self, role: &str) -> CloudResult<Captured<Vec<String>>> {
        let names: Vec<String> = {
            let s = self.state.lock().expect("state lock");
            s.role_policies.keys().filter(|(r, _)| r == role).map(|(_, p)| p.clone()).collect()
        };
        let raw = self
            .capture_list_raw("ListRolePolicies", serde_json::json!({"RoleName": role, "PolicyNames": names}))
            .await?;
        Ok(Captured { value: names, raw })
    }

    async fn capture_inline_policy(&self, role: &str, policy: &str) -> CloudResult<Raw> {
        let doc = self.role_policy(role, policy).await?;
        self.capture_list_raw(
            "GetRolePolicy",
            serde_json::json!({"RoleName": role, "PolicyName": policy, "PolicyDocument": doc}),
        )
        .await
    }

    async fn capture_managed_policy(&self, policy_arn: &str) -> CloudResult<Vec<Raw>> {
        Ok(vec![self.capture_list_raw("GetPolicy", serde_json::json!({ "PolicyArn": policy_arn })).await?])
    }
}

#[async_trait]
impl AutoScaling for FakeCloud {
    async fn group_of(&self, id: &InstanceId) -> CloudResult<Option<String>> {
        self.enter("DescribeAutoScalingInstances", id.to_string()).await?;
        let s = self.state.lock().expect("state lock");
        Ok(s.asgs.values().find(|g| g.instances.contains(id)).map(|g| g.name.clone()))
    }

    async fn group(&self, name: &str) -> CloudResult<Option<AsgGroup>> {
        self.enter("DescribeAutoScalingGroups", name.into()).await?;
        Ok(self.state.lock().expect("state lock").asgs.get(name).cloned())
    }

    async fn detach(&self, group: &str, id: &InstanceId) -> CloudResult<Call> {
        let call = self.enter("DetachInstances", format!("{group} {id}")).await?;
        let mut s = self.state.lock().expect("state lock");
        let next = s.hex("i");
        let g = s.asgs.get_mut(group).ok_or_else(|| Self::not_found("DetachInstances", group))?;
        g.instances.retain(|i| i != id);
        // Desired capacity unchanged: the group launches a replacement.
        g.instances.push(next.parse().expect("id"));
        Ok(call)
    }

    async fn attach(&self, group: &str, id: &InstanceId) -> CloudResult<Call> {
        let call = self.enter("AttachInstances", format!("{group} {id}")).await?;
        let mut s = self.state.lock().expect("state lock");
        let g = s.asgs.get_mut(group).ok_or_else(|| Self::not_found("AttachInstances", group))?;
        g.instances.push(id.clone());
        g.desired += 1;
        Ok(call)
    }
}

#[async_trait]
impl LoadBalancing for FakeCloud {
    async fn target_groups(&self) -> CloudResult<Vec<String>> {
        self.enter("DescribeTargetGroups", String::new()).await?;
        Ok(self.state.lock().expect("state lock").target_groups.keys().cloned().collect())
    }

    async fn registrations(&self, target_group: &str) -> CloudResult<Vec<(String, Target)>> {
        self.enter("DescribeTargetHealth", target_group.into()).await?;
        Ok(self
            .state
            .lock()
            .expect("state lock")
            .target_groups
            .get(target_group)
            .cloned()
            .unwrap_or_default())
    }

    async fn deregister(&self, target: &Target, id: &InstanceId) -> CloudResult<Call> {
        let call = self.enter("DeregisterTargets", format!("{} {id}", target.target_group_arn)).await?;
        let mut s = self.state.lock().expect("state lock");
        if let Some(t) = s.target_groups.get_mut(&target.target_group_arn) {
            t.retain(|(i, r)| !(i == id.as_str() && r.port == target.port));
        }
        Ok(call)
    }

    async fn register(&self, target: &Target, id: &InstanceId) -> CloudResult<Call> {
        let call = self.enter("RegisterTargets", format!("{} {id}", target.target_group_arn)).await?;
        let mut s = self.state.lock().expect("state lock");
        s.target_groups
            .entry(target.target_group_arn.clone())
            .or_default()
            .push((id.to_string(), target.clone()));
        Ok(call)
    }

    async fn classic_balancers(&self) -> CloudResult<Vec<(String, Vec<String>)>> {
        self.enter("DescribeLoadBalancers", String::new()).await?;
        Ok(self
            .state
            .lock()
            .expect("state lock")
            .classic
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn classic_deregister(&self, balancer: &str, id: &InstanceId) -> CloudResult<Call> {
        let call = self.enter("DeregisterInstancesFromLoadBalancer", format!("{balancer} {id}")).await?;
        if let Some(v) = self.state.lock().expect("state lock").classic.get_mut(balancer) {
            v.retain(|i| i != id.as_str());
        }
        Ok(call)
    }

    async fn classic_register(&self, balancer: &str, id: &InstanceId) -> CloudResult<Call> {
        let call = self.enter("RegisterInstancesWithLoadBalancer", format!("{balancer} {id}")).await?;
        self.state
            .lock()
            .expect("state lock")
            .classic
            .entry(balancer.into())
            .or_default()
            .push(id.to_string());
        Ok(call)
    }
}
