"""Following up EMERGENCY and UNVERIFIED changes: pure decisions over what the ledger recorded.

* An EMERGENCY change is allowed, but its ticket needs ``required_approvals`` independent
  approvals within ``emergency_approval_hours`` of the change (the event time, not the time the
  event arrived). When they arrive the follow-up records it (``retro-approved``); when the deadline
  passes first it records ``overdue`` and alerts, once; it keeps looking for the approvals after that,
  until the follow-up ends.
* An UNVERIFIED change was judged while the ticket source could not answer (or the ticket's
  approvals, the change calendar, the resource's tags could not be read). Once they answer the
  change is judged again, at its own time, and the new verdict is recorded (``re-judged``).
* Either is followed for ``follow_up_lookback_days`` after the change. One still open then gets a
  last entry, ``expired``, with its verdict unchanged and one alert: the follow-up stops, and a
  person has to finish it by hand. Every followed change so ends in a recorded state.

The ledger is append-only, so the state of a change is its VERDICT entry plus its RECHECK
entries, read back in key order (``RECHECK#<time>#<step>-<result>``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from changeguard.domain.change import Change
from changeguard.domain.identity import independent_approvers
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.domain.self_protection import SuiteResources
from changeguard.domain.tickets import TicketLookup, TicketRef, TicketRefSource
from changeguard.domain.verdicts import Judgement, Severity, Verdict, judge, ref_unverified, window_unverified

FOLLOWED = (Verdict.EMERGENCY, Verdict.UNVERIFIED)


class FollowUpResult(StrEnum):
    RETRO_APPROVED = "retro-approved"
    OVERDUE = "overdue"
    REJUDGED = "re-judged"
    EXPIRED = "expired"  # followed for follow_up_lookback_days, still open: the follow-up stopped


class _Own(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class Tracked(_Own):
    """One followed change as the ledger has it: the change, its current judgement, what was recorded."""

    change: Change
    judgement: Judgement
    original: Judgement
    results: tuple[FollowUpResult, ...] = ()

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict

    @property
    def done(self) -> bool:
        """Nothing left to follow: approved retroactively, given up on (expired), or re-judged to a
        verdict we do not follow."""
        ended = (FollowUpResult.RETRO_APPROVED, FollowUpResult.EXPIRED)
        return any(r in ended for r in self.results) or self.verdict not in FOLLOWED

    @property
    def ref(self) -> TicketRef | None:
        j = self.judgement
        if not j.ticket_id:
            return None
        source = j.ticket_ref_source or TicketRefSource.REQUEST_TAGS.value
        return TicketRef(ticket_id=j.ticket_id, found_in=TicketRefSource(source))


def tracked_from(entries: Iterable[LedgerEntry]) -> Tracked | None:
    """The followed state of one change from its ledger entries; None without a readable VERDICT."""
    ordered = sorted(entries, key=lambda e: e.entry)
    verdict = next((e for e in ordered if e.kind is EntryKind.VERDICT), None)
    if verdict is None:
        return None
    try:
        change = Change.model_validate(verdict.body["change"])
        original = Judgement.model_validate(verdict.body["judgement"])
    except (KeyError, TypeError, ValidationError):
        return None
    current = original
    results: list[FollowUpResult] = []
    for entry in ordered:
        if entry.kind is not EntryKind.RECHECK:
            continue
        try:
            result = FollowUpResult(str(entry.body.get("result")))
        except ValueError:
            continue  # a re-check some other function recorded
        results.append(result)
        if result is FollowUpResult.REJUDGED and "judgement" in entry.body:
            try:
                current = Judgement.model_validate(entry.body["judgement"])
            except ValidationError:
                continue
    return Tracked(change=change, judgement=current, original=original, results=tuple(results))


class FollowUp(_Own):
    """A decision about one change: what to record, whether to alert, and why."""

    change_id: str
    result: FollowUpResult
    previous: Verdict
    verdict: Verdict
    severity: Severity
    detail: str
    due: datetime | None = None
    late: bool = False
    approvers: tuple[str, ...] = ()
    approvals: int = 0
    required: int = 0
    judgement: Judgement | None = None
    alert: bool = False
    #: Until when the follow-up looks (``overdue``) or looked (``expired``): ``follow_up_ends``.
    followed_until: datetime | None = None

    def body(self) -> dict[str, Any]:
        """What the RECHECK entry records."""
        out: dict[str, Any] = {
            "result": self.result.value,
            "previous_verdict": self.previous.value,
            "verdict": self.verdict.value,
            "detail": self.detail,
        }
        if self.due is not None:
            out.update(due=self.due.isoformat(), late=self.late, approvals=self.approvals, required=self.required)
        if self.approvers:
            out["approvers"] = list(self.approvers)
        if self.judgement is not None:
            out["judgement"] = self.judgement.model_dump(mode="json")
        if self.followed_until is not None:
            out["followed_until"] = self.followed_until.isoformat()
        return out


def retro_approval_due(change: Change, policy: Policy) -> datetime:
    """When the retroactive approval of an emergency change is due: from the change's own time."""
    due: datetime = change.event_time + timedelta(hours=policy.emergency_approval_hours)
    return due


def follow_up_ends(change: Change, policy: Policy) -> datetime:
    """When the follow-up stops looking at a change: ``follow_up_lookback_days`` after its own time.

    The policy keeps the retroactive approval's deadline before this (``Policy`` rejects
    ``emergency_approval_hours >= follow_up_lookback_days * 24``), so an overdue change is recorded
    overdue before it expires.
    """
    ends: datetime = change.event_time + timedelta(days=policy.follow_up_lookback_days)
    return ends


def expire(tracked: Tracked, policy: Policy, now: datetime, *, last: str | None = None) -> FollowUp | None:
    """The follow-up's last word on a change still open at ``follow_up_ends``, or None.

    ``expired`` keeps the verdict the change had (EMERGENCY without its retroactive approval,
    UNVERIFIED never verified) and alerts, so that a person finishes it by hand. ``last`` is why the
    run that gives up could not settle it (a source that did not answer), when it says.
    """
    if tracked.done:
        return None
    ends = follow_up_ends(tracked.change, policy)
    if now < ends:
        return None
    days = policy.follow_up_lookback_days
    ticket_id = tracked.judgement.ticket_id
    if tracked.verdict is Verdict.EMERGENCY:
        what = f"no retroactive approval of {ticket_id or 'the emergency ticket'} was recorded"
    else:
        what = "it could not be verified (its ticket, approvals, change window or tags stayed unreadable)"
    detail = f"followed for {days} day(s) after the change, until {ends.isoformat()}; {what}; the follow-up stopped"
    if last:
        detail += f" (last attempt: {last})"
    return FollowUp(
        change_id=tracked.change.change_id,
        result=FollowUpResult.EXPIRED,
        previous=tracked.verdict,
        verdict=tracked.verdict,
        severity=_max_severity(Severity.HIGH, tracked.judgement.severity),
        detail=detail,
        required=policy.required_approvals if tracked.verdict is Verdict.EMERGENCY else 0,
        alert=True,
        followed_until=ends,
    )


def _max_severity(*values: Severity) -> Severity:
    order = list(Severity)
    return min(values, key=order.index)


def decide(
    tracked: Tracked,
    lookup: TicketLookup,
    policy: Policy,
    now: datetime,
    *,
    suite_role_prefixes: Sequence[str] = (),
    calendar_closed: bool | None = None,
    ref: TicketRef | None = None,
    suite: SuiteResources | None = None,
) -> FollowUp | None:
    """The next fact to record about ``tracked``, or None (nothing new, or the source did not answer).

    Deadlines run from the change's event time against ``now``, the clock at evaluation.
    ``calendar_closed`` is the calendar's state at the change's time, read now, for a change first
    judged without it (``window_unverified``); the caller reads it, and skips the change while the
    calendar still does not answer. ``ref`` is the ticket reference found by reading the tags again
    (None: there is none) for a change first judged without them (``ref_unverified``); the caller
    reads them, looks the ticket up (``lookup``), and skips the change while they cannot be read.
    ``suite`` is the suite's own resources, as the correlator has them: a change to the suite is
    tampering (critical, alerted) when judged again too, whatever the ticket now says.
    """
    if tracked.done or lookup.unavailable:
        return None
    if tracked.verdict is Verdict.UNVERIFIED:
        return _rejudge(tracked, lookup, policy, suite_role_prefixes, calendar_closed, ref, suite)
    return _emergency(tracked, lookup, policy, now)


def _rejudge(
    tracked: Tracked,
    lookup: TicketLookup,
    policy: Policy,
    prefixes: Sequence[str],
    calendar_closed: bool | None,
    found: TicketRef | None,
    suite: SuiteResources | None,
) -> FollowUp | None:
    reread = ref_unverified(tracked.original)
    ref = tracked.ref or found
    if ref is None and not reread:
        return None
    if window_unverified(tracked.original):
        closed = bool(calendar_closed)  # read now, at the change's own time
        answered = "the change calendar answered"
    else:
        # The calendar was read when the change was first judged; its answer stands.
        closed = any(r.verdict is Verdict.OUTSIDE_CHANGE_WINDOW for r in tracked.original.reasons)
        answered = "the ticket source answered"
    if reread:
        answered = "the tags could be read"
    judgement = judge(
        tracked.change,
        ref,
        lookup if ref else None,
        policy,
        suite_role_prefixes=prefixes,
        calendar_closed=closed,
        suite=suite,
    )
    if judgement.verdict is Verdict.UNVERIFIED:
        return None  # still not verifiable (its ticket's approvals unreadable): nothing new to record
    return FollowUp(
        change_id=tracked.change.change_id,
        result=FollowUpResult.REJUDGED,
        previous=tracked.verdict,
        verdict=judgement.verdict,
        severity=judgement.severity,
        detail=f"re-judged once {answered}: {judgement.verdict.value}",
        judgement=judgement,
        alert=judgement.alerts,
    )


def _emergency(tracked: Tracked, lookup: TicketLookup, policy: Policy, now: datetime) -> FollowUp | None:
    change, ticket = tracked.change, lookup.ticket
    ticket_id = tracked.judgement.ticket_id or "the emergency ticket"
    due = retro_approval_due(change, policy)
    required = policy.required_approvals
    independent: set[str] = set()
    if ticket is not None and not ticket.approvals_error and not ticket.withdrawn:
        independent = independent_approvers(change.actor, ticket.approvals, policy.identity_map)
    count = len(independent)
    if (
        ticket is not None
        and count >= required
        and not ticket.withdrawn
        and ticket.approved_in_source is not False  # the ticket system still waits for an approval
    ):
        times = [a.approved_at for a in ticket.approvals if a.approved_at is not None]
        arrived = max(times) if times else now
        late = arrived > due
        return FollowUp(
            change_id=change.change_id,
            result=FollowUpResult.RETRO_APPROVED,
            previous=tracked.verdict,
            verdict=tracked.verdict,
            severity=Severity.INFO,
            detail=(
                f"{ticket_id} approved retroactively by {', '.join(sorted(independent)) or 'nobody required'}"
                f" ({count} of {required}){'; after the deadline' if late else ''}"
            ),
            due=due,
            late=late,
            approvers=tuple(sorted(independent)),
            approvals=count,
            required=required,
        )
    if now > due and FollowUpResult.OVERDUE not in tracked.results:
        state = "does not exist" if ticket is None else f"has {count} of {required} independent approval(s)"
        if ticket is not None and ticket.withdrawn:
            state = f"is {ticket.status.value}"
        elif ticket is not None and ticket.approvals_error:
            state = f"has approvals that could not be read ({ticket.approvals_error})"
        elif ticket is not None and count >= required:
            state = f"is not approved in {ticket.source}"
        return FollowUp(
            change_id=change.change_id,
            result=FollowUpResult.OVERDUE,
            previous=tracked.verdict,
            verdict=tracked.verdict,
            severity=_max_severity(Severity.HIGH, tracked.judgement.severity),
            detail=(
                f"retroactive approval of emergency change {ticket_id} was due by {due.isoformat()}"
                f" ({policy.emergency_approval_hours:g} h after the change); the ticket {state}"
            ),
            due=due,
            approvals=count,
            required=required,
            alert=True,
            followed_until=follow_up_ends(change, policy),
        )
    return None
