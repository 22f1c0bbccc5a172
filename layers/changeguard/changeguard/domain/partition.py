"""The ARN partition a region belongs to: ``arn:<partition>:...``.

An ARN built with ``arn:aws:`` names nothing in the China, GovCloud, ISO or European Sovereign
Cloud partitions: a bucket policy naming it is rejected (``MalformedPolicy``), a tag lookup by it
finds nothing, and a ticket listing the resource's real ARN never matches it. The prefixes are
those of botocore's partition data (``endpoints.json``, each partition's ``regionRegex``), kept
here so that naming a resource loads no data file.
"""

from __future__ import annotations

#: Region-name prefixes of the partitions other than ``aws``, longest first.
_PARTITIONS: tuple[tuple[str, str], ...] = (
    ("us-gov-", "aws-us-gov"),
    ("us-isob-", "aws-iso-b"),
    ("us-isof-", "aws-iso-f"),
    ("eu-isoe-", "aws-iso-e"),
    ("us-iso-", "aws-iso"),
    ("eusc-", "aws-eusc"),
    ("cn-", "aws-cn"),
)


def partition_of(region: str | None) -> str:
    """``cn-north-1`` -> ``aws-cn``; any commercial region (or none known) -> ``aws``."""
    if region:
        for prefix, partition in _PARTITIONS:
            if region.startswith(prefix):
                return partition
    return "aws"
