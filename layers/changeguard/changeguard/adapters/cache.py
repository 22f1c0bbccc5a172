"""Short-lived caches for services that live across warm invocations, and the ticket-source base.

A Lambda container keeps module state between invocations, so a plain dict would freeze what it
holds (a ticket's approvals, a resource's tags) for the container's lifetime. Everything here
expires after a few seconds (one invocation, give or take) and can be cleared explicitly.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Hashable
from typing import Any

from changeguard.domain.tickets import Ticket


class TtlCache:
    """Values kept for ``seconds``; a miss and a cached ``None`` are told apart by ``get``."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._items: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable) -> tuple[bool, Any]:
        found = self._items.get(key)
        if found is None or time.monotonic() - found[0] > self.seconds:
            return False, None
        return True, found[1]

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = (time.monotonic(), value)

    def clear(self) -> None:
        self._items.clear()


class CachedTicketSource(ABC):
    """A ticket source whose lookups (found or not) are cached for ``cache_seconds``.

    Subclasses read one ticket in ``_fetch``; ``_accepts`` turns away ids that must never reach
    the source (an id that is not a ticket id is simply not found).
    """

    name: str

    def __init__(self, cache_seconds: float) -> None:
        self._cache = TtlCache(cache_seconds)

    def clear_cache(self) -> None:
        self._cache.clear()

    def get(self, ticket_id: str) -> Ticket | None:
        """The ticket, ``None`` when the source has none, or ``TicketSourceUnavailableError``."""
        hit, cached = self._cache.get(ticket_id)
        if hit:
            return cached if isinstance(cached, Ticket) else None
        ticket = self._fetch(ticket_id) if self._accepts(ticket_id) else None
        self._cache.put(ticket_id, ticket)
        return ticket

    def _accepts(self, ticket_id: str) -> bool:
        return True

    @abstractmethod
    def _fetch(self, ticket_id: str) -> Ticket | None: ...
