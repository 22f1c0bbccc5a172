"""CloudTrail records as AWS sends them, tolerant of every schema version seen in the wild."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from changeguard.domain.partition import is_region


class _AwsOwned(BaseModel):
    """AWS adds fields over time: unknown keys are ignored, never rejected."""

    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)


class SessionIssuer(_AwsOwned):
    type: str | None = None
    principalId: str | None = None
    arn: str | None = None
    accountId: str | None = None
    userName: str | None = None


class SessionContext(_AwsOwned):
    sessionIssuer: SessionIssuer | None = None
    sourceIdentity: str | None = None
    attributes: dict[str, Any] | None = None


class OnBehalfOf(_AwsOwned):
    userId: str | None = None
    identityStoreArn: str | None = None


class UserIdentity(_AwsOwned):
    type: str | None = None
    principalId: str | None = None
    arn: str | None = None
    accountId: str | None = None
    accessKeyId: str | None = None
    userName: str | None = None
    invokedBy: str | None = None
    sessionContext: SessionContext | None = None
    onBehalfOf: OnBehalfOf | None = None


class TrailResource(_AwsOwned):
    ARN: str | None = None
    accountId: str | None = None
    type: str | None = None


def _json_object(value: Any) -> dict[str, Any] | None:
    """Some producers send parameter blocks as JSON strings; a non-object is kept under ``value``."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"value": value}
    if isinstance(value, dict):
        return value
    return {"value": value}


# issue 8: a region is used to build clients (quarantine acts in the resource's region); anything
# that is not one is bad input, rejected at parse time rather than by botocore mid-action.
def region_or_none(value: Any) -> str | None:
    """``None`` or a well-formed AWS region name; anything else is invalid."""
    if value is None:
        return None
    if not is_region(value):
        raise ValueError("not an AWS region")
    return str(value)


#: A field that names a region: checked as it is parsed (``None`` allowed, or not).
OptionalRegion = Annotated[str | None, BeforeValidator(region_or_none)]
Region = Annotated[str, BeforeValidator(region_or_none)]


@dataclass(frozen=True)
class UnparsedTrailEvent:
    """A LookupEvents result whose ``CloudTrailEvent`` is not a record we can read: skipped by the
    reconciliation, and named in its outcome and its ``RECONCILED`` entry instead of dropped."""

    event_id: str
    error: str


class CloudTrailRecord(_AwsOwned):
    """One CloudTrail record (the ``detail`` of an "AWS API Call via CloudTrail" event)."""

    eventVersion: str | None = None
    eventTime: datetime
    eventSource: str
    eventName: str
    awsRegion: OptionalRegion = None
    sourceIPAddress: str | None = None
    userAgent: str | None = None
    userIdentity: UserIdentity = Field(default_factory=UserIdentity)
    requestParameters: dict[str, Any] | None = None
    responseElements: dict[str, Any] | None = None
    errorCode: str | None = None
    errorMessage: str | None = None
    readOnly: bool | None = None
    # Always present in real trails (a UUID); absent from some published samples. It keys the ledger,
    # whose keys DynamoDB caps at 2 KB: anything longer is not an event id (issue 8).
    eventID: str | None = Field(default=None, max_length=128)
    eventType: str | None = None
    recipientAccountId: str | None = None
    resources: list[TrailResource] | None = None
    sessionCredentialFromConsole: bool | None = None
    managementEvent: bool | None = None
    eventCategory: str | None = None

    _objects = field_validator("requestParameters", "responseElements", mode="before")(
        lambda value: _json_object(value)
    )

    @field_validator("sessionCredentialFromConsole", "readOnly", "managementEvent", mode="before")
    @classmethod
    def _boolish(cls, value: Any) -> bool | None:
        # CloudTrail writes these as JSON booleans in new records and as "true"/"false" in old ones.
        if isinstance(value, str):
            return value.strip().lower() == "true"
        if value is None or isinstance(value, bool):
            return value
        raise ValueError("expected a boolean")

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, value: Any) -> Any:
        return None if not isinstance(value, list) else [r for r in value if isinstance(r, dict)]
