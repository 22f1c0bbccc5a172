"""Lambda functions' tags: read with ListTags, so a missing permission never reads as "no tags".

GetFunction returns ``Tags`` only to a caller explicitly allowed ``lambda:ListTags``; otherwise it
answers with ``TagsError`` and no ``Tags`` (Lambda API reference, GetFunction). Read as ``{}``, that
would quarantine fully tagged functions. A function whose tags cannot be read is left alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from changeguard.domain.policy import Policy
from changeguard.quarantine import Registry
from changeguard.quarantine.lambda_function import LambdaFunctionQuarantine
from changeguard.services.quarantine_sweep import QuarantineSweepService
from changeguard.services.tag_enforcement import Enforcer
from fakes import FakeClock, InMemoryLedger
from sample_events import load_event

NOW = datetime(2026, 11, 22, 9, 5, tzinfo=UTC)
ACCOUNT, REGION = "123456789012", "us-east-1"
ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:billing"
REQUIRED = {"ChangeTicket": "CHG-1001", "Environment": "prod", "Owner": "payments"}
DUE = {"changeguard:quarantine-after": "2026-11-21T09:00:00Z"}  # marked, and due
DENIED = {
    "Error": {
        "Code": "AccessDeniedException",
        "Message": f"User is not authorized to perform: lambda:ListTags on resource: {ARN}",
    }
}


def _client() -> Any:
    return boto3.client("lambda", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")


class FakeLambda:
    """A Lambda client as a role sees it: GetFunction answers as AWS does to a role without
    lambda:ListTags (``TagsError``, no ``Tags``); ListTags is allowed or denied. Calls are recorded."""

    def __init__(self, tags: dict[str, str], *, list_tags_allowed: bool) -> None:
        self.tags = dict(tags)
        self.list_tags_allowed = list_tags_allowed
        self.concurrency: int | None = 5
        self.calls: list[str] = []

    def get_function(self, FunctionName: str) -> dict[str, Any]:
        self.calls.append("GetFunction")
        return {
            "Configuration": {"FunctionName": "billing", "FunctionArn": ARN},
            "TagsError": {"ErrorCode": "AccessDeniedException", "Message": "not allowed lambda:ListTags"},
        }

    def list_tags(self, Resource: str) -> dict[str, Any]:
        self.calls.append("ListTags")
        if not self.list_tags_allowed:
            raise ClientError(DENIED, "ListTags")
        return {"Tags": dict(self.tags)}

    def get_function_concurrency(self, FunctionName: str) -> dict[str, Any]:
        self.calls.append("GetFunctionConcurrency")
        return {} if self.concurrency is None else {"ReservedConcurrentExecutions": self.concurrency}

    def put_function_concurrency(self, FunctionName: str, ReservedConcurrentExecutions: int) -> None:
        self.calls.append("PutFunctionConcurrency")
        self.concurrency = ReservedConcurrentExecutions

    def delete_function_concurrency(self, FunctionName: str) -> None:
        self.calls.append("DeleteFunctionConcurrency")
        self.concurrency = None

    def tag_resource(self, Resource: str, Tags: dict[str, str]) -> None:
        self.calls.append("TagResource")
        self.tags.update(Tags)

    def untag_resource(self, Resource: str, TagKeys: list[str]) -> None:
        self.calls.append("UntagResource")
        for key in TagKeys:
            self.tags.pop(key, None)

    def mutations(self) -> list[str]:
        return [c for c in self.calls if not c.startswith(("Get", "List"))]


def _sweep(api: FakeLambda) -> Any:
    """One sweep run over the function, found marked (as the Tagging API finds it)."""
    registry = Registry()
    registry.handlers = {"lambda:function": LambdaFunctionQuarantine(api=api)}
    ledger = InMemoryLedger()

    class Finder:
        def marked(self) -> list[tuple[str, dict[str, str]]]:
            return [(ARN, {**REQUIRED, **DUE})]

    service = QuarantineSweepService(
        function="sweep_quarantine",
        enforcer=Enforcer(function="sweep_quarantine", ledger=ledger, suite_role_prefix="arn:aws:iam::1:role/cg/"),
        registry=registry,
        finder=Finder(),
        policy=lambda: Policy(enforcement_mode="enforce"),
        clock=FakeClock(NOW),
    )
    return service.handle(load_event("sweep_quarantine/scheduled.json"))


# -- read(), on the wire -------------------------------------------------------------------------


def test_tags_are_read_with_list_tags_not_get_function():
    client = _client()
    handler = LambdaFunctionQuarantine(api=client)
    ref = handler.ref("billing", ACCOUNT, REGION)
    with Stubber(client) as stub:  # any other call (GetFunction) fails the test
        stub.add_response("list_tags", {"Tags": REQUIRED}, {"Resource": ARN})
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 5}, {"FunctionName": ARN})
        state = handler.read(ref)
        stub.assert_no_pending_responses()
    assert state is not None
    assert state.tags == REQUIRED and state.name == "billing"
    assert state.config == {"reserved_concurrency": 5}


def test_a_function_whose_tags_are_denied_cannot_be_read():
    client = _client()
    handler = LambdaFunctionQuarantine(api=client)
    with Stubber(client) as stub:
        stub.add_client_error("list_tags", "AccessDeniedException", http_status_code=403)
        assert handler.read(handler.ref("billing", ACCOUNT, REGION)) is None
        stub.assert_no_pending_responses()


def test_the_class_declares_list_tags_and_not_get_function():
    assert "lambda:ListTags" in LambdaFunctionQuarantine.permissions
    assert "lambda:GetFunction" not in LambdaFunctionQuarantine.permissions


# -- what the sweep does with it -----------------------------------------------------------------


def test_get_functions_tags_error_is_never_read_as_no_tags_and_nothing_is_quarantined():
    """The role lacks lambda:ListTags: GetFunction says TagsError, ListTags is denied. The function
    cannot be read, so it is left alone: not quarantined, not marked, not unmarked."""
    api = FakeLambda({**REQUIRED, **DUE}, list_tags_allowed=False)
    outcome = _sweep(api)
    assert api.mutations() == [] and api.concurrency == 5
    assert outcome.reasons == ["lambda:function billing: lambda:function billing cannot be read: left alone"]
    assert outcome.actions == [] and outcome.alert_ids == []


@pytest.mark.parametrize("concurrency", [5, None])
def test_a_fully_tagged_function_found_marked_is_unmarked_not_quarantined(concurrency):
    api = FakeLambda({**REQUIRED, **DUE}, list_tags_allowed=True)
    api.concurrency = concurrency
    _sweep(api)
    assert "PutFunctionConcurrency" not in api.calls and api.concurrency == concurrency
    assert "changeguard:quarantine-after" not in api.tags
    assert {k: api.tags[k] for k in REQUIRED} == REQUIRED
