"""The interfaces between domain decisions and the systems that carry them out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from changeguard.domain.alerts import Alert
from changeguard.domain.ledger import LedgerEntry
from changeguard.domain.tickets import Ticket


class Clock(Protocol):
    def now(self) -> datetime: ...


class TicketSource(Protocol):
    """A ticket system. Raises ``TicketSourceUnavailableError`` when it cannot answer."""

    name: str

    def get(self, ticket_id: str) -> Ticket | None: ...


class Ledger(Protocol):
    def append(self, entries: Sequence[LedgerEntry]) -> bool:
        """Write all entries or none. False when the first already existed (a duplicate)."""
        ...

    def entries_for(self, change_id: str) -> list[LedgerEntry]: ...

    def entries_on(self, day: str, verdict: str | None = None) -> list[LedgerEntry]: ...


class TagReader(Protocol):
    def tags_of(self, arn: str) -> dict[str, str] | None:
        """Current tags, or None when the resource cannot be read."""
        ...

    def stack_tags(self, stack: str) -> dict[str, str] | None: ...


class AlertPublisher(Protocol):
    def publish(self, alert: Alert) -> str: ...


class CalendarReader(Protocol):
    def is_closed(self, at: datetime) -> bool | None:
        """True when CLOSED at ``at``, False when OPEN, None when no calendar is configured."""
        ...
