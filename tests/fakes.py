"""Small in-memory fakes of the ports, for domain and service tests without AWS."""

from __future__ import annotations

import bisect
import heapq
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from changeguard.domain.errors import (
    CalendarUnavailableError,
    CrossAccountAccessError,
    TicketSourceUnavailableError,
    TicketUnreadableError,
)
from changeguard.domain.ledger import DayShards, EntryKind, LedgerEntry
from changeguard.domain.tickets import Ticket


class ThreadScope:
    """The acting scope (``adapters.accounts.AccountClients``) as the services see it: where calls go
    now, per thread as the real one's context variable, every (account, region) entered, and one
    member account whose role is refused."""

    def __init__(self, own: str = "123456789012", refused: str | None = None) -> None:
        self.own = own
        self.refused_account = refused
        self.visited: list[tuple[str | None, str | None]] = []
        self._here = threading.local()

    @property
    def current(self) -> tuple[str | None, str | None]:
        return getattr(self._here, "pair", (None, None))

    def role_of(self, account: str | None) -> str:
        return f"arn:aws:iam::{account}:role/changeguard/acting"

    def acting_in(self, account: str | None, region: str | None, reason: str) -> Any:
        @contextmanager
        def scope() -> Iterator[None]:
            if account is not None and account == self.refused_account:
                raise CrossAccountAccessError(account, self.role_of(account), "AccessDenied")
            before, self._here.pair = self.current, (account, region)
            self.visited.append((account, region))
            try:
                yield
            finally:
                self._here.pair = before

        return scope()

    def acted_as(self, account: str | None) -> dict[str, str]:
        if not account or account == self.own:
            return {"account": self.own, "identity": "function role"}
        return {"account": account, "role": self.role_of(account)}

    def current_account(self) -> str | None:
        return self.current[0] or self.own

    def refused(self, account: str | None) -> CrossAccountAccessError | None:
        return None


class FakeClock:
    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


def _index_key(item: dict[str, Any]) -> str:
    return str(item["index_key"]["S"])


class ShardedDayIndex:
    """The ledger's by-day index as DynamoDB keeps it (issue 9): one partition per ``day_shard``, each
    sorted by ``index_key``. A day is read as ``DynamoDBLedger`` reads it: every shard key of the
    configured counts, one partition at a time, merged in ``index_key`` order. An item is found only
    through the shard its own ``day_shard`` names, as in the real index.
    """

    def __init__(self, items: Iterable[dict[str, Any]] = (), day_shards: DayShards | None = None) -> None:
        self.day_shards = day_shards or DayShards()
        self.partitions: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            self.put(item)

    def put(self, item: dict[str, Any]) -> None:
        partition = self.partitions.setdefault(item["day_shard"]["S"], [])
        bisect.insort(partition, item, key=_index_key)

    def items_on(self, day: str, verdict: str | None = None) -> list[dict[str, Any]]:
        prefix = f"{verdict}#" if verdict else ""
        shards = [
            [i for i in self.partitions.get(key, []) if _index_key(i).startswith(prefix)]
            for key in self.day_shards.keys(day)
        ]
        return list(heapq.merge(*shards, key=_index_key))


class InMemoryLedger:
    """Conditional-put semantics: a batch is written whole or not at all.

    ``entries_on`` reads like the sharded by-day index: each entry is indexed under the shard of the
    count it was written with, and a day is every shard of ``day_shards``, in ``index_key`` order.
    """

    def __init__(self, day_shards: DayShards | None = None) -> None:
        self.items: dict[tuple[str, str], LedgerEntry] = {}
        self.appends = 0
        self.read = 0  # entries read by partition (entries_for, entries_between)
        self.day_shards = day_shards or DayShards()
        self.shard_of: dict[tuple[str, str], str] = {}

    def append(self, entries: Sequence[LedgerEntry]) -> bool:
        self.appends += 1
        if any((e.change_id, e.entry) in self.items for e in entries):
            return False
        for e in entries:
            self.items[(e.change_id, e.entry)] = e
            self.shard_of[(e.change_id, e.entry)] = e.day_shard(self.day_shards.write)
        return True

    def entries_for(self, change_id: str) -> list[LedgerEntry]:
        found = [e for (c, _), e in sorted(self.items.items()) if c == change_id]
        self.read += len(found)
        return found

    def entries_between(
        self, change_id: str, low: str, high: str, *, newest_first: bool = False, limit: int | None = None
    ) -> list[LedgerEntry]:
        # DynamoDB compares string keys as UTF-8 bytes.
        lo, hi = low.encode(), high.encode()
        found = [e for (c, k), e in sorted(self.items.items()) if c == change_id and lo <= k.encode() <= hi]
        found = (found[::-1] if newest_first else found)[:limit]
        self.read += len(found)
        return found

    def entries_on(self, day: str, verdict: str | None = None) -> list[LedgerEntry]:
        keys = set(self.day_shards.keys(day))
        found = [
            e
            for k, e in self.items.items()
            if self.shard_of[k] in keys and (verdict is None or e.index_key.startswith(f"{verdict}#"))
        ]
        return sorted(found, key=lambda e: e.index_key)

    def kinds(self, kind: str) -> list[LedgerEntry]:
        return [e for e in self.items.values() if e.kind.value == kind]


class FakeTicketSource:
    name = "fake"

    def __init__(self, *tickets: Ticket, down: bool = False) -> None:
        self.tickets = {t.ticket_id: t for t in tickets}
        self.down = down
        # Tickets the source answers for but that cannot be read (a hand-edited status, say).
        self.unreadable: set[str] = set()
        self.calls = 0

    def get(self, ticket_id: str) -> Ticket | None:
        self.calls += 1
        if self.down:
            raise TicketSourceUnavailableError("connection refused")
        if ticket_id in self.unreadable:
            raise TicketUnreadableError(
                f"ticket table: not a ticket item: 'Approved' is not a valid TicketStatus ({ticket_id})"
            )
        return self.tickets.get(ticket_id)


class FakeTagReader:
    """Tags by ARN and by stack; those in ``unreadable`` cannot be read (None), as when refused."""

    def __init__(
        self,
        tags: dict[str, dict[str, str]] | None = None,
        stacks: dict[str, dict[str, str]] | None = None,
        unreadable: set[str] | None = None,
    ):
        self.tags = tags or {}
        self.stacks = stacks or {}
        self.unreadable = unreadable if unreadable is not None else set()
        self.calls: list[str] = []

    def tags_of(self, arn: str) -> dict[str, str] | None:
        self.calls.append(arn)
        return None if arn in self.unreadable else self.tags.get(arn, {})

    def stack_tags(self, stack: str) -> dict[str, str] | None:
        self.calls.append(f"stack:{stack}")
        return None if stack in self.unreadable else self.stacks.get(stack, {})


class FakeCalendar:
    """``closed`` at every time asked (or ``closed_at(at)`` when given); raises while ``down``."""

    def __init__(self, closed: bool | None, closed_at: Callable[[datetime], bool] | None = None) -> None:
        self.closed = closed
        self.closed_at = closed_at
        self.down = False
        self.asked: list[datetime] = []

    def is_closed(self, at: datetime) -> bool | None:
        self.asked.append(at)
        if self.down:
            raise CalendarUnavailableError("change calendar demo-window: AccessDeniedException")
        return self.closed_at(at) if self.closed_at else self.closed


class MemoryBucket:
    """The evidence bucket's port (digests, reports) in memory; ``put_if_absent`` never overwrites."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, body: bytes, content_type: str) -> None:
        self.objects[key] = body

    def put_if_absent(self, key: str, body: bytes, content_type: str) -> bool:
        if key in self.objects:
            return False
        self.objects[key] = body
        return True

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


def create_ticket_table(ddb: Any, name: str = "tickets") -> None:
    """The DynamoDB ticket table as the template defines it: a ticket and its approvals per partition."""
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "ticket_id", "KeyType": "HASH"}, {"AttributeName": "record", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "ticket_id", "AttributeType": "S"},
            {"AttributeName": "record", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def verdict_entry(change_id: str, verdict: str, *, at: datetime, **body: object) -> LedgerEntry:
    """The correlator's VERDICT for ``change_id``, made at ``at`` and recorded a minute later."""
    return LedgerEntry(
        change_id=change_id,
        entry="VERDICT",
        kind=EntryKind.VERDICT,
        function="correlate_change",
        event_time=at,
        recorded_at=at + timedelta(minutes=1),
        verdict=verdict,
        body={"change": {"change_id": change_id}, **body},
    )
