"""EventBridge's "Scheduled Event": what every scheduled function receives, parsed in one place."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

from pydantic import Field, ValidationError, model_validator

from changeguard.domain.errors import InvalidEventError
from changeguard.domain.ledger import utc
from changeguard.models.envelope import Envelope

SCHEDULED_EVENT = "Scheduled Event"
#: A rule's schedule sends ``aws.events``; EventBridge Scheduler sends ``aws.scheduler``.
SCHEDULE_SOURCES = frozenset({"aws.events", "aws.scheduler"})
#: How far a Scheduled Event's ``time`` may be ahead of the function's clock. A schedule's ``time`` is
#: the minute it was due (schedules have one-minute precision) and EventBridge invokes the target at or
#: after it (EventBridge Scheduler's flexible time window only delays it, up to 1,440 minutes); a later
#: ``time`` is a manual or forged invoke, which needs only ``lambda:InvokeFunction``. The margin is for
#: clocks; a function that takes the schedule's time as "now" must not act on a moment not yet come.
SCHEDULE_SKEW = timedelta(minutes=5)

_S = TypeVar("_S", bound="ScheduledEvent")


class ScheduledEvent(Envelope):
    """A "Scheduled Event" from a rule's schedule or from EventBridge Scheduler (empty ``detail``)."""

    detail: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]

    @model_validator(mode="after")
    def _is_scheduled(self) -> ScheduledEvent:
        if self.detail_type != SCHEDULED_EVENT or self.source not in SCHEDULE_SOURCES:
            raise ValueError(f"not a scheduled event: {self.source} / {self.detail_type}")
        return self

    @property
    def rule_name(self) -> str:
        return self.resources[0].rsplit("/", 1)[-1] if self.resources else ""


@overload
def parse_scheduled(event: Any, *, now: datetime | None = None) -> ScheduledEvent: ...


@overload
def parse_scheduled(event: Any, model: type[_S], *, now: datetime | None = None) -> _S: ...


def parse_scheduled(event: Any, model: type[ScheduledEvent] = ScheduledEvent, *, now: datetime | None = None) -> Any:
    """``event`` as a Scheduled Event, or ``InvalidEventError`` (a poison event, not retried).

    With ``now`` (the function's clock), a ``time`` later than ``now`` plus :data:`SCHEDULE_SKEW` is
    rejected too, before any side effect: functions that act on the schedule's time (write_digest,
    build_evidence, send_heartbeat) would otherwise digest, report or send canaries for the future.
    """
    if not isinstance(event, Mapping):
        raise InvalidEventError("event is not a JSON object")
    try:
        scheduled = model.model_validate(event)
    except ValidationError as exc:
        raise InvalidEventError(f"not a Scheduled Event: {exc.error_count()} error(s)") from exc
    if now is not None:
        at = utc(scheduled.time)
        if at > utc(now) + SCHEDULE_SKEW:
            raise InvalidEventError(
                f"Scheduled Event time {at.isoformat()} is after now ({utc(now).isoformat()}):"
                " a schedule is delivered at or after its time, never before"
            )
    return scheduled
