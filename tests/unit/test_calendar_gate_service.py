"""The change-calendar gate service with in-memory fakes: what it calls, ledgers and alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from changeguard.adapters.codedeploy import StopResult
from changeguard.domain.calendar import (
    CalendarReading,
    CalendarState,
    DeploymentFacts,
    PipelineFacts,
    StackFacts,
    StopAnswer,
)
from changeguard.domain.deployments import REDEPLOY_MARKER, RedeployMarkPendingError
from changeguard.domain.errors import InvalidEventError
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import Ticket, TicketStatus, TicketType
from changeguard.services.calendar_gate import OUTAGE_KEY, CalendarGateService, LifecycleHookService
from changeguard.services.follow_up import FollowUpService
from fakes import FakeCalendar as ReaderOfTheFollowUp
from fakes import FakeClock, FakeTicketSource, InMemoryLedger, ThreadScope
from sample_events import load_event

OPENS = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 21, 9, 16, tzinfo=UTC)


class FakeCalendar:
    """Answers with a fixed state (or UNKNOWN), recording the times it was asked about."""

    names = ("prod-window",)

    def __init__(self, state: CalendarState, next_transition: datetime | None = OPENS) -> None:
        self.state = state
        self.next_transition = next_transition
        self.asked: list[datetime] = []

    def reading_at(self, at: datetime) -> CalendarReading:
        self.asked.append(at)
        error = "InvalidDocument: no such calendar" if self.state is CalendarState.UNKNOWN else None
        nxt = None if error else self.next_transition
        return CalendarReading(state=self.state, at=at, calendars=self.names, next_transition=nxt, error=error)


class FakeDeployments:
    def __init__(self, *facts: DeploymentFacts) -> None:
        self.facts = {f.deployment_id: f for f in facts}
        self.stops: list[tuple[str, bool]] = []
        self.hooks: list[tuple[str, str, str]] = []
        self.reported: set[str] = set()

    def get(self, deployment_id: str) -> DeploymentFacts | None:
        return self.facts.get(deployment_id)

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> StopResult:
        self.stops.append((deployment_id, auto_rollback))
        return StopResult(status="Succeeded", message="stopped")

    def put_hook_status(self, deployment_id: str, execution_id: str, status: str) -> bool:
        self.hooks.append((deployment_id, execution_id, status))
        if execution_id in self.reported:
            return False
        self.reported.add(execution_id)
        return True


class FakePipelines:
    def __init__(self, *facts: PipelineFacts) -> None:
        self.facts = {(f.pipeline, f.execution_id): f for f in facts}
        self.stops: list[tuple[str, str, str]] = []

    def get(self, pipeline: str, execution_id: str) -> PipelineFacts | None:
        return self.facts.get((pipeline, execution_id))

    def stop(self, pipeline: str, execution_id: str, reason: str) -> StopAnswer:
        self.stops.append((pipeline, execution_id, reason))
        return StopAnswer(text="accepted")


class FakeStacks:
    def __init__(self, *facts: StackFacts, change_sets: dict[str, str] | None = None) -> None:
        self.facts = {f.name: f for f in facts} | {f.stack_id: f for f in facts}
        self.change_sets = change_sets or {}
        self.cancels: list[str] = []

    def get(self, stack: str) -> StackFacts | None:
        return self.facts.get(stack)

    def stack_of_change_set(self, change_set: str, stack: str | None = None) -> str | None:
        return self.change_sets.get(change_set)

    def cancel_update(self, stack: str) -> StopAnswer:
        self.cancels.append(stack)
        return StopAnswer(text="accepted")


OUTSIDE = DeploymentFacts(
    deployment_id="d-4UTS1DE01", status="InProgress", application="payments-api", deployment_group="payments-prod"
)
STACK_ARN = "arn:aws:cloudformation:us-east-1:123456789012:stack/checkout-service/8e2f4a60-c7b1-11f0-9a3e-0a1b2c3d4e5f"
# Updating since the call in 07-cloudtrail-update-stack.json (DescribeStacks' LastUpdatedTime).
UPDATING = StackFacts(
    stack_id=STACK_ARN,
    name="checkout-service",
    status="UPDATE_IN_PROGRESS",
    tags={},
    last_updated=datetime(2026, 11, 21, 9, 30, 0, 600000, tzinfo=UTC),
)
EXECUTION = PipelineFacts(
    pipeline="checkout-pipeline", execution_id="3f9b6c2a-1d4e-4a5b-9c8d-7e6f5a4b3c21", status="InProgress"
)


def gate(
    state: CalendarState = CalendarState.CLOSED,
    *,
    mode: str = "enforce",
    tickets: tuple[Ticket, ...] = (),
    deployments: FakeDeployments | None = None,
    pipelines: FakePipelines | None = None,
    stacks: FakeStacks | None = None,
    fail_closed: bool = True,
    calendar: FakeCalendar | None = None,
) -> tuple[CalendarGateService, dict[str, Any]]:
    policy = Policy(enforcement_mode=mode, change_calendar_names=("prod-window",), calendar_fail_closed=fail_closed)
    parts: dict[str, Any] = {
        "ledger": InMemoryLedger(),
        "calendar": calendar or FakeCalendar(state),
        "deployments": deployments or FakeDeployments(OUTSIDE),
        "pipelines": pipelines or FakePipelines(EXECUTION),
        "stacks": stacks or FakeStacks(UPDATING),
    }
    service = CalendarGateService(
        function="gate_change_window",
        ledger=parts["ledger"],
        tickets=FakeTicketSource(*tickets),
        policy=lambda: policy,
        clock=FakeClock(NOW),
        calendar=lambda _: parts["calendar"],
        deployments=parts["deployments"],
        pipelines=parts["pipelines"],
        stacks=parts["stacks"],
        suite_role_prefixes=("arn:aws:iam::123456789012:role/changeguard/",),
    )
    return service, parts


def alerts(ledger: InMemoryLedger) -> list[dict[str, Any]]:
    return [e.body["alert"] for e in ledger.kinds("ALERT")]


def test_the_calendar_is_read_at_the_time_of_the_change_not_of_processing() -> None:
    service, parts = gate()

    service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert parts["calendar"].asked == [datetime(2026, 11, 21, 9, 15, tzinfo=UTC)]


def test_a_deployment_started_outside_the_window_is_stopped_with_rollback_and_alerted() -> None:
    service, parts = gate()

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert parts["deployments"].stops == [("d-4UTS1DE01", True)]
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    # The decision, ledgered before the stop, then the stop's result (what StopDeployment answered).
    [entry, result] = [e for e in parts["ledger"].kinds("CALENDAR")]
    # The deployment guard records the same deployment under this id: one deployment, one change.
    assert entry.change_id == "codedeploy:d-4UTS1DE01" and entry.entry == "CALENDAR"
    assert entry.body["mode"] == "enforce" and entry.body["intent"] is True
    assert entry.body["actions"] == [
        "stop deployment d-4UTS1DE01 (payments-api/payments-prod) with automatic rollback (StopDeployment)"
    ]
    assert result.entry == "CALENDAR#result" and result.body["acted_as"] == {"account": "", "identity": "function role"}
    assert result.body["actions"][0].startswith("stopped deployment d-4UTS1DE01")
    [alert] = alerts(parts["ledger"])
    assert alert["subject"].startswith("Change window CLOSED: stopped deployment d-4UTS1DE01")
    assert alert["details"]["next_opening"] == OPENS.isoformat()
    assert OPENS.isoformat() in alert["summary"]
    assert any("stopped deployment d-4UTS1DE01" in a for a in alert["actions"])


def test_observe_mode_makes_no_mutating_call_and_reports_would_have_stopped() -> None:
    service, parts = gate(mode="observe")

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert parts["deployments"].stops == []
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    [alert] = alerts(parts["ledger"])
    assert "would have stopped" in alert["subject"]
    assert alert["details"]["mode"] == "observe"


def test_a_deployment_inside_the_window_goes_ahead_silently() -> None:
    service, parts = gate(CalendarState.OPEN)

    outcome = service.handle(load_event("gate_change_window/02-codedeploy-start-in-window.json"))

    assert outcome.verdict == "IN_WINDOW"
    assert parts["deployments"].stops == []
    assert alerts(parts["ledger"]) == []


def test_an_emergency_deployment_goes_ahead_flagged_for_retroactive_approval() -> None:
    emergency = DeploymentFacts(
        deployment_id="d-EMERGNCY1", status="InProgress", description="CHG-2001 hotfix for INCIDENT-77"
    )
    ticket = Ticket(ticket_id="CHG-2001", type=TicketType.EMERGENCY, status=TicketStatus.OPEN)
    service, parts = gate(tickets=(ticket,), deployments=FakeDeployments(emergency))

    outcome = service.handle(load_event("gate_change_window/03-codedeploy-start-emergency.json"))

    assert outcome.verdict == "EMERGENCY"
    assert parts["deployments"].stops == []
    [alert] = alerts(parts["ledger"])
    assert alert["ticket_id"] == "CHG-2001"
    assert (
        alert["details"]["retro_approval_due"]
        == (datetime(2026, 11, 21, 9, 40, tzinfo=UTC) + timedelta(hours=24)).isoformat()
    )


def test_a_normal_ticket_does_not_open_a_closed_window() -> None:
    described = DeploymentFacts(deployment_id="d-4UTS1DE01", status="InProgress", description="CHG-1001 release")
    ticket = Ticket(ticket_id="CHG-1001", type=TicketType.NORMAL, status=TicketStatus.APPROVED)
    service, parts = gate(tickets=(ticket,), deployments=FakeDeployments(described))

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert parts["deployments"].stops == [("d-4UTS1DE01", True)]
    assert any("not an open emergency" in r for r in outcome.reasons)


def test_an_unreachable_ticket_source_does_not_honour_an_emergency() -> None:
    described = DeploymentFacts(deployment_id="d-4UTS1DE01", status="InProgress", description="CHG-2001")
    service, parts = gate(deployments=FakeDeployments(described))
    service.tickets = FakeTicketSource(down=True)

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert parts["deployments"].stops == [("d-4UTS1DE01", True)]
    assert any("could not be verified" in r for r in outcome.reasons)


@pytest.mark.parametrize(
    "facts",
    [
        DeploymentFacts(deployment_id="d-4UTS1DE01", status="InProgress", rollback_of="d-PREVIOUS1"),
        DeploymentFacts(deployment_id="d-4UTS1DE01", status="InProgress", creator="codeDeployRollback"),
    ],
)
def test_codedeploy_rollbacks_are_never_stopped(facts: DeploymentFacts) -> None:
    service, parts = gate(deployments=FakeDeployments(facts))

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert outcome.verdict == "ROLLBACK"
    assert parts["deployments"].stops == []


REDEPLOY = DeploymentFacts(
    deployment_id="d-4UTS1DE01",
    status="InProgress",
    description=f"{REDEPLOY_MARKER}d-BAD000001 (CHG-2001): regression inside the bake window",
)


def guard_wrote(ledger: InMemoryLedger, *, intent: bool = True, mark: bool = True, at: datetime = NOW) -> None:
    """What the deployment guard ledgers around its redeploy d-4UTS1DE01 of d-BAD000001: the ROLLBACK
    intent before CreateDeployment, the result and the mark under the bare id right after."""

    def fact(change_id: str, entry: str) -> LedgerEntry:
        return LedgerEntry(
            change_id=change_id,
            entry=entry,
            kind=EntryKind.ROLLBACK,
            function="guard_deployment",
            event_time=at,
            recorded_at=at,
            body={"rollback_of": "d-BAD000001"} if change_id == "d-4UTS1DE01" else {},
        )

    if intent:
        ledger.append([fact("codedeploy:d-BAD000001", "ROLLBACK")])
    if mark:
        ledger.append([fact("codedeploy:d-BAD000001", "ROLLBACK#d-4UTS1DE01")])
        ledger.append([fact("d-4UTS1DE01", "ROLLBACK#guard_deployment")])


def test_the_deployment_guards_redeploy_of_a_good_revision_is_never_stopped() -> None:
    service, parts = gate(deployments=FakeDeployments(REDEPLOY))
    guard_wrote(parts["ledger"])

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert outcome.verdict == "ROLLBACK"
    assert parts["deployments"].stops == []


@pytest.mark.parametrize("intent", [False, True])
def test_a_description_claiming_the_guards_redeploy_without_its_mark_is_stopped_as_a_release(intent: bool) -> None:
    """Anyone allowed CreateDeployment writes the description; only the ledger's mark makes a redeploy ours.
    With the guard's redeploy of the named deployment long finished under another id, a copy of its
    description is no more than a claim."""
    service, parts = gate(deployments=FakeDeployments(REDEPLOY))
    if intent:
        guard_wrote(parts["ledger"], mark=False, at=NOW - timedelta(hours=2))

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert parts["deployments"].stops == [("d-4UTS1DE01", True)]
    [alert] = alerts(parts["ledger"])
    assert any("claims it is ChangeGuard's rollback" in r for r in alert["reasons"])


def test_a_redeploy_whose_start_comes_before_the_guards_mark_waits_for_the_mark() -> None:
    """The guard writes its intent, calls CreateDeployment, then marks the redeploy: START can come between."""
    service, parts = gate(deployments=FakeDeployments(REDEPLOY))
    guard_wrote(parts["ledger"], mark=False)
    pauses: list[float] = []

    def guard_finishes_meanwhile(seconds: float) -> None:
        pauses.append(seconds)
        guard_wrote(parts["ledger"], intent=False)

    service.sleep = guard_finishes_meanwhile

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert outcome.verdict == "ROLLBACK" and len(pauses) == 1
    assert parts["deployments"].stops == []


def test_a_redeploy_still_unmarked_after_the_rereads_is_retried_not_guessed() -> None:
    service, parts = gate(deployments=FakeDeployments(REDEPLOY))
    guard_wrote(parts["ledger"], mark=False)
    pauses: list[float] = []
    service.sleep = pauses.append
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")

    with pytest.raises(RedeployMarkPendingError):
        service.handle(event)

    assert sum(pauses) <= 5 and parts["deployments"].stops == []
    assert parts["ledger"].kinds("CALENDAR") == []  # nothing decided: Lambda's retry decides
    guard_wrote(parts["ledger"], intent=False)
    assert service.handle(event).verdict == "ROLLBACK"
    assert parts["deployments"].stops == []


@pytest.mark.parametrize("state", [CalendarState.CLOSED, CalendarState.UNKNOWN])
def test_a_scale_out_deployment_is_never_stopped_and_ledgered_as_not_a_release(state: CalendarState) -> None:
    scale_out = OUTSIDE.model_copy(update={"creator": "autoscaling"})
    service, parts = gate(state, deployments=FakeDeployments(scale_out))

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert outcome.verdict == "NOT_A_RELEASE"
    assert parts["deployments"].stops == []
    assert [a for a in alerts(parts["ledger"]) if a["kind"] == "change-window"] == []  # an outage still alerts
    [entry] = parts["ledger"].kinds("CALENDAR")
    assert entry.verdict == "NOT_A_RELEASE" and entry.severity == "info"
    assert "is not a release" in entry.body["summary"] and "creator autoscaling" in entry.body["summary"]


def test_a_duplicate_delivery_acts_and_alerts_once() -> None:
    service, parts = gate()
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")

    first = service.handle(event)
    second = service.handle(event)

    assert not first.duplicate and second.duplicate
    assert parts["deployments"].stops == [("d-4UTS1DE01", True)]
    assert len(alerts(parts["ledger"])) == 1


class StoppingDeployments(FakeDeployments):
    """CodeDeploy as the gate meets it: a stopped deployment reads Stopped; stopping it again is refused."""

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> StopResult:
        self.stops.append((deployment_id, auto_rollback))
        if self.facts[deployment_id].status == "Stopped":
            return StopResult(status="AlreadyCompleted", already_completed=True)
        self.facts[deployment_id] = self.facts[deployment_id].model_copy(update={"status": "Stopped"})
        return StopResult(status="Succeeded", message="stopped")


def failing_once(ledger: InMemoryLedger, entry: str) -> None:
    """The ledger's append of ``entry`` throttled (or timed out) once."""
    real, failed = ledger.append, []

    def append(entries: Any) -> bool:
        if not failed and any(e.entry == entry for e in entries):
            failed.append(entry)
            raise TimeoutError("ledger write timed out")
        return real(entries)

    ledger.append = append  # type: ignore[method-assign]


def test_a_retry_after_the_result_could_not_be_ledgered_keeps_the_stop_the_gate_made() -> None:
    """The stop is made, then the append of its result fails and Lambda retries a minute later: the
    retry finds the deployment Stopped. The ledger says ChangeGuard decided, before it acted, to stop it,
    and the alert says so; neither becomes "already Stopped: nothing to stop"."""
    service, parts = gate(deployments=StoppingDeployments(OUTSIDE))
    failing_once(parts["ledger"], "CALENDAR#result")
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    with pytest.raises(TimeoutError):
        service.handle(event)
    service.clock = FakeClock(NOW + timedelta(minutes=1))

    outcome = service.handle(event)

    assert parts["deployments"].stops == [("d-4UTS1DE01", True)]  # not stopped twice
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW" and not outcome.duplicate
    [decision, result] = parts["ledger"].kinds("CALENDAR")
    assert decision.body["decision"]["action"] == "stop_deployment" and decision.body["intent"] is True
    assert "was Stopped when a retry came to stop it" in result.body["actions"][0]
    assert result.body["final_status"] == "Stopped"
    [alert] = alerts(parts["ledger"])
    assert alert["subject"].startswith("Change window CLOSED: stopped deployment d-4UTS1DE01")
    assert "this gate's earlier attempt decided to and most likely did" in alert["actions"][0]
    assert service.handle(event).duplicate  # and then it is done


class StopTakesAWhile(FakeDeployments):
    """StopDeployment answers Pending, and the deployment reads InProgress until the stop has taken
    effect; called again after that, it answers that the deployment already finished."""

    def __init__(self) -> None:
        super().__init__(OUTSIDE)
        self.stopping = False

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> StopResult:
        self.stops.append((deployment_id, auto_rollback))
        if self.stopping:  # this gate's first stop has taken effect by now
            self.facts[deployment_id] = self.facts[deployment_id].model_copy(update={"status": "Stopped"})
            return StopResult(status="AlreadyCompleted", already_completed=True)
        self.stopping = True
        return StopResult(status="Pending", message="stop pending")


def test_a_retry_that_calls_again_while_its_own_stop_took_effect_keeps_it_as_the_gates() -> None:
    """The first attempt's StopDeployment answers Pending and its result cannot be ledgered; the retry
    finds the deployment still InProgress, calls again and is told it already finished (Stopped). Only
    this gate stopped it: the record keeps the decision's stop and never says someone else did."""
    service, parts = gate(deployments=StopTakesAWhile())
    failing_once(parts["ledger"], "CALENDAR#result")
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    with pytest.raises(TimeoutError):
        service.handle(event)
    service.clock = FakeClock(NOW + timedelta(minutes=1))

    service.handle(event)

    [_decision, result] = parts["ledger"].kinds("CALENDAR")
    assert result.body["decision"]["action"] == "stop_deployment" and result.body["final_status"] == "Stopped"
    assert "this gate's earlier attempt decided to and most likely did" in result.body["actions"][0]
    [alert] = alerts(parts["ledger"])
    assert alert["subject"].startswith("Change window CLOSED: stopped deployment d-4UTS1DE01"), alert["subject"]
    assert service.handle(event).duplicate


def test_a_retry_after_the_stop_failed_makes_the_recorded_stop() -> None:
    """The decision is ledgered, then StopDeployment fails (throttled): the retry stops what is still running."""
    deployments = StoppingDeployments(OUTSIDE)
    service, parts = gate(deployments=deployments)
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    real_stop = deployments.stop

    def throttled(deployment_id: str, *, auto_rollback: bool = True) -> StopResult:
        raise TimeoutError("StopDeployment throttled")

    deployments.stop = throttled  # type: ignore[method-assign]
    with pytest.raises(TimeoutError):
        service.handle(event)
    deployments.stop = real_stop  # type: ignore[method-assign]
    service.clock = FakeClock(NOW + timedelta(minutes=1))

    outcome = service.handle(event)

    assert deployments.stops == [("d-4UTS1DE01", True)] and not outcome.duplicate
    assert outcome.actions[0].startswith("stopped deployment d-4UTS1DE01 (payments-api/payments-prod) with automatic")
    assert len(alerts(parts["ledger"])) == 1


def test_a_concurrent_delivery_leaves_the_stop_to_the_one_that_ledgered_it() -> None:
    """Two deliveries of one START at once: the second finds the decision without its result while the
    first may still be stopping the deployment, and makes no second call."""
    deployments = StoppingDeployments(OUTSIDE)
    service, parts = gate(deployments=deployments)
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    real_stop = deployments.stop
    during: list[Any] = []

    def stop_while_a_duplicate_arrives(deployment_id: str, *, auto_rollback: bool = True) -> StopResult:
        during.append(service.handle(event))
        return real_stop(deployment_id, auto_rollback=auto_rollback)

    deployments.stop = stop_while_a_duplicate_arrives  # type: ignore[method-assign]

    first = service.handle(event)

    [second] = during
    assert second.duplicate and "concurrent delivery" in second.actions[0]
    assert deployments.stops == [("d-4UTS1DE01", True)] and not first.duplicate
    assert len(alerts(parts["ledger"])) == 1


def test_a_retried_stack_cancel_never_cancels_again_what_no_longer_runs_that_update() -> None:
    """CancelUpdateStack was made and its result not ledgered; the retry finds the stack rolling back."""
    stacks = FakeStacks(UPDATING)
    service, parts = gate(stacks=stacks)
    failing_once(parts["ledger"], "CALENDAR#result")
    event = load_event("gate_change_window/07-cloudtrail-update-stack.json")
    with pytest.raises(TimeoutError):
        service.handle(event)
    rolling_back = UPDATING.model_copy(update={"status": "UPDATE_ROLLBACK_IN_PROGRESS"})
    stacks.facts = {rolling_back.name: rolling_back, rolling_back.stack_id: rolling_back}
    service.clock = FakeClock(NOW + timedelta(minutes=1))

    outcome = service.handle(event)

    assert stacks.cancels == [STACK_ARN] and not outcome.duplicate
    [decision, result] = parts["ledger"].kinds("CALENDAR")
    assert decision.body["decision"]["action"] == "cancel_stack_update"
    assert "UPDATE_ROLLBACK_IN_PROGRESS when a retry came to cancel the update of it" in result.body["actions"][0]
    assert result.body["final_status"] == "UPDATE_ROLLBACK_IN_PROGRESS"


def throttled(*args: Any, **kwargs: Any) -> Any:
    raise TimeoutError("throttled")


@pytest.mark.parametrize(
    ("kind", "status", "ended"),
    [
        ("deployment", "Succeeded", "it completed before"),
        ("deployment", "Failed", "it ended Failed by itself before"),
        ("pipeline", "Succeeded", "it completed before"),
        ("stack", "UPDATE_COMPLETE", "it completed before"),
    ],
)
def test_a_retry_that_finds_the_change_ended_by_itself_records_that_nothing_was_stopped(
    kind: str, status: str, ended: str
) -> None:
    """The decision is ledgered, the stop or cancel fails (throttled), and before Lambda's retry a
    minute later the change ends by itself: an all-at-once deployment takes seconds. A stop leaves
    Stopped (a cancel UPDATE_ROLLBACK_*), never Succeeded or UPDATE_COMPLETE: nothing was stopped and
    the change went ahead outside the window, which the result and the alert say, with the status read."""
    deployments, pipelines, stacks = FakeDeployments(OUTSIDE), FakePipelines(EXECUTION), FakeStacks(UPDATING)
    service, parts = gate(deployments=deployments, pipelines=pipelines, stacks=stacks)
    adapter, call = {
        "deployment": (deployments, "stop"),
        "pipeline": (pipelines, "stop"),
        "stack": (stacks, "cancel_update"),
    }[kind]
    event = load_event(
        {
            "deployment": "gate_change_window/01-codedeploy-start-outside-window.json",
            "pipeline": "gate_change_window/05-codepipeline-started.json",
            "stack": "gate_change_window/07-cloudtrail-update-stack.json",
        }[kind]
    )
    real = getattr(adapter, call)
    setattr(adapter, call, throttled)
    with pytest.raises(TimeoutError):
        service.handle(event)
    setattr(adapter, call, real)
    if kind == "deployment":
        deployments.facts[OUTSIDE.deployment_id] = OUTSIDE.model_copy(update={"status": status})
    elif kind == "pipeline":
        pipelines.facts = {
            (EXECUTION.pipeline, EXECUTION.execution_id): EXECUTION.model_copy(update={"status": status})
        }
    else:
        done = UPDATING.model_copy(update={"status": status})
        stacks.facts = {done.name: done, done.stack_id: done}
    service.clock = FakeClock(NOW + timedelta(minutes=1))  # Lambda's first retry

    outcome = service.handle(event)

    assert (deployments.stops, pipelines.stops, stacks.cancels) == ([], [], [])  # nothing was ever stopped
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW" and not outcome.duplicate
    [decision, result] = parts["ledger"].kinds("CALENDAR")
    assert decision.body["intent"] is True and result.entry == "CALENDAR#result"
    assert result.body["final_status"] == status
    assert result.body["decision"]["action"] == "alert"  # as for a change already finished when first judged
    assert result.verdict == "OUTSIDE_CHANGE_WINDOW" and result.severity == "high"
    [action] = result.body["actions"]
    assert f"was {status} when a retry came to" in action and ended in action
    assert "went ahead outside the window" in action and "most likely" not in action
    [alert] = alerts(parts["ledger"])
    assert alert["kind"] == "change-window" and alert["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    assert "went ahead outside the window" in alert["subject"] and "stopped" not in alert["subject"]
    assert "cancelled" not in alert["subject"] and alert["actions"] == [action]
    again = service.handle(event)  # a second retry, or a duplicate delivery: nothing new
    assert again.duplicate and len(parts["ledger"].kinds("CALENDAR")) == 2 and len(alerts(parts["ledger"])) == 1


def test_a_retry_that_finds_the_pipeline_stopping_keeps_the_earlier_stop() -> None:
    """StopPipelineExecution leaves an execution Stopping, then Stopped: a retry that finds it so says
    the earlier attempt most likely stopped it, and ledgers the status it read."""
    pipelines = FakePipelines(EXECUTION)
    service, parts = gate(pipelines=pipelines)
    failing_once(parts["ledger"], "CALENDAR#result")
    event = load_event("gate_change_window/05-codepipeline-started.json")
    with pytest.raises(TimeoutError):
        service.handle(event)
    pipelines.facts = {
        (EXECUTION.pipeline, EXECUTION.execution_id): EXECUTION.model_copy(update={"status": "Stopping"})
    }
    service.clock = FakeClock(NOW + timedelta(minutes=1))

    service.handle(event)

    assert len(pipelines.stops) == 1
    [_, result] = parts["ledger"].kinds("CALENDAR")
    assert result.body["final_status"] == "Stopping" and result.body["decision"]["action"] == "stop_pipeline"
    assert "was Stopping when a retry came to stop it" in result.body["actions"][0]
    [alert] = alerts(parts["ledger"])
    assert alert["subject"].startswith("Change window CLOSED: stopped execution 3f9b6c2a")


def test_a_deployment_that_already_finished_is_reported_not_stopped() -> None:
    done = DeploymentFacts(deployment_id="d-4UTS1DE01", status="Succeeded")
    service, parts = gate(deployments=FakeDeployments(done))

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert parts["deployments"].stops == []
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert len(alerts(parts["ledger"])) == 1


MEMBER = "210987654321"


class RefusedAfterRead(ThreadScope):
    """The member role answers the re-read, then is refused (e.g. revoked) when the stop is made."""

    def acting_in(self, account: str | None, region: str | None, reason: str) -> Any:
        self.refused_account = MEMBER if self.visited else None
        return super().acting_in(account, region, reason)


@pytest.mark.parametrize("refused", ["at the re-read", "at the stop"])
def test_a_stop_the_member_role_refused_is_not_alerted_as_stopped(refused: str) -> None:
    """No StopDeployment was made: the result is an alert-only decision (the verdict kept) whose
    subject says so. The per-account "cannot act" alert is raised once a day, so from the second
    refused deployment on, this alert is the only one anyone reads."""
    service, parts = gate()
    service.scope = ThreadScope(refused=MEMBER) if refused == "at the re-read" else RefusedAfterRead()
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    event["account"] = MEMBER

    outcome = service.handle(event)

    assert parts["deployments"].stops == []
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert outcome.actions[0].startswith(
        f"could not stop deployment d-4UTS1DE01 (payments-api/payments-prod) in account {MEMBER}"
    )
    last = parts["ledger"].kinds("CALENDAR")[-1]
    assert last.verdict == "OUTSIDE_CHANGE_WINDOW" and last.body["decision"]["action"] == "alert"
    assert last.body["acted_as"]["account"] == MEMBER and last.body["acted_as"]["error"] == "AccessDenied"
    [window] = [a for a in alerts(parts["ledger"]) if a["kind"] == "change-window"]
    assert window["subject"].startswith(
        f"Change window CLOSED: NOT stopped (access refused in {MEMBER}): deployment d-4UTS1DE01"
    ), window["subject"]
    assert any(r.startswith("could not stop deployment d-4UTS1DE01") for r in window["reasons"])


class FinishesFirst(FakeDeployments):
    """The deployment ends between the gate's re-read and its StopDeployment (all-at-once: seconds)."""

    def __init__(self, status: str) -> None:
        super().__init__(OUTSIDE)
        self.status = status

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> StopResult:
        self.stops.append((deployment_id, auto_rollback))
        self.facts[deployment_id] = self.facts[deployment_id].model_copy(update={"status": self.status})
        return StopResult(status="AlreadyCompleted", already_completed=True)  # DeploymentAlreadyCompletedException


class CompletesFirst(FakeStacks):
    """The stack update completes between the re-read and CancelUpdateStack (ValidationError)."""

    def cancel_update(self, stack: str) -> StopAnswer:
        self.cancels.append(stack)
        done = UPDATING.model_copy(update={"status": "UPDATE_COMPLETE"})
        self.facts = {done.name: done, done.stack_id: done}
        return StopAnswer(
            text="the update finished before it could be cancelled (UPDATE_COMPLETE)", already_completed=True
        )


class StoppedByOthers(FakePipelines):
    """Someone stopped the execution between the re-read and StopPipelineExecution (DuplicatedStopRequest)."""

    def stop(self, pipeline: str, execution_id: str, reason: str) -> StopAnswer:
        self.stops.append((pipeline, execution_id, reason))
        self.facts = {(pipeline, execution_id): EXECUTION.model_copy(update={"status": "Stopping"})}
        return StopAnswer(text="already stopped or finished: nothing to stop", already_completed=True)


@pytest.mark.parametrize(
    ("kind", "status", "happened"),
    [
        ("deployment", "Succeeded", "went ahead outside the window (Succeeded)"),
        ("deployment", "Stopped", "already Stopped before this gate acted"),
        ("stack", "UPDATE_COMPLETE", "went ahead outside the window (UPDATE_COMPLETE)"),
        ("pipeline", "Stopping", "already Stopping before this gate acted"),
    ],
)
def test_a_change_that_ended_just_before_the_stop_is_not_alerted_as_stopped(
    kind: str, status: str, happened: str
) -> None:
    """The call answered that the target no longer ran (FACTS.md: StopDeployment on a finished
    deployment raises DeploymentAlreadyCompletedException): the gate re-reads it and says what
    happened - the change went ahead, or someone else stopped it - never that it stopped it."""
    service, parts = gate(
        deployments=FinishesFirst(status) if kind == "deployment" else None,
        stacks=CompletesFirst(UPDATING) if kind == "stack" else None,
        pipelines=StoppedByOthers(EXECUTION) if kind == "pipeline" else None,
    )
    event = load_event(
        {
            "deployment": "gate_change_window/01-codedeploy-start-outside-window.json",
            "pipeline": "gate_change_window/05-codepipeline-started.json",
            "stack": "gate_change_window/07-cloudtrail-update-stack.json",
        }[kind]
    )

    outcome = service.handle(event)

    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    [decision, result] = parts["ledger"].kinds("CALENDAR")
    assert decision.body["intent"] is True and result.entry == "CALENDAR#result"
    assert result.body["decision"]["action"] == "alert" and result.body["final_status"] == status
    assert "acted_as" in result.body  # the call was made, as whom
    [alert] = alerts(parts["ledger"])
    assert alert["subject"].startswith(f"Change window CLOSED: {happened}: "), alert["subject"]
    assert "stopped" not in alert["subject"].lower().replace("already stopped", "")
    assert "cancelled" not in alert["subject"]
    assert alert["actions"] == result.body["actions"] and "took no effect" in alert["actions"][0]


def test_a_pipeline_started_outside_the_window_is_abandoned() -> None:
    service, parts = gate()

    outcome = service.handle(load_event("gate_change_window/05-codepipeline-started.json"))

    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    [(pipeline, execution, reason)] = parts["pipelines"].stops
    assert (pipeline, execution) == ("checkout-pipeline", "3f9b6c2a-1d4e-4a5b-9c8d-7e6f5a4b3c21")
    assert "CLOSED" in reason and len(reason) <= 200


def test_a_failed_stage_retried_outside_the_window_is_decided_on_its_own_and_stopped() -> None:
    """RetryStageExecution resumes an execution (RESUMED, attempt 2): it deploys again, maybe hours
    after the start, so it is gated on its own and is no redelivery of the start's decision."""
    service, parts = gate()
    service.handle(load_event("gate_change_window/05-codepipeline-started.json"))
    resumed = load_event("gate_change_window/13-codepipeline-resumed.json")

    outcome = service.handle(resumed)

    execution = "3f9b6c2a-1d4e-4a5b-9c8d-7e6f5a4b3c21"
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW" and not outcome.duplicate
    assert outcome.change_id == f"{execution}#attempt-2"
    assert [(p, e) for p, e, _ in parts["pipelines"].stops] == [("checkout-pipeline", execution)] * 2
    assert any("a failed stage retried" in a for a in outcome.actions)
    assert len(alerts(parts["ledger"])) == 2
    again = service.handle(resumed)  # a redelivery of the same retry
    assert again.duplicate and len(parts["pipelines"].stops) == 2


def test_a_pipeline_state_that_starts_nothing_is_ignored() -> None:
    service, parts = gate()
    event = load_event("gate_change_window/13-codepipeline-resumed.json")
    event["detail"]["state"] = "SUCCEEDED"

    outcome = service.handle(event)

    assert parts["pipelines"].stops == [] and outcome.verdict == "NOT_A_CHANGE"
    assert outcome.reasons == ["pipeline execution state SUCCEEDED is not gated"]


def test_a_pipeline_variable_can_name_the_emergency_ticket() -> None:
    facts = EXECUTION.model_copy(update={"variables": {"ChangeTicket": "CHG-2001"}})
    ticket = Ticket(ticket_id="CHG-2001", type=TicketType.EMERGENCY, status=TicketStatus.APPROVED)
    service, parts = gate(tickets=(ticket,), pipelines=FakePipelines(facts))

    outcome = service.handle(load_event("gate_change_window/05-codepipeline-started.json"))

    assert outcome.verdict == "EMERGENCY"
    assert parts["pipelines"].stops == []


def test_a_stack_update_in_progress_is_cancelled() -> None:
    service, parts = gate()

    outcome = service.handle(load_event("gate_change_window/07-cloudtrail-update-stack.json"))

    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert parts["stacks"].cancels == [STACK_ARN]
    [alert] = alerts(parts["ledger"])
    assert alert["subject"].startswith("Change window CLOSED: cancelled UpdateStack of stack checkout-service")


def test_an_execute_change_set_by_arn_finds_its_stack() -> None:
    change_set = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/release-15/0f1e2d3c"
    executing = UPDATING.model_copy(  # since the call in 08-cloudtrail-execute-change-set.json
        update={"last_updated": datetime(2026, 11, 21, 9, 35, 1, tzinfo=UTC), "change_set_id": change_set}
    )
    service, parts = gate(stacks=FakeStacks(executing, change_sets={change_set: STACK_ARN}))
    event = load_event("gate_change_window/08-cloudtrail-execute-change-set.json")
    event["detail"]["requestParameters"] = {"changeSetName": change_set}

    service.handle(event)

    assert parts["stacks"].cancels == [STACK_ARN]


def test_a_late_update_stack_event_never_cancels_a_later_update() -> None:
    """UpdateStack at 09:30 finished fast; a second update started at 09:33. The first call's event,
    processed late (CloudTrail and EventBridge lag, Lambda's retries), must not cancel the second."""
    later = UPDATING.model_copy(update={"last_updated": datetime(2026, 11, 21, 9, 33, tzinfo=UTC)})
    service, parts = gate(stacks=FakeStacks(later))

    outcome = service.handle(load_event("gate_change_window/07-cloudtrail-update-stack.json"))

    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert parts["stacks"].cancels == []
    [alert] = alerts(parts["ledger"])
    assert alert["subject"] == "Change window CLOSED: outside the window: UpdateStack of stack checkout-service"
    assert any("a later update, not cancelled" in r for r in alert["reasons"])


@pytest.mark.parametrize("sample", ["06-cloudtrail-create-stack.json", "09-cloudtrail-delete-stack.json"])
def test_stack_creations_and_deletions_are_alerted_not_undone(sample: str) -> None:
    service, parts = gate()

    outcome = service.handle(load_event(f"gate_change_window/{sample}"))

    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert parts["stacks"].cancels == []
    [alert] = alerts(parts["ledger"])
    assert "outside the window" in alert["subject"]
    assert alert["details"]["next_opening"] == OPENS.isoformat()


def test_nested_stack_calls_and_the_suites_own_calls_are_not_gated() -> None:
    service, parts = gate()
    nested = load_event("gate_change_window/07-cloudtrail-update-stack.json")
    nested["detail"]["userIdentity"]["invokedBy"] = "cloudformation.amazonaws.com"
    own = load_event("gate_change_window/07-cloudtrail-update-stack.json")
    own["detail"]["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] = (
        "arn:aws:iam::123456789012:role/changeguard/changeguard-dev-GateChangeWindowFunctionRole"
    )

    assert service.handle(nested).verdict == "NOT_A_CHANGE"
    assert service.handle(own).verdict == "NOT_A_CHANGE"
    assert parts["stacks"].cancels == []


def test_an_unreadable_calendar_blocks_and_raises_one_outage_alert() -> None:
    second = DeploymentFacts(deployment_id="d-1NW1ND0W1", status="InProgress")
    service, parts = gate(CalendarState.UNKNOWN, deployments=FakeDeployments(OUTSIDE, second))

    first = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))
    service.handle(load_event("gate_change_window/02-codedeploy-start-in-window.json"))

    assert first.verdict == "CALENDAR_UNKNOWN"
    assert [d for d, _ in parts["deployments"].stops] == ["d-4UTS1DE01", "d-1NW1ND0W1"]
    degraded = [a for a in alerts(parts["ledger"]) if a["kind"] == "degraded"]
    assert len(degraded) == 1
    assert "cannot be read" in degraded[0]["subject"]
    assert any(a.startswith(f"{OUTAGE_KEY}/") for a in first.alert_ids)


@pytest.mark.parametrize("sample", ["01-codedeploy-start-outside-window.json", "06-cloudtrail-create-stack.json"])
def test_a_retry_after_the_outage_could_not_be_ledgered_still_opens_it_with_its_one_alert(sample: str) -> None:
    """The decision (and a stop's result) is ledgered, then the outage's own append (OPEN#000001 and
    its `degraded` alert) is throttled and the invocation raises. Lambda's retry finds the change
    decided: it must still write the outage, or its one alert is never raised - and only once."""
    service, parts = gate(CalendarState.UNKNOWN)
    failing_once(parts["ledger"], "OPEN#000001")
    event = load_event(f"gate_change_window/{sample}")
    with pytest.raises(TimeoutError):
        service.handle(event)
    service.clock = FakeClock(NOW + timedelta(minutes=1))  # Lambda's retry

    retried = service.handle(event)
    again = service.handle(event)  # a later duplicate: nothing more

    assert retried.duplicate and any(a.startswith(f"{OUTAGE_KEY}/") for a in retried.alert_ids)
    assert [e.entry for e in parts["ledger"].entries_for(OUTAGE_KEY) if e.entry.startswith("OPEN#")] == ["OPEN#000001"]
    assert len([a for a in alerts(parts["ledger"]) if a["kind"] == "degraded"]) == 1
    assert again.duplicate and again.alert_ids == []
    assert parts["deployments"].stops == ([("d-4UTS1DE01", True)] if sample.startswith("01") else [])


def test_a_retry_never_reopens_an_outage_taken_over_since_its_decision() -> None:
    """The outage's append failed, and before the retry another change opened the outage and the
    follow-up closed it (the calendar answers again): the retry's old reading opens nothing."""
    service, parts = gate(CalendarState.UNKNOWN)
    failing_once(parts["ledger"], "OPEN#000001")
    event = load_event("gate_change_window/06-cloudtrail-create-stack.json")
    with pytest.raises(TimeoutError):
        service.handle(event)
    later = NOW + timedelta(seconds=30)
    for entry in ("OPEN#000001", "CLOSED#000001"):
        parts["ledger"].append([service._outage_entry(entry, later, {})])
    service.clock = FakeClock(NOW + timedelta(minutes=1))

    retried = service.handle(event)

    assert retried.duplicate and retried.alert_ids == []
    assert sorted(e.entry for e in parts["ledger"].entries_for(OUTAGE_KEY)) == ["CLOSED#000001", "OPEN#000001"]
    assert [a for a in alerts(parts["ledger"]) if a["kind"] == "degraded"] == []


def test_the_outage_ends_with_one_recovered_alert_once_the_calendar_can_be_read_again() -> None:
    """The gate opens the outage; the follow-up closes it with its `recovered` alert (README). A change
    that reads the calendar first must not close it silently, leaving the follow-up nothing to close."""
    calendar = FakeCalendar(CalendarState.UNKNOWN)
    second = DeploymentFacts(deployment_id="d-1NW1ND0W1", status="InProgress")
    service, parts = gate(calendar=calendar, deployments=FakeDeployments(OUTSIDE, second))
    follow_up = FollowUpService(
        function="follow_up_changes",
        ledger=parts["ledger"],
        tickets=FakeTicketSource(),
        policy=lambda: Policy(change_calendar_names=("prod-window",)),
        clock=FakeClock(NOW + timedelta(minutes=15)),
        calendar=lambda _: ReaderOfTheFollowUp(closed=False),
    )
    service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    calendar.state = CalendarState.OPEN
    service.handle(load_event("gate_change_window/02-codedeploy-start-in-window.json"))
    follow_up.handle(load_event("follow_up_changes/scheduled.json"))
    follow_up.handle(load_event("follow_up_changes/scheduled.json"))  # a duplicate run: nothing more

    entries = [e.entry for e in parts["ledger"].entries_for(OUTAGE_KEY) if not e.entry.startswith("ALERT#")]
    assert entries == ["CLOSED#000001", "OPEN#000001"]
    assert [a["kind"] for a in alerts(parts["ledger"]) if a["change_id"] == OUTAGE_KEY] == ["degraded", "recovered"]

    # A later outage is one more outage, with its own degraded alert.
    calendar.state = CalendarState.UNKNOWN
    third = DeploymentFacts(deployment_id="d-3RD000001", status="InProgress")
    parts["deployments"].facts[third.deployment_id] = third
    event = load_event("gate_change_window/02-codedeploy-start-in-window.json")
    event["detail"]["deploymentId"] = third.deployment_id
    outcome = service.handle(event)
    assert f"{OUTAGE_KEY}/gate_change_window/degraded-2" in outcome.alert_ids
    assert "OPEN#000002" in [e.entry for e in parts["ledger"].entries_for(OUTAGE_KEY)]


@pytest.mark.parametrize("sample", ["06-cloudtrail-create-stack.json", "09-cloudtrail-delete-stack.json"])
def test_an_unreadable_calendar_alerts_on_what_cannot_be_undone_as_closed_would_when_fail_closed(sample: str) -> None:
    """A CreateStack with the calendar CLOSED alerts; with it unreadable and fail-closed on, so must it."""
    service, parts = gate(CalendarState.UNKNOWN)

    outcome = service.handle(load_event(f"gate_change_window/{sample}"))

    assert outcome.verdict == "CALENDAR_UNKNOWN"
    assert parts["stacks"].cancels == []
    [alert] = [a for a in alerts(parts["ledger"]) if a["kind"] == "change-window"]
    assert alert["subject"].startswith("Change calendar unreadable: ") and alert["subject"].endswith("(fail closed)")
    assert alert["severity"] == "high" and any("cannot be undone safely" in r for r in alert["reasons"])
    assert [a["kind"] for a in alerts(parts["ledger"]) if a["change_id"] == OUTAGE_KEY] == ["degraded"]


def test_an_unreadable_calendar_lets_changes_through_when_fail_open() -> None:
    service, parts = gate(CalendarState.UNKNOWN, fail_closed=False)

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert outcome.verdict == "CALENDAR_UNKNOWN"
    assert parts["deployments"].stops == []
    assert [a["kind"] for a in alerts(parts["ledger"])] == ["degraded"]


def test_no_configured_calendar_means_no_gate() -> None:
    service, parts = gate()
    service.calendar = lambda _: None

    outcome = service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    assert outcome.verdict == "NOT_A_CHANGE"
    assert parts["deployments"].stops == [] and parts["ledger"].items == {}


def test_a_window_transition_is_announced_with_the_next_transition() -> None:
    service, parts = gate()
    event = load_event("gate_change_window/11-calendar-window-closed.json")
    event["resources"] = ["arn:aws:ssm:us-east-1:123456789012:document/prod-window"]

    outcome = service.handle(event)

    assert outcome.verdict == "CALENDAR_CLOSED"
    [alert] = alerts(parts["ledger"])
    assert alert["kind"] == "calendar-state" and alert["severity"] == "info"
    assert "closed" in alert["subject"] and "2026-11-28 02:00Z" in alert["subject"]
    assert alert["details"]["next_transition"] == OPENS.isoformat()


class BothCalendars(FakeCalendar):
    """The weekly window and a holiday freeze (DEFAULT_OPEN: CLOSED during its events), read together."""

    names = ("prod-window", "holiday-freeze")


@pytest.mark.parametrize(
    ("combined", "subject"),
    [
        (
            CalendarState.CLOSED,
            "Change window CLOSED: calendar prod-window opened; changes still CLOSED until 2026-11-23 00:00Z",
        ),
        (CalendarState.OPEN, "Change window OPEN: calendar prod-window opened; next transition 2026-11-23 00:00Z"),
    ],
)
def test_a_calendar_opening_is_announced_as_what_the_configured_calendars_say_together(
    combined: CalendarState, subject: str
) -> None:
    """GetCalendarState over several calendars is OPEN only if all are open: the weekly window opening
    during a freeze opens nothing, and the announcement must not tell the team it does."""
    freeze_ends = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    service, parts = gate(calendar=BothCalendars(combined, freeze_ends))
    policy = Policy(enforcement_mode="enforce", change_calendar_names=BothCalendars.names)
    service.policy = lambda: policy
    event = load_event("gate_change_window/10-calendar-window-opened.json")
    event["resources"] = ["arn:aws:ssm:us-east-1:123456789012:document/prod-window"]

    outcome = service.handle(event)

    assert outcome.verdict == f"CALENDAR_{combined.value}"
    [alert] = alerts(parts["ledger"])
    assert alert["subject"] == subject
    assert alert["details"]["next_transition"] == freeze_ends.isoformat()
    assert alert["details"]["state"] == "OPEN" and alert["details"]["combined_state"] == combined.value
    [entry] = parts["ledger"].kinds("CALENDAR")
    assert entry.verdict == f"CALENDAR_{combined.value}"


@pytest.mark.parametrize("configured", ["prod-window", "arn:aws:ssm:us-east-1:123456789012:document/prod-window"])
def test_a_member_accounts_calendar_of_the_same_name_is_not_announced_as_the_enforced_window(
    configured: str,
) -> None:
    """Members forward every Calendar State Change to the central bus: a member's own prod-window
    opening is not the enforced window opening, and it takes no key of the real calendar's transitions."""
    service, parts = gate()
    service.home = ("123456789012", "us-east-1")
    policy = Policy(enforcement_mode="enforce", change_calendar_names=(configured,))
    service.policy = lambda: policy
    foreign = load_event("gate_change_window/10-calendar-window-opened.json")
    foreign["account"] = "210987654321"
    foreign["resources"] = ["arn:aws:ssm:us-east-1:210987654321:document/prod-window"]
    real = load_event("gate_change_window/10-calendar-window-opened.json")  # the same instant
    real["resources"] = ["arn:aws:ssm:us-east-1:123456789012:document/prod-window"]

    ignored = service.handle(foreign)
    announced = service.handle(real)

    assert ignored.verdict == "NOT_A_CHANGE"
    assert announced.verdict == "CALENDAR_OPEN" and not announced.duplicate
    [alert] = alerts(parts["ledger"])
    assert alert["change_id"] == f"calendar:{real['resources'][0]}@2026-11-21T02:00:00+00:00"


def test_transitions_of_calendars_changeguard_does_not_enforce_are_ignored() -> None:
    service, parts = gate()
    event = load_event("gate_change_window/10-calendar-window-opened.json")
    event["resources"] = ["arn:aws:ssm:us-east-1:123456789012:document/someone-elses-calendar"]

    assert service.handle(event).verdict == "NOT_A_CHANGE"
    assert alerts(parts["ledger"]) == []


@pytest.mark.parametrize(
    "event",
    [
        [],
        {"detail-type": "Something Else", "source": "aws.ec2", "detail": {}},
        {**load_event("gate_change_window/01-codedeploy-start-outside-window.json"), "detail": {"state": "START"}},
        {**load_event("gate_change_window/05-codepipeline-started.json"), "time": "yesterday"},
    ],
)
def test_bad_input_is_a_typed_error_with_no_side_effects(event: Any) -> None:
    service, parts = gate()

    with pytest.raises(InvalidEventError):
        service.handle(event)

    assert parts["ledger"].items == {} and parts["deployments"].stops == []


# -- the lifecycle hook ------------------------------------------------------------------------------
def hook(
    state: CalendarState, *, mode: str = "enforce", facts: DeploymentFacts | None = None
) -> tuple[LifecycleHookService, dict[str, Any]]:
    policy = Policy(enforcement_mode=mode, change_calendar_names=("prod-window",))
    parts: dict[str, Any] = {
        "ledger": InMemoryLedger(),
        "calendar": FakeCalendar(state),
        "deployments": FakeDeployments(facts or DeploymentFacts(deployment_id="d-H00KGATE1", status="InProgress")),
    }
    service = LifecycleHookService(
        function="gate_lifecycle_hook",
        ledger=parts["ledger"],
        tickets=FakeTicketSource(),
        policy=lambda: policy,
        clock=FakeClock(NOW),
        calendar=lambda _: parts["calendar"],
        deployments=parts["deployments"],
    )
    return service, parts


HOOK_ARN = "arn:aws:lambda:us-east-1:123456789012:function:CodeDeployHook_changeguard-dev-change-window"


def test_the_hook_reports_failed_while_the_calendar_is_closed() -> None:
    service, parts = hook(CalendarState.CLOSED)
    event = load_event("gate_lifecycle_hook/01-before-allow-traffic.json")

    outcome = service.handle(event, function_arn=HOOK_ARN)

    assert parts["deployments"].hooks == [("d-H00KGATE1", event["LifecycleEventHookExecutionId"], "Failed")]
    assert parts["calendar"].asked == [NOW]
    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    [alert] = alerts(parts["ledger"])
    assert alert["subject"].startswith("Change window CLOSED: failed") and alert["account"] == "123456789012"


@pytest.mark.parametrize(("state", "mode"), [(CalendarState.OPEN, "enforce"), (CalendarState.CLOSED, "observe")])
def test_the_hook_reports_succeeded_when_open_or_observing(state: CalendarState, mode: str) -> None:
    service, parts = hook(state, mode=mode)

    service.handle(load_event("gate_lifecycle_hook/01-before-allow-traffic.json"), function_arn=HOOK_ARN)

    assert [s for _, _, s in parts["deployments"].hooks] == ["Succeeded"]


def test_the_hook_never_fails_a_rollback() -> None:
    rollback = DeploymentFacts(deployment_id="d-H00KGATE1", status="InProgress", rollback_of="d-BAD000001")
    service, parts = hook(CalendarState.CLOSED, facts=rollback)

    outcome = service.handle(load_event("gate_lifecycle_hook/01-before-allow-traffic.json"), function_arn=HOOK_ARN)

    assert outcome.verdict == "ROLLBACK"
    assert [s for _, _, s in parts["deployments"].hooks] == ["Succeeded"]


def test_the_hook_fails_a_deployment_that_only_claims_to_be_the_guards_redeploy() -> None:
    spoof = DeploymentFacts(deployment_id="d-H00KGATE1", status="InProgress", description=REDEPLOY.description)
    service, parts = hook(CalendarState.CLOSED, facts=spoof)

    outcome = service.handle(load_event("gate_lifecycle_hook/01-before-allow-traffic.json"), function_arn=HOOK_ARN)

    assert outcome.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert [s for _, _, s in parts["deployments"].hooks] == ["Failed"]
    [alert] = alerts(parts["ledger"])
    assert any("claims it is ChangeGuard's rollback" in r for r in alert["reasons"])


@pytest.mark.parametrize("creator", ["autoscaling", "CodeDeployAutoUpdate"])
def test_the_hook_never_fails_a_deployment_that_is_not_a_release(creator: str) -> None:
    scale_out = DeploymentFacts(deployment_id="d-H00KGATE1", status="InProgress", creator=creator)
    service, parts = hook(CalendarState.CLOSED, facts=scale_out)

    outcome = service.handle(load_event("gate_lifecycle_hook/01-before-allow-traffic.json"), function_arn=HOOK_ARN)

    assert outcome.verdict == "NOT_A_RELEASE"
    assert [s for _, _, s in parts["deployments"].hooks] == ["Succeeded"]
    assert alerts(parts["ledger"]) == []


def test_a_redelivered_hook_reports_once_and_ledgers_once() -> None:
    service, parts = hook(CalendarState.CLOSED)
    event = load_event("gate_lifecycle_hook/01-before-allow-traffic.json")

    service.handle(event, function_arn=HOOK_ARN)
    again = service.handle(event, function_arn=HOOK_ARN)

    assert again.duplicate
    assert len(alerts(parts["ledger"])) == 1


class Throttled(Exception):
    """A transient AWS error (throttling, 5xx): the function errors and Lambda retries the invocation."""


@pytest.mark.parametrize("fails", ["report", "alert write"])
def test_a_retried_hook_reports_and_ledgers_the_decision_it_made_first(fails: str) -> None:
    """Closed when first invoked, open by the retry a minute later: CodeDeploy takes one status per hook
    execution, so the retry must report, ledger and alert the first decision, never a new one."""
    service, parts = hook(CalendarState.CLOSED)
    event = load_event("gate_lifecycle_hook/01-before-allow-traffic.json")
    deployments, ledger = parts["deployments"], parts["ledger"]
    real_report, real_append = deployments.put_hook_status, ledger.append

    def report_throttled(deployment_id: str, execution_id: str, status: str) -> bool:
        deployments.hooks.append((deployment_id, execution_id, status))
        raise Throttled("ThrottlingException")

    def alert_write_throttled(entries: Any) -> bool:
        if any(e.entry.startswith("ALERT#") for e in entries):
            raise Throttled("ProvisionedThroughputExceededException")
        return real_append(entries)

    if fails == "report":
        deployments.put_hook_status = report_throttled
    else:
        ledger.append = alert_write_throttled
    with pytest.raises(Throttled):
        service.handle(event, function_arn=HOOK_ARN)
    deployments.put_hook_status, ledger.append = real_report, real_append
    parts["calendar"].state = CalendarState.OPEN  # the window opened before Lambda's retry

    retried = service.handle(event, function_arn=HOOK_ARN)

    assert [s for _, _, s in deployments.hooks] == ["Failed", "Failed"]
    assert deployments.reported == {event["LifecycleEventHookExecutionId"]}
    assert parts["calendar"].asked == [NOW]  # decided once
    [decision] = [e for e in ledger.entries_for("codedeploy:d-H00KGATE1") if e.entry.startswith("HOOK#")]
    assert decision.verdict == retried.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert decision.body["decision"]["action"] == "fail_hook"
    [alert] = alerts(ledger)
    assert alert["subject"].startswith("Change window CLOSED: failed")
    assert alert["actions"][0].startswith("reported Failed to CodeDeploy")
    assert not retried.duplicate and retried.alert_ids == [alert["alert_id"]]


def test_a_hook_whose_decision_could_not_be_ledgered_reported_nothing_and_decides_on_retry() -> None:
    """The decision is ledgered before it is reported: when that write fails, CodeDeploy was told nothing
    and the retry decides afresh (at its own time)."""
    service, parts = hook(CalendarState.CLOSED)
    event = load_event("gate_lifecycle_hook/01-before-allow-traffic.json")
    ledger = parts["ledger"]
    real_append = ledger.append

    def throttled(entries: Any) -> bool:
        raise Throttled("ProvisionedThroughputExceededException")

    ledger.append = throttled
    with pytest.raises(Throttled):
        service.handle(event, function_arn=HOOK_ARN)
    ledger.append = real_append
    assert parts["deployments"].hooks == []
    parts["calendar"].state = CalendarState.OPEN

    retried = service.handle(event, function_arn=HOOK_ARN)

    assert [s for _, _, s in parts["deployments"].hooks] == ["Succeeded"]
    assert retried.verdict == "IN_WINDOW" and alerts(ledger) == []


def test_a_concurrent_delivery_reports_the_decision_ledgered_first() -> None:
    """Two deliveries of one execution at once: the one whose decision lost the conditional put reports
    the winner's decision, so CodeDeploy and the ledger agree whichever report lands first."""
    service, parts = hook(CalendarState.OPEN)
    event = load_event("gate_lifecycle_hook/01-before-allow-traffic.json")
    closed_earlier = hook(CalendarState.CLOSED)[0]
    closed_earlier.ledger = parts["ledger"]
    closed_earlier.deployments = FakeDeployments(DeploymentFacts(deployment_id="d-H00KGATE1", status="InProgress"))
    real_append = parts["ledger"].append

    def other_delivery_first(entries: Any) -> bool:
        parts["ledger"].append = real_append
        closed_earlier.handle(event, function_arn=HOOK_ARN)  # writes its decision (Failed) first
        return real_append(entries)

    parts["ledger"].append = other_delivery_first
    service.handle(event, function_arn=HOOK_ARN)

    assert [s for _, _, s in parts["deployments"].hooks] == ["Failed"]
    [decision] = [e for e in parts["ledger"].entries_for("codedeploy:d-H00KGATE1") if e.entry.startswith("HOOK#")]
    assert decision.verdict == "OUTSIDE_CHANGE_WINDOW"
    assert len(alerts(parts["ledger"])) == 1


@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_each_hook_execution_of_one_deployment_is_ledgered_and_alerted(mode: str) -> None:
    """The hook on BeforeInstall and AfterAllowTestTraffic of one deployment: two executions, two decisions.
    In observe mode both would have failed; in enforce mode an emergency lets both pass, flagged."""
    emergency = DeploymentFacts(deployment_id="d-H00KGATE1", status="InProgress", description="CHG-2001 hotfix")
    service, parts = hook(CalendarState.CLOSED, mode=mode, facts=emergency if mode == "enforce" else None)
    service.tickets = FakeTicketSource(
        Ticket(ticket_id="CHG-2001", type=TicketType.EMERGENCY, status=TicketStatus.OPEN)
    )
    first = load_event("gate_lifecycle_hook/01-before-allow-traffic.json")
    second = first | {"LifecycleEventHookExecutionId": first["LifecycleEventHookExecutionId"][::-1]}

    outcomes = [service.handle(e, function_arn=HOOK_ARN) for e in (first, second, second)]

    assert [o.duplicate for o in outcomes] == [False, False, True]  # the third is a redelivery of the second
    hooks = [e.entry for e in parts["ledger"].entries_for("codedeploy:d-H00KGATE1") if e.entry.startswith("HOOK#")]
    assert len(hooks) == 2
    assert len(alerts(parts["ledger"])) == 2
    assert len({a["alert_id"] for a in alerts(parts["ledger"])}) == 2
    assert outcomes[1].alert_ids and outcomes[2].alert_ids == []


def both_gates() -> tuple[Any, Any, FakeDeployments, dict[str, Any], dict[str, Any]]:
    """A deployment whose AppSpec names the hook, with the rule-triggered gate and the hook sharing one
    ledger, both with the calendar closed: (on_start, on_hook, deployments, parts, its START event)."""
    hooked = DeploymentFacts(
        deployment_id="d-H00KGATE1", status="InProgress", application="payments-api", deployment_group="payments-prod"
    )
    deployments = FakeDeployments(hooked)
    on_start, parts = gate(CalendarState.CLOSED, deployments=deployments)
    on_hook = hook(CalendarState.CLOSED)[0]
    on_hook.ledger, on_hook.deployments = parts["ledger"], deployments
    start = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    start["detail"]["deploymentId"] = "d-H00KGATE1"
    return on_start, on_hook, deployments, parts, start


@pytest.mark.parametrize("hook_first", [True, False], ids=["hook, then START", "START, then hook"])
def test_a_hooked_deployment_also_gated_on_its_start_is_blocked_by_both_and_alerted_once(hook_first: bool) -> None:
    """The AppSpec names the hook and the START event reaches the rule-triggered gate: one change, judged
    twice, in either order. Both act (fail closed whatever the order), one alert is sent."""
    on_start, on_hook, deployments, parts, start = both_gates()
    invocation = load_event("gate_lifecycle_hook/01-before-allow-traffic.json")
    both = [lambda: on_hook.handle(invocation, function_arn=HOOK_ARN), lambda: on_start.handle(start)]

    outcomes = [run() for run in (both if hook_first else both[::-1])]

    assert deployments.stops == [("d-H00KGATE1", True)]
    assert [s for _, _, s in deployments.hooks] == ["Failed"]
    [alert] = alerts(parts["ledger"])
    assert alert["function"] == ("gate_lifecycle_hook" if hook_first else "gate_change_window")
    assert [o.alert_ids for o in outcomes] == [[alert["alert_id"]], []]
    ledgered = [e for e in parts["ledger"].entries_for("codedeploy:d-H00KGATE1") if e.kind is EntryKind.CALENDAR]
    decisions = [e for e in ledgered if not e.entry.endswith("#result")]  # the gate's stop has its result too
    assert sorted(e.verdict or "" for e in decisions) == ["OUTSIDE_CHANGE_WINDOW"] * 2
    # What the second to judge did, last: the hook's decision, or the result of the gate's stop.
    second = [e for e in ledgered if e.function != alert["function"]][-1]
    assert f"alert {alert['alert_id']} covers this deployment" in second.body["actions"][-1]


def test_a_start_alert_written_while_the_hook_runs_is_seen_before_the_hook_alerts() -> None:
    """The hook reads the deployment's partition once, early; the START gate can alert after that read
    (here: while the hook reports to CodeDeploy). The hook looks again before writing its own alert."""
    on_start, on_hook, deployments, parts, start = both_gates()
    real_report = deployments.put_hook_status

    def start_gate_meanwhile(*args: Any, **kwargs: Any) -> bool:
        deployments.put_hook_status = real_report
        on_start.handle(start)
        return real_report(*args, **kwargs)

    deployments.put_hook_status = start_gate_meanwhile  # type: ignore[method-assign]
    outcome = on_hook.handle(load_event("gate_lifecycle_hook/01-before-allow-traffic.json"), function_arn=HOOK_ARN)

    [alert] = alerts(parts["ledger"])
    assert alert["function"] == "gate_change_window"
    assert outcome.alert_ids == []
    assert [s for _, _, s in deployments.hooks] == ["Failed"]


@pytest.mark.parametrize(
    "event", [{}, {"DeploymentId": "d-1"}, {"DeploymentId": "", "LifecycleEventHookExecutionId": "x"}, "text"]
)
def test_a_malformed_hook_payload_is_rejected(event: Any) -> None:
    service, parts = hook(CalendarState.CLOSED)

    with pytest.raises(InvalidEventError):
        service.handle(event)

    assert parts["deployments"].hooks == []


def test_alert_bodies_are_json_serialisable() -> None:
    service, parts = gate()
    service.handle(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))

    for entry in parts["ledger"].items.values():
        json.dumps(entry.model_dump(mode="json"))
