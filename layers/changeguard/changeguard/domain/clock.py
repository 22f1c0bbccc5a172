"""The one place the wall clock is read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def deadline(time_left: Callable[[], float] | None, margin: float) -> Callable[[], bool]:
    """Whether an invocation is within ``margin`` seconds of its timeout (at most a fifth of the
    time it had when asked first), from ``time_left`` (Lambda's context); never, without one."""
    if time_left is None:
        return lambda: False
    cutoff = min(margin, time_left() / 5)
    return lambda: time_left() < cutoff
