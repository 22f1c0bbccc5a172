"""Tunable policy: defaults come from template parameters, live values from Parameter Store."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from changeguard.domain.deployments import HealthCriteria, parse_health_criteria  # issue 5
from changeguard.domain.errors import ConfigurationError
from changeguard.domain.kpi_targets import parse_kpi_targets  # issue 7
from changeguard.domain.tickets import DEFAULT_REF_ORDER, TicketRefSource


class EnforcementMode(StrEnum):
    OBSERVE = "observe"
    ENFORCE = "enforce"


_EMPTY = frozenset({"", "none", "-"})  # Parameter Store values cannot be empty


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip().lower() in _EMPTY:
            return ()
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return value


class Policy(BaseModel):
    """Every tunable setting, with the documented defaults."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    enforcement_mode: EnforcementMode = EnforcementMode.OBSERVE
    ticket_id_pattern: str = r"CHG-\d{4,}"
    ticket_tag_key: str = "ChangeTicket"
    required_tag_keys: tuple[str, ...] = ("ChangeTicket", "Environment", "Owner")
    exempt_principal_arns: tuple[str, ...] = ()
    required_approvals: int = Field(default=2, ge=0, le=10)
    emergency_approval_hours: float = Field(default=24.0, gt=0)
    ticket_ref_order: tuple[TicketRefSource, ...] = DEFAULT_REF_ORDER
    identity_map: dict[str, str] = Field(default_factory=dict)
    quarantine_grace_hours: float = Field(default=24.0, ge=0)
    quarantine_max_resources: int = Field(default=10, ge=0)
    change_calendar_names: tuple[str, ...] = ()
    calendar_fail_closed: bool = True
    bake_minutes: int = Field(default=30, ge=0)
    max_stops_per_app_hour: int = Field(default=3, ge=1)
    # -- emergency follow-up (issue 3) -------------------------------------------------------
    # Days of the ledger's by-day index the follow-up re-checks for EMERGENCY/UNVERIFIED changes.
    follow_up_lookback_days: int = Field(default=7, ge=1, le=90)
    # -- tag enforcement and quarantine (issue 6) --------------------------------------------
    # Roles the quarantine bucket policy must never lock out (ARNs, wildcards allowed).
    break_glass_role_arns: tuple[str, ...] = ()
    # -- deployment guard (issue 5) ----------------------------------------------------------
    # application/group -> health criteria, JSON in Parameter Store (see domain/deployments.py).
    health_criteria: dict[str, HealthCriteria] = Field(default_factory=dict)
    # -- KPI report targets (issue 7) ---------------------------------------------------------
    # KPI name -> target, JSON in Parameter Store; names are checked (see domain/kpi_targets.py).
    kpi_targets: dict[str, float] = Field(default_factory=dict)
    # -- hardening (issue 8) ------------------------------------------------------------------
    # Hours of CloudTrail (LookupEvents, at most 90 days) the reconciliation sweep reads for an
    # account-region it has no mark for (the first run, a pair added); one behind reads to its mark.
    reconcile_lookback_hours: int = Field(default=24, ge=1, le=2160)
    # Minutes a run re-reads before where the last one finished (issue 9): CloudTrail's event
    # history may show a call some minutes after it was made, so a pair read to the end is
    # complete only up to this long before the run.
    reconcile_settle_minutes: int = Field(default=60, ge=5, le=1440)
    # Minutes after which a heartbeat canary that has not arrived opens a heartbeat outage.
    heartbeat_grace_minutes: int = Field(default=30, ge=5, le=1440)

    _lists = field_validator(
        "required_tag_keys",
        "exempt_principal_arns",
        "ticket_ref_order",
        "change_calendar_names",
        mode="before",
    )(_csv)
    _break_glass = field_validator("break_glass_role_arns", mode="before")(_csv)  # issue 6
    _health = field_validator("health_criteria", mode="before")(parse_health_criteria)  # issue 5
    _kpi_targets = field_validator("kpi_targets", mode="before")(parse_kpi_targets)  # issue 7

    @model_validator(mode="after")
    def _settle_within_lookback(self) -> Policy:
        # A pair's first run reads the look-back and marks it complete up to the settle margin
        # before the run: a margin as long as the look-back would claim time that was never read.
        if self.reconcile_settle_minutes >= self.reconcile_lookback_hours * 60:
            raise ValueError(
                f"reconcile_settle_minutes ({self.reconcile_settle_minutes}) must be smaller than"
                f" reconcile_lookback_hours ({self.reconcile_lookback_hours} h)"
            )
        return self

    @field_validator("identity_map", mode="before")
    @classmethod
    def _json_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("ticket_id_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value

    @model_validator(mode="after")
    def _follow_up_outlasts_the_deadline(self) -> Policy:
        # The follow-up stops looking at a change follow_up_lookback_days after it; a deadline at or
        # past that would never be found overdue.
        if self.emergency_approval_hours >= self.follow_up_lookback_days * 24:
            raise ValueError(
                f"emergency-approval-hours ({self.emergency_approval_hours:g}) must be less than"
                f" follow-up-lookback-days * 24 ({self.follow_up_lookback_days * 24}): the follow-up stops"
                " looking at a change after follow-up-lookback-days, before its approval would be overdue"
            )
        return self

    @cached_property
    def ticket_pattern(self) -> re.Pattern[str]:
        return re.compile(self.ticket_id_pattern)

    @property
    def enforcing(self) -> bool:
        return self.enforcement_mode is EnforcementMode.ENFORCE

    @classmethod
    def from_parameters(cls, values: Mapping[str, str]) -> Policy:
        """Build from Parameter Store names (``enforcement-mode`` -> ``enforcement_mode``).

        Names the model does not know are rejected: a typo in a parameter name must not
        silently leave the default in force.
        """
        data = {name.rsplit("/", 1)[-1].replace("-", "_"): v for name, v in values.items()}
        try:
            return cls.model_validate(data)
        except (ValidationError, ValueError, re.error) as exc:
            raise ConfigurationError(f"invalid ChangeGuard policy parameters: {exc}") from exc
