"""What the full-size bad-input run (make soak) found, kept as the typed rejections they now are.

Each of these events passed the models and made a handler raise something other than the typed
validation error (botocore's ParamValidationError or InvalidRegionError, an IndexError): a field
the functions act on held what AWS never sends there.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from changeguard.models.deployments import AlarmStateChangeEvent
from changeguard.models.events import CloudTrailEvent, ConfigItemChangeEvent
from changeguard.models.scheduled import ScheduledEvent
from changeguard.models.tag_events import ComplianceChangeEvent
from pydantic import ValidationError
from sample_events import load_event


def _with(name: str, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    event = copy.deepcopy(load_event(name))
    node = event
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return event


@pytest.mark.parametrize(
    ("model", "name", "path", "value"),
    [
        # a Config item whose resource type is not <namespace>::<service>::<type> (was an IndexError)
        (ConfigItemChangeEvent, "correlate_change/10-config-item-change.json", ("detail", "configurationItem", "resourceType"), "0"),
        # relatedEvents holding lists, not CloudTrail event ids
        (ConfigItemChangeEvent, "correlate_change/10-config-item-change.json", ("detail", "configurationItem", "relatedEvents"), [[None, None]]),
        # a region that is no region name, in the detail (was botocore's InvalidRegionError) ...
        (ComplianceChangeEvent, "enforce_tags/10-config-non-compliant.json", ("detail", "awsRegion"), '"us-east-1"'),
        (CloudTrailEvent, "correlate_change/01-approved-run-instances.json", ("detail", "awsRegion"), "us east 1"),
        # ... or in the envelope, which names where the functions act
        (CloudTrailEvent, "correlate_change/01-approved-run-instances.json", ("region",), '"us-east-1"'),
        (ScheduledEvent, "follow_up_changes/scheduled.json", ("region",), "xx"),
        (AlarmStateChangeEvent, "guard_deployment/alarm-state-change.json", ("region",), "us-east-1\n"),
    ],
)  # fmt: skip
def test_a_field_the_functions_act_on_holding_what_aws_never_sends_is_rejected(model, name, path, value) -> None:
    model.model_validate(load_event(name))  # the sample itself is valid
    with pytest.raises(ValidationError):
        model.model_validate(_with(name, path, value))


def test_a_quoted_bucket_name_is_not_acted_on_but_the_event_is_still_judged() -> None:
    """CreateBucket with bucketName '"acme-scratch-exports"': a valid event (CloudTrail keeps what
    the caller sent) whose name is no bucket: the quarantine registry does not take it."""
    from changeguard.quarantine import REGISTRY

    def ids(event: dict[str, Any]) -> list[str]:
        record = CloudTrailEvent.model_validate(event).detail
        return REGISTRY["s3:bucket"]().ids_in("CreateBucket", record.model_dump(mode="json", by_alias=True))

    assert ids(load_event("enforce_tags/02-create-bucket.json")) == ["acme-scratch-exports"]
    assert (
        ids(_with("enforce_tags/02-create-bucket.json", ("detail", "requestParameters", "bucketName"), '"acme"')) == []
    )


def test_a_scheduled_time_later_than_the_clock_is_rejected_and_one_within_the_skew_is_not() -> None:
    """EventBridge delivers a schedule at or after its time: a later ``time`` is an invoke by hand (or forged)."""
    from datetime import UTC, datetime

    from changeguard.domain.errors import InvalidEventError
    from changeguard.models.scheduled import SCHEDULE_SKEW, parse_scheduled

    event = load_event("write_digest/daily-digest.json")  # time 2026-11-23T03:15:00Z
    at = datetime(2026, 11, 23, 3, 15, tzinfo=UTC)
    assert parse_scheduled(event, now=at).time == at
    assert parse_scheduled(event, now=at - SCHEDULE_SKEW).time == at  # clocks differ a little
    assert parse_scheduled(event).time == at  # no clock given: not checked (functions that ignore the time)
    with pytest.raises(InvalidEventError, match="after now"):
        parse_scheduled(event, now=at - SCHEDULE_SKEW - timedelta(seconds=1))
