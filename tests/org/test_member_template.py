"""Organization scale: member accounts and regions forward to the central bus, filtered at the source.

The member template (member/member-account.yaml) and the central template.yaml are loaded as data and
evaluated with our EventBridge matcher, the source of truth for patterns: an event is delivered to the
default bus of its own account and region, the member stack there forwards it (or not) to the central
bus, and the central rules route it to functions. Forwarding keeps the event's own account and region.
Then the same path runs against the embedded AWS (moto delivers bus-to-bus across accounts and regions;
its matcher is not trusted for correctness, ours is), and forwarded events are judged by the central
stack through the harness.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import boto3
import pytest
from changeguard.domain.change import NOT_CHANGE_RESOURCE_TYPES
from changeguard.quarantine import REGISTRY
from changeguard.quarantine.finder import PERMISSIONS as FINDER_PERMISSIONS
from changeguard.services.tag_enforcement import ALERT_ONLY_PERMISSIONS
from changeguard_tools import fixtures
from changeguard_tools.demo import load_scenario
from changeguard_tools.harness import FixedClock, Harness, quiet_stream
from changeguard_tools.patterns import matches
from changeguard_tools.replay import is_eventbridge_event
from changeguard_tools.template import Context, Template, resolve

ROOT = Path(__file__).resolve().parents[2]
MEMBER_PATH = ROOT / "member" / "member-account.yaml"

CENTRAL = "123456789012"  # the account of the samples and of the harness
CENTRAL_REGION = "eu-west-1"
CENTRAL_BUS = f"arn:aws:events:{CENTRAL_REGION}:{CENTRAL}:event-bus/default"
ORG = "o-a1b2c3d4e5"
ACCOUNT_A, ACCOUNT_B, ACCOUNT_C = "111111111111", "222222222222", "333333333333"
PARAMS = {
    "CentralAccountId": CENTRAL,
    "CentralRegion": CENTRAL_REGION,
    "CentralEventBusArn": CENTRAL_BUS,
    "OrganizationId": ORG,
}

MEMBER = Template(MEMBER_PATH)
CENTRAL_TEMPLATE = Template()


# -- the two stacks as data ------------------------------------------------------------------------
@dataclass
class MemberStack:
    """The member template deployed in one account and region: its resources, resolved."""

    account: str
    region: str
    ctx: Context
    resources: dict[str, dict[str, Any]]

    def of_type(self, type_name: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.resources.items() if v["Type"] == type_name}

    @property
    def rules(self) -> dict[str, dict[str, Any]]:
        return self.of_type("AWS::Events::Rule")

    def forwarding_rules(self, event: dict[str, Any]) -> list[str]:
        """The rules of this stack that forward ``event`` (which must have arrived on this bus)."""
        assert (event["account"], event["region"]) == (self.account, self.region)
        return [name for name, rule in self.rules.items() if matches(rule["Properties"]["EventPattern"], event)]


def member_stack(account: str, region: str, **params: Any) -> MemberStack:
    ctx = MEMBER.context({**PARAMS, **params}, account=account, region=region)
    ctx.attrs.update(
        {
            ("ForwardingRole", "Arn"): f"arn:aws:iam::{account}:role/changeguard/ForwardingRole-X",
            ("ForwardingDeadLetterQueue", "Arn"): f"arn:aws:sqs:{region}:{account}:changeguard-forward-dlq",
            ("ForwardingDeadLetterQueue", "QueueName"): "changeguard-forward-dlq",
        }
    )
    for logical in MEMBER.resources:
        ctx.refs.setdefault(logical, f"{logical}-physical")
    resources = {
        logical: resolve(spec, ctx)
        for logical, spec in MEMBER.resources.items()
        if "Condition" not in spec or ctx.conditions[spec["Condition"]]
    }
    return MemberStack(account, region, ctx, resources)


def central_context(**params: Any) -> Context:
    ctx = CENTRAL_TEMPLATE.context(params, account=CENTRAL, region=CENTRAL_REGION)
    for logical, spec in CENTRAL_TEMPLATE.resources.items():
        ctx.refs.setdefault(logical, f"{logical}-physical")
        # The rules SAM generates from a function's EventBridgeRule events (<Function><Event>).
        for event, source in spec.get("Properties", {}).get("Events", {}).items():
            if source.get("Type") == "EventBridgeRule":
                ctx.refs.setdefault(f"{logical}{event}", f"{logical}{event}-physical")
    return ctx


CENTRAL_FUNCTIONS = CENTRAL_TEMPLATE.functions(central_context())
CENTRAL_RULES = [(f.logical_id, r.name, r.pattern) for f in CENTRAL_FUNCTIONS.values() for r in f.rules]


def central_routes(event: dict[str, Any]) -> set[tuple[str, str]]:
    """(function, rule) of every central rule that matches ``event`` on the central bus."""
    return {(function, rule) for function, rule, pattern in CENTRAL_RULES if matches(pattern, event)}


def deliver(event: dict[str, Any]) -> set[tuple[str, str]]:
    """What reaches the central functions when ``event`` happens in its own account and region."""
    if (event["account"], event["region"]) == (CENTRAL, CENTRAL_REGION):
        return central_routes(event)  # already on the central bus
    stack = member_stack(event["account"], event["region"])
    rules = stack.forwarding_rules(event)
    for name in rules:
        (target,) = stack.rules[name]["Properties"]["Targets"]
        assert target["Arn"] == CENTRAL_BUS
    # EventBridge delivers the event unchanged: `account` and `region` stay the member's.
    return central_routes(event) if rules else set()


def rehome(event: dict[str, Any], account: str, region: str, event_id: str | None = None) -> dict[str, Any]:
    """The same event, as if it had happened in ``account`` and ``region``."""
    moved = json.loads(json.dumps(event).replace(CENTRAL, account))
    moved["region"] = region
    detail = moved["detail"]
    if "awsRegion" in detail:
        detail["awsRegion"] = region
    if event_id and "eventID" in detail:
        detail["eventID"] = event_id
    return moved


def sample(path: str) -> dict[str, Any]:
    return json.loads((ROOT / "events" / path).read_text())


#: Rules for events only the central stack makes, in its own account (issue 8: the heartbeat's canary,
#: a write by the central heartbeat role): no member ever sees one, so none forwards one.
CENTRAL_ONLY_RULES = {("CorrelateChangeFunction", "HeartbeatCanary")}


def central_samples() -> list[tuple[str, dict[str, Any]]]:
    """Every sample event that a central rule matches (the events the suite exists to see)."""
    out = []
    for spec in CENTRAL_FUNCTIONS.values():
        for path in sorted((ROOT / "events" / spec.code_uri.name).glob("*.json")):
            event = json.loads(path.read_text())
            if is_eventbridge_event(event) and central_routes(event) - CENTRAL_ONLY_RULES:
                out.append((f"{spec.code_uri.name}/{path.name}", event))
    return out


SAMPLES = central_samples()


# -- the template is valid -------------------------------------------------------------------------
def test_member_template_is_cfn_lint_clean():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    proc = subprocess.run([str(cfn_lint), str(MEMBER_PATH)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- nothing the central rules want is dropped at the source ---------------------------------------
def test_the_samples_cover_every_kind_of_forwarded_event():
    kinds = {e["detail-type"] for _, e in SAMPLES}
    assert kinds >= {
        "AWS API Call via CloudTrail",
        "Config Configuration Item Change",
        "Config Rules Compliance Change",
        "CodeDeploy Deployment State-change Notification",
        "CodePipeline Pipeline Execution State Change",
        "CloudWatch Alarm State Change",
        "Calendar State Change",
    }


@pytest.mark.parametrize(("name", "event"), SAMPLES, ids=[n for n, _ in SAMPLES])
@pytest.mark.parametrize(("account", "region"), [(ACCOUNT_B, "eu-west-1"), (ACCOUNT_C, "ap-southeast-2")])
def test_a_member_forwards_every_event_the_central_rules_match(name, event, account, region):
    moved = rehome(event, account, region)
    assert member_stack(account, region).forwarding_rules(moved), f"{name} is dropped in {account}/{region}"
    # ... and once forwarded, it reaches exactly the functions it reaches in the central account.
    assert deliver(moved) == central_routes(event)


def test_events_from_several_regions_and_accounts_reach_the_correlator():
    iam = rehome(sample("correlate_change/04-self-approved.json"), ACCOUNT_A, "us-east-1")  # global service
    ec2 = rehome(sample("correlate_change/01-approved-run-instances.json"), ACCOUNT_B, "eu-west-1")
    s3 = rehome(sample("correlate_change/02-console-no-ticket.json"), ACCOUNT_C, "ap-southeast-2")
    assert iam["detail"]["eventSource"] == "iam.amazonaws.com" and ec2["detail"]["eventSource"] == "ec2.amazonaws.com"
    for event in (iam, ec2, s3):
        assert ("CorrelateChangeFunction", "CloudTrailWriteCalls") in deliver(event), event["region"]


def test_global_service_calls_of_the_central_account_are_forwarded_from_us_east_1():
    """IAM calls arrive only in us-east-1; with the central stack elsewhere, its own account forwards them."""
    iam = rehome(sample("correlate_change/04-self-approved.json"), CENTRAL, "us-east-1")
    stack = member_stack(CENTRAL, "us-east-1")
    assert stack.forwarding_rules(iam) == ["ForwardApiCallsRule"]
    assert ("CorrelateChangeFunction", "CloudTrailWriteCalls") in deliver(iam)


def test_the_central_account_does_not_forward_its_central_region_to_itself():
    stack = member_stack(CENTRAL, CENTRAL_REGION)
    assert not stack.rules  # a rule from the default bus to the same bus would loop
    assert not stack.of_type("AWS::IAM::Role")  # the central functions act with their own roles


# -- filtered at the source: no PutEvents is paid for what no function wants ------------------------
def _api_call(account: str, region: str, **detail: Any) -> dict[str, Any]:
    event = rehome(sample("correlate_change/01-approved-run-instances.json"), account, region)
    event["detail"].update(detail)
    return event


def _suite_call(account: str, region: str, **detail: Any) -> dict[str, Any]:
    """A write call made through one of the acting roles in a member account (a quarantine, say)."""
    event = _api_call(account, region, **detail)
    event["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] = (
        f"arn:aws:iam::{account}:role/changeguard/changeguard-quarantine"
    )
    return event


def _other(path: str, account: str, region: str, **changes: Any) -> dict[str, Any]:
    event = rehome(sample(path), account, region)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = event
        for key in parents:
            node = node[key]
        node[leaf] = value
    return event


NOT_FORWARDED = {
    "read-only call": lambda a, r: _api_call(a, r, eventName="DescribeInstances", readOnly=True),
    "failed call": lambda a, r: _api_call(a, r, errorCode="Client.UnauthorizedOperation"),
    "service not correlated": lambda a, r: _api_call(a, r, eventSource="athena.amazonaws.com"),
    "data event": lambda a, r: _api_call(
        a, r, eventSource="s3.amazonaws.com", eventName="PutObject", eventCategory="Data", managementEvent=False
    ),
    "another Config rule's verdict": lambda a, r: _other(
        "enforce_tags/10-config-non-compliant.json", a, r, detail__configRuleName="s3-bucket-versioning-enabled"
    ),
    # With all types recorded, Config records each rule's result per resource as an item: no change.
    "a Config rule's result as an item": lambda a, r: _other(
        "correlate_change/10-config-item-change.json",
        a,
        r,
        detail__configurationItem__resourceType="AWS::Config::ResourceCompliance",
    ),
    "a conformance pack's result as an oversized item": lambda a, r: _other(
        "correlate_change/13-oversized-config-item.json",
        a,
        r,
        detail__configurationItemSummary__resourceType="AWS::Config::ConformancePackCompliance",
    ),
    "alarm back to OK": lambda a, r: _other(
        "guard_deployment/alarm-state-change.json", a, r, detail__state={"value": "OK", "reason": "ok"}
    ),
    "deployment READY": lambda a, r: _other("guard_deployment/deployment-start.json", a, r, detail__state="READY"),
    "pipeline SUCCEEDED": lambda a, r: _other(
        "gate_change_window/05-codepipeline-started.json", a, r, detail__state="SUCCEEDED"
    ),
    "replayed pipeline start": lambda a, r: _other(
        "gate_change_window/05-codepipeline-started.json", a, r, **{"replay-name": "archive-replay"}
    ),
}


@pytest.mark.parametrize("kind", sorted(NOT_FORWARDED))
def test_what_no_central_rule_wants_is_not_forwarded(kind):
    event = NOT_FORWARDED[kind](ACCOUNT_B, "eu-west-1")
    assert not member_stack(ACCOUNT_B, "eu-west-1").forwarding_rules(event)
    assert not central_routes(event)  # the same filtering as the central rules


@pytest.mark.parametrize("resource_type", sorted(NOT_CHANGE_RESOURCE_TYPES))
def test_config_items_the_correlator_does_not_judge_are_not_forwarded_in_either_shape(resource_type):
    stack = member_stack(ACCOUNT_B, "eu-west-1")
    item = _other(
        "correlate_change/10-config-item-change.json",
        ACCOUNT_B,
        "eu-west-1",
        detail__configurationItem__resourceType=resource_type,
    )
    summary = _other(
        "correlate_change/13-oversized-config-item.json",
        ACCOUNT_B,
        "eu-west-1",
        detail__configurationItemSummary__resourceType=resource_type,
    )
    assert not stack.forwarding_rules(item) and not stack.forwarding_rules(summary)


def test_a_custom_event_shaped_like_a_cloudtrail_record_is_not_forwarded():
    """Anyone in a member account may put events on its bus, but not with a source starting "aws."."""
    genuine = _api_call(ACCOUNT_B, "eu-west-1")
    assert member_stack(ACCOUNT_B, "eu-west-1").forwarding_rules(genuine) == ["ForwardApiCallsRule"]
    forged = {**genuine, "source": "com.attacker"}
    assert not member_stack(ACCOUNT_B, "eu-west-1").forwarding_rules(forged)
    assert not central_routes(forged)  # nor taken if put straight on the central bus


def test_every_forwarding_rule_takes_only_events_of_aws_services():
    for name, rule in member_stack(ACCOUNT_B, "eu-west-1").rules.items():
        sources = rule["Properties"]["EventPattern"].get("source")
        assert sources, f"{name} does not name its source"
        for condition in sources:
            prefix = condition["prefix"] if isinstance(condition, dict) else condition
            assert isinstance(prefix, str) and prefix.startswith("aws."), (name, condition)


def test_the_suites_own_calls_in_a_member_account_are_not_forwarded():
    """The suite acts in member accounts through roles under its path; those calls must not come back.

    The central rules exclude only the central account's suite roles, so the member's filter is what
    prevents a quarantine (a tag change) from triggering tag enforcement again.
    """
    event = _suite_call(ACCOUNT_B, "eu-west-1")
    assert central_routes(event), "the central rules alone would take it"
    assert not member_stack(ACCOUNT_B, "eu-west-1").forwarding_rules(event)
    assert not deliver(event)


def test_the_member_forwards_every_event_source_the_central_rules_correlate():
    defaults = set(MEMBER.parameter_defaults()["ForwardedEventSources"])
    central = set(CENTRAL_TEMPLATE.parameter_defaults()["CorrelatedEventSources"])
    named = {
        source
        for _, _, pattern in CENTRAL_RULES
        if pattern.get("detail-type") == ["AWS API Call via CloudTrail"]
        for source in pattern["detail"]["eventSource"]
    }
    assert defaults >= central | named, (central | named) - defaults


def test_the_central_rules_accept_events_of_any_account_and_region():
    for function, rule, pattern in CENTRAL_RULES:
        assert "account" not in pattern and "region" not in pattern, f"{function}.{rule}"


# -- targets, dead letters, the forwarding role ----------------------------------------------------
def test_every_forwarding_rule_targets_the_central_bus_with_a_role_retries_and_a_dead_letter_queue():
    stack = member_stack(ACCOUNT_B, "eu-west-1")
    assert len(stack.rules) == 7
    dlq = stack.ctx.attrs[("ForwardingDeadLetterQueue", "Arn")]
    role = stack.ctx.attrs[("ForwardingRole", "Arn")]
    for name, rule in stack.rules.items():
        props = rule["Properties"]
        assert props["EventBusName"] == "default" and props["State"] == "ENABLED", name
        assert props["Name"].startswith("changeguard-forward-"), name
        (target,) = props["Targets"]
        assert target["Arn"] == CENTRAL_BUS and target["RoleArn"] == role, name
        assert target["DeadLetterConfig"]["Arn"] == dlq, name
        assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 86400}, name


def test_the_forwarding_role_may_only_put_events_on_the_central_bus():
    stack = member_stack(ACCOUNT_B, "eu-west-1")
    role = stack.resources["ForwardingRole"]["Properties"]
    assert role["Path"] == "/changeguard/"  # its calls are the suite's: never forwarded
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT_B}
    rule_arns = trust["Condition"]["ArnLike"]["aws:SourceArn"]
    assert rule_arns == f"arn:aws:events:eu-west-1:{ACCOUNT_B}:rule/changeguard-forward-*"
    (policy,) = role["Policies"]
    assert policy["PolicyDocument"]["Statement"] == [
        {"Effect": "Allow", "Action": "events:PutEvents", "Resource": CENTRAL_BUS}
    ]
    queue_policy = stack.resources["ForwardingDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]
    allow = next(s for s in queue_policy["Statement"] if s["Effect"] == "Allow")
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Condition"]["ArnLike"]["aws:SourceArn"] == rule_arns


def test_the_dead_letter_alarm_exists_only_with_a_topic_to_notify():
    assert "ForwardingDeadLetterAlarm" not in member_stack(ACCOUNT_B, "eu-west-1").resources
    topic = f"arn:aws:sns:eu-west-1:{ACCOUNT_B}:ops"
    alarm = member_stack(ACCOUNT_B, "eu-west-1", DeadLetterAlarmTopicArn=topic).resources["ForwardingDeadLetterAlarm"]
    assert alarm["Properties"]["AlarmActions"] == [topic]


# -- the acting roles: trust and least privilege ---------------------------------------------------
ACTING_ROLES = ("ReadTagsRole", "StopDeploymentsRole", "QuarantineRole")


def _allows(condition: dict[str, Any], principal_arn: str, org: str, external_id: str | None) -> bool:
    """Evaluate the trust conditions these roles use for a caller (IAM's ArnLike: ``*`` spans ``/``)."""
    like = condition["ArnLike"]["aws:PrincipalArn"]
    not_like = condition["ArnNotLike"]["aws:PrincipalArn"]
    equals = condition["StringEquals"]
    context = {"aws:PrincipalOrgID": org, "sts:ExternalId": external_id}
    return (
        fnmatchcase(principal_arn, like)
        and not fnmatchcase(principal_arn, not_like)
        and all(context.get(k) == v for k, v in equals.items())
    )


def test_acting_roles_exist_once_per_member_account_in_the_central_region():
    assert set(ACTING_ROLES) <= set(member_stack(ACCOUNT_B, CENTRAL_REGION).resources)
    assert not set(ACTING_ROLES) & set(member_stack(ACCOUNT_B, "us-east-1").resources)  # IAM is global


@pytest.mark.parametrize("logical_id", ACTING_ROLES)
def test_acting_roles_trust_only_the_central_suites_function_roles_in_the_organization(logical_id):
    role = member_stack(ACCOUNT_B, CENTRAL_REGION).resources[logical_id]["Properties"]
    assert role["Path"] == "/changeguard/" and role["RoleName"].startswith("changeguard-")
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Effect"] == "Allow" and trust["Action"] == "sts:AssumeRole"
    assert trust["Principal"] == {"AWS": f"arn:aws:iam::{CENTRAL}:root"}
    condition = trust["Condition"]
    assert condition["StringEquals"] == {"aws:PrincipalOrgID": ORG}

    # The central functions' roles sit directly under the Globals RolePath; approvers under a sub-path.
    role_path = CENTRAL_TEMPLATE.raw["Globals"]["Function"]["RolePath"]
    approvers_path = CENTRAL_TEMPLATE.resources["TicketApproverRole"]["Properties"]["Path"]
    function_role = f"arn:aws:iam::{CENTRAL}:role{role_path}changeguard-prod-EnforceTagsFunctionRole-1A2B3C"
    assert _allows(condition, function_role, ORG, None)
    for caller, org in [
        (f"arn:aws:iam::{CENTRAL}:role{approvers_path}TicketApproverRole-1A2B3C", ORG),  # people
        (f"arn:aws:iam::{CENTRAL}:role/Administrator", ORG),  # not the suite
        (f"arn:aws:iam::{ACCOUNT_C}:role{role_path}EnforceTagsFunctionRole-1A2B3C", ORG),  # another account
        (function_role, "o-zzzzzzzzzz"),  # the central account left the organization
    ]:
        assert not _allows(condition, caller, org, None), caller


def test_an_external_id_when_set_is_required_too():
    stack = member_stack(ACCOUNT_B, CENTRAL_REGION, ExternalId="changeguard-7f3a")
    for logical_id in ACTING_ROLES:
        (trust,) = stack.resources[logical_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Condition"]["StringEquals"] == {"aws:PrincipalOrgID": ORG, "sts:ExternalId": "changeguard-7f3a"}
        function_role = f"arn:aws:iam::{CENTRAL}:role/changeguard/EnforceTagsFunctionRole-1A2B3C"
        assert _allows(trust["Condition"], function_role, ORG, "changeguard-7f3a")
        assert not _allows(trust["Condition"], function_role, ORG, None)


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for p in role["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for s in statements:
        if s.get("Effect") == "Allow":
            out |= {s["Action"]} if isinstance(s["Action"], str) else set(s["Action"])
    return out


def _central_actions(logical_ids: tuple[str, ...], services: tuple[str, ...]) -> set[str]:
    statements = [
        s for lid in logical_ids for policy in CENTRAL_FUNCTIONS[lid].policies for s in policy.get("Statement", [])
    ]
    return {a for a in _actions([s for s in statements if isinstance(s, dict)]) if a.split(":")[0] in services}


# Actions that support no resource-level permission: the only ones allowed on "*".
NO_RESOURCE_LEVEL = {
    "tag:GetResources",
    "ec2:DescribeInstances",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSecurityGroupRules",
    "codedeploy:ListApplications",
    "cloudwatch:GetMetricData",
    "cloudtrail:LookupEvents",
    "config:GetResourceConfigHistory",
}


IAM_TAG_READS = {"iam:ListRoleTags", "iam:ListUserTags", "iam:ListPolicyTags"}


@pytest.mark.parametrize("logical_id", ACTING_ROLES)
def test_acting_roles_are_least_privilege(logical_id):
    stack = member_stack(ACCOUNT_B, CENTRAL_REGION)
    for statement in _statements(stack.resources[logical_id]):
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        assert statement["Effect"] == "Allow"
        # No wildcard, nothing of IAM, STS or Organizations: except, for the roles that read tags,
        # reading IAM tags (the Tagging API does not cover IAM users and roles), which changes nothing.
        allowed_iam = {"ReadTagsRole": IAM_TAG_READS, "QuarantineRole": {"iam:ListRoleTags"}}.get(logical_id, set())
        assert not any(
            "*" in a or (a.split(":")[0] in ("iam", "sts", "organizations") and a not in allowed_iam) for a in actions
        ), actions
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            if resource == "*":
                assert set(actions) <= NO_RESOURCE_LEVEL, statement["Sid"]
            elif not resource.startswith("arn:aws:s3:::"):
                assert f":{ACCOUNT_B}:" in resource, resource  # this account's resources only
            else:  # bucket ARNs carry no account: the condition does
                assert statement["Condition"] == {"StringEquals": {"aws:ResourceAccount": ACCOUNT_B}}


def _grants(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [
        s
        for s in statements
        if s.get("Effect") == "Allow" and action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    ]


def _resources(statement: dict[str, Any]) -> list[str]:
    found = statement["Resource"]
    return found if isinstance(found, list) else [found]


@pytest.mark.parametrize("action", ["ec2:CreateTags", "ec2:DeleteTags", "lambda:TagResource", "lambda:UntagResource"])
def test_acting_roles_write_and_remove_only_the_suites_own_tag_keys(action):
    """As the central roles: tag writes are limited to changeguard:* keys, and a call naming no keys
    (which would remove every tag) is refused."""
    stack = member_stack(ACCOUNT_B, CENTRAL_REGION)
    grants = [s for lid in ACTING_ROLES for s in _grants(_statements(stack.resources[lid]), action)]
    assert grants, f"no acting role grants {action}"
    for statement in grants:
        condition = statement.get("Condition") or {}
        assert condition.get("ForAllValues:StringLike") == {"aws:TagKeys": ["changeguard:*"]}, statement["Sid"]
        assert condition.get("Null") == {"aws:TagKeys": "false"}, statement["Sid"]


def test_acting_roles_create_a_security_group_only_as_the_suites_tagged_isolation_group():
    stack = member_stack(ACCOUNT_B, CENTRAL_REGION)
    grants = _grants(_statements(stack.resources["QuarantineRole"]), "ec2:CreateSecurityGroup")
    assert grants
    for statement in grants:
        for resource in _resources(statement):
            if ":security-group/" in resource:
                assert statement["Condition"] == {"StringEquals": {"aws:RequestTag/changeguard:managed": "true"}}
            else:
                assert ":vpc/" in resource, resource


def test_acting_roles_grant_what_the_central_functions_do_and_nothing_more():
    """Each member role grants exactly the actions its central functions are granted in the services
    they act on there (least privilege both ways: a missing action fails in the member account, an
    extra one lets a suite role read or do there what none of its functions does)."""
    stack = member_stack(ACCOUNT_B, CENTRAL_REGION)
    granted = {lid: _actions(_statements(stack.resources[lid])) for lid in ACTING_ROLES}
    read_tags = _central_actions(
        ("CorrelateChangeFunction", "ReconcileChangesFunction", "FollowUpChangesFunction"),
        ("tag", "cloudformation", "cloudtrail", "config", "iam", "ec2"),  # config: oversized items read back
    )
    assert granted["ReadTagsRole"] == read_tags, granted["ReadTagsRole"] ^ read_tags
    stop = _central_actions(
        ("GateChangeWindowFunction", "GuardDeploymentFunction"),
        ("codedeploy", "codepipeline", "cloudformation", "cloudwatch"),
    )
    assert granted["StopDeploymentsRole"] == stop, granted["StopDeploymentsRole"] ^ stop
    registry = {p for cls in REGISTRY.values() for p in cls.permissions} | set(FINDER_PERMISSIONS)
    registry |= set(ALERT_ONLY_PERMISSIONS)  # enforce_tags judges created roles there too
    assert granted["QuarantineRole"] == registry, granted["QuarantineRole"] ^ registry


# -- the central bus accepts the organization -----------------------------------------------------
def test_the_central_bus_policy_admits_the_organization_only():
    spec = CENTRAL_TEMPLATE.resources["OrganizationEventBusPolicy"]
    assert not central_context().conditions[spec["Condition"]]  # no OrganizationId: no cross-account events
    ctx = central_context(OrganizationId=ORG)
    assert ctx.conditions[spec["Condition"]]
    props = resolve(spec["Properties"], ctx)
    assert props["EventBusName"] == "default"
    statement = props["Statement"]
    assert statement["Effect"] == "Allow" and statement["Principal"] == "*"
    assert statement["Action"] == "events:PutEvents"
    assert statement["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": ORG}}
    output = resolve(CENTRAL_TEMPLATE.raw["Outputs"]["CentralEventBusArn"]["Value"], ctx)
    assert statement["Resource"] == output == CENTRAL_BUS  # what members are told to target


# -- against the embedded AWS: bus to bus across accounts and regions -----------------------------
def _member_session(endpoint: str, account: str) -> dict[str, Any]:
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/StackSetExecution", RoleSessionName="deploy")[
        "Credentials"
    ]
    return {
        "endpoint_url": endpoint,
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }


def _deploy_rules(events_client: Any, stack: MemberStack) -> None:
    """The member stack's rules and targets, as CloudFormation would create them."""
    for rule in stack.rules.values():
        props = rule["Properties"]
        events_client.put_rule(Name=props["Name"], EventPattern=json.dumps(props["EventPattern"]), State="ENABLED")
        events_client.put_targets(Rule=props["Name"], Targets=props["Targets"])


def test_forwarding_through_the_embedded_aws(aws):
    endpoint = aws.endpoint_url
    central_events = boto3.client("events", endpoint_url=endpoint, region_name=CENTRAL_REGION)
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=CENTRAL_REGION)
    sink = sqs.create_queue(QueueName="correlator-sink")["QueueUrl"]
    sink_arn = sqs.get_queue_attributes(QueueUrl=sink, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    correlator = next(p for f, r, p in CENTRAL_RULES if (f, r) == ("CorrelateChangeFunction", "CloudTrailWriteCalls"))
    central_events.put_rule(Name="correlate-change", EventPattern=json.dumps(correlator))
    central_events.put_targets(Rule="correlate-change", Targets=[{"Id": "correlator", "Arn": sink_arn}])

    sent: dict[str, bool] = {}
    for n, (account, region) in enumerate([(ACCOUNT_A, "us-east-1"), (ACCOUNT_B, "ap-southeast-2")]):
        stack = member_stack(account, region)
        member_events = boto3.client("events", region_name=region, **_member_session(endpoint, account))
        _deploy_rules(member_events, stack)
        candidates = [
            rehome(sample("correlate_change/04-self-approved.json"), account, region, f"iam-{n}"),
            rehome(sample("correlate_change/02-console-no-ticket.json"), account, region, f"s3-{n}"),
            _api_call(account, region, eventID=f"read-only-{n}", eventName="DescribeInstances", readOnly=True),
            _api_call(account, region, eventID=f"failed-{n}", errorCode="AccessDenied"),
            _suite_call(account, region, eventID=f"suite-{n}"),
        ]
        for event in candidates:
            expected = bool(deliver(event) & {("CorrelateChangeFunction", "CloudTrailWriteCalls")})
            sent[event["detail"]["eventID"]] = expected
        entries = [
            {"Source": e["source"], "DetailType": e["detail-type"], "Detail": json.dumps(e["detail"])}
            for e in candidates
        ]
        result = member_events.put_events(Entries=entries)
        assert result["FailedEntryCount"] == 0

    received = []
    while msgs := sqs.receive_message(QueueUrl=sink, MaxNumberOfMessages=10).get("Messages", []):
        for msg in msgs:
            received.append(json.loads(msg["Body"])["detail"]["eventID"])
            sqs.delete_message(QueueUrl=sink, ReceiptHandle=msg["ReceiptHandle"])
    assert sorted(received) == sorted(eid for eid, expected in sent.items() if expected)
    assert sorted(received) == ["iam-0", "iam-1", "s3-0", "s3-1"]


# -- forwarded events are judged by the central stack as its own ----------------------------------
def test_forwarded_events_get_verdicts_in_the_central_ledger_with_their_own_account_and_region(aws):
    # With the OrganizationId that lets the members' events onto the bus (and, issue 9, lets the
    # correlator read their tags with the member role): without it no other account's event arrives.
    harness = Harness(
        aws.endpoint_url,
        clock=FixedClock(datetime(2026, 11, 21, 18, 0, tzinfo=UTC)),
        log_stream=quiet_stream(),
        parameters={"OrganizationId": ORG},
    )
    harness.provision()
    seed, _ = load_scenario()
    seed.pop("now", None)
    fixtures.seed(harness, seed)
    ddb = harness.admin_client("dynamodb")
    cases = [  # the same verdicts as in the central account (tests/e2e/test_alert_subscriptions.py)
        ("correlate_change/04-self-approved.json", ACCOUNT_A, "us-east-1", "SELF_APPROVED"),
        ("correlate_change/01-approved-run-instances.json", ACCOUNT_B, "eu-west-1", "AUTHORIZED"),
        ("correlate_change/02-console-no-ticket.json", ACCOUNT_C, "ap-southeast-2", "NO_TICKET"),
    ]
    for path, account, region, verdict in cases:
        forwarded = rehome(sample(path), account, region)
        assert ("CorrelateChangeFunction", "CloudTrailWriteCalls") in deliver(forwarded), path
        result = harness.process(forwarded)
        assert result["error"] is None, result
        assert result["routed_to"] == harness.route(sample(path))  # the same functions as at home
        (outcome,) = [o for o in result["outcomes"] if o["function"] == "CorrelateChangeFunction"]
        assert outcome["verdict"] == verdict, path
        assert [a["verdict"] for a in outcome["alerts"]] == ([] if verdict == "AUTHORIZED" else [verdict])
        item = ddb.get_item(
            TableName=harness.ctx.refs["ChangeLedgerTable"],
            Key={"change_id": {"S": forwarded["detail"]["eventID"]}, "entry": {"S": "VERDICT"}},
        )["Item"]
        assert (item["verdict"]["S"], item["account"]["S"], item["region"]["S"]) == (verdict, account, region)


# -- the central functions assume exactly these roles (issue 9: cross-account acting) ---------------
ACTING_FUNCTIONS = {
    "CorrelateChangeFunction": "ReadTagsRole",
    "ReconcileChangesFunction": "ReadTagsRole",
    "FollowUpChangesFunction": "ReadTagsRole",  # tags that could not be read, read again
    "GateChangeWindowFunction": "StopDeploymentsRole",
    "GuardDeploymentFunction": "StopDeploymentsRole",
    "EnforceTagsFunction": "QuarantineRole",
    "SweepQuarantineFunction": "QuarantineRole",
}


class _AnyAttribute(dict[tuple[str, str], str]):
    def get(self, key: tuple[str, str], default: Any = None) -> str:  # type: ignore[override]
        return f"<{key[0]}.{key[1]}>"


def _function_props(logical_id: str, **params: Any) -> dict[str, Any]:
    ctx = central_context(**params)
    ctx.attrs = _AnyAttribute()
    props = CENTRAL_TEMPLATE.resources[logical_id]["Properties"]
    return {"Policies": resolve(props["Policies"], ctx), "Variables": resolve(props["Environment"]["Variables"], ctx)}


def _assume_statements(props: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in props["Policies"]:
        for st in policy.get("Statement", []) if isinstance(policy, dict) else []:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            if any(a.lower().startswith("sts:") for a in actions):
                found.append(st)
    return found


@pytest.mark.parametrize(("logical_id", "member_role"), sorted(ACTING_FUNCTIONS.items()))
def test_each_acting_function_may_assume_its_member_role_in_the_organization_only(logical_id, member_role):
    role = member_stack(ACCOUNT_B, CENTRAL_REGION).resources[member_role]["Properties"]
    props = _function_props(logical_id, OrganizationId=ORG)
    (statement,) = _assume_statements(props)
    assert statement["Action"] == ["sts:AssumeRole"]
    assert statement["Resource"] == f"arn:aws:iam::*:role{role['Path']}{role['RoleName']}"
    assert statement["Condition"] == {"StringEquals": {"aws:ResourceOrgID": ORG}}
    assert props["Variables"]["ACTING_ROLE_NAME"] == role["RoleName"]
    # The member role's trust policy admits this function's role (directly under the suite's path).
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert _allows(trust["Condition"], f"arn:aws:iam::{CENTRAL}:role/changeguard/{logical_id}Role-AB12", ORG, None)

    single = _function_props(logical_id)  # no OrganizationId: a single-account deployment
    assert _assume_statements(single) == []
    assert single["Variables"]["ACTING_ROLE_NAME"] == ""


def test_no_other_function_may_assume_a_role():
    others = [lid for lid in CENTRAL_TEMPLATE.function_ids() if lid not in ACTING_FUNCTIONS]
    assert others
    for logical_id in others:
        assert _assume_statements(_function_props(logical_id, OrganizationId=ORG)) == [], logical_id
