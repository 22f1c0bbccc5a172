"""Config items through the template's rules into the correlator, against the embedded AWS.

What reaches the correlator and is no change leaves no verdict, no alert and no failure: an item of a
type the recorder does not record (created or deleted), whose oversized summary has no history to be
read back from.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aws_lambda_powertools.utilities import parameters
from changeguard.domain.change import NOT_RECORDED_STATUSES
from changeguard_tools.harness import FixedClock, Harness, quiet_stream
from sample_events import load_event

CORRELATE = "CorrelateChangeFunction"
ENI = "eni-0abc1234def567890"


def harness(aws) -> Harness:
    parameters.clear_caches()
    h = Harness(
        aws.endpoint_url, clock=FixedClock(datetime(2026, 11, 21, 10, 20, tzinfo=UTC)), log_stream=quiet_stream()
    )
    h.provision()
    return h


def ledger_items(h: Harness) -> list[dict]:
    return h.admin_client("dynamodb").scan(TableName=h.ctx.refs["ChangeLedgerTable"])["Items"]


def not_recorded_item(status: str) -> dict:
    event = load_event("correlate_change/10-config-item-change.json")
    arn = f"arn:aws:ec2:us-east-1:123456789012:network-interface/{ENI}"
    event["resources"] = [arn]
    event["detail"]["configurationItemDiff"] = None
    event["detail"]["configurationItem"].update(
        relatedEvents=[],
        resourceType="AWS::EC2::NetworkInterface",
        resourceId=ENI,
        resourceName=None,
        ARN=arn,
        configurationItemStatus=status,
        tags={},
        configuration=None,
    )
    return event


def not_recorded_summary(status: str) -> dict:
    event = load_event("correlate_change/13-oversized-config-item.json")
    event["detail"]["configurationItemSummary"].update(
        configurationItemStatus=status,
        resourceType="AWS::EC2::NetworkInterface",
        resourceId=ENI,
        ARN=f"arn:aws:ec2:us-east-1:123456789012:network-interface/{ENI}",
    )
    return event


@pytest.mark.parametrize("status", sorted(NOT_RECORDED_STATUSES))
def test_an_item_of_a_type_not_recorded_gets_no_verdict_in_either_shape(aws, status):
    """Before: the deletion's item was a NO_TICKET verdict with an alert, and its oversized summary was
    looked up in a Config history that holds nothing of the type, then rejected into the failure queue."""
    h = harness(aws)
    for event in (not_recorded_item(status), not_recorded_summary(status)):
        result = h.process(event)
        assert result["routed_to"] == [CORRELATE]
        assert result["error"] is None, result["error"]
        [outcome] = result["outcomes"]
        assert outcome["verdict"] == "NOT_A_CHANGE" and outcome["alerts"] == []
    assert ledger_items(h) == []
