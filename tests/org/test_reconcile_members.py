"""The reconciliation reads every account's and region's trail (issue 9), not only its own.

``LookupEvents`` answers for the account and region it is called in. Here write calls are made in
the central account's other region and in a member account's two regions, and none of their events
is delivered: the hourly sweep must find each of them there (through the member's read role) and
judge it with its own account and region. A member whose role cannot be assumed is named in the
outcome and alerted once, and the others are reconciled all the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from changeguard.adapters.cloudtrail import CloudTrailLookup
from changeguard.domain.errors import ConfigurationError, TrailAccessDeniedError
from changeguard.domain.policy import Policy
from changeguard.models.cloudtrail import CloudTrailRecord, UnparsedTrailEvent
from changeguard.services.outcome import Outcome
from changeguard.services.reconcile import ReconcileService
from changeguard.settings import Wiring
from fakes import InMemoryLedger, ThreadScope
from hardening.conftest import all_ledger_entries, ledger_entries, make_harness, trail_since
from org.test_cross_account import CENTRAL, MEMBER, ORG, create_acting_role, member_clients

RECONCILE = "ReconcileChangesFunction"
OTHER_REGION = "eu-west-1"
REFUSING = "333333333333"


def _verdicts(h: Any) -> dict[str, tuple[str, str]]:
    return {e.change_id: (e.account, e.region) for e in all_ledger_entries(h) if e.entry == "VERDICT"}


def _writes(records: list[dict[str, Any]], account: str, region: str) -> set[str]:
    return {
        r["eventID"]
        for r in records
        if r["recipientAccountId"] == account
        and r["awsRegion"] == region
        and not r.get("errorCode")
        and r["eventName"] in ("CreateTopic", "CreateQueue")
    }


def test_missed_changes_of_member_accounts_and_other_regions_are_judged_where_they_happened(aws):
    h = make_harness(aws, OrganizationId=ORG, MemberAccountIds=f"{MEMBER},{REFUSING}", MemberRegions=OTHER_REGION)
    member = member_clients(aws.endpoint_url)
    member_there = member_clients(aws.endpoint_url, region=OTHER_REGION)
    create_acting_role(member, "changeguard-read-tags")
    aws.faults.fail("denied", operations=["AssumeRole"], body_contains=REFUSING)
    aws.record_read_only = True  # the lookups are recorded too: where, and as whom
    mark = len(aws.trail.records())

    # Write calls whose events never reach the correlator (nothing is delivered here).
    member("sns").create_topic(Name="member-topic")
    member_there("sqs").create_queue(QueueName="member-queue-eu")
    boto3.client("sns", region_name=OTHER_REGION).create_topic(Name="central-topic-eu")
    made = trail_since(aws, mark)
    expected = {
        (MEMBER, "us-east-1"): _writes(made, MEMBER, "us-east-1"),
        (MEMBER, OTHER_REGION): _writes(made, MEMBER, OTHER_REGION),
        (CENTRAL, OTHER_REGION): _writes(made, CENTRAL, OTHER_REGION),
    }
    assert all(len(ids) == 1 for ids in expected.values()), expected

    swept = h.invoke(RECONCILE, h.scheduled_event(RECONCILE))

    assert swept.error is None, swept.error
    verdicts = _verdicts(h)
    for (account, region), ids in expected.items():
        for change_id in ids:
            assert verdicts.get(change_id) == (account, region), (change_id, account, region)
    outcome = swept.result
    # The refusing member: named once per region, one alert for the day, the rest reconciled anyway.
    unread = [r for r in outcome["reasons"] if r.startswith("could not read the CloudTrail event history")]
    assert len(unread) == 2 and all(f"account {REFUSING}" in r for r in unread), outcome["reasons"]
    assert any(a.startswith("could not read 2 account-region(s)") for a in outcome["actions"]), outcome["actions"]
    assert [a.rsplit("/", 1)[1] for a in outcome["alert_ids"]].count("cross-account") == 1
    day = h.clock.now().strftime("%Y-%m-%d")
    assert "DENIED#reconcile_changes" in [e.entry for e in ledger_entries(h, f"acting:{REFUSING}:{day}")]

    # Read there through the member's read role, in a session naming the function, in both regions.
    assert _lookups(trail_since(aws, mark)) == {
        (CENTRAL, "us-east-1", "function role"),
        (CENTRAL, OTHER_REGION, "function role"),
        (MEMBER, "us-east-1", "changeguard-read-tags/reconcile_changes@"),
        (MEMBER, OTHER_REGION, "changeguard-read-tags/reconcile_changes@"),
    }

    # How far each pair is reconciled, in the ledger: the refusing member's pairs were never read.
    settle = timedelta(minutes=60)
    [progress] = ledger_entries(h, f"reconcile:progress:{day}")
    assert progress.kind == "RECONCILED"
    read_pairs = [f"{a}|{r}" for a, r in expected] + ["|us-east-1"]
    assert progress.body["complete_through"] == {
        (h.clock.now() - settle).isoformat(timespec="seconds"): sorted(
            {p.replace(f"{CENTRAL}|", "|") for p in read_pairs}
        )
    }
    assert progress.body["never_read"] == [f"{REFUSING}|us-east-1", f"{REFUSING}|{OTHER_REGION}"]

    # A second run finds nothing new and raises no second alert for the same day.
    entries = len(all_ledger_entries(h))
    again = h.invoke(RECONCILE, h.scheduled_event(RECONCILE))
    assert again.error is None, again.error
    assert again.result["actions"][0].startswith("judged 0 missed change(s)")
    assert again.result["alert_ids"] == []
    assert len(all_ledger_entries(h)) == entries

    # An hour later, each pair read to the end is read from where the first run finished with it.
    first = h.clock.now()
    h.clock.set(first + timedelta(hours=1))
    mark = len(aws.trail.records())
    later = h.invoke(RECONCILE, h.scheduled_event(RECONCILE))
    assert later.error is None, later.error
    starts: dict[tuple[str, str], datetime] = {}
    for r in trail_since(aws, mark):
        if r["eventName"] == "LookupEvents" and not r.get("errorCode"):
            pair, at = (
                (r["recipientAccountId"], r["awsRegion"]),
                datetime.fromisoformat(r["requestParameters"]["startTime"]),
            )
            starts[pair] = min(starts.get(pair, at), at)  # the first slice's: where the pair's reading began
    read_through = (first - settle).replace(microsecond=0)
    assert starts == {pair: read_through for pair in [*expected, (CENTRAL, "us-east-1")]}


def test_without_member_accounts_listed_only_this_accounts_trail_is_read(aws):
    """The default: no MemberAccountIds, no MemberRegions - one account, one region, no AssumeRole."""
    h = make_harness(aws, OrganizationId=ORG)
    member = member_clients(aws.endpoint_url)
    create_acting_role(member, "changeguard-read-tags")
    aws.record_read_only = True
    mark = len(aws.trail.records())
    member("sns").create_topic(Name="member-topic")
    boto3.client("sns", region_name=OTHER_REGION).create_topic(Name="central-topic-eu")
    made = trail_since(aws, mark)

    swept = h.run_schedule(RECONCILE)

    assert swept["error"] is None, swept["error"]
    verdicts = _verdicts(h)
    assert not _writes(made, MEMBER, "us-east-1") & verdicts.keys()
    assert not _writes(made, CENTRAL, OTHER_REGION) & verdicts.keys()
    assert _lookups(trail_since(aws, mark)) == {(CENTRAL, "us-east-1", "function role")}


def _lookups(records: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(account, region, identity) of each LookupEvents call: the function's own role, or the member
    role's session (``<role>/<session name>`` up to the ``@``)."""
    found = set()
    for r in records:
        if r["eventName"] != "LookupEvents" or r.get("errorCode"):
            continue
        arn = r["userIdentity"]["arn"]
        who = (
            arn.split(":assumed-role/", 1)[1].split("@", 1)[0] + "@"
            if "/changeguard-read-tags/" in arn
            else "function role"
        )
        found.add((r["recipientAccountId"], r["awsRegion"], who))
    return found


# -- the service alone: fakes of the scope, the trail and the ledger --------------------------------
def _record(n: int, account: str | None, region: str) -> CloudTrailRecord:
    owner = account or CENTRAL
    return CloudTrailRecord.model_validate(
        {
            "eventVersion": "1.09",
            "eventID": f"00000000-0000-4000-8000-{n:012d}",
            "eventTime": "2026-11-27T07:00:00Z",
            "eventSource": "sns.amazonaws.com",
            "eventName": "CreateTopic",
            "awsRegion": region,
            "recipientAccountId": owner,
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{owner}:user/alice", "accountId": owner},
        }
    )


class _Trail:
    """Each (account, region) holds its records; one of them refuses the lookup, or fails.

    Like LookupEvents: only records with ``start <= eventTime <= end``, newest first. ``read`` and
    ``starts`` name each reading of a pair once, where it began (not each later slice of it);
    ``cap``: records one reading yields before it fails, as if the run's deadline cut it."""

    def __init__(
        self,
        scope: ThreadScope,
        records: dict[tuple[str | None, str], list[CloudTrailRecord]] | None = None,
        refuse: tuple[str | None, str] | None = None,
        fail: tuple[str | None, str] | None = None,
        page_seconds: float = 0.0,
        cap: int | None = None,
    ) -> None:
        self.scope, self.records, self.refuse, self.fail = scope, records or {}, refuse, fail
        self.cap = cap
        self.ends: dict[tuple[Any, threading.Thread], datetime] = {}
        self.page_seconds = page_seconds
        self.read: list[tuple[str | None, str | None]] = []
        self.starts: dict[tuple[str | None, str | None], datetime] = {}
        self.active = 0
        self.most_at_once = 0
        self.yielded = 0
        self._lock = threading.Lock()

    def write_events(self, start: datetime, end: datetime | None = None) -> Any:
        here = self.scope.current
        with self._lock:
            reading = (here, threading.current_thread())  # each run reads a pair on a thread of its own
            if self.ends.get(reading) != start:  # not the next slice of a reading: a new one
                self.read.append(here)
                self.starts[here] = start
            self.ends[reading] = end  # type: ignore[assignment]
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
        try:
            if here == self.refuse:
                raise TrailAccessDeniedError("AccessDeniedException", "explicit deny in a service control policy")
            if here == self.fail:
                raise RuntimeError("LookupEvents answered 500 past its retries")
            found = [
                r
                for r in self.records.get(here, [])  # type: ignore[call-overload]
                if r.eventTime >= start and (end is None or r.eventTime <= end)
            ]
            for record in sorted(found, key=lambda r: r.eventTime, reverse=True):
                if self.cap is not None and self.yielded >= self.cap:
                    raise RuntimeError("cut short")
                time.sleep(self.page_seconds)  # LookupEvents' pace: 2 pages a second per account and region
                with self._lock:
                    self.yielded += 1
                yield record
        finally:
            with self._lock:
                self.active -= 1


class _Ledger(InMemoryLedger):
    """The fake ledger, keeping each append in order, with the sweep's check of what is judged."""

    def __init__(self) -> None:
        super().__init__()
        self.appended: list[list[Any]] = []

    def append(self, entries: Sequence[Any]) -> bool:
        if not super().append(entries):
            return False
        self.appended.append(list(entries))
        return True

    def existing(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        return {key for key in keys if key in self.items}


class _Correlate:
    """Judges every change AUTHORIZED, once."""

    def __init__(self) -> None:
        self.ledger = _Ledger()
        self.clock: Any = None
        self.judged: list[tuple[str, str, str]] = []

    def evaluate(self, change: Any) -> Outcome:
        self.judged.append((change.change_id, change.account, change.region))
        self.ledger.items[(change.change_id, "VERDICT")] = change
        return Outcome(function="reconcile_changes", verdict="AUTHORIZED", change_id=change.change_id)


class _Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


REGIONS = (OTHER_REGION, "ap-southeast-2")


def _service(trail: _Trail, correlate: _Correlate, scope: ThreadScope, readers: int = 1, **kw: Any) -> ReconcileService:
    return ReconcileService(
        function="reconcile_changes",
        correlate=correlate,  # type: ignore[arg-type]
        trail=trail,
        keys=correlate.ledger,
        policy=lambda: Policy(),
        clock=kw.pop("clock", _Clock()),
        event_sources=["sns.amazonaws.com"],
        scope=scope,
        member_accounts=kw.pop("members", (MEMBER,)),
        regions=REGIONS,
        readers=readers,
        suite_role_prefixes=kw.pop("suite_role_prefixes", ()),
    )


@pytest.mark.parametrize("refused_account", [None, MEMBER])
def test_a_region_refusing_the_lookup_is_reported_and_the_other_regions_are_still_read(refused_account):
    scope = ThreadScope(own=CENTRAL)
    trail = _Trail(scope, refuse=(refused_account, OTHER_REGION))
    correlate = _Correlate()

    outcome = _service(trail, correlate, scope).run("us-east-1")

    visited = [(a, r) for a in (None, MEMBER) for r in ("us-east-1", *REGIONS)]
    assert trail.read == visited  # every pair, the refused one included, none twice
    owner = refused_account or CENTRAL
    [reason] = [r for r in outcome.reasons if r.startswith("could not read")]
    assert reason.startswith(f"could not read the CloudTrail event history of {OTHER_REGION} in account {owner}")
    assert "was refused cloudtrail:LookupEvents" in reason and "AccessDeniedException" in reason
    [[fact, alert]] = [a for a in correlate.ledger.appended if a[0].kind != "RECONCILED"]
    assert fact.entry == "DENIED#reconcile_changes" and fact.region == OTHER_REGION
    assert "was refused cloudtrail:LookupEvents" in alert.body["alert"]["summary"]
    assert outcome.alert_ids and outcome.actions[1].startswith("could not read 1 account-region(s)")


def test_trails_are_read_side_by_side_and_every_record_is_judged_once():
    scope = ThreadScope(own=CENTRAL)
    members = ("222222222222", "333333333333", "444444444444")
    pairs = [(a, r) for a in (None, *members) for r in ("us-east-1", *REGIONS)]
    records = {pair: [_record(i * 10 + k, pair[0], pair[1]) for k in range(3)] for i, pair in enumerate(pairs)}
    trail = _Trail(scope, records, page_seconds=0.02)
    correlate = _Correlate()

    outcome = _service(trail, correlate, scope, readers=4, members=members).run("us-east-1")

    assert sorted(trail.read, key=str) == sorted(pairs, key=str)
    assert trail.most_at_once == 4  # LookupEvents' limit is per pair: four pairs at a time
    expected = sorted((r.eventID, r.recipientAccountId, r.awsRegion) for rs in records.values() for r in rs)
    assert sorted(correlate.judged) == expected
    assert outcome.actions[0].startswith(f"judged {len(expected)} missed change(s) of {len(expected)}")


def test_a_run_cut_short_by_its_deadline_says_what_it_left_and_the_next_run_starts_there():
    scope = ThreadScope(own=CENTRAL)
    pairs = [(a, r) for a in (None, MEMBER) for r in ("us-east-1", *REGIONS)]
    records = {pair: [_record(i * 10 + k, pair[0], pair[1]) for k in range(4)] for i, pair in enumerate(pairs)}
    trail = _Trail(scope, records, page_seconds=0.02)  # about half a second for all 24
    correlate = _Correlate()
    clock = _Clock()
    service = _service(trail, correlate, scope, clock=clock)

    def time_left() -> float:  # 900 s to start with; under a minute once ten records have been read
        return 900.0 if trail.yielded < 10 else 30.0

    outcome = service.run("us-east-1", time_left=time_left)

    judged = {c for c, _, _ in correlate.judged}
    assert 0 < len(judged) < 24  # cut short, after some were judged
    [run] = [e for e in correlate.ledger.entries_for("reconcile:incomplete:2026-11-27") if e.entry.startswith("RUN#")]
    left = [(a or None, r) for a, r in run.body["unfinished"]]
    # Whatever was not judged belongs to a pair named as left (a pair stopped just after its last
    # record may be named too: the next run finds those already judged).
    for pair, rs in records.items():
        if any(r.eventID not in judged for r in rs):
            assert pair in left, pair
    unfinished = [r for r in outcome.reasons if r.startswith("stopped at the deadline")]
    assert len(unfinished) == len(left) > 0
    assert any(a.startswith(f"ran out of time in {len(left)} account-region(s)") for a in outcome.actions)
    assert len(outcome.alert_ids) == 1

    # The next run reads what was left first, judges the rest, and raises no second alert today.
    clock.at += timedelta(hours=1)
    trail.read.clear()
    again = service.run("us-east-1", time_left=lambda: 900.0)
    # (Among those left, the ones whose reading had not begun come first: each pair left keeps the
    # slices it read and judged.)
    assert set(trail.read[: len(left)]) == set(left)
    assert trail.read[len(left) :] == [pair for pair in pairs if pair not in left]
    assert len({c for c, _, _ in correlate.judged}) == 24
    assert len(correlate.judged) == 24  # nothing judged twice
    assert not [r for r in again.reasons if r.startswith("stopped")]
    assert again.alert_ids == []


def test_a_reader_that_fails_fails_the_run_after_the_others_are_judged_and_nothing_hangs():
    scope = ThreadScope(own=CENTRAL)
    pairs = [(a, r) for a in (None, MEMBER) for r in ("us-east-1", *REGIONS)]
    records = {pair: [_record(i, pair[0], pair[1])] for i, pair in enumerate(pairs)}
    trail = _Trail(scope, records, fail=(MEMBER, OTHER_REGION))
    correlate = _Correlate()

    with pytest.raises(RuntimeError, match="past its retries"):
        _service(trail, correlate, scope, readers=3).run("us-east-1")

    assert len(correlate.judged) == len(pairs) - 1  # judged verdicts stay; the retry skips them
    assert not [t for t in threading.enumerate() if t.name.startswith("lookup")]


def test_a_record_read_through_a_member_role_becomes_a_change_of_that_account_and_region():
    record = CloudTrailRecord.model_validate(
        {
            "eventVersion": "1.09",
            "eventID": "5f0d6a2e-7b7c-4c36-9a43-2c4b8f0e1a11",
            "eventTime": "2026-11-27T07:00:00Z",
            "eventSource": "sns.amazonaws.com",
            "eventName": "CreateTopic",
            "awsRegion": OTHER_REGION,
            "recipientAccountId": MEMBER,
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{MEMBER}:user/alice", "accountId": MEMBER},
        }
    )
    change = ReconcileService.change_of(record)
    assert (change.account, change.region) == (MEMBER, OTHER_REGION)


def test_readers_stop_at_the_deadline_even_when_nothing_they_read_is_handed_over():
    """Pages of calls the sweep does not judge (other sources, the suite's own) still take time."""
    scope = ThreadScope(own=CENTRAL)
    pairs = [(a, r) for a in (None, MEMBER) for r in ("us-east-1", *REGIONS)]
    ignored = {
        pair: [_record(i, pair[0], pair[1]).model_copy(update={"eventSource": "s3.amazonaws.com"})] * 50
        for i, pair in enumerate(pairs)
    }
    trail = _Trail(scope, ignored, page_seconds=0.01)
    correlate = _Correlate()
    started = time.monotonic()

    outcome = _service(trail, correlate, scope, readers=2).run(
        "us-east-1", time_left=lambda: 600.0 - 1000 * (time.monotonic() - started) / 0.3
    )

    assert time.monotonic() - started < 3  # stopped soon after the deadline, not after every page
    assert correlate.judged == []
    stopped = [r for r in outcome.reasons if r.startswith("stopped at the deadline")]
    assert stopped and len(stopped) < len(pairs) + 1


def test_each_pair_is_read_from_where_the_last_run_finished_less_the_settle_margin():
    """Hourly runs read about two hours per pair, not the whole look-back (issue 9: 500 accounts)."""
    scope = ThreadScope(own=CENTRAL)
    trail = _Trail(scope, refuse=(MEMBER, OTHER_REGION))
    correlate = _Correlate()
    clock = _Clock()  # 2026-11-27 08:00
    service = _service(trail, correlate, scope, clock=clock)
    pairs = [(a, r) for a in (None, MEMBER) for r in ("us-east-1", *REGIONS)]
    lookback = timedelta(hours=Policy().reconcile_lookback_hours)
    settle = timedelta(minutes=Policy().reconcile_settle_minutes)

    service.run("us-east-1")  # the first run: every pair from the look-back's start
    assert trail.starts == {pair: clock.at - lookback for pair in pairs}
    [run] = correlate.ledger.entries_for("reconcile:progress:2026-11-27")
    assert run.kind == "RECONCILED" and run.entry == "RUN#080000"
    read_through = (clock.at - settle).isoformat()
    assert run.body["complete_through"] == {
        read_through: sorted(f"{a or ''}|{r}" for a, r in pairs if (a, r) != (MEMBER, OTHER_REGION))
    }
    assert run.body["never_read"] == [f"{MEMBER}|{OTHER_REGION}"]

    assert run.body["never_read_since"] == {(clock.at - lookback).isoformat(): [f"{MEMBER}|{OTHER_REGION}"]}
    assert run.body["read_from"] == {(clock.at - lookback).isoformat(): sorted(f"{a or ''}|{r}" for a, r in pairs)}
    assert run.body["previous_run"] is None  # no run on record: coverage starts here

    # An hour later, the refusal is over: the pair never read goes first, from the look-back's start
    # of the run that first listed it (still owed); the others from where the first run finished.
    first_start = clock.at - lookback
    trail.refuse = None
    trail.read.clear()
    clock.at += timedelta(hours=1)
    service.run("us-east-1")
    assert trail.read[0] == (MEMBER, OTHER_REGION)
    assert trail.starts[(MEMBER, OTHER_REGION)] == first_start
    assert {trail.starts[p] for p in pairs if p != (MEMBER, OTHER_REGION)} == {clock.at - timedelta(hours=1) - settle}

    # After midnight, a run reads yesterday's last progress.
    clock.at = datetime(2026, 11, 28, 0, 30, tzinfo=UTC)
    service.run("us-east-1")
    assert set(trail.starts.values()) == {datetime(2026, 11, 27, 9, 0, tzinfo=UTC) - settle}

    # Days with no run at all: the marks stand, and each pair is read back to its own (earlier, the
    # whole look-back was read again and the days before it were skipped in silence).
    clock.at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    service.run("us-east-1")
    assert set(trail.starts.values()) == {datetime(2026, 11, 28, 0, 30, tzinfo=UTC) - settle}
    [*_, last] = sorted(correlate.ledger.entries_for("reconcile:progress:2026-11-30"), key=lambda e: e.entry)
    assert last.body["previous_run"] == "2026-11-28T00:30:00+00:00"


def test_a_pair_whose_reader_failed_keeps_where_it_was_and_the_others_move_on():
    scope = ThreadScope(own=CENTRAL)
    trail = _Trail(scope)
    correlate = _Correlate()
    clock = _Clock()
    service = _service(trail, correlate, scope, clock=clock)
    settle = timedelta(minutes=Policy().reconcile_settle_minutes)
    service.run("us-east-1")
    first_through = clock.at - settle

    clock.at += timedelta(hours=1)
    trail.fail = (None, "us-east-1")
    with pytest.raises(RuntimeError, match="past its retries"):
        service.run("us-east-1")
    [_, second] = sorted(correlate.ledger.entries_for("reconcile:progress:2026-11-27"), key=lambda e: e.entry)
    through = second.body["complete_through"]
    assert through[first_through.isoformat()] == ["|us-east-1"]  # failed: where the first run left it
    assert len(through[(clock.at - settle).isoformat()]) == 5  # read to the end: moved on

    trail.fail = None
    trail.read.clear()
    clock.at += timedelta(hours=1)
    service.run("us-east-1")
    assert trail.read[0] == (None, "us-east-1")  # furthest behind: first
    assert trail.starts[(None, "us-east-1")] == first_through


def test_the_templates_reader_count_reaches_the_sweep(aws):
    """ReconcileReaders sizes the sweep for the organization (README: 26 for 500 accounts)."""
    h = make_harness(aws, ReconcileReaders="26")
    assert h.module(RECONCILE).build_service().readers == 26
    env = {k: str(v) for k, v in h.functions[RECONCILE].environment.items()}
    assert Wiring.from_env({k: v for k, v in env.items() if k != "RECONCILE_READERS"}).reconcile_readers == 8
    with pytest.raises(ConfigurationError, match="reconcile_readers"):
        Wiring.from_env({**env, "RECONCILE_READERS": "0"})


def _by_role(n: int, account: str, role_arn: str) -> CloudTrailRecord:
    """A write call made by a session of ``role_arn`` in ``account``."""
    identity = {
        "type": "AssumedRole",
        "arn": f"arn:aws:sts::{account}:assumed-role/x/session",
        "accountId": account,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role_arn, "accountId": account}},
    }
    return _record(n, account, "us-east-1").model_copy(
        update={"userIdentity": _record(n, account, "us-east-1").userIdentity.model_validate(identity)}
    )


def test_the_suites_own_calls_in_a_member_account_are_not_judged_as_missed():
    """The member's forwarding rule drops its calls by the suite's member roles (same path, that
    account): the sweep must agree with it, or every mark and quarantine there is an alert."""
    scope = ThreadScope(own=CENTRAL)
    suite = f"arn:aws:iam::{CENTRAL}:role/changeguard/"
    records = {
        (MEMBER, "us-east-1"): [
            _by_role(1, MEMBER, f"arn:aws:iam::{MEMBER}:role/changeguard/changeguard-quarantine"),  # the suite
            _by_role(2, MEMBER, f"arn:aws:iam::{MEMBER}:role/orders-deployer"),  # a change
            _by_role(3, MEMBER, "arn:aws:iam::999999999999:role/changeguard/impostor"),  # not the suite's
        ],
        (None, "us-east-1"): [_by_role(4, CENTRAL, f"{suite}changeguard-dev-EnforceTagsFunctionRole-1")],
    }
    trail = _Trail(scope, records)
    correlate = _Correlate()

    _service(trail, correlate, scope, suite_role_prefixes=(suite,)).run("us-east-1")

    assert sorted(c for c, _, _ in correlate.judged) == [
        "00000000-0000-4000-8000-000000000002",
        "00000000-0000-4000-8000-000000000003",
    ]


def _at(n: int, account: str | None, region: str, when: datetime) -> CloudTrailRecord:
    return _record(n, account, region).model_copy(update={"eventTime": when})


def test_a_pair_with_more_calls_than_one_run_reads_moves_forward_and_every_call_is_judged():
    """LookupEvents answers newest first: a run cut short that keeps the pair's old mark reads the
    newest calls again next time, and the oldest leave the look-back unjudged. Read oldest first,
    slice by slice, and keep each slice read, the pair moves forward run after run."""
    scope = ThreadScope(own=CENTRAL)
    clock = _Clock()
    pair = (None, "us-east-1")
    first = clock.at - timedelta(hours=20)
    records = [_at(i, None, "us-east-1", first + timedelta(minutes=i)) for i in range(200)]
    trail = _Trail(scope, {pair: records})
    correlate = _Correlate()
    service = _service(trail, correlate, scope, clock=clock, members=())
    service.regions = ()
    per_run = 150  # a run has time for 150 records, then its deadline comes

    for _ in range(6):
        base = trail.yielded
        outcome = service.run(
            "us-east-1", time_left=lambda base=base: 900.0 if trail.yielded - base < per_run else 30.0
        )
        clock.at += timedelta(hours=1)

    assert {r.eventID for r in records} <= {c for c, _, _ in correlate.judged}
    assert not [r for r in outcome.reasons if r.startswith("stopped at the deadline")]  # caught up
    # The first run was cut short and still moved the pair: to the end of the last slice it judged.
    runs = sorted(correlate.ledger.entries_for("reconcile:progress:2026-11-27"), key=lambda e: e.entry)
    [[through]] = [list(runs[0].body["complete_through"])]
    assert clock.at - timedelta(hours=30) < datetime.fromisoformat(through) < clock.at - timedelta(hours=6)


@pytest.mark.parametrize("read_before", [False, True])
def test_a_pair_refused_for_longer_than_the_look_back_is_read_back_to_its_mark(read_before):
    """A read role denied for 31 hours (or a pair never read since it was listed): the calls of those
    hours are judged once it is allowed again, not skipped because they are older than the look-back."""
    scope = ThreadScope(own=CENTRAL)
    clock = _Clock()  # 2026-11-27 08:00
    pair = (MEMBER, OTHER_REGION)
    made = _at(1, MEMBER, OTHER_REGION, clock.at + timedelta(hours=2))  # while the pair is refused
    trail = _Trail(scope, refuse=None if read_before else pair)
    correlate = _Correlate()
    service = _service(trail, correlate, scope, clock=clock)
    service.run("us-east-1")
    trail.refuse = pair
    trail.records[pair] = [made]
    for _ in range(31):
        clock.at += timedelta(hours=1)
        service.run("us-east-1")
    assert made.eventID not in {c for c, _, _ in correlate.judged}

    trail.refuse = None
    trail.read.clear()
    clock.at += timedelta(hours=1)
    outcome = service.run("us-east-1")

    assert [c for c, _, _ in correlate.judged] == [made.eventID]
    assert trail.read[0] == pair  # furthest behind: first
    assert outcome.actions[0].startswith("judged 1 missed change(s)")
    [*_, last] = sorted(correlate.ledger.entries_for("reconcile:progress:2026-11-28"), key=lambda e: e.entry)
    lookback = timedelta(hours=Policy().reconcile_lookback_hours)
    first_mark = datetime(2026, 11, 27, 8, tzinfo=UTC) - (timedelta(minutes=60) if read_before else lookback)
    assert last.body["read_from"][first_mark.isoformat()] == [f"{MEMBER}|{OTHER_REGION}"]
    assert f"{MEMBER}|{OTHER_REGION}" in last.body["complete_through"][(clock.at - timedelta(minutes=60)).isoformat()]


def test_what_left_cloudtrails_90_days_unread_is_ledgered_as_a_gap_and_alerted_once_a_day():
    scope = ThreadScope(own=CENTRAL)
    clock = _Clock()
    pair = (MEMBER, "us-east-1")
    trail = _Trail(scope)
    correlate = _Correlate()
    service = _service(trail, correlate, scope, clock=clock)
    service.regions = ()
    service.run("us-east-1")
    mark = clock.at - timedelta(minutes=60)
    trail.refuse = pair
    for _ in range(90):  # refused every day for 90 days
        clock.at += timedelta(days=1)
        service.run("us-east-1")
    gaps = [e for (c, _), e in correlate.ledger.items.items() if c.startswith("reconcile:gap:")]
    [first] = [g for g in gaps if g.kind == "OUTAGE"]  # the mark left the history on the 90th day
    readable = clock.at - timedelta(days=90) + timedelta(hours=1)
    assert first.body == {
        "gaps": [{"account": MEMBER, "region": "us-east-1", "from": mark.isoformat(), "to": readable.isoformat()}]
    }
    [alert] = [g for g in gaps if g.kind == "ALERT"]
    assert alert.body["alert"]["kind"] == "degraded"

    # The next hour, allowed again: the span already recorded is not reported again, only the hour
    # that left the history since; no second alert the same day; the pair is read from there on.
    trail.refuse = None
    clock.at += timedelta(hours=1)
    outcome = service.run("us-east-1")
    [lost] = [r for r in outcome.reasons if "older than the 90 days" in r]
    assert f"from {readable.isoformat()} to {(readable + timedelta(hours=1)).isoformat()}" in lost
    assert trail.starts[pair] == readable + timedelta(hours=1)
    assert outcome.alert_ids == []
    [*_, last] = sorted(correlate.ledger.entries_for(f"reconcile:progress:{clock.at:%Y-%m-%d}"), key=lambda e: e.entry)
    assert f"{MEMBER}|us-east-1" in last.body["complete_through"][(clock.at - timedelta(minutes=60)).isoformat()]


def test_a_settle_margin_as_long_as_the_look_back_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="reconcile_settle_minutes"):
        Policy.from_parameters({"reconcile-lookback-hours": "1", "reconcile-settle-minutes": "60"})
    assert Policy.from_parameters({"reconcile-lookback-hours": "2", "reconcile-settle-minutes": "60"})


class _Paginator:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages, self.args = pages, {}

    def paginate(self, **args: Any) -> Any:
        self.args = args
        return iter(self.pages)


class _LookupClient:
    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.paginator = _Paginator(pages)

    def get_paginator(self, name: str) -> _Paginator:
        assert name == "lookup_events"
        return self.paginator


def test_a_record_the_lookup_cannot_parse_is_handed_on_by_its_event_id_not_dropped():
    good = _record(7, None, "us-east-1")
    client = _LookupClient(
        [
            {
                "Events": [
                    {"EventId": "x", "CloudTrailEvent": "{}"},
                    {"EventId": good.eventID, "CloudTrailEvent": good.model_dump_json()},
                ]
            }
        ]
    )
    start, end = datetime(2026, 11, 27, 6, tzinfo=UTC), datetime(2026, 11, 27, 7, tzinfo=UTC)

    [skipped, record] = list(CloudTrailLookup(cloudtrail=client).write_events(start, end))

    assert skipped == UnparsedTrailEvent("x", skipped.error) and "eventTime" in skipped.error
    assert isinstance(record, CloudTrailRecord) and record.eventID == good.eventID
    assert (client.paginator.args["StartTime"], client.paginator.args["EndTime"]) == (start, end)


class _TrailWithAnOddRecord(_Trail):
    def write_events(self, start: datetime, end: datetime | None = None) -> Any:
        if self.scope.current == (None, "us-east-1") and end is None:  # the last slice
            yield UnparsedTrailEvent("x", "eventTime: Field required")
        yield from super().write_events(start, end)


def test_records_that_cannot_be_parsed_are_named_in_the_outcome_and_the_ledger_and_alerted_once_a_day():
    scope = ThreadScope(own=CENTRAL)
    clock = _Clock()
    pair = (None, "us-east-1")
    made = _at(1, None, "us-east-1", clock.at - timedelta(minutes=5))
    trail = _TrailWithAnOddRecord(scope, {pair: [made]})
    correlate = _Correlate()
    service = _service(trail, correlate, scope, clock=clock, members=())
    service.regions = ()

    outcome = service.run("us-east-1")

    assert [c for c, _, _ in correlate.judged] == [made.eventID]  # the others are judged all the same
    [reason] = [r for r in outcome.reasons if r.startswith("skipped CloudTrail event x")]
    assert "could not be parsed (eventTime: Field required)" in reason
    assert any(a.startswith("skipped 1 CloudTrail record(s) that could not be parsed") for a in outcome.actions)
    [run] = [e for e in correlate.ledger.entries_for("reconcile:progress:2026-11-27") if e.entry.startswith("RUN#")]
    assert run.body["unparsed"] == [
        {"account": "", "region": "us-east-1", "event_id": "x", "error": "eventTime: Field required"}
    ]
    assert run.body["unparsed_count"] == 1
    # The pair still moves on: a record that never parses must not hold it back for good.
    assert run.body["complete_through"] == {(clock.at - timedelta(minutes=60)).isoformat(): ["|us-east-1"]}
    [alert_id] = outcome.alert_ids
    assert alert_id.endswith("/unparsed")

    clock.at += timedelta(minutes=30)
    again = service.run("us-east-1")
    assert [r for r in again.reasons if r.startswith("skipped CloudTrail event x")]
    assert again.alert_ids == []  # one alert a day


def test_a_run_reads_only_the_day_s_last_run_to_find_where_each_pair_starts():
    """An hourly sweep ledgers 24 runs a day, each naming every pair (up to a whole item with 1,500
    pairs): where to start is the last one's marks, read alone, not the day's partition."""
    scope = ThreadScope(own=CENTRAL)
    clock = _Clock()
    pair = (None, "us-east-1")
    trail = _Trail(scope, {pair: [_at(i, None, "us-east-1", clock.at - timedelta(minutes=30 - i)) for i in range(5)]})
    correlate = _Correlate()
    service = _service(trail, correlate, scope, clock=clock, members=())
    service.regions = ()
    for _ in range(5):
        service.run("us-east-1", time_left=lambda: 900.0)
        clock.at += timedelta(minutes=7)

    correlate.ledger.read = 0
    progress, _owed, previous = service._progress(clock.at)

    assert correlate.ledger.read == 1
    runs = sorted(correlate.ledger.entries_for(f"reconcile:progress:{clock.at:%Y-%m-%d}"), key=lambda e: e.entry)
    assert len(runs) == 5
    assert previous == runs[-1].event_time
    [[through]] = [list(runs[-1].body["complete_through"])]
    assert progress == {pair: datetime.fromisoformat(through)}
