"""Missed events: the hourly reconciliation sweep judges every write call EventBridge never delivered.

CloudTrail delivers to EventBridge best effort. Here real calls are made against the embedded AWS as
several identities (IAM users, assumed roles with and without a source identity, the default user,
and the suite's own role), the embedded CloudTrail records them, and their events are replayed
through the template's rules with 5 % of them dropped. The sweep (``reconcile_changes``) reads
``LookupEvents``, which the embedded AWS answers from the calls it actually served, and must leave
exactly one verdict for every write call the correlator's rule passes, no more; a second sweep
writes nothing.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from changeguard.domain.reconcile import is_correlated_write
from changeguard.models.cloudtrail import CloudTrailRecord
from changeguard_tools import fixtures
from changeguard_tools.harness import Harness
from changeguard_tools.replay import wrap_record
from hardening.conftest import (
    CORRELATE,
    FunctionClients,
    all_ledger_entries,
    calls_by,
    ledger_entries,
    load_scenario_file,
    make_harness,
    rule_matcher,
    scaled,
    trail_since,
)
from sample_events import EVENTS, load_event

RECONCILE = "ReconcileChangesFunction"
CALLS = scaled(400)
DROP_RATE = 0.05


class Actors:
    """Clients of several identities, each a principal the trail names differently."""

    def __init__(self, aws: Any, h: Harness) -> None:
        iam = aws.client("iam")
        sts = aws.client("sts")
        self.clients: list[tuple[str, Callable[[str], Any]]] = [("moto (default user)", lambda s: aws.client(s))]
        for user in ("alice", "bob"):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            self.clients.append((f"IAM user {user}", _signed(aws, key["AccessKeyId"], key["SecretAccessKey"])))
        role = iam.create_role(RoleName="ops-admin", Path="/ops/", AssumeRolePolicyDocument=json.dumps({}))["Role"]
        for session, source_identity in (("CHG-1001", None), ("erin@example.com", "erin@example.com")):
            args = {"RoleArn": role["Arn"], "RoleSessionName": session}
            if source_identity:
                args["SourceIdentity"] = source_identity
            creds = sts.assume_role(**args)["Credentials"]
            self.clients.append(
                (
                    f"role ops-admin as {session}",
                    _signed(aws, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
                )
            )
        suite = FunctionClients(h, CORRELATE)
        self.suite: Callable[[str], Any] = suite


def _signed(aws: Any, key: str, secret: str, token: str | None = None) -> Callable[[str], Any]:
    return lambda service: aws.client(
        service, aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token
    )


WRITES: list[Callable[[Callable[[str], Any], int], Any]] = [
    lambda c, i: c("ec2").create_security_group(GroupName=f"sg-{i}", Description="test"),
    lambda c, i: c("s3").create_bucket(Bucket=f"bucket-{i}"),
    lambda c, i: c("sns").create_topic(Name=f"topic-{i}"),
    lambda c, i: c("sqs").create_queue(QueueName=f"queue-{i}"),
    lambda c, i: c("ssm").put_parameter(Name=f"/app/setting-{i}", Value="v", Type="String"),
    lambda c, i: c("events").put_rule(Name=f"rule-{i}", ScheduleExpression="rate(1 day)"),
    lambda c, i: c("iam").create_role(RoleName=f"app-role-{i}", AssumeRolePolicyDocument="{}"),
]


def make_changes(aws: Any, h: Harness, calls: int) -> None:
    """``calls`` write calls spread over the identities, plus calls no verdict may come from."""
    actors = Actors(aws, h)
    for i in range(calls):
        _, client = actors.clients[i % len(actors.clients)]
        WRITES[i % len(WRITES)](client, i)
        if i % 10 == 0:
            client("ec2").describe_security_groups()  # read-only: not recorded, nothing to judge
            with pytest.raises(Exception):  # noqa: B017 - a failed call (errorCode): not a change
                client("ec2").delete_security_group(GroupId="sg-0000000000000dead")
            actors.suite("sns").create_topic(Name=f"suite-topic-{i}")  # the suite's own call: never judged


def replay_dropping(h: Harness, records: list[dict[str, Any]], rate: float, seed: int = 8) -> list[dict[str, Any]]:
    """Deliver every record through the rules except ``rate`` of them (chosen at random); the dropped."""
    rng = random.Random(seed)
    dropped_at = set(rng.sample(range(len(records)), k=max(1, round(len(records) * rate))))
    for i, record in enumerate(records):
        if i in dropped_at:
            continue
        result = h.process(wrap_record(record))
        assert result["error"] is None, result["error"]
    return [records[i] for i in sorted(dropped_at)]


def verdict_ids(h: Harness) -> set[str]:
    return {e.change_id for e in all_ledger_entries(h) if e.entry == "VERDICT"}


def test_the_reconciliation_sweep_judges_every_write_call_whose_event_was_dropped_and_nothing_else(aws):
    h = make_harness(aws)
    mark = len(aws.trail.records())
    make_changes(aws, h, CALLS)
    recorded = trail_since(aws, mark)
    rule = rule_matcher(h, CORRELATE, "CloudTrailWriteCalls")

    dropped = replay_dropping(h, recorded, DROP_RATE)
    assert any(rule(wrap_record(r)) for r in dropped)  # some write calls really went missing
    # Every management write call the correlator's rule passes, from the start of the trail (the
    # stack's provisioning included): what the ledger must hold once the sweep has run.
    expected = {r["eventID"] for r in aws.trail.records() if r.get("managementEvent", True) and rule(wrap_record(r))}
    missing = expected - verdict_ids(h)
    assert {r["eventID"] for r in dropped if rule(wrap_record(r))} <= missing

    swept = h.run_schedule(RECONCILE)

    assert swept["error"] is None, swept["error"]
    assert verdict_ids(h) == expected  # every write call judged once, nothing judged that the rule drops
    [outcome] = swept["outcomes"]
    assert outcome["actions"][0].startswith(f"judged {len(missing)} missed change(s) of {len(expected)} write call(s)")

    entries = len(all_ledger_entries(h))
    mark = len(aws.trail.records())
    again = h.run_schedule(RECONCILE)
    assert again["error"] is None
    assert again["outcomes"][0]["actions"][0].startswith("judged 0 missed change(s)")
    assert len(all_ledger_entries(h)) == entries
    assert calls_by(trail_since(aws, mark), RECONCILE, "PutItem", "TransactWriteItems") == []


def test_the_sweeps_filter_passes_exactly_what_the_correlators_rule_passes(aws):
    """domain/reconcile.py repeats the CloudTrailWriteCalls pattern in code: the two must agree."""
    h = make_harness(aws)
    rule = rule_matcher(h, CORRELATE, "CloudTrailWriteCalls")
    env = h.functions[RECONCILE].environment
    sources = str(env["CORRELATED_EVENT_SOURCES"]).split(",")
    prefixes = (str(env["SUITE_ROLE_PREFIX"]),)
    suite_role = f"{prefixes[0]}changeguard-local-CorrelateChangeFunctionRole"
    details = [json.loads(p.read_text())["detail"] for p in sorted((EVENTS / "correlate_change").glob("*.json"))]
    details = [d for d in details if "eventSource" in d]
    variants: list[dict[str, Any]] = []
    for d in details:
        variants.append(d)
        variants.append({**d, "readOnly": True})
        variants.append({**d, "errorCode": "AccessDenied"})
        variants.append({**d, "eventSource": "athena.amazonaws.com"})
        variants.append({k: v for k, v in d.items() if k != "readOnly"})  # an old schema
        variants.append({**d, "eventType": "AwsConsoleSignIn"})
        variants.append({**d, "eventCategory": "Data", "managementEvent": False})
        variants.append({**d, "eventCategory": "NetworkActivity", "managementEvent": False})
        variants.append({k: v for k, v in d.items() if k not in ("eventCategory", "managementEvent")})
        user = dict(d.get("userIdentity") or {})
        user["sessionContext"] = {"sessionIssuer": {"type": "Role", "arn": suite_role}}
        variants.append({**d, "userIdentity": user})
    agree = [
        (
            v["eventName"],
            rule(wrap_record(v)),
            is_correlated_write(CloudTrailRecord.model_validate(v), sources, prefixes),
        )
        for v in variants
    ]
    assert [a for a in agree if a[1] != a[2]] == []
    assert {a[1] for a in agree} == {True, False}


def test_a_missed_change_cloudformation_made_is_judged_with_the_ticket_in_its_stacks_tags(aws):
    """CloudFormation creates a bucket for stack checkout-service (tagged ChangeTicket=CHG-1001, an
    approved ticket); the call's event never reaches the correlator. The sweep finds the call in
    ``LookupEvents`` and finds its ticket where the correlator would: in the stack's tags."""
    seed, _ = load_scenario_file("10-correlation.yaml")
    seed.pop("parameters")  # pipeline-deployer is not exempt here: its change is judged on its ticket
    h = make_harness(aws, at=datetime(2026, 11, 21, 15, 0, tzinfo=UTC))
    fixtures.seed(h, seed)
    record = load_event("correlate_change/09-invoked-by-cloudformation.json")["detail"]
    assert record["userIdentity"]["invokedBy"] == "cloudformation.amazonaws.com"
    # CloudFormation's own call, made on the stack's behalf: the trail records it, EventBridge lost it.
    aws.trail.put(record)

    swept = h.run_schedule(RECONCILE)

    assert swept["error"] is None, swept["error"]
    [verdict] = [e for e in ledger_entries(h, record["eventID"]) if e.entry == "VERDICT"]
    assert verdict.function == "reconcile_changes"
    assert verdict.verdict == "AUTHORIZED"
    judgement = verdict.body["judgement"]
    assert (judgement["ticket_id"], judgement["ticket_ref_source"]) == ("CHG-1001", "stack_tag")


def test_iam_changes_are_judged_with_the_ticket_in_their_tags_live_and_reconciled(aws):
    """The Tagging API does not cover IAM users and roles; their tags (and a managed policy's)
    come from IAM, so an IAM change whose ticket is in its resource's tags is not NO_TICKET."""
    h = make_harness(aws)
    iam = aws.client("iam")
    document = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    )

    def tagged(ticket: str) -> list[dict[str, str]]:
        return [{"Key": "ChangeTicket", "Value": ticket}]

    iam.create_role(RoleName="checkout-api", Path="/service/", AssumeRolePolicyDocument="{}", Tags=tagged("CHG-5150"))
    iam.create_user(UserName="deployer", Tags=tagged("CHG-5151"))
    policy = iam.create_policy(PolicyName="reports", PolicyDocument=document, Tags=tagged("CHG-5152"))["Policy"]["Arn"]
    expected = {"PutRolePolicy": "CHG-5150", "PutUserPolicy": "CHG-5151", "CreatePolicyVersion": "CHG-5152"}

    def change_all(suffix: str) -> list[dict[str, Any]]:
        mark = len(aws.trail.records())
        iam.put_role_policy(RoleName="checkout-api", PolicyName=f"inline-{suffix}", PolicyDocument=document)
        iam.put_user_policy(UserName="deployer", PolicyName=f"inline-{suffix}", PolicyDocument=document)
        iam.create_policy_version(PolicyArn=policy, PolicyDocument=document, SetAsDefault=True)
        return [r for r in trail_since(aws, mark) if r["eventName"] in expected]

    def judged(records: list[dict[str, Any]]) -> dict[str, tuple[str | None, str | None]]:
        ids = {r["eventID"]: r["eventName"] for r in records}
        return {
            ids[e.change_id]: (e.verdict, e.ticket_id)
            for e in all_ledger_entries(h)
            if e.entry == "VERDICT" and e.change_id in ids
        }

    live = change_all("live")
    for record in live:  # delivered: the correlator reads the tags
        assert h.process(wrap_record(record))["error"] is None
    missed = change_all("missed")  # never delivered: the sweep reads them
    swept = h.run_schedule(RECONCILE)
    assert swept["error"] is None, swept["error"]

    for records in (live, missed):
        assert judged(records) == {name: ("UNKNOWN_TICKET", ticket) for name, ticket in expected.items()}


def test_a_created_iam_role_is_judged_on_its_own_tags(aws):
    """enforce_tags judges a created IAM role (alert only) on the tags it was created with and those
    IAM holds, read with ListRoleTags (the Tagging API does not answer for roles): the function's
    role may call it, or the role would be left unjudged as unreadable."""
    h = make_harness(aws)
    iam = aws.client("iam")
    required = {"ChangeTicket": "CHG-5160", "Owner": "team-a", "Environment": "prod"}
    mark = len(aws.trail.records())
    iam.create_role(
        RoleName="tagged", AssumeRolePolicyDocument="{}", Tags=[{"Key": k, "Value": v} for k, v in required.items()]
    )
    iam.create_role(RoleName="untagged", AssumeRolePolicyDocument="{}")

    verdicts = {}
    for record in trail_since(aws, mark):
        result = h.process(wrap_record(record))
        assert result["error"] is None, result["error"]
        for outcome in result["outcomes"]:
            if outcome["function"] == "EnforceTagsFunction":
                verdicts[record["requestParameters"]["roleName"]] = outcome["verdict"]

    assert verdicts == {"tagged": "COMPLIANT", "untagged": "NON_COMPLIANT"}
