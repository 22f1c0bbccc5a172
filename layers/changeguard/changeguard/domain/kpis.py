"""Change-management KPIs from the ledger: the population, the arithmetic, the targets.

Pure: entries in, numbers out. No clock, no AWS. What is counted, and from which entries
------------------------------------------------------------------------------------------
*Changes* are ledger entries of kind ``VERDICT`` whose ``event_time`` (the time of the
change, not of its processing) falls in the period. A later ``RECHECK`` entry of the same
change replaces the verdict (the latest by ``recorded_at`` wins); the first verdict is kept
for the record. ``body.change`` is the normalized change and ``body.judgement`` the decision.

*Governed changes* are changes whose verdict is not ``EXEMPT`` (AWS services, service-linked
roles, pipeline roles with their own approval gate): every percentage about changes uses
governed changes as its denominator, so exempt automation neither dilutes nor inflates it.

*Unauthorized changes* are governed changes whose verdict is anything but ``AUTHORIZED``,
``EMERGENCY`` (authorized under the emergency procedure, retro-approval pending) and
``UNVERIFIED`` (the ticket source was down: pending, listed separately). A verdict this code
does not know counts as unauthorized, so a new verdict can only make the count stricter.

*Deployments* are ``DEPLOYMENT`` entries grouped by ``body.deployment_id``. A deployment is
counted in the period in which it *finished* (``body.finished_at``): its outcome is known then,
and a deployment that spans a period boundary is counted once, in the later period, never in
both. Those still running at the end of the period are reported as in flight, not counted.
A deployment *failed* when its final ``body.state`` is FAILURE or STOP, or it was rolled back
or stopped (``body.rolled_back``, or a ``ROLLBACK``/``STOP`` entry naming it in
``body.deployment_id`` or filed under the same change id as its ``DEPLOYMENT`` entries). Its final
state is the highest-ranking one recorded (failed, then succeeded, then unfinished), not the last:
events arrive in no order. A report reads the ``ROLLBACK`` and ``STOP`` entries of the day after the
period too (:data:`DEPLOYMENT_LOOKAHEAD`): a release that finished late on the last day is rolled
back in its bake window on the next.
Rollback deployments themselves (``body.rollback_of`` set: CodeDeploy rolls back by deploying
the last good revision under a new id) are not counted: they are the remedy, not a change.
Nor are deployments that are not releases (``body.not_release``, or a ``body.creator`` that
EC2 Auto Scaling or CodeDeploy's auto-update stands for): they put the group's current revision
on new or outdated instances, so a failed one is an instance that did not come up, not a failed
change. They are listed apart.

*Change failure rate* = failed deployments / deployments. Its denominator is deployments, not
incidents (a miscount DORA tools are known for). *Change success rate* = 100 % - that.
*Rollback rate* = rolled-back deployments / deployments. *Mean time to deploy* = mean of
``finished_at - started_at`` over successful deployments.

*Approval lead time* (approval -> change): for each governed change with a ticket, the time
from the last approval given at or before the change to the change. The approvals come from
``body.ticket`` of the verdict (a snapshot at judgement time) when present, else from the
ticket source. Retroactive approvals (after the change) do not count.

*Tag compliance* = governed changes that touched at least one resource and were not marked
non-compliant / governed changes that touched at least one resource. A change is marked
non-compliant by a ``MARK`` or ``QUARANTINE`` entry under its ``change_id`` (or naming it in
``body.change_id``). Its ``quarantined`` flag says the resource was contained (a ``#contained``
or ``#recontained-`` fact); a quarantine's intent, its ``#failed`` fact and an observe-mode report
flag it ``marked`` only.

Entries of kinds this module does not count (CALENDAR, OUTAGE, DIGEST, and any added later)
are ignored, except that every in-period entry is counted by kind in ``activity``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from statistics import fmean
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from changeguard.domain.deployments import not_a_release
from changeguard.domain.errors import ChangeGuardError
from changeguard.domain.kpi_targets import COMPARISONS as COMPARISONS  # re-exported
from changeguard.domain.kpi_targets import Comparison as Comparison
from changeguard.domain.kpi_targets import KpiTargets as KpiTargets
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.quarantine import CONTAINED, RECONTAINED, quarantine_step
from changeguard.domain.tickets import Ticket
from changeguard.domain.verdicts import Verdict

# -- verdict classes -----------------------------------------------------------------------------
NOT_GOVERNED = frozenset({Verdict.EXEMPT.value})
NOT_UNAUTHORIZED = frozenset(
    {Verdict.AUTHORIZED.value, Verdict.EXEMPT.value, Verdict.EMERGENCY.value, Verdict.UNVERIFIED.value}
)
WITHOUT_TICKET = frozenset({Verdict.NO_TICKET.value, Verdict.UNKNOWN_TICKET.value})
FAILED_STATES = frozenset({"FAILURE", "FAILED", "STOP", "STOPPED"})
SUCCEEDED_STATES = frozenset({"SUCCESS", "SUCCEEDED"})
NON_COMPLIANT_KINDS = frozenset({EntryKind.MARK, EntryKind.QUARANTINE})
#: How far before the period a report reads, so a deployment that finished in the period
#: but started before it still has its start entry.
DEPLOYMENT_LOOKBACK = timedelta(days=2)
#: How far after the period a report reads, for the ``ROLLBACK`` and ``STOP`` entries only
#: (:func:`after_the_period`): the guard rolls back a release whose alarm fires in its bake window,
#: and files that after the release finished, so a release that finished late on the period's last
#: day is rolled back (its entries filed) on the next day. Nothing else of that day is read.
#: The scheduled reports run after the period (template.yaml; EventBridge schedules are in UTC:
#: weekly Monday 05:00, monthly the 1st 05:30, quarterly the 3rd 06:00), so they see at least that
#: day's first 5 hours, well past the default 30-minute bake window; a report run later sees the day.
DEPLOYMENT_LOOKAHEAD = timedelta(days=1)
#: The longest custom period. A SOC 2 Type II period is at most 12 months (366 days); 400 leaves a few
#: weeks either side. A report reads each day's shards one by one, so a range of centuries would run
#: queries until the function times out, and be retried twice.
MAX_CUSTOM_DAYS = 400
#: The days a period may cover. Python's dates run from year 1 to 9999, and a report computes dates
#: around its period (DEPLOYMENT_LOOKBACK before it, the week of each day, when each day's digest
#: falls due after it): a year's margin at either end keeps all of it in range.
FIRST_DAY = date(2, 1, 1)
LAST_DAY = date(9998, 12, 31)


class PeriodError(ChangeGuardError, ValueError):
    """A period that cannot be parsed or is empty."""


class PeriodKind(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    CUSTOM = "custom"


class _Own(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$", re.IGNORECASE)
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$", re.IGNORECASE)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_YEAR = re.compile(r"^(\d{4})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def _check_days(first: date, days: int = 1) -> None:
    """``PeriodError`` unless the ``days`` days from ``first`` lie from :data:`FIRST_DAY` to :data:`LAST_DAY`.

    Near the ends of Python's dates the arithmetic of a period (its end, a report's look-back) raises
    OverflowError, which is no ValueError: it would escape as a traceback, not as a typed rejection.
    """
    if first < FIRST_DAY or first > LAST_DAY - timedelta(days=days - 1):
        raise PeriodError(f"a period of {days} day(s) from {first} is not within {FIRST_DAY}..{LAST_DAY}")


class Period(_Own):
    """A half-open range of UTC days ``[start, end)`` with a label (``2026-Q3``, ``2026-W47``)."""

    label: str
    kind: PeriodKind
    start: date
    end: date

    @classmethod
    def parse(cls, text: str) -> Period:
        """``2026-Q3``, ``2026-11``, ``2026-W47``, ``2026``, ``2026-11-21`` or ``2026-11-01..2026-11-30`` (inclusive)."""
        value = text.strip()
        try:
            if m := _QUARTER.match(value):
                year, quarter = int(m.group(1)), int(m.group(2))
                start = date(year, 3 * quarter - 2, 1)
                return cls._of(f"{year}-Q{quarter}", PeriodKind.QUARTER, start, _month_start(year, 3 * quarter + 1))
            if m := _WEEK.match(value):
                week = cls.week_of(date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1))
                _check_days(week.start, 7)
                return week
            if m := _MONTH.match(value):
                year, month = int(m.group(1)), int(m.group(2))
                start = date(year, month, 1)
                return cls._of(value, PeriodKind.MONTH, start, _month_start(year, month + 1))
            if m := _YEAR.match(value):
                year = int(m.group(1))
                return cls._of(value, PeriodKind.YEAR, date(year, 1, 1), date(year + 1, 1, 1))
            if m := _RANGE.match(value):
                return cls.between(date.fromisoformat(m.group(1)), date.fromisoformat(m.group(2)))
            day = date.fromisoformat(value)
        except PeriodError:
            raise
        except ValueError as exc:
            raise PeriodError(f"not a period: {text!r} ({exc})") from exc
        _check_days(day)
        return cls(label=day.isoformat(), kind=PeriodKind.DAY, start=day, end=day + timedelta(days=1))

    @classmethod
    def _of(cls, label: str, kind: PeriodKind, start: date, end: date) -> Period:
        _check_days(start, (end - start).days)
        return cls(label=label, kind=kind, start=start, end=end)

    @classmethod
    def between(cls, first: date, last: date) -> Period:
        """From ``first`` to ``last``, both days included, at most :data:`MAX_CUSTOM_DAYS` days."""
        if last < first:
            raise PeriodError(f"the period ends ({last}) before it starts ({first})")
        if (days := (last - first).days + 1) > MAX_CUSTOM_DAYS:
            raise PeriodError(f"the period {first}..{last} is {days} days long: at most {MAX_CUSTOM_DAYS}")
        _check_days(first, days)
        return cls(
            label=f"{first.isoformat()}..{last.isoformat()}",
            kind=PeriodKind.CUSTOM,
            start=first,
            end=last + timedelta(days=1),
        )

    @classmethod
    def week_of(cls, day: date) -> Period:
        year, week, weekday = day.isocalendar()
        start = day - timedelta(days=weekday - 1)  # 0001-01-01 is a Monday: never before it
        try:
            end = start + timedelta(days=7)
        except OverflowError as exc:  # ISO week 52 of 9999 ends in year 10000
            raise PeriodError(f"the week of {day} ends after {date.max}") from exc
        return cls(label=f"{year}-W{week:02d}", kind=PeriodKind.WEEK, start=start, end=end)

    @classmethod
    def previous(cls, kind: PeriodKind, at: datetime) -> Period:
        """The last complete week, month or quarter before ``at`` (what a schedule reports on)."""
        today = at.astimezone(UTC).date()
        try:
            period = cls._previous(kind, today)
        except OverflowError as exc:  # the period before one in year 1 is no date
            raise PeriodError(f"no {kind} period before {today}") from exc
        _check_days(period.start, (period.end - period.start).days)
        return period

    @classmethod
    def _previous(cls, kind: PeriodKind, today: date) -> Period:
        if kind is PeriodKind.WEEK:
            return cls.week_of(today - timedelta(days=today.isoweekday()))
        if kind is PeriodKind.MONTH:
            last = today.replace(day=1) - timedelta(days=1)
            return cls.parse(f"{last.year}-{last.month:02d}")
        if kind is PeriodKind.QUARTER:
            first_month = 3 * ((today.month - 1) // 3) + 1
            last = date(today.year, first_month, 1) - timedelta(days=1)
            return cls.parse(f"{last.year}-Q{(last.month - 1) // 3 + 1}")
        if kind is PeriodKind.DAY:
            return cls.parse((today - timedelta(days=1)).isoformat())
        raise PeriodError(f"no previous {kind} period")

    @property
    def start_at(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end_at(self) -> datetime:
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC)

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def describe(self) -> str:
        return f"{self.start.isoformat()} .. {self.last_day.isoformat()}"

    def contains(self, when: datetime | None) -> bool:
        return when is not None and self.start_at <= when < self.end_at

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days)]

    def weeks(self) -> list[Period]:
        """ISO weeks (Monday first) overlapping the period, clipped to it."""
        out: list[Period] = []
        cursor = self.start
        while cursor < self.end:
            week = Period.week_of(cursor)
            out.append(week.model_copy(update={"start": max(week.start, self.start), "end": min(week.end, self.end)}))
            cursor = week.end
        return out


LABELS: Mapping[str, str] = {
    "change_success_rate": "Change success rate",
    "change_failure_rate": "Change failure rate (of deployments)",
    "emergency_changes_pct": "Emergency changes",
    "rollback_rate": "Rollback rate",
    "changes_with_tickets_pct": "Changes with tickets",
    "unauthorized_changes": "Unauthorized changes",
    "approval_lead_time_hours": "Average approval lead time",
    "mean_time_to_deploy_minutes": "Mean time to deploy",
    "tag_compliance_pct": "Tag compliance",
}


def _meets(value: float, comparison: Comparison, target: float) -> bool:
    if comparison == ">":
        return value > target
    if comparison == ">=":
        return value >= target
    if comparison == "<":
        return value < target
    return value <= target


class Kpi(_Own):
    """One KPI: its value, how it was computed (numerator/denominator) and whether it met its target."""

    name: str
    label: str
    value: float | None
    unit: Literal["%", "h", "min", "count"]
    target: float | None = None
    comparison: Comparison | None = None
    met: bool | None = None
    numerator: float | None = None
    denominator: int | None = None
    note: str = ""

    @property
    def status(self) -> str:
        if self.met is None:
            return "no data" if self.value is None else "info"
        return "met" if self.met else "MISSED"

    @property
    def display(self) -> str:
        return format_value(self.value, self.unit)

    @property
    def target_display(self) -> str:
        if self.target is None or self.comparison is None:
            return "-"
        return f"{self.comparison} {format_value(self.target, self.unit)}"


def format_value(value: float | None, unit: str) -> str:
    """How reports print a KPI value: one decimal, the unit attached."""
    if value is None:
        return "n/a"
    if unit == "count":
        return str(round(value))
    if unit == "%":
        return f"{value:.1f}%"
    return f"{value:.1f} {unit}"


def round1(value: float | None) -> float | None:
    """The rounding every rendering uses (so the browser and the CSV can be compared)."""
    return None if value is None else round(value + 0.0, 1)


# -- the population ------------------------------------------------------------------------------
class ApprovalView(_Own):
    approver: str
    approved_at: datetime | None = None


class ChangeRecord(_Own):
    """One change as the evidence pack lists it: the population auditors sample from."""

    change_id: str
    event_time: datetime
    recorded_at: datetime
    account: str | None = None
    region: str | None = None
    source: str | None = None
    service: str | None = None
    action: str | None = None
    resources: tuple[str, ...] = ()
    actor: str | None = None
    actor_kind: str | None = None
    console: bool = False
    automation: bool = False
    verdict: str
    first_verdict: str
    severity: str | None = None
    reasons: tuple[str, ...] = ()
    ticket_id: str | None = None
    ticket_type: str | None = None
    ticket_status: str | None = None
    ticket_ref_source: str | None = None
    approvals: tuple[ApprovalView, ...] = ()
    approvals_known: bool = False
    retro_approval_due: datetime | None = None
    control_tampering: bool = False
    mode: str | None = None
    emergency: bool = False
    stopped: bool = False
    rolled_back: bool = False
    quarantined: bool = False
    released: bool = False
    marked: bool = False
    alert_ids: tuple[str, ...] = ()
    #: What the emergency follow-up recorded (``retro-approved``, ``overdue``, ``re-judged``, ``expired``:
    #: it stopped with the change still EMERGENCY unapproved or UNVERIFIED; the verdict stays).
    follow_up: tuple[str, ...] = ()
    content_hash: str = ""

    @property
    def governed(self) -> bool:
        return self.verdict not in NOT_GOVERNED

    @property
    def unauthorized(self) -> bool:
        return self.governed and self.verdict not in NOT_UNAUTHORIZED

    @property
    def with_ticket(self) -> bool:
        return bool(self.ticket_id) and self.verdict not in WITHOUT_TICKET

    @property
    def tag_compliant(self) -> bool | None:
        """None when the change touched no resource (nothing to be compliant about)."""
        if not self.resources:
            return None
        return not (self.marked or self.quarantined)

    @property
    def last_approval_before_change(self) -> datetime | None:
        times = [a.approved_at for a in self.approvals if a.approved_at and a.approved_at <= self.event_time]
        return max(times) if times else None

    @property
    def approval_lead_hours(self) -> float | None:
        last = self.last_approval_before_change
        return None if last is None else (self.event_time - last).total_seconds() / 3600


class DeploymentRecord(_Own):
    deployment_id: str
    change_id: str | None = None
    application: str | None = None
    deployment_group: str | None = None
    ticket_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    state: str | None = None
    rolled_back: bool = False
    stopped: bool = False
    rollback_of: str | None = None
    not_release: str | None = None  # why it is not a release (a scale-out), if it is not one
    approvals: tuple[ApprovalView, ...] = ()

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def failed(self) -> bool:
        return self.rolled_back or self.stopped or (self.state or "").upper() in FAILED_STATES

    @property
    def succeeded(self) -> bool:
        return self.finished and not self.failed

    @property
    def duration_minutes(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() / 60


class Population(_Own):
    """Everything a report of one period is computed from."""

    period: Period
    changes: tuple[ChangeRecord, ...] = ()
    deployments: tuple[DeploymentRecord, ...] = ()
    in_flight: tuple[DeploymentRecord, ...] = ()
    rollback_deployments: tuple[DeploymentRecord, ...] = ()
    not_releases: tuple[DeploymentRecord, ...] = ()
    activity: dict[str, int] = Field(default_factory=dict)
    alerts_by_severity: dict[str, int] = Field(default_factory=dict)

    @property
    def governed(self) -> list[ChangeRecord]:
        return [c for c in self.changes if c.governed]

    @property
    def unauthorized(self) -> list[ChangeRecord]:
        return [c for c in self.changes if c.unauthorized]

    @property
    def emergency(self) -> list[ChangeRecord]:
        return [c for c in self.changes if c.governed and c.emergency]

    @property
    def unverified(self) -> list[ChangeRecord]:
        return [c for c in self.changes if c.verdict == Verdict.UNVERIFIED.value]

    @property
    def rolled_back(self) -> list[DeploymentRecord]:
        return [d for d in self.deployments if d.rolled_back]

    @property
    def rolled_back_changes(self) -> list[ChangeRecord]:
        return [c for c in self.changes if c.rolled_back]

    def verdict_counts(self) -> Counter[str]:
        return Counter(c.verdict for c in self.changes)


def _when(value: Any) -> datetime | None:
    """A timestamp from a body field: ISO 8601 (``Z`` allowed) or epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=UTC)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), tz=UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strs(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if v is not None)
    return (str(value),) if value else ()


def _approvals(raw: Any) -> tuple[ApprovalView, ...]:
    out: list[ApprovalView] = []
    for item in raw if isinstance(raw, list | tuple) else ():
        item = _dict(item)
        if item.get("approver"):
            out.append(ApprovalView(approver=str(item["approver"]), approved_at=_when(item.get("approved_at"))))
    return tuple(out)


def _ticket_approvals(ticket: Ticket) -> tuple[ApprovalView, ...]:
    return tuple(ApprovalView(approver=a.approver, approved_at=a.approved_at) for a in ticket.approvals)


def _linked_ids(entry: LedgerEntry) -> set[str]:
    """The changes an action entry is about: its own key and ``body.change_id``/``body.change_ids``."""
    ids = {entry.change_id}
    ids.update(_strs(entry.body.get("change_id")))
    ids.update(_strs(entry.body.get("change_ids")))
    return ids


def _contained(entry: LedgerEntry) -> bool:
    """Whether a QUARANTINE entry says its resource was contained: ``#contained``, ``#recontained-...``,
    or a quarantine recorded before intents existed (no ``step`` in its body). The intent
    (``QUARANTINE#<time>``, written before the calls), ``#failed`` and ``#observe`` do not."""
    step = quarantine_step(entry.entry)
    if step is not None:
        return step == CONTAINED or step.startswith(RECONTAINED)
    return len(entry.entry.split("#")) == 2 and "step" not in entry.body


def _order(entry: LedgerEntry) -> tuple[datetime, datetime, str]:
    return (entry.recorded_at, entry.event_time, entry.entry)


def build_population(
    entries: Iterable[LedgerEntry],
    period: Period,
    tickets: Mapping[str, Ticket] | None = None,
) -> Population:
    """The changes, deployments and activity of ``period`` from ledger entries.

    ``entries`` may hold more than the period (the reader's look-back); only what the module
    docstring defines as belonging to the period is counted. ``tickets`` supplies approvals for
    verdicts that carry no ticket snapshot.
    """
    tickets = tickets or {}
    ordered = sorted(entries, key=_order)
    in_period = [e for e in ordered if period.contains(e.event_time)]

    # Facts about changes, by the change they name.
    facts: dict[str, set[EntryKind]] = {}
    alert_ids: dict[str, list[str]] = {}
    for e in in_period:
        if e.kind in (EntryKind.STOP, EntryKind.ROLLBACK, EntryKind.QUARANTINE, EntryKind.RELEASE, EntryKind.MARK):
            # A quarantine counts once its resource was contained. Its intent, its failure and an
            # observe-mode report say only that the resource was flagged for missing tags.
            kind = EntryKind.MARK if e.kind is EntryKind.QUARANTINE and not _contained(e) else e.kind
            for cid in _linked_ids(e):
                facts.setdefault(cid, set()).add(kind)
        elif e.kind is EntryKind.ALERT:
            alert = _dict(e.body.get("alert"))
            alert_ids.setdefault(e.change_id, []).append(str(alert.get("alert_id") or e.entry))

    # Verdicts: the first VERDICT of a change in the period, superseded by later RECHECKs.
    firsts: dict[str, LedgerEntry] = {}
    latest: dict[str, LedgerEntry] = {}
    for e in ordered:
        if e.kind is EntryKind.VERDICT and e.change_id not in firsts and period.contains(e.event_time):
            firsts[e.change_id] = e
    follow_ups: dict[str, list[str]] = {}
    for e in ordered:
        if e.kind in (EntryKind.VERDICT, EntryKind.RECHECK) and e.change_id in firsts and e.verdict:
            latest[e.change_id] = e
        if e.kind is EntryKind.RECHECK and e.change_id in firsts and e.body.get("result"):
            follow_ups.setdefault(e.change_id, []).append(str(e.body["result"]))

    changes = [
        _change_record(
            first, latest.get(cid, first), facts.get(cid, set()), alert_ids.get(cid, []), tickets
        ).model_copy(update={"follow_up": tuple(follow_ups.get(cid, ()))})
        for cid, first in firsts.items()
    ]
    changes.sort(key=lambda c: (c.event_time, c.change_id))

    deployments, in_flight, rollbacks, not_releases = _deployments(ordered, period, tickets)
    activity = Counter(e.kind.value for e in in_period)
    severities = Counter(e.severity or "unknown" for e in in_period if e.kind is EntryKind.ALERT)
    return Population(
        period=period,
        changes=tuple(changes),
        deployments=tuple(deployments),
        in_flight=tuple(in_flight),
        rollback_deployments=tuple(rollbacks),
        not_releases=tuple(not_releases),
        activity=dict(sorted(activity.items())),
        alerts_by_severity=dict(sorted(severities.items())),
    )


def _change_record(
    first: LedgerEntry,
    latest: LedgerEntry,
    facts: set[EntryKind],
    alert_ids: list[str],
    tickets: Mapping[str, Ticket],
) -> ChangeRecord:
    body = first.body
    change = _dict(body.get("change"))
    judgement = _dict(latest.body.get("judgement")) or _dict(body.get("judgement"))
    actor = _dict(change.get("actor"))
    reasons = tuple(str(_dict(r).get("detail", r)) for r in judgement.get("reasons") or ())
    reason_verdicts = {str(_dict(r).get("verdict")) for r in judgement.get("reasons") or ()}
    ticket_id = latest.ticket_id or first.ticket_id or judgement.get("ticket_id")
    snapshot = _dict(latest.body.get("ticket")) or _dict(body.get("ticket"))
    approvals: tuple[ApprovalView, ...] = ()
    known = False
    ticket_type = snapshot.get("type")
    ticket_status = snapshot.get("status")
    if snapshot:
        approvals, known = _approvals(snapshot.get("approvals")), True
    elif ticket_id and ticket_id in tickets:
        ticket = tickets[ticket_id]
        approvals, known = _ticket_approvals(ticket), True
        ticket_type, ticket_status = ticket.type.value, ticket.status.value
    verdict = str(latest.verdict or first.verdict)
    return ChangeRecord(
        change_id=first.change_id,
        event_time=first.event_time,
        recorded_at=first.recorded_at,
        account=first.account or change.get("account"),
        region=first.region or change.get("region"),
        source=change.get("source"),
        service=change.get("service"),
        action=change.get("action"),
        resources=_strs(change.get("resources")),
        actor=actor.get("arn") or actor.get("invoked_by") or actor.get("user_name"),
        actor_kind=actor.get("kind"),
        console=bool(actor.get("console")),
        automation=bool(actor.get("automation")),
        verdict=verdict,
        first_verdict=str(first.verdict),
        severity=latest.severity or first.severity,
        reasons=reasons,
        ticket_id=ticket_id,
        ticket_type=str(ticket_type) if ticket_type else None,
        ticket_status=str(ticket_status) if ticket_status else None,
        ticket_ref_source=judgement.get("ticket_ref_source"),
        approvals=approvals,
        approvals_known=known,
        retro_approval_due=_when(judgement.get("retro_approval_due")),
        control_tampering=bool(judgement.get("control_tampering")),
        mode=body.get("mode"),
        emergency=verdict == Verdict.EMERGENCY.value
        or Verdict.EMERGENCY.value in reason_verdicts
        or ticket_type == "emergency",
        stopped=EntryKind.STOP in facts,
        rolled_back=EntryKind.ROLLBACK in facts,
        quarantined=EntryKind.QUARANTINE in facts,
        released=EntryKind.RELEASE in facts,
        marked=EntryKind.MARK in facts,
        alert_ids=tuple(alert_ids),
        content_hash=first.content_hash(),
    )


def _state_rank(state: str | None) -> int:
    """How far a deployment state outranks another for the deployment's final state.

    EventBridge delivers in no order and may deliver twice, so a START (or READY) retried after
    the FAILURE must not turn the failed deployment back into an unfinished one, nor a duplicate
    flip one final state into another: a later entry replaces the state only if it ranks as high.
    A deployment ends once (``StopDeployment`` on a finished one raises
    ``DeploymentAlreadyCompletedException``), so a failed and a successful state of one deployment
    mean one of them is wrong; the failure wins, because a report that hides a failure misleads the
    auditor and one that shows a doubtful failure only makes someone look."""
    if state in FAILED_STATES:
        return 2
    if state in SUCCEEDED_STATES:
        return 1
    return 0


def _deployments(
    ordered: Sequence[LedgerEntry], period: Period, tickets: Mapping[str, Ticket]
) -> tuple[list[DeploymentRecord], list[DeploymentRecord], list[DeploymentRecord], list[DeploymentRecord]]:
    """Counted (finished in the period), in flight at its end, rollback deployments and deployments
    that are not releases (finished in the period), each sorted by time."""
    merged: dict[str, dict[str, Any]] = {}
    by_change: dict[str, str] = {}  # a deployment's ledger change id -> its deployment id
    for e in ordered:
        body = e.body
        if e.kind is EntryKind.DEPLOYMENT:
            did = str(body.get("deployment_id") or e.change_id)
            by_change.setdefault(e.change_id, did)
            d = merged.setdefault(did, {"deployment_id": did})
            d.setdefault("change_id", e.change_id)
            for name in ("application", "deployment_group", "rollback_of"):
                if body.get(name):
                    d[name] = str(body[name])
            if e.ticket_id or body.get("ticket_id"):
                d["ticket_id"] = e.ticket_id or str(body["ticket_id"])
            started = _when(body.get("started_at"))
            if started and (d.get("started_at") is None or started < d["started_at"]):
                d["started_at"] = started
            state = str(body.get("state") or "").upper() or None
            if state and _state_rank(state) >= _state_rank(d.get("state")):
                d["state"] = state
            finished = _when(body.get("finished_at"))
            if finished is None and state in FAILED_STATES | SUCCEEDED_STATES:
                finished = e.event_time
            if finished and (d.get("finished_at") is None or finished > d["finished_at"]):
                d["finished_at"] = finished
            if body.get("rolled_back") is True:
                d["rolled_back"] = True
            not_release = body.get("not_release") or not_a_release(str(body.get("creator") or "") or None)
            if not_release:
                d["not_release"] = str(not_release)
    for e in ordered:
        # A stop or rollback names its deployment in ``body.deployment_id``, or is filed under the
        # deployment's change id. A ROLLBACK with ``body.rollback_of`` marks a redeployment as the
        # rollback of that deployment. Entries naming neither (bookkeeping) are not about one.
        if e.kind not in (EntryKind.ROLLBACK, EntryKind.STOP):
            continue
        rollback_of = e.body.get("rollback_of")
        if e.kind is EntryKind.ROLLBACK and rollback_of:
            if str(rollback_of) in merged:
                merged[str(rollback_of)]["rolled_back"] = True
            redeploy = merged.get(by_change.get(e.change_id, e.change_id))
            if redeploy is not None:
                redeploy.setdefault("rollback_of", str(rollback_of))
            continue
        named = e.body.get("deployment_id") or by_change.get(e.change_id)
        if named:
            target = merged.setdefault(str(named), {"deployment_id": str(named)})
            target["rolled_back" if e.kind is EntryKind.ROLLBACK else "stopped"] = True
    for d in list(merged.values()):
        # CodeDeploy rolls back by deploying the last good revision under a new id.
        original = merged.get(str(d.get("rollback_of") or ""))
        if original is not None:
            original["rolled_back"] = True
    counted: list[DeploymentRecord] = []
    in_flight: list[DeploymentRecord] = []
    rollbacks: list[DeploymentRecord] = []
    not_releases: list[DeploymentRecord] = []
    for d in merged.values():
        ticket = tickets.get(str(d.get("ticket_id"))) if d.get("ticket_id") else None
        record = DeploymentRecord(**d, approvals=_ticket_approvals(ticket) if ticket else ())
        if record.finished and period.contains(record.finished_at):
            if record.rollback_of:
                rollbacks.append(record)
            else:
                (not_releases if record.not_release else counted).append(record)
        elif (
            not record.rollback_of
            and not record.not_release
            and record.started_at is not None
            and record.started_at < period.end_at
            and (record.finished_at is None or record.finished_at >= period.end_at)
        ):
            in_flight.append(record)

    def key(d: DeploymentRecord) -> tuple[datetime, str]:
        return (d.finished_at or d.started_at or period.start_at, d.deployment_id)

    return (
        sorted(counted, key=key),
        sorted(in_flight, key=key),
        sorted(rollbacks, key=key),
        sorted(not_releases, key=key),
    )


# -- the arithmetic ------------------------------------------------------------------------------
def _pct(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else 100.0 * numerator / denominator


def _kpi(
    name: str,
    unit: Literal["%", "h", "min", "count"],
    value: float | None,
    targets: KpiTargets | None,
    *,
    numerator: float | None = None,
    denominator: int | None = None,
    note: str = "",
) -> Kpi:
    target: float | None = float(getattr(targets, name)) if targets is not None and name in COMPARISONS else None
    comparison = COMPARISONS.get(name) if target is not None else None
    met = None if value is None or target is None or comparison is None else _meets(value, comparison, target)
    return Kpi(
        name=name,
        label=LABELS[name],
        value=value,
        unit=unit,
        target=target,
        comparison=comparison,
        met=met,
        numerator=numerator,
        denominator=denominator,
        note=note,
    )


def compute_kpis(population: Population, targets: KpiTargets | None = None) -> tuple[Kpi, ...]:
    """The KPI table of a population, each KPI compared with its target."""
    targets = targets or KpiTargets()
    governed = population.governed
    deployments = population.deployments
    failed = [d for d in deployments if d.failed]
    rolled_back = [d for d in deployments if d.rolled_back]
    succeeded = [d for d in deployments if d.succeeded]
    durations = [m for m in (d.duration_minutes for d in succeeded) if m is not None]
    leads = [h for h in (c.approval_lead_hours for c in governed if c.with_ticket) if h is not None]
    tagged = [c for c in governed if c.tag_compliant is not None]
    compliant = [c for c in tagged if c.tag_compliant]
    emergency = [c for c in governed if c.emergency]
    with_ticket = [c for c in governed if c.with_ticket]
    unauthorized = population.unauthorized
    n_dep = len(deployments)
    cfr = _pct(len(failed), n_dep)
    flight = f"; {len(population.in_flight)} in flight at the period's end" if population.in_flight else ""
    return (
        _kpi(
            "change_success_rate",
            "%",
            None if cfr is None else 100.0 - cfr,
            targets,
            numerator=n_dep - len(failed),
            denominator=n_dep,
            note=f"successful deployments / deployments finished in the period{flight}",
        ),
        _kpi(
            "change_failure_rate",
            "%",
            cfr,
            targets,
            numerator=len(failed),
            denominator=n_dep,
            note="failed or rolled-back deployments / deployments (not incidents)",
        ),
        _kpi(
            "emergency_changes_pct",
            "%",
            _pct(len(emergency), len(governed)),
            targets,
            numerator=len(emergency),
            denominator=len(governed),
            note="emergency changes / governed changes",
        ),
        _kpi(
            "rollback_rate",
            "%",
            _pct(len(rolled_back), n_dep),
            targets,
            numerator=len(rolled_back),
            denominator=n_dep,
            note="rolled-back deployments / deployments",
        ),
        _kpi(
            "changes_with_tickets_pct",
            "%",
            _pct(len(with_ticket), len(governed)),
            targets,
            numerator=len(with_ticket),
            denominator=len(governed),
            note="governed changes with an existing ticket / governed changes",
        ),
        _kpi(
            "unauthorized_changes",
            "count",
            float(len(unauthorized)),
            targets,
            numerator=len(unauthorized),
            denominator=len(governed),
            note=f"{len(population.unverified)} more UNVERIFIED (ticket source unreachable)"
            if population.unverified
            else "governed changes whose verdict is not AUTHORIZED, EMERGENCY or UNVERIFIED",
        ),
        _kpi(
            "approval_lead_time_hours",
            "h",
            fmean(leads) if leads else None,
            targets,
            numerator=sum(leads) if leads else None,
            denominator=len(leads),
            note="mean hours from the last approval before the change to the change",
        ),
        _kpi(
            "mean_time_to_deploy_minutes",
            "min",
            fmean(durations) if durations else None,
            targets,
            numerator=sum(durations) if durations else None,
            denominator=len(durations),
            note="mean minutes from start to finish of successful deployments",
        ),
        _kpi(
            "tag_compliance_pct",
            "%",
            _pct(len(compliant), len(tagged)),
            targets,
            numerator=len(compliant),
            denominator=len(tagged),
            note="governed changes whose resources were not marked for missing tags / governed changes with resources",
        ),
    )


def missed(kpis: Iterable[Kpi]) -> list[Kpi]:
    return [k for k in kpis if k.met is False]


class WeekPoint(_Own):
    """One bar and one point of the report's charts."""

    label: str
    start: date
    end: date
    verdicts: dict[str, int]
    kpis: dict[str, float | None]


#: The percentage KPIs the trend chart draws.
TREND_KPIS: tuple[str, ...] = (
    "change_success_rate",
    "changes_with_tickets_pct",
    "tag_compliance_pct",
    "emergency_changes_pct",
    "rollback_rate",
)


def weekly_series(
    entries: Sequence[LedgerEntry],
    period: Period,
    targets: KpiTargets | None = None,
    tickets: Mapping[str, Ticket] | None = None,
) -> list[WeekPoint]:
    """Changes by verdict and the percentage KPIs, week by week (ISO weeks clipped to the period)."""
    points: list[WeekPoint] = []
    for week in period.weeks():
        population = build_population(entries, week, tickets)
        values = {k.name: k.value for k in compute_kpis(population, targets) if k.name in TREND_KPIS}
        points.append(
            WeekPoint(
                label=week.label,
                start=week.start,
                end=week.end,
                verdicts=dict(population.verdict_counts()),
                kpis=values,
            )
        )
    return points


def days_to_read(period: Period) -> Iterator[date]:
    """The ledger days a report of ``period`` reads: the period plus the deployment look-back, and
    the look-ahead, of which only what :func:`after_the_period` keeps counts."""
    day = period.start - timedelta(days=DEPLOYMENT_LOOKBACK.days)
    while day < period.end + timedelta(days=DEPLOYMENT_LOOKAHEAD.days):
        yield day
        day += timedelta(days=1)


def after_the_period(entry: LedgerEntry) -> bool:
    """Whether an entry of a day after the period (:data:`DEPLOYMENT_LOOKAHEAD`) is kept: a
    ``ROLLBACK`` or ``STOP`` may be about a deployment that finished in the period; verdicts,
    rechecks and everything else of that day belong to the next period."""
    return entry.kind in (EntryKind.ROLLBACK, EntryKind.STOP)
