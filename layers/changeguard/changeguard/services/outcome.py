"""What a handler returns: the decision in a form the harness, tests and logs can read."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Outcome(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    function: str
    change_id: str | None = None
    verdict: str | None = None
    severity: str | None = None
    actions: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    duplicate: bool = False
    alert_ids: list[str] = Field(default_factory=list)
