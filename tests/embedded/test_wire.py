"""Naming a raw AWS request: service, region, operation (REST matching in particular), parameters."""

from __future__ import annotations

from typing import Any

import pytest
from changeguard_tools.embedded import wire


def signed(
    service: str, method: str, path: str, query: str = "", region: str = "us-east-1", **headers: str
) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "HTTP_HOST": "127.0.0.1:4566",
        "HTTP_AUTHORIZATION": (
            f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/{region}/{service}/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=0"
        ),
    }
    for name, value in headers.items():
        environ[f"HTTP_{name.upper()}"] = value
    return environ


@pytest.mark.parametrize(
    ("method", "path", "query", "headers", "operation"),
    [
        ("PUT", "/evidence", "", {}, "CreateBucket"),
        ("PUT", "/evidence", "tagging", {}, "PutBucketTagging"),
        ("DELETE", "/evidence", "tagging", {}, "DeleteBucketTagging"),
        ("PUT", "/evidence", "policy", {}, "PutBucketPolicy"),
        ("PUT", "/evidence", "publicAccessBlock", {}, "PutPublicAccessBlock"),
        ("PUT", "/evidence/2026/ledger.json", "", {}, "PutObject"),
        ("PUT", "/evidence/2026/ledger.json", "tagging", {}, "PutObjectTagging"),
        ("PUT", "/evidence/2026/ledger.json", "", {"x_amz_copy_source": "/other/key"}, "CopyObject"),
        ("PUT", "/evidence/big.bin", "partNumber=1&uploadId=u-1", {}, "UploadPart"),
        ("POST", "/evidence", "delete", {}, "DeleteObjects"),
    ],
)
def test_s3_operations_are_told_apart(
    method: str, path: str, query: str, headers: dict[str, str], operation: str
) -> None:
    call = wire.identify(signed("s3", method, path, query, **headers), b"")

    assert call is not None
    assert call.operation == operation
    assert call.event_source == "s3.amazonaws.com"


def test_rest_json_labels_are_extracted() -> None:
    call = wire.identify(signed("lambda", "PUT", "/2017-10-31/functions/checkout/concurrency"), b"")

    assert call is not None
    assert call.operation == "PutFunctionConcurrency"
    assert call.uri_params == {"FunctionName": "checkout"}


def test_json_protocol_uses_the_target_and_signing_name_aliases() -> None:
    environ = signed(
        "monitoring", "POST", "/", region="eu-west-1", x_amz_target="GraniteServiceVersion20100801.PutMetricAlarm"
    )

    call = wire.identify(environ, b"{}")

    assert call is not None
    assert (call.operation, call.service_name, call.region) == ("PutMetricAlarm", "cloudwatch", "eu-west-1")
    assert call.event_source == "monitoring.amazonaws.com"


def test_query_protocol_uses_the_action() -> None:
    environ = signed("ec2", "POST", "/")
    environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded; charset=utf-8"
    body = b"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-1&InstanceId.2=i-2"

    call = wire.identify(environ, body)

    assert call is not None
    assert (call.operation, call.protocol) == ("TerminateInstances", "ec2")
    assert wire.request_parameters(call, environ, body) == {"instanceIds": ["i-1", "i-2"]}


def test_presigned_urls_are_identified_from_the_query() -> None:
    environ = {
        "REQUEST_METHOD": "PUT",
        "PATH_INFO": "/evidence/key",
        "QUERY_STRING": "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request",
    }

    call = wire.identify(environ, b"")

    assert call is not None
    assert (call.operation, call.access_key_id) == ("PutObject", "AKIDEXAMPLE")


def test_unsigned_requests_are_not_identified() -> None:
    assert wire.identify({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, b"") is None


def test_a_malformed_body_falls_back_to_the_raw_parameters() -> None:
    environ = signed("s3", "PUT", "/evidence", "tagging")
    call = wire.identify(environ, b"<Tagging><broken")

    assert call is not None
    assert wire.request_parameters(call, environ, b"<Tagging><broken") == {"Bucket": "evidence", "tagging": ""}
