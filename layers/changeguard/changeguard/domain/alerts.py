"""One alert schema for every function (versioned), rendered for people and for machines.

Renderings of one :class:`Alert`:

* ``subject``: at most 100 printable ASCII characters, one line (SNS's rule for subjects);
* ``body_text()``: plain text a person can act on, for e-mail: what changed, who, when, which
  ticket, the verdict and why, what ChangeGuard did, how to fix or release;
* ``to_json()``: the full alert, for machines (SQS, Lambda, HTTPS subscribers);
* ``chatbot_payload()``: AWS Chatbot (Amazon Q Developer in chat applications) custom
  notification, so the alert renders in Slack or Microsoft Teams.

``schema_version`` changes when a field is removed or changes meaning; new optional fields keep
it, so consumers should ignore fields they do not know.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.verdicts import Severity

SCHEMA_VERSION: Final = "1"
SUBJECT_MAX = 100  # SNS rejects longer subjects.
#: Chat messages stay readable (and inside Slack's 3,000-character section limit).
CHAT_DESCRIPTION_MAX = 3000


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Alert(BaseModel):
    """What a person needs to act: what changed, who, when, which ticket, the verdict and why,
    what the suite did, and how to fix or release. At most one per change, function and kind."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    schema_version: Literal["1"] = SCHEMA_VERSION
    alert_id: str
    kind: str
    function: str
    severity: Severity
    verdict: str | None = None
    subject: str = Field(min_length=1)
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
    #: How to undo what ChangeGuard did (release a quarantine, clear a mark), when it did something.
    release: str | None = None
    details: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @field_validator("subject", mode="before")
    @classmethod
    def _fit_subject(cls, value: Any) -> str:
        # SNS subjects: ASCII, no line breaks or control characters, at most 100 characters,
        # starting with a letter, number or punctuation mark.
        text = " ".join(str(value).split())
        text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text).strip()
        return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 3].rstrip() + "..."

    @staticmethod
    def make_id(change_id: str, function: str, kind: str) -> str:
        """At most one alert per change, function and kind: this id is the dedupe key."""
        return f"{change_id}/{function}/{kind}"

    def next_steps(self) -> list[str]:
        steps = []
        if self.remediation:
            steps.append(f"Fix: {self.remediation}")
        if self.release:
            steps.append(f"Release: {self.release}")
        return steps

    def body_text(self) -> str:
        """The plain-text alert a person acts on (e-mail subscribers receive exactly this)."""
        severity = self.severity.value.upper()
        lines = [
            f"[{severity}] {self.subject}",
            "",
            self.summary,
            "",
            f"What changed : {', '.join(self.resources) or '-'} ({self.resource_type or '-'})",
            f"Who          : {self.actor or '-'}",
            f"When         : {_when(self.event_time)}",
            f"Where        : account {self.account or '-'}, region {self.region or '-'}",
            f"Ticket       : {self.ticket_id or 'none'}",
            f"Verdict      : {self.verdict or '-'} (severity {self.severity.value})",
        ]
        lines += ["", "Why:"] + [f"  - {r}" for r in (self.reasons or ("see the verdict above",))]
        lines += ["", "What ChangeGuard did:"] + [f"  - {a}" for a in (self.actions or ("recorded it",))]
        lines += ["", f"How to fix: {self.remediation or 'no action needed; the change is on record.'}"]
        if self.release:
            lines += [f"How to release: {self.release}"]
        if self.details:
            lines += ["", "Details:"] + [f"  {k}: {v}" for k, v in sorted(self.details.items())]
        lines += [
            "",
            f"Change id: {self.change_id}",
            f"Alert id: {self.alert_id} (function {self.function}, kind {self.kind}, schema {self.schema_version})",
        ]
        return "\n".join(lines)

    def to_json(self) -> str:
        return self.model_dump_json()

    def chatbot_payload(self) -> str:
        """AWS Chatbot custom-notification format (version 1.0), so the alert renders in Slack or Teams.

        ``additionalContext`` values must be strings: the full alert travels there as JSON text.
        """
        description = self.body_text().split("\n", 2)[2]  # the subject is the title already
        if len(description) > CHAT_DESCRIPTION_MAX:
            description = description[: CHAT_DESCRIPTION_MAX - 3] + "..."
        context = {
            "alert_id": self.alert_id,
            "change_id": self.change_id,
            "severity": self.severity.value,
            "verdict": self.verdict or "NONE",
            "function": self.function,
            "kind": self.kind,
            "account": self.account or "unknown",
            "region": self.region or "unknown",
            "schema_version": self.schema_version,
            "alert": self.to_json(),
        }
        return json.dumps(
            {
                "version": "1.0",
                "source": "custom",
                "id": self.alert_id,
                "content": {
                    "textType": "client-markdown",
                    "title": f"{_EMOJI.get(self.severity.value, '')}{self.severity.value.upper()}: {self.subject}",
                    "description": f"```\n{description}\n```",
                    "nextSteps": self.next_steps(),
                    "keywords": [k for k in (self.verdict, self.severity.value, self.account, self.function) if k],
                },
                "metadata": {
                    "threadId": self.change_id,
                    "summary": self.subject,
                    "eventType": self.kind,
                    "relatedResources": list(self.resources),
                    "additionalContext": context,
                },
            }
        )

    @classmethod
    def from_chatbot(cls, payload: str | dict[str, Any]) -> Alert:
        """The alert inside a Chatbot notification (subscribers of a chatbot-format topic)."""
        data = json.loads(payload) if isinstance(payload, str) else payload
        inner = data["metadata"]["additionalContext"]["alert"]
        return cls.model_validate_json(inner) if isinstance(inner, str) else cls.model_validate(inner)


_EMOJI = {"critical": ":rotating_light: ", "high": ":warning: ", "medium": ":large_orange_diamond: "}


def alert_entry(alert: Alert, event_time: datetime, now: datetime, suffix: str = "") -> LedgerEntry:
    """The alert as a ledger fact; the publisher sends it from the table's stream (an outbox).

    ``suffix`` tells apart the alerts one function raises more than once about the same change id
    (an outage's number, the fact it goes with): ``ALERT#<function>#<kind>#<suffix>``.
    """
    return LedgerEntry(
        change_id=alert.change_id,
        entry=f"ALERT#{alert.function}#{alert.kind}" + (f"#{suffix}" if suffix else ""),
        kind=EntryKind.ALERT,
        function=alert.function,
        event_time=event_time,
        recorded_at=now,
        verdict=alert.verdict,
        severity=alert.severity.value,
        ticket_id=alert.ticket_id,
        account=alert.account,
        region=alert.region,
        body={"alert": alert.model_dump(mode="json")},
    )
