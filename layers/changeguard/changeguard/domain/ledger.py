"""Ledger entries: append-only facts about a change, each with a hash of its content."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from changeguard.domain.errors import ConfigurationError

#: Shards of a day in the ledger's by-day index (issue 9). One index partition takes about 1,000
#: writes/s; the README's sizing section shows why 16 hold the organization-scale peak.
DEFAULT_DAY_SHARDS = 16
#: The shard number is two digits in the key (``YYYY-MM-DD#NN``), so keys of one day sort by shard.
MAX_DAY_SHARDS = 100
#: Above every character an entry key holds: ``prefix`` to ``prefix + KEY_END`` is the key range of
#: every entry starting with ``prefix`` (for ``Ledger.entries_between``; keys compare as UTF-8 bytes).
KEY_END = "\uffff"


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
    RECONCILED = "RECONCILED"  # issue 9: how far each account-region's CloudTrail was reconciled
    CONFIG = "CONFIG"  # a Config item of a call whose CloudTrail record is judged: evidence, not a verdict


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

    def day_shard(self, shards: int) -> str:
        """Partition key of the by-day index: the day and this change's shard (:func:`day_shard_of`)."""
        return day_shard_key(self.day, day_shard_of(self.change_id, shards))

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


def day_shard_of(change_id: str, shards: int) -> int:
    """The shard of a change among ``shards``: a stable hash of the ledger's partition key.

    Not random and not Python's ``hash()`` (salted per process): every writer, every retry and
    every duplicate delivery of an item puts it in the same shard, so a conditional put stays the
    only copy and readers know where it is. All entries of one change share a shard.
    """
    if not 1 <= shards <= MAX_DAY_SHARDS:
        raise ConfigurationError(f"day shards must be 1..{MAX_DAY_SHARDS}, not {shards}")
    digest = hashlib.sha256(change_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


def day_shard_key(day: str, shard: int) -> str:
    return f"{day}#{shard:02d}"


class DayShards(BaseModel):
    """How the by-day index is sharded: the count writers use now, then every count used before.

    Changing the count moves where *new* items go, never the items already written, so readers
    query every shard of every count ever used. With ``shard = hash % count`` the shards of a
    count ``n`` are ``0 .. n-1``, so that union is simply ``0 .. max(counts) - 1``. The counts
    are configuration rather than discovered from the items: an item's own count cannot tell a
    reader which partitions to query, and a day with few items may have none in a given shard.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    counts: tuple[int, ...] = (DEFAULT_DAY_SHARDS,)

    @field_validator("counts")
    @classmethod
    def _in_range(cls, counts: tuple[int, ...]) -> tuple[int, ...]:
        if not counts:
            raise ValueError("at least one shard count")
        bad = [n for n in counts if not 1 <= n <= MAX_DAY_SHARDS]
        if bad:
            raise ValueError(f"shard counts must be 1..{MAX_DAY_SHARDS}, not {bad}")
        return counts

    @classmethod
    def parse(cls, text: str) -> DayShards:
        """``"16"`` or, after a change, ``"32,16"`` (current first). Malformed: ConfigurationError."""
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ConfigurationError(f"LEDGER_DAY_SHARDS must be comma-separated counts, not {text!r}")
        try:
            return cls(counts=tuple(int(p) for p in parts))
        except ValidationError as exc:
            raise ConfigurationError(f"LEDGER_DAY_SHARDS {text!r}: {exc.errors()[0]['msg']}") from exc

    @property
    def write(self) -> int:
        return self.counts[0]

    def keys(self, day: str) -> list[str]:
        """Every index partition key of ``day`` a reader must query."""
        return [day_shard_key(day, s) for s in range(max(self.counts))]


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
