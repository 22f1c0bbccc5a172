"""S3: the evidence bucket (daily digests, KPI reports, evidence packs).

Every call passes ``ExpectedBucketOwner``: a bucket of the same name in another account is
never read or written (S3 answers 403 instead). Writes send a SHA-256 checksum, which S3
requires on buckets with Object Lock, and ``put_if_absent`` uses a conditional write
(``If-None-Match: *``) so a digest, once written, is never replaced by a second run.
"""

from __future__ import annotations

from typing import Any

from changeguard.adapters.clients import client


class EvidenceBucket:
    def __init__(self, bucket: str, expected_owner: str, s3: Any | None = None) -> None:
        self.bucket = bucket
        self.expected_owner = expected_owner
        self._s3 = s3

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = client("s3")
        return self._s3

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}"

    def _put_args(self, key: str, body: bytes, content_type: str) -> dict[str, Any]:
        return {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
            "ChecksumAlgorithm": "SHA256",
            "ExpectedBucketOwner": self.expected_owner,
        }

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """Write (a new version of) ``key``; the bucket is versioned, so nothing is lost."""
        self.s3.put_object(**self._put_args(key, body, content_type))

    def put_if_absent(self, key: str, body: bytes, content_type: str, *, attempts: int = 4) -> bool:
        """Write ``key`` only if it does not exist yet. False when it already did.

        S3 answers 412 ``PreconditionFailed`` when the key exists, and 409
        ``ConditionalRequestConflict`` when a conflicting write was in progress: that one says
        nothing about the key, and S3 documents retrying it (botocore does not).
        """
        import time

        from botocore.exceptions import ClientError

        attempt = 0
        while True:
            try:
                self.s3.put_object(**self._put_args(key, body, content_type), IfNoneMatch="*")
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "412"):
                    return False
                attempt += 1
                if code != "ConditionalRequestConflict" or attempt >= attempts:
                    raise
                time.sleep(0.2 * 2 ** (attempt - 1))
                continue
            return True

    def get(self, key: str) -> bytes | None:
        """The current version of ``key``, or None when there is none."""
        try:
            resp = self.s3.get_object(Bucket=self.bucket, Key=key, ExpectedBucketOwner=self.expected_owner)
        except self.s3.exceptions.NoSuchKey:
            return None
        return bytes(resp["Body"].read())

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, in S3's (lexicographic) order."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, ExpectedBucketOwner=self.expected_owner
        )
        return [str(o["Key"]) for page in pages for o in page.get("Contents", [])]
