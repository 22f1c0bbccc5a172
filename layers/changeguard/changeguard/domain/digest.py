"""The ledger's daily digest chain: like CloudTrail's digest files, it makes tampering evident.

Each ledger item carries ``content_hash`` (SHA-256 of its canonical JSON). Once a day has
settled, the digest of day D is::

    digest(D) = sha256(previous_digest + "".join(sorted(item hashes of D)))   # hex, ASCII

where ``previous_digest`` is the digest of D-1 (64 zeros for the first day of the chain). The
digest is stored as JSON, with the list of the items it covers, in the evidence bucket
(versioned, optionally under Object Lock), where the ledger's writers cannot reach it.

Items are filed under their ``event_time``'s day, but some are recorded days later: a follow-up's
RECHECK (a re-judgement, a retro-approval) and a reconciliation sweep's VERDICT take the change's
own time, so they land on a day whose digest was written long before. Those decide verdicts, so
each digest (``schema_version`` "2") also covers the *late* items of its day: the items RECORDED
that day (``recorded_at``) but filed under one of the ``LATE_LOOKBACK_DAYS`` days before it
(from ``late_since``). Their hashes are chained after the day's own::

    digest(D) = sha256(previous_digest + sorted(item hashes of D)
                       + "|late:" + late_since + ":" + sorted(late item hashes))

A digest of schema "1" (written before late items were covered) keeps the first formula and covers
no late items. The by-day index is keyed by event day, so the writer finds a day's late items by
reading the look-back's days again (cached across one run); an item filed further back than
``late_since`` stays reported as late (not covered), as a schema "1" digest leaves every late item.

Verification reads the day's items again and recomputes each hash from the item's content:
an item deleted (*missing*), changed (*altered*) or added afterwards with a back-dated
``recorded_at`` (*inserted*) shows, and so does a digest file edited out of the chain. An item
recorded after its day's digest is checked against the digest of the day it was recorded: listed
there, it is covered (and missing or altered when deleted or changed); not listed although that
digest searched its day, or that day settled with no digest, it is *inserted*. Items no digest
can cover yet (their recorded day not digested yet, or searched by no digest) are reported as
*late*, never silently accepted. So are items recorded less than ``IN_FLIGHT`` before the digest's
cut-off (``created_at``, taken before the day's items are read): their writers may still have
been committing them, and the by-day index is eventually consistent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

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
#: How many days before its own a digest searches for items recorded on its day (late items). The
#: follow-up files a RECHECK on the change's day up to ``follow_up_lookback_days`` + 1 days later
#: (default 7: 8 days back); the reconciliation sweep files a missed call's VERDICT on its day, 24 h
#: back by default. Each day searched is every shard of the by-day index again, so this is bounded:
#: a filter on ``recorded_at`` would not make it cheaper, since "a Query consumes the same amount of
#: read capacity, regardless of whether a filter expression is present" (DynamoDB Developer Guide).
LATE_LOOKBACK_DAYS = 10


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


class LateItem(DigestItem):
    """An item recorded on the digest's day but filed under ``day``, an earlier day."""

    day: date


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


def chain_hash(
    previous_digest: str, hashes: Iterable[str], late: Iterable[str] | None = None, late_since: date | None = None
) -> str:
    """``sha256(previous_digest + sorted hashes)``, hex; with ``late`` (schema "2") the late section after it."""
    material = previous_digest + "".join(sorted(hashes))
    if late is not None:
        material += f"|late:{late_since.isoformat() if late_since else ''}:" + "".join(sorted(late))
    return hashlib.sha256(material.encode("ascii")).hexdigest()


class DailyDigest(_Own):
    """One day's digest: the chain link and the items it covers, signed off when written."""

    schema_version: Literal["1", "2"] = "2"
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
    #: Schema "2": the items recorded on ``day`` but filed under a day from ``late_since`` to the
    #: day before. None (schema "1"): the digest covers no late items.
    late_since: date | None = None
    late: tuple[LateItem, ...] | None = None

    @model_validator(mode="after")
    def _late_matches_schema(self) -> DailyDigest:
        if (self.schema_version == "2") != (self.late is not None and self.late_since is not None):
            raise ValueError('a schema "2" digest has late and late_since, a schema "1" digest neither')
        return self

    def recompute(self) -> str:
        late = None if self.late is None else (i.hash for i in self.late)
        return chain_hash(self.previous_digest, (i.hash for i in self.items), late, self.late_since)

    @property
    def self_consistent(self) -> bool:
        return self.item_count == len(self.items) and self.recompute() == self.digest

    def searched(self, day: date) -> bool:
        """Whether this digest's late section searched ``day`` (so covers every late item filed there)."""
        return self.late_since is not None and self.late_since <= day < self.day


def recorded_on(view: LedgerItemView, day: date) -> bool:
    return view.recorded_at is not None and view.recorded_at.astimezone(UTC).date() == day


def make_digest(
    day: date,
    items: Sequence[LedgerItemView],
    previous: DailyDigest | None,
    created_at: datetime,
    earlier: Mapping[date, Sequence[LedgerItemView]] | None = None,
    late_since: date | None = None,
) -> DailyDigest:
    """The digest of ``day``, chained to ``previous`` (None: the chain starts here).

    The hash of each item is the one its writer stored; an item whose content no longer
    matches it is listed in ``inconsistent_at_digest`` (it was changed before the digest).
    ``earlier`` holds the items of the days from ``late_since`` (default: ``LATE_LOOKBACK_DAYS``
    back) to the day before: those recorded on ``day`` are its late items. Without ``earlier`` the
    digest searched no earlier day (``late_since`` is ``day``), and says so.
    """
    covered = sorted(
        (DigestItem(change_id=i.change_id, entry=i.entry, hash=i.stored_hash or i.content_hash) for i in items),
        key=lambda i: (i.change_id, i.entry),
    )
    since = late_since or (day if earlier is None else day - timedelta(days=LATE_LOOKBACK_DAYS))
    late_views = [
        (d, v) for d, views in (earlier or {}).items() if since <= d < day for v in views if recorded_on(v, day)
    ]
    late = sorted(
        (
            LateItem(change_id=v.change_id, entry=v.entry, hash=v.stored_hash or v.content_hash, day=d)
            for d, v in late_views
        ),
        key=lambda i: (i.day, i.change_id, i.entry),
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
        digest=chain_hash(previous_digest, (i.hash for i in covered), (i.hash for i in late), since),
        inconsistent_at_digest=tuple(
            sorted({i.key for i in items if not i.consistent} | {v.key for _, v in late_views if not v.consistent})
        ),
        late_since=since,
        late=tuple(late),
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
    covering: Mapping[date, DailyDigest] | None = None,
) -> DayVerification:
    """Check one day's items against its digest, and the digest against the chain.

    ``covering`` holds the digests (self-consistent ones) of the days after, whose late sections
    list items of this day recorded on theirs: each such item must still be here, unchanged.
    """
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
    # Listed by a later digest's late section: covered there (deleted or changed since: missing, altered).
    listed: dict[str, str] = {}
    listed_by: dict[str, date] = {}
    for later in (covering or {}).values():
        for late_item in later.late or ():
            if late_item.day == day and later.day > day:
                listed[late_item.key] = late_item.hash
                listed_by[late_item.key] = later.day
    gone = {k for k in listed if k not in current}
    changed = {k for k, h in listed.items() if k in current and current[k].content_hash != h}
    for key in sorted(gone | changed):
        problems.append(f"{key} (recorded later) differs from the late section of the digest of {listed_by[key]}")
    missing = sorted(set(missing) | gone)
    altered = sorted(set(altered) | changed)
    settled_at = digest.created_at - IN_FLIGHT  # recorded earlier and still not covered: inserted
    inserted: list[str] = []
    late: list[str] = []
    for view in extra:
        if view.recorded_at is None or view.recorded_at <= settled_at:
            inserted.append(view.key)
        elif view.key not in listed:
            (inserted if _uncovered(view, day, covering or {}, chain_start, now, settle) else late).append(view.key)
    inserted.sort()
    late.sort()
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


def _uncovered(
    view: LedgerItemView,
    day: date,
    covering: Mapping[date, DailyDigest],
    chain_start: date | None,
    now: datetime,
    settle: timedelta,
) -> bool:
    """A late item of ``day`` that the digest of its recorded day should list and does not.

    That digest searched ``day`` and was cut off after the item was recorded (plus ``IN_FLIGHT``), or
    the recorded day has no digest although the chain has moved past it (a later day's digest is
    stored: the recorded day is a hole in it), within ``LATE_LOOKBACK_DAYS``. Otherwise no digest can
    cover it (yet): its recorded day is pending - settled but not digested yet, as between the settle
    time and the daily run (03:15 UTC), or while a failed run is retried - or its digest is of schema
    "1" or did not search back so far. Calling such an item inserted would raise a critical
    ``ledger-integrity`` alert over a ledger nobody touched.
    """
    assert view.recorded_at is not None
    recorded = view.recorded_at.astimezone(UTC).date()
    later = covering.get(recorded)
    if later is None:  # a digest written now would search back LATE_LOOKBACK_DAYS
        searched = recorded - timedelta(days=LATE_LOOKBACK_DAYS) <= day
        moved_on = any(digested > recorded for digested in covering)
        return (
            searched
            and moved_on
            and is_due(recorded, now, settle)
            and chain_start is not None
            and recorded >= chain_start
        )
    return later.searched(day) and view.recorded_at <= later.created_at - IN_FLIGHT


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
    """Verify every day of a period.

    ``digests`` should include the day before the first (the link) and the ``LATE_LOOKBACK_DAYS``
    after the last (their late sections cover the period's items recorded on their days).
    """
    covering = {d: g for d, g in digests.items() if g.self_consistent and g.day == d}
    results = [
        verify_day(
            day,
            digests.get(day),
            items.get(day, ()),
            previous=digests.get(day - timedelta(days=1)),
            chain_start=chain_start,
            now=now,
            settle=settle,
            covering=covering,
        )
        for day in days
    ]
    return VerificationReport(period=label, checked_at=now, chain_start=chain_start, days=tuple(results), note=note)
