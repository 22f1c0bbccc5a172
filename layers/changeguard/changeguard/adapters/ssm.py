"""SSM Change Calendar: the calendar state at a given time (not at processing time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from changeguard.adapters.clients import client
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

    def __init__(self, names: tuple[str, ...], ssm: Any | None = None) -> None:
        self.names = names
        self._ssm = ssm
        self._cache: list[tuple[datetime, datetime | None, CalendarState]] = []

    def state_at(self, at: datetime) -> CalendarState:
        for start, end, state in self._cache:
            if start <= at and (end is None or at < end):
                return state
        from botocore.exceptions import BotoCoreError, ClientError

        ssm = self._ssm or client("ssm")
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
