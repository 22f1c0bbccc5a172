"""The ARN partition a region belongs to: ``arn:<partition>:...``.

An ARN built with ``arn:aws:`` names nothing in the China, GovCloud, ISO or European Sovereign
Cloud partitions: a bucket policy naming it is rejected (``MalformedPolicy``), a tag lookup by it
finds nothing, and a ticket listing the resource's real ARN never matches it. The prefixes are
those of botocore's partition data (``endpoints.json``, each partition's ``regionRegex``), kept
here so that naming a resource loads no data file.
"""

from __future__ import annotations

import re

_REGION_NAME = re.compile(r"[a-z]{2,4}(-[a-z]+)+-\d{1,2}")  # "eusc-de-east-1" too

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


def is_region(value: object) -> bool:
    """Whether ``value`` is shaped like an AWS region name (``us-east-1``, ``cn-north-1``, ``eusc-de-east-1``)."""
    return isinstance(value, str) and _REGION_NAME.fullmatch(value) is not None


def partition_of(region: str | None) -> str:
    """``cn-north-1`` -> ``aws-cn``; any commercial region (or none known) -> ``aws``."""
    if region:
        for prefix, partition in _PARTITIONS:
            if region.startswith(prefix):
                return partition
    return "aws"


_ROLE_PREFIX = re.compile(r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role(?P<path>/(?:[^/]+/)*)$")


def parse_role_prefix(prefix: str) -> tuple[str, str, str] | None:
    """``(partition, account, path)`` of a role-path prefix (``arn:aws:iam::<account>:role/changeguard/``,
    the suite's ``SUITE_ROLE_PREFIX``), a trailing ``*`` allowed; None when it is not one."""
    found = _ROLE_PREFIX.match(prefix.rstrip("*"))
    return (found["partition"], found["account"], found["path"]) if found else None


def role_prefix_in(prefix: str, account: str) -> str | None:
    """The same role path in ``account``: where the suite's member roles live (issue 9)."""
    parts = parse_role_prefix(prefix)
    return f"arn:{parts[0]}:iam::{account}:role{parts[2]}" if parts else None
