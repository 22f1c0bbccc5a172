"""Small in-memory fakes of the ports, for domain and service tests without AWS."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from changeguard.domain.errors import TicketSourceUnavailableError
from changeguard.domain.ledger import LedgerEntry
from changeguard.domain.tickets import Ticket


class FakeClock:
    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


class InMemoryLedger:
    """Conditional-put semantics: a batch is written whole or not at all."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], LedgerEntry] = {}
        self.appends = 0

    def append(self, entries: Sequence[LedgerEntry]) -> bool:
        self.appends += 1
        if any((e.change_id, e.entry) in self.items for e in entries):
            return False
        for e in entries:
            self.items[(e.change_id, e.entry)] = e
        return True

    def entries_for(self, change_id: str) -> list[LedgerEntry]:
        return [e for (c, _), e in sorted(self.items.items()) if c == change_id]

    def entries_on(self, day: str, verdict: str | None = None) -> list[LedgerEntry]:
        return [e for e in self.items.values() if e.day == day and (verdict is None or e.verdict == verdict)]

    def kinds(self, kind: str) -> list[LedgerEntry]:
        return [e for e in self.items.values() if e.kind.value == kind]


class FakeTicketSource:
    name = "fake"

    def __init__(self, *tickets: Ticket, down: bool = False) -> None:
        self.tickets = {t.ticket_id: t for t in tickets}
        self.down = down
        self.calls = 0

    def get(self, ticket_id: str) -> Ticket | None:
        self.calls += 1
        if self.down:
            raise TicketSourceUnavailableError("connection refused")
        return self.tickets.get(ticket_id)


class FakeTagReader:
    def __init__(self, tags: dict[str, dict[str, str]] | None = None, stacks: dict[str, dict[str, str]] | None = None):
        self.tags = tags or {}
        self.stacks = stacks or {}
        self.calls: list[str] = []

    def tags_of(self, arn: str) -> dict[str, str] | None:
        self.calls.append(arn)
        return self.tags.get(arn, {})

    def stack_tags(self, stack: str) -> dict[str, str] | None:
        self.calls.append(f"stack:{stack}")
        return self.stacks.get(stack)


class FakeCalendar:
    def __init__(self, closed: bool | None) -> None:
        self.closed = closed
        self.asked: list[datetime] = []

    def is_closed(self, at: datetime) -> bool | None:
        self.asked.append(at)
        return self.closed
