"""EventBridge envelopes for the events ChangeGuard consumes.

They extend Powertools' ``EventBridgeModel`` (not its envelope, which drops ``id``,
``account`` and ``time`` that the ledger needs).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from changeguard.models.cloudtrail import CloudTrailRecord, OptionalRegion
from changeguard.models.envelope import Envelope

CLOUDTRAIL_API_CALL = "AWS API Call via CloudTrail"
CONFIG_ITEM_CHANGE = "Config Configuration Item Change"
#: AWS Config's messageType when the item did not fit an SNS notification: a summary in its place.
OVERSIZED_ITEM_CHANGE = "OversizedConfigurationItemChangeNotification"


class CloudTrailEvent(Envelope):
    """ "AWS API Call via CloudTrail" (and the console sign-in / service event detail-types)."""

    detail: CloudTrailRecord  # type: ignore[assignment]


class ConfigurationItem(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)

    # Both go into the ledger key of an item without relatedEvents (DynamoDB caps keys at 2 KB), issue 8.
    resourceId: str | None = Field(default=None, max_length=400)
    # AWS Config's form, <namespace>::<service>::<type> (the service names the change's service).
    resourceType: str | None = Field(
        default=None, max_length=128, pattern=r"^[A-Za-z0-9]+::[A-Za-z0-9]+::[A-Za-z0-9]+$"
    )
    resourceName: str | None = None
    ARN: str | None = None
    awsAccountId: str | None = None
    awsRegion: OptionalRegion = None  # issue 8
    configurationItemCaptureTime: datetime | None = None
    configurationItemStatus: str | None = None
    configurationStateId: str | int | None = None
    relatedEvents: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            return {}
        return {str(k): str(v) for k, v in value.items() if v is not None}

    @field_validator("relatedEvents", mode="before")
    @classmethod
    def _related(cls, value: Any) -> list[str]:
        related = value if isinstance(value, list) else []
        # CloudTrail event ids: they key the ledger (issue 8).
        if any(not isinstance(v, str) or not v or len(v) > 128 for v in related):
            raise ValueError("relatedEvents holds something that is not a CloudTrail event id")
        return related


class ConfigurationItemSummary(BaseModel):
    """What an oversized notification carries instead of the item (AWS Config developer guide, "Example
    Oversized Configuration Item Change Notification"): the item's identity, status and capture time,
    not its ``relatedEvents`` nor its tags. The full item is read back from Config's history."""

    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)

    # The same limits as the item's: they name the item to fetch and key its ledger entry.
    resourceId: str = Field(min_length=1, max_length=400)
    resourceType: str = Field(max_length=128, pattern=r"^[A-Za-z0-9]+::[A-Za-z0-9]+::[A-Za-z0-9]+$")
    resourceName: str | None = None
    ARN: str | None = None
    awsAccountId: str | None = None
    awsRegion: OptionalRegion = None
    configurationItemCaptureTime: datetime
    configurationItemStatus: str | None = None
    # Which item of the resource's history this is: the one read back must carry it.
    configurationStateId: str | int
    changeType: str | None = None


class ConfigItemChangeDetail(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)

    messageType: str | None = None
    configurationItem: ConfigurationItem | None = None
    configurationItemSummary: ConfigurationItemSummary | None = None
    notificationCreationTime: datetime | None = None
    recordVersion: str | None = None
    # What changed (``changedProperties``: ``Tags.<key>``, ``Configuration.<path>``, ...), issue 8.
    configurationItemDiff: dict[str, Any] | None = None

    @field_validator("configurationItemDiff", mode="before")
    @classmethod
    def _diff(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else None  # informational: never a reason to reject

    @field_validator("configurationItem", "configurationItemSummary", mode="before")
    @classmethod
    def _maybe_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value)
        return value


class ConfigItemChangeEvent(Envelope):
    """AWS Config "Configuration Item Change Notification" delivered through EventBridge."""

    detail: ConfigItemChangeDetail  # type: ignore[assignment]
