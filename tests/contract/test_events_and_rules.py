"""template.yaml is the one source of truth: sample events must match their function's rules.

Every rule has at least one sample that matches it, every rule-triggered sample matches one
of its function's rules, and payloads that arrive some other way (a stream, an SNS
subscription, an alarm action, a lifecycle hook) validate against the function's input model.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from changeguard.domain.change import NOT_CHANGE_RESOURCE_TYPES
from changeguard_tools.patterns import matches
from changeguard_tools.replay import is_eventbridge_event
from changeguard_tools.template import Template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Template()
CTX = TEMPLATE.context()
for _logical, _spec in TEMPLATE.resources.items():
    CTX.refs.setdefault(_logical, f"{_logical}-physical")
FUNCTIONS = TEMPLATE.functions(CTX)


def samples(folder: str) -> list[Path]:
    return sorted((ROOT / "events" / folder).glob("*.json"))


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_every_function_has_samples(logical_id):
    assert samples(FUNCTIONS[logical_id].code_uri.name), f"events/{FUNCTIONS[logical_id].code_uri.name}/ is empty"


RULES = [(f.logical_id, r.name, r.pattern) for f in FUNCTIONS.values() for r in f.rules]


@pytest.mark.parametrize(("logical_id", "rule", "pattern"), RULES, ids=[f"{a}.{b}" for a, b, _ in RULES])
def test_every_rule_has_a_matching_sample(logical_id, rule, pattern):
    folder = FUNCTIONS[logical_id].code_uri.name
    events = [json.loads(p.read_text()) for p in samples(folder)]
    assert any(matches(pattern, e) for e in events if is_eventbridge_event(e)), (
        f"no sample in events/{folder} matches {rule}"
    )


SAMPLES = [(f.logical_id, p) for f in FUNCTIONS.values() for p in samples(f.code_uri.name)]


@pytest.mark.parametrize(("logical_id", "path"), SAMPLES, ids=[f"{a}:{p.name}" for a, p in SAMPLES])
def test_every_sample_is_accepted_by_its_function(logical_id, path):
    spec = FUNCTIONS[logical_id]
    event = json.loads(path.read_text())
    if is_eventbridge_event(event) and spec.rules:
        assert any(matches(r.pattern, event) for r in spec.rules), f"{path.name} matches none of {logical_id}'s rules"
        return
    source = (spec.code_uri / "app.py").read_text()
    marker = "INPUT_MODEL = "
    assert marker in source, f"{logical_id} receives non-EventBridge samples but declares no INPUT_MODEL"
    dotted = source.split(marker, 1)[1].split("\n", 1)[0].strip().strip("\"'")
    module, _, name = dotted.rpartition(".")
    model = getattr(importlib.import_module(module), name)
    model.model_validate(event)


# -- the correlator's rule, case by case -------------------------------------------------------------
CORRELATE = next(r.pattern for r in FUNCTIONS["CorrelateChangeFunction"].rules if r.name == "CloudTrailWriteCalls")


def load(name: str) -> dict:
    return json.loads((ROOT / "events" / "correlate_change" / name).read_text())


def test_root_calls_without_session_issuer_reach_the_correlator():
    event = load("07-root-stop-logging.json")
    assert "arn" not in event["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]
    assert matches(CORRELATE, event)


def test_iam_user_calls_without_session_context_reach_the_correlator():
    event = load("08-iam-user-old-schema.json")
    assert "sessionContext" not in event["detail"]["userIdentity"]
    assert "readOnly" not in event["detail"]
    assert matches(CORRELATE, event)


def test_the_suites_own_roles_are_dropped_at_the_bus():
    event = load("03-unapproved-ticket.json")
    issuer = event["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]
    issuer["arn"] = f"arn:aws:iam::{CTX.account}:role/changeguard/changeguard-dev-CorrelateChangeFunctionRole-ABC"
    assert not matches(CORRELATE, event)


def test_read_only_and_failed_calls_are_dropped_at_the_bus():
    event = load("01-approved-run-instances.json")
    event["detail"]["readOnly"] = True
    assert not matches(CORRELATE, event)
    event = load("01-approved-run-instances.json")
    event["detail"]["errorCode"] = "Client.UnauthorizedOperation"
    assert not matches(CORRELATE, event)


def test_out_of_scope_services_are_dropped_at_the_bus():
    event = load("01-approved-run-instances.json")
    event["detail"]["eventSource"] = "athena.amazonaws.com"
    assert not matches(CORRELATE, event)


@pytest.mark.parametrize(
    ("source", "name", "category"),
    [
        ("s3.amazonaws.com", "PutObject", "Data"),
        ("dynamodb.amazonaws.com", "PutItem", "Data"),
        ("lambda.amazonaws.com", "Invoke", "Data"),
        ("sns.amazonaws.com", "Publish", "Data"),
        ("sqs.amazonaws.com", "SendMessage", "Data"),
        ("kms.amazonaws.com", "ScheduleKeyDeletion", "NetworkActivity"),  # through a VPC endpoint
    ],
)
def test_data_and_network_activity_events_are_dropped_at_the_bus(source, name, category):
    """A trail with data events delivers object-level calls as "AWS API Call via CloudTrail" too."""
    event = load("01-approved-run-instances.json")
    event["detail"].update(eventSource=source, eventName=name, eventCategory=category, managementEvent=False)
    assert not matches(CORRELATE, event)
    event["detail"].update(eventCategory="Management", managementEvent=True)
    assert matches(CORRELATE, event)


def test_records_older_than_event_categories_reach_the_correlator():
    event = load("01-approved-run-instances.json")
    del event["detail"]["eventCategory"]
    assert matches(CORRELATE, event)


# -- Config items: an evaluation or an inventory is no change ---------------------------------------
CONFIG_ITEMS = next(r.pattern for r in FUNCTIONS["CorrelateChangeFunction"].rules if r.name == "ConfigItemChanges")


def _dropped_types(pattern: dict) -> list[list[str]]:
    """The ``anything-but`` lists of resourceType in each branch of the rule's ``$or``."""
    return [
        condition["anything-but"]
        for branch in pattern["detail"]["$or"]
        for shape in branch.values()
        for condition in shape["resourceType"]
        if isinstance(condition, dict) and "anything-but" in condition
    ]


def test_the_rule_drops_exactly_the_types_the_correlator_does_not_judge():
    dropped = _dropped_types(CONFIG_ITEMS)
    assert len(dropped) == 2  # the item and the summary
    assert all(set(types) == NOT_CHANGE_RESOURCE_TYPES for types in dropped), dropped


@pytest.mark.parametrize("resource_type", sorted(NOT_CHANGE_RESOURCE_TYPES))
def test_config_items_of_evaluations_and_inventories_are_dropped_at_the_bus_in_either_shape(resource_type):
    """With all types recorded, each compliance flip of each Config rule is an item with no call behind it."""
    item = load("10-config-item-change.json")
    item["detail"]["configurationItem"]["resourceType"] = resource_type
    assert not matches(CONFIG_ITEMS, item)
    summary = load("13-oversized-config-item.json")
    summary["detail"]["configurationItemSummary"]["resourceType"] = resource_type
    assert not matches(CONFIG_ITEMS, summary)


@pytest.mark.parametrize("resource_type", ["AWS::EC2::SecurityGroup", "AWS::Config::ConfigRule", "AWS::SSM::Document"])
def test_config_items_of_other_types_reach_the_correlator_in_either_shape(resource_type):
    item = load("10-config-item-change.json")
    item["detail"]["configurationItem"]["resourceType"] = resource_type
    assert matches(CONFIG_ITEMS, item)
    summary = load("13-oversized-config-item.json")
    summary["detail"]["configurationItemSummary"]["resourceType"] = resource_type
    assert matches(CONFIG_ITEMS, summary)


def test_a_config_item_without_a_resource_type_on_the_bus_still_reaches_the_correlator():
    """A condition never matches a missing field: without the third branch these would be lost unseen."""
    as_string = load("10-config-item-change.json")
    as_string["detail"]["configurationItem"] = json.dumps(as_string["detail"]["configurationItem"])
    assert matches(CONFIG_ITEMS, as_string)
    no_summary = load("13-oversized-config-item.json")
    del no_summary["detail"]["configurationItemSummary"]
    assert matches(CONFIG_ITEMS, no_summary)  # the correlator rejects it, into the failure queue


# -- only AWS services' events: a custom event shaped like one is never taken -------------------------
def _source_conditions_are_aws_only(conditions: list) -> bool:
    """Whether a pattern's ``source`` conditions admit only sources starting with "aws."."""
    return all(
        (isinstance(c, str) and c.startswith("aws."))
        or (isinstance(c, dict) and set(c) == {"prefix"} and str(c["prefix"]).startswith("aws."))
        for c in conditions
    )


@pytest.mark.parametrize(("logical_id", "rule", "pattern"), RULES, ids=[f"{a}.{b}" for a, b, _ in RULES])
def test_every_rule_takes_only_events_of_aws_services(logical_id, rule, pattern):
    """PutEvents refuses a custom event whose Source starts with "aws." (NotAuthorizedForSourceException).

    So a `source` condition on "aws." is what tells an AWS service's event from one anyone allowed to
    put events on the bus (the organization's accounts, issue 9) made up.
    """
    assert "source" in pattern, f"{rule} does not name its source"
    assert _source_conditions_are_aws_only(pattern["source"]), pattern["source"]


TAG_CALLS = next(r.pattern for r in FUNCTIONS["EnforceTagsFunction"].rules if r.name == "CloudTrailTagCalls")


@pytest.mark.parametrize(
    ("rule", "folder", "name"),
    [
        ("CloudTrailWriteCalls", "correlate_change", "01-approved-run-instances.json"),
        ("CloudTrailWriteCalls", "correlate_change", "04-self-approved.json"),
        ("CloudTrailTagCalls", "enforce_tags", "01-run-instances-untagged.json"),
    ],
)
def test_a_forged_cloudtrail_event_reaches_no_function(rule, folder, name):
    genuine = json.loads((ROOT / "events" / folder / name).read_text())
    pattern = CORRELATE if rule == "CloudTrailWriteCalls" else TAG_CALLS
    assert matches(pattern, genuine)
    forged = {**genuine, "source": "com.attacker"}
    assert not matches(pattern, forged)
    assert not any(matches(r.pattern, forged) for f in FUNCTIONS.values() for r in f.rules)
