"""realism: latency and throttling the way AWS does them. Every option is off by default.

Options (``POST /_lab/config`` or server.py flags):

* ``latency_ms``: delay added to every signed AWS request (never to /_lab/ routes) before
  it is processed: ``{"fixed": 40}``, ``{"uniform": [20, 60]}``, ``{"normal": [40, 10]}``
  (mean, standard deviation; clipped at 0). A bare number is ``{"fixed": n}``. The server
  is threaded (a thread per request), so a sleeping request holds up no other.
* ``ec2_throttle``: EC2 token buckets with the documented sizes (see EC2 below).
  ``ec2_buckets`` overrides sizes: ``{"mutating": [size, refill_per_s], "CreateTags": [..],
  "resource:RunInstances": [..]}`` (an action name beats its category).
* ``s3_slowdown_rate``: fraction 0..1 of S3 requests answered 503 ``SlowDown``.
* ``service_buckets``: token buckets for other services, ``{"iam": [size, rate],
  "ssm:SendCommand": [size, rate]}``: a service key is one bucket for the whole service
  per account and region (IAM and STS: per account), an ``service:Action`` key a bucket of
  its own for that action. Services: iam, sts, autoscaling, elasticloadbalancing (v2 and
  classic), ssm, kms, cloudtrail.
* ``realism_seed``: seed of the random source used for latency samples and SlowDown
  picks, so a benchmark run repeats exactly (given the same order of requests).
* ``realism_manual_clock``: buckets refill only when ``POST /_lab/realism/clock``
  advances the clock (tests need no sleeps).

Routes: ``GET /_lab/realism/stats`` (requests, throttles and time slept per service and
action; the largest number of requests that were delayed at the same moment),
``GET /_lab/realism/log`` (every signed AWS request since the last stats reset, in arrival
order: wall-clock ``start``/``end`` in epoch seconds, service, operation, account, region,
DryRun, HTTP status, the token buckets it spends from as ``[name, size, refill, cost]``, and
for S3 the ``bucket`` and object ``key`` (None for a bucket-level request); the newest
``REQUEST_LOG_MAX`` kept; benchmarks count calls and bucket-forced times with it),
``POST /_lab/realism/stats/reset``, ``GET /_lab/realism/buckets`` (levels and sizes),
``POST /_lab/realism/buckets/reset`` (refill all), ``POST /_lab/realism/clock``
``{"advance_seconds": x}``.

EC2 (source: "Request throttling for the Amazon EC2 API",
https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html, tables "Request
token bucket sizes and refill rates" and "Resource token bucket sizes and refill rates"):
each API action has its own request bucket per account and region ("each API is evaluated
individually"), sized by its category; RunInstances, TerminateInstances, StartInstances
and StopInstances also spend one resource token per instance from a second bucket. Over a
bucket: HTTP 503 ``RequestLimitExceeded`` "Request limit exceeded.". DryRun requests spend
request tokens like any other (AWS documents no exemption, and a DryRun RunInstances is
throttled in practice: aws/karpenter-provider-aws#7891) but no resource tokens, since they
launch or stop nothing.
"""

from __future__ import annotations

import collections
import logging
import math
import random
import threading
import time
from typing import Any, Callable

from labext import admin, awsreq, option_checks

log = logging.getLogger("lab.realism")

EC2_THROTTLING_DOC = "https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html"

# Category -> (bucket maximum capacity, refill rate per second), from EC2_THROTTLING_DOC.
EC2_CATEGORIES: dict[str, tuple[float, float]] = {
    "non_mutating": (100, 20),
    "unfiltered_unpaginated": (50, 10),
    "mutating": (50, 5),
    "resource_intensive": (50, 5),
}
# Non-mutating actions that spend from the smaller bucket when called with neither a
# filter nor pagination (the page's "Unfiltered and unpaginated non-mutating actions").
EC2_UNFILTERED = frozenset({
    "DescribeInstances", "DescribeInstanceStatus", "DescribeNetworkInterfaces",
    "DescribeSecurityGroups", "DescribeSnapshots", "DescribeSpotInstanceRequests",
    "DescribeVolumes",
})
EC2_RESOURCE_INTENSIVE = frozenset({
    "AcceptVpcPeeringConnection", "AuthorizeSecurityGroupIngress", "CancelSpotInstanceRequests",
    "CreateKeyPair", "CreateVpcPeeringConnection", "DeleteVpcPeeringConnection",
    "RejectVpcPeeringConnection", "RevokeSecurityGroupIngress", "RequestSpotInstances",
})
# "Uncategorized actions": their own sizes, whatever category they would otherwise fit.
EC2_UNCATEGORIZED: dict[str, tuple[float, float]] = {
    "AcceptVpcEndpointConnections": (10, 1), "AdvertiseByoipCidr": (1, 0.1),
    "AssignIpv6Addresses": (100, 5), "AssignPrivateIpAddresses": (100, 5),
    "AssignPrivateNatGatewayAddress": (10, 1), "AssociateCapacityReservationBillingOwner": (1, 0.5),
    "AssociateEnclaveCertificateIamRole": (10, 1), "AssociateIamInstanceProfile": (100, 5),
    "AssociateNatGatewayAddress": (10, 1), "AttachVerifiedAccessTrustProvider": (10, 2),
    "AuthorizeClientVpnIngress": (5, 2), "CancelDeclarativePoliciesReport": (1, 1),
    "CopyImage": (100, 1), "CreateClientVpnRoute": (5, 2), "CreateCoipCidr": (5, 1),
    "CreateCoipPool": (5, 1), "CreateDefaultSubnet": (1, 1), "CreateDefaultVpc": (1, 1),
    "CreateLaunchTemplateVersion": (100, 5), "CreateNatGateway": (10, 1),
    "CreateNetworkInterface": (100, 5), "CreateRestoreImageTask": (50, 0.1),
    "CreateSnapshot": (100, 5), "CreateSnapshots": (100, 5),
    "CreateSpotDatafeedSubscription": (50, 3), "CreateStoreImageTask": (50, 0.1),
    "CreateSubnetCidrReservation": (5, 1), "CreateTags": (100, 10),
    "CreateVerifiedAccessEndpoint": (20, 4), "CreateVerifiedAccessGroup": (10, 2),
    "CreateVerifiedAccessInstance": (10, 2), "CreateVerifiedAccessTrustProvider": (10, 2),
    "CreateVolume": (100, 5), "CreateVpcEndpoint": (4, 0.3),
    "CreateVpcEndpointServiceConfiguration": (10, 1), "DeleteClientVpnRoute": (5, 2),
    "DeleteCoipCidr": (5, 1), "DeleteCoipPool": (5, 1), "DeleteCoipPoolPermission": (5, 1),
    "DeleteNatGateway": (10, 1), "DeleteNetworkInterface": (100, 5), "DeleteSnapshot": (100, 5),
    "DeleteSpotDatafeedSubscription": (50, 3), "DeleteSubnetCidrReservation": (5, 1),
    "DeleteQueuedReservedInstances": (5, 5), "DeleteTags": (100, 10),
    "DeleteVerifiedAccessEndpoint": (20, 4), "DeleteVerifiedAccessGroup": (10, 2),
    "DeleteVerifiedAccessInstance": (10, 2), "DeleteVerifiedAccessTrustProvider": (10, 2),
    "DeleteVolume": (100, 5), "DeleteVpcEndpoints": (4, 0.3),
    "DeleteVpcEndpointServiceConfigurations": (10, 1), "DeprovisionByoipCidr": (1, 0.1),
    "DeregisterImage": (100, 5), "DescribeAggregateIdFormat": (10, 10),
    "DescribeByoipCidrs": (1, 0.5), "DescribeCapacityBlockExtensionOfferings": (10, 0.15),
    "DescribeCapacityBlockOfferings": (10, 0.15), "DescribeDeclarativePoliciesReports": (5, 5),
    "DescribeHostReservations": (5, 2), "DescribeHostReservationOfferings": (5, 2),
    "DescribeIdentityIdFormat": (10, 10), "DescribeIdFormat": (10, 10),
    "DescribeInstanceTopology": (1, 1), "DescribeMovingAddresses": (1, 1),
    "DescribePrincipalIdFormat": (10, 10), "DescribeReservedInstancesOfferings": (10, 10),
    "DescribeSecurityGroupReferences": (20, 5), "DescribeSpotDatafeedSubscription": (100, 13),
    "DescribeSpotFleetInstances": (100, 5), "DescribeSpotFleetRequestHistory": (100, 5),
    "DescribeSpotFleetRequests": (50, 3), "DescribeStaleSecurityGroups": (20, 5),
    "DescribeStoreImageTasks": (50, 0.5),
    "DescribeVerifiedAccessInstanceLoggingConfigurations": (10, 2),
    "DetachVerifiedAccessTrustProvider": (10, 2), "DisableFastLaunch": (5, 2),
    "DisableImageBlockPublicAccess": (1, 0.1), "DisableSnapshotBlockPublicAccess": (1, 0.1),
    "DisassociateCapacityReservationBillingOwner": (1, 0.5),
    "DisassociateEnclaveCertificateIamRole": (10, 1), "DisassociateIamInstanceProfile": (100, 5),
    "DisassociateNatGatewayAddress": (10, 1), "EnableFastLaunch": (5, 2),
    "EnableImageBlockPublicAccess": (1, 0.1), "EnableSnapshotBlockPublicAccess": (1, 0.1),
    "GetAssociatedEnclaveCertificateIamRoles": (10, 1), "GetDeclarativePoliciesReportSummary": (5, 5),
    "GetHostReservationPurchasePreview": (5, 2), "ModifyImageAttribute": (100, 5),
    "ModifyInstanceMetadataDefaults": (2, 2), "ModifyInstanceMetadataOptions": (100, 5),
    "ModifyLaunchTemplate": (100, 5), "ModifyNetworkInterfaceAttribute": (100, 5),
    "ModifySnapshotAttribute": (100, 5), "ModifyVerifiedAccessEndpoint": (20, 4),
    "ModifyVerifiedAccessEndpointPolicy": (20, 4), "ModifyVerifiedAccessGroup": (10, 2),
    "ModifyVerifiedAccessGroupPolicy": (20, 4), "ModifyVerifiedAccessInstance": (10, 2),
    "ModifyVerifiedAccessInstanceLoggingConfiguration": (10, 2),
    "ModifyVerifiedAccessTrustProvider": (10, 2), "ModifyVpcEndpoint": (4, 0.3),
    "ModifyVpcEndpointServiceConfiguration": (10, 1), "MoveAddressToVpc": (1, 1),
    "ProvisionByoipCidr": (1, 0.1), "PurchaseCapacityBlock": (10, 0.15),
    "PurchaseCapacityBlockExtension": (10, 0.15), "PurchaseHostReservation": (5, 2),
    "PurchaseReservedInstancesOffering": (5, 5), "RejectVpcEndpointConnections": (10, 1),
    "RestoreAddressToClassic": (1, 1), "RevokeClientVpnIngress": (5, 2),
    "RunInstances": (5, 2), "StartDeclarativePoliciesReport": (1, 1), "StartInstances": (5, 2),
    "TerminateInstances": (100, 5), "UnassignPrivateIpAddresses": (100, 5),
    "UnassignPrivateNatGatewayAddress": (10, 1), "WithdrawByoipCidr": (1, 0.1),
}
# Resource token buckets: one token per instance the request acts on.
EC2_RESOURCE_BUCKETS: dict[str, tuple[float, float]] = {
    "RunInstances": (1000, 2), "TerminateInstances": (1000, 20),
    "StartInstances": (1000, 2), "StopInstances": (1000, 20),
}
EC2_NON_MUTATING_PREFIXES = ("Describe", "List", "Search", "Get")
EC2_CATEGORY_KEYS = frozenset(EC2_CATEGORIES) | {"uncategorized"}

# Per service: (HTTP status, error code, message) when its bucket is empty. IAM/STS, Auto
# Scaling and ELB answer the query protocol's ``Throttling`` "Rate exceeded" (400);
# SSM, KMS and CloudTrail (JSON protocol) ``ThrottlingException`` "Rate exceeded" (400).
SERVICE_THROTTLE_ERRORS: dict[str, tuple[int, str, str]] = {
    "iam": (400, "Throttling", "Rate exceeded"),
    "sts": (400, "Throttling", "Rate exceeded"),
    "autoscaling": (400, "Throttling", "Rate exceeded"),
    "elasticloadbalancing": (400, "Throttling", "Rate exceeded"),
    "ssm": (400, "ThrottlingException", "Rate exceeded"),
    "kms": (400, "ThrottlingException", "Rate exceeded"),
    "cloudtrail": (400, "ThrottlingException", "Rate exceeded"),
}
GLOBAL_SERVICES = frozenset({"iam", "sts"})  # one bucket per account, whatever the region
EC2_THROTTLE_ERROR = (503, "RequestLimitExceeded", "Request limit exceeded.")
S3_SLOWDOWN_ERROR = (503, "SlowDown", "Please reduce your request rate.")

OPTION_DEFAULTS: dict[str, Any] = {
    "latency_ms": {"fixed": 0},
    "ec2_throttle": False,
    "ec2_buckets": {},
    "s3_slowdown_rate": 0.0,
    "service_buckets": {},
    "realism_seed": 0,
    "realism_manual_clock": False,
}
# Entries the request log keeps (the oldest are dropped): a 100-instance benchmark makes
# a few thousand requests, so this keeps several runs' worth at ~200 bytes each.
REQUEST_LOG_MAX = 200_000
# A delay longer than this is a typo, not a realistic latency (AWS answers in ms).
MAX_LATENCY_MS = 60_000

_ctx = None


# ---------------------------------------------------------------------------------------
# Option validation


def _bad(message: str) -> admin.AdminError:
    return admin.AdminError(400, message)


def _number(value: Any, what: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"{what} must be a number, got {value!r}")
    if value < minimum:
        raise _bad(f"{what} must be >= {minimum:g}, got {value!r}")
    return float(value)


def normalise_latency(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        value = {"fixed": value}
    if len(value) != 1:
        raise _bad('latency_ms takes one of {"fixed": ms}, {"uniform": [lo, hi]}, '
                   f'{{"normal": [mean, sd]}} or a number; got {value!r}')
    (shape, args), = value.items()
    if shape == "fixed":
        ms = _number(args, "latency_ms fixed")
        if ms > MAX_LATENCY_MS:
            raise _bad(f"latency_ms fixed above {MAX_LATENCY_MS}: {args!r}")
        return {"fixed": args}
    if shape in ("uniform", "normal"):
        if not isinstance(args, list) or len(args) != 2:
            raise _bad(f"latency_ms {shape} takes a list of two numbers, got {args!r}")
        a, b = (_number(x, f"latency_ms {shape}") for x in args)
        if shape == "uniform" and a > b:
            raise _bad(f"latency_ms uniform needs lo <= hi, got {args!r}")
        if max(a, b) > MAX_LATENCY_MS:
            raise _bad(f"latency_ms {shape} above {MAX_LATENCY_MS}: {args!r}")
        return {shape: list(args)}
    raise _bad(f"latency_ms shape {shape!r} unknown; use fixed, uniform or normal")


def _bucket_spec(key: str, value: Any, option: str) -> list[float]:
    if not isinstance(value, list) or len(value) != 2:
        raise _bad(f"{option}[{key!r}] must be [size, refill_per_second], got {value!r}")
    size = _number(value[0], f"{option}[{key!r}] size", minimum=0)
    rate = _number(value[1], f"{option}[{key!r}] refill rate", minimum=0)
    return [size, rate]


def _check_ec2_buckets(value: Any) -> dict[str, list[float]]:
    if not isinstance(value, dict):
        raise _bad(f"ec2_buckets must be an object, got {value!r}")
    out = {}
    for key, spec in value.items():
        name = key.split(":", 1)[1] if key.startswith("resource:") else key
        if key.startswith("resource:") and name not in EC2_RESOURCE_BUCKETS:
            raise _bad(f"ec2_buckets key {key!r}: resource buckets exist only for "
                       f"{sorted(EC2_RESOURCE_BUCKETS)}")
        if not key.startswith("resource:") and key not in EC2_CATEGORY_KEYS \
                and not (name[:1].isupper() and name.isalnum()):
            raise _bad(f"ec2_buckets key {key!r}: use a category {sorted(EC2_CATEGORY_KEYS)}, "
                       "an EC2 action name (CreateTags) or resource:<RunInstances|...>")
        out[key] = _bucket_spec(key, spec, "ec2_buckets")
    return out


def _check_service_buckets(value: Any) -> dict[str, list[float]]:
    if not isinstance(value, dict):
        raise _bad(f"service_buckets must be an object, got {value!r}")
    out = {}
    for key, spec in value.items():
        service, _, action = key.partition(":")
        if service not in SERVICE_THROTTLE_ERRORS:
            hint = (" (EC2: ec2_throttle/ec2_buckets; S3: s3_slowdown_rate)"
                    if service in ("ec2", "s3") else "")
            raise _bad(f"service_buckets key {key!r}: service must be one of "
                       f"{sorted(SERVICE_THROTTLE_ERRORS)}{hint}")
        if ":" in key and not action:
            raise _bad(f"service_buckets key {key!r}: action missing after ':'")
        out[key] = _bucket_spec(key, spec, "service_buckets")
    return out


def validate(changes: dict) -> dict:
    out: dict[str, Any] = {}
    if "latency_ms" in changes:
        out["latency_ms"] = normalise_latency(changes["latency_ms"])
    if "ec2_buckets" in changes:
        out["ec2_buckets"] = _check_ec2_buckets(changes["ec2_buckets"])
    if "service_buckets" in changes:
        out["service_buckets"] = _check_service_buckets(changes["service_buckets"])
    if "s3_slowdown_rate" in changes:
        rate = _number(changes["s3_slowdown_rate"], "s3_slowdown_rate")
        if rate > 1:
            raise _bad(f"s3_slowdown_rate must be within 0..1, got {rate!r}")
        out["s3_slowdown_rate"] = rate
    for key in ("ec2_throttle", "realism_manual_clock"):
        if key in changes and not isinstance(changes[key], bool):
            raise _bad(f"{key} must be true or false, got {changes[key]!r}")
    if "realism_seed" in changes:
        seed = changes["realism_seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _bad(f"realism_seed must be an integer, got {seed!r}")
        _state.reseed(seed)  # setting the seed restarts the sequence
    return out


# ---------------------------------------------------------------------------------------
# Clock, buckets, random source, counters


class TokenBucket:
    """Continuous refill: ``rate`` tokens a second up to ``size`` (AWS adds its refill once a
    second; a continuous refill gives the same sustained rate and bursts)."""

    def __init__(self, size: float, rate: float, now: float):
        self.size, self.rate = size, rate
        self.tokens = size
        self.stamp = now

    def level(self, now: float) -> float:
        return min(self.size, self.tokens + max(0.0, now - self.stamp) * self.rate)

    def take(self, cost: float, now: float) -> bool:
        self.tokens = self.level(now)
        self.stamp = now
        if self.tokens + 1e-9 >= cost:
            self.tokens = max(0.0, self.tokens - cost)
            return True
        return False


class RealismState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rng = random.Random(0)
        self.manual_time = 0.0
        self.manual = False
        self.buckets: dict[tuple, TokenBucket] = {}
        self.bucket_config: str | None = None
        self.reset_stats()

    # clock ---------------------------------------------------------------------------
    def now(self) -> float:
        return self.manual_time if self.manual else time.monotonic()

    def set_manual(self, manual: bool) -> None:
        if manual != self.manual:
            # Levels were computed on the other timeline: start full on the new one.
            self.manual = manual
            self.buckets.clear()

    # randomness ------------------------------------------------------------------------
    def reseed(self, seed: int) -> None:
        with self.lock:
            self.rng = random.Random(seed)

    # counters --------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.since = time.time()
        self.services: dict[str, dict[str, Any]] = {}
        self.by_code: dict[str, int] = {}
        self.sleeping = 0
        self.max_sleeping = 0
        self.log: collections.deque[dict] = collections.deque(maxlen=REQUEST_LOG_MAX)

    def log_request(self, req: awsreq.AwsRequest, start: float, status: int, spend: list) -> None:
        entry = {"start": start, "end": time.time(), "service": req.service,
                 "operation": req.operation or "?", "account": req.account,
                 "region": req.region, "dry_run": req.dry_run, "status": status,
                 "buckets": [[key[3], size, rate, cost] for key, size, rate, cost in spend]}
        if req.service == "s3":
            entry["bucket"], entry["key"] = req.bucket, req.key  # which object (None: bucket-level)
        with self.lock:
            self.log.append(entry)

    def _entry(self, service: str, operation: str) -> tuple[dict, dict]:
        svc = self.services.setdefault(service, {"requests": 0, "throttled": 0, "slept_s": 0.0,
                                                 "actions": {}})
        act = svc["actions"].setdefault(operation or "?", {"requests": 0, "throttled": 0,
                                                           "slept_s": 0.0})
        return svc, act

    def count_request(self, service: str, operation: str) -> None:
        with self.lock:
            for e in self._entry(service, operation):
                e["requests"] += 1

    def count_sleep(self, service: str, operation: str, seconds: float) -> None:
        with self.lock:
            for e in self._entry(service, operation):
                e["slept_s"] += seconds

    def count_throttle(self, service: str, operation: str, code: str) -> None:
        with self.lock:
            for e in self._entry(service, operation):
                e["throttled"] += 1
            self.by_code[code] = self.by_code.get(code, 0) + 1

    def stats(self) -> dict:
        with self.lock:
            services = {}
            for name, svc in sorted(self.services.items()):
                services[name] = {
                    "requests": svc["requests"], "throttled": svc["throttled"],
                    "slept_s": round(svc["slept_s"], 6),
                    "actions": {a: {"requests": e["requests"], "throttled": e["throttled"],
                                    "slept_s": round(e["slept_s"], 6)}
                                for a, e in sorted(svc["actions"].items())},
                }
            return {
                "since": self.since,
                "requests": sum(s["requests"] for s in services.values()),
                "throttled": sum(s["throttled"] for s in services.values()),
                "slept_s": round(sum(s["slept_s"] for s in services.values()), 6),
                "throttled_by_code": dict(sorted(self.by_code.items())),
                "max_concurrent_delayed": self.max_sleeping,
                "services": services,
            }


_state = RealismState()


# ---------------------------------------------------------------------------------------
# Decisions (pure given the options and the request)


def ec2_is_filtered(req: awsreq.AwsRequest) -> bool:
    """Filter.N or pagination (MaxResults/NextToken) moves the seven big Describe calls to
    the larger non-mutating bucket. Ids (InstanceId.N) are not a filter in the page's terms."""
    return any(k.startswith("Filter.") or k in ("MaxResults", "NextToken") for k in req.params)


def ec2_request_bucket(action: str, filtered: bool, overrides: dict) -> tuple[str, str, float, float]:
    """(bucket name, category, size, rate) of an EC2 action's request bucket."""
    if action in EC2_UNCATEGORIZED:
        category, (size, rate) = "uncategorized", EC2_UNCATEGORIZED[action]
    elif action in EC2_UNFILTERED and not filtered:
        category = "unfiltered_unpaginated"
        size, rate = EC2_CATEGORIES[category]
    elif action in EC2_RESOURCE_INTENSIVE:
        category = "resource_intensive"
        size, rate = EC2_CATEGORIES[category]
    elif action.startswith(EC2_NON_MUTATING_PREFIXES):
        category = "non_mutating"
        size, rate = EC2_CATEGORIES[category]
    else:
        category = "mutating"
        size, rate = EC2_CATEGORIES[category]
    name = action + ("#unfiltered" if category == "unfiltered_unpaginated" else "")
    if action in overrides:
        size, rate = overrides[action]
    elif category in overrides:
        size, rate = overrides[category]
    return name, category, size, rate


def ec2_resource_cost(req: awsreq.AwsRequest) -> int:
    if req.operation == "RunInstances":
        try:
            return max(1, int(req.params.get("MaxCount") or req.params.get("MinCount") or 1))
        except ValueError:
            return 1
    return max(1, len(req.param_list("InstanceId")))


def _buckets_to_spend(req: awsreq.AwsRequest, opts: dict) -> list[tuple[tuple, float, float, float]]:
    """[(bucket key, size, rate, cost)] this request spends from, in order."""
    out = []
    if req.service == "ec2" and opts.get("ec2_throttle"):
        overrides = opts.get("ec2_buckets") or {}
        name, _cat, size, rate = ec2_request_bucket(req.operation, ec2_is_filtered(req), overrides)
        out.append(((req.account, req.region, "ec2", name), size, rate, 1))
        if req.operation in EC2_RESOURCE_BUCKETS and not req.dry_run:
            size, rate = overrides.get("resource:" + req.operation,
                                       EC2_RESOURCE_BUCKETS[req.operation])
            out.append(((req.account, req.region, "ec2", "resource:" + req.operation),
                        size, rate, ec2_resource_cost(req)))
    elif req.service in SERVICE_THROTTLE_ERRORS:
        buckets = opts.get("service_buckets") or {}
        region = "global" if req.service in GLOBAL_SERVICES else req.region
        action_key = f"{req.service}:{req.operation}"
        if action_key in buckets:
            size, rate = buckets[action_key]
            out.append(((req.account, region, req.service, action_key), size, rate, 1))
        elif req.service in buckets:
            size, rate = buckets[req.service]
            out.append(((req.account, region, req.service, req.service), size, rate, 1))
    return out


def sample_latency_s(shape: dict, rng: random.Random) -> float:
    (kind, args), = shape.items()
    if kind == "fixed":
        ms = float(args)
    elif kind == "uniform":
        ms = rng.uniform(float(args[0]), float(args[1]))
    else:
        ms = max(0.0, rng.gauss(float(args[0]), float(args[1])))
    return ms / 1000.0


# ---------------------------------------------------------------------------------------
# Middleware


def _throttle(req: awsreq.AwsRequest, opts: dict) -> tuple[int, str, str] | None:
    if req.service == "s3":
        rate = float(opts.get("s3_slowdown_rate") or 0.0)
        if rate > 0:
            with _state.lock:
                hit = _state.rng.random() < rate
            if hit:
                return S3_SLOWDOWN_ERROR
        return None
    spend = _buckets_to_spend(req, opts)
    if not spend:
        return None
    config = repr((opts.get("ec2_throttle"), opts.get("ec2_buckets"), opts.get("service_buckets")))
    with _state.lock:
        _state.set_manual(bool(opts.get("realism_manual_clock")))
        if config != _state.bucket_config:
            _state.buckets.clear()  # new sizes: every bucket starts full again
            _state.bucket_config = config
        now = _state.now()
        for key, size, rate, cost in spend:
            bucket = _state.buckets.get(key)
            if bucket is None or (bucket.size, bucket.rate) != (size, rate):
                bucket = _state.buckets[key] = TokenBucket(size, rate, now)
            if not bucket.take(cost, now):
                return EC2_THROTTLE_ERROR if req.service == "ec2" else SERVICE_THROTTLE_ERRORS[req.service]
    return None


def middleware(app: Callable) -> Callable:
    def realism(environ: dict, start_response: Callable):
        req = awsreq.parse(environ)
        if req is None:
            return app(environ, start_response)
        opts = _ctx.options if _ctx is not None else OPTION_DEFAULTS
        started = time.time()
        _state.count_request(req.service, req.operation)
        shape = opts.get("latency_ms") or {"fixed": 0}
        with _state.lock:
            delay = sample_latency_s(shape, _state.rng)
        if delay > 0:
            with _state.lock:
                _state.sleeping += 1
                _state.max_sleeping = max(_state.max_sleeping, _state.sleeping)
            try:
                time.sleep(delay)
            finally:
                with _state.lock:
                    _state.sleeping -= 1
            _state.count_sleep(req.service, req.operation, delay)
        refused = _throttle(req, opts)
        if refused is not None:
            status, code, message = refused
            _state.count_throttle(req.service, req.operation, code)
            _state.log_request(req, started, status, _buckets_to_spend(req, opts))
            return awsreq.send_error(environ, start_response, req, status, code, message)
        seen: list[int] = []

        def recording(status: str, headers, exc_info=None):
            seen.append(int(status.split(" ", 1)[0]))
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            return app(environ, recording)
        finally:
            _state.log_request(req, started, seen[-1] if seen else 500, _buckets_to_spend(req, opts))

    return realism


# ---------------------------------------------------------------------------------------
# Routes


@admin.route("GET", r"/_lab/realism/stats")
def _get_stats(req: admin.AdminRequest):
    return 200, _state.stats()


@admin.route("GET", r"/_lab/realism/log")
def _get_log(req: admin.AdminRequest):
    with _state.lock:
        return 200, {"requests": list(_state.log)}


@admin.route("POST", r"/_lab/realism/stats/reset")
def _reset_stats(req: admin.AdminRequest):
    with _state.lock:
        _state.reset_stats()
    return 200, {"ok": True}


@admin.route("GET", r"/_lab/realism/buckets")
def _get_buckets(req: admin.AdminRequest):
    with _state.lock:
        now = _state.now()
        levels = [{"account": k[0], "region": k[1], "service": k[2], "bucket": k[3],
                   "size": b.size, "refill_per_s": b.rate, "tokens": round(b.level(now), 6)}
                  for k, b in sorted(_state.buckets.items())]
        clock = {"manual": _state.manual, "now": now}
    return 200, {"source": EC2_THROTTLING_DOC, "clock": clock, "buckets": levels,
                 "ec2_defaults": {"categories": EC2_CATEGORIES,
                                  "unfiltered_unpaginated_actions": sorted(EC2_UNFILTERED),
                                  "resource_intensive_actions": sorted(EC2_RESOURCE_INTENSIVE),
                                  "uncategorized": EC2_UNCATEGORIZED,
                                  "resource_buckets": EC2_RESOURCE_BUCKETS}}


@admin.route("POST", r"/_lab/realism/buckets/reset")
def _reset_buckets(req: admin.AdminRequest):
    with _state.lock:
        _state.buckets.clear()
    return 200, {"ok": True}


@admin.route("POST", r"/_lab/realism/clock")
def _advance_clock(req: admin.AdminRequest):
    body = req.json() or {}
    if not isinstance(body, dict) or set(body) != {"advance_seconds"}:
        raise admin.AdminError(400, 'body must be {"advance_seconds": <number >= 0>}')
    seconds = _number(body["advance_seconds"], "advance_seconds")
    with _state.lock:
        if not req.ctx.options.get("realism_manual_clock"):
            raise admin.AdminError(409, "the clock is real; set realism_manual_clock true first")
        _state.set_manual(True)
        _state.manual_time += seconds
        now = _state.manual_time
    return 200, {"now": now}


def reset() -> None:
    with _state.lock:
        _state.buckets.clear()
        _state.reset_stats()


def install(ctx) -> None:
    global _ctx
    from labext import LabExtensionError

    try:
        option_checks.validate_preset(ctx.options, list(OPTION_DEFAULTS), validate)
    except ValueError as e:
        raise LabExtensionError(f"realism: {e}") from None
    for key, default in OPTION_DEFAULTS.items():
        ctx.options.setdefault(key, default)
    _state.reseed(int(ctx.options["realism_seed"]))
    option_checks.add_validator(validate)
    admin.add_middleware(middleware)
    _ctx = ctx
