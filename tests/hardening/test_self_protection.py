"""Self-protection: changes to the suite are critical alerts, a heartbeat proves the path, alarms watch it.

* Changes to ChangeGuard itself (its rules disabled or edited, its functions or layer changed, its
  parameters changed, its ticket or ledger tables altered) are made for real against the embedded
  AWS, by a person, an exempt pipeline role and an IAM user; CloudTrail records them and they are
  delivered through the template's rules. Each must be a critical alert whatever its verdict; the
  same calls on anyone else's resources must not be.
* The heartbeat sends a canary through CloudTrail, EventBridge and the correlator every tick, and
  alerts once when one stops arriving (and once when they arrive again).
* The template alarms on any message in every queue and on every function's failed invocations.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from changeguard import factory
from changeguard.domain.heartbeat import HEARTBEAT_KEY, RULES_KEY
from changeguard.settings import Wiring
from changeguard_tools.embedded.faults import fast_retries
from changeguard_tools.replay import wrap_record
from changeguard_tools.template import Template, resolve
from hardening.conftest import CORRELATE, ledger_entries, make_harness, rule_matcher, trail_since

HEARTBEAT = "SendHeartbeatFunction"
PIPELINE_ROLE = "pipeline-deployer"
SUITE_ITSELF = "changes ChangeGuard itself"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


# -- changes to the suite itself ----------------------------------------------------------------------------
class World:
    """A stack in the embedded AWS with the suite's rules, function and layer, and three kinds of actor."""

    def __init__(self, aws: Any) -> None:
        self.aws = aws
        pipeline = aws.client("iam").create_role(RoleName=PIPELINE_ROLE, AssumeRolePolicyDocument=TRUST)["Role"]
        self.h = make_harness(aws, **{"ExemptPrincipalArns": pipeline["Arn"]})
        stack = self.h.ctx.stack_name
        self.rule = f"{stack}-{CORRELATE}CloudTrailWriteCalls-9XK2M4P6Q8R0"
        self.function = f"{stack}-{CORRELATE}-Q1W2E3R4T5Y6"
        self.layer = f"{stack}-runtime"
        self.ledger = str(self.h.ctx.refs["ChangeLedgerTable"])
        self.tickets = str(self.h.ctx.refs["TicketTable"])
        self.code = _zip()
        for name in (self.rule, "orders-team-nightly-export"):
            aws.client("events").put_rule(Name=name, EventPattern=json.dumps({"source": ["aws.ec2"]}))
        role = aws.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
        for name in (self.function, "orders-api"):
            aws.client("lambda").create_function(
                FunctionName=name, Runtime="python3.12", Role=role, Handler="app.h", Code={"ZipFile": self.code}
            )
        aws.client("dynamodb").create_table(
            TableName="orders",
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.actors: dict[str, Callable[[str], Any]] = {
            "a person (SSO administrator)": self._assumed(
                "AWSReservedSSO_AdministratorAccess_a1b2c3d4e5f6a7b8",
                "mallory@example.com",
                "/aws-reserved/sso.amazonaws.com/",
            ),
            "the exempt pipeline role": self._assumed(PIPELINE_ROLE, "1732197600123", existing=pipeline["Arn"]),
            "an IAM user": self._user("alice"),
        }

    def _assumed(self, role: str, session: str, path: str = "/", existing: str | None = None) -> Callable[[str], Any]:
        arn = (
            existing
            or self.aws.client("iam").create_role(RoleName=role, Path=path, AssumeRolePolicyDocument=TRUST)["Role"][
                "Arn"
            ]
        )
        creds = self.aws.client("sts").assume_role(RoleArn=arn, RoleSessionName=session)["Credentials"]
        return lambda s: self.aws.client(
            s,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )

    def _user(self, name: str) -> Callable[[str], Any]:
        iam = self.aws.client("iam")
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return lambda s: self.aws.client(
            s, aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
        )

    def deliver(self, make_call: Callable[[], Any]) -> list[dict[str, Any]]:
        """Make the call, deliver what CloudTrail recorded through the rules; the correlator's outcomes,
        each with the reasons of the verdict it ledgered."""
        mark = len(self.aws.trail.records())
        make_call()
        outcomes = []
        for record in trail_since(self.aws, mark):
            result = self.h.process(wrap_record(record))
            assert result["error"] is None, result["error"]
            for outcome in result["outcomes"]:
                if outcome["function"] == CORRELATE:
                    [verdict] = [e for e in ledger_entries(self.h, record["eventID"]) if e.entry == "VERDICT"]
                    reasons = [r["detail"] for r in verdict.body["judgement"]["reasons"]]
                    outcomes.append({**outcome, "reasons": reasons})
        return outcomes


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def h(event, context):\n    return None\n")
    return buffer.getvalue()


def suite_changes(w: World) -> dict[str, Callable[[Callable[[str], Any]], Any]]:
    """What an attacker (or a hurried operator) does to the suite, one call each."""
    env = "/changeguard/dev"
    return {
        "its correlation rule disabled": lambda c: c("events").disable_rule(Name=w.rule),
        "its correlation rule edited": lambda c: c("events").put_rule(
            Name=w.rule, EventPattern=json.dumps({"source": ["aws.nothing"]})
        ),
        "its rule's target removed": lambda c: c("events").remove_targets(Rule=w.rule, Ids=["CorrelateChange"]),
        "its function reconfigured": lambda c: c("lambda").update_function_configuration(
            FunctionName=w.function, Description="patched"
        ),
        "its function throttled to zero": lambda c: c("lambda").put_function_concurrency(
            FunctionName=w.function, ReservedConcurrentExecutions=0
        ),
        "its layer replaced": lambda c: c("lambda").publish_layer_version(
            LayerName=w.layer, Content={"ZipFile": w.code}
        ),
        "its enforcement mode changed": lambda c: c("ssm").put_parameter(
            Name=f"{env}/enforcement-mode", Value="observe", Type="String", Overwrite=True
        ),
        "its exemptions changed": lambda c: c("ssm").put_parameter(
            Name=f"{env}/exempt-principal-arns", Value="*", Type="String", Overwrite=True
        ),
        "its ledger's backups switched off": lambda c: c("dynamodb").update_continuous_backups(
            TableName=w.ledger, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
        ),
        "its ticket table altered": lambda c: c("dynamodb").update_table(
            TableName=w.tickets,
            BillingMode="PROVISIONED",
            ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
        ),
    }


def everyone_elses_changes() -> dict[str, Callable[[Callable[[str], Any]], Any]]:
    """The same kinds of call on resources that are not the suite's."""
    return {
        "another team's rule disabled": lambda c: c("events").disable_rule(Name="orders-team-nightly-export"),
        "another function reconfigured": lambda c: c("lambda").update_function_configuration(
            FunctionName="orders-api", Description="patched"
        ),
        "an application parameter changed": lambda c: c("ssm").put_parameter(
            Name="/orders/dev/feature-flag", Value="on", Type="String", Overwrite=True
        ),
        "another table altered": lambda c: c("dynamodb").update_continuous_backups(
            TableName="orders", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": False}
        ),
    }


def _summary(outcomes: list[dict[str, Any]]) -> tuple[str | None, list[str]]:
    [outcome] = outcomes
    return outcome["verdict"], sorted(a["severity"] for a in outcome["alerts"])


def test_changes_to_the_suite_itself_are_critical_alerts_whoever_makes_them(aws):
    w = World(aws)
    actors = list(w.actors.items())
    seen: dict[str, tuple[str, str | None, list[str], bool]] = {}
    for i, (what, call) in enumerate(suite_changes(w).items()):
        who, client = actors[i % len(actors)]
        outcomes = w.deliver(lambda call=call, client=client: call(client))
        verdict, severities = _summary(outcomes)
        itself = any(SUITE_ITSELF in r for o in outcomes for r in o["reasons"])
        seen[what] = (who, verdict, severities, itself)

    assert {what: (s[2], s[3]) for what, s in seen.items()} == {what: (["critical"], True) for what in seen}
    # Whoever makes them: the exempt pipeline role's changes are EXEMPT, and alert all the same.
    assert {s[1] for s in seen.values() if s[0] == "the exempt pipeline role"} == {"EXEMPT"}


def test_the_same_calls_on_resources_that_are_not_the_suites_are_judged_as_usual(aws):
    w = World(aws)
    person = w.actors["a person (SSO administrator)"]
    pipeline = w.actors["the exempt pipeline role"]
    for what, call in everyone_elses_changes().items():
        by_person = w.deliver(lambda call=call: call(person))
        assert _summary(by_person) == ("NO_TICKET", ["high"]), what
        assert not any(SUITE_ITSELF in r for r in by_person[0]["reasons"]), what
        by_pipeline = w.deliver(lambda call=call: call(pipeline))
        assert _summary(by_pipeline) == ("EXEMPT", []), what


def test_a_change_to_the_suite_during_a_ticket_source_outage_still_alerts_critical(aws):
    """UNVERIFIED changes share one degraded-mode alert; tampering with the suite never waits for it."""
    w = World(aws)
    session = w._assumed("release-operator", "CHG-1001")  # names a ticket: it must be looked up
    aws.faults.fail("503", operations=["Query"], body_contains=w.tickets)
    with fast_retries():
        outcomes = w.deliver(lambda: session("events").disable_rule(Name=w.rule))
    [outcome] = outcomes
    assert outcome["verdict"] == "UNVERIFIED"
    assert sorted((a["severity"], a["verdict"]) for a in outcome["alerts"]) == [
        ("critical", "UNVERIFIED"),
        ("high", "UNVERIFIED"),  # the degraded-mode alert of the outage
    ]


def test_the_follow_up_knows_the_suites_resources_as_the_correlator_does(aws):
    """Re-judged without them, an UNVERIFIED change to the suite lost its tampering flag."""
    h = make_harness(aws)
    fn = "arn:aws:lambda:us-east-1:123456789012:function:changeguard-local-CorrelateChange-1A2B3C"
    correlator = h.module(CORRELATE).build_service().suite
    follow_up = h.module("FollowUpChangesFunction").build_service().suite
    assert follow_up is not None and correlator is not None
    assert follow_up == correlator and follow_up.owns(fn)


def test_every_resource_the_template_names_is_recognised_as_the_suites(aws):
    """The patterns come from the wiring (stack name, ``changeguard-<env>-`` names, ``/changeguard/``)."""
    template = Template()
    ctx = template.context({"Environment": "prod", "CreateDefaultCalendar": "true"}, stack_name="acme-changeguard")
    for logical_id in template.resources:
        ctx.refs.setdefault(logical_id, f"{logical_id}-physical")
    env = {k: str(v) for k, v in template.functions(ctx)[CORRELATE].environment.items()}
    suite = factory.suite_resources(Wiring.from_env(env))
    names = physical_arns(template, ctx)
    assert len(names) > 40
    assert [arn for arn in names if not suite.owns(arn)] == []
    others = [
        "arn:aws:lambda:us-east-1:123456789012:function:orders-api",
        "arn:aws:events:us-east-1:123456789012:rule/acme-orders-export",
        "arn:aws:ssm:us-east-1:123456789012:parameter/orders/prod/flag",
        "arn:aws:dynamodb:us-east-1:123456789012:table/orders",
        "arn:aws:cloudformation:us-east-1:123456789012:stack/acme-web/1",
    ]
    assert [arn for arn in others if suite.owns(arn)] == []


def physical_arns(template: Template, ctx: Any) -> list[str]:
    """The ARNs CloudFormation gives the stack's resources: explicit names, else ``<stack>-<LogicalId>-<suffix>``."""
    stack, prefix = ctx.stack_name, "arn:aws:{service}:us-east-1:123456789012:"
    arns: list[str] = [f"arn:aws:cloudformation:us-east-1:123456789012:stack/{stack}/0f1e2d3c"]

    def generated(logical_id: str) -> str:
        return f"{stack}-{logical_id}-1A2B3C4D5E6F"[:64]

    def named(props: dict[str, Any], key: str, logical_id: str) -> str:
        value = props.get(key)
        return str(resolve(value, ctx)) if value is not None else generated(logical_id)

    for logical_id, spec in template.resources.items():
        props, kind = spec.get("Properties", {}), spec.get("Type")
        if "Condition" in spec and not ctx.conditions.get(spec["Condition"], False):
            continue
        if kind == "AWS::Serverless::Function":
            arns.append(prefix.format(service="lambda") + f"function:{named(props, 'FunctionName', logical_id)}")
            arns.append(f"arn:aws:iam::123456789012:role/{generated(logical_id + 'Role')}")
            for event_name, event in (props.get("Events") or {}).items():
                if event.get("Type") in ("EventBridgeRule", "Schedule"):
                    rule = named(event.get("Properties", {}), "Name", logical_id + event_name)
                    arns.append(prefix.format(service="events") + f"rule/{rule}")
        elif kind == "AWS::Serverless::LayerVersion":
            arns.append(prefix.format(service="lambda") + f"layer:{named(props, 'LayerName', logical_id)}")
        elif kind == "AWS::DynamoDB::Table":
            arns.append(prefix.format(service="dynamodb") + f"table/{named(props, 'TableName', logical_id)}")
        elif kind == "AWS::SQS::Queue":
            arns.append(prefix.format(service="sqs") + named(props, "QueueName", logical_id))
        elif kind == "AWS::SNS::Topic":
            arns.append(prefix.format(service="sns") + named(props, "TopicName", logical_id))
        elif kind == "AWS::SSM::Parameter":
            arns.append(prefix.format(service="ssm") + f"parameter/{named(props, 'Name', logical_id).lstrip('/')}")
        elif kind == "AWS::SSM::Document":
            arns.append(prefix.format(service="ssm") + f"document/{named(props, 'Name', logical_id)}")
        elif kind == "AWS::IAM::Role":
            arns.append(f"arn:aws:iam::123456789012:role/{named(props, 'RoleName', logical_id)}")
        elif kind == "AWS::S3::Bucket":
            arns.append(f"arn:aws:s3:::{named(props, 'BucketName', logical_id).lower()}")
    return arns


# -- the heartbeat --------------------------------------------------------------------------------------------
class Path:
    """The heartbeat's schedule and the path its canaries take (CloudTrail -> rules -> correlator)."""

    def __init__(self, aws: Any, start: datetime) -> None:
        self.aws = aws
        self.h = make_harness(aws, at=start)
        self.broken = False

    def tick(self, at: datetime) -> list[dict[str, Any]]:
        """The schedule fires at ``at``; the canary it sends is delivered unless the path is broken."""
        assert self.h.clock is not None
        self.h.clock.set(at)  # type: ignore[attr-defined]
        self.h.refresh_clock()
        mark = len(self.aws.trail.records())
        result = self.h.run_schedule(HEARTBEAT)
        assert result["error"] is None, result["error"]
        alerts = [a for o in result["outcomes"] for a in o["alerts"]]
        canaries = [r for r in trail_since(self.aws, mark) if r["eventName"] == "PutParameter"]
        assert len(canaries) <= 1
        if canaries and not self.broken:
            delivered = self.h.process(wrap_record(canaries[0]))
            assert delivered["routed_to"] == [CORRELATE] and delivered["error"] is None
            [outcome] = delivered["outcomes"]
            assert outcome["verdict"] == "NOT_A_CHANGE" and outcome["alerts"] == []
        return alerts


def test_the_heartbeat_canary_takes_its_own_rule_to_the_correlator_and_is_never_judged(aws):
    path = Path(aws, datetime(2026, 11, 22, 1, 15, tzinfo=UTC))
    mark = len(aws.trail.records())
    path.h.run_schedule(HEARTBEAT)
    [canary] = [r for r in trail_since(aws, mark) if r["eventName"] == "PutParameter"]
    event = wrap_record(canary)
    assert rule_matcher(path.h, CORRELATE, "HeartbeatCanary")(event)
    assert not rule_matcher(path.h, CORRELATE, "CloudTrailWriteCalls")(event)  # a suite call: dropped at the bus
    path.h.process(event)
    entries = [e.entry for e in ledger_entries(path.h, HEARTBEAT_KEY)]
    assert entries == ["ARRIVED#2026-11-22T01:15:00Z", "SENT#2026-11-22T01:15:00Z"]
    assert ledger_entries(path.h, canary["eventID"]) == []  # no verdict, no alert
    # The same write by anyone else is a change to the suite: judged, and critical.
    forged = json.loads(json.dumps(canary))
    forged["userIdentity"] = {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/mallory", "userName": "mallory"}
    forged["eventID"] = "forged-canary"
    result = path.h.process(wrap_record(forged))
    assert [a["severity"] for o in result["outcomes"] for a in o["alerts"]] == ["critical"]


def test_the_heartbeat_alerts_once_when_its_canary_stops_arriving_and_once_when_it_is_back(aws):
    start = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    path = Path(aws, start)

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    timeline: list[tuple[int, list[str]]] = []
    for minute in (0, 15, 30, 45):  # healthy: every canary arrives
        timeline.append((minute, [a["subject"] for a in path.tick(at(minute))]))
    path.broken = True  # the trail stops, a rule is disabled, the correlator fails: canaries vanish
    for minute in (60, 75, 90, 105, 120):
        timeline.append((minute, [a["subject"] for a in path.tick(at(minute))]))
    path.broken = False
    for minute in (135, 150, 165, 180):
        timeline.append((minute, [a["subject"] for a in path.tick(at(minute))]))

    alerting = [(m, subjects) for m, subjects in timeline if subjects]
    assert alerting == [
        # The canary of minute 60 is 30 minutes late at minute 90: one critical alert for the outage.
        (90, ["ChangeGuard heartbeat missing: changes may not be reaching the suite"]),
        # The canary due at minute 150 (minute 120's) is lost, but minute 135's, sent after it, arrived:
        # the path works again, one recovery alert.
        (150, ["ChangeGuard heartbeat recovered: canaries reach the suite again"]),
    ]
    entries = [e.entry for e in ledger_entries(path.h, HEARTBEAT_KEY) if e.entry.startswith(("DOWN#", "UP#"))]
    assert entries == ["DOWN#000001", "UP#000001"]


def test_a_redelivered_heartbeat_tick_sends_no_second_canary_once_the_first_arrived(aws):
    path = Path(aws, datetime(2026, 11, 22, 1, 15, tzinfo=UTC))
    assert path.h.clock is not None
    path.tick(path.h.clock.now())
    mark = len(aws.trail.records())
    again = path.h.run_schedule(HEARTBEAT)
    assert again["outcomes"][0]["actions"] == ["canary 2026-11-22T01:15:00Z already sent and arrived"]
    assert [r for r in trail_since(aws, mark) if r["eventName"] == "PutParameter"] == []


WRITE_CALLS = f"{CORRELATE}CloudTrailWriteCalls"  # SAM's logical id of the correlator's change rule


def _break_rule(how: str, events: Any, rule: str) -> Callable[[], None]:
    """Break ``rule`` as ``how`` says; returns what repairs it (as a redeploy would)."""
    target = {"Id": f"{WRITE_CALLS}LambdaTarget", "Arn": events.list_targets_by_rule(Rule=rule)["Targets"][0]["Arn"]}
    pattern = events.describe_rule(Name=rule)["EventPattern"]
    if how == "disabled":
        events.disable_rule(Name=rule)
        return lambda: events.enable_rule(Name=rule)
    events.remove_targets(Rule=rule, Ids=[target["Id"]])
    if how == "target removed":
        return lambda: events.put_targets(Rule=rule, Targets=[target])
    events.delete_rule(Name=rule)

    def recreate() -> None:
        events.put_rule(Name=rule, EventPattern=pattern, State="ENABLED")
        events.put_targets(Rule=rule, Targets=[target])

    return recreate


@pytest.mark.parametrize("how", ["disabled", "target removed", "deleted"])
def test_the_heartbeat_alerts_once_when_the_rule_carrying_changes_breaks_and_once_when_it_is_repaired(aws, how):
    """The canary never takes CloudTrailWriteCalls (a suite call): the tick reads that rule itself."""
    start = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    path = Path(aws, start)
    events = path.h.admin_client("events")
    rule = str(path.h.ctx.refs[WRITE_CALLS])

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    timeline: list[tuple[int, list[str]]] = []
    for minute in (0, 15, 30):
        timeline.append((minute, [a["subject"] for a in path.tick(at(minute))]))
    repair = _break_rule(how, events, rule)  # canaries still arrive: their own rule is untouched
    for minute in (45, 60, 75):
        timeline.append((minute, [a["subject"] for a in path.tick(at(minute))]))
    repair()
    for minute in (90, 105):
        timeline.append((minute, [a["subject"] for a in path.tick(at(minute))]))

    alerting = [(m, subjects) for m, subjects in timeline if subjects]
    assert alerting == [
        (45, ["ChangeGuard rule CloudTrailWriteCalls broken: its changes no longer reach the suite"]),
        (90, ["ChangeGuard rule CloudTrailWriteCalls repaired: its changes reach the suite again"]),
    ]
    facts = [e.entry for e in ledger_entries(path.h, RULES_KEY) if e.entry.startswith(("DOWN#", "UP#"))]
    assert facts == ["DOWN#CloudTrailWriteCalls#000001", "UP#CloudTrailWriteCalls#000001"]
    # The repair put the template's pattern back (a recreated rule too): the first baselines stand.
    baselines = [e.entry for e in ledger_entries(path.h, RULES_KEY) if e.entry.startswith("PATTERN#")]
    assert baselines == [f"PATTERN#{label}#000001" for label in sorted(WATCHED_LABELS)]
    heartbeat = [e.entry for e in ledger_entries(path.h, HEARTBEAT_KEY) if e.entry.startswith(("DOWN#", "UP#"))]
    assert heartbeat == []  # the canary alone saw nothing wrong


WATCHED_LABELS = ("CloudTrailWriteCalls", "ConfigItemChanges", "HeartbeatCanary", "CloudTrailTagCalls")


def test_the_heartbeat_alerts_once_when_a_rule_carrying_changes_is_narrowed_and_once_when_it_is_put_back(aws):
    """PutRule can exclude a principal (or the PutRule itself) while the rule stays enabled and targeted."""
    start = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    path = Path(aws, start)
    events = path.h.admin_client("events")
    rule = str(path.h.ctx.refs[WRITE_CALLS])
    template_pattern = events.describe_rule(Name=rule)["EventPattern"]
    narrowed = json.loads(template_pattern)
    narrowed.setdefault("detail", {})["eventSource"] = [{"anything-but": ["events.amazonaws.com"]}]

    def at(minutes: int) -> datetime:
        return start + timedelta(minutes=minutes)

    timeline: list[tuple[int, list[dict[str, Any]]]] = []
    for minute in (0, 15):
        timeline.append((minute, path.tick(at(minute))))
    events.put_rule(Name=rule, EventPattern=json.dumps(narrowed), State="ENABLED")
    for minute in (30, 45):
        timeline.append((minute, path.tick(at(minute))))
    events.put_rule(Name=rule, EventPattern=template_pattern, State="ENABLED")  # a redeploy puts it back
    for minute in (60, 75):
        timeline.append((minute, path.tick(at(minute))))

    alerting = [(m, [(a["subject"], a["severity"]) for a in alerts]) for m, alerts in timeline if alerts]
    subject = "ChangeGuard rule CloudTrailWriteCalls pattern changed: match it to an approved change"
    assert alerting == [(30, [(subject, "high")]), (60, [(subject, "high")])]
    first, second = (e.body["alert"] for e in ledger_entries(path.h, RULES_KEY) if "rule-pattern-changed" in e.entry)
    assert "events.amazonaws.com" in first["details"]["pattern"]
    assert first["details"]["fingerprint"] == second["details"]["previous_fingerprint"]
    assert second["details"]["fingerprint"] == first["details"]["previous_fingerprint"]
    baselines = [e.entry for e in ledger_entries(path.h, RULES_KEY) if e.entry.startswith("PATTERN#CloudTrailWrite")]
    assert baselines == [f"PATTERN#CloudTrailWriteCalls#00000{n}" for n in (1, 2, 3)]
    outages = [e.entry for e in ledger_entries(path.h, RULES_KEY) if e.entry.startswith(("DOWN#", "UP#"))]
    assert outages == []  # enabled and targeted all along: only the pattern shows it


def test_the_heartbeat_watches_every_rule_that_carries_changes_to_the_correlator_and_the_tag_enforcer(aws):
    h = make_harness(aws)
    watched = h.functions[HEARTBEAT].environment["HEARTBEAT_WATCHED_RULES"].split(",")
    carrying = [(CORRELATE, rule.name) for rule in h.functions[CORRELATE].rules]
    carrying.append(("EnforceTagsFunction", "CloudTrailTagCalls"))
    assert sorted(watched) == sorted(
        f"{event}:{h.ctx.refs[function + event]}:{h.ctx.attrs[(function, 'Arn')]}" for function, event in carrying
    )


# -- the template's alarms ------------------------------------------------------------------------------------
TEMPLATE = Template()
RESOURCES = TEMPLATE.resources
ALARMS = {k: v["Properties"] for k, v in RESOURCES.items() if v["Type"] == "AWS::CloudWatch::Alarm"}
FUNCTIONS = sorted(k for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function")
QUEUES = sorted(k for k, v in RESOURCES.items() if v["Type"] == "AWS::SQS::Queue")


def _alarms_on(namespace: str, metric: str, dimension: str, target: Any) -> list[dict[str, Any]]:
    return [
        a
        for a in ALARMS.values()
        if a.get("Namespace") == namespace
        and a.get("MetricName") == metric
        and {"Name": dimension, "Value": target} in a.get("Dimensions", [])
    ]


def _notifies_operators(alarm: dict[str, Any]) -> bool:
    return {"Ref": "OpsTopic"} in alarm.get("AlarmActions", [])


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_function_has_an_alarm_on_any_failed_invocation(function):
    alarms = _alarms_on("AWS/Lambda", "Errors", "FunctionName", {"Ref": function})
    assert alarms, f"{function} has no Errors alarm"
    assert any(
        a["ComparisonOperator"] == "GreaterThanThreshold" and a["Threshold"] == 0 and a["Statistic"] == "Sum"
        for a in alarms
    )
    assert all(_notifies_operators(a) for a in alarms)


@pytest.mark.parametrize("queue", QUEUES)
def test_every_queue_has_an_alarm_on_any_message_in_it(queue):
    alarms = _alarms_on(
        "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", {"Fn::GetAtt": [queue, "QueueName"]}
    )
    assert alarms, f"{queue} has no alarm on ApproximateNumberOfMessagesVisible"
    assert any(
        a["ComparisonOperator"] == "GreaterThanThreshold" and a["Threshold"] == 0 and a["Statistic"] == "Maximum"
        for a in alarms
    )
    assert all(_notifies_operators(a) for a in alarms)


def test_the_operations_topic_is_encrypted_and_cloudwatch_may_publish_to_it():
    topic = RESOURCES["OpsTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "ChangeGuardKey"}
    statement = RESOURCES["OpsTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and statement["Action"] == "sns:Publish"
    key_policy = RESOURCES["ChangeGuardKey"]["Properties"]["KeyPolicy"]["Statement"]
    assert any("cloudwatch.amazonaws.com" in s.get("Principal", {}).get("Service", []) for s in key_policy)


#: Every DynamoDB API call that can write an item's attributes, with the IAM actions it is authorized
#: as: "Using IAM with DynamoDB transactions" (a transaction's Put and Update are PutItem and
#: UpdateItem) and "IAM security policies with PartiQL for DynamoDB" (INSERT, UPDATE and DELETE
#: statements, alone, batched or in a transaction, are PartiQLInsert, PartiQLUpdate, PartiQLDelete).
ITEM_WRITES: dict[str, tuple[str, ...]] = {
    "PutItem": ("dynamodb:PutItem",),
    "UpdateItem": ("dynamodb:UpdateItem",),
    "BatchWriteItem": ("dynamodb:BatchWriteItem",),
    "TransactWriteItems": ("dynamodb:PutItem", "dynamodb:UpdateItem"),
    "ExecuteStatement": ("dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete"),
    "BatchExecuteStatement": ("dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete"),
    "ExecuteTransaction": ("dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete"),
}
APPROVAL_ATTRIBUTES = {"approver", "approver_name", "approved_at"}
#: Condition keys the item API puts in the request: a Deny may narrow itself to approval items with it.
ATTRIBUTE_FILTERED = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem"}


def _ticket_table_denials() -> list[dict[str, Any]]:
    ctx = TEMPLATE.context()
    policy = resolve(TEMPLATE.resources["TicketTable"]["Properties"]["ResourcePolicy"], ctx)
    statements = policy["PolicyDocument"]["Statement"]
    return [st for st in statements if st["Effect"] == "Deny" and st.get("Principal") == "*"]


@pytest.mark.parametrize(
    ("operation", "action"), [(op, a) for op, actions in ITEM_WRITES.items() for a in actions], ids=str
)
def test_only_approvers_can_write_an_approval_whatever_api_they_use(operation, action):
    """An admin with dynamodb:* must not forge an approval through any write API (SOC 2 CC8: who approved).

    Each action is denied to every principal outside /changeguard/approvers/, and the Deny is narrowed
    only by the approval attributes where the request names them (the item API's dynamodb:Attributes);
    a PartiQL statement's attributes are not filtered that way, so its Deny is not narrowed at all.
    """
    ctx = TEMPLATE.context()
    approvers = f"arn:aws:iam::{ctx.account}:role/changeguard/approvers/*"
    covering = [st for st in _ticket_table_denials() if action in st["Action"]]
    assert covering, f"{operation} ({action}) can write the ticket table without being an approver"
    for st in covering:
        condition = dict(st.get("Condition") or {})
        assert condition.pop("ArnNotLike") == {"aws:PrincipalArn": approvers}, st
        if action in ATTRIBUTE_FILTERED and condition:
            assert list(condition) == ["ForAnyValue:StringEquals"], st
            assert set(condition["ForAnyValue:StringEquals"]["dynamodb:Attributes"]) == APPROVAL_ATTRIBUTES, st
        else:
            assert not condition, f"{action} is denied only under {condition}, which PartiQL cannot be filtered on"
