"""What the digest and evidence functions receive: EventBridge's "Scheduled Event", or a request.

A schedule's rule name says which report it is for (``...-weekly-kpi-report``,
``...-monthly-kpi-report``, ``...-quarterly-evidence-pack``): the Scheduled Event carries the
rule's ARN in ``resources`` and nothing else. An operator can also invoke the function with a
:class:`ReportRequest` (``{"report": "quarterly", "period": "2026-Q3"}``).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field

SCHEDULED_EVENT = "Scheduled Event"
Cadence = Literal["weekly", "monthly", "quarterly", "custom"]
CADENCES: tuple[Cadence, ...] = ("weekly", "monthly", "quarterly")


class ScheduledEvent(EventBridgeModel):
    """EventBridge's "Scheduled Event" (``source`` ``aws.events``, empty ``detail``)."""

    detail: dict[str, Any] = Field(default_factory=dict)  # type: ignore[assignment]

    @property
    def rule_name(self) -> str:
        return self.resources[0].rsplit("/", 1)[-1] if self.resources else ""

    def cadence(self) -> Cadence | None:
        """Which report the schedule is for, from the rule's name."""
        name = self.rule_name.lower()
        return next((c for c in CADENCES if c in name), None)


class ReportRequest(BaseModel):
    """An on-demand report: a period label (``2026-Q3``, ``2026-11``, ``2026-W47``) or ``from``/``to`` days."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    report: Cadence
    period: str | None = None
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None
