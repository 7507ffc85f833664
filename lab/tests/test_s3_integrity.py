"""s3_integrity: checksums (headers and aws-chunked trailers), multipart composite checksums,
Object Lock COMPLIANCE/GOVERNANCE retention, versioning on lock buckets, conditional writes."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import uuid
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import crc32c
import pytest
import requests
from botocore.exceptions import ClientError

from conftest import DEFAULT_ACCOUNT

MiB = 1024 * 1024


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def sha256_b64(data: bytes) -> str:
    return b64(hashlib.sha256(data).digest())


def crc32_b64(data: bytes) -> str:
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def digests(data: bytes) -> dict[str, str]:
    return {
        "CRC32": crc32_b64(data),
        "CRC32C": b64(crc32c.crc32c(data).to_bytes(4, "big")),
        "SHA1": b64(hashlib.sha1(data).digest()),
        "SHA256": sha256_b64(data),
    }


def new_bucket(s3, **kw) -> str:
    name = f"lab-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name, **kw)
    return name


def code(e) -> tuple[str, int]:
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]


def exists(s3, bucket, key) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError:
        return False


def force_trailer(client):
    """Make botocore send its checksum as an aws-chunked trailer over http (it does so by
    default only over https), the way the Rust SDK and boto3-on-AWS do."""
    def handler(params, context, **_):
        algorithm = context.get("checksum", {}).get("request_algorithm")
        if isinstance(algorithm, dict):
            algorithm["in"] = "trailer"
    client.meta.events.register("before-call.s3.*", handler)
    seen = []
    client.meta.events.register("before-send.s3.*", lambda request, **_: seen.append(dict(request.headers)))
    return seen


def aws_chunked(data: bytes, trailers: dict[str, str], chunk: int = 64 * 1024, signed: bool = False) -> bytes:
    out = bytearray()
    for i in range(0, len(data), chunk):
        piece = data[i:i + chunk]
        ext = b";chunk-signature=" + b"0" * 64 if signed else b""
        out += b"%x" % len(piece) + ext + b"\r\n" + piece + b"\r\n"
    out += b"0" + (b";chunk-signature=" + b"0" * 64 if signed else b"") + b"\r\n"
    for k, v in trailers.items():
        out += f"{k}:{v}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def raw_put(lab, bucket, key, body: bytes, headers: dict[str, str]) -> requests.Response:
    """A hand-built S3 PUT, as the Rust SDK sends aws-chunked: Content-Length of the encoded
    body, no Transfer-Encoding. moto does not check signatures; the credential scope routes it."""
    h = {"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
                          "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
         "x-amz-date": "20260101T000000Z"}
    h.update(headers)
    return lab.http.put(f"{lab.url}/{bucket}/{key}", data=body, headers=h)


def chunked_headers(decoded_len: int, trailer: str, algo: str) -> dict[str, str]:
    return {"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "Content-Encoding": "aws-chunked", "x-amz-trailer": trailer,
            "x-amz-decoded-content-length": str(decoded_len), "x-amz-sdk-checksum-algorithm": algo}


# ---------------------------------------------------------------------------------------
# Stock defects


def test_stock_accepts_a_wrong_checksum_header(stock_lab, fresh_account):
    s3 = stock_lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    s3.put_object(Bucket=b, Key="k", Body=b"evidence", ChecksumSHA256=sha256_b64(b"other"))
    assert exists(s3, b, "k")


def test_stock_accepts_a_wrong_content_md5(stock_lab, fresh_account):
    s3 = stock_lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    s3.put_object(Bucket=b, Key="k", Body=b"evidence", ContentMD5=b64(hashlib.md5(b"x").digest()))
    assert exists(s3, b, "k")


def test_stock_accepts_a_wrong_trailer(stock_lab):
    s3 = stock_lab.client("s3")
    b = new_bucket(s3)
    body = os.urandom(100_000)
    r = raw_put(stock_lab, b, "k", aws_chunked(body, {"x-amz-checksum-crc32": crc32_b64(b"nope")}),
                chunked_headers(len(body), "x-amz-checksum-crc32", "CRC32"))
    assert r.status_code == 200
    # The wrong checksum was stored: a client that validates on download now fails.
    head = s3.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(b"nope") != crc32_b64(body)


# ---------------------------------------------------------------------------------------
# Checksum headers


def test_default_boto3_put_stores_crc32(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    put = s3.put_object(Bucket=b, Key="k", Body=b"hello")
    assert put["ChecksumCRC32"] == crc32_b64(b"hello")
    head = s3.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(b"hello")
    assert head["ChecksumType"] == "FULL_OBJECT"


@pytest.mark.parametrize("algo", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_wrong_checksum_header_is_bad_digest(lab, fresh_account, algo):
    s3 = lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=b, Key="k", Body=b"evidence", **{f"Checksum{algo}": digests(b"other")[algo]})
    assert code(e) == ("BadDigest", 400)
    assert e.value.response["Error"]["Message"] == f"The {algo} you specified did not match the calculated checksum."
    assert not exists(s3, b, "k")


@pytest.mark.parametrize("algo", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_right_checksum_header_is_stored_and_returned(lab, fresh_account, algo):
    s3 = lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    data = os.urandom(3000)
    want = digests(data)[algo]
    s3.put_object(Bucket=b, Key="k", Body=data, **{f"Checksum{algo}": want})
    assert s3.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")[f"Checksum{algo}"] == want
    got = s3.get_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
    assert got[f"Checksum{algo}"] == want and got["Body"].read() == data
    attrs = s3.get_object_attributes(Bucket=b, Key="k", ObjectAttributes=["Checksum", "ObjectSize"])
    assert attrs["Checksum"] == {f"Checksum{algo}": want, "ChecksumType": "FULL_OBJECT"}
    assert attrs["ObjectSize"] == 3000


def test_content_md5_checked(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=b, Key="k", Body=b"evidence", ContentMD5=b64(hashlib.md5(b"x").digest()))
    assert code(e) == ("BadDigest", 400)
    assert "Content-MD5" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=b, Key="k", Body=b"evidence", ContentMD5="not-base64!")
    assert code(e) == ("InvalidDigest", 400)
    assert not exists(s3, b, "k")
    s3.put_object(Bucket=b, Key="k", Body=b"evidence", ContentMD5=b64(hashlib.md5(b"evidence").digest()))
    assert exists(s3, b, "k")


def test_malformed_and_multiple_checksums_are_invalid_request(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    r = raw_put(lab, b, "k", b"data", {"x-amz-checksum-sha256": "AAAA"})
    assert r.status_code == 400 and b"<Code>InvalidRequest</Code>" in r.content
    assert b"x-amz-checksum-sha256" in r.content
    r = raw_put(lab, b, "k", b"data", {"x-amz-checksum-sha256": sha256_b64(b"data"),
                                       "x-amz-checksum-crc32": crc32_b64(b"data")})
    assert r.status_code == 400 and b"Multiple checksum" in r.content
    assert not exists(s3, b, "k")


def test_crc64nvme(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    data = b"123456789"
    good = b64((0xAE8B14860A799888).to_bytes(8, "big"))
    assert raw_put(lab, b, "k", data, {"x-amz-checksum-crc64nvme": good}).status_code == 200
    bad = b64((0xAE8B14860A799889).to_bytes(8, "big"))
    r = raw_put(lab, b, "k2", data, {"x-amz-checksum-crc64nvme": bad})
    assert r.status_code == 400 and b"The CRC64NVME you specified" in r.content
    assert s3.head_object(Bucket=b, Key="k", ChecksumMode="ENABLED")["ChecksumCRC64NVME"] == good


# ---------------------------------------------------------------------------------------
# aws-chunked trailers


@pytest.mark.parametrize("algo", ["CRC32", "SHA1", "SHA256"])  # botocore needs awscrt for CRC32C
def test_boto3_trailer_checksum_is_validated_and_stored(lab, fresh_account, algo):
    s3 = lab.client("s3", account=fresh_account)
    sent = force_trailer(s3)
    b = new_bucket(s3)
    data = os.urandom(300_000)
    put = s3.put_object(Bucket=b, Key="k", Body=data, ChecksumAlgorithm=algo)
    assert sent[-1]["X-Amz-Content-SHA256"] == b"STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert sent[-1]["X-Amz-Trailer"] == f"x-amz-checksum-{algo.lower()}".encode()
    assert put[f"Checksum{algo}"] == digests(data)[algo]
    got = s3.get_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got[f"Checksum{algo}"] == digests(data)[algo]


@pytest.mark.parametrize("signed", [False, True])
def test_wrong_trailer_is_bad_digest(lab, signed):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    body = os.urandom(200_000)
    headers = chunked_headers(len(body), "x-amz-checksum-crc32", "CRC32")
    if signed:
        headers["x-amz-content-sha256"] = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
    r = raw_put(lab, b, "k", aws_chunked(body, {"x-amz-checksum-crc32": crc32_b64(b"nope")}, signed=signed), headers)
    assert r.status_code == 400, r.text
    assert b"<Code>BadDigest</Code>" in r.content and b"The CRC32 you specified" in r.content
    assert not exists(s3, b, "k")
    r = raw_put(lab, b, "k", aws_chunked(body, {"x-amz-checksum-crc32": crc32_b64(body)}, signed=signed), headers)
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=b, Key="k", ChecksumMode="ENABLED")
    assert got["Body"].read() == body and got["ChecksumCRC32"] == crc32_b64(body)


def test_decoded_length_mismatch_and_missing_trailer(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    body = b"x" * 1000
    r = raw_put(lab, b, "k", aws_chunked(body, {"x-amz-checksum-crc32": crc32_b64(body)}),
                chunked_headers(999, "x-amz-checksum-crc32", "CRC32"))
    assert r.status_code == 400 and b"IncompleteBody" in r.content
    r = raw_put(lab, b, "k", aws_chunked(body, {}), chunked_headers(1000, "x-amz-checksum-crc32", "CRC32"))
    assert r.status_code == 400 and b"MalformedTrailerError" in r.content
    assert not exists(s3, b, "k")


def test_object_lock_put_needs_an_integrity_header(lab, stock_lab):
    until = datetime.now(timezone.utc) + timedelta(days=1)
    stock = stock_lab.client("s3", request_checksum_calculation="when_required")
    b = new_bucket(stock, ObjectLockEnabledForBucket=True)
    with pytest.raises(ClientError) as e:
        stock.put_object(Bucket=b, Key="k", Body=b"e", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    assert code(e)[0] == "MissingUploadObjectWithObjectLockHeaders"  # not an S3 error code

    s3 = lab.client("s3", request_checksum_calculation="when_required")
    b = new_bucket(s3, ObjectLockEnabledForBucket=True)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=b, Key="k", Body=b"e", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    assert code(e) == ("InvalidRequest", 400)
    assert e.value.response["Error"]["Message"] == (
        "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters")
    # With the SDK's default checksum, or an MD5, it is accepted.
    s3.put_object(Bucket=b, Key="k", Body=b"e", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until,
                  ContentMD5=b64(hashlib.md5(b"e").digest()))
    lab.client("s3").put_object(Bucket=b, Key="k", Body=b"e", ObjectLockMode="GOVERNANCE",
                                ObjectLockRetainUntilDate=until)


def test_default_retention_bucket_needs_an_integrity_header_on_every_put(lab):
    s3 = lab.client("s3", request_checksum_calculation="when_required")
    b = new_bucket(s3, ObjectLockEnabledForBucket=True)
    lab.client("s3").put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=b, Key="plain", Body=b"x")
    assert code(e) == ("InvalidRequest", 400)
    up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=b"x")
    assert code(e) == ("InvalidRequest", 400)
    assert "Put Part requests" in e.value.response["Error"]["Message"]
    lab.client("s3").put_object(Bucket=b, Key="plain", Body=b"x")  # default CRC32: fine
    got = s3.get_object_retention(Bucket=b, Key="plain")["Retention"]
    assert got["Mode"] == "COMPLIANCE"


# ---------------------------------------------------------------------------------------
# Multipart


def multipart(s3, bucket, key, parts: list[bytes], algo="SHA256", complete=True, **complete_kw):
    up = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm=algo)["UploadId"]
    done = []
    for i, data in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=i, Body=data, ChecksumAlgorithm=algo)
        done.append({"PartNumber": i, "ETag": r["ETag"], f"Checksum{algo}": r[f"Checksum{algo}"]})
    if not complete:
        return up, done
    return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up,
                                        MultipartUpload={"Parts": done}, **complete_kw)


def composite_sha256(parts):
    return sha256_b64(b"".join(hashlib.sha256(p).digest() for p in parts))


def test_multipart_composite_checksum_everywhere(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    parts = [os.urandom(5 * MiB), os.urandom(1234)]
    want = composite_sha256(parts)
    done = multipart(s3, b, "img", parts)
    assert done["ChecksumSHA256"] == f"{want}-2" and done["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=b, Key="img", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == f"{want}-2" and head["ChecksumType"] == "COMPOSITE"
    got = s3.get_object(Bucket=b, Key="img", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == f"{want}-2"
    assert hashlib.sha256(got["Body"].read()).hexdigest() == hashlib.sha256(b"".join(parts)).hexdigest()
    attrs = s3.get_object_attributes(Bucket=b, Key="img", ObjectAttributes=["Checksum", "ObjectParts", "ETag"])
    assert attrs["Checksum"] == {"ChecksumSHA256": want, "ChecksumType": "COMPOSITE"}
    op = attrs["ObjectParts"]
    assert op["TotalPartsCount"] == 2 and op["IsTruncated"] is False
    assert [(p["PartNumber"], p["Size"], p["ChecksumSHA256"]) for p in op["Parts"]] == [
        (1, 5 * MiB, sha256_b64(parts[0])), (2, 1234, sha256_b64(parts[1]))]
    assert attrs["ETag"].endswith("-2")


def test_stock_head_drops_the_part_count(stock_lab, fresh_account):
    s3 = stock_lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    parts = [os.urandom(5 * MiB), b"tail"]
    done = multipart(s3, b, "img", parts)
    assert "ChecksumSHA256" not in done
    head = s3.head_object(Bucket=b, Key="img", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == composite_sha256(parts)  # no "-2"


def test_upload_part_with_wrong_checksum_is_bad_digest(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    up = s3.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="SHA256")["UploadId"]
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=b"part", ChecksumSHA256=sha256_b64(b"x"))
    assert code(e) == ("BadDigest", 400)


def test_upload_part_without_the_uploads_algorithm_is_refused(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    up = s3.create_multipart_upload(Bucket=b, Key="k", ChecksumAlgorithm="SHA256")["UploadId"]
    with pytest.raises(ClientError) as e:  # boto3's default CRC32, not the upload's SHA256
        s3.upload_part(Bucket=b, Key="k", UploadId=up, PartNumber=1, Body=b"part")
    assert code(e) == ("InvalidRequest", 400)
    assert e.value.response["Error"]["Message"] == (
        "Checksum Type mismatch occurred, expected checksum Type: sha256, actual checksum Type: crc32")


def test_complete_checks_part_checksums(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    up, done = multipart(s3, b, "k", [os.urandom(5 * MiB), b"end"], complete=False)
    wrong = [dict(done[0]), dict(done[1], ChecksumSHA256=sha256_b64(b"other"))]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": wrong})
    assert code(e) == ("InvalidPart", 400)
    missing = [dict(done[0]), {k: v for k, v in done[1].items() if k != "ChecksumSHA256"}]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": missing})
    assert code(e) == ("InvalidRequest", 400)
    assert "must include the checksum for each part" in e.value.response["Error"]["Message"]
    assert not exists(s3, b, "k")
    s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=up, MultipartUpload={"Parts": done})
    assert exists(s3, b, "k")


def test_s3transfer_multipart_upload_round_trips(lab, fresh_account, tmp_path):
    from boto3.s3.transfer import TransferConfig

    s3 = lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    data = os.urandom(12 * MiB + 7)
    src = tmp_path / "disk.img"
    src.write_bytes(data)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=2)
    s3.upload_file(str(src), b, "disk.img", Config=cfg)
    dst = tmp_path / "back.img"
    s3.download_file(b, "disk.img", str(dst), Config=cfg)
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(data).digest()
    head = s3.head_object(Bucket=b, Key="disk.img", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')


def test_awscli_s3_cp_round_trips(lab, tmp_path):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    data = os.urandom(7 * MiB)
    (tmp_path / "out.txt").write_bytes(data)
    aws = str(Path(sys.executable).parent / "aws")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    for args in (["s3", "cp", str(tmp_path / "out.txt"), f"s3://{b}/ssm/out.txt"],
                 ["s3", "cp", f"s3://{b}/ssm/out.txt", str(tmp_path / "in.txt")]):
        p = subprocess.run([aws, "--endpoint-url", lab.url, *args], env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
    assert (tmp_path / "in.txt").read_bytes() == data


# ---------------------------------------------------------------------------------------
# Object Lock


def locked(s3, mode="COMPLIANCE", days=10):
    b = new_bucket(s3, ObjectLockEnabledForBucket=True)
    until = (datetime.now(timezone.utc) + timedelta(days=days)).replace(microsecond=0)
    v = s3.put_object(Bucket=b, Key="e", Body=b"evidence", ObjectLockMode=mode,
                      ObjectLockRetainUntilDate=until)["VersionId"]
    return b, v, until


def retention(s3, b, v, mode, until, **kw):
    r = {"Mode": mode, "RetainUntilDate": until} if mode else {}
    return s3.put_object_retention(Bucket=b, Key="e", VersionId=v, Retention=r, **kw)


def test_stock_lets_compliance_retention_be_shortened_and_removed(stock_lab, fresh_account):
    s3 = stock_lab.client("s3", account=fresh_account)
    b, v, until = locked(s3)
    retention(s3, b, v, "COMPLIANCE", until - timedelta(days=5))
    retention(s3, b, v, "GOVERNANCE", until)
    retention(s3, b, v, None, None)


@pytest.mark.parametrize("change", ["shorten", "governance", "remove"])
def test_compliance_retention_cannot_be_weakened(lab, fresh_account, change):
    s3 = lab.client("s3", account=fresh_account)
    b, v, until = locked(s3)
    mode, new = {"shorten": ("COMPLIANCE", until - timedelta(days=5)),
                 "governance": ("GOVERNANCE", until + timedelta(days=5)),
                 "remove": (None, None)}[change]
    with pytest.raises(ClientError) as e:
        retention(s3, b, v, mode, new, BypassGovernanceRetention=True)
    assert code(e) == ("AccessDenied", 403)
    got = s3.get_object_retention(Bucket=b, Key="e", VersionId=v)["Retention"]
    assert got["Mode"] == "COMPLIANCE" and got["RetainUntilDate"] == until


def test_compliance_retention_can_be_extended(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    b, v, until = locked(s3)
    later = until + timedelta(days=30)
    retention(s3, b, v, "COMPLIANCE", later)
    assert s3.get_object_retention(Bucket=b, Key="e", VersionId=v)["Retention"]["RetainUntilDate"] == later


def test_governance_needs_bypass_to_weaken(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    b, v, until = locked(s3, mode="GOVERNANCE")
    with pytest.raises(ClientError) as e:
        retention(s3, b, v, "GOVERNANCE", until - timedelta(days=1))
    assert code(e) == ("AccessDenied", 403)
    retention(s3, b, v, "GOVERNANCE", until - timedelta(days=1), BypassGovernanceRetention=True)
    retention(s3, b, v, "COMPLIANCE", until + timedelta(days=1))  # strengthening needs nothing
    assert s3.get_object_retention(Bucket=b, Key="e", VersionId=v)["Retention"]["Mode"] == "COMPLIANCE"


def test_retention_in_the_past_is_invalid(lab):
    s3 = lab.client("s3")
    b, v, until = locked(s3, mode="GOVERNANCE")
    with pytest.raises(ClientError) as e:
        retention(s3, b, v, "COMPLIANCE", datetime.now(timezone.utc) - timedelta(days=1))
    assert code(e) == ("InvalidArgument", 400)


def test_get_object_retention(lab, stock_lab):
    s3 = lab.client("s3")
    b, v, until = locked(s3)
    got = s3.get_object_retention(Bucket=b, Key="e", VersionId=v)["Retention"]
    assert got == {"Mode": "COMPLIANCE", "RetainUntilDate": until}
    s3.put_object(Bucket=b, Key="plain", Body=b"x")
    with pytest.raises(ClientError) as e:
        s3.get_object_retention(Bucket=b, Key="plain")
    assert code(e) == ("NoSuchObjectLockConfiguration", 404)
    stock = stock_lab.client("s3")
    b2, v2, _ = locked(stock)
    with pytest.raises(Exception):  # stock has no GetObjectRetention
        stock.get_object_retention(Bucket=b2, Key="e", VersionId=v2)["Retention"]


def test_locked_version_cannot_be_deleted(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    b, v, _ = locked(s3)
    for kw in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as e:
            s3.delete_object(Bucket=b, Key="e", VersionId=v, **kw)
        assert code(e) == ("AccessDenied", 403)
    errors = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "e", "VersionId": v}]})["Errors"]
    assert [x["Code"] for x in errors] == ["AccessDenied"]
    # A delete marker can be added; the version is still there and readable by id.
    assert s3.delete_object(Bucket=b, Key="e")["DeleteMarker"] is True
    assert s3.get_object(Bucket=b, Key="e", VersionId=v)["Body"].read() == b"evidence"


def test_legal_hold_blocks_delete(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3, ObjectLockEnabledForBucket=True)
    v = s3.put_object(Bucket=b, Key="e", Body=b"x", ObjectLockLegalHoldStatus="ON")["VersionId"]
    with pytest.raises(ClientError) as e:
        s3.delete_object(Bucket=b, Key="e", VersionId=v)
    assert code(e)[0] == "AccessDenied"


def test_versioning_cannot_be_suspended_on_lock_bucket(lab, stock_lab):
    s3 = lab.client("s3")
    b = new_bucket(s3, ObjectLockEnabledForBucket=True)
    with pytest.raises(ClientError) as e:
        s3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
    assert code(e) == ("InvalidBucketState", 409)
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    plain = new_bucket(s3)
    s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_versioning(Bucket=plain, VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket=plain)["Status"] == "Suspended"
    stock = stock_lab.client("s3")
    b2 = new_bucket(stock, ObjectLockEnabledForBucket=True)
    stock.put_bucket_versioning(Bucket=b2, VersioningConfiguration={"Status": "Suspended"})
    assert stock.get_bucket_versioning(Bucket=b2)["Status"] == "Suspended"


# ---------------------------------------------------------------------------------------
# Conditional writes


def test_if_none_match_star(lab, fresh_account):
    s3 = lab.client("s3", account=fresh_account)
    b = new_bucket(s3)
    s3.put_object(Bucket=b, Key="custody/000001.json", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=b, Key="custody/000001.json", Body=b"fork", IfNoneMatch="*")
    assert code(e) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=b, Key="custody/000001.json")["Body"].read() == b"first"


def test_complete_multipart_if_none_match(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    multipart(s3, b, "k", [b"only part"], IfNoneMatch="*")
    with pytest.raises(ClientError) as e:
        multipart(s3, b, "k", [b"second"], IfNoneMatch="*")
    assert code(e) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"only part"


def test_racing_conditional_writers_exactly_one_wins(lab):
    s3 = lab.client("s3")
    b = new_bucket(s3)
    writers = 8
    barrier = threading.Barrier(writers)
    results: list[str] = []
    clients = [lab.client("s3") for _ in range(writers)]

    def write(i):
        barrier.wait()
        try:
            clients[i].put_object(Bucket=b, Key="head", Body=f"writer {i}".encode(), IfNoneMatch="*")
            results.append("won")
        except ClientError as e:
            results.append(e.response["Error"]["Code"])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == ["PreconditionFailed"] * (writers - 1) + ["won"]


def test_listing_versions_does_not_copy_object_bodies(monkeypatch):
    """Stock deep-copied every body of the bucket per ListObjectVersions (27 s and tens of
    GB of temp files with two 1 GiB disk images); the patch lists without reading them."""
    import copy as copy_module

    from moto.s3.models import FakeKey, S3Backend

    from labext import s3_integrity

    monkeypatch.setattr(FakeKey, "__deepcopy__", s3_integrity._key_deepcopy, raising=False)
    monkeypatch.setattr(S3Backend, "list_object_versions",
                        s3_integrity._wrap_list_object_versions(S3Backend.list_object_versions))
    backend = S3Backend("eu-west-1", DEFAULT_ACCOUNT)
    backend.create_bucket("versions", "eu-west-1")
    backend.put_bucket_versioning("versions", "Enabled")
    backend.put_object("versions", "cases/C/evidence/image.raw", b"x" * 4096)
    backend.put_object("versions", "cases/C/custody/1.json", b"one")
    backend.put_object("versions", "cases/C/custody/1.json", b"one again")

    reads = []
    real_getstate = FakeKey.__getstate__
    monkeypatch.setattr(FakeKey, "__getstate__", lambda self: reads.append(self.name) or real_getstate(self))
    versions, _, _, _, _ = backend.list_object_versions("versions", prefix="cases/C/custody/")
    assert reads == [], "a listing read object bodies"
    assert [(v.name, v.is_latest) for v in versions] == [
        ("cases/C/custody/1.json", True), ("cases/C/custody/1.json", False)]
    assert sorted(v.value for v in versions) == [b"one", b"one again"]
    # The listed copies share the stored bodies, and dropping them must not close those.
    del versions
    import gc
    gc.collect()
    assert backend.get_object("versions", "cases/C/custody/1.json").value == b"one again"

    # Outside a listing a deep copy is stock: its own body.
    key = backend.get_object("versions", "cases/C/evidence/image.raw")
    twin = copy_module.deepcopy(key)
    assert twin.value == key.value and twin._value_buffer is not key._value_buffer
