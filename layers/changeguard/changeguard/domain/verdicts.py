"""Judging a change against its ticket: every reason that applies, and the one verdict that wins."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict

from changeguard.domain.change import ActorKind, Change
from changeguard.domain.identity import independent_approvers, is_self_approved
from changeguard.domain.policy import Policy
from changeguard.domain.self_protection import SuiteResources
from changeguard.domain.tickets import TicketLookup, TicketRef, TicketStatus


class Verdict(StrEnum):
    EXEMPT = "EXEMPT"
    UNVERIFIED = "UNVERIFIED"
    NO_TICKET = "NO_TICKET"
    UNKNOWN_TICKET = "UNKNOWN_TICKET"
    SELF_APPROVED = "SELF_APPROVED"
    NOT_APPROVED = "NOT_APPROVED"
    INCOMPLETE_TICKET = "INCOMPLETE_TICKET"
    OUTSIDE_TICKET_WINDOW = "OUTSIDE_TICKET_WINDOW"
    OUTSIDE_CHANGE_WINDOW = "OUTSIDE_CHANGE_WINDOW"
    OUT_OF_SCOPE = "OUT_OF_SCOPE"
    EMERGENCY = "EMERGENCY"
    AUTHORIZED = "AUTHORIZED"


#: How a reason says the change window could not be checked (the change calendar was unreadable):
#: the follow-up reads the calendar at the change's time once it answers, and judges again.
WINDOW_UNVERIFIED = "change window unverified"
#: How a reason says the ticket was read but its approvals could not be (Jira's approval API
#: answered 404): a matter of that ticket, not an outage of the ticket source. The follow-up
#: judges the change again once they can be read.
APPROVALS_UNVERIFIED = "approvals unverified"
#: How a reason says no ticket reference was found but a resource's or stack's tags could not be
#: read (refused, throttled): not "no ticket", and no outage of the ticket source. The follow-up
#: reads the tags again and judges the change once they answer.
REF_UNVERIFIED = "ticket reference unverified"
#: How a reason says the source answered but the ticket itself could not be read (a hand-edited
#: status, an unreadable time): that ticket's matter, no outage. Judged again once it is fixed.
TICKET_UNREADABLE = "ticket unreadable"

# The winning verdict is the first that applies, in this order.
PRECEDENCE: tuple[Verdict, ...] = tuple(Verdict)
NOT_A_CHANGE = "NOT_A_CHANGE"


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


_SEVERITY_ORDER = list(Severity)


class Reason(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    verdict: Verdict
    detail: str


class Judgement(BaseModel):
    """The decision for one change: what the ledger records and the alert explains."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    verdict: Verdict
    reasons: tuple[Reason, ...]
    severity: Severity
    ticket_id: str | None = None
    ticket_ref_source: str | None = None
    retro_approval_due: datetime | None = None
    control_tampering: bool = False

    @property
    def alerts(self) -> bool:
        """Alert on every verdict but AUTHORIZED/EXEMPT, and on tampering or root use whatever the verdict."""
        if self.control_tampering or self.severity is Severity.CRITICAL:
            return True
        return self.verdict not in (Verdict.AUTHORIZED, Verdict.EXEMPT)


# Calls that switch off the controls ChangeGuard depends on.
CONTROL_TAMPERING: frozenset[tuple[str, str]] = frozenset(
    {
        ("cloudtrail", "StopLogging"),
        ("cloudtrail", "DeleteTrail"),
        ("cloudtrail", "UpdateTrail"),
        ("cloudtrail", "PutEventSelectors"),
        ("config", "StopConfigurationRecorder"),
        ("config", "DeleteConfigurationRecorder"),
        ("config", "DeleteDeliveryChannel"),
        ("guardduty", "DeleteDetector"),
        ("guardduty", "DisassociateFromMasterAccount"),
        ("securityhub", "DisableSecurityHub"),
    }
)
_SENSITIVE_SERVICES = frozenset({"iam", "kms", "cloudtrail", "config", "guardduty", "organizations", "sts"})


def is_exempt(change: Change, policy: Policy, suite_role_prefixes: Iterable[str]) -> str | None:
    """Why the actor is exempt, or None. Root is never exempt."""
    actor = change.actor
    if actor.kind is ActorKind.ROOT:
        return None
    if actor.kind is ActorKind.AWS_SERVICE:
        return f"AWS service {actor.invoked_by or actor.arn or ''}".strip()
    for arn in actor.principal_arns:
        if ":role/aws-service-role/" in arn:
            return f"service-linked role {arn}"
        for prefix in suite_role_prefixes:
            if prefix and arn.startswith(prefix):
                return f"ChangeGuard's own role {arn}"
        for pattern in policy.exempt_principal_arns:
            if fnmatchcase(arn, pattern):
                return f"exempt principal {arn} (matches {pattern})"
    return None


def _in_scope(change: Change, affected: Iterable[str]) -> bool:
    wanted = list(affected)
    if not wanted:
        return True
    for arn in change.resources:
        for item in wanted:
            if fnmatchcase(arn, item) or arn == item or arn.endswith(("/" + item, ":" + item)):
                return True
    return False


def severity_for(change: Change, verdict: Verdict, tampering: bool) -> Severity:
    if tampering or change.actor.kind is ActorKind.ROOT:
        return Severity.CRITICAL
    if change.service == "iam" and verdict in (Verdict.NO_TICKET, Verdict.UNKNOWN_TICKET):
        return Severity.CRITICAL
    base = {
        Verdict.NO_TICKET: Severity.HIGH,
        Verdict.UNKNOWN_TICKET: Severity.HIGH,
        Verdict.SELF_APPROVED: Severity.HIGH,
        Verdict.NOT_APPROVED: Severity.HIGH,
        Verdict.INCOMPLETE_TICKET: Severity.MEDIUM,
        Verdict.OUTSIDE_TICKET_WINDOW: Severity.MEDIUM,
        Verdict.OUTSIDE_CHANGE_WINDOW: Severity.HIGH,
        Verdict.OUT_OF_SCOPE: Severity.MEDIUM,
        Verdict.UNVERIFIED: Severity.MEDIUM,
        Verdict.EMERGENCY: Severity.LOW,
        Verdict.AUTHORIZED: Severity.INFO,
        Verdict.EXEMPT: Severity.INFO,
    }[verdict]
    if change.service in _SENSITIVE_SERVICES and base in (Severity.MEDIUM, Severity.HIGH):
        return _SEVERITY_ORDER[_SEVERITY_ORDER.index(base) - 1]
    return base


def judge(
    change: Change,
    ref: TicketRef | None,
    lookup: TicketLookup | None,
    policy: Policy,
    *,
    suite_role_prefixes: Iterable[str] = (),
    calendar_closed: bool | None = None,
    calendar_error: str | None = None,
    suite: SuiteResources | None = None,
    ref_error: str | None = None,
) -> Judgement:
    """Every reason that applies to ``change``, and the winning verdict by ``PRECEDENCE``.

    Judged at the change's own time: the ticket window and the calendar are checked
    against ``change.event_time``, never against the clock at processing. A change to the
    suite's own resources (``suite``) is control tampering, whoever makes it (issue 8).
    ``ref_error`` says which tag read failed when no ticket reference was found.
    """
    reasons: list[Reason] = []
    altered = suite.altered_by(change) if suite is not None else ()
    tampering = (change.service, change.action) in CONTROL_TAMPERING or bool(altered)
    exempt = is_exempt(change, policy, suite_role_prefixes)
    if exempt:
        reasons.append(Reason(verdict=Verdict.EXEMPT, detail=exempt))
    retro_due: datetime | None = None
    approvals_unread: str | None = None
    ticket = lookup.ticket if lookup else None
    if exempt and lookup is None:
        pass  # exempt principals are not asked for a ticket
    elif ref is None and ref_error:
        reasons.append(Reason(verdict=Verdict.UNVERIFIED, detail=f"{REF_UNVERIFIED}: {ref_error}"))
    elif ref is None:
        reasons.append(Reason(verdict=Verdict.NO_TICKET, detail="no change ticket reference found"))
    elif lookup is not None and lookup.unavailable and lookup.unreadable:
        detail = f"{TICKET_UNREADABLE}: {ref.ticket_id}: {lookup.error or 'unreadable'}"
        reasons.append(Reason(verdict=Verdict.UNVERIFIED, detail=detail))
    elif lookup is None or lookup.unavailable:
        detail = lookup.error if lookup and lookup.error else "ticket source unreachable"
        reasons.append(Reason(verdict=Verdict.UNVERIFIED, detail=f"{ref.ticket_id}: {detail}"))
    elif ticket is None:
        reasons.append(
            Reason(
                verdict=Verdict.UNKNOWN_TICKET,
                detail=(
                    f"{ref.ticket_id} does not exist in the ticket source, or ChangeGuard's account there"
                    " may not see it (Jira answers both alike)"
                ),
            )
        )
    else:
        mapping = policy.identity_map
        if is_self_approved(change.actor, ticket.approvals, mapping):
            reasons.append(
                Reason(
                    verdict=Verdict.SELF_APPROVED,
                    detail=f"{change.actor.display} approved their own change {ticket.ticket_id}",
                )
            )
        # Every identity of every approver (vendor aliases included) is compared with the actor.
        # Only approvals given by the change's own time approve it in advance: one given later (seen
        # by a late delivery, the follow-up's re-judgement or the reconcile sweep) is after the fact,
        # and one without a time cannot be shown to precede the change, so neither counts. Emergency
        # tickets are approved retroactively: the follow-up counts their approvals whenever they come.
        # A self-approval above is checked on every approval, whenever given: it is still one.
        prior = tuple(a for a in ticket.approvals if a.approved_at is not None and a.approved_at <= change.event_time)
        independent = independent_approvers(change.actor, prior, mapping)
        if ticket.status is TicketStatus.CLOSED and (ticket.closed_at is None or change.event_time > ticket.closed_at):
            # A closed ticket covered the work done while it was open, not what comes after it.
            when = (
                f"was closed at {ticket.closed_at.isoformat()}, before the change"
                if ticket.closed_at
                else "is closed and its close time is unknown"
            )
            reasons.append(
                Reason(
                    verdict=Verdict.NOT_APPROVED,
                    detail=f"{ticket.ticket_id} {when}: a closed ticket authorizes no later change",
                )
            )
        withdrawn = ticket.withdrawn
        if withdrawn:
            reasons.append(Reason(verdict=Verdict.NOT_APPROVED, detail=f"{ticket.ticket_id} is {ticket.status}"))
        elif not ticket.is_emergency and ticket.approvals_error:
            approvals_unread = ticket.approvals_error  # unknown, not missing: decided below
        elif not ticket.is_emergency and ticket.approved_in_source is False:
            # Its approvers' "approved" is not the ticket's: the ticket system still waits for an
            # approval (a CAB member, a further step), or was never asked for one.
            reasons.append(
                Reason(
                    verdict=Verdict.NOT_APPROVED,
                    detail=f"{ticket.ticket_id} is not approved in {ticket.source} (ticket status {ticket.status})",
                )
            )
        if (
            not withdrawn
            and not ticket.is_emergency
            and not ticket.approvals_error
            and len(independent) < policy.required_approvals
        ):
            late = sum(1 for a in ticket.approvals if a.approved_at is not None and a.approved_at > change.event_time)
            untimed = sum(1 for a in ticket.approvals if a.approved_at is None)
            uncounted = [f"{late} given after the change"] if late else []
            uncounted += [f"{untimed} without a time"] if untimed else []
            reasons.append(
                Reason(
                    verdict=Verdict.NOT_APPROVED,
                    detail=(
                        f"{ticket.ticket_id} has {len(independent)} independent approval(s) before the change;"
                        f" {policy.required_approvals} required"
                        + (f" ({' and '.join(uncounted)} not counted)" if uncounted else "")
                    ),
                )
            )
        missing = [
            name
            for name, value in (
                ("test evidence", ticket.test_evidence),
                ("rollback plan", ticket.rollback_plan),
            )
            if not (value and value.strip())
        ]
        if missing and not ticket.is_emergency:
            reasons.append(
                Reason(
                    verdict=Verdict.INCOMPLETE_TICKET,
                    detail=f"{ticket.ticket_id} has no {' and no '.join(missing)}",
                )
            )
        start, end = ticket.window_start, ticket.window_end
        if (start and change.event_time < start) or (end and change.event_time > end):
            reasons.append(
                Reason(
                    verdict=Verdict.OUTSIDE_TICKET_WINDOW,
                    detail=(
                        f"change at {change.event_time.isoformat()} is outside {ticket.ticket_id}'s window"
                        f" {start.isoformat() if start else '-'} .. {end.isoformat() if end else '-'}"
                    ),
                )
            )
        if not _in_scope(change, ticket.affected_resources):
            reasons.append(
                Reason(
                    verdict=Verdict.OUT_OF_SCOPE,
                    detail=f"{', '.join(change.resources) or 'the resource'} is not listed on {ticket.ticket_id}",
                )
            )
        if ticket.is_emergency:
            retro_due = change.event_time + timedelta(hours=policy.emergency_approval_hours)
            reasons.append(
                Reason(
                    verdict=Verdict.EMERGENCY,
                    detail=(
                        f"emergency change under {ticket.ticket_id}; retroactive approval"
                        f" ({policy.required_approvals}) due by {retro_due.isoformat()}"
                    ),
                )
            )
    if calendar_closed and not (ticket and ticket.is_emergency):
        reasons.append(
            Reason(
                verdict=Verdict.OUTSIDE_CHANGE_WINDOW,
                detail="the change calendar was CLOSED at the time of the change",
            )
        )
    applied = {r.verdict for r in reasons}
    # Approvals that could not be read hold back, as an unreadable calendar does below, only what
    # would otherwise be authorized: a violation found without them is one whatever they say.
    if approvals_unread and applied <= {Verdict.UNVERIFIED}:
        reasons.append(Reason(verdict=Verdict.UNVERIFIED, detail=f"{APPROVALS_UNVERIFIED}: {approvals_unread}"))
        applied.add(Verdict.UNVERIFIED)
    # An unreadable calendar (``calendar_error``) leaves the window unknown. It holds back only what
    # would otherwise be authorized (or is UNVERIFIED already): a violation found without the
    # calendar is a violation whatever the calendar says, and keeps its alert. An emergency change
    # needs no window.
    emergency = bool(ticket and ticket.is_emergency)
    if calendar_error and calendar_closed is None and not emergency and applied <= {Verdict.UNVERIFIED}:
        reasons.append(Reason(verdict=Verdict.UNVERIFIED, detail=f"{WINDOW_UNVERIFIED}: {calendar_error}"))
        applied.add(Verdict.UNVERIFIED)
    verdict = next((v for v in PRECEDENCE if v in applied), Verdict.AUTHORIZED)
    if approvals_unread and verdict is not Verdict.UNVERIFIED:
        reasons.append(Reason(verdict=verdict, detail=f"{APPROVALS_UNVERIFIED}: {approvals_unread}"))
    if verdict is Verdict.AUTHORIZED:
        reasons.append(
            Reason(
                verdict=Verdict.AUTHORIZED,
                detail=f"{ticket.ticket_id if ticket else ''} approved and in scope",
            )
        )
    if altered:
        reasons.append(
            Reason(
                verdict=verdict,
                detail=f"{change.service}:{change.action} changes ChangeGuard itself ({', '.join(altered)})",
            )
        )
    elif tampering:
        reasons.append(
            Reason(verdict=verdict, detail=f"{change.service}:{change.action} switches off a security control")
        )
    return Judgement(
        verdict=verdict,
        reasons=tuple(reasons),
        severity=severity_for(change, verdict, tampering),
        ticket_id=ref.ticket_id if ref else None,
        ticket_ref_source=ref.found_in.value if ref else None,
        retro_approval_due=retro_due,
        control_tampering=tampering,
    )


def _unverified(judgement: Judgement, because: str | tuple[str, ...], *, only: bool = True) -> bool:
    """Whether an UNVERIFIED reason of ``judgement`` starts with ``because`` (``only=False``: with none of it)."""
    return any(r.verdict is Verdict.UNVERIFIED and r.detail.startswith(because) is only for r in judgement.reasons)


def window_unverified(judgement: Judgement) -> bool:
    """Whether ``judgement`` was made without the change calendar (it could not be read)."""
    return _unverified(judgement, WINDOW_UNVERIFIED)


def ticket_unverified(judgement: Judgement) -> bool:
    """Whether ``judgement`` was made without the ticket (its source could not be read)."""
    return _unverified(judgement, _NOT_THE_SOURCE, only=False)


def ref_unverified(judgement: Judgement) -> bool:
    """Whether ``judgement`` was made without a ticket reference because tags could not be read."""
    return _unverified(judgement, REF_UNVERIFIED)


def unverified_alone(judgement: Judgement) -> bool:
    """Whether ``judgement`` is UNVERIFIED for a reason of its own change (its ticket's approvals or
    its tags could not be read), which no outage's degraded alert covers: the change alerts by itself."""
    return _unverified(judgement, _CHANGE_ALONE)


# UNVERIFIED reasons that are not the ticket source's outage, and those of the change alone.
_CHANGE_ALONE: tuple[str, ...] = (APPROVALS_UNVERIFIED, REF_UNVERIFIED, TICKET_UNREADABLE)
_NOT_THE_SOURCE: tuple[str, ...] = (WINDOW_UNVERIFIED, *_CHANGE_ALONE)
