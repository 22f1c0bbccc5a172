"""Bad input (issue 8): no event, however broken, makes a function fail other than by rejecting it.

For every function the template declares, ``scaled(10_000)`` generated events (``mutations.py``:
mostly its own samples broken the ways real events break, the rest arbitrary JSON) go through its
real handler. Each one either

* gets a normal outcome, or
* is rejected with the one typed validation error (``InvalidEventError``): the handler returns the
  rejection instead of raising, so Lambda does not spend its retries on it, the event is
  dead-lettered to the function's failure queue, and nothing else is changed anywhere (the only
  mutating call is that one ``sqs:SendMessage``).

Any other exception fails. The bulk runs in-process against moto's ``mock_aws`` (with the embedded
AWS's extensions) for speed; ``test_bad_input_through_the_embedded_aws`` sends a slice (``scaled(100)``
per function) through the embedded AWS over HTTP, where side effects are read from its CloudTrail.

The other tests here: a rejected event really lands in the failure queue, and the real-world
variants of valid events (old CloudTrail schemas, unknown keys, JSON-string fields, SNS-wrapped
payloads) are not rejected and are judged like the canonical form.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from changeguard_tools.embedded import EmbeddedAWS, codedeploy_deployments, install
from changeguard_tools.harness import Harness, Invocation
from changeguard_tools.template import Template
from hardening.callrecorder import RECORDER, install_fresh
from hardening.conftest import scaled
from hardening.drive import SMALL_LEDGER, aws_environment, fresh, load, samples_of, scenario_harness, triggers_of
from hardening.iam import is_mutating
from hardening.mutations import bad_events
from hypothesis import HealthCheck, given, settings

TEMPLATE = Template()
STACK = SMALL_LEDGER
FUNCTIONS = TEMPLATE.function_ids()
REJECTION = "InvalidEventError"
PROPERTY = settings(
    max_examples=scaled(10_000),
    deadline=None,
    derandomize=True,  # the same events on every run: CI is deterministic
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


def check(harness: Harness, logical_id: str, event: Any) -> Invocation:
    """Invoke, and assert the bad-input contract on the result and on the calls the invocation made."""
    with RECORDER.scope() as calls:
        inv = harness.invoke(logical_id, copy.deepcopy(event))
    result = inv.result if isinstance(inv.result, dict) else None
    rejected = bool(result and result.get("rejected"))
    assert not inv.error or rejected, f"{logical_id} raised {inv.error}\nevent: {_short(event)}"
    mutating = [c for c in calls if any(is_mutating(r.action) for r in c.requests)]
    if rejected:
        assert result is not None
        assert result["error_type"] == REJECTION, result
        queue = str(harness.functions[logical_id].environment.get("FAILURE_QUEUE_URL", ""))
        dead_letters = [c for c in mutating if (c.service, c.operation) == ("sqs", "SendMessage")]
        others = [c for c in mutating if c not in dead_letters]
        assert not others, f"{logical_id} rejected the event after changing something: {others}\nevent: {_short(event)}"
        assert sum(calls[c] for c in dead_letters) == 1, (
            f"{logical_id} dead-lettered the event {len(dead_letters)} times"
        )
        assert result.get("dead_letter_message_id"), "the rejection names no dead-letter message"
        assert queue and queue.rsplit("/", 1)[-1] in str(dead_letters[0].requests[0].resource)
    else:
        assert isinstance(inv.result, dict), f"{logical_id} returned {inv.result!r}"
    return inv


class Hygiene:
    """Keeps the stack small while thousands of events go through it.

    moto copies a whole table for every transactional write and counts a whole queue for every
    message sent, so a ledger and failure queues that grow with every example would make each
    example slower than the last. Every ``every`` examples the failure queues are emptied and any
    table over ``max_items`` items is emptied (dropped and created again as it was).
    """

    def __init__(self, harness: Harness, every: int = 25, max_items: int = 100, trail: Any = None) -> None:
        self.harness, self.every, self.max_items, self.count = harness, every, max_items, 0
        self.trail = trail  # the embedded AWS's CloudTrail: it keeps every call's parameters

    def __call__(self) -> None:
        self.count += 1
        if self.count % self.every:
            return
        if self.trail is not None:
            self.trail.clear()
        sqs = self.harness.admin_client("sqs")
        for spec in self.harness.functions.values():
            queue = spec.environment.get("FAILURE_QUEUE_URL")
            if queue:  # dropped and made again: PurgeQueue may run once a minute only
                name = str(queue).rsplit("/", 1)[-1]
                sqs.delete_queue(QueueUrl=str(queue))
                sqs.create_queue(QueueName=name)
        ddb = self.harness.admin_client("dynamodb")
        for name in ddb.list_tables()["TableNames"]:
            table = ddb.describe_table(TableName=name)["Table"]
            if table.get("ItemCount", 0) <= self.max_items:
                continue
            ddb.delete_table(TableName=name)
            args: dict[str, Any] = {
                "TableName": name,
                "KeySchema": table["KeySchema"],
                "AttributeDefinitions": table["AttributeDefinitions"],
                "BillingMode": "PAY_PER_REQUEST",
            }
            if table.get("GlobalSecondaryIndexes"):
                args["GlobalSecondaryIndexes"] = [
                    {k: g[k] for k in ("IndexName", "KeySchema", "Projection")} for g in table["GlobalSecondaryIndexes"]
                ]
            if table.get("StreamSpecification"):
                args["StreamSpecification"] = table["StreamSpecification"]
            ddb.create_table(**args)


def _short(event: Any) -> str:
    text = json.dumps(event, default=str)
    return text if len(text) < 2000 else text[:2000] + "..."


@pytest.fixture(scope="module")
def in_process() -> Iterator[Harness]:
    """The stack in moto's in-process ``mock_aws``, seeded with the demo fixtures, in enforce mode."""
    from aws_lambda_powertools.utilities.parameters import base as parameters
    from moto import mock_aws

    install()
    install_fresh()  # the call recorder's hook, when the plugin is not registered
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_ENDPOINT_URL") or name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
                mp.delenv(name)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        parameters.DEFAULT_PROVIDERS.clear()  # their clients may point at an embedded AWS endpoint
        with mock_aws():
            harness, _ = scenario_harness(None, without=("metrics",), parameters=STACK)
            harness.put_parameter("enforcement-mode", "enforce")
            yield harness
        parameters.DEFAULT_PROVIDERS.clear()
        codedeploy_deployments.use_clock(None)


@pytest.fixture(autouse=True)
def _scenario_clock_released() -> Iterator[None]:
    """The scenario fixtures hand the embedded CodeDeploy the harness clock; give it back after."""
    yield
    codedeploy_deployments.use_clock(None)


def _bases(harness: Harness, logical_id: str) -> list[Any]:
    bases = triggers_of(harness, logical_id)
    return bases or [
        {"version": "0", "id": "x", "detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}
    ]


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_bad_input_gives_a_typed_rejection_or_an_outcome_never_a_failure(in_process: Harness, logical_id: str) -> None:
    harness = in_process
    bases = _bases(harness, logical_id)

    hygiene = Hygiene(harness)

    @PROPERTY
    @given(event=bad_events(bases))
    def prop(event: Any) -> None:
        hygiene()
        check(harness, logical_id, event)

    prop()


def test_bad_input_through_the_embedded_aws(aws: EmbeddedAWS) -> None:
    """A slice through the real handlers and the embedded AWS over HTTP; side effects from its trail."""
    harness, _ = scenario_harness(aws.endpoint_url, parameters=STACK)
    harness.put_parameter("enforcement-mode", "enforce")
    assert harness.stack is not None
    for logical_id in FUNCTIONS:
        through_http(harness, aws, logical_id)()


def through_http(harness: Harness, aws: EmbeddedAWS, logical_id: str) -> Any:
    """The property for one function, over HTTP: a rejection's only recorded call is its dead letter."""
    assert harness.stack is not None
    role = harness.stack.function_roles[logical_id]
    hygiene = Hygiene(harness, trail=aws.trail)

    @settings(PROPERTY, max_examples=scaled(100))
    @given(event=bad_events(_bases(harness, logical_id)))
    def prop(event: Any) -> None:
        hygiene()
        before = len(aws.trail.records())
        inv = harness.invoke(logical_id, copy.deepcopy(event))
        records = [
            r
            for r in aws.trail.records()[before:]
            if (r.get("userIdentity", {}).get("sessionContext") or {}).get("sessionIssuer", {}).get("arn") == role
        ]
        result = inv.result if isinstance(inv.result, dict) else None
        rejected = bool(result and result.get("rejected"))
        assert not inv.error or rejected, f"{logical_id} raised {inv.error}\nevent: {_short(event)}"
        if rejected:
            assert result is not None and result["error_type"] == REJECTION
            names = [r["eventName"] for r in records]
            assert names == ["SendMessage"], f"{logical_id} rejected the event but called {names}"

    return prop


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_a_rejected_event_ends_in_the_failure_queue_without_lambda_retries(aws: EmbeddedAWS, logical_id: str) -> None:
    """The handler returns (Lambda retries only raised errors) and the event is in FAILURE_QUEUE_URL."""
    harness, _ = scenario_harness(aws.endpoint_url, parameters=STACK)
    poison = {"detail-type": ["not", "an", "event"], "marker": logical_id}
    inv = harness.invoke(logical_id, poison)
    assert isinstance(inv.result, dict), f"{logical_id} raised instead of rejecting: {inv.error}"
    assert inv.result.get("rejected") is True and inv.result["error_type"] == REJECTION
    queue = str(harness.functions[logical_id].environment["FAILURE_QUEUE_URL"])
    messages = (
        harness.admin_client("sqs")
        .receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        .get("Messages", [])
    )
    assert len(messages) == 1, f"{len(messages)} messages in {queue}"
    body = json.loads(messages[0]["Body"])
    assert body["requestPayload"] == poison
    assert body["responseContext"]["errorType"] == REJECTION
    assert messages[0]["MessageAttributes"]["ErrorType"]["StringValue"] == REJECTION


# -- real-world variants ---------------------------------------------------------------------------


def _cloudtrail_samples() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for logical_id, spec in _specs().items():
        for path in samples_of(spec):
            event = load(path)
            if isinstance(event, dict) and event.get("detail-type") == "AWS API Call via CloudTrail":
                out.append((logical_id, f"{spec.code_uri.name}/{path.name}"))
    return out


def _specs() -> dict[str, Any]:
    return TEMPLATE.functions(TEMPLATE.context())


def old_schema(event: dict[str, Any]) -> dict[str, Any]:
    """The record as CloudTrail wrote it before eventVersion 1.05: no readOnly, no eventCategory,
    no managementEvent/tlsDetails, booleans as strings."""
    out = copy.deepcopy(event)
    detail = out["detail"]
    detail["eventVersion"] = "1.02"
    for key in ("readOnly", "eventCategory", "managementEvent", "tlsDetails", "sessionCredentialFromConsole"):
        detail.pop(key, None)
    attributes = ((detail.get("userIdentity") or {}).get("sessionContext") or {}).get("attributes")
    if isinstance(attributes, dict) and isinstance(attributes.get("mfaAuthenticated"), bool):
        attributes["mfaAuthenticated"] = str(attributes["mfaAuthenticated"]).lower()
    return out


def extra_keys(event: Any) -> Any:
    """Unknown keys added to every object AWS owns (AWS adds fields over time)."""
    if isinstance(event, dict):
        out = {k: extra_keys(v) for k, v in event.items()}
        out["addedByAwsLater"] = {"nested": [1, "two", None]}
        return out
    if isinstance(event, list):
        return [extra_keys(v) for v in event]
    return event


def json_string_fields(event: dict[str, Any]) -> dict[str, Any]:
    """``requestParameters``/``responseElements`` (CloudTrail) or ``configurationItem`` (Config) as
    JSON strings, as some producers and older delivery paths send them."""
    out = copy.deepcopy(event)
    detail = out["detail"]
    for key in ("requestParameters", "responseElements", "configurationItem", "additionalEventData"):
        if isinstance(detail.get(key), dict):
            detail[key] = json.dumps(detail[key])
    return out


def _judged(harness: Harness, logical_id: str, event: Any) -> tuple[Any, ...]:
    """The verdict of ``event`` under new ids (so an original and its variant never meet as duplicates)."""
    inv = harness.invoke(logical_id, fresh(event))
    assert not inv.error, f"{logical_id}: {inv.error}"
    result = inv.result
    assert isinstance(result, dict)
    return (result.get("verdict"), result.get("severity"), tuple(result.get("reasons") or ()))


@pytest.fixture(scope="module")
def stack(embedded_aws: EmbeddedAWS) -> Iterator[Harness]:
    """One stack for the variant tests: each judged event gets new ids."""
    with aws_environment(embedded_aws) as aws:
        harness, _ = scenario_harness(aws.endpoint_url, parameters=STACK)
        yield harness


VARIANTS = {"old-schema": old_schema, "extra-keys": extra_keys, "json-string-fields": json_string_fields}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize(("logical_id", "sample"), _cloudtrail_samples())
def test_real_world_variants_parse_and_are_judged_as_the_original(
    stack: Harness, logical_id: str, sample: str, variant: str
) -> None:
    event = load(TEMPLATE.path.parent / "events" / sample)
    original = _judged(stack, logical_id, copy.deepcopy(event))
    changed = _judged(stack, logical_id, VARIANTS[variant](event))
    assert changed == original


def test_real_world_config_item_as_a_json_string_is_judged_as_the_original(stack: Harness) -> None:
    for logical_id, spec in _specs().items():
        for path in samples_of(spec):
            event = load(path)
            if not (isinstance(event, dict) and isinstance((event.get("detail") or {}).get("configurationItem"), dict)):
                continue
            original = _judged(stack, logical_id, copy.deepcopy(event))
            assert _judged(stack, logical_id, json_string_fields(event)) == original, path.name


@pytest.mark.parametrize("logical_id", [lid for lid, spec in _specs().items() if spec.topics])
def test_real_world_sns_wrapped_payloads_parse(stack: Harness, logical_id: str) -> None:
    """A function subscribed to a topic gets the payload as SNS wraps it (``Records[].Sns.Message``,
    a JSON string): each of its SNS samples, published to its topic, is not rejected."""
    harness = stack
    spec = harness.functions[logical_id]
    wrapped = [load(p) for p in samples_of(spec) if "Sns" in json.dumps(load(p))[:2000]]
    assert wrapped, f"{logical_id} subscribes to {spec.topics} but has no SNS-wrapped sample"
    for event in wrapped:
        record = event["Records"][0]["Sns"]
        for topic in spec.topics:
            result = harness.publish(topic, record["Message"], record.get("Subject"))
            assert logical_id in result["routed_to"]
            assert result["error"] is None, result["error"]


def test_bad_input_strategy_reaches_domain_code() -> None:
    """Most generated events keep the envelope of a sample (source and detail-type), so they are
    parsed past it: the mutations are what the domain code sees."""
    spec = next(iter(_specs().values()))
    bases = [load(p) for p in samples_of(spec)]
    if not bases:
        pytest.skip("the first function has no samples")
    kept: list[bool] = []

    @settings(max_examples=200, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(event=bad_events(bases))
    def sample(event: Any) -> None:
        kept.append(
            isinstance(event, dict)
            and any(
                event.get("detail-type") == b.get("detail-type") and event.get("source") == b.get("source")
                for b in bases
            )
        )

    sample()
    assert sum(kept) / len(kept) > 0.5, f"only {sum(kept)} of {len(kept)} kept a real envelope"
