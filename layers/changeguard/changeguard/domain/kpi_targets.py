"""KPI targets: the tunable half of the KPI report (``kpi-targets`` in Parameter Store).

Kept apart from :mod:`changeguard.domain.kpis` so that the policy can validate targets
without importing the KPI arithmetic (and, through it, the verdicts that import the policy).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from changeguard.domain.errors import ConfigurationError

Comparison = Literal[">", ">=", "<", "<="]


class KpiTargets(BaseModel):
    """Targets each KPI is compared with; a KPI that misses its target is flagged.

    Defaults: change success > 95 %, emergency changes < 2 %, rollback rate < 2 %, changes with
    tickets 100 %, unauthorized changes 0, approval lead time < 48 h, mean time to deploy
    < 30 min, tag compliance 100 %.
    """

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    change_success_rate: float = Field(default=95.0, ge=0, le=100)
    emergency_changes_pct: float = Field(default=2.0, ge=0, le=100)
    rollback_rate: float = Field(default=2.0, ge=0, le=100)
    changes_with_tickets_pct: float = Field(default=100.0, ge=0, le=100)
    unauthorized_changes: int = Field(default=0, ge=0)
    approval_lead_time_hours: float = Field(default=48.0, gt=0)
    mean_time_to_deploy_minutes: float = Field(default=30.0, gt=0)
    tag_compliance_pct: float = Field(default=100.0, ge=0, le=100)

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None) -> KpiTargets:
        """Defaults with some targets changed; an unknown name is an error, never ignored."""
        try:
            return cls.model_validate(dict(overrides or {}))
        except ValidationError as exc:
            raise ConfigurationError(f"invalid KPI targets: {exc}") from exc


#: How each KPI meets its target (value <comparison> target).
COMPARISONS: Mapping[str, Comparison] = {
    "change_success_rate": ">",
    "emergency_changes_pct": "<",
    "rollback_rate": "<",
    "changes_with_tickets_pct": ">=",
    "unauthorized_changes": "<=",
    "approval_lead_time_hours": "<",
    "mean_time_to_deploy_minutes": "<",
    "tag_compliance_pct": ">=",
}

_EMPTY = frozenset({"", "none", "-", "{}"})


def parse_kpi_targets(value: Any) -> Any:
    """The ``kpi-targets`` parameter: a JSON object of KPI name -> target (``none`` for the defaults).

    Validated against :class:`KpiTargets` here, so a misspelt KPI name fails when the policy
    is read instead of silently keeping the default target.
    """
    if isinstance(value, str):
        value = {} if value.strip().lower() in _EMPTY else json.loads(value)
    if not isinstance(value, dict):
        raise ValueError("kpi-targets must be a JSON object of KPI name -> target")
    KpiTargets.model_validate(value)
    return value
