"""s3_wire: S3 answers with the root elements the AWS SDK for Rust checks.

boto3 ignores the root element name, so these tests read the raw XML of the response the
way a strict client does.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import requests

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# moto accepts any SigV4-shaped header; the account is the default one.
AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
                         "SignedHeaders=host, Signature=0"}


def _bucket_with_object(lab) -> str:
    s3 = lab.client("s3")
    bucket = f"wire-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="k", Body=b"evidence")
    return bucket


def _root(url: str, headers: dict[str, str] | None = None) -> str:
    resp = requests.get(url, headers={**AUTH, **(headers or {})}, timeout=30)
    assert resp.status_code == 200, resp.text
    return ET.fromstring(resp.content).tag.removeprefix(NS)


def test_get_bucket_versioning_root_is_versioning_configuration(lab):
    bucket = _bucket_with_object(lab)
    assert _root(f"{lab.url}/{bucket}?versioning") == "VersioningConfiguration"


def test_get_object_attributes_root_is_the_response_element(lab):
    bucket = _bucket_with_object(lab)
    root = _root(f"{lab.url}/{bucket}/k?attributes", {"x-amz-object-attributes": "ETag,ObjectSize"})
    assert root == "GetObjectAttributesResponse"


def test_stock_moto_names_the_roots_after_the_operation(stock_lab):
    bucket = _bucket_with_object(stock_lab)
    assert _root(f"{stock_lab.url}/{bucket}?versioning") == "GetBucketVersioningResponse"
    root = _root(f"{stock_lab.url}/{bucket}/k?attributes", {"x-amz-object-attributes": "ETag"})
    assert root == "GetObjectAttributesOutput"
