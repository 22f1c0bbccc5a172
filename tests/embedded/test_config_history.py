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


def test_an_item_on_the_first_page_is_read_with_one_call(aws):
    config_history.record(ACCOUNT, REGION, item("1", "2026-11-20T10:00:00Z", ["e-1"]))
    config_history.record(ACCOUNT, REGION, item("2", "2026-11-21T10:15:01Z", ["e-2"]))
    client = aws.client("config", REGION)
    calls: list[dict] = []
    client.meta.events.register(
        "provide-client-params.config.GetResourceConfigHistory", lambda params, **_: calls.append(dict(params))
    )
    found = AwsConfigHistory(client=client).item_at(
        "AWS::EC2::SecurityGroup", SG, datetime(2026, 11, 21, 10, 15, 1, tzinfo=UTC)
    )
    assert found is not None and found.configurationStateId == "2"
    assert len(calls) == 1 and calls[0]["limit"] == 1 and "nextToken" not in calls[0]


class PagedConfig:
    """Config answering pages without the item before one with it: each call spans at most seven days,
    so a page may hold fewer items than ``limit`` - none - and a ``nextToken`` (API reference)."""

    def __init__(self, empty_pages: int, last_token: bool = False) -> None:
        self.empty_pages = empty_pages
        self.last_token = last_token
        self.calls: list[dict] = []

    def get_resource_config_history(self, **request):
        self.calls.append(request)
        if len(self.calls) <= self.empty_pages:
            return {"configurationItems": [], "nextToken": f"page-{len(self.calls) + 1}"}
        if self.last_token:
            return {"configurationItems": []}
        return {"configurationItems": [{**item("2", "2026-11-21T10:15:01Z", ["e-2"]), "accountId": ACCOUNT}]}


CAPTURED = datetime(2026, 11, 21, 10, 15, 1, tzinfo=UTC)


def test_a_page_without_the_item_and_with_a_next_token_is_read_on():
    """Before: an empty first page was taken for an empty history, and the event dead-lettered."""
    config = PagedConfig(empty_pages=2)
    found = AwsConfigHistory(client=config).item_at("AWS::EC2::SecurityGroup", SG, CAPTURED)
    assert found is not None and found.configurationStateId == "2" and found.relatedEvents == ["e-2"]
    assert [c.get("nextToken") for c in config.calls] == [None, "page-2", "page-3"]
    assert all(c["laterTime"] == CAPTURED and c["limit"] == 1 for c in config.calls)


def test_a_last_page_without_the_item_is_an_empty_history():
    config = PagedConfig(empty_pages=1, last_token=True)
    assert AwsConfigHistory(client=config).item_at("AWS::EC2::SecurityGroup", SG, CAPTURED) is None
    assert len(config.calls) == 2


def test_pages_without_end_are_an_unfinished_read_not_an_empty_history():
    """Bounded: past MAX_PAGES the read fails (retried, then the failure destination), never None,
    which would reject the event as naming an item Config does not hold."""
    from changeguard.adapters.config import MAX_PAGES
    from changeguard.domain.errors import ConfigItemUnavailableError, InvalidEventError

    config = PagedConfig(empty_pages=10_000)
    with pytest.raises(ConfigItemUnavailableError) as exc:
        AwsConfigHistory(client=config).item_at("AWS::EC2::SecurityGroup", SG, CAPTURED)
    assert not isinstance(exc.value, InvalidEventError)
    assert len(config.calls) == MAX_PAGES
