"""s3_wire: S3 response root elements the AWS SDK for Rust checks strictly.

moto 5.2.5 serialises some restXml outputs that have no payload member with a root named
after the operation (``<GetBucketVersioningResponse>``, ``<GetObjectAttributesOutput>``).
Real S3 answers ``<VersioningConfiguration>`` and ``<GetObjectAttributesResponse>``;
boto3 ignores the root name, the Rust SDK refuses the response ("unrecognised response"
with HTTP 200). This extension renames the root so the lab answers as S3 does.
"""

from __future__ import annotations

from moto.s3.responses import S3Response

# operation method on S3Response -> (root moto writes, root S3 writes)
RENAMES = {
    "get_bucket_versioning": ("GetBucketVersioningResponse", "VersioningConfiguration"),
    "get_object_attributes": ("GetObjectAttributesOutput", "GetObjectAttributesResponse"),
}

_installed = False


def _rename(method, wrong: str, right: str):
    def patched(self, *args, **kwargs):
        result = method(self, *args, **kwargs)
        status, headers, body = result
        if isinstance(body, bytes):
            body = body.replace(f"<{wrong}".encode(), f"<{right}".encode(), 1)
            body = body.replace(f"</{wrong}>".encode(), f"</{right}>".encode(), 1)
        elif isinstance(body, str):
            body = body.replace(f"<{wrong}", f"<{right}", 1).replace(f"</{wrong}>", f"</{right}>", 1)
        return status, headers, body

    patched.__wrapped__ = method
    return patched


def install(ctx) -> None:
    global _installed
    if _installed:
        return
    for name, (wrong, right) in RENAMES.items():
        setattr(S3Response, name, _rename(getattr(S3Response, name), wrong, right))
    _installed = True
