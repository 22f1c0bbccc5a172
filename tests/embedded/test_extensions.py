"""The mechanism that adds AWS operations moto lacks (CloudTrail LookupEvents is its first user)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from changeguard_tools.embedded import EmbeddedAWS, cloudtrail, extensions
from moto import mock_aws
from moto.cloudtrail.responses import CloudTrailResponse
from moto.core.exceptions import JsonRESTError

DESTINATIONS: list[Any] = [{"Type": "EVENT_DATA_STORE", "Location": "eds-1"}]


def create_channel(self: Any) -> str:
    """A toy CreateChannel: keeps channels on the CloudTrail backend of the caller's account and region."""
    params = json.loads(self.body or "{}")
    channels: dict[str, str] = extensions.backend_state(self.cloudtrail_backend, "channels", dict)
    if params["Name"] in channels:
        raise JsonRESTError("ChannelAlreadyExistsException", f"Channel {params['Name']} already exists.")
    arn = f"arn:aws:cloudtrail:{self.region}:{self.current_account}:channel/{params['Name']}"
    channels[params["Name"]] = arn
    return json.dumps({"ChannelArn": arn, "Name": params["Name"], "Source": params["Source"]})


def list_channels(self: Any) -> str:
    channels: dict[str, str] = extensions.backend_state(self.cloudtrail_backend, "channels", dict)
    return json.dumps({"Channels": [{"ChannelArn": arn, "Name": name} for name, arn in channels.items()]})


@pytest.fixture
def channel_operations() -> Iterator[None]:
    """CreateChannel and ListChannels (which moto lacks) added for the test, removed after it."""
    extensions.add_operation(CloudTrailResponse, "CreateChannel", create_channel)
    extensions.add_operation(CloudTrailResponse, "ListChannels", list_channels)
    yield
    extensions.remove_operation(CloudTrailResponse, "CreateChannel")
    extensions.remove_operation(CloudTrailResponse, "ListChannels")


def test_lookup_events_is_installed_on_motos_cloudtrail_responses(embedded_aws: EmbeddedAWS) -> None:
    method = CloudTrailResponse.lookup_events  # type: ignore[attr-defined]

    assert method.__wrapped__ is cloudtrail.lookup_events


def test_install_is_idempotent(embedded_aws: EmbeddedAWS) -> None:
    before = CloudTrailResponse.lookup_events  # type: ignore[attr-defined]

    extensions.install()
    extensions.install()

    assert CloudTrailResponse.lookup_events is before  # type: ignore[attr-defined]


def test_added_operation_is_served_and_keeps_state_per_region(aws: EmbeddedAWS, channel_operations: None) -> None:
    us = aws.client("cloudtrail")
    eu = aws.client("cloudtrail", region="eu-west-1")

    created = us.create_channel(Name="audit", Source="Custom", Destinations=DESTINATIONS)
    with pytest.raises(us.exceptions.ChannelAlreadyExistsException):
        us.create_channel(Name="audit", Source="Custom", Destinations=DESTINATIONS)

    assert created["ChannelArn"] == "arn:aws:cloudtrail:us-east-1:123456789012:channel/audit"
    assert [channel["Name"] for channel in us.list_channels()["Channels"]] == ["audit"]
    assert eu.list_channels()["Channels"] == []


def test_added_operation_state_goes_with_a_reset(aws: EmbeddedAWS, channel_operations: None) -> None:
    client = aws.client("cloudtrail")
    client.create_channel(Name="audit", Source="Custom", Destinations=DESTINATIONS)

    aws.reset()

    assert client.list_channels()["Channels"] == []


def test_added_operation_is_served_under_mock_aws(monkeypatch: pytest.MonkeyPatch, channel_operations: None) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("cloudtrail", region_name="us-east-1")
        client.create_channel(Name="audit", Source="Custom", Destinations=DESTINATIONS)

        assert [channel["Name"] for channel in client.list_channels()["Channels"]] == ["audit"]


def test_an_operation_moto_implements_is_not_replaced_by_accident() -> None:
    with pytest.raises(extensions.OperationConflictError, match="moto implements CreateTrail"):
        extensions.add_operation(CloudTrailResponse, "CreateTrail", create_channel)


def test_two_extensions_cannot_claim_one_operation(channel_operations: None) -> None:
    extensions.add_operation(CloudTrailResponse, "CreateChannel", create_channel)  # same function: no-op

    with pytest.raises(extensions.OperationConflictError, match="another extension"):
        extensions.add_operation(CloudTrailResponse, "CreateChannel", list_channels)


def test_replacing_an_operation_on_purpose_keeps_motos_for_delegation() -> None:
    moto_get_trail = CloudTrailResponse.get_trail

    def get_trail(self: Any) -> str:
        original = extensions.original_operation(CloudTrailResponse, "GetTrail")
        assert original is not None
        return str(original(self))

    extensions.add_operation(CloudTrailResponse, "GetTrail", get_trail, replace=True)
    try:
        assert extensions.original_operation(CloudTrailResponse, "GetTrail") is moto_get_trail
        assert CloudTrailResponse.get_trail is not moto_get_trail
    finally:
        extensions.remove_operation(CloudTrailResponse, "GetTrail")

    assert CloudTrailResponse.get_trail is moto_get_trail


def test_wrap_method_is_reversible_and_idempotent() -> None:
    class Backend:
        def put(self, value: int) -> int:
            return value

    calls: list[int] = []

    def counting(original: Any) -> Any:
        def put(self: Backend, value: int) -> int:
            calls.append(value)
            return int(original(self, value))

        return put

    extensions.wrap_method(Backend, "put", counting)
    extensions.wrap_method(Backend, "put", counting)
    assert Backend().put(1) == 1
    assert calls == [1]
    assert extensions.is_wrapped(Backend, "put")

    extensions.unwrap_method(Backend, "put")
    assert Backend().put(2) == 2
    assert calls == [1]
    assert not extensions.is_wrapped(Backend, "put")


def test_reset_hooks_run_on_reset(aws: EmbeddedAWS) -> None:
    cache = {"stale": True}
    extensions.on_reset(cache.clear)

    aws.reset()

    assert cache == {}


def test_backend_state_is_created_once() -> None:
    class Backend:
        pass

    backend = Backend()
    first = extensions.backend_state(backend, "things", list)
    first.append(1)

    assert extensions.backend_state(backend, "things", list) == [1]


def test_an_extension_whose_module_runs_again_replaces_itself() -> None:
    # A module that failed half-way through its import runs again on the next import: its
    # functions are new objects with the same names, and must not conflict with their old selves.
    def build() -> Any:
        def delete_channel(self: Any) -> str:
            return "{}"

        return delete_channel

    first, second = build(), build()
    extensions.add_operation(CloudTrailResponse, "DeleteChannel", first)
    try:
        extensions.add_operation(CloudTrailResponse, "DeleteChannel", second)
        assert CloudTrailResponse.delete_channel.__wrapped__ is second  # type: ignore[attr-defined]
    finally:
        extensions.remove_operation(CloudTrailResponse, "DeleteChannel")
    assert not hasattr(CloudTrailResponse, "delete_channel")
