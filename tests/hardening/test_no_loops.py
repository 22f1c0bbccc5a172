"""No loops (issue 8): what the suite does never makes it do anything more.

Remediation tools are known to trigger themselves (cloud-custodian#3238 saw about 4,000 invocations
per bucket). Here the demo scenario runs against the embedded AWS, which records every call it
serves as a CloudTrail record. The suite's own calls (identities under the template's ``RolePath``,
``/changeguard/``) are then fed back through the template's rules, in enforce mode, for
``scaled(10)`` generations (at least 2): each generation as new calls (new ``eventID``), so the
ledger's duplicate check cannot hide a loop. Every generation must produce nothing: no mutating call
by the suite (ledger writes and dead letters included), no ledger entry, no alert.

The same holds for the suite's rollback deployments (their CodeDeploy state changes) and for its own
tags (``changeguard:*``, as the AWS Config item changes they cause).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from changeguard_tools.embedded import EmbeddedAWS
from changeguard_tools.harness import Harness
from changeguard_tools.replay import wrap_record
from changeguard_tools.template import REPO_ROOT
from hardening.conftest import scaled
from hardening.drive import SMALL_LEDGER, aws_environment, load, run_scenario, scenario_harness

GENERATIONS = max(2, scaled(10))
SUITE_ROLE_PATH = ":role/changeguard/"


def is_suites(record: dict[str, Any]) -> bool:
    identity = record.get("userIdentity") or {}
    issuer = ((identity.get("sessionContext") or {}).get("sessionIssuer") or {}).get("arn", "")
    return SUITE_ROLE_PATH in str(issuer)


@pytest.fixture(scope="module")
def scenario(embedded_aws: EmbeddedAWS) -> Iterator[tuple[Harness, EmbeddedAWS]]:
    """The demo scenario has run once for the module (the suite has acted); enforce mode from here on.

    Each test measures what changes while it feeds events, so they can share the stack."""
    with aws_environment(embedded_aws) as aws:
        harness, steps = scenario_harness(aws.endpoint_url, parameters=SMALL_LEDGER)
        run_scenario(harness, aws, steps)
        harness.put_parameter("enforcement-mode", "enforce")
        yield harness, aws


@pytest.fixture
def after_the_scenario(scenario: tuple[Harness, EmbeddedAWS]) -> Harness:
    return scenario[0]


@pytest.fixture
def aws(scenario: tuple[Harness, EmbeddedAWS]) -> EmbeddedAWS:
    """The module's embedded AWS, as the scenario left it (this module's override of ``aws``)."""
    return scenario[1]


def ledger_size(harness: Harness) -> int:
    table = harness.ctx.refs["ChangeLedgerTable"]
    ddb = harness.admin_client("dynamodb")
    pages = ddb.get_paginator("scan").paginate(TableName=table, Select="COUNT")
    return sum(page["Count"] for page in pages)


def generation(harness: Harness, aws: EmbeddedAWS, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Feed ``events`` through the template's rules; what the suite did in response."""
    trail_before = len(aws.trail.records())
    ledger_before = ledger_size(harness)
    alerts = 0
    verdicts: list[str] = []
    errors: list[str] = []
    for event in events:
        result = harness.process(event)
        alerts += sum(len(o["alerts"]) for o in result["outcomes"])
        verdicts += [
            f"{o['function']}: {o['verdict']} {acted}"
            for o in result["outcomes"]
            if (acted := [a for a in o["actions"] if not a.startswith("duplicate delivery")])
        ]
        if result["error"]:
            errors.append(str(result["error"]))
    # A call that failed changed nothing (CloudTrail records it with errorCode): a duplicate
    # delivery's conditional put, for one, is how the ledger refuses it.
    calls = [r for r in aws.trail.records()[trail_before:] if is_suites(r) and not r.get("errorCode")]
    return {
        "suite_calls": [f"{r['eventSource']} {r['eventName']}" for r in calls],
        "records": calls,
        "ledger_entries": ledger_size(harness) - ledger_before,
        "alerts": alerts,
        "actions": verdicts,
        "errors": errors,
    }


def as_new_calls(records: list[dict[str, Any]], gen: int) -> list[dict[str, Any]]:
    """The records as CloudTrail would deliver the same calls made again: new eventIDs."""
    out = []
    for record in records:
        again = copy.deepcopy(record)
        again["eventID"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{gen}:{record.get('eventID')}"))
        out.append(wrap_record(again))
    return out


def assert_quiet(gen: int, outcome: dict[str, Any]) -> None:
    assert not outcome["errors"], f"generation {gen}: {outcome['errors']}"
    assert not outcome["suite_calls"], f"generation {gen}: the suite acted on its own actions: {outcome['suite_calls']}"
    assert outcome["ledger_entries"] == 0, f"generation {gen}: {outcome['ledger_entries']} new ledger entries"
    assert outcome["alerts"] == 0, f"generation {gen}: {outcome['alerts']} alerts"
    assert not outcome["actions"], f"generation {gen}: {outcome['actions']}"


def test_no_loops_the_suites_own_calls_fed_back_for_generations_cause_nothing(
    after_the_scenario: Harness, aws: EmbeddedAWS
) -> None:
    harness = after_the_scenario
    own = [r for r in aws.trail.records() if is_suites(r)]
    mutating = [r for r in own if not r.get("readOnly")]
    assert len({r["eventName"] for r in mutating}) >= 3, "the scenario made the suite do too little to prove anything"
    feed = own
    for gen in range(1, GENERATIONS + 1):
        outcome = generation(harness, aws, as_new_calls(feed, gen))
        assert_quiet(gen, outcome)
        feed = own + outcome["records"]


def suite_deployments(harness: Harness, aws: EmbeddedAWS) -> list[dict[str, Any]]:
    """Deployments the suite made: its CreateDeployment calls and the rollbacks of its stops."""
    ids: set[str] = set()
    for record in aws.trail.records():
        if not is_suites(record) or record.get("errorCode"):
            continue
        if record["eventName"] == "CreateDeployment":
            ids.add(str((record.get("responseElements") or {}).get("deploymentId", "")))
        if record["eventName"] == "StopDeployment":
            stopped = str((record.get("requestParameters") or {}).get("deploymentId", ""))
            info = harness.admin_client("codedeploy").get_deployment(deploymentId=stopped)["deploymentInfo"]
            ids.add(str((info.get("rollbackInfo") or {}).get("rollbackDeploymentId", "")))
    codedeploy = harness.admin_client("codedeploy")
    return [codedeploy.get_deployment(deploymentId=i)["deploymentInfo"] for i in sorted(ids - {""})]


def state_changes(deployment: dict[str, Any], gen: int) -> list[dict[str, Any]]:
    """The CodeDeploy state-change events EventBridge delivers for a deployment, START to SUCCESS."""
    template = load(REPO_ROOT / "events" / "guard_deployment" / "deployment-start.json")
    out = []
    for state in ("START", "SUCCESS"):
        event = copy.deepcopy(template)
        event["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{gen}:{deployment['deploymentId']}:{state}"))
        app, group = deployment["applicationName"], deployment["deploymentGroupName"]
        event["resources"] = [
            f"arn:aws:codedeploy:us-east-1:123456789012:application:{app}",
            f"arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:{app}/{group}",
        ]
        event["detail"].update(
            {"deploymentId": deployment["deploymentId"], "deploymentGroup": group, "application": app, "state": state}
        )
        out.append(event)
    return out


def test_no_loops_the_suites_rollback_deployments_cause_nothing(after_the_scenario: Harness, aws: EmbeddedAWS) -> None:
    harness = after_the_scenario
    deployments = suite_deployments(harness, aws)
    assert deployments, "the scenario made no rollback deployment: nothing to prove"
    # The first delivery of a rollback's START may be recorded (a fact of the change record); from
    # then on, and at no time, may the suite act on it: stop it, roll it back, alert on it.
    first = generation(harness, aws, [e for d in deployments for e in state_changes(d, 0)])
    assert not [c for c in first["suite_calls"] if "PutItem" not in c and "TransactWriteItems" not in c], first
    assert first["alerts"] == 0, first
    for gen in range(1, GENERATIONS + 1):
        outcome = generation(harness, aws, [e for d in deployments for e in state_changes(d, gen)])
        assert_quiet(gen, outcome)


def config_item_of_tag_call(record: dict[str, Any], gen: int) -> dict[str, Any] | None:
    """The AWS Config item change a suite tag call causes (its diff: only ``changeguard:`` tags)."""
    params = record.get("requestParameters") or {}
    keys = [str(t.get("key", t.get("Key", ""))) for t in _tag_list(params)]
    if not keys or not all(k.startswith("changeguard:") for k in keys):
        return None
    resource = _resource_of(record)
    if resource is None:
        return None
    resource_type, resource_id, arn = resource
    template = load(REPO_ROOT / "events" / "correlate_change" / "10-config-item-change.json")
    event = copy.deepcopy(template)
    event["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"config:{gen}:{record['eventID']}"))
    event["time"] = record["eventTime"]
    event["resources"] = [arn]
    detail = event["detail"]
    detail["configurationItemDiff"] = {
        "changedProperties": {f"Tags.{k}": {"changeType": "CREATE", "updatedValue": "x"} for k in keys},
        "changeType": "UPDATE",
    }
    item = detail["configurationItem"]
    item.update(
        {
            "relatedEvents": [record["eventID"]],
            "configuration": {},
            "tags": dict.fromkeys(keys, "x"),
            "configurationItemCaptureTime": record["eventTime"],
            "configurationStateId": 1 + gen,
            "resourceType": resource_type,
            "resourceId": resource_id,
            "resourceName": resource_id,
            "ARN": arn,
        }
    )
    return event


def _tag_list(params: dict[str, Any]) -> list[dict[str, Any]]:
    tags = params.get("tagSet") or params.get("Tagging") or params.get("tags") or params.get("Tags") or {}
    if isinstance(tags, dict) and "items" in tags:
        return list(tags["items"])
    if isinstance(tags, dict) and "TagSet" in tags:
        return list(tags["TagSet"])
    if isinstance(tags, dict):
        return [{"key": k, "value": v} for k, v in tags.items()]
    return [t for t in tags if isinstance(t, dict)] if isinstance(tags, list) else []


def _resource_of(record: dict[str, Any]) -> tuple[str, str, str] | None:
    params = record.get("requestParameters") or {}
    if record["eventSource"] == "ec2.amazonaws.com":
        items = ((params.get("resourcesSet") or {}).get("items")) or [
            {"resourceId": r} for r in params.get("resources", [])
        ]
        rid = str(items[0].get("resourceId", "")) if items else ""
        kind = (
            ("AWS::EC2::Instance", "instance")
            if rid.startswith("i-")
            else ("AWS::EC2::SecurityGroup", "security-group")
        )
        return kind[0], rid, f"arn:aws:ec2:us-east-1:123456789012:{kind[1]}/{rid}"
    if record["eventSource"] == "s3.amazonaws.com" and params.get("bucketName"):
        bucket = str(params["bucketName"])
        return "AWS::S3::Bucket", bucket, f"arn:aws:s3:::{bucket}"
    if record["eventSource"] == "lambda.amazonaws.com" and params.get("resource"):
        arn = str(params["resource"])
        return "AWS::Lambda::Function", arn.rsplit(":", 1)[-1], arn
    return None


def test_no_loops_the_suites_own_tags_cause_nothing(after_the_scenario: Harness, aws: EmbeddedAWS) -> None:
    harness = after_the_scenario
    tag_calls = [
        r
        for r in aws.trail.records()
        if is_suites(r)
        and not r.get("errorCode")
        and r["eventName"] in ("CreateTags", "PutBucketTagging", "TagResource20170331v2")
    ]
    assert tag_calls, "the suite tagged nothing in the scenario: nothing to prove"
    for gen in range(1, GENERATIONS + 1):
        events = [e for r in tag_calls if (e := config_item_of_tag_call(r, gen)) is not None]
        assert events, "no suite tag call was a changeguard: tag"
        outcome = generation(harness, aws, events + as_new_calls(tag_calls, gen))
        assert_quiet(gen, outcome)
