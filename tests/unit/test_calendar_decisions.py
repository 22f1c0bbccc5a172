"""The change-calendar gate's pure decisions (domain/calendar.py), without AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from changeguard.domain.calendar import (
    CalendarReading,
    CalendarState,
    DeploymentFacts,
    GateAction,
    GatedChange,
    GateKind,
    GateVerdict,
    PipelineFacts,
    StackFacts,
    TargetFacts,
    calendar_matches,
    decide,
    is_valid_emergency,
)
from changeguard.domain.deployments import REDEPLOY_MARKER, RedeployMark
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import Ticket, TicketStatus, TicketType
from changeguard.domain.verdicts import Severity

AT = datetime(2026, 11, 21, 9, 15, tzinfo=UTC)
OPENS = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
ENFORCE = Policy(enforcement_mode="enforce")
OBSERVE = Policy(enforcement_mode="observe")


def change(kind: GateKind = GateKind.DEPLOYMENT, operation: str = "START", target: str = "d-4UTS1DE01") -> GatedChange:
    return GatedChange(
        change_id=target,
        kind=kind,
        operation=operation,
        target=target,
        event_time=AT,
        account="123456789012",
        region="us-east-1",
        application="checkout-api",
        group="prod",
    )


def reading(state: CalendarState, nxt: datetime | None = OPENS, error: str | None = None) -> CalendarReading:
    return CalendarReading(state=state, at=AT, calendars=("prod-window",), next_transition=nxt, error=error)


RUNNING = TargetFacts(status="InProgress", in_progress=True)
EMERGENCY = Ticket(ticket_id="CHG-2001", type=TicketType.EMERGENCY, status=TicketStatus.OPEN)


def test_a_deployment_inside_the_window_goes_ahead() -> None:
    decision = decide(change(), reading(CalendarState.OPEN, AT + timedelta(hours=1)), RUNNING, ENFORCE)

    assert decision.verdict is GateVerdict.IN_WINDOW
    assert decision.action is GateAction.NONE
    assert not decision.mutates and not decision.alerts


def test_a_deployment_outside_the_window_is_stopped_with_rollback_in_enforce_mode() -> None:
    decision = decide(change(), reading(CalendarState.CLOSED), RUNNING, ENFORCE)

    assert decision.verdict is GateVerdict.OUTSIDE_CHANGE_WINDOW
    assert decision.action is GateAction.STOP_DEPLOYMENT
    assert decision.mutates and decision.alerts
    assert decision.severity is Severity.HIGH
    assert decision.reading.next_opening == OPENS
    assert "stop deployment d-4UTS1DE01 (checkout-api/prod) with automatic rollback" in decision.summary
    assert OPENS.isoformat() in decision.summary


def test_observe_mode_only_reports_what_it_would_do() -> None:
    decision = decide(change(), reading(CalendarState.CLOSED), RUNNING, OBSERVE)

    assert decision.blocks and not decision.mutates
    assert decision.summary.startswith("would stop deployment")
    assert "(observe mode)" in decision.summary


def test_an_emergency_ticket_lets_the_change_through_with_a_retroactive_approval_deadline() -> None:
    decision = decide(change(), reading(CalendarState.CLOSED), RUNNING, ENFORCE, ticket=EMERGENCY)

    assert decision.verdict is GateVerdict.EMERGENCY
    assert decision.action is GateAction.NONE
    assert decision.retro_approval_due == AT + timedelta(hours=ENFORCE.emergency_approval_hours)
    assert decision.alerts and decision.ticket_id == "CHG-2001"


@pytest.mark.parametrize(
    "ticket",
    [
        Ticket(ticket_id="CHG-1", type=TicketType.NORMAL, status=TicketStatus.APPROVED),
        Ticket(ticket_id="CHG-2", type=TicketType.EMERGENCY, status=TicketStatus.REJECTED),
        Ticket(ticket_id="CHG-3", type=TicketType.EMERGENCY, status=TicketStatus.CANCELLED),
        None,
    ],
)
def test_only_an_open_or_approved_emergency_ticket_counts(ticket: Ticket | None) -> None:
    assert not is_valid_emergency(ticket)
    decision = decide(change(), reading(CalendarState.CLOSED), RUNNING, ENFORCE, ticket=ticket, ticket_note="why")
    assert decision.action is GateAction.STOP_DEPLOYMENT
    assert "why" in decision.reasons


@pytest.mark.parametrize("state", [CalendarState.CLOSED, CalendarState.UNKNOWN])
def test_rollbacks_are_never_stopped(state: CalendarState) -> None:
    rollback = TargetFacts(status="InProgress", in_progress=True, rollback=True, rollback_reason="rollback of d-1")

    decision = decide(change(), reading(state), rollback, ENFORCE)

    assert decision.verdict is GateVerdict.ROLLBACK
    assert decision.action is GateAction.NONE
    assert not decision.alerts


@pytest.mark.parametrize("creator", ["codeDeployRollback", "CloudFormationRollback", "autoRollback"])
def test_codedeploy_rollbacks_are_recognised_from_rollback_info_and_creator(creator: str) -> None:
    stopped_rollback = DeploymentFacts(deployment_id="d-2", status="InProgress", rollback_of="d-1")
    created_by_rollback = DeploymentFacts(deployment_id="d-3", status="InProgress", creator=creator)
    ordinary = DeploymentFacts(deployment_id="d-4", status="InProgress", creator="user")

    assert stopped_rollback.target().rollback
    assert created_by_rollback.target().rollback
    assert not ordinary.target().rollback
    guard_redeploy = DeploymentFacts(
        deployment_id="d-5",
        status="InProgress",
        description="ChangeGuard rollback of d-4",
        redeploy_mark=RedeployMark.MARKED,
    )
    assert guard_redeploy.target().rollback


@pytest.mark.parametrize("mark", [None, RedeployMark.UNMARKED, RedeployMark.PENDING])
@pytest.mark.parametrize("hook", [False, True])
def test_a_description_claiming_the_guards_redeploy_is_no_rollback_without_the_ledgers_mark(
    mark: RedeployMark | None, hook: bool
) -> None:
    """Anyone allowed CreateDeployment writes the description: the claim alone must not open the window."""
    spoof = DeploymentFacts(
        deployment_id="d-4UTS1DE01",
        status="InProgress",
        description=f"{REDEPLOY_MARKER}d-BAD000001: not really",
        redeploy_mark=mark,
    ).target()

    decision = decide(change(), reading(CalendarState.CLOSED), spoof, ENFORCE, hook=hook)

    assert not spoof.rollback
    assert decision.verdict is GateVerdict.OUTSIDE_CHANGE_WINDOW and decision.alerts
    assert decision.action is (GateAction.FAIL_HOOK if hook else GateAction.STOP_DEPLOYMENT)
    assert any(
        "claims it is ChangeGuard's rollback" in r and "ledger holds no such redeploy" in r for r in decision.reasons
    )


@pytest.mark.parametrize("creator", ["autoscaling", "CodeDeployAutoUpdate", "autoscalingTermination"])
def test_deployments_auto_scaling_or_auto_update_created_are_not_releases(creator: str) -> None:
    target = DeploymentFacts(deployment_id="d-6", status="InProgress", creator=creator).target()

    assert target.not_release is not None and f"creator {creator}" in target.not_release
    assert not target.rollback
    assert DeploymentFacts(deployment_id="d-7", status="InProgress", creator="user").target().not_release is None


@pytest.mark.parametrize("state", [CalendarState.CLOSED, CalendarState.UNKNOWN])
@pytest.mark.parametrize("hook", [False, True])
def test_a_scale_out_goes_ahead_whatever_the_calendar_says(state: CalendarState, hook: bool) -> None:
    scale_out = DeploymentFacts(deployment_id="d-4UTS1DE01", status="InProgress", creator="autoscaling").target()

    decision = decide(change(), reading(state), scale_out, ENFORCE, hook=hook)

    assert decision.verdict is GateVerdict.NOT_A_RELEASE
    assert decision.action is (GateAction.SUCCEED_HOOK if hook else GateAction.NONE)
    assert not decision.blocks and not decision.mutates and not decision.alerts
    assert decision.severity is Severity.INFO
    assert "is not a release" in decision.reasons[0] and "creator autoscaling" in decision.reasons[0]
    assert decision.reasons[1].startswith(f"the change calendar was {state.value} at ")


def test_pipeline_rollback_executions_are_recognised() -> None:
    assert (
        PipelineFacts(pipeline="p", execution_id="e", status="InProgress", execution_type="ROLLBACK").target().rollback
    )
    assert (
        PipelineFacts(pipeline="p", execution_id="e", status="InProgress", trigger_type="AutomatedRollback")
        .target()
        .rollback
    )
    assert not PipelineFacts(pipeline="p", execution_id="e", status="InProgress").target().rollback


def test_an_unreadable_calendar_blocks_when_fail_closed() -> None:
    decision = decide(change(), reading(CalendarState.UNKNOWN, None, "InvalidDocument"), RUNNING, ENFORCE)

    assert decision.verdict is GateVerdict.CALENDAR_UNKNOWN
    assert decision.action is GateAction.STOP_DEPLOYMENT and decision.mutates
    assert any("InvalidDocument" in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("kind", "operation", "target"),
    [
        (GateKind.STACK, "CreateStack", TargetFacts(status="CREATE_IN_PROGRESS")),
        (GateKind.STACK, "DeleteStack", TargetFacts(status="DELETE_IN_PROGRESS")),
        (GateKind.DEPLOYMENT, "START", TargetFacts(status="Succeeded", in_progress=False)),
    ],
)
def test_an_unreadable_calendar_alerts_on_what_cannot_be_stopped_as_closed_would_when_fail_closed(
    kind: GateKind, operation: str, target: TargetFacts
) -> None:
    unknown = decide(change(kind, operation), reading(CalendarState.UNKNOWN, None, "boom"), target, ENFORCE)
    closed = decide(change(kind, operation), reading(CalendarState.CLOSED), target, ENFORCE)
    fail_open = Policy(enforcement_mode="enforce", calendar_fail_closed=False)
    open_ = decide(change(kind, operation), reading(CalendarState.UNKNOWN, None, "boom"), target, fail_open)

    assert closed.action is unknown.action is GateAction.ALERT and closed.alerts
    assert unknown.verdict is GateVerdict.CALENDAR_UNKNOWN and unknown.alerts
    assert not open_.alerts


def test_an_unreadable_calendar_lets_changes_through_when_fail_open() -> None:
    policy = Policy(enforcement_mode="enforce", calendar_fail_closed=False)

    decision = decide(change(), reading(CalendarState.UNKNOWN, None, "boom"), RUNNING, policy)

    assert decision.verdict is GateVerdict.CALENDAR_UNKNOWN
    assert decision.action is GateAction.NONE and not decision.alerts


def test_a_finished_deployment_is_reported_not_stopped() -> None:
    done = TargetFacts(status="Succeeded", in_progress=False)

    decision = decide(change(), reading(CalendarState.CLOSED), done, ENFORCE)

    assert decision.action is GateAction.ALERT and not decision.mutates and decision.alerts
    assert any("already Succeeded" in r for r in decision.reasons)


@pytest.mark.parametrize(
    ("operation", "status", "action"),
    [
        ("UpdateStack", "UPDATE_IN_PROGRESS", GateAction.CANCEL_STACK_UPDATE),
        ("ExecuteChangeSet", "UPDATE_IN_PROGRESS", GateAction.CANCEL_STACK_UPDATE),
        ("UpdateStack", "UPDATE_COMPLETE", GateAction.ALERT),
        ("CreateStack", "CREATE_IN_PROGRESS", GateAction.ALERT),
        ("DeleteStack", "DELETE_IN_PROGRESS", GateAction.ALERT),
    ],
)
def test_stack_changes_are_cancelled_only_while_an_update_is_in_progress(
    operation: str, status: str, action: GateAction
) -> None:
    stack = StackFacts(
        stack_id="arn:aws:cloudformation:us-east-1:1:stack/s/1", name="s", status=status, last_updated=AT
    )

    decision = decide(change(GateKind.STACK, operation, "s"), reading(CalendarState.CLOSED), stack.target(AT), ENFORCE)

    assert decision.action is action
    assert decision.alerts


STACK = "arn:aws:cloudformation:us-east-1:1:stack/s/1"
CHANGE_SET = "arn:aws:cloudformation:us-east-1:1:changeSet/release-15/0f1e2d3c"


@pytest.mark.parametrize(
    ("operation", "started", "change_set_id", "cancel"),
    [
        # The call's own update: it started as the call was made (CloudTrail gives whole seconds).
        ("UpdateStack", AT + timedelta(seconds=0.8), None, True),
        ("ExecuteChangeSet", AT + timedelta(seconds=2), CHANGE_SET, True),
        # A late event (01:59 closed, processed after a legitimate 02:02 update): a later update.
        ("UpdateStack", AT + timedelta(minutes=3), None, False),
        ("ExecuteChangeSet", AT + timedelta(minutes=3), CHANGE_SET, False),
        # Another change set is being applied, whatever the times say.
        ("ExecuteChangeSet", AT + timedelta(seconds=2), CHANGE_SET.replace("release-15", "release-16"), False),
        # An update already running before the call could not have been started by it.
        ("UpdateStack", AT - timedelta(minutes=5), None, False),
        # No LastUpdatedTime: the update cannot be told from another one.
        ("UpdateStack", None, None, False),
    ],
)
def test_only_the_stack_update_the_call_started_is_cancelled(
    operation: str, started: datetime | None, change_set_id: str | None, cancel: bool
) -> None:
    stack = StackFacts(
        stack_id=STACK, name="s", status="UPDATE_IN_PROGRESS", last_updated=started, change_set_id=change_set_id
    )
    called_with = "release-15" if operation == "ExecuteChangeSet" else None

    decision = decide(
        change(GateKind.STACK, operation, "s"), reading(CalendarState.CLOSED), stack.target(AT, called_with), ENFORCE
    )

    assert decision.action is (GateAction.CANCEL_STACK_UPDATE if cancel else GateAction.ALERT)
    assert decision.alerts
    if not cancel:
        assert any("not cancelled" in r for r in decision.reasons)


def test_a_deleted_stack_is_still_reported_as_a_deletion() -> None:
    decision = decide(
        change(GateKind.STACK, "DeleteStack", "gone"), reading(CalendarState.CLOSED), TargetFacts(exists=False), ENFORCE
    )

    assert decision.action is GateAction.ALERT
    assert any("DeleteStack cannot be undone safely" in r for r in decision.reasons)


def test_the_lifecycle_hook_fails_when_closed_and_succeeds_when_open() -> None:
    closed = decide(change(), reading(CalendarState.CLOSED), RUNNING, ENFORCE, hook=True)
    opened = decide(change(), reading(CalendarState.OPEN), RUNNING, ENFORCE, hook=True)
    observed = decide(change(), reading(CalendarState.CLOSED), RUNNING, OBSERVE, hook=True)

    assert closed.action is GateAction.FAIL_HOOK and closed.mutates
    assert opened.action is GateAction.SUCCEED_HOOK and not opened.blocks
    assert observed.action is GateAction.FAIL_HOOK and not observed.mutates


def test_calendar_names_match_by_name_or_document_arn() -> None:
    configured = ("prod-window", "arn:aws:ssm:us-east-1:123456789012:document/freeze")

    assert calendar_matches("arn:aws:ssm:us-east-1:123456789012:document/prod-window", configured)
    assert calendar_matches("freeze", configured)
    assert not calendar_matches("arn:aws:ssm:us-east-1:123456789012:document/other", configured)


def test_a_calendar_of_the_same_name_in_another_account_or_region_is_another_calendar() -> None:
    """Members forward their own calendars' transitions to the central bus: a member's prod-window is
    not the suite's. A plain name is the suite's own account's and region's document; an ARN is itself."""
    home = ("123456789012", "us-east-1")
    own = "arn:aws:ssm:us-east-1:123456789012:document/prod-window"
    member = "arn:aws:ssm:us-east-1:210987654321:document/prod-window"
    elsewhere = "arn:aws:ssm:eu-west-1:123456789012:document/prod-window"

    assert calendar_matches(own, ("prod-window",), home)
    assert not calendar_matches(member, ("prod-window",), home)
    assert not calendar_matches(elsewhere, ("prod-window",), home)
    assert calendar_matches(member, (member,), home)  # configured by ARN: that document, wherever it is
    assert not calendar_matches(member, (own,), home) and not calendar_matches(own, (member,), home)
