"""The change-calendar gate's decisions: may this change go ahead at the time it was made?

Pure: the service gathers the facts (the calendar's state at the change's own time, the re-read
state of the deployment, pipeline execution or stack, the change's ticket) and
:func:`decide` returns a :class:`GateDecision` - for example "stop deployment d-123 with rollback,
because the change calendar was CLOSED at 03:10Z; it next opens at 2026-11-28T02:00Z". The decision
is what gets carried out, ledgered and alerted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from changeguard.domain.deployments import (
    ROLLBACK_CREATORS,
    RedeployMark,
    claims_redeploy,
    not_a_release,
    unmarked_redeploy,
)
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import Ticket, TicketStatus
from changeguard.domain.verdicts import Severity


class _Own(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class CalendarState(StrEnum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"
    UNKNOWN = "UNKNOWN"  # the calendar could not be read (missing document, SSM error)


class CalendarReading(_Own):
    """The combined state of the configured calendars at one moment (``GetCalendarState``)."""

    state: CalendarState
    at: datetime
    calendars: tuple[str, ...] = ()
    next_transition: datetime | None = None
    error: str | None = None

    @property
    def next_opening(self) -> datetime | None:
        """When a CLOSED calendar opens again (None when open, unknown or not within AWS's horizon)."""
        return self.next_transition if self.state is CalendarState.CLOSED else None


class GateKind(StrEnum):
    """What the gate can act on."""

    DEPLOYMENT = "codedeploy_deployment"
    PIPELINE = "codepipeline_execution"
    STACK = "cloudformation_stack"


class GatedChange(_Own):
    """A change the gate judges: a deployment or pipeline execution that started, or a stack call."""

    change_id: str
    kind: GateKind
    operation: str  # "START", "STARTED", "RESUMED", "CreateStack", "UpdateStack", "ExecuteChangeSet", "DeleteStack"
    target: str  # deployment id, "pipeline/execution id", stack name or id
    event_time: datetime
    account: str | None = None
    region: str | None = None
    resources: tuple[str, ...] = ()
    actor: str | None = None
    application: str | None = None  # CodeDeploy application or pipeline name
    group: str | None = None  # CodeDeploy deployment group

    @property
    def label(self) -> str:
        if self.kind is GateKind.DEPLOYMENT:
            where = f" ({self.application}/{self.group})" if self.application and self.group else ""
            return f"deployment {self.target}{where}"
        if self.kind is GateKind.PIPELINE:
            retried = " (a failed stage retried)" if self.operation == "RESUMED" else ""
            return f"execution {self.target} of pipeline {self.application}{retried}"
        return f"{self.operation} of stack {self.target}"


class StopAnswer(_Own):
    """What ``StopPipelineExecution`` or ``CancelUpdateStack`` answered (``ports.StopOutcome``).

    ``already_completed``: the target no longer ran when the call came, so the call took no effect
    and nothing was stopped or cancelled by it: the gate must not say it was.
    """

    text: str
    already_completed: bool = False

    def describe(self) -> str:
        return self.text


class TargetFacts(_Own):
    """The target as re-read right before acting (never the state the event described)."""

    exists: bool = True
    status: str | None = None
    in_progress: bool = False  # can still be stopped or cancelled
    rollback: bool = False  # a rollback: never stopped
    rollback_reason: str | None = None
    not_release: str | None = None  # why it ships nothing new (an Auto Scaling deployment): never stopped
    note: str | None = None  # worth saying whatever the verdict (a rollback claimed, not proven)
    not_this: str | None = None  # why what is in progress is not the change judged (a later stack update)


# What the gate re-reads of each kind of target, as the adapters report it.

_DEPLOYMENT_RUNNING = frozenset({"Created", "Queued", "InProgress", "Baking", "Ready"})


class DeploymentFacts(_Own):
    """A CodeDeploy deployment (``GetDeployment``)."""

    deployment_id: str
    status: str
    application: str | None = None
    deployment_group: str | None = None
    compute_platform: str | None = None
    creator: str | None = None
    description: str | None = None
    rollback_of: str | None = None  # rollbackInfo.rollbackTriggeringDeploymentId
    redeploy_mark: RedeployMark | None = None  # what the ledger says when the description claims the marker

    def target(self) -> TargetFacts:
        """The deployment as the gate judges it: CodeDeploy's rollbacks and the deployment guard's
        redeploys of the last good revision are rollbacks, never stopped; deployments EC2 Auto
        Scaling or CodeDeploy's auto-update created put the current revision on new instances, and
        are not releases. A description claiming the guard's redeploy counts only with the ledger's
        mark: anyone allowed CreateDeployment writes descriptions."""
        reason = None
        if self.rollback_of:
            reason = f"CodeDeploy rollback of {self.rollback_of}"
        elif self.creator in ROLLBACK_CREATORS:  # the guard's list: both must agree on what a rollback is
            reason = f"created by {self.creator}"
        elif claims_redeploy(self.description) and self.redeploy_mark is RedeployMark.MARKED:
            reason = "the deployment guard's redeploy of the last good revision"
        return TargetFacts(
            status=self.status,
            in_progress=self.status in _DEPLOYMENT_RUNNING,
            rollback=reason is not None,
            rollback_reason=reason,
            not_release=None if reason else not_a_release(self.creator),
            note=unmarked_redeploy(self.deployment_id) if claims_redeploy(self.description) and not reason else None,
        )


_PIPELINE_ROLLBACK_TRIGGERS = frozenset({"ManualRollback", "AutomatedRollback"})


class PipelineFacts(_Own):
    """A CodePipeline execution (``GetPipelineExecution``)."""

    pipeline: str
    execution_id: str
    status: str
    trigger_type: str | None = None
    trigger_detail: str | None = None
    execution_type: str | None = None  # STANDARD or ROLLBACK
    variables: dict[str, str] = Field(default_factory=dict)
    revision_summaries: tuple[str, ...] = ()

    def target(self) -> TargetFacts:
        rollback = self.execution_type == "ROLLBACK" or self.trigger_type in _PIPELINE_ROLLBACK_TRIGGERS
        return TargetFacts(
            status=self.status,
            in_progress=self.status == "InProgress",
            rollback=rollback,
            rollback_reason=f"a {self.trigger_type or 'rollback'} execution" if rollback else None,
        )


#: How far a stack's ``LastUpdatedTime`` may be from the ``eventTime`` of the call that started the
#: update (CloudTrail gives whole seconds; CloudFormation starts the update as it takes the call).
STACK_UPDATE_MARGIN = timedelta(seconds=30)


def _change_set_name(reference: str) -> str:
    """``arn:aws:cloudformation:...:changeSet/<name>/<id>`` -> ``<name>``; a name stays a name."""
    if reference.startswith("arn:") and ":changeSet/" in reference:
        return reference.split(":changeSet/", 1)[1].split("/", 1)[0]
    return reference


class StackFacts(_Own):
    """A CloudFormation stack (``DescribeStacks``)."""

    stack_id: str
    name: str
    status: str
    tags: dict[str, str] = Field(default_factory=dict)
    last_updated: datetime | None = None  # LastUpdatedTime: when the latest update started
    change_set_id: str | None = None  # ChangeSetId: the change set the stack was last updated with

    def target(self, call_time: datetime, change_set: str | None = None) -> TargetFacts:
        """The stack as judged for a call made at ``call_time`` (``change_set``: the one it executed).

        Only the update that call started may be cancelled. The call's event can come late
        (CloudTrail and EventBridge lag, Lambda's retries for up to 6 h) and find the stack in a
        later update, perhaps one made inside the window: that one is alerted on, never cancelled.
        """
        updating = self.status == "UPDATE_IN_PROGRESS"
        return TargetFacts(
            status=self.status,
            in_progress=updating,
            not_this=self._other_update(call_time, change_set) if updating else None,
        )

    def _other_update(self, call_time: datetime, change_set: str | None) -> str | None:
        """Why the update in progress is not the one the call started, or None when it is."""
        if change_set and self.change_set_id:
            same = (
                change_set == self.change_set_id
                if change_set.startswith("arn:")
                else change_set == _change_set_name(self.change_set_id)
            )
            if not same:
                return (
                    f"stack {self.name} is applying change set {self.change_set_id}, not {change_set}:"
                    " a later update, not cancelled"
                )
        started = self.last_updated
        if started is None:
            return f"stack {self.name} does not say when its update started: it is not cancelled on a guess"
        if started > call_time + STACK_UPDATE_MARGIN:
            return (
                f"the update of stack {self.name} in progress started at {started.isoformat()}, after the call at"
                f" {call_time.isoformat()}: a later update, not cancelled"
            )
        if started < call_time - STACK_UPDATE_MARGIN:
            return (
                f"the update of stack {self.name} in progress started at {started.isoformat()}, before the call at"
                f" {call_time.isoformat()}: not the call's update, not cancelled"
            )
        return None


class GateVerdict(StrEnum):
    IN_WINDOW = "IN_WINDOW"
    OUTSIDE_CHANGE_WINDOW = "OUTSIDE_CHANGE_WINDOW"
    EMERGENCY = "EMERGENCY"
    ROLLBACK = "ROLLBACK"
    NOT_A_RELEASE = "NOT_A_RELEASE"  # e.g. an Auto Scaling scale-out: the current revision, nothing new
    CALENDAR_UNKNOWN = "CALENDAR_UNKNOWN"


class GateAction(StrEnum):
    NONE = "none"
    STOP_DEPLOYMENT = "stop_deployment"  # StopDeployment with autoRollbackEnabled=True
    STOP_PIPELINE = "stop_pipeline"  # StopPipelineExecution with abandon=True
    CANCEL_STACK_UPDATE = "cancel_stack_update"  # CancelUpdateStack
    ALERT = "alert"  # nothing can be undone safely (stack creation or deletion, or already finished)
    FAIL_HOOK = "fail_hook"  # PutLifecycleEventHookExecutionStatus(Failed)
    SUCCEED_HOOK = "succeed_hook"  # PutLifecycleEventHookExecutionStatus(Succeeded)


_STOPS = frozenset({GateAction.STOP_DEPLOYMENT, GateAction.STOP_PIPELINE, GateAction.CANCEL_STACK_UPDATE})
_GOES_AHEAD = frozenset({GateAction.NONE, GateAction.SUCCEED_HOOK})
_STACK_UPDATES = frozenset({"UpdateStack", "ExecuteChangeSet"})


class GateDecision(_Own):
    """What to do about one change, and why. ``enforce`` False means "report what we would do"."""

    change: GatedChange
    reading: CalendarReading
    verdict: GateVerdict
    action: GateAction
    enforce: bool
    severity: Severity
    reasons: tuple[str, ...]
    ticket_id: str | None = None
    retro_approval_due: datetime | None = None

    @property
    def blocks(self) -> bool:
        """The change is to be stopped, cancelled or failed (or would be, in observe mode)."""
        return self.action in _STOPS or self.action is GateAction.FAIL_HOOK

    @property
    def mutates(self) -> bool:
        """A mutating call is due: only in enforce mode, and only for a stop, cancel or failed hook."""
        return self.enforce and self.blocks

    @property
    def alerts(self) -> bool:
        # An unreadable calendar with calendar-fail-closed on counts as CLOSED: alerted as CLOSED
        # would be, whether or not the change could be stopped (CreateStack, a finished deployment).
        return self.verdict in (GateVerdict.OUTSIDE_CHANGE_WINDOW, GateVerdict.EMERGENCY) or (
            self.verdict is GateVerdict.CALENDAR_UNKNOWN and self.action not in _GOES_AHEAD
        )

    @property
    def summary(self) -> str:
        """The decision in one sentence, e.g. for the ledger and the alert."""
        what = {
            GateAction.STOP_DEPLOYMENT: f"stop {self.change.label} with automatic rollback",
            GateAction.STOP_PIPELINE: f"stop (abandon) {self.change.label}",
            GateAction.CANCEL_STACK_UPDATE: f"cancel the update of stack {self.change.target}",
            GateAction.FAIL_HOOK: f"fail the lifecycle hook of {self.change.label}",
            GateAction.SUCCEED_HOOK: f"let the lifecycle hook of {self.change.label} succeed",
            GateAction.ALERT: f"alert on {self.change.label}",
            GateAction.NONE: f"let {self.change.label} go ahead",
        }[self.action]
        if self.blocks and not self.enforce:
            what = f"would {what} (observe mode)"
        because = self.reasons[0] if self.reasons else self.verdict.value
        return f"{what}, because {because}"


def _opening(reading: CalendarReading) -> str:
    opening = reading.next_opening
    if opening is not None:
        return f"; it next opens at {opening.isoformat()}"
    return ""


def is_valid_emergency(ticket: Ticket | None) -> bool:
    """An emergency ticket that is open or approved (its approvals may come retroactively)."""
    return bool(ticket and ticket.is_emergency and ticket.status in (TicketStatus.OPEN, TicketStatus.APPROVED))


def _blocking_action(change: GatedChange, target: TargetFacts) -> tuple[GateAction, str | None]:
    """The stop that applies to the target, or an alert and why nothing can be stopped."""
    if change.kind is GateKind.STACK and change.operation not in _STACK_UPDATES:
        return GateAction.ALERT, f"{change.operation} cannot be undone safely: alerting only"
    if not target.exists:
        return GateAction.ALERT, f"{change.label} no longer exists"
    if change.kind is GateKind.STACK:
        if not target.in_progress:
            return GateAction.ALERT, f"stack {change.target} is {target.status or 'not updating'}: nothing to cancel"
        if target.not_this:
            return GateAction.ALERT, target.not_this
        return GateAction.CANCEL_STACK_UPDATE, None
    if not target.in_progress:
        return GateAction.ALERT, f"{change.label} is already {target.status or 'finished'}: nothing to stop"
    if change.kind is GateKind.DEPLOYMENT:
        return GateAction.STOP_DEPLOYMENT, None
    return GateAction.STOP_PIPELINE, None


def decide(
    change: GatedChange,
    reading: CalendarReading,
    target: TargetFacts,
    policy: Policy,
    *,
    ticket: Ticket | None = None,
    ticket_note: str | None = None,
    hook: bool = False,
) -> GateDecision:
    """Judge ``change`` against the calendar as it was at ``reading.at`` (the change's own time).

    Order: a rollback always goes ahead, and so does a deployment that is not a release (EC2 Auto
    Scaling's, whose failure would shut down the instances it launched); an open calendar lets the
    change go ahead; an emergency ticket lets it go ahead, flagged for retroactive approval; an
    unreadable calendar blocks only when ``policy.calendar_fail_closed``; otherwise the change is
    stopped, cancelled or failed (in enforce mode) or reported as what would have happened (observe
    mode). ``hook`` decides for the synchronous CodeDeploy lifecycle hook, which passes or fails
    rather than stops.
    """
    reasons: list[str] = []
    ticket_id = ticket.ticket_id if ticket else None
    notes = (target.note,) if target.note else ()

    def go_ahead(verdict: GateVerdict, severity: Severity, *why: str, **extra: Any) -> GateDecision:
        """The change goes ahead (the hook passes): a decision that stops nothing."""
        return GateDecision(
            change=change,
            reading=reading,
            verdict=verdict,
            action=GateAction.SUCCEED_HOOK if hook else GateAction.NONE,
            enforce=policy.enforcing,
            severity=severity,
            reasons=(*why, *notes),
            ticket_id=ticket_id,
            **extra,
        )

    if target.rollback:
        kind_of_rollback = target.rollback_reason or "it is a rollback"
        return go_ahead(
            GateVerdict.ROLLBACK,
            Severity.INFO,
            f"{change.label} is a rollback ({kind_of_rollback}); rollbacks are never stopped",
        )
    if target.not_release:
        return go_ahead(
            GateVerdict.NOT_A_RELEASE,
            Severity.INFO,
            f"{change.label} is {target.not_release}; it goes ahead whatever the change calendar says",
            f"the change calendar was {reading.state.value} at {reading.at.isoformat()}",
        )
    if reading.state is CalendarState.OPEN:
        until = f" until {reading.next_transition.isoformat()}" if reading.next_transition else ""
        return go_ahead(
            GateVerdict.IN_WINDOW, Severity.INFO, f"the change calendar was OPEN at {reading.at.isoformat()}{until}"
        )
    if reading.state is CalendarState.CLOSED:
        closed = f"the change calendar was CLOSED at {reading.at.isoformat()}{_opening(reading)}"
    else:
        closed = f"the change calendar could not be read at {reading.at.isoformat()} ({reading.error or 'unknown'})"
    if is_valid_emergency(ticket):
        assert ticket is not None
        due = change.event_time + timedelta(hours=policy.emergency_approval_hours)
        return go_ahead(
            GateVerdict.EMERGENCY,
            Severity.LOW,
            f"{closed}, but {change.label} runs under emergency ticket {ticket.ticket_id}",
            f"retroactive approval ({policy.required_approvals}) of {ticket.ticket_id} due by {due.isoformat()}",
            retro_approval_due=due,
        )
    reasons.append(closed)
    if ticket_note:
        reasons.append(ticket_note)
    reasons.extend(notes)
    unknown = reading.state is CalendarState.UNKNOWN
    if unknown and not policy.calendar_fail_closed:
        return GateDecision(
            change=change,
            reading=reading,
            verdict=GateVerdict.CALENDAR_UNKNOWN,
            action=GateAction.SUCCEED_HOOK if hook else GateAction.NONE,
            enforce=policy.enforcing,
            severity=Severity.MEDIUM,
            reasons=(*reasons, "calendar-fail-closed is off: the change goes ahead"),
            ticket_id=ticket_id,
        )
    if unknown:
        reasons.append("calendar-fail-closed is on: an unreadable calendar counts as CLOSED")
    action, why = (GateAction.FAIL_HOOK, None) if hook else _blocking_action(change, target)
    if why:
        reasons.append(why)
    return GateDecision(
        change=change,
        reading=reading,
        verdict=GateVerdict.CALENDAR_UNKNOWN if unknown else GateVerdict.OUTSIDE_CHANGE_WINDOW,
        action=action,
        enforce=policy.enforcing,
        severity=Severity.HIGH,
        reasons=tuple(reasons),
        ticket_id=ticket_id,
    )


class CalendarTransition(_Own):
    """One calendar opened or closed ("Calendar State Change")."""

    calendar: str
    state: CalendarState
    at: datetime
    next_transition: datetime | None = None
    account: str
    region: str
    #: The document's ARN (the event's ``resources[0]``); None in transitions ledgered before it was kept.
    document: str | None = None

    @property
    def change_id(self) -> str:
        """One ledger key per transition, so each gets its own alert: keyed by the document's ARN, as
        two accounts' (or regions') calendars of one name can move at the same instant."""
        return f"calendar:{self.document or self.calendar}@{self.at.isoformat()}"


def calendar_matches(
    reference: str, configured: tuple[str, ...], home: tuple[str | None, str | None] = (None, None)
) -> bool:
    """Whether a calendar (name or document ARN) is one of the configured names or ARNs.

    A configured document ARN matches that ARN only. A configured plain name is the document of
    that name in the suite's own account and region (``home``: account, region), which is where
    ``GetCalendarState`` reads a plain name; a document ARN of the same name in another account or
    region is another calendar (members forward their own calendars' "Calendar State Change" events
    to the central bus). A part of ``home`` left None is not checked.
    """
    arn = reference.split(":", 5) if reference.startswith("arn:") and ":document/" in reference else None
    name = reference.split(":document/", 1)[1] if arn else reference
    account, region = home
    for wanted in configured:
        if wanted.startswith("arn:"):
            if reference == wanted or (arn is None and wanted.endswith(f":document/{name}")):
                return True
        elif wanted == name and (
            arn is None or ((account is None or arn[4] == account) and (region is None or arn[3] == region))
        ):
            return True
    return False
