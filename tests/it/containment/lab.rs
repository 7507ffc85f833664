//! `cleanroom isolate` and `cleanroom release`, the binary end to end against the lab:
//! an instance with two ENIs and IPv6, in an Auto Scaling group, behind a target group
//! and a classic load balancer, with an instance profile, in a member account reached
//! through the member role.

use aws_sdk_ec2::types::{
    AttributeBooleanValue, BlockDeviceMapping, EbsBlockDevice, Filter, IamInstanceProfileSpecification,
    IpPermission, IpRange, LaunchTemplateSpecification, RequestLaunchTemplateData,
};
use cleanroom::aws::AccountClients;
use cleanroom::ids::AccountId;
use cleanroom::lab::seed;

use crate::support::*;

/// A service instance seeded in a member account of its own.
pub struct Service {
    pub account: AccountId,
    pub c: AccountClients,
    pub instance: String,
    pub arn: String,
    pub enis: Vec<String>,
    pub web_sg: String,
    pub admin_sg: String,
    pub profile_arn: String,
    pub role: String,
    pub asg: String,
    pub tg: String,
    pub clb: String,
    pub vpc: String,
}

impl Service {
    pub async fn seed() -> Self {
        let account = unique_account();
        seed::role(lab(), &account, &region(), seed::MEMBER_ROLE).await.unwrap();
        let c = clients(&account);
        let vpc = c
            .ec2
            .create_vpc()
            .cidr_block("10.20.0.0/16")
            .amazon_provided_ipv6_cidr_block(true)
            .send()
            .await
            .unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
        let v6 = c.ec2.describe_vpcs().vpc_ids(&vpc).send().await.unwrap().vpcs()[0]
            .ipv6_cidr_block_association_set()[0]
            .ipv6_cidr_block()
            .unwrap()
            .to_owned();
        let subnet = c
            .ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block("10.20.1.0/24")
            .ipv6_cidr_block(v6.replace("::/56", "::/64"))
            .availability_zone("eu-west-1a")
            .send()
            .await
            .unwrap();
        let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_owned();
        let sg = |name: &'static str| {
            let c = &c;
            let vpc = &vpc;
            async move {
                c.ec2
                    .create_security_group()
                    .group_name(name)
                    .description(name)
                    .vpc_id(vpc)
                    .send()
                    .await
                    .unwrap()
                    .group_id()
                    .unwrap()
                    .to_owned()
            }
        };
        let web_sg = sg("web").await;
        let admin_sg = sg("admin").await;
        c.ec2
            .authorize_security_group_ingress()
            .group_id(&web_sg)
            .ip_permissions(
                IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(80)
                    .to_port(80)
                    .ip_ranges(IpRange::builder().cidr_ip("0.0.0.0/0").build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let run = c
            .ec2
            .run_instances()
            .image_id("ami-12345678")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet)
            .security_group_ids(&web_sg)
            .instance_initiated_shutdown_behavior(aws_sdk_ec2::types::ShutdownBehavior::Terminate)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(EbsBlockDevice::builder().volume_size(8).delete_on_termination(true).build())
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/sdf")
                    .ebs(EbsBlockDevice::builder().volume_size(4).delete_on_termination(false).build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let instance = run.instances()[0].instance_id().unwrap().to_owned();
        c.ec2
            .create_tags()
            .resources(&instance)
            .tags(aws_sdk_ec2::types::Tag::builder().key("Name").value("web-1").build())
            .send()
            .await
            .unwrap();
        let eni = c
            .ec2
            .create_network_interface()
            .subnet_id(&subnet)
            .groups(&web_sg)
            .groups(&admin_sg)
            .ipv6_address_count(1)
            .send()
            .await
            .unwrap();
        let eni1 = eni.network_interface().unwrap().network_interface_id().unwrap().to_owned();
        c.ec2
            .attach_network_interface()
            .network_interface_id(&eni1)
            .instance_id(&instance)
            .device_index(1)
            .send()
            .await
            .unwrap();
        let d = c.ec2.describe_instances().instance_ids(&instance).send().await.unwrap();
        let mut enis: Vec<(i32, String)> = d.reservations()[0].instances()[0]
            .network_interfaces()
            .iter()
            .map(|n| {
                (
                    n.attachment().unwrap().device_index().unwrap(),
                    n.network_interface_id().unwrap().to_owned(),
                )
            })
            .collect();
        enis.sort();
        let enis: Vec<String> = enis.into_iter().map(|(_, e)| e).collect();
        assert_eq!(enis.len(), 2);

        let role = "web-role".to_owned();
        c.iam
            .create_role()
            .role_name(&role)
            .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#)
            .send()
            .await
            .unwrap();
        let profile = c.iam.create_instance_profile().instance_profile_name("web").send().await.unwrap();
        let profile_arn = profile.instance_profile().unwrap().arn().to_owned();
        c.iam
            .add_role_to_instance_profile()
            .instance_profile_name("web")
            .role_name(&role)
            .send()
            .await
            .unwrap();
        c.ec2
            .associate_iam_instance_profile()
            .instance_id(&instance)
            .iam_instance_profile(IamInstanceProfileSpecification::builder().arn(&profile_arn).build())
            .send()
            .await
            .unwrap();

        let lt = c
            .ec2
            .create_launch_template()
            .launch_template_name("web")
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id("ami-12345678")
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let lt = lt.launch_template().unwrap().launch_template_id().unwrap().to_owned();
        let asg = "web".to_owned();
        c.autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&asg)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(&lt)
                    .build(),
            )
            .min_size(1)
            .max_size(4)
            .desired_capacity(1)
            .vpc_zone_identifier(&subnet)
            .send()
            .await
            .unwrap();
        c.autoscaling
            .attach_instances()
            .auto_scaling_group_name(&asg)
            .instance_ids(&instance)
            .send()
            .await
            .unwrap();
        let tg = c
            .elbv2
            .create_target_group()
            .name("web")
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(80)
            .vpc_id(&vpc)
            .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Instance)
            .send()
            .await
            .unwrap();
        let tg = tg.target_groups()[0].target_group_arn().unwrap().to_owned();
        c.elbv2
            .register_targets()
            .target_group_arn(&tg)
            .targets(
                aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                    .id(&instance)
                    .port(8080)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let clb = "web-classic".to_owned();
        c.elb
            .create_load_balancer()
            .load_balancer_name(&clb)
            .listeners(
                aws_sdk_elasticloadbalancing::types::Listener::builder()
                    .protocol("HTTP")
                    .load_balancer_port(80)
                    .instance_port(80)
                    .build()
                    .unwrap(),
            )
            .subnets(&subnet)
            .send()
            .await
            .unwrap();
        c.elb
            .register_instances_with_load_balancer()
            .load_balancer_name(&clb)
            .instances(
                aws_sdk_elasticloadbalancing::types::Instance::builder().instance_id(&instance).build(),
            )
            .send()
            .await
            .unwrap();
        let _ = LaunchTemplateSpecification::builder();
        let arn = format!("arn:aws:ec2:{REGION}:{account}:instance/{instance}");
        Self { account, c, instance, arn, enis, web_sg, admin_sg, profile_arn, role, asg, tg, clb, vpc }
    }

    pub async fn eni_groups(&self) -> Vec<Vec<String>> {
        let d = self.c.ec2.describe_instances().instance_ids(&self.instance).send().await.unwrap();
        let mut enis: Vec<(i32, Vec<String>)> = d.reservations()[0].instances()[0]
            .network_interfaces()
            .iter()
            .map(|n| {
                let mut g: Vec<String> =
                    n.groups().iter().map(|g| g.group_id().unwrap().to_owned()).collect();
                g.sort();
                (n.attachment().unwrap().device_index().unwrap(), g)
            })
            .collect();
        enis.sort();
        enis.into_iter().map(|(_, g)| g).collect()
    }

    /// What DescribeNetworkInterfaces says (moto may differ from DescribeInstances).
    pub async fn eni_groups_by_eni(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for e in &self.enis {
            let d = self.c.ec2.describe_network_interfaces().network_interface_ids(e).send().await.unwrap();
            let mut g: Vec<String> =
                d.network_interfaces()[0].groups().iter().map(|g| g.group_id().unwrap().to_owned()).collect();
            g.sort();
            out.push(g);
        }
        out
    }

    pub async fn case_groups(&self, case: &str, purpose: &str) -> Vec<aws_sdk_ec2::types::SecurityGroup> {
        self.c
            .ec2
            .describe_security_groups()
            .filters(Filter::builder().name("tag:cleanroom:case").values(case).build())
            .filters(Filter::builder().name("tag:cleanroom:purpose").values(purpose).build())
            .send()
            .await
            .unwrap()
            .security_groups()
            .to_vec()
    }

    pub async fn attr_termination(&self) -> bool {
        self.c
            .ec2
            .describe_instance_attribute()
            .instance_id(&self.instance)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::DisableApiTermination)
            .send()
            .await
            .unwrap()
            .disable_api_termination()
            .and_then(|v| v.value())
            .unwrap()
    }

    pub async fn attr_shutdown(&self) -> String {
        self.c
            .ec2
            .describe_instance_attribute()
            .instance_id(&self.instance)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
            .send()
            .await
            .unwrap()
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value())
            .unwrap()
            .to_owned()
    }

    pub async fn delete_on_termination(&self) -> Vec<(String, bool)> {
        let d = self.c.ec2.describe_instances().instance_ids(&self.instance).send().await.unwrap();
        let mut v: Vec<(String, bool)> = d.reservations()[0].instances()[0]
            .block_device_mappings()
            .iter()
            .map(|b| (b.device_name().unwrap().to_owned(), b.ebs().unwrap().delete_on_termination().unwrap()))
            .collect();
        v.sort();
        v
    }

    pub async fn profile(&self) -> Option<String> {
        let d = self
            .c
            .ec2
            .describe_iam_instance_profile_associations()
            .filters(Filter::builder().name("instance-id").values(&self.instance).build())
            .send()
            .await
            .unwrap();
        d.iam_instance_profile_associations()
            .iter()
            .find(|a| a.state().map(|s| s.as_str()) != Some("disassociated"))
            .and_then(|a| a.iam_instance_profile()?.arn().map(str::to_owned))
    }

    pub async fn in_asg(&self) -> bool {
        let d = self
            .c
            .autoscaling
            .describe_auto_scaling_instances()
            .instance_ids(&self.instance)
            .send()
            .await
            .unwrap();
        d.auto_scaling_instances().iter().any(|i| i.auto_scaling_group_name() == Some(self.asg.as_str()))
    }

    pub async fn asg_desired(&self) -> i32 {
        let d = self
            .c
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.asg)
            .send()
            .await
            .unwrap();
        d.auto_scaling_groups()[0].desired_capacity().unwrap()
    }

    pub async fn targets(&self) -> Vec<(String, Option<i32>)> {
        let d = self.c.elbv2.describe_target_health().target_group_arn(&self.tg).send().await.unwrap();
        d.target_health_descriptions()
            .iter()
            .filter_map(|t| t.target())
            .map(|t| (t.id().unwrap_or_default().to_owned(), t.port()))
            .collect()
    }

    pub async fn classic(&self) -> Vec<String> {
        let d = self.c.elb.describe_load_balancers().load_balancer_names(&self.clb).send().await.unwrap();
        d.load_balancer_descriptions()[0]
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect()
    }

    pub async fn deny(&self, case: &str) -> Option<String> {
        self.c
            .iam
            .get_role_policy()
            .role_name(&self.role)
            .policy_name(format!("cleanroom-revoke-sessions-{case}"))
            .send()
            .await
            .ok()
            .map(|p| {
                // IAM answers URL-encoded documents.
                let raw = p.policy_document().to_owned();
                url::form_urlencoded::parse(format!("d={raw}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or(raw)
            })
    }
}

#[tokio::test]
async fn isolate_then_release_an_instance_with_two_enis_behind_a_service() {
    let f = Forensics::seed().await;
    let s = Service::seed().await;
    let case = "IR-LAB-0005";
    let before_groups = s.eni_groups().await;
    let before_dot = s.delete_on_termination().await;
    assert_eq!(s.attr_shutdown().await, "terminate");
    let desired = s.asg_desired().await;
    assert_eq!(s.targets().await, vec![(s.instance.clone(), Some(8080))]);

    let run = f.cleanroom(&["--json", "isolate", "--case", case, &s.arn]);
    run.success();
    let out = run.json();
    assert_eq!(out["instances"][0]["status"], "isolated", "{out:#}");

    // Each ENI carries exactly the isolation group, which has no rules (IPv4 or IPv6).
    let iso = s.case_groups(case, "isolation").await;
    assert_eq!(iso.len(), 1);
    let iso_id = iso[0].group_id().unwrap().to_owned();
    assert!(iso[0].ip_permissions().is_empty() && iso[0].ip_permissions_egress().is_empty(), "{:?}", iso[0]);
    assert_eq!(s.eni_groups().await, vec![vec![iso_id.clone()], vec![iso_id.clone()]]);
    assert_eq!(s.eni_groups_by_eni().await, vec![vec![iso_id.clone()], vec![iso_id.clone()]]);
    let allow = s.case_groups(case, "allow-all").await;
    assert_eq!(allow.len(), 1, "one allow-all group, found or created per VPC");
    // Out of the Auto Scaling group (capacity kept), the target group and the classic LB.
    assert!(!s.in_asg().await);
    // Detached without lowering the capacity: neither lower nor (a stray attach) higher.
    assert_eq!(s.asg_desired().await, desired);
    assert!(s.targets().await.is_empty());
    assert!(s.classic().await.is_empty());
    // No profile; the role carries the deny.
    assert_eq!(s.profile().await, None);
    let deny = s.deny(case).await.expect("deny policy on the role");
    assert!(
        deny.contains("ec2:SourceInstanceARN") && deny.contains(&s.arn) && deny.contains("Deny"),
        "{deny}"
    );
    // The time-based deny cuts every instance on the role: only when asked for.
    assert!(!deny.contains("aws:TokenIssueTime"), "{deny}");
    // Protected: termination refused, shutdown stops, volumes kept.
    assert!(s.attr_termination().await);
    assert_eq!(s.attr_shutdown().await, "stop");
    assert!(s.delete_on_termination().await.iter().all(|(_, d)| !d));
    let term = s.c.ec2.terminate_instances().instance_ids(&s.instance).send().await;
    assert!(term.is_err(), "termination is refused");
    // The evidence holds the prior state.
    let key = format!("cases/{case}/evidence/{}/{}/containment-prior-state.json", s.account, s.instance);
    let obj = f
        .clients()
        .s3
        .get_object()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .key(&key)
        .send()
        .await
        .unwrap();
    let prior: serde_json::Value =
        serde_json::from_slice(&obj.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(prior["enis"][1]["groups"].as_array().unwrap().len(), 2);
    assert_eq!(prior["profile"]["profile_arn"], s.profile_arn.as_str());
    assert_eq!(prior["auto_scaling_group"]["name"], "web");
    assert_eq!(prior["target_groups"][0]["port"], 8080);
    assert_eq!(prior["classic_load_balancers"][0], "web-classic");
    assert_eq!(prior["termination_protection"], false);
    // Custody: every change recorded with request ids.
    let records = f
        .clients()
        .s3
        .list_objects_v2()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .prefix(format!("cases/{case}/custody/"))
        .send()
        .await
        .unwrap();
    let mut actions = Vec::new();
    for o in records.contents() {
        let body = f
            .clients()
            .s3
            .get_object()
            .bucket(f.config.forensics.evidence_bucket.as_str())
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap();
        let r: serde_json::Value =
            serde_json::from_slice(&body.body.collect().await.unwrap().into_bytes()).unwrap();
        if r["action"] != "evidence_stored"
            && r["action"] != "case_opened"
            && r["action"] != "containment_planned"
            && r["action"] != "containment_verified"
        {
            let ids = r["aws_request_ids"].as_array().unwrap();
            assert!(!ids.is_empty(), "{r:#}");
        }
        actions.push(r["action"].as_str().unwrap().to_owned());
    }
    for a in [
        "evidence_stored",
        "instance_protected",
        "service_detached",
        "network_isolated",
        "credentials_revoked",
        "containment_verified",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }

    // Idempotent: a second run changes nothing and says so.
    let again = f.cleanroom(&["isolate", "--case", case, &s.arn]);
    again.success().stdout_has("already isolated");
    assert_eq!(s.case_groups(case, "isolation").await.len(), 1);

    // Release without confirmation is refused; with --yes the prior state is back.
    f.cleanroom(&["release", "--case", case, &s.arn]).expect_code(2).stderr_has("--yes");
    let released = f.cleanroom(&["release", "--case", case, "--yes", &s.arn]);
    released.success().stdout_has("prior state restored").stdout_has("auto scaling capacity");
    // AttachInstances raises the desired capacity by exactly one.
    assert_eq!(s.asg_desired().await, desired + 1);
    assert_eq!(s.eni_groups().await, before_groups);
    assert_eq!(s.profile().await.as_deref(), Some(s.profile_arn.as_str()));
    assert!(s.in_asg().await);
    assert_eq!(s.targets().await, vec![(s.instance.clone(), Some(8080))]);
    assert_eq!(s.classic().await, vec![s.instance.clone()]);
    assert!(!s.attr_termination().await);
    assert_eq!(s.attr_shutdown().await, "terminate");
    assert_eq!(s.delete_on_termination().await, before_dot);
    assert_eq!(s.deny(case).await, None);
    let _ = (&s.web_sg, &s.admin_sg, &s.vpc, AttributeBooleanValue::builder());
}

#[tokio::test]
async fn plan_prints_every_call_and_changes_nothing() {
    let f = Forensics::seed().await;
    let s = Service::seed().await;
    let case = "IR-LAB-PLAN";
    let run = f.cleanroom(&["isolate", "--case", case, "--plan", &s.arn]);
    run.success()
        .stdout_has("DryRun=true")
        .stdout_has("(step 1: allow-all)")
        .stdout_has("(step 2: isolation)")
        .stdout_has("DetachInstances web")
        .stdout_has("Port=8080")
        .stdout_has("PutRolePolicy RoleName=web-role");
    assert!(s.case_groups(case, "isolation").await.is_empty());
    assert!(!s.attr_termination().await);
    assert!(s.in_asg().await);
    assert_eq!(s.profile().await.as_deref(), Some(s.profile_arn.as_str()));
    let objects = f
        .clients()
        .s3
        .list_objects_v2()
        .bucket(f.config.forensics.evidence_bucket.as_str())
        .prefix(format!("cases/{case}/"))
        .send()
        .await
        .unwrap();
    assert!(objects.contents().is_empty(), "--plan writes nothing to the evidence bucket");
}

#[tokio::test]
async fn bad_input_is_refused_with_nothing_changed() {
    let f = Forensics::seed().await;
    let s = Service::seed().await;
    let case = "IR-LAB-BAD";
    // A terminated instance.
    let dead =
        s.c.ec2.run_instances().image_id("ami-12345678").min_count(1).max_count(1).send().await.unwrap();
    let dead = dead.instances()[0].instance_id().unwrap().to_owned();
    s.c.ec2.terminate_instances().instance_ids(&dead).send().await.unwrap();
    let arn = |region: &str, account: &str, id: &str| format!("arn:aws:ec2:{region}:{account}:instance/{id}");
    f.cleanroom(&["isolate", "--case", case, &arn(REGION, s.account.as_str(), &dead)])
        .expect_code(2)
        .stdout_has("terminated");
    // An unknown id.
    f.cleanroom(&["isolate", "--case", case, &arn(REGION, s.account.as_str(), "i-0123456789abcdef0")])
        .expect_code(2)
        .stdout_has("not found");
    // The wrong region.
    f.cleanroom(&["isolate", "--case", case, &arn("us-west-2", s.account.as_str(), &s.instance)])
        .expect_code(2)
        .stdout_has("not found");
    // An account whose member role cannot be assumed.
    let stranger = unique_account();
    f.cleanroom(&["isolate", "--case", case, &arn(REGION, stranger.as_str(), &s.instance)])
        .expect_code(2)
        .stdout_has(stranger.as_str());
    // Malformed.
    f.cleanroom(&["isolate", "--case", case, "i-nothex"]).expect_code(2).stderr_has("i- followed by 8 or 17");
    // A good instance beside a bad one: the whole run is refused before any change.
    f.cleanroom(&[
        "isolate",
        "--case",
        case,
        &s.arn,
        &arn(REGION, s.account.as_str(), "i-0123456789abcdef0"),
    ])
    .expect_code(2)
    .stdout_has("not started");
    assert!(s.case_groups(case, "isolation").await.is_empty());
    assert!(s.case_groups(case, "allow-all").await.is_empty());
    assert!(!s.attr_termination().await);
    assert!(s.in_asg().await);
    assert_eq!(s.eni_groups().await.len(), 2);
}

#[tokio::test]
async fn a_fleet_chosen_by_tag_in_the_callers_account() {
    let f = Forensics::seed().await;
    let home: AccountId = cleanroom::lab::HOME_ACCOUNT.parse().unwrap();
    let c = clients(&home);
    let tag = format!("fleet-{}", unique_account());
    let vpc = c
        .ec2
        .create_vpc()
        .cidr_block("10.30.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let subnet = c
        .ec2
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.30.1.0/24")
        .send()
        .await
        .unwrap()
        .subnet()
        .unwrap()
        .subnet_id()
        .unwrap()
        .to_owned();
    let run = c
        .ec2
        .run_instances()
        .image_id("ami-12345678")
        .min_count(3)
        .max_count(3)
        .subnet_id(&subnet)
        .tag_specifications(
            aws_sdk_ec2::types::TagSpecification::builder()
                .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                .tags(aws_sdk_ec2::types::Tag::builder().key("incident").value(&tag).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(run.instances().len(), 3);
    let out = f.cleanroom(&[
        "--json",
        "isolate",
        "--case",
        "IR-LAB-FLEET",
        "--filter",
        &format!("tag:incident={tag}"),
    ]);
    out.success();
    let rows = out.json()["instances"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["status"] == "isolated"), "{rows:#?}");
}

/// The lab's IAM evaluator on the role's policies, for a request carrying `context`.
async fn evaluate(account: &AccountId, role: &str, context: serde_json::Value) -> serde_json::Value {
    lab()
        .admin(
            reqwest::Method::POST,
            "/_lab/iam-enforce/evaluate",
            Some(account),
            Some(serde_json::json!({
                "principal_arn": format!("arn:aws:iam::{account}:role/{role}"),
                "action": "s3:ListAllMyBuckets",
                "context": context,
            })),
        )
        .await
        .unwrap()
}

// Issue "Trust" point 6, in the lab: a policy planted under the deny's name is replaced
// by the one the tool writes, and the lab's IAM evaluator (given the request keys) shows
// what it does. The lab cannot show that AWS puts ec2:SourceInstanceARN in the context
// of every request signed with the instance's credentials: the test supplies the key.
#[tokio::test]
async fn a_planted_deny_is_replaced_and_denies_the_instances_credentials_only() {
    let f = Forensics::seed().await;
    let s = Service::seed().await;
    let case = "IR-LAB-PLANT";
    let name = format!("cleanroom-revoke-sessions-{case}");
    let planted = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*","Condition":{"DateLessThan":{"aws:TokenIssueTime":"1970-01-01T00:00:00Z"}}}]}"#;
    s.c.iam
        .put_role_policy()
        .role_name(&s.role)
        .policy_name(&name)
        .policy_document(planted)
        .send()
        .await
        .unwrap();
    // Everything else the role may do, so a refusal below is the deny's.
    s.c.iam
        .put_role_policy()
        .role_name(&s.role)
        .policy_name("app")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
        )
        .send()
        .await
        .unwrap();
    let run = f.cleanroom(&["--json", "isolate", "--case", case, &s.arn]);
    run.success();
    let deny = s.deny(case).await.unwrap();
    assert_ne!(deny, planted);
    assert!(deny.contains(&s.arn), "{deny}");

    let denied =
        evaluate(&s.account, &s.role, serde_json::json!({"ec2:SourceInstanceARN": [s.arn.clone()]})).await;
    assert_eq!(denied["allowed"], false, "{denied:#}");
    assert_eq!(denied["reason"], "explicit_deny_identity", "{denied:#}");
    let other = format!("arn:aws:ec2:{REGION}:{}:instance/i-0123456789abcdef0", s.account);
    let spared = evaluate(&s.account, &s.role, serde_json::json!({"ec2:SourceInstanceARN": [other]})).await;
    assert_eq!(spared["allowed"], true, "another instance on the role keeps working: {spared:#}");

    // Planted again: the rerun replaces it instead of calling it "already isolated".
    s.c.iam
        .put_role_policy()
        .role_name(&s.role)
        .policy_name(&name)
        .policy_document(planted)
        .send()
        .await
        .unwrap();
    let again = f.cleanroom(&["--json", "isolate", "--case", case, &s.arn]);
    again.success();
    assert_eq!(again.json()["instances"][0]["status"], "isolated", "{:#}", again.json());
    assert!(s.deny(case).await.unwrap().contains(&s.arn));
}

// Issue "Trust" point 7, in the lab: a NAT gateway on the instance's route is named in
// the containment table (flows through it stay tracked), beside the link-local services.
#[tokio::test]
async fn a_nat_gateway_route_is_named_in_the_table() {
    let f = Forensics::seed().await;
    let s = Service::seed().await;
    let case = "IR-LAB-NAT";
    let subnet = s.c.ec2.describe_instances().instance_ids(&s.instance).send().await.unwrap().reservations()
        [0]
    .instances()[0]
        .subnet_id()
        .unwrap()
        .to_owned();
    let eip = s.c.ec2.allocate_address().domain(aws_sdk_ec2::types::DomainType::Vpc).send().await.unwrap();
    let nat =
        s.c.ec2
            .create_nat_gateway()
            .subnet_id(&subnet)
            .allocation_id(eip.allocation_id().unwrap())
            .send()
            .await
            .unwrap();
    let nat = nat.nat_gateway().unwrap().nat_gateway_id().unwrap().to_owned();
    let table =
        s.c.ec2
            .create_route_table()
            .vpc_id(&s.vpc)
            .send()
            .await
            .unwrap()
            .route_table()
            .unwrap()
            .route_table_id()
            .unwrap()
            .to_owned();
    s.c.ec2.associate_route_table().route_table_id(&table).subnet_id(&subnet).send().await.unwrap();
    s.c.ec2
        .create_route()
        .route_table_id(&table)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat)
        .send()
        .await
        .unwrap();
    let run = f.cleanroom(&["--json", "isolate", "--case", case, &s.arn]);
    run.success();
    let checks = run.json()["instances"][0]["checks"].as_array().unwrap().clone();
    let nat_row = checks
        .iter()
        .find(|c| c["control"].as_str().unwrap().starts_with(&format!("tracked path {nat}")))
        .unwrap_or_else(|| panic!("no row for {nat}: {checks:#?}"));
    assert_eq!(nat_row["warning"], true);
    assert!(checks.iter().any(|c| c["detail"].as_str().unwrap().contains("169.254.169.253")));
    // The human table says WARNING, not a control in force.
    f.cleanroom(&["isolate", "--case", case, &s.arn]).success().stdout_has("WARNING");
}

// Issue "Trust" point 6, in the lab: --plan names the other instances on the role
// before any change.
#[tokio::test]
async fn plan_names_the_other_instances_on_the_role() {
    let f = Forensics::seed().await;
    let s = Service::seed().await;
    let other =
        s.c.ec2.run_instances().image_id("ami-12345678").min_count(1).max_count(1).send().await.unwrap();
    let other = other.instances()[0].instance_id().unwrap().to_owned();
    s.c.ec2
        .associate_iam_instance_profile()
        .instance_id(&other)
        .iam_instance_profile(IamInstanceProfileSpecification::builder().arn(&s.profile_arn).build())
        .send()
        .await
        .unwrap();
    let run = f.cleanroom(&["isolate", "--case", "IR-LAB-SHARED", "--plan", &s.arn]);
    run.success().stdout_has("other instances use role(s) web-role").stdout_has(&other);
    assert_eq!(s.profile().await.as_deref(), Some(s.profile_arn.as_str()), "nothing changed");
}
