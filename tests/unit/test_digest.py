"""The daily digest chain: tampering with the ledger (altered, deleted, inserted items) is evident."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from changeguard.adapters.dynamodb import entry_to_item
from changeguard.domain.digest import (
    GENESIS,
    INITIAL_DAYS,
    LATE_LOOKBACK_DAYS,
    DailyDigest,
    DayStatus,
    chain_hash,
    days_to_digest,
    is_due,
    last_due_day,
    make_digest,
    verify_day,
    verify_period,
)
from changeguard.domain.errors import InvalidEventError
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.services.evidence import DigestService, DigestStore, digest_key
from changeguard.services.report import item_view
from fakes import FakeClock, MemoryBucket, ShardedDayIndex

D1 = date(2026, 11, 20)
D2 = date(2026, 11, 21)
AT = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
AFTER = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # both days settled
WRITTEN = datetime(2026, 11, 23, 3, 15, tzinfo=UTC)  # when the digests were written


def entry(cid: str, day: date = D2, **body: object) -> LedgerEntry:
    at = datetime(day.year, day.month, day.day, 10, 0, tzinfo=UTC)
    return LedgerEntry(
        change_id=cid,
        entry="VERDICT",
        kind=EntryKind.VERDICT,
        function="correlate_change",
        event_time=at,
        recorded_at=at + timedelta(minutes=1),
        verdict="AUTHORIZED",
        body={"note": "original", **body},
    )


def items(*entries: LedgerEntry) -> list[dict]:
    return [entry_to_item(e) for e in entries]


def views(raw: list[dict]):
    return [item_view(i)[0] for i in raw]


def chain(day_items: dict[date, list[dict]]) -> dict[date, DailyDigest]:
    out: dict[date, DailyDigest] = {}
    previous = None
    for day in sorted(day_items):
        previous = make_digest(day, views(day_items[day]), previous, created_at=WRITTEN)
        out[day] = previous
    return out


def check(day_items: dict[date, list[dict]], digests: dict[date, DailyDigest], now: datetime = AFTER):
    return verify_period(
        "test",
        sorted(day_items),
        digests,
        {d: views(i) for d, i in day_items.items()},
        chain_start=min(digests) if digests else None,
        now=now,
    )


@pytest.fixture
def ledger() -> dict[date, list[dict]]:
    return {D1: items(entry("a", D1), entry("b", D1)), D2: items(entry("c"), entry("d"), entry("e"))}


def test_the_digest_is_sha256_of_the_previous_digest_and_the_sorted_item_hashes(ledger):
    digests = chain(ledger)
    first, second = digests[D1], digests[D2]
    hashes = sorted(i["content_hash"]["S"] for i in ledger[D1])
    import hashlib

    # Schema "2": the (here empty) late section and the day it searched from follow the day's own hashes
    # (given no earlier days, a digest searched none: from its own day).
    since = D1.isoformat()
    assert first.digest == hashlib.sha256((GENESIS + "".join(hashes) + f"|late:{since}:").encode()).hexdigest()
    assert first.chain_start and first.previous_digest == GENESIS
    assert not second.chain_start and second.previous_digest == first.digest
    assert second.digest == chain_hash(first.digest, (i["content_hash"]["S"] for i in ledger[D2]), (), D2)
    assert second.item_count == 3 and {i.change_id for i in second.items} == {"c", "d", "e"}
    # Stored hashes round-trip: recomputing from the item's content gives the writer's hash.
    assert all(v.consistent for v in views(ledger[D2]))


def test_an_untouched_ledger_verifies(ledger):
    report = check(ledger, chain(ledger))
    assert report.ok and [d.status for d in report.days] == [DayStatus.VERIFIED, DayStatus.VERIFIED]


def test_an_altered_item_is_detected(ledger):
    digests = chain(ledger)
    # The attacker rewrites the body (and leaves the stored content_hash alone).
    body = json.loads(ledger[D2][1]["body"]["S"]) | {"note": "approved after all"}
    ledger[D2][1]["body"]["S"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    report = check(ledger, digests)
    assert not report.ok
    day = report.days[1]
    assert day.status is DayStatus.TAMPERED and day.altered == ("d|VERDICT",)
    assert day.missing == () and day.inserted == ()


def test_an_altered_item_with_a_recomputed_stored_hash_is_detected(ledger):
    digests = chain(ledger)
    # A careful attacker also recomputes content_hash: the digest still remembers the original.
    forged = entry("d", note="approved after all")
    ledger[D2][1] = entry_to_item(forged)
    day = check(ledger, digests).days[1]
    assert day.status is DayStatus.TAMPERED and day.altered == ("d|VERDICT",)


def test_a_deleted_item_is_detected(ledger):
    digests = chain(ledger)
    del ledger[D2][0]
    day = check(ledger, digests).days[1]
    assert day.status is DayStatus.TAMPERED and day.missing == ("c|VERDICT",)


def test_an_inserted_item_is_detected(ledger):
    digests = chain(ledger)
    # Back-dated: claims to have been recorded before the digest was written.
    ledger[D2].append(entry_to_item(entry("forged")))
    day = check(ledger, digests).days[1]
    assert day.status is DayStatus.TAMPERED and day.inserted == ("forged|VERDICT",)


def test_an_item_recorded_after_the_digest_is_late_not_silently_accepted(ledger):
    digests = chain(ledger)
    late = entry("late").model_copy(update={"recorded_at": WRITTEN + timedelta(hours=5)})
    ledger[D2].append(entry_to_item(late))
    report = check(ledger, digests)
    day = report.days[1]
    assert day.status is DayStatus.LATE_ITEMS and day.late == ("late|VERDICT",)
    assert report.ok and "1 late items" in report.summary


def test_an_item_its_writer_was_still_committing_at_the_cut_off_is_late_not_inserted(ledger):
    """A writer stamps ``recorded_at`` before its write commits, and the by-day index lags: an item
    recorded minutes before the digest's cut-off can be missing from it without any tampering."""
    digests = chain(ledger)
    in_flight = entry("in-flight").model_copy(update={"recorded_at": WRITTEN - timedelta(minutes=5)})
    ledger[D2].append(entry_to_item(in_flight))
    day = check(ledger, digests).days[1]
    assert day.status is DayStatus.LATE_ITEMS and day.late == ("in-flight|VERDICT",) and day.inserted == ()
    # Recorded well before the cut-off and still not covered: inserted.
    forged = entry("forged").model_copy(update={"recorded_at": WRITTEN - timedelta(minutes=16)})
    ledger[D2].append(entry_to_item(forged))
    day = check(ledger, digests).days[1]
    assert day.status is DayStatus.TAMPERED and day.inserted == ("forged|VERDICT",)


def test_the_digest_cut_off_is_taken_before_the_days_items_are_read(ledger):
    clock = FakeClock(WRITTEN)

    class SlowIndex(ShardedDayIndex):
        def items_on(self, day: str):
            found = list(super().items_on(day))
            clock.at = clock.at + timedelta(minutes=3)  # the query took a while
            return found

    bucket = MemoryBucket()
    service = DigestService(
        function="write_digest",
        ledger=SlowIndex(i for day_items in ledger.values() for i in day_items),
        store=DigestStore(bucket),
        clock=clock,
    )
    service.run(datetime(2026, 11, 23, 3, 15, tzinfo=UTC))
    digest = DigestStore(bucket).load(D2)
    assert digest is not None and digest.created_at < clock.at
    # The first day reads its look-back and itself, each later day only itself: D2's cut-off is before its query.
    queries_before_d2 = LATE_LOOKBACK_DAYS + 1 + INITIAL_DAYS - 2
    assert digest.created_at == WRITTEN + timedelta(minutes=3 * queries_before_d2)


def test_a_digest_reported_written_by_another_run_but_unreadable_fails_the_run(ledger):
    class LyingBucket(MemoryBucket):
        def put_if_absent(self, key: str, body: bytes, content_type: str) -> bool:
            return False  # as a 409 taken for "already written" did

    service = DigestService(
        function="write_digest",
        ledger=ShardedDayIndex(i for day_items in ledger.values() for i in day_items),
        store=DigestStore(LyingBucket()),
        clock=FakeClock(WRITTEN),
    )
    with pytest.raises(RuntimeError, match="cannot be read"):
        service.run(datetime(2026, 11, 23, 3, 15, tzinfo=UTC))


def test_an_edited_digest_file_or_a_broken_chain_is_detected(ledger):
    digests = chain(ledger)
    # Rewriting a day's digest to match an altered ledger breaks the link to the next day...
    del ledger[D1][0]
    rewritten = make_digest(D1, views(ledger[D1]), None, created_at=WRITTEN)
    report = check(ledger, {D1: rewritten, D2: digests[D2]})
    assert report.days[0].status is DayStatus.VERIFIED
    assert report.days[1].status is DayStatus.TAMPERED
    assert any("chain broken" in p for p in report.days[1].problems)
    # ...and editing the item list of a digest without its hash is caught by the digest itself.
    edited = digests[D2].model_copy(update={"items": digests[D2].items[:-1], "item_count": 2})
    day = verify_day(D2, edited, views(ledger[D2]), previous=digests[D1], chain_start=D1, now=AFTER)
    assert day.status is DayStatus.TAMPERED and any("edited" in p for p in day.problems)


def test_days_without_digests(ledger):
    digests = chain(ledger)
    # A deleted digest: the day is undigested and the next day's link has nothing to point to.
    report = check(ledger, {D2: digests[D2]})
    assert report.days[0].status is DayStatus.UNDIGESTED and report.days[1].status is DayStatus.TAMPERED
    # Not settled yet: pending, not a failure.
    report = check(ledger, {}, now=datetime(2026, 11, 22, 1, 0, tzinfo=UTC))
    assert [d.status for d in report.days] == [DayStatus.PENDING, DayStatus.PENDING] and report.ok
    # Before the chain started and empty: fine; with items: not covered.
    empty = {D1: [], D2: ledger[D2]}
    report = verify_period(
        "t", [D1, D2], {D2: chain({D2: ledger[D2]})[D2]}, {D2: views(ledger[D2])}, chain_start=D2, now=AFTER
    )
    assert [d.status for d in report.days] == [DayStatus.BEFORE_CHAIN, DayStatus.VERIFIED]
    assert check(empty, {}).days[1].status is DayStatus.UNDIGESTED


def test_an_item_that_no_longer_parses_is_reported_as_altered(ledger):
    digests = chain(ledger)
    ledger[D2][2]["kind"] = {"S": "NOT_A_KIND"}
    day = check(ledger, digests).days[1]
    assert day.status is DayStatus.TAMPERED and day.altered == ("e|VERDICT",)


def test_due_days():
    assert not is_due(D2, datetime(2026, 11, 23, 1, 59, tzinfo=UTC))
    assert is_due(D2, datetime(2026, 11, 23, 2, 0, tzinfo=UTC))  # end of day + 26 h
    now = datetime(2026, 11, 23, 3, 15, tzinfo=UTC)
    assert days_to_digest(D1, now, 10) == [D2]
    assert days_to_digest(D2, now, 10) == []
    first = days_to_digest(None, now, 10)
    assert len(first) == INITIAL_DAYS and first[-1] == D2
    assert days_to_digest(date(2026, 1, 1), now, 5) == [date(2026, 1, 2) + timedelta(days=i) for i in range(5)]


# -- the daily function's service, with in-memory fakes -----------------------------------------
def test_the_daily_function_chains_each_settled_day_once(ledger):
    bucket = MemoryBucket()
    service = DigestService(
        function="write_digest",
        ledger=ShardedDayIndex(i for day_items in ledger.values() for i in day_items),
        store=DigestStore(bucket),
        clock=FakeClock(WRITTEN),
    )
    first = service.run(datetime(2026, 11, 22, 3, 15, tzinfo=UTC))  # D1 is due, D2 not yet
    assert first.actions[-1].startswith(f"digested {D1}: 2 item(s)")
    assert len([a for a in first.actions if a.startswith("digested")]) == INITIAL_DAYS
    second = service.run(datetime(2026, 11, 23, 3, 15, tzinfo=UTC))
    assert second.actions == [
        f"digested {D2}: 3 item(s), {DailyDigest.model_validate_json(bucket.objects[digest_key(D2)]).digest[:16]}"
    ]
    assert service.run(datetime(2026, 11, 23, 4, 0, tzinfo=UTC)).actions == ["nothing due"]
    store = DigestStore(bucket)
    d1, d2 = store.load(D1), store.load(D2)
    assert d1 and d2 and d2.previous_digest == d1.digest and store.days()[0] == D1 - timedelta(days=INITIAL_DAYS - 1)
    before = store.load(D1 - timedelta(days=1))
    assert before is not None and d1.previous_digest == before.digest
    report = verify_period(
        "t", [D1, D2], {D1 - timedelta(days=1): before, D1: d1, D2: d2}, {d: views(i) for d, i in ledger.items()},
        chain_start=store.days()[0], now=AFTER,
    )  # fmt: skip
    assert report.ok and report.count(DayStatus.VERIFIED) == 2
    # Verifying D1 without the digest before it would not prove the link: reported, not assumed.
    assert not check(ledger, {D1: d1, D2: d2}).ok


def scheduled(at: datetime) -> dict:
    return {
        "version": "0",
        "id": "5d6e7f80-1a2b-4c3d-9e8f-0a1b2c3d4e01",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/changeguard-dev-daily-digest"],
        "detail": {},
    }


def test_a_schedule_stamped_in_the_future_digests_nothing(ledger):
    """A digest is permanent: one of a day not over would leave that day's real items only ever late."""
    bucket = MemoryBucket()
    index = ShardedDayIndex(i for day_items in ledger.values() for i in day_items)
    service = DigestService(function="write_digest", ledger=index, store=DigestStore(bucket), clock=FakeClock(WRITTEN))
    with pytest.raises(InvalidEventError, match="after now"):
        service.handle(scheduled(WRITTEN + timedelta(days=30)))
    assert bucket.objects == {}
    # A run asked for a later time (within the skew, or by a caller of run()) digests only what the clock says is due.
    service.run(WRITTEN + timedelta(days=30))
    assert max(DigestStore(bucket).days()) == D2 == last_due_day(WRITTEN)
    assert service.handle(scheduled(WRITTEN)).actions == ["nothing due"]


# -- late items: recorded days after their own day's digest, covered by the digest of that day ---
CHANGE = datetime(2026, 11, 10, 10, 0, tzinfo=UTC)


def unverified(at: datetime = CHANGE) -> LedgerEntry:
    return entry("evt-1", at.date()).model_copy(update={"verdict": "UNVERIFIED"})


def recheck(verdict: str, at: datetime = CHANGE, after: timedelta = timedelta(days=3)) -> LedgerEntry:
    """As the follow-up files a re-judgement: the change's own time, recorded days later."""
    now = at + after
    return LedgerEntry(
        change_id="evt-1",
        entry=f"RECHECK#{now.isoformat()}#1-re-judged",
        kind=EntryKind.RECHECK,
        function="follow_up",
        event_time=at,
        recorded_at=now,
        verdict=verdict,
        body={"result": "re-judged", "previous_verdict": "UNVERIFIED", "verdict": verdict},
    )


def digest_at(index: ShardedDayIndex, bucket: MemoryBucket, at: datetime) -> None:
    DigestService(function="write_digest", ledger=index, store=DigestStore(bucket), clock=FakeClock(at)).run(at)


def verify_days(index: ShardedDayIndex, bucket: MemoryBucket, days: list[date], now: datetime):
    store = DigestStore(bucket)
    stored = store.days()
    digests = {d: g for d in stored if (g := store.load(d)) is not None}
    day_views = {d: views(index.items_on(d.isoformat())) for d in days}
    return verify_period("t", days, digests, day_views, chain_start=stored[0], now=now)


def late_ledger() -> tuple[ShardedDayIndex, MemoryBucket]:
    """10 Nov's UNVERIFIED change digested on 12 Nov; re-judged NO_TICKET on 13 Nov; digests to 3 Dec."""
    index = ShardedDayIndex([entry_to_item(unverified())])
    bucket = MemoryBucket()
    digest_at(index, bucket, datetime(2026, 11, 12, 3, 15, tzinfo=UTC))
    index.put(entry_to_item(recheck("NO_TICKET")))
    digest_at(index, bucket, datetime(2026, 12, 3, 3, 15, tzinfo=UTC))
    return index, bucket


NOVEMBER = [date(2026, 11, 1) + timedelta(days=n) for n in range(30)]
CHECKED = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)


def test_a_re_judgement_is_covered_by_the_digest_of_the_day_it_was_recorded():
    index, bucket = late_ledger()
    recorded = DigestStore(bucket).load(date(2026, 11, 13))
    key = f"evt-1|{recheck('NO_TICKET').entry}"
    assert recorded is not None and recorded.late_since == date(2026, 11, 13) - timedelta(days=LATE_LOOKBACK_DAYS)
    assert [(i.key, i.day) for i in recorded.late or ()] == [(key, CHANGE.date())]
    report = verify_days(index, bucket, NOVEMBER, CHECKED)
    # Covered, so no longer merely late: the day verifies.
    assert report.ok and report.count(DayStatus.LATE_ITEMS) == 0, report.summary
    assert next(d for d in report.days if d.day == CHANGE.date()).status is DayStatus.VERIFIED


def test_deleting_a_re_judgement_recorded_after_its_days_digest_is_detected():
    index, bucket = late_ledger()
    for partition in index.partitions.values():
        partition[:] = [i for i in partition if not i["entry"]["S"].startswith("RECHECK#")]
    day = next(d for d in verify_days(index, bucket, NOVEMBER, CHECKED).days if d.day == CHANGE.date())
    assert day.status is DayStatus.TAMPERED and day.missing == (f"evt-1|{recheck('NO_TICKET').entry}",)


def test_rewriting_a_re_judgement_with_a_recomputed_hash_is_detected():
    index, bucket = late_ledger()
    forged = entry_to_item(recheck("AUTHORIZED"))
    for partition in index.partitions.values():
        partition[:] = [forged if i["entry"]["S"].startswith("RECHECK#") else i for i in partition]
    day = next(d for d in verify_days(index, bucket, NOVEMBER, CHECKED).days if d.day == CHANGE.date())
    assert day.status is DayStatus.TAMPERED and day.altered == (f"evt-1|{recheck('NO_TICKET').entry}",)


def test_a_late_item_the_digest_of_its_recorded_day_does_not_list_is_inserted():
    index, bucket = late_ledger()
    # Added afterwards, claiming to have been recorded on 14 Nov, whose digest searched 10 Nov.
    forged = recheck("AUTHORIZED", after=timedelta(days=4))
    index.put(entry_to_item(forged))
    day = next(d for d in verify_days(index, bucket, NOVEMBER, CHECKED).days if d.day == CHANGE.date())
    assert day.status is DayStatus.TAMPERED and day.inserted == (f"evt-1|{forged.entry}",)


def test_a_late_item_no_digest_can_cover_yet_or_searched_stays_late():
    index, bucket = late_ledger()
    # Recorded on 2 Dec (not settled on 3 Dec), and on 25 Nov (further back than its digest searched).
    pending = recheck("AUTHORIZED", after=timedelta(days=22))
    beyond = recheck("AUTHORIZED", after=timedelta(days=15))
    index.put(entry_to_item(pending))
    index.put(entry_to_item(beyond))
    report = verify_days(index, bucket, NOVEMBER, CHECKED)
    day = next(d for d in report.days if d.day == CHANGE.date())
    assert day.status is DayStatus.LATE_ITEMS and set(day.late) == {f"evt-1|{pending.entry}", f"evt-1|{beyond.entry}"}
    assert report.ok


def test_a_late_item_whose_recorded_day_is_due_but_not_digested_yet_stays_late():
    """The recorded day settled (26 h) but its digest is written at 03:15, or is being retried after
    a failed run: no digest of a later day exists, so the chain has not moved past it. An untouched
    re-judgement is late, not inserted - a report run in that gap must not raise a critical
    ledger-integrity alert over a ledger nobody touched."""
    index = ShardedDayIndex([entry_to_item(unverified())])
    bucket = MemoryBucket()
    digest_at(index, bucket, datetime(2026, 11, 12, 3, 15, tzinfo=UTC))  # through 10 Nov
    rejudged = recheck("NO_TICKET", after=timedelta(days=3))  # recorded 13 Nov
    index.put(entry_to_item(rejudged))
    digest_at(index, bucket, datetime(2026, 11, 14, 3, 15, tzinfo=UTC))  # through 12 Nov: 13 Nov not yet
    gap = datetime(2026, 11, 15, 2, 30, tzinfo=UTC)  # 13 Nov is due (26 h) but its digest not written
    report = verify_days(index, bucket, NOVEMBER[:12], gap)
    day = next(d for d in report.days if d.day == CHANGE.date())
    assert day.inserted == () and day.late == (f"evt-1|{rejudged.entry}",)
    assert day.status is DayStatus.LATE_ITEMS and report.ok
    # Once the chain moves past 13 Nov without it (a hole), the same item is uncovered: inserted.
    digest_at(index, bucket, datetime(2026, 11, 16, 3, 15, tzinfo=UTC))  # 13 and 14 Nov
    bucket.objects.pop(digest_key(date(2026, 11, 13)))  # the digest that listed it, deleted
    after = verify_days(index, bucket, NOVEMBER[:12], datetime(2026, 11, 16, 6, 0, tzinfo=UTC))
    day = next(d for d in after.days if d.day == CHANGE.date())
    assert day.inserted == (f"evt-1|{rejudged.entry}",)


def test_an_edited_late_section_breaks_the_digest():
    index, bucket = late_ledger()
    key = digest_key(date(2026, 11, 13))
    stored = json.loads(bucket.objects[key])
    stored["late"] = []
    bucket.objects[key] = json.dumps(stored).encode()
    report = verify_days(index, bucket, NOVEMBER, CHECKED)
    bad = {d.day: d for d in report.days if not d.status.ok}
    assert "edited" in " ".join(bad[date(2026, 11, 13)].problems)
    # The re-judgement it listed is no longer covered by a digest that can be trusted: inserted.
    assert bad[CHANGE.date()].inserted == (f"evt-1|{recheck('NO_TICKET').entry}",)


def test_a_schema_1_digest_still_verifies_and_covers_no_late_items(ledger):
    """Digests written before late items were covered: the old formula, no late section."""
    old: dict[date, DailyDigest] = {}
    previous_digest = GENESIS
    for day in sorted(ledger):
        hashes = [i["content_hash"]["S"] for i in ledger[day]]
        digest = chain_hash(previous_digest, hashes)
        body = {
            "schema_version": "1",
            "algorithm": "SHA-256",
            "day": day.isoformat(),
            "previous_day": (day - timedelta(days=1)).isoformat(),
            "previous_digest": previous_digest,
            "chain_start": day == D1,
            "created_at": WRITTEN.isoformat(),
            "item_count": len(hashes),
            "items": [
                {"change_id": i["change_id"]["S"], "entry": i["entry"]["S"], "hash": i["content_hash"]["S"]}
                for i in ledger[day]
            ],
            "digest": digest,
            "inconsistent_at_digest": [],
        }
        old[day] = DailyDigest.model_validate_json(json.dumps(body))
        previous_digest = digest
    assert all(d.late is None and d.self_consistent for d in old.values())
    # An item of D1 recorded on D2 after D1's digest: D2's schema "1" digest does not cover it.
    late = entry("late", D1).model_copy(update={"recorded_at": WRITTEN + timedelta(hours=1)})
    ledger[D1].append(entry_to_item(late))
    report = check(ledger, old)
    assert report.ok and report.days[0].status is DayStatus.LATE_ITEMS and report.days[0].late == ("late|VERDICT",)
    # A chain continues from a schema "1" digest.
    assert make_digest(D2 + timedelta(days=1), [], old[D2], WRITTEN).previous_digest == old[D2].digest
