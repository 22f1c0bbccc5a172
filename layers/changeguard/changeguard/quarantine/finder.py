"""Finding the resources the suite has marked: the Resource Groups Tagging API, by tag key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from changeguard.adapters.clients import acting_client
from changeguard.domain.tags import QUARANTINE_AFTER

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients

PERMISSIONS = ("tag:GetResources",)


class MarkedResourceFinder:
    """Every resource carrying ``changeguard:quarantine-after`` (any value), with its tags, in the
    account the sweep is acting in (issue 9: a member account's, through its quarantine role)."""

    def __init__(self, tagging: Any | None = None, accounts: AccountClients | None = None) -> None:
        self._tagging = tagging
        self._accounts = accounts

    def marked(self) -> list[tuple[str, dict[str, str]]]:
        tagging = self._tagging or acting_client("resourcegroupstaggingapi", self._accounts)
        pages = tagging.get_paginator("get_resources").paginate(
            TagFilters=[{"Key": QUARANTINE_AFTER}], ResourcesPerPage=100
        )
        found: dict[str, dict[str, str]] = {}
        for page in pages:
            for mapping in page.get("ResourceTagMappingList", []):
                arn = mapping.get("ResourceARN")
                if isinstance(arn, str) and arn:
                    found[arn] = {t["Key"]: t.get("Value", "") for t in mapping.get("Tags", [])}
        return list(found.items())
