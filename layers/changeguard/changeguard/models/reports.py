"""What the digest and evidence functions receive: EventBridge's "Scheduled Event", or a request.

A schedule's rule name says which report it is for (``...-weekly-kpi-report``,
``...-monthly-kpi-report``, ``...-quarterly-evidence-pack``): the Scheduled Event carries the
rule's ARN in ``resources`` and nothing else. An operator can also invoke the function with a
:class:`ReportRequest` (``{"report": "quarterly", "period": "2026-Q3"}``).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from changeguard.models.scheduled import ScheduledEvent as BaseScheduledEvent

Cadence = Literal["weekly", "monthly", "quarterly", "custom"]
CADENCES: tuple[Cadence, ...] = ("weekly", "monthly", "quarterly")


class ScheduledEvent(BaseScheduledEvent):
    """The digest's and the reports' schedules; the rule's name says which report is due."""

    def cadence(self) -> Cadence | None:
        """Which report the schedule is for, from the rule's name."""
        name = self.rule_name.lower()
        return next((c for c in CADENCES if c in name), None)


class ReportRequest(BaseModel):
    """An on-demand report: a period label (``2026-Q3``, ``2026-11``, ``2026-W47``) or ``from``/``to`` days."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True, populate_by_name=True)

    report: Cadence
    period: str | None = None
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None
