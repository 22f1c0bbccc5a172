"""CloudTrail ``LookupEvents``: the durable record of management calls the reconciliation sweep reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from changeguard.adapters.clients import client
from changeguard.models.cloudtrail import CloudTrailRecord

PAGE_SIZE = 50  # LookupEvents' maximum


class CloudTrailLookup:
    """Write (``ReadOnly=false``) management events of this account and region, newest first.

    LookupEvents allows two requests a second per account and region; botocore's standard retry
    mode absorbs its throttling. Records it cannot parse are skipped (and counted): one odd record
    must not stop the sweep.
    """

    def __init__(self, cloudtrail: Any | None = None) -> None:
        self._cloudtrail = cloudtrail
        self.unparsed = 0

    @property
    def cloudtrail(self) -> Any:
        return self._cloudtrail or client("cloudtrail")

    def write_events(self, start: datetime, end: datetime | None = None) -> Iterator[CloudTrailRecord]:
        args: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": "ReadOnly", "AttributeValue": "false"}],
            "StartTime": start,
            "PaginationConfig": {"PageSize": PAGE_SIZE},
        }
        if end is not None:
            args["EndTime"] = end
        for page in self.cloudtrail.get_paginator("lookup_events").paginate(**args):
            for event in page.get("Events", []):
                try:
                    yield CloudTrailRecord.model_validate_json(event.get("CloudTrailEvent") or "{}")
                except ValidationError:
                    self.unparsed += 1
