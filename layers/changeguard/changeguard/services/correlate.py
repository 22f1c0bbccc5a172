"""Change correlation: find the ticket, judge the change, record the verdict (and its alert)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.change import (
    NOT_CHANGE_RESOURCE_TYPES,
    NOT_RECORDED_STATUSES,
    Change,
    ChangeSource,
    change_from_cloudtrail,
    config_event_source,
)
from changeguard.domain.errors import (
    CalendarUnavailableError,
    ConfigurationError,
    InvalidEventError,
    TicketSourceUnavailableError,
    TicketUnreadableError,
    first_error,
)
from changeguard.domain.heartbeat import ARRIVED, HEARTBEAT_KEY, canary_of
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.outage import CALENDAR_LABEL, CALENDAR_SOURCE, OutageState, opening
from changeguard.domain.policy import Policy
from changeguard.domain.resources import resource_type_of
from changeguard.domain.self_protection import SuiteResources
from changeguard.domain.tickets import TicketLookup, TicketRef, TicketRefSource, find_ref
from changeguard.domain.verdicts import (
    NOT_A_CHANGE,
    WINDOW_UNVERIFIED,
    Judgement,
    Severity,
    Verdict,
    is_exempt,
    judge,
    ticket_unverified,
    unverified_alone,
)
from changeguard.models.cloudtrail import CloudTrailRecord
from changeguard.models.events import (
    CONFIG_ITEM_CHANGE,
    OVERSIZED_ITEM_CHANGE,
    CloudTrailEvent,
    ConfigItemChangeEvent,
)
from changeguard.ports import ActingScope, CalendarReader, Clock, ConfigHistory, Ledger, TagReader, TicketSource
from changeguard.services.acting import acting_in, not_acted_reason, report_denied
from changeguard.services.outcome import Outcome

CFN_AGENT = "cloudformation.amazonaws.com"

REMEDIATION: Mapping[Verdict, str] = {
    Verdict.NO_TICKET: "Raise a change ticket, tag the resource ChangeTicket=<id> (or pass it as the"
    " session name / source identity), and get it approved retroactively.",
    Verdict.UNKNOWN_TICKET: "Check the ticket id, and that ChangeGuard's account in the ticket system may see it.",
    Verdict.SELF_APPROVED: "Have someone other than the implementer approve the ticket.",
    Verdict.NOT_APPROVED: "Collect the missing approvals on the ticket before changing production.",
    Verdict.INCOMPLETE_TICKET: "Attach test evidence and a rollback plan to the ticket.",
    Verdict.OUTSIDE_TICKET_WINDOW: "Reschedule the ticket's window or raise an emergency ticket.",
    Verdict.OUTSIDE_CHANGE_WINDOW: "Wait for the change window, or raise an approved emergency ticket.",
    Verdict.OUT_OF_SCOPE: "Add the resource to the ticket's affected resources, or raise a ticket for it.",
    Verdict.EMERGENCY: "Get the emergency ticket approved retroactively before the deadline.",
    Verdict.UNVERIFIED: "Restore access to the ticket source; ChangeGuard re-checks automatically.",
}
#: For a change UNVERIFIED on its own account (``unverified_alone``), not through an outage.
UNVERIFIED_ALONE_REMEDIATION = (
    "Check that ChangeGuard may read what the reasons name (the ticket's approvals, the resource's or"
    " stack's tags); it re-checks the change automatically."
)


def _ref_from_text(text: str | None, source: TicketRefSource, policy: Policy) -> TicketRef | None:
    found = find_ref(text, policy.ticket_pattern)
    return TicketRef(ticket_id=found, found_in=source) if found else None


class CorrelateService:
    """Every change gets a verdict; every verdict lands in the ledger exactly once."""

    def __init__(
        self,
        *,
        function: str,
        ledger: Ledger,
        tickets: TicketSource,
        tags: TagReader,
        policy: Callable[[], Policy],
        clock: Clock,
        suite_role_prefixes: tuple[str, ...] = (),
        calendar: Callable[[Policy], CalendarReader | None] | None = None,
        suite: SuiteResources | None = None,
        heartbeat_parameter: str | None = None,
        scope: ActingScope | None = None,
        correlated_sources: tuple[str, ...] = (),
        config_history: ConfigHistory | None = None,
    ) -> None:
        # issue 9: a resource's or stack's current tags are read in the change's account.
        self.scope = scope
        self.function = function
        self.ledger = ledger
        self.tickets = tickets
        self.tags = tags
        self.policy = policy
        self.clock = clock
        self.suite_role_prefixes = suite_role_prefixes
        self.calendar = calendar
        # issue 8: changes to the suite itself are tampering; the heartbeat's canaries are recorded.
        self.suite = suite
        self.heartbeat_parameter = heartbeat_parameter
        # The event sources CloudTrailWriteCalls routes here: a Config item of a call of one of them
        # never decides it (its CloudTrail record does). Empty: every source is taken as routed.
        self.correlated_sources = frozenset(correlated_sources)
        # An oversized Config item arrives as a summary: the item itself is read from Config's history.
        self.config_history = config_history

    # -- entry points -------------------------------------------------------------------------
    def handle(self, event: Mapping[str, Any]) -> Outcome:
        """Route a raw EventBridge event to the right parser; reject what is not ours."""
        if not isinstance(event, Mapping):
            raise InvalidEventError("event is not a JSON object")
        config: ConfigItemChangeEvent | None = None
        try:
            if event.get("detail-type") == CONFIG_ITEM_CHANGE:
                config = self.complete(ConfigItemChangeEvent.model_validate(event))
                change = self.change_from_config(config)
            else:
                parsed = CloudTrailEvent.model_validate(event)
                canary = self.canary_of(parsed.detail)
                if canary is not None:
                    return self.record_canary(canary, parsed.detail)
                change = change_from_cloudtrail(parsed.detail, parsed.account, parsed.region)
        except ValidationError as exc:
            raise InvalidEventError(f"not a CloudTrail or Config change event: {first_error(exc)}") from exc
        if change is None:
            return Outcome(function=self.function, verdict=NOT_A_CHANGE)
        if config is not None and self.judged_from_cloudtrail(config):
            return self.record_config_item(change, config)
        return self.evaluate(change)

    def complete(self, event: ConfigItemChangeEvent) -> ConfigItemChangeEvent:
        """An oversized notification with its item read back from Config's history; any other as it is.

        The summary lacks what the judgement reads (``relatedEvents``, the join key that keeps a call
        to one verdict, and the item's tags), so it is never judged on its own: a summary whose item
        the history does not hold is rejected (``InvalidEventError``, dead-lettered), and a
        Config that does not answer raises ``ConfigItemUnavailableError`` (retried, then the failure
        destination). One ``item_at`` read (one ``GetResourceConfigHistory`` call unless Config
        pages on), in the item's account and region.
        """
        detail = event.detail
        if detail.messageType != OVERSIZED_ITEM_CHANGE or detail.configurationItem is not None:
            return event
        summary = detail.configurationItemSummary
        if summary is None:
            raise InvalidEventError("oversized Config notification without its configurationItemSummary")
        if summary.configurationItemStatus in NOT_RECORDED_STATUSES:
            return event  # not a change (change_from_config): nothing to read, and nothing recorded
        if summary.resourceType in NOT_CHANGE_RESOURCE_TYPES:
            return event  # an evaluation or an inventory, not a change (change_from_config): nothing to read
        if self.config_history is None:
            raise ConfigurationError("no Config history reader to read an oversized item with")
        account = summary.awsAccountId or event.account
        region = summary.awsRegion or event.region
        reason = f"{summary.resourceId}@{summary.configurationStateId}"
        with acting_in(self.scope, account, region, reason):
            item = self.config_history.item_at(
                summary.resourceType, summary.resourceId, summary.configurationItemCaptureTime
            )
        # The history's newest item at the capture time is this one: Config records an item before it
        # sends its notification. Another one (an older state id), or none, is not the item notified.
        if item is None or str(item.configurationStateId) != str(summary.configurationStateId):
            raise InvalidEventError(
                f"Config's history has no item {summary.configurationStateId} of {summary.resourceType}"
                f" {summary.resourceId} captured at {summary.configurationItemCaptureTime.isoformat()}"
            )
        return event.model_copy(update={"detail": detail.model_copy(update={"configurationItem": item})})

    def change_from_config(self, event: ConfigItemChangeEvent) -> Change | None:
        """A Config item joins its CloudTrail call through ``relatedEvents``."""
        item = event.detail.configurationItem
        if item is None or item.configurationItemStatus in NOT_RECORDED_STATUSES:
            # An oversized summary reaches here only when complete() left it: not recorded (its
            # creation or its deletion alike), not a change.
            return None
        if item.resourceType in NOT_CHANGE_RESOURCE_TYPES:
            # A Config rule's result or a node's inventory: no call made it. ConfigItemChanges drops
            # these at the bus; the judgement does not rest on that rule alone.
            return None
        if _only_suite_tags(event.detail.configurationItemDiff):
            # issue 8 (no loops): the suite's own marks (changeguard:* tags) are not a change to
            # judge. A person's tag call is still judged from its CloudTrail record.
            return None
        related = tuple(item.relatedEvents)
        change_id = (
            related[0] if related else f"config:{item.resourceType}:{item.resourceId}:{item.configurationStateId}"
        )
        when = item.configurationItemCaptureTime or event.time
        resource = item.ARN or f"{item.resourceType}:{item.resourceId}"
        return Change(
            change_id=change_id,
            source=ChangeSource.CONFIG,
            event_time=when,
            account=item.awsAccountId or event.account,
            region=item.awsRegion or event.region,
            service=(item.resourceType or "AWS::Unknown::").split("::")[1].lower(),
            action=f"ConfigurationItem{(item.configurationItemStatus or 'Change').replace('Resource', '')}",
            event_name="ConfigurationItemChangeNotification",
            resources=(resource,),
            request_tags=item.tags,
            related_event_ids=related,
        )

    def judged_from_cloudtrail(self, event: ConfigItemChangeEvent) -> bool:
        """Whether the call behind a Config item is judged from its own CloudTrail record.

        The CloudTrail record is authoritative for a call: it names the actor (self-approval,
        exemptions, root, tampering all depend on it), and the Config item does not. The ledger
        keeps the first verdict of a change and the default bus has no order, so a Config item
        judged under its call's event id could take that verdict's place. It never does: when
        CloudTrailWriteCalls routes the call here, the Config item is recorded as evidence only,
        and a CloudTrail event that never arrives is judged by the reconciliation sweep. A call
        of a service that rule does not route, or a change CloudTrail did not see (no
        ``relatedEvents``), has no other judge: the Config item is judged.
        """
        item = event.detail.configurationItem
        if item is None or not item.relatedEvents:
            return False
        return not self.correlated_sources or config_event_source(item.resourceType) in self.correlated_sources

    def record_config_item(self, change: Change, event: ConfigItemChangeEvent) -> Outcome:
        """Ledger a Config item under its call's event id as a ``CONFIG`` entry, never a verdict."""
        item = event.detail.configurationItem
        assert item is not None  # change_from_config returns None without one
        entry = LedgerEntry(
            change_id=change.change_id,
            entry=f"{EntryKind.CONFIG.value}#{item.resourceType}#{item.resourceId}#{item.configurationStateId}",
            kind=EntryKind.CONFIG,
            function=self.function,
            event_time=change.event_time,
            recorded_at=self.clock.now(),
            account=change.account,
            region=change.region,
            body={"change": change.model_dump(mode="json"), "status": item.configurationItemStatus},
        )
        new = self.ledger.append([entry])
        return Outcome(
            function=self.function,
            change_id=change.change_id,
            verdict=NOT_A_CHANGE,
            actions=["recorded the Config item" if new else "duplicate delivery: already recorded"],
            reasons=["Config item of a call judged from its CloudTrail record"],
            duplicate=not new,
        )

    # -- the decision -------------------------------------------------------------------------
    def evaluate(self, change: Change) -> Outcome:
        if not change.is_change:
            return Outcome(function=self.function, change_id=change.change_id, verdict=NOT_A_CHANGE)
        if any(a.startswith(self.suite_role_prefixes) for a in change.actor.principal_arns if self.suite_role_prefixes):
            # The rule already drops the suite's own calls; this is the second check, so a
            # mis-edited rule cannot make the suite judge (and alert on) its own actions.
            return Outcome(
                function=self.function,
                change_id=change.change_id,
                verdict=NOT_A_CHANGE,
                reasons=["ChangeGuard's own call"],
            )
        policy = self.policy()
        exempt = is_exempt(change, policy, self.suite_role_prefixes) is not None
        with acting_in(self.scope, change.account, change.region, change.change_id):
            ref, unread = find_ticket_ref(change, policy, self.tags)
        # issue 9: the member account's tags could not be read (its read-tags role refused): the
        # verdict stands on what could be read (UNVERIFIED when no ticket reference was found
        # without them), and the team hears that the account is blind.
        refused = self.scope.refused(change.account) if self.scope is not None else None
        lookup: TicketLookup | None = None
        if ref and not exempt:
            lookup = self.lookup(ref)
        closed: bool | None = None
        calendar_error: str | None = None
        # Every change needs an open window or an emergency ticket; calls a pipeline or stack makes
        # were gated where that started, and exempt principals (pipeline roles) have their own gate.
        if self.calendar and not exempt and not change.actor.pipeline_call:
            reader = self.calendar(policy)
            try:
                closed = reader.is_closed(change.event_time) if reader else None
            except CalendarUnavailableError as exc:
                # Not "open": the window is unknown. What would be authorized is recorded UNVERIFIED
                # and judged again by the follow-up once the calendar answers (one degraded alert).
                calendar_error = str(exc)
        judgement = judge(
            change,
            ref,
            lookup,
            policy,
            suite_role_prefixes=self.suite_role_prefixes,
            calendar_closed=closed,
            calendar_error=calendar_error,
            suite=self.suite,
            ref_error=unread,
        )
        outcome = self.record(change, judgement, policy)
        if calendar_error is not None and not outcome.duplicate:
            opened = self.open_calendar_outage(change, calendar_error, self.clock.now())
            if opened:
                outcome.alert_ids.append(opened)
        if refused is not None and not outcome.duplicate:
            what = "read resource and stack tags (ticket references)"
            outcome.reasons.append(not_acted_reason(refused, what))
            outcome.alert_ids += report_denied(
                self.ledger,
                self.function,
                refused,
                what=what,
                cause=change.change_id,
                event_time=change.event_time,
                now=self.clock.now(),
                region=change.region,
            )
        return outcome

    def lookup(self, ref: TicketRef) -> TicketLookup:
        try:
            return TicketLookup(ticket=self.tickets.get(ref.ticket_id), checked=[self.tickets.name])
        except TicketSourceUnavailableError as exc:
            unreadable = isinstance(exc, TicketUnreadableError)
            return TicketLookup(unavailable=True, unreadable=unreadable, error=str(exc), checked=[self.tickets.name])

    def record(self, change: Change, judgement: Judgement, policy: Policy) -> Outcome:
        now = self.clock.now()
        verdict_entry = LedgerEntry(
            change_id=change.change_id,
            entry=EntryKind.VERDICT.value,
            kind=EntryKind.VERDICT,
            function=self.function,
            event_time=change.event_time,
            recorded_at=now,
            verdict=judgement.verdict.value,
            severity=judgement.severity.value,
            ticket_id=judgement.ticket_id,
            account=change.account,
            region=change.region,
            body={
                "change": change.model_dump(mode="json"),
                "judgement": judgement.model_dump(mode="json"),
                "mode": policy.enforcement_mode.value,
            },
        )
        entries = [verdict_entry]
        alert_ids: list[str] = []
        # UNVERIFIED changes share the one degraded-mode alert, except critical ones (tampering, root
        # use), which alert whatever the verdict, and a change unverified on its own account (its
        # ticket's approvals or its tags unreadable): no outage covers it.
        alone = unverified_alone(judgement)
        critical = judgement.severity is Severity.CRITICAL
        if judgement.alerts and (judgement.verdict is not Verdict.UNVERIFIED or critical or alone):
            alert = verdict_alert(change, judgement, self.function)
            entries.append(alert_entry(alert, change.event_time, now))
            alert_ids.append(alert.alert_id)
        new = self.ledger.append(entries)
        actions = ["recorded verdict"] if new else ["duplicate delivery: already recorded"]
        if judgement.verdict is Verdict.UNVERIFIED and ticket_unverified(judgement) and new:
            opened = self.open_outage(change, judgement, now)
            if opened:
                alert_ids.append(opened)
        return Outcome(
            function=self.function,
            change_id=change.change_id,
            verdict=judgement.verdict.value,
            severity=judgement.severity.value,
            actions=actions,
            reasons=[r.detail for r in judgement.reasons],
            duplicate=not new,
            alert_ids=alert_ids if new else [],
        )

    # -- the heartbeat's canaries (issue 8) ---------------------------------------------------------
    def canary_of(self, record: CloudTrailRecord) -> str | None:
        if not self.heartbeat_parameter:
            return None
        return canary_of(record, self.heartbeat_parameter, self.suite_role_prefixes)

    def record_canary(self, canary: str, record: CloudTrailRecord) -> Outcome:
        """The heartbeat's canary made it through CloudTrail, EventBridge and this function."""
        now = self.clock.now()
        arrived = LedgerEntry(
            change_id=HEARTBEAT_KEY,
            entry=f"{ARRIVED}{canary}",
            kind=EntryKind.HEARTBEAT,
            function=self.function,
            event_time=record.eventTime if record.eventTime.tzinfo else record.eventTime.replace(tzinfo=UTC),
            recorded_at=now,
            body={"canary": canary, "event_id": record.eventID},
        )
        new = self.ledger.append([arrived])
        return Outcome(
            function=self.function,
            change_id=HEARTBEAT_KEY,
            verdict=NOT_A_CHANGE,
            actions=[f"heartbeat canary {canary} arrived" if new else "duplicate delivery: already recorded"],
            reasons=["ChangeGuard's heartbeat canary"],
            duplicate=not new,
        )

    def open_outage(self, change: Change, judgement: Judgement, now: datetime) -> str | None:
        """One degraded-mode alert per outage of the ticket source, not one per change."""
        reason = next(
            (
                r.detail
                for r in judgement.reasons
                if r.verdict is Verdict.UNVERIFIED and not r.detail.startswith(WINDOW_UNVERIFIED)
            ),
            "unreachable",
        )
        return self._open(
            self.tickets.name,
            change,
            reason,
            now,
            summary=(
                "Changes cannot be verified against tickets. Every change until recovery is recorded"
                " as UNVERIFIED, never as authorized, and re-checked automatically."
            ),
            remediation=REMEDIATION[Verdict.UNVERIFIED],
        )

    def open_calendar_outage(self, change: Change, error: str, now: datetime) -> str | None:
        """One degraded-mode alert per outage of the change calendar, not one per change.

        A calendar that cannot be read is also what deleting it, or revoking the suite's access
        to it, looks like: the team hears of it at the first change it leaves unjudged.
        """
        return self._open(
            CALENDAR_SOURCE,
            change,
            error,
            now,
            summary=(
                "Change windows cannot be checked: the change calendar does not answer. Changes that would"
                " be authorized are recorded as UNVERIFIED until it answers, then judged again at their own"
                " time. Deleting the calendar or revoking ChangeGuard's access to it looks like this too."
            ),
            remediation=(
                "Check that the calendars named in the policy (change-calendar-names) exist and that"
                " ChangeGuard's roles may call ssm:GetCalendarState on them."
            ),
            label=CALENDAR_LABEL,
        )

    def _open(
        self,
        source: str,
        change: Change,
        error: str,
        now: datetime,
        *,
        summary: str,
        remediation: str,
        label: str | None = None,
    ) -> str | None:
        """Open ``source``'s next outage with its degraded alert, unless one is open (its alert id)."""
        state = OutageState.read(self.ledger, source)
        if state.is_open:
            return None
        alert, items = opening(
            source,
            state.opened + 1,
            function=self.function,
            now=now,
            error=error,
            summary=summary,
            actions=("recorded changes as UNVERIFIED", "scheduled re-check"),
            body={"first_change": change.change_id},
            event_time=change.event_time,
            account=change.account,
            region=change.region,
            remediation=remediation,
            label=label,
        )
        return alert.alert_id if self.ledger.append(items) else None


def find_ticket_ref(change: Change, policy: Policy, tags: TagReader) -> tuple[TicketRef | None, str | None]:
    """The change's ticket reference, first hit in the configured order, and, when there is none,
    which tag read failed (None: every read answered). Tags that could not be read are not tags
    without a ticket: the change is then UNVERIFIED, not NO_TICKET (``judge``'s ``ref_error``)."""
    key = policy.ticket_tag_key
    unread: str | None = None
    for source in policy.ticket_ref_order:
        ref: TicketRef | None = None
        if source is TicketRefSource.REQUEST_TAGS:
            ref = _ref_from_text(change.request_tags.get(key), source, policy)
        elif source is TicketRefSource.SOURCE_IDENTITY:
            ref = _ref_from_text(change.actor.source_identity, source, policy)
        elif source is TicketRefSource.SESSION_NAME:
            ref = _ref_from_text(change.actor.session_name, source, policy)
        elif source is TicketRefSource.RESOURCE_TAG:
            for arn in change.resources:
                found = tags.tags_of(arn)
                if found is None:
                    unread = unread or f"the tags of {arn} could not be read"
                ref = _ref_from_text((found or {}).get(key), source, policy)
                if ref:
                    break
        elif source is TicketRefSource.STACK_TAG and change.actor.invoked_by == CFN_AGENT:
            stack = change.request_tags.get("aws:cloudformation:stack-id") or change.request_tags.get(
                "aws:cloudformation:stack-name"
            )
            if stack:
                found = tags.stack_tags(stack)
                if found is None:
                    unread = unread or f"the tags of stack {stack} could not be read"
                ref = _ref_from_text((found or {}).get(key), source, policy)
        if ref:
            return ref, None
    return None, unread


def about_change(change: Change) -> dict[str, Any]:
    """What every alert about one change says of it: which change, when, where, on what, by whom."""
    resource = change.resources[0] if change.resources else None
    return {
        "change_id": change.change_id,
        "event_time": change.event_time,
        "account": change.account,
        "region": change.region,
        "resource_type": resource_type_of(resource) if resource else change.service,
        "resources": change.resources,
        "actor": change.actor.arn or change.actor.display,
    }


def alert_target(change: Change) -> str:
    """What an alert's subject names: the first resource's last ARN part, else the service."""
    resource = change.resources[0] if change.resources else None
    return resource.rsplit(":", 1)[-1] if resource else change.service


def verdict_alert(change: Change, judgement: Judgement, function: str) -> Alert:
    target = alert_target(change)
    subject = f"{judgement.verdict.value}: {change.service}:{change.action} on {target} by {change.actor.display}"
    return Alert(
        alert_id=Alert.make_id(change.change_id, function, "verdict"),
        kind="verdict",
        function=function,
        severity=judgement.severity,
        verdict=judgement.verdict.value,
        subject=subject,
        summary=(
            f"{change.actor.display} called {change.service}:{change.action}"
            f" ({'console' if change.actor.console else 'programmatic'},"
            f" {'automation' if change.actor.automation else 'human'})."
        ),
        **about_change(change),
        ticket_id=judgement.ticket_id,
        reasons=tuple(r.detail for r in judgement.reasons),
        actions=("recorded the verdict in the change ledger",),
        remediation=(
            UNVERIFIED_ALONE_REMEDIATION
            if judgement.verdict is Verdict.UNVERIFIED and unverified_alone(judgement)
            else REMEDIATION.get(judgement.verdict)
        ),
    )


SUITE_TAG_PROPERTY = "Tags.changeguard:"


def _only_suite_tags(diff: Mapping[str, Any] | None) -> bool:
    """Whether a Config item's diff changes nothing but ``changeguard:*`` tags."""
    changed = (diff or {}).get("changedProperties")
    return (
        isinstance(changed, Mapping) and bool(changed) and all(str(k).startswith(SUITE_TAG_PROPERTY) for k in changed)
    )
