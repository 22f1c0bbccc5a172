"""The change calendar in the correlator: every change needs an open window or an emergency ticket.

Calls CloudFormation, CodeDeploy and CodePipeline make on someone's behalf are gated where they
started (``gate_change_window``), and exempt principals have their own gate; nothing else is left
out. A role session looks like automation when nothing marks it human, and that is what an engineer
running ``aws sts assume-role`` looks like.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from changeguard.domain.change import Actor
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import Approval, Ticket
from changeguard.services.correlate import CorrelateService
from fakes import FakeCalendar, FakeClock, FakeTagReader, FakeTicketSource, InMemoryLedger
from sample_events import load_event

ACCOUNT = "123456789012"
T = datetime(2026, 11, 21, 3, 10, tzinfo=UTC)  # the sample RunInstances' time
APPROVER = f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_ChangeApprover_5e6f7a8b9c0d1e2f"
TICKET = Ticket(
    ticket_id="CHG-1001",
    approvals=(
        Approval(approver=f"{APPROVER}/bob@example.com", approved_at=T - timedelta(hours=4)),
        Approval(approver=f"{APPROVER}/carol@example.com", approved_at=T - timedelta(hours=4)),
    ),
    window_start=T - timedelta(hours=3),
    window_end=T + timedelta(hours=3),
    test_evidence="https://ci.example.com/1",
    rollback_plan="terminate",
)
PROD_ADMIN = f"arn:aws:iam::{ACCOUNT}:role/ProdAdmin"
PIPELINE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/pipeline-deployer"


def service(calendar: FakeCalendar, policy: Policy | None = None) -> CorrelateService:
    return CorrelateService(
        function="correlate_change",
        ledger=InMemoryLedger(),
        tickets=FakeTicketSource(TICKET),
        tags=FakeTagReader(),
        policy=lambda: policy or Policy(),
        clock=FakeClock(),
        suite_role_prefixes=(f"arn:aws:iam::{ACCOUNT}:role/changeguard/",),
        calendar=lambda p: calendar,
    )


def run_instances_as(user_identity: dict) -> dict:
    """The approved RunInstances under CHG-1001 (ticket in the request's tags), made by ``user_identity``."""
    event = load_event("correlate_change/01-approved-run-instances.json")
    event["detail"]["userIdentity"] = user_identity
    event["detail"]["userAgent"] = "aws-cli/2.15.30 md/awscrt#0.19.19 ua/2.0 os/linux#6.1"
    return event


def assumed_role(role: str, session: str, invoked_by: str | None = None) -> dict:
    identity = {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLEROLE:{session}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role.rsplit('/', 1)[1]}/{session}",
        "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role, "accountId": ACCOUNT}},
    }
    if invoked_by:
        identity["invokedBy"] = invoked_by
    return identity


IAM_USER_DAVE = {
    "type": "IAMUser",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/dave",
    "accountId": ACCOUNT,
    "userName": "dave",
}


@pytest.mark.parametrize(
    "identity",
    [assumed_role(PROD_ADMIN, "dave"), IAM_USER_DAVE],
    ids=["cli-assumed-role", "iam-user"],
)
def test_a_change_made_while_the_calendar_is_closed_is_outside_the_change_window(identity):
    """`aws sts assume-role` then a CLI call is judged as the same call made as an IAM user."""
    calendar = FakeCalendar(closed=True)
    outcome = service(calendar).handle(run_instances_as(identity))
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW" and outcome.alert_ids
    assert calendar.asked == [T]


def test_the_same_role_session_is_authorized_while_the_calendar_is_open():
    calendar = FakeCalendar(closed=False)
    assert service(calendar).handle(run_instances_as(assumed_role(PROD_ADMIN, "dave"))).verdict == "AUTHORIZED"
    assert calendar.asked == [T]


@pytest.mark.parametrize(
    "agent", ["cloudformation.amazonaws.com", "codedeploy.amazonaws.com", "codepipeline.amazonaws.com"]
)
def test_calls_a_pipeline_or_stack_makes_on_someones_behalf_are_gated_where_they_started(agent):
    calendar = FakeCalendar(closed=True)
    outcome = service(calendar).handle(run_instances_as(assumed_role(PROD_ADMIN, "AWSCloudFormation", agent)))
    assert outcome.verdict == "AUTHORIZED" and calendar.asked == []


def test_exempt_principals_are_not_asked_about():
    calendar = FakeCalendar(closed=True)
    policy = Policy(exempt_principal_arns=PIPELINE_ROLE)
    outcome = service(calendar, policy).handle(run_instances_as(assumed_role(PIPELINE_ROLE, "1732197600123")))
    assert outcome.verdict == "EXEMPT" and calendar.asked == []


def test_a_pipeline_call_is_one_invoked_by_cloudformation_codedeploy_or_codepipeline():
    assert Actor(invoked_by="codedeploy.amazonaws.com", automation=True).pipeline_call
    assert not Actor(arn=f"arn:aws:sts::{ACCOUNT}:assumed-role/ProdAdmin/dave", automation=True).pipeline_call
    assert not Actor(invoked_by="ec2.amazonaws.com").pipeline_call
