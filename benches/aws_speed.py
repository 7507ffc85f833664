"""The body of scripts/bench-aws (read its header): containment speed under the lab's
latency and EC2 token buckets, every call counted from the lab's request log
(GET /_lab/realism/log). Run through scripts/bench-aws, which builds and installs first."""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

from labbench import Lab, accounts, chain_depth, drop_log, is_swap, load, summarise_calls, trust

root, bench = os.environ["BENCH_ROOT"], os.environ["BENCH_DIR"]
ap = argparse.ArgumentParser(prog="scripts/bench-aws")
ap.add_argument("--latency-ms", type=float, default=40.0, help="fixed latency of every AWS request (issue 12: 40)")
ap.add_argument("--fleet", type=int, default=100, help="instances in the fleet run (two accounts, one VPC each)")
ap.add_argument("--runs", type=int, default=3, help="runs of each one-instance measurement (median)")
ap.add_argument("--concurrency", type=int, default=8, help="[limits] instance_concurrency (configuration default: 8)")
ap.add_argument("--skip-one", action="store_true")
ap.add_argument("--skip-fleet", action="store_true")
args = ap.parse_args()
REGION = "eu-west-1"
HOME = "123456789012"
LATENCY_S = args.latency_ms / 1000.0
# Another build to compare (e.g. a copy made before a change); default: this tree's.
CLEANROOM = os.environ.get("BENCH_CLEANROOM") or f"{root}/target/debug/cleanroom"

lab = Lab(root, REGION, HOME)
url, env = lab.url, lab.env
admin, realism, request_log, client, isolation_checked = lab.admin, lab.realism, lab.request_log, lab.client, lab.isolation_checked
account = accounts("4")




FORENSICS = {}


def forensics():
    acct = account()
    FORENSICS["account"] = acct
    client("iam", acct).create_role(RoleName="CleanroomForensics", AssumeRolePolicyDocument=trust(HOME))
    s3 = client("s3", acct)
    bucket = f"bench-evidence-{acct}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    kms = client("kms", acct)
    key = kms.create_key()["KeyMetadata"]["Arn"]
    # Signed records, as the templates and README set a case up: one KMS Sign per record.
    signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    cfg = f"""examiner = "Bench Examiner, cleanroom lab"
[forensics]
account_id = "{acct}"
role_arn = "arn:aws:iam::{acct}:role/CleanroomForensics"
region = "{REGION}"
evidence_bucket = "{bucket}"
kms_key_arn = "{key}"
signing_key_arn = "{signing}"
retention_days = 1
[member]
role_name = "CleanroomResponder"
[analysis]
subnet_id = "subnet-0123456789abcdef0"
security_group_id = "sg-0123456789abcdef0"
instance_profile = "CleanroomAnalysis"
ami = "ami-0123456789abcdef0"
[limits]
instance_concurrency = {args.concurrency}
"""
    path = os.path.join(bench, "cleanroom-bench-aws.toml")
    open(path, "w").write(cfg)
    return path


def member(acct):
    client("iam", acct).create_role(RoleName="CleanroomResponder", AssumeRolePolicyDocument=trust(HOME))


def network(acct, cidr, ipv6=False):
    ec2 = client("ec2", acct)
    vpc = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16", AmazonProvidedIpv6CidrBlock=ipv6)["Vpc"]["VpcId"]
    kw = {}
    if ipv6:
        v6 = ec2.describe_vpcs(VpcIds=[vpc])["Vpcs"][0]["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"]
        kw["Ipv6CidrBlock"] = v6.replace("::/56", "::/64")
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{cidr}.1.0/24", AvailabilityZone=f"{REGION}a", **kw)["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    return ec2, vpc, sub, sg


def plain(acct, n, cidr, tag="plain"):
    ec2, vpc, sub, sg = network(acct, cidr)
    spec = [{"ResourceType": "instance", "Tags": [{"Key": "bench", "Value": tag}]}]
    ids = []
    while len(ids) < n:
        k = min(50, n - len(ids))
        r = ec2.run_instances(ImageId="ami-12345678", MinCount=k, MaxCount=k, SubnetId=sub, SecurityGroupIds=[sg], TagSpecifications=spec,
                              BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}])
        ids += [i["InstanceId"] for i in r["Instances"]]
    return ids


def service(acct, cidr):
    ec2, vpc, sub, sg = network(acct, cidr, ipv6=True)
    admin_sg = ec2.create_security_group(GroupName="admin", Description="admin", VpcId=vpc)["GroupId"]
    iid = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=sub, SecurityGroupIds=[sg],
                            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}, {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 4}}])["Instances"][0]["InstanceId"]
    eni = ec2.create_network_interface(SubnetId=sub, Groups=[sg, admin_sg], Ipv6AddressCount=1)["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=iid, DeviceIndex=1)
    iam = client("iam", acct)
    iam.create_role(RoleName="web", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    arn = iam.create_instance_profile(InstanceProfileName="web")["InstanceProfile"]["Arn"]
    iam.add_role_to_instance_profile(InstanceProfileName="web", RoleName="web")
    ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": arn}, InstanceId=iid)
    lt = ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": "ami-12345678", "InstanceType": "t3.micro"})["LaunchTemplate"]["LaunchTemplateId"]
    asg = client("autoscaling", acct)
    asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchTemplate={"LaunchTemplateId": lt}, MinSize=1, MaxSize=4, DesiredCapacity=1, VPCZoneIdentifier=sub)
    asg.attach_instances(AutoScalingGroupName="web", InstanceIds=[iid])
    elbv2 = client("elbv2", acct)
    tg = elbv2.create_target_group(Name="web", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=tg, Targets=[{"Id": iid, "Port": 8080}])
    elb = client("elb", acct)
    elb.create_load_balancer(LoadBalancerName="web", Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}], Subnets=[sub])
    elb.register_instances_with_load_balancer(LoadBalancerName="web", Instances=[{"InstanceId": iid}])
    return iid


def arn(acct, iid):
    return f"arn:aws:ec2:{REGION}:{acct}:instance/{iid}"


def cleanroom(config, *argv):
    """Runs isolate; returns the wall time, the time from process start to the isolation
    group on every ENI (from the lab's log), and the calls."""
    t0 = time.time()
    p = subprocess.run([CLEANROOM, "--config", config, "--json", "isolate", *argv], env=env, capture_output=True, text=True)
    wall = time.time() - t0
    log = request_log()
    if p.returncode != 0:
        sys.exit(f"cleanroom failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    out = json.loads(p.stdout)
    statuses = collections.Counter(o["status"] for o in out["instances"])
    swaps = [e["end"] for e in log if is_swap(e)]
    iso_end = max(swaps)
    return {"wall_s": wall, "to_isolation_s": iso_end - t0,
            "self_reported_isolated_after_s": max(o["isolated_after_ms"] or 0 for o in out["instances"]) / 1000.0,
            "statuses": dict(statuses), "calls_to_isolation": summarise_calls(log, iso_end),
            "chain_to_isolation": chain_depth(log, iso_end),
            # The same without the forensics account's calls (case, evidence, records,
            # signatures): the suspect side's chain, which the evidence calls run beside.
            "chain_to_isolation_suspect_side": chain_depth([e for e in log if e["account"] != FORENSICS["account"]], iso_end),
            "calls_total": summarise_calls(log),
            "log": log, "t0": t0}


AWSIR = r'''
import json, os, sys, time
import boto3
from aws_ir.libs import case
from aws_ir.plans import host
t0 = time.time()
c = case.Case(case_number=sys.argv[2], examiner_cidr_range="0.0.0.0/0", case_bucket=None, profile="default")
c.prep_aws_connections()
t1 = time.time()
host.Compromise(user="ec2-user", ssh_key_file=None, target=sys.argv[1], prog="aws_ir", case=c,
                steps="isolate_host,tag_host,snapshotdisks_host").mitigate()
t2 = time.time()
print(json.dumps({"t0": t0, "t1": t1, "t2": t2}))
'''


def awsir(iid, case_number):
    d = tempfile.mkdtemp(dir=bench)
    open(f"{d}/config", "w").write(f"[default]\nregion = {REGION}\n")
    open(f"{d}/credentials", "w").write("[default]\naws_access_key_id = AKIALABLABLABLAB0000\naws_secret_access_key = lab\n")
    e = dict(env, AWS_CONFIG_FILE=f"{d}/config", AWS_SHARED_CREDENTIALS_FILE=f"{d}/credentials", HOME=d)
    start = time.time()
    p = subprocess.run([f"{bench}/awsir/bin/python", "-c", AWSIR, iid, case_number], env=e, capture_output=True, text=True, cwd=d)
    log = request_log()
    if p.returncode != 0:
        sys.exit(f"aws_ir failed:\n{p.stdout}\n{p.stderr}")
    t = json.loads(p.stdout.strip().splitlines()[-1])
    plugins = [x for x in log if x["start"] >= t["t1"]]
    iso = [x["end"] for x in plugins if x["operation"] == "ModifyInstanceAttribute" and x["status"] == 200]
    iso_end = min(iso) if iso else None
    ec2 = client("ec2")
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    groups = [g["GroupId"] for g in inst["SecurityGroups"]]
    sg = ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]
    # aws_ir's isolation: one new group, no ingress but from the examiner CIDR, egress revoked.
    checked = len(sg) == 1 and sg[0]["GroupName"].startswith("isolation-sg-") and not sg[0]["IpPermissions"]
    return {"wall_s": time.time() - start, "process_to_plugins_s": t["t1"] - start,
            "plugins_s": t["t2"] - t["t1"], "plugins_to_isolation_s": (iso_end - t["t1"]) if iso_end else None,
            "process_to_isolation_s": (iso_end - start) if iso_end else None,
            "isolation_checked": checked, "isolation_group": {"name": sg[0]["GroupName"] if sg else None,
                                                               "ingress": sg[0]["IpPermissions"] if sg else None,
                                                               "egress": sg[0]["IpPermissionsEgress"] if sg else None},
            "chain_to_isolation": chain_depth(plugins, iso_end) if iso_end else None,
            "calls_plugins_to_isolation": summarise_calls(plugins, iso_end), "calls_plugins": summarise_calls(plugins),
            "calls_total": summarise_calls(log)}


def mean_answer(log: list[dict]) -> float:
    """What a request took in this lab (latency + the lab's own work), on average."""
    return sum(e["end"] - e["start"] for e in log) / max(1, len(log))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def bucket_forced_s(log: list[dict]) -> tuple[float, dict]:
    """The time the EC2 buckets alone force for the calls the lab accepted: per bucket
    (account, region, name), (tokens spent - bucket size) / refill rate, the largest."""
    spent: dict[tuple, list] = {}
    for e in log:
        if e["status"] == 503:
            continue  # a throttled answer spends nothing (DryRun's 412 spends like any call)
        for name, size, rate, cost in e["buckets"]:
            key = (e["account"], e["region"], name)
            b = spent.setdefault(key, [size, rate, 0])
            b[2] += cost
    forced = {f"{a}/{r}/{n}": {"size": s, "refill_per_s": rt, "spent": c,
                               "forced_s": max(0.0, (c - s) / rt) if rt else (0.0 if c <= s else float("inf"))}
              for (a, r, n), (s, rt, c) in spent.items()}
    worst = max((v["forced_s"] for v in forced.values()), default=0.0)
    return worst, dict(sorted(forced.items(), key=lambda kv: -kv[1]["forced_s"]))


results = {"lab": "moto 5.2.5 + cleanroom extensions, loopback, realism on", "latency_ms": args.latency_ms,
           "build": f"cleanroom debug build {CLEANROOM}", "instance_concurrency": args.concurrency}
try:
    realism(0)
    config = forensics()
    lines = []

    if not args.skip_one:
        ir_runs, plain_runs, svc_runs = [], [], []
        # Interleaved rounds: aws_ir first in each, while the caller's account holds few
        # instances (its case setup inventories them all, in every region).
        for r in range(args.runs):
            realism(0)
            ir_iid = plain(HOME, 1, cidr=f"10.{50 + r}")[0]
            my_iid = plain(HOME, 1, cidr=f"10.{60 + r}")[0]
            acct = account(); member(acct)
            svc_iid = service(acct, f"10.{70 + r}")

            realism(args.latency_ms)
            a = awsir(ir_iid, f"cr-bench-{r}")
            a["load"] = load()
            ir_runs.append(a)

            realism(args.latency_ms)
            c = cleanroom(config, "--case", f"BENCH-AWS-PLAIN-{r}", my_iid)
            realism(0)
            c["isolation_checked"] = isolation_checked(HOME, my_iid)
            c["load"] = load()
            plain_runs.append(c)

            realism(args.latency_ms)
            s = cleanroom(config, "--case", f"BENCH-AWS-SVC-{r}", arn(acct, svc_iid))
            realism(0)
            s["isolation_checked"] = isolation_checked(acct, svc_iid)
            s["load"] = load()
            svc_runs.append(s)

        def pick(runs, key):
            return sorted(runs, key=lambda x: x[key])[len(runs) // 2]

        ir = pick(ir_runs, "plugins_to_isolation_s")
        mine = pick(plain_runs, "to_isolation_s")
        svc = pick(svc_runs, "to_isolation_s")
        results["one"] = {
            "aws_ir_plugins": {"median_run": ir, "runs": ir_runs},
            "cleanroom_plain": {"median_run": drop_log(mine), "runs": [drop_log(x) for x in plain_runs]},
            "cleanroom_service": {"median_run": drop_log(svc), "runs": [drop_log(x) for x in svc_runs]},
        }
        rt = lambda s: s / LATENCY_S
        ratio = mine["to_isolation_s"] / ir["plugins_to_isolation_s"]
        ratio_svc = svc["to_isolation_s"] / ir["plugins_to_isolation_s"]
        # The measure for both tools: process start to isolation (aws_ir's case
        # setup, which inventories every region, is part of what its user waits for).
        ratio_process = mine["to_isolation_s"] / ir["process_to_isolation_s"]
        ratio_process_svc = svc["to_isolation_s"] / ir["process_to_isolation_s"]
        results["one"]["ratios"] = {"cleanroom_plain_vs_aws_ir_process": ratio_process,
                                    "cleanroom_service_vs_aws_ir_process": ratio_process_svc,
                                    "cleanroom_plain_vs_aws_ir_plugins": ratio, "cleanroom_service_vs_aws_ir_plugins": ratio_svc}
        lines += [
            f"[load {ir['load']}] aws_ir 0.3.3 containment plugins, 1 plain instance: isolation after {ir['plugins_to_isolation_s']:.3f} s "
            f"from the plugins' start = {rt(ir['plugins_to_isolation_s']):.1f} round trips of {args.latency_ms:g} ms "
            f"({ir['chain_to_isolation']} sequential in the log); "
            f"{ir['calls_plugins_to_isolation']['requests']} calls to isolation, {ir['calls_plugins']['requests']} in its plugins "
            f"(plugins done after {ir['plugins_s']:.2f} s; process start to isolation {ir['process_to_isolation_s']:.2f} s, "
            f"its case setup and 38-region inventory included); isolation checked: {ir['isolation_checked']}",
            f"[load {mine['load']}] cleanroom isolate, 1 plain instance: process start -> isolation group on every ENI "
            f"{mine['to_isolation_s']:.3f} s = {rt(mine['to_isolation_s']):.1f} round trips ({mine['chain_to_isolation']} sequential in the log); "
            f"{mine['calls_to_isolation']['requests']} calls before it {mine['calls_to_isolation']['by_service']}, "
            f"{mine['calls_total']['requests']} in the whole command ({mine['wall_s']:.2f} s wall); isolation checked: {mine['isolation_checked']}",
            f"[load {svc['load']}] cleanroom isolate, 1 service instance (2 ENIs, ASG, TG, CLB, profile; member role): "
            f"{svc['to_isolation_s']:.3f} s = {rt(svc['to_isolation_s']):.1f} round trips ({svc['chain_to_isolation']} sequential in the log); "
            f"{svc['calls_to_isolation']['requests']} calls before it {svc['calls_to_isolation']['by_service']}, "
            f"{svc['calls_total']['requests']} in all ({svc['wall_s']:.2f} s wall); isolation checked: {svc['isolation_checked']}",
            f"  ratio cleanroom / aws_ir, process start to isolation for both (same lab, same run): plain {ratio_process:.2f}, "
            f"service {ratio_process_svc:.2f} (goal <= 0.25)",
            f"  ratio cleanroom from process start / aws_ir's plugins alone (its case setup left out): plain {ratio:.2f}, service {ratio_svc:.2f}",
            f"  round trips to isolation (goal <= 8), cleanroom plain: {rt(mine['to_isolation_s']):.1f} by time, "
            f"{mine['chain_to_isolation']} sequential in the log, {mine['chain_to_isolation_suspect_side']} on the suspect's side; "
            f"service: {rt(svc['to_isolation_s']):.1f} by time, {svc['chain_to_isolation']} in the log, "
            f"{svc['chain_to_isolation_suspect_side']} on the suspect's side; "
            f"aws_ir plugins: {rt(ir['plugins_to_isolation_s']):.1f} by time, {ir['chain_to_isolation']} sequential",
            f"  mean lab answer time at {args.latency_ms:g} ms latency: {1000 * mean_answer(mine['log']):.1f} ms",
        ]
        open(f"{bench}/aws-one-log.json", "w").write(json.dumps({"plain": mine["log"], "service": svc["log"]}, indent=1))

    if not args.skip_fleet:
        realism(0)
        half = args.fleet // 2
        accts = [account(), account()]
        ids = {}
        for i, a in enumerate(accts):
            member(a)
            ids[a] = plain(a, half if i == 0 else args.fleet - half, cidr=f"10.{90 + i}", tag="fleet")
        targets = [arn(a, i) for a in accts for i in ids[a]]
        realism(args.latency_ms, throttle=True)
        f = cleanroom(config, "--case", "BENCH-AWS-FLEET", *targets)
        log = f["log"]
        realism(0)
        failed = {k: v for k, v in f["statuses"].items() if k != "isolated"}
        checked = sum(isolation_checked(a, i) for a in accts for i in ids[a])
        forced, buckets = bucket_forced_s([e for e in log if e["service"] == "ec2"])
        ec2_ok = [e for e in log if e["service"] == "ec2" and e["status"] != 503]
        per_inst = collections.Counter()
        for e in ec2_ok:
            kind = "dry_run" if e["dry_run"] else ("read" if e["operation"].startswith(("Describe", "Get", "List")) else "mutating")
            per_inst[f"{kind}:{e['operation']}"] += 1
        n = args.fleet
        per_instance = {k: round(v / n, 2) for k, v in sorted(per_inst.items())}
        throttled = collections.Counter(e["operation"] for e in log if e["status"] == 503)
        f.update({"failed": failed, "isolation_checked": checked, "bucket_forced_s": forced, "buckets": buckets,
                  "ec2_calls_per_instance": per_instance, "throttled_by_operation": dict(throttled), "load": load()})
        results["fleet"] = drop_log(f)
        open(f"{bench}/aws-fleet-log.json", "w").write(json.dumps(log, indent=1))
        ratio = f["to_isolation_s"] / forced if forced else float("inf")
        mut = sum(v for k, v in per_instance.items() if k.startswith("mutating:"))
        dry = sum(v for k, v in per_instance.items() if k.startswith("dry_run:"))
        rd = sum(v for k, v in per_instance.items() if k.startswith("read:"))
        top = next(iter(buckets.items()))
        lines += [
            f"[load {f['load']}] cleanroom isolate, {n} instances (2 accounts, 1 VPC each), EC2 buckets on, {args.latency_ms:g} ms: "
            f"last isolation after {f['to_isolation_s']:.2f} s ({f['wall_s']:.2f} s wall); statuses {f['statuses']}; "
            f"isolation checked on {checked}/{n}",
            f"  bucket-forced minimum for the calls made: {forced:.2f} s (worst bucket {top[0]}: {top[1]['spent']} spent, "
            f"size {top[1]['size']}, refill {top[1]['refill_per_s']}/s); ratio {ratio:.2f} (goal <= 1.25)",
            f"  EC2 calls per instance: {mut:.2f} mutating, {dry:.2f} DryRun, {rd:.2f} read; {per_instance}",
            f"  throttled answers: {sum(throttled.values())} {dict(throttled)}; all calls {f['calls_total']['by_service']}",
        ]
    json.dump(results, open(f"{bench}/aws.json", "w"), indent=2, default=str)
    print("\n".join(lines))
    print(f"written: {bench}/aws.json")
finally:
    lab.stop()
