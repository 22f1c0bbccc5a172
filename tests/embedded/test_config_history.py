"""GetResourceConfigHistory over recorded items, as the correlator reads an oversized item back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError
from changeguard.adapters.config import AwsConfigHistory
from changeguard_tools.embedded import config_history

ACCOUNT, REGION = "123456789012", "us-east-1"
SG = "sg-0a1b2c3d4e5f60718"


def item(state: str, captured: str, related: list[str]) -> dict:
    return {
        "resourceType": "AWS::EC2::SecurityGroup",
        "resourceId": SG,
        "ARN": f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{SG}",
        "awsAccountId": ACCOUNT,
        "awsRegion": REGION,
        "configurationItemCaptureTime": captured,
        "configurationStateId": state,
        "configurationItemStatus": "OK",
        "relatedEvents": related,
        "tags": {"Owner": "partners"},
    }


def test_the_item_at_its_capture_time_with_limit_one(aws):
    config_history.record(ACCOUNT, REGION, item("1", "2026-11-20T10:00:00Z", ["e-1"]))
    config_history.record(ACCOUNT, REGION, item("2", "2026-11-21T10:15:01Z", ["e-2"]))
    config_history.record(ACCOUNT, REGION, item("3", "2026-11-22T10:00:00Z", []))
    client = aws.client("config", REGION)
    reader = AwsConfigHistory(client=client)
    found = reader.item_at("AWS::EC2::SecurityGroup", SG, datetime(2026, 11, 21, 10, 15, 1, tzinfo=UTC))
    assert found is not None
    assert (found.configurationStateId, found.relatedEvents, found.awsAccountId) == ("2", ["e-2"], ACCOUNT)
    assert found.tags == {"Owner": "partners"}
    assert found.ARN.endswith(f":{ACCOUNT}:security-group/{SG}")
    # Newest first by default, Forward on request; limit pages with nextToken.
    newest = client.get_resource_config_history(resourceType="AWS::EC2::SecurityGroup", resourceId=SG)
    assert [i["configurationStateId"] for i in newest["configurationItems"]] == ["3", "2", "1"]
    first = client.get_resource_config_history(
        resourceType="AWS::EC2::SecurityGroup", resourceId=SG, chronologicalOrder="Forward", limit=2
    )
    assert [i["configurationStateId"] for i in first["configurationItems"]] == ["1", "2"] and first["nextToken"]


def test_a_resource_config_never_recorded_is_not_discovered(aws):
    with pytest.raises(ClientError) as exc:
        aws.client("config", REGION).get_resource_config_history(resourceType="AWS::EC2::SecurityGroup", resourceId=SG)
    assert exc.value.response["Error"]["Code"] == "ResourceNotDiscoveredException"
    assert (
        AwsConfigHistory(client=aws.client("config", REGION)).item_at(
            "AWS::EC2::SecurityGroup", SG, datetime(2026, 11, 21, tzinfo=UTC)
        )
        is None
    )
