"""EventBridge's "Scheduled Event": what every scheduled function receives, parsed in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationError, model_validator

from changeguard.domain.errors import InvalidEventError
from changeguard.models.envelope import Envelope

SCHEDULED_EVENT = "Scheduled Event"
#: A rule's schedule sends ``aws.events``; EventBridge Scheduler sends ``aws.scheduler``.
SCHEDULE_SOURCES = frozenset({"aws.events", "aws.scheduler"})


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


def parse_scheduled(event: Any, model: type[ScheduledEvent] = ScheduledEvent) -> ScheduledEvent:
    """``event`` as a Scheduled Event, or ``InvalidEventError`` (a poison event, not retried)."""
    if not isinstance(event, Mapping):
        raise InvalidEventError("event is not a JSON object")
    try:
        return model.model_validate(event)
    except ValidationError as exc:
        raise InvalidEventError(f"not a Scheduled Event: {exc.error_count()} error(s)") from exc
