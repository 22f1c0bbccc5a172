"""Graduated, reversible quarantine as decisions: mark, quarantine after a grace period, release.

Nothing here talks to AWS. A resource's episode (marked at ``after``, quarantined, released) is
read from its ledger entries, all keyed by the episode's ``quarantine-after`` time, so every
step has one deterministic ledger key and a repeated step is a duplicate, not a second action:

* ``MARK#<after>``        the resource was marked: quarantine after ``<after>`` unless it complies;
* ``QUARANTINE#<after>``  quarantined; the body holds the saved (original) state;
* ``QUARANTINE#<after>#recontained-<digest>``  changed while quarantined: the state the sweep's
  re-containment overwrote, recorded before it; its ``saved`` (the saved state, plus what the
  resource gained meanwhile) is the one a release restores from then on;
* ``RELEASE#<after>``     the episode is over: RESTORED, NOOP (nothing to restore) or DRIFT.

Observe mode writes the same facts with an ``#observe`` suffix: they report, they never open an
episode. All of them live under change id ``resource:<arn>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.tags import TagEvaluation, format_time, parse_time


class _Own(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class Action(StrEnum):
    NONE = "none"
    MARK = "mark"
    QUARANTINE = "quarantine"
    RELEASE = "release"  # restore a quarantined resource
    UNMARK = "unmark"  # drop the mark of a resource that was never quarantined


class TagVerdict(StrEnum):
    COMPLIANT = "COMPLIANT"
    NON_COMPLIANT = "NON_COMPLIANT"
    EXEMPT = "EXEMPT"
    SKIPPED = "SKIPPED"  # cannot read it, the suite's own, or no way to judge it


# The outcome of a run touching several resources reports the weightiest verdict.
VERDICT_WEIGHT: tuple[TagVerdict, ...] = (
    TagVerdict.NON_COMPLIANT,
    TagVerdict.EXEMPT,
    TagVerdict.COMPLIANT,
    TagVerdict.SKIPPED,
)


class ReleaseResult(StrEnum):
    """What a release found (the vocabulary of AWS Automated Security Response's rollbacks)."""

    RESTORED = "RESTORED"  # it was as quarantine left it; the saved state is back
    NOOP = "NOOP"  # it already was as before quarantine; nothing to do
    DRIFT = "DRIFT"  # someone changed it in between; nothing was overwritten


class ResourceRef(_Own):
    """One resource, as the quarantine registry names it."""

    type: str  # registry key, e.g. "ec2:instance"
    resource_id: str
    arn: str
    account: str
    region: str

    @property
    def change_id(self) -> str:
        return change_id_of(self.arn)

    @property
    def short(self) -> str:
        return f"{self.type} {self.resource_id}"


def change_id_of(arn: str) -> str:
    return f"resource:{arn}"


class Decision(_Own):
    """What to do with one resource, and why; what gets ledgered and alerted."""

    ref: ResourceRef
    verdict: TagVerdict
    action: Action
    reasons: tuple[str, ...] = ()
    evaluation: TagEvaluation | None = None
    quarantine_after: datetime | None = None
    # MARK only: the grace period is zero, so the quarantine follows at once.
    due_now: bool = False


def decide(
    ref: ResourceRef,
    evaluation: TagEvaluation,
    *,
    now: datetime,
    grace_hours: float,
    marked_after: datetime | None,
    quarantined: bool,
    exempt: str | None = None,
    caller_exempt: str | None = None,
) -> Decision:
    """The next step for a readable resource that is not the suite's own.

    ``exempt`` (the resource's exempt tag) ends any episode; ``caller_exempt`` (the change was
    made by an exempt principal) never starts or escalates one, but a release still happens.
    """
    reasons = list(evaluation.reasons)
    if exempt:
        action = Action.RELEASE if quarantined else Action.UNMARK if marked_after else Action.NONE
        return Decision(
            ref=ref,
            verdict=TagVerdict.EXEMPT,
            action=action,
            reasons=(exempt,),
            evaluation=evaluation,
            quarantine_after=marked_after,
        )
    if evaluation.compliant:
        action = Action.RELEASE if quarantined else Action.UNMARK if marked_after else Action.NONE
        return Decision(
            ref=ref,
            verdict=TagVerdict.COMPLIANT,
            action=action,
            reasons=("carries every required tag",),
            evaluation=evaluation,
            quarantine_after=marked_after,
        )
    if quarantined:
        return _keep(ref, evaluation, [*reasons, "already quarantined"], marked_after)
    if caller_exempt:
        return Decision(
            ref=ref,
            verdict=TagVerdict.EXEMPT,
            action=Action.NONE,
            reasons=(caller_exempt, *reasons),
            evaluation=evaluation,
            quarantine_after=marked_after,
        )
    if marked_after is not None:
        if now >= marked_after:
            return Decision(
                ref=ref,
                verdict=TagVerdict.NON_COMPLIANT,
                action=Action.QUARANTINE,
                reasons=(*reasons, f"grace period ended at {format_time(marked_after)}"),
                evaluation=evaluation,
                quarantine_after=marked_after,
            )
        return _keep(ref, evaluation, [*reasons, f"marked: quarantine after {format_time(marked_after)}"], marked_after)
    after = quarantine_deadline(now, grace_hours)
    return Decision(
        ref=ref,
        verdict=TagVerdict.NON_COMPLIANT,
        action=Action.MARK,
        reasons=(*reasons, f"quarantine after {format_time(after)} unless tagged"),
        evaluation=evaluation,
        quarantine_after=after,
        due_now=after <= now,
    )


def _keep(ref: ResourceRef, evaluation: TagEvaluation, reasons: list[str], after: datetime | None) -> Decision:
    return Decision(
        ref=ref,
        verdict=TagVerdict.NON_COMPLIANT,
        action=Action.NONE,
        reasons=tuple(reasons),
        evaluation=evaluation,
        quarantine_after=after,
    )


def quarantine_deadline(now: datetime, grace_hours: float) -> datetime:
    """``now`` plus the grace period, at second precision (it is written to a tag)."""
    return (now + timedelta(hours=grace_hours)).replace(microsecond=0)


# -- episodes in the ledger ------------------------------------------------------------------------

OBSERVE_SUFFIX = "observe"
#: The third part of a re-containment's key (``QUARANTINE#<after>#recontained-<digest>``).
RECONTAINED = "recontained-"
#: The third part of the fact that a quarantine's calls succeeded (``QUARANTINE#<after>#contained``).
CONTAINED = "contained"


def quarantine_step(entry: str) -> str | None:
    """The third part of a ``QUARANTINE#<after>#<step>`` key (``contained``, ``recontained-...``,
    ``failed``, ``observe``...), or None for any other key (the intent ``QUARANTINE#<after>`` included)."""
    parts = entry.split("#")
    return parts[2] if len(parts) == 3 and parts[0] == EntryKind.QUARANTINE.value else None


def entry_key(kind: EntryKind, after: datetime, *, observe: bool = False) -> str:
    key = f"{kind.value}#{format_time(after)}"
    return f"{key}#{OBSERVE_SUFFIX}" if observe else key


def ref_tag_value(change_id: str, entry: str) -> str:
    """The ``changeguard:quarantine-ref`` value pointing at a ledger entry.

    ``<change_id>#<entry>`` with ``@`` for ``#``: S3 and Lambda reject ``#`` in tag values.
    """
    return f"{change_id}@{entry.replace('#', '@')}"


def parse_ref_tag(value: str | None) -> tuple[str, str] | None:
    """(change_id, entry) from a ``quarantine-ref`` value, or None when it is not one."""
    if not value or value.count("@") < 2:
        return None
    change_id, kind, when = value.rsplit("@", 2)
    if kind != EntryKind.QUARANTINE.value or parse_time(when) is None:
        return None
    return change_id, f"{kind}#{when}"


class Episode(_Own):
    """Where a resource stands, according to its ledger entries."""

    marked_after: datetime | None = None  # an open mark (no release yet)
    quarantine_entry: str | None = None  # an open quarantine (no release yet)
    saved: dict[str, Any] | None = None  # the state that quarantine saved
    quarantined_at: datetime | None = None
    contained_recorded: bool = False  # its ``#contained`` fact is in the ledger already

    @property
    def quarantined(self) -> bool:
        return self.quarantine_entry is not None


def episode_of(entries: Iterable[LedgerEntry]) -> Episode:
    """The open episode (the latest mark or quarantine without a release), if any.

    A release closes its own episode's mark and quarantine (same time in the key, whenever they were
    recorded: a sweep may ledger the quarantine after the release) and every mark or quarantine
    recorded before it. Two events handled at once can each mark the resource, a second apart, and
    the release names only the latest: an earlier one left open would, once the resource next lost a
    tag, be a deadline long past, and the sweep would quarantine with no grace period. Recording
    order, not the deadline in the key: after the grace period is shortened, a new episode's deadline
    can come before a released one's.
    """
    marks: dict[str, LedgerEntry] = {}
    quarantines: dict[str, LedgerEntry] = {}
    released: set[str] = set()
    last_release: datetime | None = None
    resaved: dict[str, LedgerEntry] = {}
    contained: set[str] = set()
    for item in entries:
        parts = item.entry.split("#")
        step = quarantine_step(item.entry)
        if step == CONTAINED:
            contained.add(parts[1])
        if step is not None and step.startswith(RECONTAINED):
            latest = resaved.get(parts[1])
            if latest is None or (item.recorded_at, item.entry) > (latest.recorded_at, latest.entry):
                resaved[parts[1]] = item
        if len(parts) != 2 or parse_time(parts[1]) is None:
            continue  # alerts, observe reports and alert-only notes are not episode steps
        kind, after = parts
        if kind == EntryKind.MARK.value:
            marks[after] = item
        elif kind == EntryKind.QUARANTINE.value:
            quarantines[after] = item
        elif kind == EntryKind.RELEASE.value:
            released.add(after)
            last_release = item.recorded_at if last_release is None else max(last_release, item.recorded_at)

    def is_open(after: str, item: LedgerEntry) -> bool:
        return after not in released and (last_release is None or item.recorded_at >= last_release)

    open_quarantines = sorted(a for a, item in quarantines.items() if is_open(a, item))
    open_marks = sorted(a for a, item in marks.items() if is_open(a, item))
    if open_quarantines:
        after = open_quarantines[-1]
        entry = quarantines[after]
        saved = resaved.get(after, entry).body.get("saved")
        return Episode(
            marked_after=parse_time(after),
            quarantine_entry=entry.entry,
            saved=saved if isinstance(saved, dict) else {},
            quarantined_at=entry.recorded_at,
            contained_recorded=after in contained,
        )
    if open_marks:
        return Episode(marked_after=parse_time(open_marks[-1]))
    return Episode()


# -- the blast-radius cap --------------------------------------------------------------------------


@dataclass
class Budget:
    """At most ``limit`` quarantines per run; what did not fit is reported when the cap is hit."""

    limit: int
    used: int = 0
    skipped: list[str] = field(default_factory=list)

    def take(self, arn: str) -> bool:
        if self.used >= self.limit:
            self.skipped.append(arn)
            return False
        self.used += 1
        return True

    def give_back(self) -> None:
        """A place taken for a quarantine that was already ledgered (reported in observe mode, or made
        by an earlier attempt whose place is counted already): this run spent nothing on it."""
        self.used = max(0, self.used - 1)

    @property
    def hit(self) -> bool:
        return bool(self.skipped)
