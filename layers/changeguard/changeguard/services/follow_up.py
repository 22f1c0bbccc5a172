"""The scheduled follow-up: re-check EMERGENCY and UNVERIFIED changes, and close ticket-source outages.

Each run reads the ledger's by-day index over the look-back window (and a day more), decides per
change (``domain.follow_up.decide``) and records each decision as a new RECHECK entry, with its
alert in the same transaction (the outbox); a change still open when its follow-up ends gets a last
one (``domain.follow_up.expire``). Nothing is ever updated, and every write is conditional, so a
second run (or a duplicate delivery of the schedule) writes nothing new.

Outages of the ticket source are the correlator's ``outage:<source>`` entries: ``OPEN#<n>`` when
it first fails, ``CLOSED#<n>`` (with one recovery alert) when the follow-up finds it answering.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.change import Change
from changeguard.domain.errors import CalendarUnavailableError, TicketSourceUnavailableError, TicketUnreadableError
from changeguard.domain.follow_up import (
    FOLLOWED,
    FollowUp,
    FollowUpResult,
    Tracked,
    decide,
    expire,
    tracked_from,
)
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.outage import CALENDAR_LABEL, CALENDAR_SOURCE, OutageState, closing, opening
from changeguard.domain.policy import Policy
from changeguard.domain.self_protection import SuiteResources
from changeguard.domain.tickets import TicketLookup, TicketRef
from changeguard.domain.verdicts import Verdict, ref_unverified, window_unverified
from changeguard.models.scheduled import parse_scheduled
from changeguard.ports import ActingScope, CalendarReader, Clock, Ledger, TagReader, TicketSource
from changeguard.services.acting import acting_in
from changeguard.services.correlate import REMEDIATION, about_change, alert_target, find_ticket_ref, verdict_alert
from changeguard.services.outcome import Outcome

PROBE_TICKET = "CHANGEGUARD-PROBE-1"  # any well-formed id: the question is whether the source answers
MAX_STEPS = 3  # UNVERIFIED -> re-judged EMERGENCY -> retro-approved/overdue, in one run


class FollowUpService:
    """Re-checks what needs re-checking; every fact it learns becomes a new ledger entry."""

    def __init__(
        self,
        *,
        function: str,
        ledger: Ledger,
        tickets: TicketSource,
        policy: Callable[[], Policy],
        clock: Clock,
        suite_role_prefixes: tuple[str, ...] = (),
        calendar: Callable[[Policy], CalendarReader | None] | None = None,
        tags: TagReader | None = None,
        scope: ActingScope | None = None,
        suite: SuiteResources | None = None,
    ) -> None:
        self.function = function
        self.ledger = ledger
        self.tickets = tickets
        self.policy = policy
        self.clock = clock
        self.suite_role_prefixes = suite_role_prefixes
        # The change calendar, for changes first judged without it (it could not be read).
        self.calendar = calendar
        # Resource and stack tags, read in the change's account, for changes first judged without
        # them (they could not be read, so no ticket reference was found).
        self.tags = tags
        self.scope = scope
        # issue 8: a change to the suite itself stays tampering when judged again, as the correlator judged it.
        self.suite = suite

    def find_ticket_ref(self, change: Change, policy: Policy) -> tuple[TicketRef | None, str | None]:
        """The change's ticket reference, its tags read again (as the correlator reads them)."""
        if self.tags is None:
            return None, "no tag reader"
        with acting_in(self.scope, change.account, change.region, change.change_id):
            return find_ticket_ref(change, policy, self.tags)

    # -- entry point -----------------------------------------------------------------------------
    def handle(self, event: Mapping[str, Any]) -> Outcome:
        """Run on EventBridge's "Scheduled Event" (rule or Scheduler); anything else is rejected."""
        parse_scheduled(event)
        return self.run()

    def run(self) -> Outcome:
        run = _Run(self, self.clock.now().astimezone(UTC), self.policy())
        return run.execute()

    # -- what the run writes ---------------------------------------------------------------------
    def recheck_entry(
        self, tracked: Tracked, decision: FollowUp, now: datetime, policy: Policy, step: int = 1
    ) -> LedgerEntry:
        """``RECHECK#<time>#<step>-<result>``: a run's steps (re-judged, then overdue) sort in order."""
        change = tracked.change
        return LedgerEntry(
            change_id=change.change_id,
            entry=f"{EntryKind.RECHECK.value}#{now.isoformat()}#{step}-{decision.result.value}",
            kind=EntryKind.RECHECK,
            function=self.function,
            # The change's own time: the entry lands on the change's day in the by-day index.
            event_time=change.event_time,
            recorded_at=now,
            verdict=decision.verdict.value,
            severity=decision.severity.value,
            ticket_id=tracked.judgement.ticket_id,
            account=change.account,
            region=change.region,
            body={**decision.body(), "mode": policy.enforcement_mode.value},
        )

    def expired_alert(self, tracked: Tracked, decision: FollowUp) -> Alert:
        """The follow-up stopped with the change still open: what a person has to finish by hand."""
        change = tracked.change
        target = alert_target(change)
        ticket = tracked.judgement.ticket_id
        until = decision.followed_until.isoformat() if decision.followed_until else "-"
        if tracked.verdict is Verdict.EMERGENCY:
            subject = (
                f"FOLLOW-UP STOPPED: {ticket or '-'} never approved for {change.service}:{change.action} on {target}"
            )
            summary = (
                f"{change.actor.display} made an emergency change under {ticket or 'an emergency ticket'}. ChangeGuard"
                f" looked for its retroactive approval until {until} and did not find it; it no longer looks."
            )
            remediation = (
                f"Have {decision.required} people other than the implementer approve {ticket or 'the ticket'} and keep"
                " the ticket as the evidence: ChangeGuard will not record an approval that arrives now."
            )
        else:
            subject = f"FOLLOW-UP STOPPED: UNVERIFIED {change.service}:{change.action} on {target}"
            summary = (
                f"{change.actor.display} made a change ChangeGuard could not verify: its ticket source, the"
                f" ticket's approvals, the change calendar or the resource's tags stayed unreadable until {until}."
                " It no longer re-checks it; the change stays UNVERIFIED in the ledger."
            )
            remediation = (
                "Check the change by hand against its ticket, approvals and change window, and record the"
                " finding with the audit evidence: ChangeGuard will not judge it again."
            )
        return Alert(
            alert_id=Alert.make_id(change.change_id, self.function, "follow-up-expired"),
            kind="follow-up-expired",
            function=self.function,
            severity=decision.severity,
            verdict=decision.verdict.value,
            subject=subject,
            summary=summary,
            **about_change(change),
            ticket_id=ticket,
            reasons=(decision.detail,),
            actions=("recorded the expired follow-up in the change ledger", "stopped following the change"),
            remediation=remediation,
            details={"followed_until": until, "verdict": decision.verdict.value},
        )

    def alert_for(self, tracked: Tracked, decision: FollowUp) -> Alert | None:
        change = tracked.change
        if decision.result is FollowUpResult.REJUDGED and decision.judgement is not None:
            alert = verdict_alert(change, decision.judgement, self.function)
            what = "change calendar" if window_unverified(tracked.original) else "ticket source"
            what = "resource's tags" if ref_unverified(tracked.original) else what
            return alert.model_copy(
                update={
                    "summary": alert.summary + f" Judged again once the {what} answered (was UNVERIFIED).",
                    "actions": (*alert.actions, f"re-checked after the {what} recovered"),
                }
            )
        if decision.result is FollowUpResult.EXPIRED:
            return self.expired_alert(tracked, decision)
        if decision.result is not FollowUpResult.OVERDUE:
            return None
        target = alert_target(change)
        ticket = tracked.judgement.ticket_id or "-"
        return Alert(
            alert_id=Alert.make_id(change.change_id, self.function, "overdue"),
            kind="overdue",
            function=self.function,
            severity=decision.severity,
            verdict=decision.verdict.value,
            subject=f"OVERDUE: retroactive approval of {ticket} for {change.service}:{change.action} on {target}",
            summary=(
                f"{change.actor.display} made an emergency change under {ticket}. Its retroactive approval"
                f" was due by {decision.due.isoformat() if decision.due else '-'} and has not arrived."
            ),
            **about_change(change),
            ticket_id=tracked.judgement.ticket_id,
            reasons=(decision.detail,),
            actions=(
                "recorded the overdue follow-up in the change ledger",
                "keeps checking for the approval until "
                + (decision.followed_until.isoformat() if decision.followed_until else "-")
                + " (follow-up-lookback-days after the change), then alerts again if it has not arrived",
            ),
            remediation=(
                f"Have {decision.required} people other than the implementer approve {ticket};"
                " ChangeGuard records the approval when it arrives."
            ),
            details={
                "due": decision.due.isoformat() if decision.due else None,
                "approvals": decision.approvals,
                "required": decision.required,
            },
        )


class _Run:
    """One scheduled run: its clock reading, its policy, its ticket lookups and what it did."""

    def __init__(self, service: FollowUpService, now: datetime, policy: Policy) -> None:
        self.service = service
        self.now = now
        self.policy = policy
        self.lookups: dict[str, TicketLookup] = {}
        self.answered = False
        self.failed: str | None = None
        self.rejudged = 0
        # The change calendar this run: its readings at changes' times, whether it answered or failed.
        self.calendar_answered = False
        self.calendar_failed: str | None = None
        self.window_rejudged = 0
        self.actions: list[str] = []
        self.reasons: list[str] = []
        self.alert_ids: list[str] = []

    def execute(self) -> Outcome:
        clear = getattr(self.service.tickets, "clear_cache", None)
        if callable(clear):
            clear()  # a fresh look at every ticket on every run
        candidates = self.candidates()
        for change_id in candidates:
            self.follow(change_id)
        self.outage()
        self.calendar_outage()
        if not self.actions:
            self.actions.append(f"nothing new ({len(candidates)} change(s) followed)")
        return Outcome(
            function=self.service.function,
            verdict=None,
            actions=self.actions,
            reasons=self.reasons,
            alert_ids=self.alert_ids,
        )

    # -- which changes ---------------------------------------------------------------------------
    def candidates(self) -> list[str]:
        """Changes whose verdict (or latest re-judgement) is EMERGENCY or UNVERIFIED, oldest first.

        Entries sit on their change's day. A change is followed until ``follow_up_ends`` (the look-back
        after its own time); reading one day more than the look-back keeps it in view for at least a
        day after that, so a run (every 15 minutes) records its ``expired`` entry.
        """
        today = self.now.date()
        found: dict[str, datetime] = {}
        for back in range(self.policy.follow_up_lookback_days + 2):
            day = (today - timedelta(days=back)).isoformat()
            for verdict in FOLLOWED:
                for entry in self.service.ledger.entries_on(day, verdict.value):
                    if entry.kind in (EntryKind.VERDICT, EntryKind.RECHECK):
                        found.setdefault(entry.change_id, entry.event_time)
        return sorted(found, key=lambda c: (found[c], c))

    # -- one change ------------------------------------------------------------------------------
    def follow(self, change_id: str) -> None:
        """Record what is new about one change, step by step; then, past its follow-up, give it up."""
        step, tracked, noted = 1, None, len(self.reasons)
        for step in range(1, MAX_STEPS + 2):
            tracked = tracked_from(self.service.ledger.entries_for(change_id))
            if tracked is None or tracked.done:
                return
            if step > MAX_STEPS or not self.step(tracked, step):
                break
        if tracked is not None:
            self.give_up(tracked, step, self.reasons[noted:])

    def step(self, tracked: Tracked, step: int) -> bool:
        """Decide and record the next fact about ``tracked``; False when there is none (or no answer)."""
        service = self.service
        change_id = tracked.change.change_id
        ref = tracked.ref
        reread = ref is None and tracked.verdict is Verdict.UNVERIFIED and ref_unverified(tracked.original)
        if reread:
            ref, unread = service.find_ticket_ref(tracked.change, self.policy)
            if unread is not None:
                self.reasons.append(f"{change_id}: ticket reference not checked ({unread})")
                return False
        elif ref is None:
            return False
        lookup = TicketLookup()  # no reference in the tags read again: nothing to look up
        if ref is not None:
            lookup = self.lookup(ref.ticket_id)
            if lookup.unavailable:
                self.reasons.append(f"{change_id}: {ref.ticket_id} not checked ({lookup.error})")
                return False
        closed: bool | None = None
        window = tracked.verdict is Verdict.UNVERIFIED and window_unverified(tracked.original)
        if window:
            try:
                closed = self.calendar_closed_at(tracked.change.event_time)
            except CalendarUnavailableError as exc:
                self.reasons.append(f"{change_id}: change window not checked ({exc})")
                return False
        decision = decide(
            tracked,
            lookup,
            self.policy,
            self.now,
            suite_role_prefixes=service.suite_role_prefixes,
            calendar_closed=closed,
            ref=ref,
            suite=service.suite,
        )
        if decision is None:
            return False
        self.window_rejudged += window and decision.result is FollowUpResult.REJUDGED
        if not self.record(tracked, decision, step):
            return False  # already recorded (a concurrent or repeated run): nothing new
        if decision.result is FollowUpResult.REJUDGED:
            self.rejudged += 1
        return True

    def give_up(self, tracked: Tracked, step: int, reasons: list[str]) -> None:
        """Past ``follow_up_ends``, a change still open gets its last entry (``expired``) and one alert.

        Whatever this run could not check (``reasons``) goes into the entry. The alert's entry has
        a fixed key, so the pair is written once, however many runs see the change afterwards.
        """
        last = "; ".join(r.split(": ", 1)[-1] for r in reasons) or None
        decision = expire(tracked, self.policy, self.now, last=last)
        if decision is not None:
            self.record(tracked, decision, step)

    def record(self, tracked: Tracked, decision: FollowUp, step: int) -> bool:
        """The RECHECK entry and its alert, in one conditional transaction; False if already there."""
        service = self.service
        entries = [service.recheck_entry(tracked, decision, self.now, self.policy, step)]
        alert = service.alert_for(tracked, decision) if decision.alert else None
        if alert is not None:
            entries.append(alert_entry(alert, tracked.change.event_time, self.now))
        if not service.ledger.append(entries):
            return False
        self.actions.append(f"{tracked.change.change_id}: {decision.result.value} - {decision.detail}")
        if alert is not None:
            self.alert_ids.append(alert.alert_id)
        return True

    def calendar_closed_at(self, at: datetime) -> bool | None:
        """The change calendar's state at ``at`` (None: no calendar configured any more).

        Raises ``CalendarUnavailableError`` while it does not answer; after the first failure of a
        run, at once, without asking again.
        """
        if self.calendar_failed is not None:
            raise CalendarUnavailableError(self.calendar_failed)
        reader = self.service.calendar(self.policy) if self.service.calendar else None
        try:
            closed = reader.is_closed(at) if reader else None
        except CalendarUnavailableError as exc:
            self.calendar_failed = str(exc)
            raise
        self.calendar_answered = True
        return closed

    def lookup(self, ticket_id: str) -> TicketLookup:
        found = self.lookups.get(ticket_id)
        if found is None and self.failed is not None:
            # The source already failed this run: do not spend a timeout per remaining ticket.
            return TicketLookup(unavailable=True, error=self.failed, checked=[self.service.tickets.name])
        if found is None:
            tickets = self.service.tickets
            try:
                found = TicketLookup(ticket=tickets.get(ticket_id), checked=[tickets.name])
                self.answered = True
            except TicketUnreadableError as exc:
                # The source answered; only this ticket cannot be read. The others are still read,
                # and no outage is opened (nor one kept open) for it.
                found = TicketLookup(unavailable=True, unreadable=True, error=str(exc), checked=[tickets.name])
                self.answered = True
            except TicketSourceUnavailableError as exc:
                found = TicketLookup(unavailable=True, error=str(exc), checked=[tickets.name])
                self.failed = self.failed or str(exc)
            self.lookups[ticket_id] = found
        return found

    # -- the ticket source's outages -------------------------------------------------------------
    def outage(self) -> None:
        """Close an open outage once the source answers; open one if it fails and none is open."""
        service = self.service
        source = service.tickets.name
        state = OutageState.read(service.ledger, source)
        if self.failed is not None:
            if not state.is_open:
                opened = opening(
                    source,
                    state.opened + 1,
                    function=service.function,
                    now=self.now,
                    error=self.failed,
                    summary=(
                        "The follow-up cannot read change tickets. Emergency approvals and UNVERIFIED changes"
                        " wait until the source answers; new changes are recorded as UNVERIFIED meanwhile."
                    ),
                    actions=("postponed the follow-up of waiting changes",),
                    body={"first_change": None, "noticed_by": service.function},
                    remediation=REMEDIATION[Verdict.UNVERIFIED],
                )
                self._record(*opened, f"{state.key}: outage #{state.opened + 1} opened")
            return
        if not state.is_open:
            return
        if not self.answered:
            self.lookup(PROBE_TICKET)
            if self.failed is not None:
                return
        self._close(state, source, self.rejudged)

    def calendar_outage(self) -> None:
        """Close the change calendar's open outage (opened by the correlator) once it answers."""
        state = OutageState.read(self.service.ledger, CALENDAR_SOURCE)
        if not state.is_open or self.calendar_failed is not None:
            return
        if not self.calendar_answered:
            try:
                self.calendar_closed_at(self.now)
            except CalendarUnavailableError:
                return
        self._close(state, CALENDAR_SOURCE, self.window_rejudged, label=CALENDAR_LABEL)

    def _close(self, state: OutageState, source: str, rejudged: int, label: str | None = None) -> None:
        closed = closing(
            state, source=source, function=self.service.function, now=self.now, rejudged=rejudged, label=label
        )
        self._record(*closed, f"{state.key}: outage #{state.opened} closed")

    def _record(self, alert: Alert, items: list[LedgerEntry], action: str) -> None:
        if self.service.ledger.append(items):
            self.actions.append(action)
            self.alert_ids.append(alert.alert_id)
