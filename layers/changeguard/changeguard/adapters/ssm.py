"""SSM Change Calendar: the calendar state at a given time (not at processing time)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from changeguard.adapters.clients import client
from changeguard.domain.calendar import CalendarReading
from changeguard.domain.calendar import CalendarState as GateState
from changeguard.domain.errors import CalendarUnavailableError


@dataclass(frozen=True)
class CalendarState:
    state: str  # OPEN or CLOSED
    at: datetime
    next_transition: datetime | None


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class SsmChangeCalendar:
    """``GetCalendarState`` with ``AtTime``; a state is cached until its ``NextTransitionTime``.

    With several calendars AWS answers OPEN only if every calendar is open.
    """

    def __init__(self, names: tuple[str, ...], ssm: Any | None = None, *, max_age_seconds: float = 60.0) -> None:
        self.names = names
        self._ssm = ssm
        self.max_age_seconds = max_age_seconds
        self._cache: list[tuple[datetime, datetime | None, CalendarState]] = []
        self._cached_by: Any = None
        self._cached_at = 0.0

    def _fresh_cache(self, ssm: Any) -> list[tuple[datetime, datetime | None, CalendarState]]:
        # An operator can edit a calendar at any time: answers are reused for at most
        # ``max_age_seconds`` while warm. A different client (another endpoint) starts afresh.
        if ssm is not self._cached_by or time.monotonic() - self._cached_at > self.max_age_seconds:
            self._cache = []
            self._cached_by = ssm
            self._cached_at = time.monotonic()
        return self._cache

    def state_at(self, at: datetime) -> CalendarState:
        ssm = self._ssm or client("ssm")
        for start, end, state in self._fresh_cache(ssm):
            if start <= at and (end is None or at < end):
                return state
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = ssm.get_calendar_state(
                CalendarNames=list(self.names), AtTime=at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            )
        except (ClientError, BotoCoreError) as exc:
            raise CalendarUnavailableError(f"change calendar {', '.join(self.names)}: {exc}") from exc
        state = CalendarState(
            state=str(resp["State"]),
            at=_parse(resp.get("AtTime")) or at,
            next_transition=_parse(resp.get("NextTransitionTime")),
        )
        # Valid from the asked time until the next transition. Only earlier-asked times are
        # not covered: the state before ``at`` is unknown from this answer.
        self._cache = [c for c in self._cache[-31:]] + [(at, state.next_transition, state)]
        return state

    def is_closed(self, at: datetime) -> bool | None:
        if not self.names:
            return None
        return self.state_at(at).state == "CLOSED"

    def reading_at(self, at: datetime) -> CalendarReading:
        """The combined state at ``at`` for the change-calendar gate; UNKNOWN (never an error) when unreadable."""
        try:
            state = self.state_at(at)
        except CalendarUnavailableError as exc:
            return CalendarReading(state=GateState.UNKNOWN, at=at, calendars=self.names, error=str(exc))
        known = GateState(state.state) if state.state in ("OPEN", "CLOSED") else GateState.UNKNOWN
        return CalendarReading(
            state=known,
            at=at,
            calendars=self.names,
            next_transition=state.next_transition,
            error=None if known is not GateState.UNKNOWN else f"unexpected calendar state {state.state!r}",
        )


# -- hardening (issue 8) --------------------------------------------------------------------------
class SsmParameterWriter:
    """Writes one String parameter: the heartbeat's canary (``ssm:PutParameter``, overwriting)."""

    def __init__(self, ssm: Any | None = None) -> None:
        self._ssm = ssm

    def put(self, name: str, value: str, description: str) -> None:
        ssm = self._ssm or client("ssm")
        ssm.put_parameter(Name=name, Value=value, Description=description, Type="String", Overwrite=True)
