"""Least privilege (issue 8): one role per function, with exactly the actions its code calls.

The calls are not listed by hand: this module drives every function the template declares through
the harness against the embedded AWS (the demo scenario, then every sample event and schedule in
observe and in enforce mode, then a poison event), and the call recorder
(``tests/hardening/callrecorder.py``, botocore's event hooks) records what each one really calls,
Powertools' utilities included. Each call becomes the IAM requests it makes (``iam.py``), compared
with the function's ``Policies:`` in both directions:

* nothing missing: every request is allowed by the function's own role (action and resource);
* nothing extra: every action the role allows is one the function called, except the actions AWS
  itself uses with the function's role (:data:`USED_BY_AWS`, each with its reason) and the few the
  drive cannot reach (``iam.REACHED_BY_OTHER_TESTS``: a complete run lists, at its end, those no
  test of the suite reached).

The same recorder runs for the whole test session, and the session fails if any test made a function
call an action its role does not allow (``callrecorder.pytest_sessionfinish``).
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from changeguard_tools.embedded import EmbeddedAWS
from changeguard_tools.harness import Harness
from changeguard_tools.template import Template, resolve
from hardening.callrecorder import RECORDER, Call, install_fresh
from hardening.drive import (
    CREATE_UNTAGGED,
    SMALL_LEDGER,
    aws_environment,
    drive_everything,
    quarantine_types,
    scenario_harness,
)
from hardening.iam import REACHED_BY_OTHER_TESTS, IamRequest, Statement, is_allowed, is_mutating, statements_of

TEMPLATE = Template()
FUNCTIONS = TEMPLATE.function_ids()

#: Actions a role needs although the function's code never calls them: AWS calls them with the
#: function's role. (action pattern, what the resource must be, why)
USED_BY_AWS: tuple[tuple[str, str, str], ...] = (
    (
        "kms:Decrypt",
        "key",
        "SQS, SNS, DynamoDB and Lambda decrypt with the suite's key on the caller's behalf",
    ),
    (
        "kms:GenerateDataKey",
        "key",
        "SQS and SNS generate a data key with the suite's key for each message the function sends",
    ),
    (
        "kms:GenerateDataKey*",
        "key",
        "as kms:GenerateDataKey (SAM's KMSEncryptPolicy lacks it: serverless-application-model#1796)",
    ),
    ("dynamodb:DescribeStream", "stream", "the event source mapping reads the stream with the function's role"),
    ("dynamodb:GetRecords", "stream", "the event source mapping reads the stream with the function's role"),
    ("dynamodb:GetShardIterator", "stream", "the event source mapping reads the stream with the function's role"),
    ("dynamodb:ListStreams", "stream", "the event source mapping reads the stream with the function's role"),
    (
        "sqs:SendMessage",
        "failure-queue",
        "Lambda's on-failure destination (and the stream's) sends with the function's role",
    ),
)

#: Mutating actions that may be allowed on every resource of their service without a condition, and
#: why (the scoping test).
UNSCOPED_MUTATIONS: dict[str, str] = {
    "codepipeline:StopPipelineExecution": (
        "a pipeline's ARN is arn:...:codepipeline:<region>:<account>:<name>, with no resource-type part to"
        " scope on, and the gate must stop whichever pipeline starts while the calendar is closed"
    ),
}

#: Tagging actions whose tag keys IAM can limit (``aws:TagKeys``): the suite only ever adds and removes its
#: own marks, so a role may tag with ``changeguard:*`` keys only. ``s3:PutBucketTagging`` cannot be
#: limited so: it replaces a bucket's whole tag set, the owner's tags included (its statements are
#: scoped to the account's own buckets instead).
KEYED_TAGGING_ACTIONS = ("ec2:CreateTags", "ec2:DeleteTags", "lambda:TagResource", "lambda:UntagResource")
SUITE_TAG_PREFIX = "changeguard:"


def service_wide(resource: str) -> bool:
    """Whether a resource pattern covers every resource of its service: ``*``, or an ARN whose resource
    part is only ``*`` (``arn:aws:s3:::*``). A pattern that names a resource type (``...:function:*``,
    ``...:deploymentgroup:*/*``) or a resource of the template (``<Logical.Arn>``) is scoped."""
    if resource == "*":
        return True
    parts = resource.split(":", 5)
    return len(parts) == 6 and parts[0] == "arn" and parts[5] == "*"


class _AnyAttribute(dict[tuple[str, str], str]):
    def get(self, key: tuple[str, str], default: Any = None) -> str:  # type: ignore[override]
        return f"<{key[0]}.{key[1]}>"


def symbolic_policies(logical_id: str) -> list[Statement]:
    """The function's statements without a stack: resources resolve to ``<LogicalId>`` placeholders."""
    ctx = TEMPLATE.context()
    ctx.refs.update({lid: f"<{lid}>" for lid in TEMPLATE.resources})
    ctx.attrs = _AnyAttribute()
    return statements_of(resolve(TEMPLATE.resources[logical_id]["Properties"]["Policies"], ctx))


@dataclass
class Driven:
    harness: Harness
    calls: dict[str, Counter[Call]]  # by function logical id

    def statements(self, logical_id: str) -> list[Statement]:
        spec = self.harness.functions[logical_id]
        return statements_of(resolve(spec.policies, self.harness.ctx))

    def requests(self, logical_id: str) -> set[IamRequest]:
        return {r for call in self.calls.get(logical_id, Counter()) for r in call.requests}


@pytest.fixture(scope="module")
def driven(embedded_aws: EmbeddedAWS) -> Iterator[Driven]:
    install_fresh()  # when the plugin is not registered (tests/conftest.py), the hook starts here
    with aws_environment(embedded_aws) as aws:
        harness, steps = scenario_harness(aws.endpoint_url, log_stream=io.StringIO(), parameters=SMALL_LEDGER)
        with RECORDER.scope() as calls:
            drive_everything(harness, aws, steps)
        by_folder: dict[str, Counter[Call]] = defaultdict(Counter)
        for call, n in calls.items():
            by_folder[call.function][call] += n
        yield Driven(
            harness, {lid: by_folder.get(spec.code_uri.name, Counter()) for lid, spec in harness.functions.items()}
        )


def _used_by_aws(driven: Driven, logical_id: str, action: str, resources: tuple[str, ...]) -> bool:
    ctx = driven.harness.ctx
    spec = driven.harness.functions[logical_id]
    failure_queue = str(spec.environment.get("FAILURE_QUEUE_URL", ""))
    allowed = {
        "key": {arn for (lid, attr), arn in ctx.attrs.items() if attr == "Arn" and ":key/" in arn},
        "stream": {arn for (_, attr), arn in ctx.attrs.items() if attr == "StreamArn"},
        "failure-queue": {
            arn for (lid, attr), arn in ctx.attrs.items() if attr == "Arn" and ctx.refs.get(lid) == failure_queue
        },
    }
    for pattern, kind, _why in USED_BY_AWS:
        if pattern.lower() == action.lower() and resources and set(resources) <= allowed[kind]:
            return True
    return False


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_least_privilege_each_function_has_a_role_of_its_own(logical_id: str) -> None:
    props = TEMPLATE.resources[logical_id]["Properties"]
    assert "Role" not in props, f"{logical_id} uses a role given to it, which others could share"
    assert props.get("Policies"), f"{logical_id} has no policies of its own"
    assert TEMPLATE.raw["Globals"]["Function"].get("RolePath") == "/changeguard/"
    symbolic_policies(logical_id)  # inline statements only


def missing(driven: Driven, logical_id: str) -> list[str]:
    """Requests the function made that its role does not allow."""
    statements = driven.statements(logical_id)
    return sorted(str(r) for r in driven.requests(logical_id) if not is_allowed(statements, r))


def extra(driven: Driven, logical_id: str) -> list[str]:
    """Allowed actions the function never called (less those AWS uses, and those other tests reach)."""
    requests = driven.requests(logical_id)
    found: list[str] = []
    for st in driven.statements(logical_id):
        if st.effect != "Allow":
            continue
        for action in st.actions:
            probe = Statement(st.sid, "Allow", (action,), st.resources)
            if any(probe.matches(r) for r in requests):
                continue
            if _used_by_aws(driven, logical_id, action, st.resources):
                continue
            if action in REACHED_BY_OTHER_TESTS.get(driven.harness.functions[logical_id].code_uri.name, {}):
                continue
            found.append(f"{st.sid}: {action} on {', '.join(st.resources)}")
    return found


def test_least_privilege_nothing_missing_and_nothing_extra_for_every_function(driven: Driven) -> None:
    """One test for every function (the drive is expensive: it runs once, on one worker)."""
    problems: list[str] = []
    for logical_id in FUNCTIONS:
        if not driven.calls[logical_id]:
            problems.append(f"{logical_id} made no AWS call while driven: nothing would be proven")
        problems += [f"{logical_id} MISSING (called, not allowed): {m}" for m in missing(driven, logical_id)]
        problems += [f"{logical_id} EXTRA (allowed, never called): {e}" for e in extra(driven, logical_id)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_least_privilege_mutating_actions_are_scoped_to_resources_or_conditions(logical_id: str) -> None:
    unscoped: list[str] = []
    for st in symbolic_policies(logical_id):
        if st.effect != "Allow" or not any(service_wide(r) for r in st.resources) or st.condition:
            continue
        for action in st.actions:
            if is_mutating(action) and action not in UNSCOPED_MUTATIONS:
                unscoped.append(f"{st.sid}: {action} on {', '.join(st.resources)}")
    assert not unscoped, f"{logical_id} allows mutating actions on every resource:\n" + "\n".join(unscoped)


@pytest.mark.parametrize(
    ("resource", "wide"),
    [
        ("*", True),
        ("arn:aws:s3:::*", True),
        ("arn:aws:codepipeline:us-east-1:123456789012:*", True),
        ("arn:aws:s3:::*/*", False),  # objects: no bucket action matches it
        ("arn:aws:lambda:us-east-1:123456789012:function:*", False),
        ("arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:*/*", False),
        ("arn:aws:ec2:us-east-1:123456789012:security-group/*", False),
        ("<EvidenceBucket.Arn>/digests/*", False),
    ],
)
def test_least_privilege_a_pattern_over_a_whole_service_counts_as_unscoped(resource: str, wide: bool) -> None:
    assert service_wide(resource) is wide


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_least_privilege_tagging_is_limited_to_the_suites_own_tag_keys(logical_id: str) -> None:
    """Tagging actions carry ``aws:TagKeys`` within ``changeguard:*`` and require keys to be named
    (``Null`` false): DeleteTags without keys would delete every tag."""
    from changeguard.domain import tags

    assert all(k.startswith(SUITE_TAG_PREFIX) for k in (tags.QUARANTINE_AFTER, tags.QUARANTINE_REF, tags.MANAGED))
    wanted = {
        "ForAllValues:StringLike": {"aws:TagKeys": [f"{SUITE_TAG_PREFIX}*"]},
        "Null": {"aws:TagKeys": "false"},
    }
    loose = [
        f"{st.sid}: {action} (condition {st.condition})"
        for st in symbolic_policies(logical_id)
        if st.effect == "Allow"
        for action in KEYED_TAGGING_ACTIONS
        if st.matches_action(action) and st.condition != wanted
    ]
    assert not loose, f"{logical_id} may tag with keys that are not the suite's own:\n" + "\n".join(loose)


def test_least_privilege_every_quarantine_type_is_driven() -> None:
    """The drive makes an untagged resource of every type the quarantine registry knows."""
    assert quarantine_types() <= set(CREATE_UNTAGGED), sorted(quarantine_types() - set(CREATE_UNTAGGED))


def test_least_privilege_the_session_wide_check_names_a_call_the_role_does_not_allow() -> None:
    """What ``callrecorder`` does at the end of every session, on made-up recordings."""
    from collections import Counter as _Counter

    from hardening.callrecorder import unallowed_actions, unreached_listed

    allowed = Call("correlate_change", "dynamodb", "PutItem", (IamRequest("dynamodb:PutItem", None),))
    forbidden = Call("correlate_change", "sns", "Publish", (IamRequest("sns:Publish", None),))
    assert unallowed_actions(_Counter([allowed]), TEMPLATE) == []
    assert unallowed_actions(_Counter([allowed, forbidden]), TEMPLATE) == [
        "correlate_change: sns:Publish (sns.Publish)"
    ]
    listed = {(folder, action) for folder, actions in REACHED_BY_OTHER_TESTS.items() for action in actions}
    made = _Counter(Call(folder, "x", "y", (IamRequest(action),)) for folder, action in listed)
    assert unreached_listed(made) == []
    assert len(unreached_listed(_Counter())) == len(listed)


# This account's other regions forward their events here (member/member-account.yaml): a resource or
# deployment there is acted on with the function's own role, so these statements name any region of
# this account, as the member accounts' acting roles do - and still only this account.
ACTING_AT_HOME = (
    "EnforceTagsFunction",
    "SweepQuarantineFunction",
    "GateChangeWindowFunction",
    "GuardDeploymentFunction",
)
ACTED_ON = {"ec2", "lambda", "codedeploy", "codepipeline", "cloudformation", "cloudwatch"}


@pytest.mark.parametrize("logical_id", ACTING_AT_HOME)
def test_least_privilege_acting_functions_reach_every_region_of_their_own_account_and_no_other(logical_id: str) -> None:
    account = TEMPLATE.context().account
    named = [
        (st.sid, arn)
        for st in symbolic_policies(logical_id)
        for arn in st.resources
        if arn.count(":") >= 5 and arn.split(":")[2] in ACTED_ON
    ]
    assert named, f"{logical_id} names no resource it acts on"
    for sid, arn in named:
        parts = arn.split(":")
        assert parts[3] == "*", f"{logical_id} {sid}: {arn} is limited to one region"
        assert parts[4] == account, f"{logical_id} {sid}: {arn} is not limited to this account"


# change-calendar-names takes names or document ARNs; an ARN is needed only for a calendar shared from
# another account (a name resolves in this account). Scoped to this account, such a calendar was
# AccessDenied, read as UNKNOWN, and with calendar-fail-closed (the default) every change was blocked.
CALENDAR_READERS = sorted(
    lid for lid in FUNCTIONS if any(st.matches_action("ssm:GetCalendarState") for st in symbolic_policies(lid))
)


def test_least_privilege_the_functions_that_read_the_calendar_are_the_ones_expected() -> None:
    assert (
        sorted(
            [
                "CorrelateChangeFunction",
                "FollowUpChangesFunction",
                "GateChangeWindowFunction",
                "GateLifecycleHookFunction",
                "ReconcileChangesFunction",
            ]
        )
        == CALENDAR_READERS
    )


@pytest.mark.parametrize("logical_id", CALENDAR_READERS)
def test_least_privilege_a_calendar_shared_from_another_account_can_be_read_and_nothing_else_there(
    logical_id: str,
) -> None:
    ctx = TEMPLATE.context()
    other = "999999999999"
    assert other != ctx.account
    statements = symbolic_policies(logical_id)
    shared = f"arn:aws:ssm:{ctx.region}:{other}:document/org-change-window"
    assert is_allowed(statements, IamRequest("ssm:GetCalendarState", shared))
    for action, arn in [
        ("ssm:GetParameter", f"arn:aws:ssm:{ctx.region}:{other}:parameter/changeguard/prod/policy"),
        ("ssm:GetParametersByPath", f"arn:aws:ssm:{ctx.region}:{other}:parameter/changeguard/prod"),
        ("ssm:GetDocument", shared),
        ("ssm:UpdateDocument", shared),
    ]:
        assert not is_allowed(statements, IamRequest(action, arn)), (logical_id, action)
