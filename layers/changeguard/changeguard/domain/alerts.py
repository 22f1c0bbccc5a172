"""One alert schema for every function (versioned), rendered for people and for machines."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from changeguard.domain.verdicts import Severity

SUBJECT_MAX = 100  # SNS rejects longer subjects.


class Alert(BaseModel):
    """What a person needs to act: what changed, who, when, which ticket, the verdict and why,
    what the suite did, and how to fix or release."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal["1"] = "1"
    alert_id: str
    kind: str
    function: str
    severity: Severity
    verdict: str | None = None
    subject: str
    summary: str
    change_id: str
    event_time: datetime | None = None
    account: str | None = None
    region: str | None = None
    resource_type: str | None = None
    resources: tuple[str, ...] = ()
    actor: str | None = None
    ticket_id: str | None = None
    reasons: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    remediation: str | None = None
    details: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @field_validator("subject", mode="before")
    @classmethod
    def _fit_subject(cls, value: str) -> str:
        # SNS subjects: at most 100 printable ASCII characters, no line breaks.
        text = " ".join(str(value).split())
        text = text.encode("ascii", "replace").decode("ascii")
        return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 3] + "..."

    @staticmethod
    def make_id(change_id: str, function: str, kind: str) -> str:
        """At most one alert per change, function and kind: this id is the dedupe key."""
        return f"{change_id}/{function}/{kind}"

    def body_text(self) -> str:
        lines = [
            f"[{self.severity.value.upper()}] {self.subject}",
            "",
            self.summary,
            "",
            f"What changed : {', '.join(self.resources) or '-'} ({self.resource_type or '-'})",
            f"Who          : {self.actor or '-'}",
            f"When         : {self.event_time.isoformat() if self.event_time else '-'}",
            f"Where        : account {self.account or '-'}, region {self.region or '-'}",
            f"Ticket       : {self.ticket_id or 'none'}",
            f"Verdict      : {self.verdict or '-'}",
        ]
        if self.reasons:
            lines += ["", "Why:"] + [f"  - {r}" for r in self.reasons]
        lines += ["", "What ChangeGuard did:"] + [f"  - {a}" for a in (self.actions or ("recorded it",))]
        if self.remediation:
            lines += ["", f"How to fix: {self.remediation}"]
        lines += ["", f"Change id: {self.change_id}  Alert id: {self.alert_id}  Function: {self.function}"]
        return "\n".join(lines)

    def to_json(self) -> str:
        return self.model_dump_json()

    def chatbot_payload(self) -> str:
        """AWS Chatbot custom-notification format, so the alert renders in Slack or Teams."""
        return json.dumps(
            {
                "version": "1.0",
                "source": "custom",
                "id": self.alert_id,
                "content": {
                    "textType": "client-markdown",
                    "title": f"{self.severity.value.upper()}: {self.subject}",
                    "description": self.body_text()[:3500],
                    "keywords": [k for k in (self.verdict, self.severity.value, self.account) if k],
                },
                "metadata": {
                    "threadId": self.change_id,
                    "summary": self.subject,
                    "eventType": self.kind,
                    "relatedResources": list(self.resources),
                    "additionalContext": {"alert": self.model_dump(mode="json")},
                },
            }
        )
