"""Ledger entries: append-only facts about a change, each with a hash of its content."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EntryKind(StrEnum):
    VERDICT = "VERDICT"
    RECHECK = "RECHECK"
    ALERT = "ALERT"
    MARK = "MARK"
    QUARANTINE = "QUARANTINE"
    RELEASE = "RELEASE"
    STOP = "STOP"
    ROLLBACK = "ROLLBACK"
    DEPLOYMENT = "DEPLOYMENT"
    CALENDAR = "CALENDAR"
    OUTAGE = "OUTAGE"
    DIGEST = "DIGEST"
    HEARTBEAT = "HEARTBEAT"  # issue 8: canaries sent and arrived, heartbeat outages


class LedgerEntry(BaseModel):
    """One fact. ``(change_id, entry)`` is the key; a second write of the same key is a no-op."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    change_id: str
    entry: str
    kind: EntryKind
    function: str
    event_time: datetime
    recorded_at: datetime
    verdict: str | None = None
    severity: str | None = None
    ticket_id: str | None = None
    account: str | None = None
    region: str | None = None
    body: dict[str, Any] = Field(default_factory=dict)

    @property
    def day(self) -> str:
        return self.event_time.astimezone(UTC).strftime("%Y-%m-%d")

    @property
    def index_key(self) -> str:
        """Sort key of the by-day index: verdict first, so a day's verdicts are one range query."""
        return f"{self.verdict or '-'}#{self.event_time.astimezone(UTC).isoformat()}#{self.change_id}#{self.entry}"

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
