"""The embedded AWS server: lifecycle, reset, clients and the environment the ``aws`` fixture sets."""

from __future__ import annotations

import socket
import urllib.parse

import boto3
import pytest
from changeguard_tools.embedded import TRAIL, EmbeddedAWS, EmbeddedAWSError, extensions


def _port_accepts(endpoint_url: str) -> bool:
    parsed = urllib.parse.urlparse(endpoint_url)
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((parsed.hostname or "", parsed.port or 0)) == 0


def test_serves_on_a_free_local_port(embedded_aws: EmbeddedAWS) -> None:
    parsed = urllib.parse.urlparse(embedded_aws.endpoint_url)

    assert parsed.scheme == "http"
    assert parsed.hostname == "127.0.0.1"
    assert parsed.port
    assert embedded_aws.running


def test_starting_installs_the_extensions(embedded_aws: EmbeddedAWS) -> None:
    assert extensions.installed()


def test_client_talks_to_the_endpoint_as_the_default_account(aws: EmbeddedAWS) -> None:
    identity = aws.client("sts").get_caller_identity()

    assert identity["Account"] == aws.account_id == "123456789012"


def test_can_be_stopped_and_started_again() -> None:
    # A second instance shares moto's (process-wide) state with the session's; it is never reset here.
    other = EmbeddedAWS()
    with other:
        first = other.endpoint_url
        assert other.client("sts").get_caller_identity()["Account"] == "123456789012"
    assert not other.running
    assert not _port_accepts(first)
    with pytest.raises(EmbeddedAWSError):
        _ = other.endpoint_url

    second = other.start()
    try:
        assert other.client("sts").get_caller_identity()["Account"] == "123456789012"
    finally:
        other.stop()
    assert not _port_accepts(second)
    other.stop()  # stopping a stopped server is a no-op


def test_starting_twice_is_refused(embedded_aws: EmbeddedAWS) -> None:
    with pytest.raises(EmbeddedAWSError, match="already serving"):
        embedded_aws.start()


def test_reset_empties_moto_state_and_the_trail(aws: EmbeddedAWS) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="before-reset")
    assert aws.trail.records()

    aws.reset()

    assert s3.list_buckets()["Buckets"] == []
    assert aws.trail.records() == []


def test_reset_turns_read_only_recording_back_off(aws: EmbeddedAWS) -> None:
    aws.record_read_only = True

    aws.reset()

    assert aws.record_read_only is False


def test_trail_is_the_process_trail_lookup_events_reads(aws: EmbeddedAWS) -> None:
    assert aws.trail is TRAIL


def test_client_attempt_budget_is_configurable(aws: EmbeddedAWS) -> None:
    default = aws.client("sqs")
    patient = aws.client("sqs", max_attempts=4)

    assert default.meta.config.retries["total_max_attempts"] == 1
    assert patient.meta.config.retries["total_max_attempts"] == 4


def test_aws_fixture_points_plain_boto3_at_the_embedded_aws(aws: EmbeddedAWS) -> None:
    aws.client("s3").create_bucket(Bucket="seen-by-plain-boto3")

    # No endpoint, region or credentials given: all come from the environment the fixture set.
    plain = boto3.client("s3")

    assert [bucket["Name"] for bucket in plain.list_buckets()["Buckets"]] == ["seen-by-plain-boto3"]
