"""A source's outages as ledger facts (a ticket source, the change calendar): one degraded alert per
outage, one recovery alert.

Outage *n* of source S lives under change id ``outage:S``: ``OPEN#n`` when a function first
finds S unreachable, ``CLOSED#n`` when the follow-up finds it answering again. Each fact is
written in one transaction with its alert item (the outbox), and the alert's id and ledger key
carry *n*: concurrent openers meet the conditional put (one wins, one alert), and a later outage
never collides with an earlier one's items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.verdicts import Severity, Verdict

#: The change calendar's outages (``outage:change-calendar``), beside each ticket source's.
CALENDAR_SOURCE = "change-calendar"
CALENDAR_LABEL = "change calendar"


def outage_key(source: str) -> str:
    return f"outage:{source}"


class _Entries(Protocol):
    def entries_for(self, change_id: str) -> list[LedgerEntry]: ...


@dataclass(frozen=True)
class OutageState:
    """How many outages of one source were opened and closed, from its ledger entries."""

    key: str
    opened: int
    closed: int
    entries: tuple[LedgerEntry, ...]

    @classmethod
    def read(cls, ledger: _Entries, source: str) -> OutageState:
        """``source``'s outages as the ledger has them (one query of its ``outage:<source>`` entries)."""
        key = outage_key(source)
        return cls.of(key, ledger.entries_for(key))

    @classmethod
    def of(cls, key: str, entries: Sequence[LedgerEntry]) -> OutageState:
        return cls(
            key=key,
            opened=sum(1 for e in entries if e.entry.startswith("OPEN#")),
            closed=sum(1 for e in entries if e.entry.startswith("CLOSED#")),
            entries=tuple(entries),
        )

    @property
    def is_open(self) -> bool:
        return self.opened > self.closed

    def opened_at(self, generation: int) -> datetime | None:
        return next((e.event_time for e in self.entries if e.entry == f"OPEN#{generation:06d}"), None)


def _pair(key: str, fact: str, generation: int, alert: Alert, now: datetime, body: dict[str, Any]) -> list[LedgerEntry]:
    entry = LedgerEntry(
        change_id=key,
        entry=f"{fact}#{generation:06d}",
        kind=EntryKind.OUTAGE,
        function=alert.function,
        event_time=now,
        recorded_at=now,
        body=body,
    )
    return [entry, alert_entry(alert, now, now, suffix=f"{generation:06d}")]


def opening(
    source: str,
    generation: int,
    *,
    function: str,
    now: datetime,
    error: str,
    summary: str,
    actions: tuple[str, ...],
    body: dict[str, Any],
    event_time: datetime | None = None,
    account: str | None = None,
    region: str | None = None,
    remediation: str,
    label: str | None = None,
) -> tuple[Alert, list[LedgerEntry]]:
    """The degraded-mode alert of outage ``generation`` and the ledger items that record it.

    ``label`` names what is unreachable in the subject (default: ``ticket source '<source>'``).
    """
    key = outage_key(source)
    alert = Alert(
        alert_id=Alert.make_id(key, function, f"degraded-{generation}"),
        kind="degraded",
        function=function,
        severity=Severity.HIGH,
        verdict=Verdict.UNVERIFIED.value,
        subject=f"ChangeGuard degraded: {label or f'ticket source {source!r}'} unreachable",
        summary=summary,
        change_id=key,
        event_time=event_time or now,
        account=account,
        region=region,
        reasons=(error,),
        actions=actions,
        remediation=remediation,
    )
    return alert, _pair(key, "OPEN", generation, alert, now, {"error": error, **body})


def closing(
    state: OutageState, *, source: str, function: str, now: datetime, rejudged: int, label: str | None = None
) -> tuple[Alert, list[LedgerEntry]]:
    """The recovery alert closing the source's open outage, and the ledger items that record it."""
    generation = state.opened
    opened_at = state.opened_at(generation)
    what = label or f"ticket source {source!r}"
    alert = Alert(
        alert_id=Alert.make_id(state.key, function, f"recovered-{generation}"),
        kind="recovered",
        function=function,
        severity=Severity.INFO,
        subject=f"ChangeGuard recovered: {what} answers again",
        summary=(
            f"The {label or 'ticket source'} is reachable again (outage #{generation}"
            f"{' since ' + opened_at.isoformat() if opened_at else ''}). UNVERIFIED changes are"
            " being judged again; each gets its own alert where its new verdict calls for one."
        ),
        change_id=state.key,
        event_time=now,
        actions=(f"re-judged {rejudged} UNVERIFIED change(s) in this run",),
        details={"outage": generation, "rejudged": rejudged},
    )
    body = {"opened_at": opened_at.isoformat() if opened_at else None, "rejudged": rejudged}
    return alert, _pair(state.key, "CLOSED", generation, alert, now, body)
