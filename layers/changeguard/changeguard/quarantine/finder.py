"""Finding the resources the suite has marked: the Resource Groups Tagging API, by tag key."""

from __future__ import annotations

from typing import Any

from changeguard.adapters.clients import client
from changeguard.domain.tags import QUARANTINE_AFTER

PERMISSIONS = ("tag:GetResources",)


class MarkedResourceFinder:
    """Every resource carrying ``changeguard:quarantine-after`` (any value), with its tags."""

    def __init__(self, tagging: Any | None = None) -> None:
        self._tagging = tagging

    def marked(self) -> list[tuple[str, dict[str, str]]]:
        tagging = self._tagging or client("resourcegroupstaggingapi")
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
