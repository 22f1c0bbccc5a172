"""CloudTrail ``LookupEvents``: the durable record of management calls the reconciliation sweep reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from changeguard.adapters import clients
from changeguard.domain.errors import TrailAccessDeniedError, first_error
from changeguard.models.cloudtrail import CloudTrailRecord, UnparsedTrailEvent

PAGE_SIZE = 50  # LookupEvents' maximum
#: What CloudTrail answers when the caller may not look up events (its policy, or an SCP on the region).
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


class CloudTrailLookup:
    """Write (``ReadOnly=false``) management events of one account and region, newest first.

    ``start`` and ``end`` bound the events' times, both inclusive (LookupEvents' ``StartTime`` and
    ``EndTime``); the sweep reads a pair in bounded slices, oldest slice first.

    The account and region are those of the acting scope (issue 9: a member account through its
    read role), else the function's own.

    LookupEvents allows two requests a second per account and region; botocore's standard retry
    mode absorbs its throttling. A record it cannot parse is handed on as an ``UnparsedTrailEvent``
    (its ``EventId``): one odd record must not stop the sweep, and must not vanish either.
    """

    def __init__(self, cloudtrail: Any | None = None, accounts: clients.ActingClients | None = None) -> None:
        self._cloudtrail = cloudtrail
        self._accounts = accounts

    @property
    def cloudtrail(self) -> Any:
        return self._cloudtrail or clients.acting_client("cloudtrail", self._accounts)

    def write_events(
        self, start: datetime, end: datetime | None = None
    ) -> Iterator[CloudTrailRecord | UnparsedTrailEvent]:
        args: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": "ReadOnly", "AttributeValue": "false"}],
            "StartTime": start,
            "PaginationConfig": {"PageSize": PAGE_SIZE},
        }
        if end is not None:
            args["EndTime"] = end
        from botocore.exceptions import ClientError

        pages = iter(self.cloudtrail.get_paginator("lookup_events").paginate(**args))
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ACCESS_DENIED:
                    raise TrailAccessDeniedError(code, exc.response.get("Error", {}).get("Message", "")) from exc
                raise
            for event in page.get("Events", []):
                try:
                    yield CloudTrailRecord.model_validate_json(event.get("CloudTrailEvent") or "{}")
                except ValidationError as exc:
                    yield UnparsedTrailEvent(str(event.get("EventId") or ""), first_error(exc))
