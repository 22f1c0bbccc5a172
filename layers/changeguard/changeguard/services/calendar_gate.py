"""The change-calendar gate: no deployment, pipeline run or stack change outside an approved window.

SSM Change Calendar blocks nothing by itself. This service reads the calendar at the time of the
change being judged (never the time of processing), re-reads the target, decides (``domain.calendar``),
carries the decision out (stop with rollback, abandon, cancel, or only report in observe mode), and
ledgers the decision with its alert in one append; a stop or cancel is ledgered before it is made, and
its result with the alert after it. Two entry points:

* :class:`CalendarGateService` - rule-triggered: CodeDeploy START, CodePipeline STARTED/RESUMED, CloudFormation
  stack calls seen in CloudTrail, and "Calendar State Change" (a window opened or closed);
* :class:`LifecycleHookService` - a CodeDeploy lifecycle hook (``BeforeInstall``/``BeforeAllowTraffic``)
  that fails the deployment synchronously while the calendar is closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.calendar import (
    CalendarReading,
    CalendarState,
    CalendarTransition,
    DeploymentFacts,
    GateAction,
    GatedChange,
    GateDecision,
    GateKind,
    GateVerdict,
    TargetFacts,
    calendar_matches,
    decide,
    is_valid_emergency,
)
from changeguard.domain.change import ActorKind, actor_from, canonical_action, request_tags, synthetic_event_id
from changeguard.domain.deployments import (
    RedeployMark,
    RedeployMarkPendingError,
    change_id_of,
    claimed_rollback_of,
    read_redeploy_mark,
)
from changeguard.domain.errors import (
    CrossAccountAccessError,
    InvalidEventError,
    TicketSourceUnavailableError,
    first_error,
)
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.domain.tickets import Ticket, find_ref
from changeguard.domain.verdicts import NOT_A_CHANGE, Severity
from changeguard.models.change_events import (
    CALENDAR_STATE_CHANGE,
    CODEDEPLOY_STATE_CHANGE,
    PIPELINE_EXECUTION_STATE_CHANGE,
    CalendarStateChangeEvent,
    CodeDeployStateChangeEvent,
    LifecycleHookInvocation,
    PipelineExecutionStateChangeEvent,
)
from changeguard.models.events import CLOUDTRAIL_API_CALL, CloudTrailEvent
from changeguard.ports import (
    ActingScope,
    CalendarGateReader,
    Clock,
    DeploymentControl,
    Ledger,
    PipelineControl,
    StackControl,
    TicketSource,
)
from changeguard.services.acting import NOT_ACTED, acted_as, acting_in, not_acted_reason, report_denied
from changeguard.services.outcome import Outcome

STACK_CALLS = frozenset({"CreateStack", "UpdateStack", "ExecuteChangeSet", "DeleteStack"})
CFN_SOURCE = "cloudformation.amazonaws.com"
GATE_ENTRY = EntryKind.CALENDAR.value
#: The result of a decision that stopped or cancelled, written after the call (the decision before it).
RESULT_ENTRY = f"{GATE_ENTRY}#result"
#: How long an invocation that ledgered a stop may still be making it: the gate's Timeout in
#: template.yaml (the Globals' 30 s). A decision older than that without its result was left by an
#: attempt that failed: Lambda retries a function error "with a one-minute wait between the first two
#: attempts, and two minutes between the second and third" (Lambda developer guide, asynchronous
#: invocation), so the retry always comes after it.
ATTEMPT_TIMEOUT = timedelta(seconds=30)
#: Pipeline execution states that start a deployment: the start, and a failed stage retried.
PIPELINE_STATES = frozenset({"STARTED", "RESUMED"})
OUTAGE_KEY = "outage:change-calendar"
ALERT_KIND = "change-window"
NO_CALENDAR = "NO_CALENDAR"
#: Pauses (seconds) before re-reading the ledger for the guard's mark on a redeploy it is still
#: creating; then Lambda's retries (1 and 2 min later) take over.
MARK_REREADS = (0.5, 1.0, 1.5)

REMEDIATION = {
    GateVerdict.OUTSIDE_CHANGE_WINDOW: "Run it again inside the change window{opening}, or raise an emergency"
    " ticket and name it in the deployment description, pipeline variable or ChangeTicket tag.",
    GateVerdict.EMERGENCY: "Get the emergency ticket approved retroactively before the deadline.",
    GateVerdict.CALENDAR_UNKNOWN: "Restore ChangeGuard's access to the change calendar (ssm:GetCalendarState) or"
    " fix the calendar names in Parameter Store; changes are blocked while it cannot be read.",
}


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], event: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        raise InvalidEventError(f"not a valid {model.__name__}: {first_error(exc)}") from exc


def _utc_iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _minute(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%MZ")


class _GateBase:
    """What both entry points share: the calendar reading, the emergency ticket, the ledger."""

    function: str
    ledger: Ledger
    tickets: TicketSource
    policy: Callable[[], Policy]
    clock: Clock
    calendar: Callable[[Policy], CalendarGateReader | None]
    sleep: Callable[[float], None]

    # -- facts ---------------------------------------------------------------------------------
    def with_mark(self, facts: DeploymentFacts) -> DeploymentFacts:
        """``facts`` with what the ledger says, when the description claims the guard's redeploy.

        The guard writes its ``ROLLBACK`` intent before ``CreateDeployment`` and marks the redeploy
        right after, so the redeploy's START can arrive between the two: while the intent stands
        without its result, re-read briefly, then raise for Lambda to retry the event rather than
        stop the guard's rollback or trust a description anyone can write.
        """
        for pause in (*MARK_REREADS, None):
            mark = read_redeploy_mark(self.ledger.entries_for, facts.deployment_id, facts.description, self.clock.now())
            if mark is None:
                return facts
            if mark is not RedeployMark.PENDING:
                return facts.model_copy(update={"redeploy_mark": mark})
            if pause is not None:
                self.sleep(pause)
        raise RedeployMarkPendingError(
            f"{facts.deployment_id} claims to be the deployment guard's redeploy of"
            f" {claimed_rollback_of(facts.description)}, whose rollback is under way but not yet ledgered: retry"
        )

    def reading(self, policy: Policy, at: datetime) -> CalendarReading | None:
        """The configured calendars' combined state at ``at``; None when no calendar is configured."""
        reader = self.calendar(policy)
        return reader.reading_at(at) if reader is not None and reader.names else None

    def emergency_ticket(self, texts: Iterable[str | None], policy: Policy) -> tuple[Ticket | None, str | None]:
        """The change's ticket, when it names one, and why it does not let the change through."""
        ticket_id = next((found for text in texts if (found := find_ref(text, policy.ticket_pattern))), None)
        if ticket_id is None:
            return None, "no emergency ticket is named on the change"
        try:
            ticket = self.tickets.get(ticket_id)
        except TicketSourceUnavailableError as exc:
            return None, f"ticket {ticket_id} could not be verified ({exc}): an unverified emergency is not honoured"
        if ticket is None:
            return None, f"ticket {ticket_id} does not exist in the ticket source"
        if not is_valid_emergency(ticket):
            return ticket, f"ticket {ticket_id} is a {ticket.type} ticket ({ticket.status}), not an open emergency"
        return ticket, None

    # -- ledger ----------------------------------------------------------------------------------
    def gate_entry(
        self,
        decision: GateDecision,
        entry: str,
        actions: list[str],
        now: datetime,
        acted_as: dict[str, str] | None = None,
        *,
        intent: bool = False,
        final_status: str | None = None,
    ) -> LedgerEntry:
        """The decision as ledgered. ``intent``: written before its stop or cancel is made, with the
        plan as ``actions``; its ``CALENDAR#result`` follows (``CalendarGateService._gate``).
        ``final_status``: the target's status as a retry found it no longer running (``_resume``)."""
        change = decision.change
        body: dict[str, Any] = {
            "decision": decision.model_dump(mode="json"),
            "summary": decision.summary,
            "actions": actions,
            "mode": "enforce" if decision.enforce else "observe",
        }
        if intent:
            body["intent"] = True
        if final_status is not None:
            body["final_status"] = final_status  # what a retry read, so readers need not parse actions
        if acted_as is not None:
            body["acted_as"] = acted_as  # issue 9: where the gate acted, and as whom
        return LedgerEntry(
            change_id=change.change_id,
            entry=entry,
            kind=EntryKind.CALENDAR,
            function=self.function,
            event_time=change.event_time,
            recorded_at=now,
            verdict=decision.verdict.value,
            severity=decision.severity.value,
            ticket_id=decision.ticket_id,
            account=change.account,
            region=change.region,
            body=body,
        )

    def gate_alert(
        self, decision: GateDecision, actions: list[str], suffix: str = "", subject: str | None = None
    ) -> Alert:
        """The decision's alert; ``suffix`` tells apart several alerting decisions on one change (hooks).
        ``subject``: one the decision alone cannot give (a change that went ahead before a retry)."""
        change, reading = decision.change, decision.reading
        opening = reading.next_opening
        if subject is None:
            if decision.verdict is GateVerdict.EMERGENCY:
                subject = f"Emergency change under {decision.ticket_id} outside the change window: {change.label}"
            elif decision.verdict is GateVerdict.CALENDAR_UNKNOWN:
                doing = f"{_doing(decision)} " if decision.blocks else ""  # e.g. a CreateStack: alerted only
                subject = f"Change calendar unreadable: {doing}{change.label} (fail closed)"
            else:
                subject = f"Change window CLOSED: {_doing(decision)} {change.label}"
        summary = decision.summary[0].upper() + decision.summary[1:] + "."
        if opening:
            summary += f" The change window next opens at {opening.isoformat()}."
        remediation = REMEDIATION.get(decision.verdict, "").format(
            opening=f" (next opening {opening.isoformat()})" if opening else ""
        )
        return Alert(
            alert_id=Alert.make_id(change.change_id, self.function, f"{ALERT_KIND}-{suffix}" if suffix else ALERT_KIND),
            kind=ALERT_KIND,
            function=self.function,
            severity=decision.severity,
            verdict=decision.verdict.value,
            subject=subject,
            summary=summary,
            change_id=change.change_id,
            event_time=change.event_time,
            account=change.account,
            region=change.region,
            resource_type=change.kind.value,
            resources=change.resources or (change.target,),
            actor=change.actor,
            ticket_id=decision.ticket_id,
            reasons=decision.reasons,
            actions=tuple(actions) or ("recorded the decision in the change ledger",),
            remediation=remediation or None,
            details={
                "calendar_state": reading.state.value,
                "calendars": ", ".join(reading.calendars),
                "calendar_at": reading.at.isoformat(),
                "next_opening": _utc_iso(opening),
                "next_transition": _utc_iso(reading.next_transition),
                "mode": "enforce" if decision.enforce else "observe",
                "retro_approval_due": _utc_iso(decision.retro_approval_due),
            },
        )

    def outage_entries(
        self, reading: CalendarReading, policy: Policy, now: datetime, since: datetime | None = None
    ) -> tuple[list[LedgerEntry], str | None]:
        """One alert per outage of the calendar (while it cannot be read).

        The follow-up ends the outage, with its one ``recovered`` alert, once the calendar answers
        (``follow_up.calendar_outage``): a change that reads the calendar leaves it open, since
        closing it here would end it without that alert. So a calendar that answered has nothing to
        do here, and the outage's partition is read only when it did not (issue 9: one Query fewer
        on every other decision).

        ``since``: a retry's decision was recorded then (:meth:`CalendarGateService._finish_outage`);
        an outage entry written since says another change or the follow-up took the outage over
        (opened it, or closed it once the calendar answered), and a reading that old must not open
        another one.
        """
        if reading.state is not CalendarState.UNKNOWN:
            return [], None
        entries = self.ledger.entries_for(OUTAGE_KEY)
        if since is not None and any(e.recorded_at >= since for e in entries):
            return [], None
        opened = sum(1 for e in entries if e.entry.startswith("OPEN#"))
        closed = sum(1 for e in entries if e.entry.startswith("CLOSED#"))
        if opened > closed:
            return [], None
        generation = opened + 1
        alert = Alert(
            alert_id=Alert.make_id(OUTAGE_KEY, self.function, f"degraded-{generation}"),
            kind="degraded",
            function=self.function,
            severity=Severity.HIGH,
            subject=f"ChangeGuard degraded: change calendar {', '.join(reading.calendars)} cannot be read",
            summary=(
                "The change-calendar gate cannot tell whether changes are inside an approved window. "
                + (
                    "calendar-fail-closed is on: deployments, pipeline runs and stack updates are stopped"
                    " (enforce mode) until the calendar can be read again."
                    if policy.calendar_fail_closed
                    else "calendar-fail-closed is off: changes go ahead unchecked until it can be read again."
                )
            ),
            change_id=OUTAGE_KEY,
            event_time=reading.at,
            reasons=(reading.error or "unknown error",),
            actions=("recorded each change's decision as CALENDAR_UNKNOWN",),
            remediation=REMEDIATION[GateVerdict.CALENDAR_UNKNOWN],
        )
        outage = self._outage_entry(f"OPEN#{generation:06d}", now, {"error": reading.error})
        # The outage's number in the alert's key too: a later outage's alert must not meet this one's.
        return [outage, alert_entry(alert, now, now, suffix=f"{generation:06d}")], alert.alert_id

    def _outage_entry(self, entry: str, now: datetime, body: dict[str, Any]) -> LedgerEntry:
        return LedgerEntry(
            change_id=OUTAGE_KEY,
            entry=entry,
            kind=EntryKind.OUTAGE,
            function=self.function,
            event_time=now,
            recorded_at=now,
            body=body,
        )

    def alerted_by_the_other_gate(
        self, decision: GateDecision, entries: Sequence[LedgerEntry] | None = None
    ) -> str | None:
        """The other entry point's change-window alert on this deployment, when it raised one.

        A deployment whose AppSpec names the lifecycle hook is judged twice, for one change: by the
        hook and by the rule-triggered gate on its START event, which come in either order. One
        closed-window alert is enough: whichever alerts second records its decision and names the
        first alert instead of raising its own. Both still act (the hook reports, the gate stops),
        so the deployment is blocked whatever the order; two running at the same instant can
        still both alert (this is a read, not a lock). ``entries``: the change's partition as the
        caller already read it (the hook reads it once per invocation); None reads it here.
        """
        if decision.change.kind is not GateKind.DEPLOYMENT:
            return None
        for e in self.ledger.entries_for(decision.change.change_id) if entries is None else entries:
            alert = e.body.get("alert") if e.kind is EntryKind.ALERT else None
            if alert and e.function != self.function and alert.get("kind") == ALERT_KIND:
                return str(alert["alert_id"])
        return None

    def record(
        self,
        decision: GateDecision,
        policy: Policy,
        entry: str,
        actions: list[str],
        acted_as: dict[str, str] | None = None,
        alert_suffix: str = "",
        *,
        final_status: str | None = None,
        subject: str | None = None,
    ) -> Outcome:
        now = self.clock.now()
        alerted = self.alerted_by_the_other_gate(decision) if decision.alerts else None
        if alerted:
            actions = [*actions, _covered(alerted)]
        entries = [self.gate_entry(decision, entry, actions, now, acted_as, final_status=final_status)]
        alert_ids: list[str] = []
        if decision.alerts and not alerted:
            alert = self.gate_alert(decision, actions, alert_suffix, subject)
            entries.append(alert_entry(alert, decision.change.event_time, now, suffix=alert_suffix))
            alert_ids.append(alert.alert_id)
        new = self.ledger.append(entries)
        return self.outcome(decision, policy, now, actions, new, alert_ids if new else [])

    def outcome(
        self, decision: GateDecision, policy: Policy, now: datetime, actions: list[str], new: bool, alert_ids: list[str]
    ) -> Outcome:
        """The calendar outage the reading opened or closed (ledgered once), and the decision's outcome."""
        outage, outage_alert = self.outage_entries(decision.reading, policy, now)
        if outage and self.ledger.append(outage) and outage_alert:
            alert_ids = [*alert_ids, outage_alert]
        return Outcome(
            function=self.function,
            change_id=decision.change.change_id,
            verdict=decision.verdict.value,
            severity=decision.severity.value,
            actions=(actions or ["recorded the decision"]) if new else ["duplicate delivery: already recorded"],
            reasons=[decision.summary, *decision.reasons],
            duplicate=not new,
            alert_ids=alert_ids,
        )


def _doing(decision: GateDecision) -> str:
    verb = {
        GateAction.STOP_DEPLOYMENT: "stopped",
        GateAction.STOP_PIPELINE: "stopped",
        GateAction.CANCEL_STACK_UPDATE: "cancelled",
        GateAction.FAIL_HOOK: "failed",
    }.get(decision.action)
    if verb is None:
        return "outside the window:"
    return verb if decision.enforce else f"would have {verb}"


def _prefix(decision: GateDecision) -> str:
    """A blocking decision's subject opening: why the change was to be stopped."""
    if decision.verdict is GateVerdict.CALENDAR_UNKNOWN:
        return "Change calendar unreadable (fail closed)"
    return "Change window CLOSED"


def _verb(decision: GateDecision) -> str:
    return "cancel the update of" if decision.action is GateAction.CANCEL_STACK_UPDATE else "stop"


#: What each stop or cancel leaves its target in, as documented: a deployment StopDeployment stopped
#: reads ``Stopped`` (DeploymentStatus: Created | Queued | InProgress | Baking | Succeeded | Failed |
#: Stopped | Ready); StopPipelineExecution puts an execution in ``Stopping``, then ``Stopped``
#: (CodePipeline user guide, "Stop a pipeline execution"); CancelUpdateStack "rolls back the update":
#: ``UPDATE_ROLLBACK_IN_PROGRESS``, then ``UPDATE_ROLLBACK_COMPLETE`` (or ``_FAILED``, or
#: ``UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS`` on the way). Any other final status (Succeeded,
#: Failed, UPDATE_COMPLETE, ...) was not produced by a stop: the change ended by itself.
_LEFT_BY_A_STOP: dict[GateAction, tuple[str, ...]] = {
    GateAction.STOP_DEPLOYMENT: ("Stopped",),
    GateAction.STOP_PIPELINE: ("Stopping", "Stopped"),
    GateAction.CANCEL_STACK_UPDATE: ("UPDATE_ROLLBACK_",),
}
#: Final statuses that say the change shipped whole.
_COMPLETED = frozenset({"Succeeded", "UPDATE_COMPLETE", "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS"})


def _left_by_a_stop(decision: GateDecision, status: str) -> bool:
    """Whether ``status`` is one the decision's stop or cancel leaves its target in."""
    return status.startswith(_LEFT_BY_A_STOP.get(decision.action, ()))


def _plan(decision: GateDecision) -> str:
    """What the decision's intent says is about to be done."""
    how = {
        GateAction.STOP_DEPLOYMENT: " with automatic rollback (StopDeployment)",
        GateAction.STOP_PIPELINE: " (StopPipelineExecution, abandon)",
        GateAction.CANCEL_STACK_UPDATE: " (CancelUpdateStack)",
    }.get(decision.action, "")
    return f"{_verb(decision)} {decision.change.label}{how}"


def _covered(alert_id: str) -> str:
    return f"not alerted again: alert {alert_id} covers this deployment"


def _stack_name(reference: str) -> str:
    """``arn:aws:cloudformation:...:stack/<name>/<id>`` -> ``<name>``."""
    if reference.startswith("arn:") and ":stack/" in reference:
        return reference.split(":stack/", 1)[1].split("/", 1)[0]
    return reference


class CalendarGateService(_GateBase):
    """Rule-triggered gate: deployments, pipeline runs and stack calls, plus window transitions."""

    def __init__(
        self,
        *,
        function: str,
        ledger: Ledger,
        tickets: TicketSource,
        policy: Callable[[], Policy],
        clock: Clock,
        calendar: Callable[[Policy], CalendarGateReader | None],
        deployments: DeploymentControl,
        pipelines: PipelineControl,
        stacks: StackControl,
        suite_role_prefixes: tuple[str, ...] = (),
        scope: ActingScope | None = None,
        sleep: Callable[[float], None] = time.sleep,
        home: tuple[str | None, str | None] = (None, None),
    ) -> None:
        self.sleep = sleep
        self.function = function
        self.ledger = ledger
        self.tickets = tickets
        self.policy = policy
        self.clock = clock
        self.calendar = calendar
        self.deployments = deployments
        self.pipelines = pipelines
        self.stacks = stacks
        # The suite's own account and region, where a calendar configured by plain name lives.
        self.home = home
        self.suite_role_prefixes = suite_role_prefixes
        # issue 9: deployments, pipeline runs and stacks are read and stopped in the account (and
        # region) of the change, through the member role there.
        self.scope = scope

    def handle(self, event: Mapping[str, Any]) -> Outcome:
        """Route by detail-type; reject what is not ours."""
        if not isinstance(event, Mapping):
            raise InvalidEventError("event is not a JSON object")
        detail_type = event.get("detail-type")
        if detail_type == CODEDEPLOY_STATE_CHANGE:
            return self.on_deployment(_parse(CodeDeployStateChangeEvent, event))
        if detail_type == PIPELINE_EXECUTION_STATE_CHANGE:
            return self.on_pipeline(_parse(PipelineExecutionStateChangeEvent, event))
        if detail_type == CLOUDTRAIL_API_CALL:
            return self.on_stack_call(_parse(CloudTrailEvent, event))
        if detail_type == CALENDAR_STATE_CHANGE:
            return self.on_calendar_change(_parse(CalendarStateChangeEvent, event))
        raise InvalidEventError(f"the change-calendar gate does not handle {detail_type!r} events")

    # -- triggers --------------------------------------------------------------------------------
    def on_deployment(self, event: CodeDeployStateChangeEvent) -> Outcome:
        detail = event.detail
        if detail.state != "START":
            return self._ignored(change_id_of(detail.deploymentId), f"deployment state {detail.state} is not START")
        change = GatedChange(
            change_id=change_id_of(detail.deploymentId),
            kind=GateKind.DEPLOYMENT,
            operation="START",
            target=detail.deploymentId,
            event_time=event.time,
            account=event.account,
            region=event.region,
            resources=tuple(event.resources),
            application=detail.application,
            group=detail.deploymentGroup,
        )

        def read() -> tuple[TargetFacts, list[str | None]]:
            facts = self.deployments.get(detail.deploymentId)
            if facts is None:
                return TargetFacts(exists=False), []
            return self.with_mark(facts).target(), [facts.description]

        return self._gate(change, read)

    def on_pipeline(self, event: PipelineExecutionStateChangeEvent) -> Outcome:
        detail = event.detail
        if detail.state not in PIPELINE_STATES:
            return self._ignored(detail.execution_id, f"pipeline execution state {detail.state} is not gated")
        # A retried stage (RESUMED) deploys again, maybe in another window than the start: it is
        # decided on its own, keyed by its attempt (or, lacking one, by its event, which a
        # redelivery repeats).
        change_id = detail.execution_id
        if detail.state == "RESUMED":
            attempt = f"attempt-{int(detail.attempt)}" if detail.attempt else f"resumed-{event.id}"
            change_id = f"{detail.execution_id}#{attempt}"
        trigger = detail.execution_trigger
        change = GatedChange(
            change_id=change_id,
            kind=GateKind.PIPELINE,
            operation=detail.state,
            target=detail.execution_id,
            event_time=event.time,
            account=event.account,
            region=event.region,
            resources=tuple(event.resources),
            actor=trigger.trigger_detail if trigger else None,
            application=detail.pipeline,
        )

        def read() -> tuple[TargetFacts, list[str | None]]:
            facts = self.pipelines.get(detail.pipeline, detail.execution_id)
            if facts is None:
                return TargetFacts(exists=False), []
            key = self.policy().ticket_tag_key
            texts: list[str | None] = [facts.variables.get(key), *facts.variables.values(), *facts.revision_summaries]
            return facts.target(), texts

        return self._gate(change, read)

    def on_stack_call(self, event: CloudTrailEvent) -> Outcome:
        record = event.detail
        # The correlator's change id for the same call, so both functions' facts share a key.
        change_id = record.eventID or synthetic_event_id(record.model_dump(mode="json", exclude_none=True))
        action = canonical_action(record.eventName)
        if record.eventSource != CFN_SOURCE or action not in STACK_CALLS or record.errorCode:
            return self._ignored(change_id, f"{record.eventSource}:{record.eventName} is not a stack change")
        actor = actor_from(record)
        if any(a.startswith(self.suite_role_prefixes) for a in actor.principal_arns if self.suite_role_prefixes):
            return self._ignored(change_id, "ChangeGuard's own call")
        if actor.kind is ActorKind.AWS_SERVICE or actor.invoked_by == CFN_SOURCE:
            # A nested stack's operation is part of its parent's, which is gated itself.
            return self._ignored(change_id, f"{action} made by {actor.invoked_by or 'an AWS service'}")
        params = record.requestParameters or {}
        stack_ref = (record.responseElements or {}).get("stackId") or params.get("stackName")
        if not stack_ref and action == "ExecuteChangeSet" and params.get("changeSetName"):
            account, region = record.recipientAccountId or event.account, record.awsRegion or event.region
            try:
                with acting_in(self.scope, account, region, change_id):
                    stack_ref = self.stacks.stack_of_change_set(str(params["changeSetName"]))
            except CrossAccountAccessError as exc:
                now = self.clock.now()
                what = f"find the stack of change set {params['changeSetName']}"
                ids = report_denied(
                    self.ledger, self.function, exc, what=what, cause=change_id, event_time=now, now=now, region=region
                )
                return Outcome(
                    function=self.function,
                    change_id=change_id,
                    verdict=NOT_ACTED,
                    reasons=[not_acted_reason(exc, what)],
                    alert_ids=ids,
                )
        if not stack_ref:
            raise InvalidEventError(f"{action} record {change_id} names no stack")
        stack_ref = str(stack_ref)
        change = GatedChange(
            change_id=change_id,
            kind=GateKind.STACK,
            operation=action,
            target=_stack_name(stack_ref),
            event_time=record.eventTime,
            account=record.recipientAccountId or event.account,
            region=record.awsRegion or event.region,
            resources=(stack_ref,) if stack_ref.startswith("arn:") else (),
            actor=actor.display,
        )
        key = self.policy().ticket_tag_key
        texts: list[str | None] = [request_tags(params).get(key), actor.source_identity, actor.session_name]
        change_set = (
            str(params["changeSetName"]) if action == "ExecuteChangeSet" and params.get("changeSetName") else None
        )

        def read() -> tuple[TargetFacts, list[str | None]]:
            facts = self.stacks.get(stack_ref)
            if facts is None:
                return TargetFacts(exists=False), texts
            # Only the update this call started: a late event must not cancel a later update.
            return facts.target(record.eventTime, change_set), [*texts, facts.tags.get(key)]

        return self._gate(change, read)

    def on_calendar_change(self, event: CalendarStateChangeEvent) -> Outcome:
        """A window opened or closed: tell the team, with the next transition."""
        policy = self.policy()
        detail = event.detail
        reference = next(iter(event.resources), None)
        if reference is None:
            raise InvalidEventError("Calendar State Change without the calendar's ARN in resources")
        if detail.state not in (CalendarState.OPEN.value, CalendarState.CLOSED.value):
            raise InvalidEventError(f"Calendar State Change with state {detail.state!r}")
        name = reference.split(":document/", 1)[-1]
        if not calendar_matches(reference, policy.change_calendar_names, self.home):
            return self._ignored(f"calendar:{reference}", f"calendar {reference} is not one ChangeGuard enforces")
        transition = CalendarTransition(
            calendar=name,
            state=CalendarState(detail.state),
            at=detail.atTime or event.time,
            next_transition=detail.nextTransitionTime,
            account=event.account,
            region=event.region,
            document=reference if reference.startswith("arn:") else None,
        )
        combined = self.reading(policy, transition.at) if len(policy.change_calendar_names) > 1 else None
        return self._announce(transition, combined)

    # -- the decision, carried out -----------------------------------------------------------------
    def _gate(self, change: GatedChange, read: Callable[[], tuple[TargetFacts, list[str | None]]]) -> Outcome:
        """Decide once per change; a stop or cancel is ledgered (``CALENDAR``) before it is made.

        A decision that makes no call (in the window, observe mode, alert only) is ledgered with its
        alert in one append. One that stops or cancels writes the decision first (a conditional put,
        ``body.intent``), then acts, then writes ``CALENDAR#result`` (what the call answered, and as
        whom) with the alert: had it acted first, a failed append (throttled, timed out) would leave
        Lambda's retry to re-read a deployment it had itself stopped and ledger "already Stopped:
        nothing to stop", the stop ChangeGuard made lost from the record. A retry or a duplicate
        delivery finds the decision and finishes it (:meth:`_resume`) rather than deciding again,
        as the lifecycle hook and the deployment guard do.
        """
        policy = self.policy()
        entries = self.ledger.entries_for(change.change_id)
        recorded = next((e for e in entries if e.entry == GATE_ENTRY), None)
        if recorded is not None:
            if recorded.body.get("intent") and not any(e.entry == RESULT_ENTRY for e in entries):
                return self._resume(recorded, policy, read)
            return self._finish_outage(recorded, policy)
        reading = self.reading(policy, change.event_time)
        if reading is None:
            return self._ignored(change.change_id, "no change calendar is configured (change-calendar-names)")
        denied: CrossAccountAccessError | None = None
        try:
            with acting_in(self.scope, change.account, change.region, change.change_id):
                target, texts = read()  # re-read right before deciding and acting
        except CrossAccountAccessError as exc:
            # The change is judged all the same; unread, it counts as still running (fail closed).
            denied = exc
            target, texts = TargetFacts(exists=True, in_progress=True, status="unreadable"), []
        ticket, note = (None, None)
        if reading.state is not CalendarState.OPEN and not (target.rollback or target.not_release):
            ticket, note = self.emergency_ticket(texts, policy)
        decision = decide(change, reading, target, policy, ticket=ticket, ticket_note=note)
        if not decision.mutates:
            # Nothing to do in that account (carry_out makes no call for such a decision): the verdict
            # stands, read or not.
            return self.record(decision, policy, GATE_ENTRY, self.carry_out(decision)[0])
        if denied is not None:
            return self._not_acted(decision, policy, GATE_ENTRY, denied)
        plan = [_plan(decision)]
        if not self.ledger.append([self.gate_entry(decision, GATE_ENTRY, plan, self.clock.now(), intent=True)]):
            # A concurrent delivery of the same change wrote its decision first, and carries it out.
            return self._duplicate(change.change_id, "duplicate delivery: a concurrent delivery is carrying it out")
        return self._act(decision, policy, read)

    def _act(
        self,
        decision: GateDecision,
        policy: Policy,
        read: Callable[[], tuple[TargetFacts, list[str | None]]],
        resumed: str | None = None,
        *,
        retry: bool = False,
    ) -> Outcome:
        """Carry out the recorded ``decision`` and ledger its result with the alert.

        ``resumed``: the target's status as a retry re-read it, when an earlier attempt decided the
        change and did not record its result, and that status is one the stop leaves (or the target
        is gone, or a stack is in a later update); None on the first attempt. A call that took no
        effect (the target finished between the re-read and the call) re-reads the target and says
        what it found (:meth:`_not_stopped`), never "stopped".

        ``retry``: an earlier attempt ledgered this decision and may have made its call already. A
        stop answers ``Pending`` and the deployment reads ``InProgress`` until it has taken effect,
        so a retry can find it running, call again, and be told it already finished (``Stopped``):
        that is this gate's own stop, not someone else's, and it is recorded as the earlier
        attempt's, with the decision's action kept.
        """
        change = decision.change
        found: TargetFacts | None = None
        try:
            with acting_in(self.scope, change.account, change.region, change.change_id):
                if resumed is None:
                    actions, took_effect = self.carry_out(decision)
                    if not took_effect:
                        found, _ = read()
                else:
                    actions = [
                        f"{change.label} was {resumed} when a retry came to {_verb(decision)} it: this gate's"
                        " earlier attempt decided to and most likely did, but did not record the result"
                        " (or it ended by itself meanwhile); no call made again"
                    ]
                by = acted_as(self.scope)
        except CrossAccountAccessError as exc:
            return self._not_acted(decision, policy, RESULT_ENTRY, exc)
        if found is not None:
            status = (found.status or "finished") if found.exists else "gone"
            if retry and status != "gone" and _left_by_a_stop(decision, status):
                own = [
                    f"{change.label} was {status} when this retry's call came to {_verb(decision)} it"
                    f" ({actions[0]}): this gate's earlier attempt decided to and most likely did (its"
                    " stop was still taking effect when the retry re-read it), but did not record the result"
                ]
                return self.record(decision, policy, RESULT_ENTRY, own, by, final_status=status)
            return self._not_stopped(decision, policy, status, answer=actions[0], by=by)
        return self.record(decision, policy, RESULT_ENTRY, actions, by, final_status=resumed)

    def _resume(
        self, recorded: LedgerEntry, policy: Policy, read: Callable[[], tuple[TargetFacts, list[str | None]]]
    ) -> Outcome:
        """A decision to stop or cancel is ledgered without its result: finish it, never decide again.

        Until the writer's timeout has passed it may still be acting (a concurrent delivery): acting
        too would be a second stop. After it, the writer stopped short (a crash, a failed append) and
        this is Lambda's retry, a minute or more later. The target is re-read first: one still
        running is stopped or cancelled now (each call is convergent: ``StopDeployment`` on a
        finished deployment answers ``DeploymentAlreadyCompletedException``); one no longer running
        is not touched again, so a late retry never cancels a stack's later update. What it says of
        one no longer running depends on the status it ended in: one a stop leaves (``Stopped``,
        ``UPDATE_ROLLBACK_*``, a pipeline's ``Stopping``/``Stopped``) says the earlier attempt most
        likely stopped it, which the decision before it shows; any other (``Succeeded``,
        ``UPDATE_COMPLETE``, ``Failed``) proves no stop was made, and says the change went ahead
        outside the window (:meth:`_not_stopped`). Either way the status read is ``final_status``.
        """
        decision = GateDecision.model_validate(recorded.body["decision"])
        change = decision.change
        if self.clock.now() - recorded.recorded_at < ATTEMPT_TIMEOUT:
            return self._duplicate(change.change_id, "duplicate delivery: a concurrent delivery is carrying it out")
        try:
            with acting_in(self.scope, change.account, change.region, change.change_id):
                target, _ = read()
        except CrossAccountAccessError as exc:
            return self._not_acted(decision, policy, RESULT_ENTRY, exc)
        if target.exists and target.in_progress and not target.not_this:
            return self._act(decision, policy, read, retry=True)
        status = (target.status or "finished") if target.exists else "gone"
        if target.exists and target.status and not target.not_this and not _left_by_a_stop(decision, target.status):
            return self._not_stopped(decision, policy, target.status)
        return self._act(decision, policy, read, resumed=status)

    def _not_stopped(
        self,
        decision: GateDecision,
        policy: Policy,
        status: str,
        *,
        answer: str | None = None,
        by: dict[str, str] | None = None,
    ) -> Outcome:
        """The target was no longer running when this gate's stop or cancel came: the record and
        its alert say what happened, never "stopped" (as a first attempt that found it finished
        would, ``domain.calendar``).

        Two ways here. A retry (``answer`` None) found ``status``, which is no status a stop or
        cancel leaves (``_LEFT_BY_A_STOP``): the earlier attempt's call did not take effect
        (throttled, timed out). Or the call itself answered that the target had already finished
        (``answer``, e.g. ``DeploymentAlreadyCompletedException``, which CodeDeploy raises for a
        deployment that finished - Succeeded, Failed or Stopped) and ``status`` is what the re-read
        found then. A status a stop leaves means someone else stopped it first; any other means the
        change went ahead outside the window. The verdict stands; the result is an alert-only
        decision (as for a change already finished when first judged), with the status read as
        ``final_status`` and a subject built from what happened.
        """
        change, verb = decision.change, _verb(decision)
        if answer is None:
            ended = "completed" if status in _COMPLETED else f"ended {status} by itself"
            text = (
                f"{change.label} was {status} when a retry came to {verb} it: it {ended} before this gate's"
                f" earlier attempt could {verb} it, whose call did not take effect (nothing was stopped):"
                " the change went ahead outside the window; no call made again"
            )
            happened = f"went ahead outside the window ({status})"
        elif status != "gone" and _left_by_a_stop(decision, status):
            text = (
                f"{change.label} was already {status} when this gate came to {verb} it ({answer}): someone"
                " else (a person, CodeDeploy's alarms, another ChangeGuard function) stopped it first; this"
                " gate's call took no effect"
            )
            happened = f"already {status} before this gate acted"
        else:
            ended = {"gone": "was gone"}.get(status, "completed" if status in _COMPLETED else f"ended {status}")
            text = (
                f"{change.label} {ended} just before this gate's call to {verb} it ({answer}): the call took"
                " no effect (nothing was stopped): the change went ahead outside the window"
            )
            happened = f"went ahead outside the window ({status})"
        went = decision.model_copy(update={"action": GateAction.ALERT, "reasons": (*decision.reasons, text)})
        # What happened first: SNS cuts a subject at 100 characters, and the label is long.
        subject = f"{_prefix(decision)}: {happened}: {change.label}"
        return self.record(went, policy, RESULT_ENTRY, [text], by, final_status=status, subject=subject)

    def _not_acted(
        self, decision: GateDecision, policy: Policy, entry: str, denied: CrossAccountAccessError
    ) -> Outcome:
        """The decision ledgered with why its call could not be made in the change's account.

        No call was made, so what is recorded is an alert-only decision (the verdict kept), with a
        subject that says so: the per-account "cannot act" alert (``report_denied``) is raised once
        a day, so from the second refused change on this alert is the only one anyone reads.
        """
        change = decision.change
        what = f"{_verb(decision)} {change.label}"
        reason = not_acted_reason(denied, what)
        actions = [reason]
        by = {"account": denied.account, "role": denied.role_arn or "none configured", "error": denied.code}
        subject = f"{_prefix(decision)}: NOT {_doing(decision)} (access refused in {denied.account}): {change.label}"
        unacted = decision.model_copy(update={"action": GateAction.ALERT, "reasons": (*decision.reasons, reason)})
        outcome = self.record(unacted, policy, entry, actions, by, subject=subject)
        now = self.clock.now()
        outcome.alert_ids += report_denied(
            self.ledger,
            self.function,
            denied,
            what=what,
            cause=change.change_id,
            event_time=change.event_time,
            now=now,
            region=change.region,
        )
        return outcome

    def _finish_outage(self, recorded: LedgerEntry, policy: Policy) -> Outcome:
        """A decided change delivered again: a duplicate, or Lambda's retry of an attempt that failed
        after it ledgered the decision (and its result) but before the calendar outage it opened.

        The outage (``OPEN#<n>`` and its one ``degraded`` alert) is a separate append after the
        decision (``outcome``): it is keyed in the outage's own partition, where another change may
        write the same entry, and a transaction with it would refuse the decision too. So a retry
        whose recorded reading was UNKNOWN writes it now; for any other reading this reads nothing.
        """
        change_id = recorded.change_id
        outcome = self._duplicate(change_id, "duplicate delivery: already decided")
        reading = CalendarReading.model_validate(recorded.body["decision"]["reading"])
        now = self.clock.now()
        outage, outage_alert = self.outage_entries(reading, policy, now, since=recorded.recorded_at)
        if outage and self.ledger.append(outage) and outage_alert:
            outcome.alert_ids.append(outage_alert)
            outcome.actions.append("opened the calendar outage an earlier attempt could not record")
        return outcome

    def _duplicate(self, change_id: str, why: str) -> Outcome:
        return Outcome(function=self.function, change_id=change_id, actions=[why], duplicate=True)

    def carry_out(self, decision: GateDecision) -> tuple[list[str], bool]:
        """The decision's mutating call, only in enforce mode; observe mode makes none.

        Returns what was done, and whether the call took effect: False when it answered that the
        target had already finished (nothing was stopped or cancelled); True when no call was due.
        """
        change = decision.change
        if decision.verdict is GateVerdict.EMERGENCY:
            due = _utc_iso(decision.retro_approval_due)
            return [f"let {change.label} go ahead under {decision.ticket_id}; retroactive approval due by {due}"], True
        if not decision.blocks:
            return [decision.summary], True
        if not decision.enforce:
            return [f"{_doing(decision)} {change.label} (observe mode: no call made)"], True
        if decision.action is GateAction.STOP_DEPLOYMENT:
            result = self.deployments.stop(change.target, auto_rollback=True)
            if result.already_completed:
                return [f"{change.label} had already completed: nothing to stop"], False
            return [f"stopped {change.label} with automatic rollback ({result.describe()})"], True
        if decision.action is GateAction.STOP_PIPELINE:
            reason = f"ChangeGuard: change calendar CLOSED at {decision.reading.at.isoformat()}"
            answer = self.pipelines.stop(str(change.application), change.target, reason)
            if answer.already_completed:
                return [f"{change.label}: {answer.describe()}"], False
            return [f"stopped (abandoned) {change.label}: {answer.describe()}"], True
        answer = self.stacks.cancel_update(change.resources[0] if change.resources else change.target)
        if answer.already_completed:
            return [f"{change.label}: {answer.describe()}"], False
        return [f"cancelled the update of stack {change.target}: {answer.describe()}"], True

    def _announce(self, transition: CalendarTransition, combined: CalendarReading | None) -> Outcome:
        """Tell the team a calendar opened or closed, and what that means for changes.

        With several calendars configured, changes may go ahead only while all are open:
        ``GetCalendarState`` over several calendars "returns the status of OPEN only if all calendars
        in the request are open" (SSM API reference). So one calendar opening while another is
        closed (a weekly window opening during a freeze) opens nothing: the subject, the verdict and
        the next transition come from the combined reading (``combined``), and the calendar's own
        transition is told alongside ("calendar prod-window opened; changes still CLOSED until ...").
        """
        now = self.clock.now()
        opened = transition.state is CalendarState.OPEN
        nxt = transition.next_transition
        moved = "opened" if opened else "closed"
        if opened:
            summary = f"Calendar {transition.calendar} opened at {transition.at.isoformat()}" + (
                f"; it closes at {nxt.isoformat()}." if nxt else "."
            )
        else:
            summary = f"Calendar {transition.calendar} closed at {transition.at.isoformat()}" + (
                f"; the next window opens at {nxt.isoformat()}." if nxt else "; no window is scheduled."
            )
        if combined is not None:
            summary += (
                f" Across the {len(combined.calendars)} configured calendars changes are {combined.state.value}"
                + (f" until {combined.next_transition.isoformat()}." if combined.next_transition else ".")
            )
        # What changes may do, and until when: the combined reading's when there is one.
        state = combined.state if combined is not None else transition.state
        upcoming = combined.next_transition if combined is not None else nxt
        subject = f"Change window {state.value}: calendar {transition.calendar} {moved}"
        if state is CalendarState.UNKNOWN:
            subject += "; the configured calendars cannot be read together"
        elif state is not transition.state:
            subject += f"; changes still {state.value}" + (f" until {_minute(upcoming)}" if upcoming else "")
        elif upcoming:
            subject += f"; next transition {_minute(upcoming)}"
        verdict = f"CALENDAR_{state.value}"
        alert = Alert(
            alert_id=Alert.make_id(transition.change_id, self.function, "calendar-state"),
            kind="calendar-state",
            function=self.function,
            severity=Severity.INFO,
            subject=subject,
            summary=summary,
            change_id=transition.change_id,
            event_time=transition.at,
            account=transition.account,
            region=transition.region,
            resource_type="ssm:document",
            resources=(transition.calendar,),
            actions=("told the team",),
            details={
                "calendar": transition.calendar,
                "state": transition.state.value,
                "calendar_next_transition": _utc_iso(nxt),
                "next_transition": _utc_iso(upcoming),
                "combined_state": combined.state.value if combined else None,
            },
        )
        entry = LedgerEntry(
            change_id=transition.change_id,
            entry=GATE_ENTRY,
            kind=EntryKind.CALENDAR,
            function=self.function,
            event_time=transition.at,
            recorded_at=now,
            verdict=verdict,
            severity=Severity.INFO.value,
            account=transition.account,
            region=transition.region,
            body={"transition": transition.model_dump(mode="json"), "summary": summary},
        )
        new = self.ledger.append([entry, alert_entry(alert, transition.at, now)])
        return Outcome(
            function=self.function,
            change_id=transition.change_id,
            verdict=verdict,
            severity=Severity.INFO.value,
            actions=["announced the calendar transition"] if new else ["duplicate delivery: already recorded"],
            reasons=[summary],
            duplicate=not new,
            alert_ids=[alert.alert_id] if new else [],
        )

    def _ignored(self, change_id: str, why: str) -> Outcome:
        return Outcome(function=self.function, change_id=change_id, verdict=NOT_A_CHANGE, reasons=[why])


class LifecycleHookService(_GateBase):
    """A synchronous gate for pipelines: the hook reports Failed while the calendar is closed."""

    def __init__(
        self,
        *,
        function: str,
        ledger: Ledger,
        tickets: TicketSource,
        policy: Callable[[], Policy],
        clock: Clock,
        calendar: Callable[[Policy], CalendarGateReader | None],
        deployments: DeploymentControl,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sleep = sleep
        self.function = function
        self.ledger = ledger
        self.tickets = tickets
        self.policy = policy
        self.clock = clock
        self.calendar = calendar
        self.deployments = deployments

    def handle(self, event: Any, function_arn: str | None = None) -> Outcome:
        """Decide for one hook invocation and report ``Succeeded`` or ``Failed`` to CodeDeploy.

        The decision is ledgered (``HOOK#<executionId>``, a conditional put) *before* it is reported,
        and every later attempt reports the recorded one and never decides again: CodeDeploy takes
        one status per hook execution (a second ``PutLifecycleEventHookExecutionStatus`` is refused
        with ``LifecycleEventAlreadyCompletedException``), so a retry that decided anew at a new
        "now" (the window opened meanwhile) would ledger a verdict CodeDeploy never received. The
        alert is written after the report, so it says what was done; a failed report or alert write
        raises, and Lambda's retry reports the recorded status again and writes the alert then.

        The deployment's ledger partition is read once per invocation (issue 9), and that one read
        answers both questions asked of it: whether this execution was decided already, and whether
        the START gate already alerted on the deployment. It is read again only after a lost
        conditional put, and before the hook writes an alert the first read did not show covered.
        """
        if not isinstance(event, Mapping):
            raise InvalidEventError("event is not a JSON object")
        hook = _parse(LifecycleHookInvocation, event)
        policy = self.policy()
        change_id = change_id_of(hook.DeploymentId)
        entry = f"HOOK#{hook.LifecycleEventHookExecutionId}"
        entries = self.ledger.entries_for(change_id)
        decision, fresh = _recorded(entries, entry), False
        if decision is None:
            decided = self.decide(hook, policy, function_arn)
            if isinstance(decided, Outcome):
                return decided  # no calendar: nothing decided, nothing ledgered
            plan = [f"report {_hook_status(decided)} to CodeDeploy"]
            if decided.alerts and (alerted := self.alerted_by_the_other_gate(decided, entries)):
                plan.append(_covered(alerted))  # the START gate judged this deployment first
            intent = self.gate_entry(decided, entry, plan, self.clock.now())
            fresh = self.ledger.append([intent])
            if fresh:
                decision = decided
            else:
                # Lost a race with a concurrent delivery of the same execution: report its decision, not
                # ours. It was written after our read, so only a new read can see it; the ledger's Query
                # is strongly consistent (ConsistentRead: it reflects every write that succeeded before it).
                entries = self.ledger.entries_for(change_id)
                decision = _recorded(entries, entry)
            if decision is None:
                raise RuntimeError(f"{change_id} {entry} was refused as written but cannot be read back: retry")
        status = _hook_status(decision)
        reported = self.deployments.put_hook_status(hook.DeploymentId, hook.LifecycleEventHookExecutionId, status)
        actions = [
            f"reported {status} to CodeDeploy"
            if reported
            else f"reported {status} to CodeDeploy (already reported: CodeDeploy takes one status per hook execution)"
        ]
        if decision.blocks and not decision.enforce:
            actions.append(f"would have reported Failed for {decision.change.label} (observe mode)")
        return self.report(
            decision, policy, actions, fresh or reported, suffix=hook.LifecycleEventHookExecutionId, entries=entries
        )

    def decide(self, hook: LifecycleHookInvocation, policy: Policy, function_arn: str | None) -> GateDecision | Outcome:
        """The decision for this execution now; with no calendar configured, report Succeeded and stop there."""
        now = self.clock.now()
        facts = self.deployments.get(hook.DeploymentId)
        if facts is None:
            # issue 8: CodeDeploy invokes hooks of its own deployments only; nobody waits on this one.
            raise InvalidEventError(f"the hook names a deployment CodeDeploy does not know: {hook.DeploymentId!r}")
        facts = self.with_mark(facts)
        arn = (function_arn or "").split(":")
        change = GatedChange(
            change_id=change_id_of(hook.DeploymentId),
            kind=GateKind.DEPLOYMENT,
            operation="lifecycle hook",
            target=hook.DeploymentId,
            event_time=now,  # the hook runs during the deployment: "now" is the change's time
            account=arn[4] if len(arn) > 5 else None,
            region=arn[3] if len(arn) > 5 else None,
            application=facts.application,
            group=facts.deployment_group,
        )
        reading = self.reading(policy, now)
        if reading is None:
            reported = self.deployments.put_hook_status(
                hook.DeploymentId, hook.LifecycleEventHookExecutionId, "Succeeded"
            )
            return Outcome(
                function=self.function,
                change_id=change.change_id,
                verdict=NO_CALENDAR,
                actions=["reported Succeeded" if reported else "already reported"],
                reasons=["no change calendar is configured (change-calendar-names)"],
            )
        target = facts.target()
        ticket, note = (None, None)
        if reading.state is not CalendarState.OPEN and not (target.rollback or target.not_release):
            ticket, note = self.emergency_ticket([facts.description], policy)
        return decide(change, reading, target, policy, ticket=ticket, ticket_note=note, hook=True)

    def report(
        self,
        decision: GateDecision,
        policy: Policy,
        actions: list[str],
        new: bool,
        suffix: str,
        entries: Sequence[LedgerEntry],
    ) -> Outcome:
        """The recorded decision's alert (and calendar outage), written once, after the report.

        One alert per hook execution: a deployment runs the hook at more than one lifecycle event
        (BeforeInstall and AfterAllowTestTraffic), and a redelivery of the same one alerts nothing.
        The START gate's alert is looked for in ``entries`` (the partition as this invocation read
        it) and, when not there, read again just before the alert is written: the hook's invocation
        (GetDeployment, the calendar, the put, the report) is long enough for a START alert to land
        meanwhile, and one alert per change is the point. That second read is the only one left on
        an alerting path, so two gates both alert only when they write at the same instant (a read,
        not a lock).
        """
        now = self.clock.now()
        alert_ids: list[str] = []
        alerted = None
        if decision.alerts:
            alerted = self.alerted_by_the_other_gate(decision, entries) or self.alerted_by_the_other_gate(decision)
        if alerted:
            actions = [*actions, _covered(alerted)]
        elif decision.alerts:
            alert = self.gate_alert(decision, actions, suffix)
            if self.ledger.append([alert_entry(alert, decision.change.event_time, now, suffix=suffix)]):
                alert_ids.append(alert.alert_id)
                new = True
        return self.outcome(decision, policy, now, actions, new, alert_ids)


def _recorded(entries: Iterable[LedgerEntry], entry: str) -> GateDecision | None:
    """The decision an earlier attempt ledgered for this hook execution (``entry``), if any."""
    found = next((e for e in entries if e.entry == entry), None)
    return GateDecision.model_validate(found.body["decision"]) if found is not None else None


def _hook_status(decision: GateDecision) -> str:
    """What CodeDeploy is told: ``Failed`` only for a failed hook in enforce mode."""
    return "Failed" if decision.mutates else "Succeeded"
