"""The evidence bucket's write-once put against S3's answers to a conditional write.

S3 answers ``If-None-Match: *`` with 412 when the key exists, and with 409
``ConditionalRequestConflict`` when a conflicting conditional write was in progress: the key may
not exist at all, and S3 documents retrying. A digest taken for written after a 409 would leave a
day out of the chain for good.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from changeguard.adapters.s3 import EvidenceBucket

ACCOUNT = "123456789012"


@pytest.fixture
def bucket(aws):
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="evidence")
    return EvidenceBucket("evidence", ACCOUNT, s3=s3)


def test_a_conflict_is_retried_until_the_write_lands(aws, bucket):
    conflict = aws.faults.fail("conflict", services=["s3"], operations=["PutObject"], times=2)
    assert bucket.put_if_absent("digests/2026-11-20.json", b"{}", "application/json") is True
    assert conflict.injected == 2
    assert bucket.get("digests/2026-11-20.json") == b"{}"
    # The key now exists: 412, reported as "already there", never overwritten.
    assert bucket.put_if_absent("digests/2026-11-20.json", b"{2}", "application/json") is False
    assert bucket.get("digests/2026-11-20.json") == b"{}"


def test_a_conflict_that_does_not_clear_fails_the_write(aws, bucket):
    aws.faults.fail("conflict", services=["s3"], operations=["PutObject"])
    with pytest.raises(ClientError) as raised:
        bucket.put_if_absent("digests/2026-11-20.json", b"{}", "application/json", attempts=2)
    assert raised.value.response["Error"]["Code"] == "ConditionalRequestConflict"
    assert bucket.get("digests/2026-11-20.json") is None
