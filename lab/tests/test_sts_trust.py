"""sts_trust: AssumeRole fails with AccessDenied unless the role exists and trusts the caller."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from conftest import DEFAULT_ACCOUNT, random_account


def trust(*principals, condition=None, effect="Allow", action="sts:AssumeRole", extra=()):
    stmt = {"Effect": effect, "Principal": {"AWS": list(principals)}, "Action": action}
    if condition:
        stmt["Condition"] = condition
    return {"Version": "2012-10-17", "Statement": [stmt, *extra]}


def make_role(lab, account, name, doc, **kw):
    iam = lab.client("iam", account=account)
    return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(doc), **kw)["Role"]["Arn"]


def assume(client, arn, **kw):
    return client.assume_role(RoleArn=arn, RoleSessionName="probe", **kw)


def denied(excinfo):
    err = excinfo.value.response
    return err["Error"]["Code"] == "AccessDenied" and err["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_stock_moto_assumes_a_role_that_does_not_exist(stock_lab, fresh_account):
    creds = stock_lab.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{fresh_account}:role/NoSuchRole", RoleSessionName="stock")
    assert creds["Credentials"]["AccessKeyId"]


def test_stock_moto_ignores_the_trust_policy(stock_lab, fresh_account):
    arn = make_role(stock_lab, fresh_account, "TrustsNobodyHere", trust("arn:aws:iam::999999999999:root"))
    assert assume(stock_lab.client("sts"), arn)["Credentials"]["AccessKeyId"]


def test_missing_role_is_access_denied(lab, fresh_account):
    arn = f"arn:aws:iam::{fresh_account}:role/NoSuchRole"
    with pytest.raises(ClientError) as e:
        assume(lab.client("sts"), arn)
    assert denied(e)
    msg = e.value.response["Error"]["Message"]
    assert "is not authorized to perform: sts:AssumeRole on resource: " + arn in msg
    assert f"arn:aws:iam::{DEFAULT_ACCOUNT}:root" in msg or DEFAULT_ACCOUNT in msg


def test_role_trusting_another_account_is_access_denied(lab, fresh_account):
    arn = make_role(lab, fresh_account, "Other", trust("999999999999"))
    with pytest.raises(ClientError) as e:
        assume(lab.client("sts"), arn)
    assert denied(e)


@pytest.mark.parametrize("principal", [DEFAULT_ACCOUNT, f"arn:aws:iam::{DEFAULT_ACCOUNT}:root", "*"])
def test_account_root_and_star_principals_admit_the_default_account(lab, fresh_account, principal):
    arn = make_role(lab, fresh_account, "Forensics", trust(principal))
    got = assume(lab.client("sts"), arn)
    assert got["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{fresh_account}:assumed-role/Forensics/probe"
    c = got["Credentials"]
    sts2 = lab.raw_client("sts", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    assert sts2.get_caller_identity()["Account"] == fresh_account


def test_role_principal_admits_only_sessions_of_that_role(lab, fresh_account):
    src = random_account()
    # Two roles in the source account; only one is trusted by the target role.
    lab.admin_ok("PUT", f"/_lab/accounts/{src}/roles/Responder")
    lab.admin_ok("PUT", f"/_lab/accounts/{src}/roles/Intern")
    target = make_role(lab, fresh_account, "Target",
                       trust(f"arn:aws:iam::{src}:role/Responder"))
    sts = lab.client("sts")

    def session_client(name):
        c = assume(sts, f"arn:aws:iam::{src}:role/{name}")["Credentials"]
        return lab.raw_client("sts", c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])

    ok = assume(session_client("Responder"), target)
    assert ok["AssumedRoleUser"]["Arn"].startswith(f"arn:aws:sts::{fresh_account}:assumed-role/Target/")
    with pytest.raises(ClientError) as e:
        assume(session_client("Intern"), target)
    assert denied(e)
    assert f"arn:aws:sts::{src}:assumed-role/Intern/probe" in e.value.response["Error"]["Message"]
    # The default account is not the trusted role either.
    with pytest.raises(ClientError) as e:
        assume(sts, target)
    assert denied(e)


def test_user_principal(lab, fresh_account):
    iam = lab.client("iam")
    user = f"resp-{fresh_account}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    other = f"other-{fresh_account}"
    iam.create_user(UserName=other)
    key2 = iam.create_access_key(UserName=other)["AccessKey"]
    arn = make_role(lab, fresh_account, "UserTrust",
                    trust(f"arn:aws:iam::{DEFAULT_ACCOUNT}:user/{user}"))
    sts_user = lab.raw_client("sts", key["AccessKeyId"], key["SecretAccessKey"])
    assert assume(sts_user, arn)["Credentials"]["AccessKeyId"]
    with pytest.raises(ClientError) as e:
        assume(lab.raw_client("sts", key2["AccessKeyId"], key2["SecretAccessKey"]), arn)
    assert denied(e)


def test_external_id_condition(lab, fresh_account):
    arn = make_role(lab, fresh_account, "WithExternalId",
                    trust(DEFAULT_ACCOUNT, condition={"StringEquals": {"sts:ExternalId": "case-42"}}))
    sts = lab.client("sts")
    with pytest.raises(ClientError) as e:
        assume(sts, arn)
    assert denied(e)
    with pytest.raises(ClientError) as e:
        assume(sts, arn, ExternalId="case-41")
    assert denied(e)
    assert assume(sts, arn, ExternalId="case-42")["Credentials"]["AccessKeyId"]


def test_explicit_deny_wins(lab, fresh_account):
    doc = trust("*", extra=[{"Effect": "Deny", "Principal": {"AWS": DEFAULT_ACCOUNT},
                             "Action": "sts:*"}])
    arn = make_role(lab, fresh_account, "DenyDefault", doc)
    with pytest.raises(ClientError) as e:
        assume(lab.client("sts"), arn)
    assert denied(e)


def test_service_principal_does_not_admit_an_account(lab, fresh_account):
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    arn = make_role(lab, fresh_account, "Ec2Only", doc)
    with pytest.raises(ClientError) as e:
        assume(lab.client("sts"), arn)
    assert denied(e)


def test_action_must_cover_assume_role(lab, fresh_account):
    arn = make_role(lab, fresh_account, "TagOnly", trust(DEFAULT_ACCOUNT, action="sts:TagSession"))
    with pytest.raises(ClientError) as e:
        assume(lab.client("sts"), arn)
    assert denied(e)


def test_role_with_path(lab, fresh_account):
    arn = make_role(lab, fresh_account, "Pathed", trust(DEFAULT_ACCOUNT), Path="/forensics/")
    assert arn == f"arn:aws:iam::{fresh_account}:role/forensics/Pathed"
    assert assume(lab.client("sts"), arn)["Credentials"]["AccessKeyId"]
    with pytest.raises(ClientError) as e:  # the ARN without the path names no role
        assume(lab.client("sts"), f"arn:aws:iam::{fresh_account}:role/Pathed")
    assert denied(e)


def test_duration_above_max_session_duration_is_rejected(lab, fresh_account):
    arn = make_role(lab, fresh_account, "Short", trust(DEFAULT_ACCOUNT))
    with pytest.raises(ClientError) as e:
        assume(lab.client("sts"), arn, DurationSeconds=7200)
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert assume(lab.client("sts"), arn, DurationSeconds=3600)


def test_role_deleted_then_assume_is_denied(lab, fresh_account):
    arn = make_role(lab, fresh_account, "Gone", trust(DEFAULT_ACCOUNT))
    assert assume(lab.client("sts"), arn)
    lab.client("iam", account=fresh_account).delete_role(RoleName="Gone")
    with pytest.raises(ClientError) as e:
        assume(lab.client("sts"), arn)
    assert denied(e)
