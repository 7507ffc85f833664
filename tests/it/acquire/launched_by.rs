//! `cleanroom acquire` against the lab's unauthorized EC2 launch (a leaked key launched
//! miners in two regions; the owner's own instances run beside them): instances found by
//! the key in CloudTrail in every enabled region, a fleet named by ARN over two member
//! accounts, and bad input refused before anything is made.

use aws_sdk_ec2::types::{Filter, InstanceAttributeName};
use cleanroom::aws::s3::S3Store;
use cleanroom::evidence::store::{ObjectStore, get_all};
use cleanroom::ids::{AccountId, Region};
use cleanroom::lab::unauthorized::{self, Launched, Placed};

use crate::support::*;

/// The incident's second region (the first is the lab tests' region).
const OTHER_REGION: &str = "us-east-1";

fn regions() -> [Region; 2] {
    [region(), OTHER_REGION.parse().unwrap()]
}

/// A forensics account and one or more member accounts with the incident seeded.
struct Incident {
    f: Forensics,
    members: Vec<Launched>,
    _work: tempfile::TempDir,
}

impl Incident {
    async fn seed(accounts: usize) -> Self {
        let f = Forensics::seed().await;
        let work = tempfile::tempdir().unwrap();
        let mut members = Vec::new();
        for _ in 0..accounts {
            let member = unique_account();
            members.push(
                unauthorized::unauthorized_launch(lab(), &member, &regions(), &f.account, work.path())
                    .await
                    .unwrap(),
            );
        }
        Self { f, members, _work: work }
    }

    fn l(&self) -> &Launched {
        &self.members[0]
    }

    fn store(&self) -> S3Store {
        S3Store::new(self.f.clients().s3, self.f.config.forensics.evidence_bucket.clone())
    }

    async fn item(&self, case: &str, account: &AccountId, subject: &str, name: &str) -> String {
        let key = format!("cases/{case}/evidence/{account}/{subject}/{name}");
        let bytes =
            get_all(&self.store(), &key, None, 1 << 24).await.unwrap_or_else(|e| panic!("{key}: {e}"));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Forensics copies of `p`'s disks made for `case`.
    async fn copies_of(&self, case: &str, p: &Placed) -> usize {
        let out = self
            .f
            .clients()
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .filters(Filter::builder().name("tag:cleanroom:case").values(case).build())
            .filters(
                Filter::builder().name("tag:cleanroom:source-instance").values(p.instance.as_str()).build(),
            )
            .send()
            .await
            .unwrap();
        out.snapshots().iter().filter(|s| s.state().map(|s| s.as_str()) == Some("completed")).count()
    }

    /// Every snapshot and security group of the forensics account and of each member
    /// account in both regions (moto makes a snapshot for each registered AMI, so
    /// "nothing made" is "the same as before").
    async fn inventory(&self) -> Vec<String> {
        let mut sides = vec![(self.f.account.clone(), region())];
        for m in &self.members {
            sides.extend(regions().into_iter().map(|r| (m.account.clone(), r)));
        }
        let mut out = Vec::new();
        for (account, r) in sides {
            let c = lab().clients(&account, &r);
            let snaps = c.ec2.describe_snapshots().owner_ids("self").send().await.unwrap();
            out.extend(
                snaps.snapshots().iter().map(|s| format!("{account} {r} {}", s.snapshot_id().unwrap())),
            );
            let groups = c.ec2.describe_security_groups().send().await.unwrap();
            out.extend(
                groups.security_groups().iter().map(|g| format!("{account} {r} {}", g.group_name().unwrap())),
            );
        }
        out.sort();
        out
    }

    /// Nothing of `case` exists and nothing was made since `before` (an inventory).
    async fn nothing_made(&self, case: &str, before: &[String]) {
        let objects = self.store().list(&format!("cases/{case}")).await.unwrap();
        assert!(objects.is_empty(), "case {case} has objects: {objects:#?}");
        assert_eq!(self.inventory().await, before, "snapshots or groups were made for {case}");
    }
}

/// What the tool could change on an instance, read from its account.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// (id, name) of the groups on its network interfaces.
    groups: Vec<(String, String)>,
    /// The tool's tags (`cleanroom:*`).
    tags: Vec<(String, String)>,
    termination_protected: bool,
    /// Snapshots of its volumes in its account.
    snapshots: usize,
    /// Rules of the groups it was launched in (the attacker's open group is evidence).
    rules: Vec<String>,
}

async fn seen(p: &Placed) -> Seen {
    let c = lab().clients(&p.account, &p.region);
    let out = c.ec2.describe_instances().instance_ids(p.instance.as_str()).send().await.unwrap();
    let i = out.reservations()[0].instances()[0].clone();
    let mut groups: Vec<(String, String)> = i
        .network_interfaces()
        .iter()
        .flat_map(|n| n.groups())
        .map(|g| (g.group_id().unwrap_or_default().to_owned(), g.group_name().unwrap_or_default().to_owned()))
        .collect();
    groups.sort();
    let mut tags: Vec<(String, String)> = i
        .tags()
        .iter()
        .filter(|t| t.key().unwrap_or_default().starts_with("cleanroom:"))
        .map(|t| (t.key().unwrap().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect();
    tags.sort();
    let attr = c
        .ec2
        .describe_instance_attribute()
        .instance_id(p.instance.as_str())
        .attribute(InstanceAttributeName::DisableApiTermination)
        .send()
        .await
        .unwrap();
    let termination_protected = attr.disable_api_termination().and_then(|a| a.value()).unwrap_or(false);
    let snaps = c
        .ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(Filter::builder().name("volume-id").set_values(Some(p.volumes.clone())).build())
        .send()
        .await
        .unwrap();
    let described =
        c.ec2.describe_security_groups().set_group_ids(Some(p.groups.clone())).send().await.unwrap();
    let mut rules: Vec<String> = described
        .security_groups()
        .iter()
        .flat_map(|g| {
            g.ip_permissions().iter().map(move |r| format!("{} {r:?}", g.group_id().unwrap_or_default()))
        })
        .collect();
    rules.sort();
    Seen { groups, tags, termination_protected, snapshots: snaps.snapshots().len(), rules }
}

async fn seen_all(ps: &[Placed]) -> Vec<Seen> {
    let mut out = Vec::new();
    for p in ps {
        out.push(seen(p).await);
    }
    out
}

/// `p` was preserved and contained for `case`.
#[track_caller]
fn assert_preserved(case: &str, p: &Placed, s: &Seen, copies: usize) {
    assert!(s.termination_protected, "{} not protected: {s:#?}", p.instance);
    assert!(s.tags.contains(&("cleanroom:case".into(), case.into())), "{} not tagged: {s:#?}", p.instance);
    assert!(
        !s.groups.is_empty() && s.groups.iter().all(|(_, n)| n.starts_with("cleanroom-")),
        "{} not isolated: {s:#?}",
        p.instance
    );
    assert_eq!(s.snapshots, p.volumes.len(), "{} snapshots: {s:#?}", p.instance);
    assert_eq!(copies, p.volumes.len(), "{} forensics copies", p.instance);
}

fn ids(ps: &[Placed]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> =
        ps.iter().map(|p| (p.account.to_string(), p.region.to_string(), p.instance.to_string())).collect();
    v.sort();
    v
}

fn acquired(run: &Run) -> Vec<(String, String, String)> {
    let json = run.json();
    let mut v: Vec<_> = json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["account"].as_str().unwrap().to_owned(),
                i["region"].as_str().unwrap().to_owned(),
                i["instance"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn unauthorized_launch_every_instance_the_key_launched_is_preserved_in_both_regions_and_nothing_else_is_touched()
 {
    let w = Incident::seed(1).await;
    let l = w.l();
    let case = "IR-LAUNCH-1";
    let bystanders_before = seen_all(&l.bystanders).await;
    let open_before: Vec<Seen> = seen_all(&l.attacker).await;

    let run = w.f.cleanroom(&[
        "--json",
        "acquire",
        "--launched-by-key",
        &l.access_key,
        "--account",
        l.account.as_str(),
        "--case",
        case,
        "--no-analysis",
    ]);
    run.success();
    assert_eq!(acquired(&run), ids(&l.attacker), "exactly the key's instances, in both regions");
    let launches = &run.json()["launches"][0];
    // Searched: the enabled regions of the account's partition, not the lab's opt-in
    // regions (moto lists them as not-opted-in) nor GovCloud and China.
    let searched: Vec<&str> =
        launches["regions"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    for r in regions() {
        assert!(searched.contains(&r.as_str()), "{r} not searched: {searched:?}");
    }
    for r in ["ap-east-1", "me-south-1", "us-gov-west-1", "cn-north-1"] {
        assert!(!searched.contains(&r), "{r} searched: {searched:?}");
    }

    for (p, before) in l.attacker.iter().zip(&open_before) {
        let after = seen(p).await;
        assert_preserved(case, p, &after, w.copies_of(case, p).await);
        assert_eq!(after.rules, before.rules, "the attacker's open group is evidence: left as found");
        let summary = w.item(case, &l.account, p.instance.as_str(), "capture-summary.json").await;
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(summary["trail"]["launched_by"]["access_key_id"], l.access_key.as_str(), "{summary:#}");
    }
    // The probe it terminated is reported as gone, not refused and not acquired.
    let gone: Vec<String> =
        launches["gone"].as_array().unwrap().iter().map(|g| g[1].as_str().unwrap().to_owned()).collect();
    assert_eq!(gone, [l.terminated[0].instance.to_string()], "{launches:#}");
    let subject = format!("launched-by-{}", l.access_key);
    let trail = w.item(case, &l.account, &subject, "launches.json").await;
    for p in &l.attacker {
        assert!(trail.contains(p.instance.as_str()), "{} not in launches.json:\n{trail}", p.instance);
    }

    assert_eq!(seen_all(&l.bystanders).await, bystanders_before, "the owner's instances are untouched");
    for s in &bystanders_before {
        assert!(s.tags.is_empty() && s.snapshots == 0 && !s.termination_protected, "{s:#?}");
    }
    w.f.cleanroom(&["verify", "--case", case]).success().stdout_has("VERIFIED");
}

#[tokio::test]
async fn fleet_of_three_instances_in_two_member_accounts_named_by_arn_in_one_acquire() {
    let w = Incident::seed(2).await;
    let (a, b) = (&w.members[0], &w.members[1]);
    // A's two miners in the first region, B's one in the second.
    let named: Vec<Placed> = vec![a.attacker[0].clone(), a.attacker[1].clone(), b.attacker[2].clone()];
    let others: Vec<Placed> =
        [&a.attacker[2..], &b.attacker[..2], &a.bystanders[..], &b.bystanders[..]].concat();
    let others_before = seen_all(&others).await;
    let case = "IR-FLEET-1";
    let arns: Vec<String> = named.iter().map(Placed::arn).collect();
    let mut args = vec!["--json", "acquire"];
    args.extend(arns.iter().map(String::as_str));
    args.extend(["--case", case, "--no-analysis"]);
    let run = w.f.cleanroom(&args);
    run.success();
    assert_eq!(acquired(&run), ids(&named));
    for p in &named {
        assert_preserved(case, p, &seen(p).await, w.copies_of(case, p).await);
    }
    assert_eq!(seen_all(&others).await, others_before, "instances not named are untouched");
}

#[tokio::test]
async fn case_id_with_a_slash_or_dot_dot_is_bad_input_and_makes_nothing() {
    let w = Incident::seed(1).await;
    let arn = w.l().attacker[0].arn();
    let before = w.inventory().await;
    for case in ["IR/1", "../IR-1", "IR-1/..", "IR..1", "IR-1.."] {
        let run = w.f.cleanroom(&["acquire", &arn, "--case", case, "--no-analysis"]);
        run.expect_code(2).stderr_has("case id");
        w.nothing_made(case, &before).await;
    }
    assert_eq!(w.store().list("cases/").await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn unknown_instance_id_is_bad_input_and_makes_nothing_even_for_the_known_ones() {
    let w = Incident::seed(1).await;
    let l = w.l();
    let known = &l.attacker[0];
    let before = seen(known).await;
    let unknown = format!("arn:aws:ec2:{}:{}:instance/i-0123456789abcdef0", known.region, l.account);
    let case = "IR-UNKNOWN-1";
    let inventory = w.inventory().await;
    let run = w.f.cleanroom(&["acquire", &known.arn(), &unknown, "--case", case, "--no-analysis"]);
    run.expect_code(2).stderr_has("i-0123456789abcdef0").stderr_has("not found");
    w.nothing_made(case, &inventory).await;
    assert_eq!(seen(known).await, before);
}

#[tokio::test]
async fn key_that_launched_nothing_is_bad_input_and_makes_nothing() {
    let w = Incident::seed(1).await;
    let l = w.l();
    // A real key of the account that launched nothing, and a key no one has.
    let c = lab().clients(&l.account, &region());
    c.iam.create_user().user_name("auditor").send().await.unwrap();
    let key = c.iam.create_access_key().user_name("auditor").send().await.unwrap();
    let idle = key.access_key().unwrap().access_key_id().to_owned();
    let before = w.inventory().await;
    for (n, key) in [idle.as_str(), "AKIAIOSFODNN7EXAMPLE"].into_iter().enumerate() {
        let case = format!("IR-IDLE-{n}");
        let run = w.f.cleanroom(&[
            "acquire",
            "--launched-by-key",
            key,
            "--account",
            l.account.as_str(),
            "--case",
            &case,
            "--no-analysis",
        ]);
        run.expect_code(2).stderr_has("CloudTrail shows no instance launched by").stderr_has(key);
        w.nothing_made(&case, &before).await;
    }
}

#[tokio::test]
async fn key_searched_in_several_accounts_is_found_in_its_own_and_the_others_are_left_alone() {
    let w = Incident::seed(2).await;
    let (a, b) = (&w.members[0], &w.members[1]);
    let others: Vec<Placed> = [&b.attacker[..], &a.bystanders[..], &b.bystanders[..]].concat();
    let others_before = seen_all(&others).await;
    let case = "IR-ACCOUNTS-1";
    // B first: a search that finds nothing there must not end the search.
    let run = w.f.cleanroom(&[
        "--json",
        "acquire",
        "--launched-by-key",
        &a.access_key,
        "--account",
        b.account.as_str(),
        "--account",
        a.account.as_str(),
        "--case",
        case,
        "--no-analysis",
    ]);
    run.success();
    assert_eq!(acquired(&run), ids(&a.attacker));
    for p in &a.attacker {
        assert_preserved(case, p, &seen(p).await, w.copies_of(case, p).await);
    }
    assert_eq!(seen_all(&others).await, others_before, "B's instances (another key) are untouched");
}
