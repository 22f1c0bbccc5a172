"""The ledger's daily digest chain: like CloudTrail's digest files, it makes tampering evident.

Each ledger item carries ``content_hash`` (SHA-256 of its canonical JSON). Once a day has
settled, the digest of day D is::

    digest(D) = sha256(previous_digest + "".join(sorted(item hashes of D)))   # hex, ASCII

where ``previous_digest`` is the digest of D-1 (64 zeros for the first day of the chain). The
digest is stored as JSON, with the list of the items it covers, in the evidence bucket
(versioned, optionally under Object Lock), where the ledger's writers cannot reach it.

Verification reads the day's items again and recomputes each hash from the item's content:
an item deleted (*missing*), changed (*altered*) or added afterwards with a back-dated
``recorded_at`` (*inserted*) shows, and so does a digest file edited out of the chain. Items
recorded after the digest was written (*late*: an event delivered after the settle time) are
reported as not covered, never silently accepted. So are items recorded less than ``IN_FLIGHT``
before the digest's cut-off (``created_at``, taken before the day's items are read): their
writers may still have been committing them, and the by-day index is eventually consistent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

GENESIS = "0" * 64
#: How long a day stays open before its digest is written: EventBridge retries a delivery for
#: up to 24 h, plus margin. Items arriving later are reported as late.
SETTLE = timedelta(hours=26)
#: How long before the digest's cut-off an item may be recorded and still be missing from the
#: digest without tampering: a writer stamps ``recorded_at`` before its write commits (a Lambda
#: runs up to 15 minutes), and the by-day index the digest reads is eventually consistent.
IN_FLIGHT = timedelta(minutes=15)
#: Days digested before the first due day when a chain starts (covers the days since deployment).
INITIAL_DAYS = 7


class _Own(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


def item_key(change_id: str, entry: str) -> str:
    return f"{change_id}|{entry}"


class DigestItem(_Own):
    change_id: str
    entry: str
    hash: str

    @property
    def key(self) -> str:
        return item_key(self.change_id, self.entry)


class LedgerItemView(_Own):
    """A ledger item as verification sees it.

    ``content_hash`` is recomputed from the item's content now (``unreadable:...`` when the
    item no longer parses); ``stored_hash`` is the ``content_hash`` attribute written with it.
    """

    change_id: str
    entry: str
    content_hash: str
    stored_hash: str | None = None
    recorded_at: datetime | None = None

    @property
    def key(self) -> str:
        return item_key(self.change_id, self.entry)

    @property
    def consistent(self) -> bool:
        return self.stored_hash is None or self.stored_hash == self.content_hash


def chain_hash(previous_digest: str, hashes: Iterable[str]) -> str:
    """``sha256(previous_digest + sorted hashes)``, hex."""
    material = previous_digest + "".join(sorted(hashes))
    return hashlib.sha256(material.encode("ascii")).hexdigest()


class DailyDigest(_Own):
    """One day's digest: the chain link and the items it covers, signed off when written."""

    schema_version: Literal["1"] = "1"
    algorithm: Literal["SHA-256"] = "SHA-256"
    day: date
    previous_day: date
    previous_digest: str
    chain_start: bool = False
    created_at: datetime
    item_count: int
    items: tuple[DigestItem, ...]
    digest: str
    #: Items whose stored hash already differed from their content when the digest was written.
    inconsistent_at_digest: tuple[str, ...] = ()

    def recompute(self) -> str:
        return chain_hash(self.previous_digest, (i.hash for i in self.items))

    @property
    def self_consistent(self) -> bool:
        return self.item_count == len(self.items) and self.recompute() == self.digest


def make_digest(
    day: date,
    items: Sequence[LedgerItemView],
    previous: DailyDigest | None,
    created_at: datetime,
) -> DailyDigest:
    """The digest of ``day``, chained to ``previous`` (None: the chain starts here).

    The hash of each item is the one its writer stored; an item whose content no longer
    matches it is listed in ``inconsistent_at_digest`` (it was changed before the digest).
    """
    covered = sorted(
        (DigestItem(change_id=i.change_id, entry=i.entry, hash=i.stored_hash or i.content_hash) for i in items),
        key=lambda i: (i.change_id, i.entry),
    )
    previous_digest = previous.digest if previous else GENESIS
    return DailyDigest(
        day=day,
        previous_day=day - timedelta(days=1),
        previous_digest=previous_digest,
        chain_start=previous is None,
        created_at=created_at,
        item_count=len(covered),
        items=tuple(covered),
        digest=chain_hash(previous_digest, (i.hash for i in covered)),
        inconsistent_at_digest=tuple(sorted(i.key for i in items if not i.consistent)),
    )


def is_due(day: date, now: datetime, settle: timedelta = SETTLE) -> bool:
    """A day is digested once it has ended and settled."""
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return now >= end + settle


def last_due_day(now: datetime, settle: timedelta = SETTLE) -> date:
    return (now.astimezone(UTC) - settle).date() - timedelta(days=1)


def days_to_digest(latest: date | None, now: datetime, limit: int, settle: timedelta = SETTLE) -> list[date]:
    """The due days after the ``latest`` digest, oldest first, at most ``limit`` (the next run continues).

    With no digest at all the chain starts ``INITIAL_DAYS`` before the last due day.
    """
    last = last_due_day(now, settle)
    first = latest + timedelta(days=1) if latest else last - timedelta(days=INITIAL_DAYS - 1)
    out: list[date] = []
    day = first
    while day <= last and len(out) < limit:
        out.append(day)
        day += timedelta(days=1)
    return out


# -- verification --------------------------------------------------------------------------------
class DayStatus(StrEnum):
    VERIFIED = "verified"
    LATE_ITEMS = "late_items"  # verified, plus items recorded after the digest (not covered)
    TAMPERED = "tampered"
    UNDIGESTED = "undigested"  # due, but no digest: nothing proves the day's items
    PENDING = "pending"  # not settled yet
    BEFORE_CHAIN = "before_chain"  # before the first digest, and no items

    @property
    def ok(self) -> bool:
        return self not in (DayStatus.TAMPERED, DayStatus.UNDIGESTED)


class DayVerification(_Own):
    day: date
    status: DayStatus
    digest: str | None = None
    items_in_digest: int = 0
    items_in_ledger: int = 0
    missing: tuple[str, ...] = ()
    altered: tuple[str, ...] = ()
    inserted: tuple[str, ...] = ()
    late: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


class VerificationReport(_Own):
    """The result of checking a period's ledger items against their daily digests."""

    period: str
    checked_at: datetime
    chain_start: date | None
    days: tuple[DayVerification, ...]
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(d.status.ok for d in self.days)

    def count(self, status: DayStatus) -> int:
        return sum(1 for d in self.days if d.status is status)

    @property
    def summary(self) -> str:
        parts = [f"{self.count(s)} {s.value.replace('_', ' ')}" for s in DayStatus if self.count(s)]
        verdict = "OK" if self.ok else "FAILED"
        return f"{verdict}: " + (", ".join(parts) or "no days") + (f" ({self.note})" if self.note else "")


def verify_day(
    day: date,
    digest: DailyDigest | None,
    items: Sequence[LedgerItemView],
    *,
    previous: DailyDigest | None,
    chain_start: date | None,
    now: datetime,
    settle: timedelta = SETTLE,
) -> DayVerification:
    """Check one day's items against its digest, and the digest against the chain."""
    if digest is None:
        if not is_due(day, now, settle):
            status = DayStatus.PENDING
        elif (chain_start is None or day < chain_start) and not items:
            status = DayStatus.BEFORE_CHAIN
        else:
            status = DayStatus.UNDIGESTED
        uncovered = (
            ("no digest for a settled day: its items are not covered",) if status is DayStatus.UNDIGESTED else ()
        )
        return DayVerification(day=day, status=status, items_in_ledger=len(items), problems=uncovered)

    problems: list[str] = []
    if digest.day != day:
        problems.append(f"the digest stored for {day} is the digest of {digest.day}")
    if not digest.self_consistent:
        problems.append("the digest file does not match its own item list (edited)")
    if previous is not None:
        if digest.previous_digest != previous.digest:
            problems.append(f"previous_digest does not match the digest of {previous.day} (chain broken)")
    elif not digest.chain_start or (chain_start is not None and day != chain_start):
        problems.append(f"{day - timedelta(days=1)} has no digest, yet this digest does not start the chain")
    if digest.inconsistent_at_digest:
        problems.append(
            f"{len(digest.inconsistent_at_digest)} item(s) were already altered when the digest was written"
        )

    expected = {i.key: i.hash for i in digest.items}
    current = {i.key: i for i in items}
    missing = sorted(k for k in expected if k not in current)
    altered = sorted(
        k for k, view in current.items() if (k in expected and view.content_hash != expected[k]) or not view.consistent
    )
    extra = [view for k, view in current.items() if k not in expected]
    settled_at = digest.created_at - IN_FLIGHT  # recorded earlier and still not covered: inserted
    inserted = sorted(v.key for v in extra if v.recorded_at is None or v.recorded_at <= settled_at)
    late = sorted(v.key for v in extra if v.recorded_at is not None and v.recorded_at > settled_at)
    if problems or missing or altered or inserted:
        status = DayStatus.TAMPERED
    elif late:
        status = DayStatus.LATE_ITEMS
    else:
        status = DayStatus.VERIFIED
    return DayVerification(
        day=day,
        status=status,
        digest=digest.digest,
        items_in_digest=digest.item_count,
        items_in_ledger=len(items),
        missing=tuple(missing),
        altered=tuple(altered),
        inserted=tuple(inserted),
        late=tuple(late),
        problems=tuple(problems),
    )


def verify_period(
    label: str,
    days: Sequence[date],
    digests: Mapping[date, DailyDigest],
    items: Mapping[date, Sequence[LedgerItemView]],
    *,
    chain_start: date | None,
    now: datetime,
    settle: timedelta = SETTLE,
    note: str = "",
) -> VerificationReport:
    """Verify every day of a period. ``digests`` should include the day before the first (the link)."""
    results = [
        verify_day(
            day,
            digests.get(day),
            items.get(day, ()),
            previous=digests.get(day - timedelta(days=1)),
            chain_start=chain_start,
            now=now,
            settle=settle,
        )
        for day in days
    ]
    return VerificationReport(period=label, checked_at=now, chain_start=chain_start, days=tuple(results), note=note)
