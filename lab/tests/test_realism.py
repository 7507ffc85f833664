"""realism: latency, EC2 token buckets, S3 SlowDown, other services' throttling (all off by
default). Buckets are tested with small sizes and the lab's manual clock, so nothing here
sleeps to wait for a refill; the only timing checks are lower bounds on a fixed latency."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import LAB_DIR, SERVER

sys.path.insert(0, str(LAB_DIR))
from labext import realism  # noqa: E402  (pure decisions, tested with plain data)

DEFAULTS = dict(realism.OPTION_DEFAULTS)


@pytest.fixture
def rlab(lab):
    """The shared lab with realism back at its defaults, buckets full and counters zero,
    before and after the test (whatever the test changed)."""
    def restore():
        lab.config(**DEFAULTS)
        lab.admin_ok("POST", "/_lab/realism/buckets/reset")
        lab.admin_ok("POST", "/_lab/realism/stats/reset")

    restore()
    try:
        yield lab
    finally:
        restore()


def error_of(call) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as info:
        call()
    r = info.value.response
    return r["ResponseMetadata"]["HTTPStatusCode"], r["Error"]["Code"], r["Error"].get("Message", "")


def stats(lab) -> dict:
    return lab.admin_ok("GET", "/_lab/realism/stats")


# --- off by default ----------------------------------------------------------------------


def test_everything_is_off_by_default(rlab, fresh_account):
    config = rlab.admin_ok("GET", "/_lab/config")
    for key, value in DEFAULTS.items():
        assert config[key] == value, key
    ec2 = rlab.client("ec2", account=fresh_account)
    # 60 unfiltered DescribeInstances: more than the documented bucket of 50.
    for _ in range(60):
        ec2.describe_instances()
    got = stats(rlab)
    assert got["throttled"] == 0
    assert got["slept_s"] == 0
    assert got["services"]["ec2"]["actions"]["DescribeInstances"]["requests"] == 60


def test_stock_moto_never_throttles_and_has_no_counters(stock_lab):
    ec2 = stock_lab.client("ec2")
    for _ in range(60):
        ec2.describe_instances()
    assert stock_lab.admin("GET", "/_lab/realism/stats").status_code == 404


# --- latency -----------------------------------------------------------------------------


def test_fixed_latency_delays_every_aws_request_but_not_admin_routes(rlab, fresh_account):
    ec2 = rlab.client("ec2", account=fresh_account)
    latency_s = 0.3
    rlab.config(latency_ms={"fixed": 300})
    rlab.admin_ok("POST", "/_lab/realism/stats/reset")
    for _ in range(3):
        t0 = time.monotonic()
        ec2.describe_regions()
        took = time.monotonic() - t0
        print(f"DescribeRegions with {latency_s}s latency took {took:.3f}s")
        assert took >= latency_s
    for _ in range(5):
        rlab.admin_ok("GET", "/_lab/health")
    got = stats(rlab)
    assert got["requests"] == 3  # admin routes are neither delayed nor counted
    assert got["services"]["ec2"]["actions"]["DescribeRegions"]["slept_s"] == pytest.approx(0.9)


def test_request_log_lists_every_aws_call_in_order_with_status_and_times(rlab, fresh_account):
    """Benchmarks count every call (STS, S3, EC2 ...) from this log, throttled ones too."""
    rlab.config(latency_ms={"fixed": 20}, ec2_throttle=True, ec2_buckets={"CreateKeyPair": [1, 0]},
                realism_manual_clock=True)
    rlab.admin_ok("POST", "/_lab/realism/stats/reset")
    ec2 = rlab.client("ec2", account=fresh_account)
    sts = rlab.client("sts", account=fresh_account)
    t0 = time.time()
    sts.get_caller_identity()
    ec2.create_key_pair(KeyName="a")
    error_of(lambda: ec2.create_key_pair(KeyName="b"))
    rlab.admin_ok("GET", "/_lab/health")
    # (the fixture's client may assume a role in the default account first: not ours)
    log = [e for e in rlab.admin_ok("GET", "/_lab/realism/log")["requests"] if e["account"] == fresh_account]
    got = [(e["service"], e["operation"], e["status"], e["account"]) for e in log]
    assert got[0] == ("sts", "GetCallerIdentity", 200, fresh_account)
    assert got[1:] == [("ec2", "CreateKeyPair", 200, fresh_account), ("ec2", "CreateKeyPair", 503, fresh_account)]
    for e in log:
        assert t0 <= e["start"] and e["end"] - e["start"] >= 0.02  # the latency is inside
    assert [e["start"] for e in log] == sorted(e["start"] for e in log)
    assert log[0]["buckets"] == [] and log[1]["buckets"] == [["CreateKeyPair", 1, 0, 1]]
    rlab.admin_ok("POST", "/_lab/realism/stats/reset")
    assert rlab.admin_ok("GET", "/_lab/realism/log")["requests"] == []


def test_request_log_names_the_s3_bucket_and_key(rlab, fresh_account):
    """A benchmark finds when an object under a prefix was first stored (issue 12: time to
    the first evidence item) from the log alone: S3 entries carry the bucket and key."""
    s3 = rlab.client("s3", account=fresh_account)
    ec2 = rlab.client("ec2", account=fresh_account)
    bucket = f"log-keys-{fresh_account}"
    s3.create_bucket(Bucket=bucket)
    rlab.admin_ok("POST", "/_lab/realism/stats/reset")
    s3.put_object(Bucket=bucket, Key="cases/C-1/evidence/a b/console.txt", Body=b"x")
    s3.head_object(Bucket=bucket, Key="cases/C-1/evidence/a b/console.txt")
    s3.list_objects_v2(Bucket=bucket, Prefix="cases/")
    ec2.describe_regions()
    log = [e for e in rlab.admin_ok("GET", "/_lab/realism/log")["requests"] if e["account"] == fresh_account]
    got = [(e["operation"], e.get("bucket"), e.get("key")) for e in log if e["service"] == "s3"]
    assert got == [("PutObject", bucket, "cases/C-1/evidence/a b/console.txt"),
                   ("HeadObject", bucket, "cases/C-1/evidence/a b/console.txt"),
                   ("ListObjectsV2", bucket, None)]
    # Other services' entries are as before: no bucket or key fields.
    assert all("key" not in e and "bucket" not in e for e in log if e["service"] != "s3")


def test_a_bare_number_is_a_fixed_latency(rlab):
    assert rlab.config(latency_ms=25)["latency_ms"] == {"fixed": 25}


def test_concurrent_requests_are_delayed_at_the_same_time(rlab, fresh_account):
    parallel = 8
    clients = [rlab.client("ec2", account=fresh_account) for _ in range(parallel)]
    rlab.config(latency_ms={"fixed": 1000})
    rlab.admin_ok("POST", "/_lab/realism/stats/reset")
    barrier = threading.Barrier(parallel)
    errors: list[BaseException] = []

    def call(client):
        try:
            barrier.wait()
            client.describe_regions()
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    assert not errors
    got = stats(rlab)
    print(f"{parallel} parallel requests with 1 s latency: {wall:.2f} s wall, "
          f"{got['slept_s']:.1f} s slept in total, ratio {got['slept_s'] / wall:.1f}")
    # Every request was sleeping at once: the server does not serialise them.
    assert got["max_concurrent_delayed"] == parallel


def test_seeded_latency_samples_repeat(rlab, fresh_account):
    ec2 = rlab.client("ec2", account=fresh_account)

    def run() -> list[float]:
        rlab.config(realism_seed=1234, latency_ms={"uniform": [1, 30]})
        slept = []
        for _ in range(6):
            before = stats(rlab)["slept_s"]
            ec2.describe_regions()
            slept.append(stats(rlab)["slept_s"] - before)
        return slept

    first, second = run(), run()
    assert first == pytest.approx(second, abs=5e-6)  # stats round to microseconds
    assert len({round(x, 6) for x in first}) > 1  # really sampled, not one fixed value
    assert all(0.001 - 1e-9 <= x <= 0.030 + 1e-9 for x in first)


def test_normal_latency_is_accepted_and_clipped_at_zero(rlab, fresh_account):
    ec2 = rlab.client("ec2", account=fresh_account)
    rlab.config(latency_ms={"normal": [0, 5]}, realism_seed=7)
    for _ in range(10):
        ec2.describe_regions()
    assert stats(rlab)["slept_s"] >= 0


@pytest.mark.parametrize("bad", [
    {"latency_ms": {"uniform": [50, 10]}},
    {"latency_ms": {"gamma": [1, 2]}},
    {"latency_ms": -5},
    {"ec2_buckets": {"nonsense": [1, 1]}},
    {"ec2_buckets": {"mutating": [1]}},
    {"ec2_buckets": {"resource:CreateTags": [1, 1]}},
    {"service_buckets": {"ec2": [1, 1]}},
    {"service_buckets": {"dynamodb": [1, 1]}},
    {"s3_slowdown_rate": 1.5},
    {"ec2_throttle": "yes"},
])
def test_bad_options_are_refused_and_change_nothing(rlab, bad):
    before = rlab.admin_ok("GET", "/_lab/config")
    r = rlab.admin("POST", "/_lab/config", json=bad)
    assert r.status_code == 400, r.text
    assert rlab.admin_ok("GET", "/_lab/config") == before


# --- EC2 buckets -------------------------------------------------------------------------


def test_documented_bucket_sizes_for_the_actions_cleanroom_calls():
    expected = {
        # action: (filtered?, category, size, refill per second)
        "DescribeInstances": (False, "unfiltered_unpaginated", 50, 10),
        "DescribeVolumes": (False, "unfiltered_unpaginated", 50, 10),
        "DescribeSnapshots": (False, "unfiltered_unpaginated", 50, 10),
        "DescribeSecurityGroups": (False, "unfiltered_unpaginated", 50, 10),
        "DescribeNetworkInterfaces": (False, "unfiltered_unpaginated", 50, 10),
        "DescribeInstanceAttribute": (False, "non_mutating", 100, 20),
        "DescribeIamInstanceProfileAssociations": (False, "non_mutating", 100, 20),
        "GetConsoleOutput": (False, "non_mutating", 100, 20),
        "GetConsoleScreenshot": (False, "non_mutating", 100, 20),
        "CreateSecurityGroup": (False, "mutating", 50, 5),
        "AuthorizeSecurityGroupIngress": (False, "resource_intensive", 50, 5),
        "AuthorizeSecurityGroupEgress": (False, "mutating", 50, 5),
        "RevokeSecurityGroupEgress": (False, "mutating", 50, 5),
        "ModifyInstanceAttribute": (False, "mutating", 50, 5),
        "CopySnapshot": (False, "mutating", 50, 5),
        "AttachVolume": (False, "mutating", 50, 5),
        "ModifyNetworkInterfaceAttribute": (False, "uncategorized", 100, 5),
        "CreateTags": (False, "uncategorized", 100, 10),
        "CreateSnapshots": (False, "uncategorized", 100, 5),
        "ModifySnapshotAttribute": (False, "uncategorized", 100, 5),
        "CreateVolume": (False, "uncategorized", 100, 5),
        "RunInstances": (False, "uncategorized", 5, 2),
        "TerminateInstances": (False, "uncategorized", 100, 5),
        "DisassociateIamInstanceProfile": (False, "uncategorized", 100, 5),
    }
    for action, (filtered, category, size, rate) in expected.items():
        _name, got_category, got_size, got_rate = realism.ec2_request_bucket(action, filtered, {})
        assert (got_category, got_size, got_rate) == (category, size, rate), action
    # With a filter or pagination the big Describe calls use the larger bucket.
    assert realism.ec2_request_bucket("DescribeInstances", True, {})[1:] == ("non_mutating", 100, 20)
    assert realism.EC2_RESOURCE_BUCKETS["RunInstances"] == (1000, 2)
    assert realism.EC2_RESOURCE_BUCKETS["TerminateInstances"] == (1000, 20)
    # An action override beats its category.
    assert realism.ec2_request_bucket("CreateTags", False, {"uncategorized": [1, 1],
                                                           "CreateTags": [7, 3]})[2:] == (7, 3)


def test_a_bucket_lets_exactly_its_size_through_then_throttles_and_refills(rlab, fresh_account):
    ec2 = rlab.client("ec2", account=fresh_account)
    size, rate = 3, 2
    rlab.config(ec2_throttle=True, ec2_buckets={"mutating": [size, rate]}, realism_manual_clock=True)
    names = iter(f"sg-test-{i}" for i in range(100))

    def create():
        return ec2.create_security_group(GroupName=next(names), Description="bucket test")

    for _ in range(size):
        create()
    status, code, message = error_of(create)
    assert (status, code, message) == (503, "RequestLimitExceeded", "Request limit exceeded.")
    # Per-API buckets: another action is not throttled by this one.
    ec2.describe_regions()
    # Half a second at 2/s refills one token: one more call, then throttled again.
    rlab.admin_ok("POST", "/_lab/realism/clock", json={"advance_seconds": 1 / rate})
    create()
    assert error_of(create)[1] == "RequestLimitExceeded"
    # A long pause refills to the size, not beyond.
    rlab.admin_ok("POST", "/_lab/realism/clock", json={"advance_seconds": 60})
    for _ in range(size):
        create()
    assert error_of(create)[1] == "RequestLimitExceeded"
    got = stats(rlab)
    assert got["services"]["ec2"]["actions"]["CreateSecurityGroup"]["throttled"] == 3
    assert got["throttled_by_code"] == {"RequestLimitExceeded": 3}


def test_buckets_are_per_account(rlab, fresh_account):
    other = fresh_account[::-1] if fresh_account[::-1][0] != "0" else "3" + fresh_account[1:]
    first, second = rlab.client("ec2", account=fresh_account), rlab.client("ec2", account=other)
    rlab.config(ec2_throttle=True, ec2_buckets={"non_mutating": [1, 1]}, realism_manual_clock=True)
    first.describe_regions()
    assert error_of(first.describe_regions)[1] == "RequestLimitExceeded"
    second.describe_regions()


def test_unfiltered_describe_calls_spend_from_the_smaller_bucket(rlab, fresh_account):
    ec2 = rlab.client("ec2", account=fresh_account)
    rlab.config(ec2_throttle=True, realism_manual_clock=True,
                ec2_buckets={"unfiltered_unpaginated": [2, 1], "non_mutating": [4, 1]})
    ec2.describe_instances()
    ec2.describe_instances()
    assert error_of(ec2.describe_instances)[1] == "RequestLimitExceeded"
    filtered = {"Filters": [{"Name": "instance-state-name", "Values": ["running"]}]}
    for _ in range(4):
        ec2.describe_instances(**filtered)
    assert error_of(lambda: ec2.describe_instances(**filtered))[1] == "RequestLimitExceeded"
    # Pagination also counts as "not unpaginated": same larger (now empty) bucket.
    assert error_of(lambda: ec2.describe_instances(MaxResults=5))[1] == "RequestLimitExceeded"


def test_dry_run_spends_request_tokens(rlab, fresh_account):
    ec2 = rlab.client("ec2", account=fresh_account)
    rlab.config(ec2_throttle=True, ec2_buckets={"mutating": [2, 1]}, realism_manual_clock=True)
    for name in ("dry-0", "dry-1"):
        assert error_of(lambda name=name: ec2.create_security_group(
            GroupName=name, Description="d", DryRun=True))[1] == "DryRunOperation"
    assert error_of(lambda: ec2.create_security_group(
        GroupName="dry-x", Description="d", DryRun=True))[1] == "RequestLimitExceeded"


def test_run_instances_spends_one_resource_token_per_instance(rlab, fresh_account):
    ec2 = rlab.client("ec2", account=fresh_account)
    rlab.config(ec2_throttle=True, realism_manual_clock=True,
                ec2_buckets={"RunInstances": [100, 1], "resource:RunInstances": [3, 1]})

    def run(count: int, dry: bool = False):
        return ec2.run_instances(ImageId="ami-12345678", MinCount=count, MaxCount=count, DryRun=dry)

    run(2)
    # One resource token left: a DryRun for 2 spends none and is answered as a DryRun.
    assert error_of(lambda: run(2, dry=True))[1] == "DryRunOperation"
    assert error_of(lambda: run(2))[1] == "RequestLimitExceeded"
    run(1)
    rlab.admin_ok("POST", "/_lab/realism/clock", json={"advance_seconds": 2})
    run(2)
    buckets = {b["bucket"]: b for b in rlab.admin_ok("GET", "/_lab/realism/buckets")["buckets"]
               if b["account"] == fresh_account}
    assert buckets["resource:RunInstances"]["size"] == 3
    assert buckets["resource:RunInstances"]["tokens"] == pytest.approx(0)


def test_clock_refuses_to_move_when_it_is_real(rlab):
    r = rlab.admin("POST", "/_lab/realism/clock", json={"advance_seconds": 1})
    assert r.status_code == 409


# --- S3 SlowDown ---------------------------------------------------------------------------


def test_s3_slowdown_every_request(rlab, fresh_account):
    s3 = rlab.client("s3", account=fresh_account)
    bucket = f"slow-{fresh_account}"
    s3.create_bucket(Bucket=bucket)
    rlab.config(s3_slowdown_rate=1.0)
    status, code, _ = error_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 100_000))
    assert (status, code) == (503, "SlowDown")
    rlab.config(s3_slowdown_rate=0.0)
    # The refused body was drained: the same client (and connection) works at once.
    s3.put_object(Bucket=bucket, Key="k", Body=b"y")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"y"


def test_s3_slowdown_fraction_repeats_with_the_seed(rlab, fresh_account):
    s3 = rlab.client("s3", account=fresh_account)
    bucket = f"seeded-{fresh_account}"
    s3.create_bucket(Bucket=bucket)

    def run() -> list[bool]:
        rlab.config(s3_slowdown_rate=0.5, realism_seed=42)
        outcomes = []
        for _ in range(30):
            try:
                s3.list_objects_v2(Bucket=bucket)
                outcomes.append(True)
            except ClientError as e:
                assert e.response["Error"]["Code"] == "SlowDown"
                outcomes.append(False)
        return outcomes

    first, second = run(), run()
    assert first == second
    assert True in first and False in first
    print(f"s3_slowdown_rate 0.5, seed 42: {first.count(False)} of 30 refused")


# --- other services ---------------------------------------------------------------------

SERVICE_CALLS = [
    # (client, bucket key, call, HTTP status, code)
    ("iam", "iam", lambda c: c.list_roles(), 400, "Throttling"),
    ("sts", "sts", lambda c: c.get_caller_identity(), 400, "Throttling"),
    ("autoscaling", "autoscaling", lambda c: c.describe_auto_scaling_groups(), 400, "Throttling"),
    ("elbv2", "elasticloadbalancing", lambda c: c.describe_load_balancers(), 400, "Throttling"),
    ("elb", "elasticloadbalancing", lambda c: c.describe_load_balancers(), 400, "Throttling"),
    ("ssm", "ssm", lambda c: c.list_commands(), 400, "ThrottlingException"),
    ("kms", "kms", lambda c: c.list_keys(), 400, "ThrottlingException"),
    ("cloudtrail", "cloudtrail", lambda c: c.describe_trails(), 400, "ThrottlingException"),
]


@pytest.mark.parametrize("client_name,key,call,status,code", SERVICE_CALLS,
                         ids=[c[0] for c in SERVICE_CALLS])
def test_each_service_throttles_with_its_own_code(rlab, fresh_account, client_name, key, call,
                                                  status, code):
    client = rlab.client(client_name, account=fresh_account)
    rlab.config(service_buckets={key: [1, 1]}, realism_manual_clock=True)
    call(client)
    got_status, got_code, message = error_of(lambda: call(client))
    assert (got_status, got_code, message) == (status, code, "Rate exceeded")
    # botocore's standard retry mode classes it as a throttle (and backs off).
    from botocore.retries.standard import RetryContext, ThrottledRetryableChecker  # noqa: PLC0415

    with pytest.raises(ClientError) as info:
        call(client)
    ctx = RetryContext(attempt_number=1, parsed_response=info.value.response)
    assert ThrottledRetryableChecker().is_retryable(ctx)
    rlab.admin_ok("POST", "/_lab/realism/clock", json={"advance_seconds": 1})
    call(client)


def test_an_action_bucket_is_separate_from_the_service_bucket(rlab, fresh_account):
    ssm = rlab.client("ssm", account=fresh_account)
    rlab.config(service_buckets={"ssm:ListCommands": [1, 1], "ssm": [100, 1]},
                realism_manual_clock=True)
    ssm.list_commands()
    assert error_of(ssm.list_commands)[1] == "ThrottlingException"
    for _ in range(3):
        ssm.list_documents()


def test_ec2_is_not_throttled_through_service_buckets(rlab):
    assert rlab.admin("POST", "/_lab/config", json={"service_buckets": {"ec2": [1, 1]}}).status_code == 400


# --- flags --------------------------------------------------------------------------------


def _without() -> list[str]:
    """The LAB_WITHOUT extensions conftest's lab fixture honours, as flags."""
    names = os.environ.get("LAB_WITHOUT", "").replace(",", " ").split()
    return ["--without", *names] if names else []


def _start_with(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SERVER), "--port", "0", "--exit-on-stdin-eof", *args,
                             *_without()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_server_flags_set_the_options():
    from conftest import Lab

    server = Lab(["--latency-ms", '{"uniform": [1, 2]}', "--ec2-throttle", "--realism-seed", "9",
                  "--ec2-buckets", '{"mutating": [10, 1]}', "--s3-slowdown-rate", "0.25",
                  "--service-buckets", '{"iam": [15, 2]}', "--iam-enforce", *_without()], "flags")
    try:
        config = server.admin_ok("GET", "/_lab/config")
    finally:
        server.close()
    assert config["latency_ms"] == {"uniform": [1, 2]}
    assert config["ec2_throttle"] is True
    assert config["realism_seed"] == 9
    assert config["ec2_buckets"] == {"mutating": [10, 1]}
    assert config["s3_slowdown_rate"] == 0.25
    assert config["service_buckets"] == {"iam": [15, 2]}
    assert config["iam_enforce"] is True


def test_a_bad_flag_value_stops_the_lab_with_exit_2():
    proc = _start_with(["--latency-ms", '{"uniform": [9, 1]}'])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"latency_ms uniform" in err
    assert b"LAB_READY" not in out
