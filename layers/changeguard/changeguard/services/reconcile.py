"""The reconciliation sweep: judge every write call the live path missed (issue 8).

CloudTrail, Config and CodeDeploy deliver to EventBridge best effort: rarely, an event never
arrives. Every hour this sweep reads CloudTrail's durable record (``LookupEvents``) since where it
last finished (the last ``reconcile_lookback_hours``, default 24, where it has not read before),
keeps the write calls the correlator's rule would have passed (``domain.reconcile``), and sends
each one missing from the ledger through the same correlation path (``CorrelateService.evaluate``). Already-judged calls are skipped with one
``BatchGetItem`` per hundred; the ledger's conditional put makes a race with a late live delivery
a no-op. A second run writes nothing new.

``LookupEvents`` holds management events only: data events (object- and item-level calls) that a
trail sends to EventBridge are not reconciled.

Issue 9, at organization scale: each run reads an account-region from where the last run finished
(``RECONCILED`` ledger entries: each pair's ``complete_through``), less ``reconcile_settle_minutes``
for calls the event history shows late. An hourly run then reads about two hours per pair instead
of a day, and the pairs furthest behind go first. The look-back is where a pair with no mark
starts (the first run, a pair added); a pair behind - refused for days, or a sweep that did not
run - is read back to its mark, however old, as far as CloudTrail keeps it: LookupEvents answers
for the last 90 days. What has left the event history unread is ledgered as a gap
(``reconcile:gap:<day>``) and alerted, never passed over in silence.

Each pair is read oldest first, in slices of ``SLICE`` (``LookupEvents`` with ``StartTime`` and
``EndTime``, both inclusive; within a slice CloudTrail answers newest first). A pair's mark moves
after each slice read to its end and judged, so a pair with more calls than one run can read
still moves forward run after run, and its oldest calls are judged before they leave the event
history, instead of the newest hours being read again every run.

Issue 9: ``LookupEvents`` answers for one account and region. The sweep reads its own account in its
own region and in each of ``regions`` (the other regions that forward events here, us-east-1 among
them for the global services' calls), then each of ``member_accounts`` the same way, through the
read role of ``member/member-account.yaml``. An account whose role cannot be assumed, or a region
whose trail refuses the lookup, is skipped, named in the outcome, and alerted once a day (as every
refused acting role is); the others are still reconciled.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.change import Change, change_from_cloudtrail
from changeguard.domain.clock import deadline
from changeguard.domain.errors import CrossAccountAccessError, TrailAccessDeniedError
from changeguard.domain.ledger import KEY_END, EntryKind, LedgerEntry
from changeguard.domain.partition import role_prefix_in
from changeguard.domain.policy import Policy
from changeguard.domain.reconcile import is_correlated_write
from changeguard.domain.verdicts import Severity
from changeguard.models.cloudtrail import CloudTrailRecord, UnparsedTrailEvent
from changeguard.models.scheduled import parse_scheduled
from changeguard.ports import ActingScope, Clock, LedgerKeys, TrailReader
from changeguard.services.acting import acting_in, refused_in, report_refusal
from changeguard.services.correlate import CorrelateService
from changeguard.services.outcome import Outcome

CHUNK = 100  # write calls checked against the ledger at a time
MAX_LISTED = 50  # missed changes named in the outcome (the rest are counted)
#: Trails read at once. LookupEvents allows 2 requests a second per account and region, so
#: reading pairs side by side multiplies the sweep's pace; the judging stays on one thread.
READERS = 8
QUEUE_DEPTH = 500  # records read ahead of the judging, at most
#: Stop reading this long before the invocation times out (at most a fifth of the time it had).
DEADLINE_MARGIN = 60.0
#: The time range one ``LookupEvents`` reading covers: a pair's mark moves after each one. At
#: 50,000 writes a day an hour is about 42 pages, 21 s at LookupEvents' 2 requests a second. An
#: hour with more write calls than one run reads of a pair (840 s x 2 pages x 50: 84,000) would
#: never complete; it is reported as left at the deadline every run.
SLICE = timedelta(hours=1)
INCOMPLETE = "reconcile:incomplete"
GAP = "reconcile:gap"
#: LookupEvents answers for the events of the last 90 days; the sweep reads no further back than
#: an hour inside that, so that calls do not leave the history while a run reads them.
RETENTION = timedelta(days=90)
RETENTION_MARGIN = timedelta(hours=1)
PROGRESS = "reconcile:progress"
#: The key of one run's fact in its day's partition: ``RUN#<HHMMSS>``.
RUN_PREFIX = "RUN#"

Pair = tuple[str | None, str | None]  # (account, region); None: the function's own


class ReconcileService:
    """Reads the trail, finds the write calls without a verdict, judges them as the correlator would."""

    def __init__(
        self,
        *,
        function: str,
        correlate: CorrelateService,
        trail: TrailReader,
        keys: LedgerKeys,
        policy: Callable[[], Policy],
        clock: Clock,
        event_sources: Iterable[str],
        suite_role_prefixes: tuple[str, ...] = (),
        scope: ActingScope | None = None,
        member_accounts: tuple[str, ...] = (),
        regions: tuple[str, ...] = (),
        readers: int = READERS,
    ) -> None:
        self.readers = max(1, readers)
        self.scope = scope
        self.member_accounts = tuple(a for a in member_accounts if a)
        self.regions = tuple(r for r in regions if r)
        self.function = function
        self.correlate = correlate
        self.trail = trail
        self.keys = keys
        self.policy = policy
        self.clock = clock
        self.event_sources = frozenset(event_sources)
        self.suite_role_prefixes = suite_role_prefixes
        # A member account's forwarding rule drops its own calls by the suite's roles there (the
        # same role path in that account): the sweep must not judge them as missed either.
        self._member_prefixes = {
            account: tuple(filter(None, (role_prefix_in(p, account) for p in suite_role_prefixes)))
            for account in self.member_accounts
        }
        self.last_missed = 0

    @property
    def clock(self) -> Clock:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        # One clock for the sweep and the verdicts it records (the harness replaces it to fix time).
        self._clock = clock
        self.correlate.clock = clock

    def handle(self, event: Mapping[str, Any], time_left: Callable[[], float] | None = None) -> Outcome:
        """Run on EventBridge's "Scheduled Event"; anything else is rejected.

        ``time_left``: seconds until the invocation times out (Lambda's context), so that a run
        too long to finish stops reading in time and says which accounts and regions it left."""
        scheduled = parse_scheduled(event)
        return self.run(scheduled.region, time_left)

    def run(self, home_region: str | None = None, time_left: Callable[[], float] | None = None) -> Outcome:
        policy = self.policy()
        hours = policy.reconcile_lookback_hours
        now = self.clock.now()
        until = now.astimezone(UTC)
        start = until - timedelta(hours=hours)
        run_id = f"reconcile:{start.isoformat(timespec='seconds')}"
        regions = tuple(dict.fromkeys(r for r in (home_region, *self.regions) if r)) or (None,)
        pairs = [(account, region) for account in (None, *self.member_accounts) for region in regions]
        # Each pair from where the last run finished with it, or from where it was first owed (a
        # pair never read yet: the look-back of the run that first listed it), and the pairs
        # furthest behind first - so that no account is left unread run after run. Equals keep
        # their order: own account first.
        progress, owed, previous = self._progress(now)
        readable = until - RETENTION + RETENTION_MARGIN
        gaps: list[tuple[Pair, datetime, datetime]] = []
        starts: dict[Pair, datetime] = {}
        for pair in pairs:
            if pair not in progress and pair not in owed:
                owed[pair] = max(start, readable)  # nothing is owed before a pair is first listed
            marks = progress if pair in progress else owed
            if marks[pair] < readable:  # gone from the event history unread: say so, then go on
                gaps.append((pair, marks[pair], readable))
                marks[pair] = readable
            starts[pair] = min(marks[pair], until)
        pairs.sort(key=lambda pair: starts[pair])
        expired = deadline(time_left, DEADLINE_MARGIN)
        # A slice read to its end and judged is complete up to the settle margin before this run's end.
        settled = until - timedelta(minutes=policy.reconcile_settle_minutes)
        reached: dict[Pair, datetime] = {}
        unread: list[str] = []
        unparsed: dict[str, tuple[Pair, UnparsedTrailEvent]] = {}  # by EventId: a boundary's is read twice
        incomplete: list[str] = []
        seen = 0
        verdicts: Counter[str] = Counter()
        missed: list[str] = []
        alert_ids: list[str] = []
        chunk: list[Change] = []

        def flush() -> None:
            judged = self.keys.existing([(c.change_id, EntryKind.VERDICT.value) for c in chunk])
            for change in chunk:
                if (change.change_id, EntryKind.VERDICT.value) in judged:
                    continue
                outcome = self.correlate.evaluate(change)
                if outcome.duplicate:  # the live delivery got there first
                    continue
                verdicts[outcome.verdict or "-"] += 1
                missed.append(f"{change.change_id}: {change.service}:{change.action} -> {outcome.verdict}")
                alert_ids.extend(outcome.alert_ids)
            chunk.clear()

        failure: BaseException | None = None
        with _Readers(self, starts, run_id, self.readers, expired, until=until, settled=settled) as reading:
            for kind, (account, region), payload in reading.results(pairs):
                if kind == "record":
                    if reading.stopped:
                        reading.left_unread(account, region)  # not judged: its pair is reported unfinished
                        continue
                    assert isinstance(payload, CloudTrailRecord)
                    seen += 1
                    chunk.append(self.change_of(payload))
                    if len(chunk) >= CHUNK:
                        flush()
                elif kind == "unparsed":
                    # Never judged, but not dropped either: named in the outcome, the run's
                    # RECONCILED entry and a degraded alert. The pair still moves on: a record
                    # that can never be parsed must not hold it back for good.
                    if reading.stopped:
                        reading.left_unread(account, region)
                        continue
                    assert isinstance(payload, UnparsedTrailEvent)
                    unparsed.setdefault(payload.event_id, ((account, region), payload))
                elif kind == "slice":
                    # Every record of the slice was handed over before this; none was left unjudged.
                    assert isinstance(payload, datetime)
                    if not reading.unfinished([(account, region)]):
                        reached[(account, region)] = payload
                elif kind == "refused":
                    assert isinstance(payload, CrossAccountAccessError)
                    what = f"read the CloudTrail event history of {region or 'its region'}"
                    reason, ids = report_refusal(
                        self.correlate.ledger, self.function, payload, what=what, cause=run_id, now=now, region=region
                    )
                    unread.append(reason)
                    alert_ids += ids
                elif kind == "failed":
                    assert isinstance(payload, BaseException)
                    failure = failure or payload
            left = reading.unfinished(pairs)
        flush()
        # Each pair as far as its slices were read and judged: a pair cut short keeps what it read.
        for pair, at in reached.items():
            progress[pair] = max(progress.get(pair, at), at)
            owed.pop(pair, None)
        skipped = [_unparsed_body(pair, event) for pair, event in unparsed.values()]
        self._record_progress(
            progress,
            owed,
            starts,
            pairs,
            now,
            home_region,
            seen=seen,
            missed=len(missed),
            previous=previous,
            unparsed=skipped,
        )
        if gaps:
            lost, ids = self._report_gaps(gaps, now, home_region)
            unread += lost
            alert_ids += ids
        for account, region in left:
            where = f"account {account or 'its own'}, {region or 'its region'}"
            incomplete.append(
                f"stopped at the deadline: the CloudTrail event history of {where} was not read to the end"
            )
        if failure is not None:
            raise failure  # what was judged stays judged; the retry reads everything again
        self.last_missed = len(missed)
        summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "none"
        actions = [f"judged {len(missed)} missed change(s) of {seen} write call(s) read: {summary}"]
        refused = len(unread) - len(gaps)
        if refused:
            actions.append(f"could not read {refused} account-region(s); their missed changes are not judged")
        if gaps:
            actions.append(
                f"{len(gaps)} account-region(s) fell behind past CloudTrail's 90 days: recorded the unread span as a gap"
            )
        not_parsed = [
            f"skipped CloudTrail event {s['event_id'] or '(no EventId)'} of account {s['account'] or 'its own'},"
            f" {s['region'] or 'its region'}: it could not be parsed ({s['error']}), so it is not judged"
            for s in skipped
        ]
        if skipped:
            actions.append(
                f"skipped {len(skipped)} CloudTrail record(s) that could not be parsed; named in the RECONCILED entry"
            )
            alert_ids += self._report_unparsed(not_parsed, now, home_region)
        if incomplete:
            actions.append(f"ran out of time in {len(incomplete)} account-region(s); the next run reads them first")
            alert_ids += self._report_incomplete(left, incomplete, now, home_region)
        return Outcome(
            function=self.function,
            verdict=None,
            actions=actions,
            reasons=unread
            + incomplete
            + not_parsed[:MAX_LISTED]
            + missed[:MAX_LISTED]
            + ([f"... and {len(missed) - MAX_LISTED} more"] if len(missed) > MAX_LISTED else []),
            alert_ids=alert_ids,
        )

    def _progress(self, now: datetime) -> tuple[dict[Pair, datetime], dict[Pair, datetime], datetime | None]:
        """Each pair's ``complete_through``, the pairs never read and since when they are owed, as
        the latest run recorded them, and that run's time. A sweep that did not run for days is
        found by looking back day by day as far as CloudTrail keeps events (one query a day, only
        while none is found): its marks stand, and the next run reads back to them."""
        for back in range(RETENTION.days + 2):
            day = now - timedelta(days=back)
            # The day's last run only: RUN#<HHMMSS> keys sort by time, and an hourly sweep's day holds
            # 24 runs, each naming every pair (up to a whole item at organization scale).
            runs = self.correlate.ledger.entries_between(
                f"{PROGRESS}:{day.strftime('%Y-%m-%d')}",
                RUN_PREFIX,
                f"{RUN_PREFIX}{KEY_END}",
                newest_first=True,
                limit=1,
            )
            if runs and runs[0].kind is EntryKind.RECONCILED:
                body = runs[0].body
                return _pairs_from_body(body), _pairs_from_body(body, "never_read_since"), runs[0].event_time
        return {}, {}, None

    def _record_progress(
        self,
        progress: Mapping[Pair, datetime],
        owed: Mapping[Pair, datetime],
        starts: Mapping[Pair, datetime],
        pairs: list[Pair],
        now: datetime,
        region: str | None,
        *,
        seen: int,
        missed: int,
        previous: datetime | None,
        unparsed: list[dict[str, str]],
    ) -> None:
        """Ledger how far each pair is reconciled (the next run starts there), whether or not it
        moved: the auditor's record that the completeness check ran, and over what - where each
        pair's reading began (``read_from``) and the run before it (``previous_run``: none when no
        run is on record for as long as CloudTrail keeps events, so coverage starts here)."""
        body = {
            "write_calls_read": seen,
            "missed_changes_judged": missed,
            "read_from": _pairs_to_body({p: starts[p] for p in pairs}),
            "complete_through": _pairs_to_body({p: progress[p] for p in pairs if p in progress}),
            "never_read": [_pair_key(p) for p in pairs if p not in progress],
            "never_read_since": _pairs_to_body({p: owed[p] for p in pairs if p not in progress and p in owed}),
            "previous_run": previous.astimezone(UTC).isoformat(timespec="seconds") if previous else None,
        }
        if unparsed:  # read, not judged: which, so that they can be looked at by EventId
            body["unparsed_count"] = len(unparsed)
            body["unparsed"] = unparsed[:MAX_LISTED]
        self.correlate.ledger.append([self._run_entry(PROGRESS, EntryKind.RECONCILED, now, region, body)])

    def _run_entry(
        self, prefix: str, kind: EntryKind, now: datetime, region: str | None, body: dict[str, Any]
    ) -> LedgerEntry:
        """One fact about this run, under ``<prefix>:<day>`` as ``RUN#<HHMMSS>``."""
        return LedgerEntry(
            change_id=f"{prefix}:{now.strftime('%Y-%m-%d')}",
            entry=f"{RUN_PREFIX}{now.strftime('%H%M%S')}",
            kind=kind,
            function=self.function,
            event_time=now,
            recorded_at=now,
            region=region,
            body=body,
        )

    def _report_incomplete(self, left: list[Pair], reasons: list[str], now: datetime, region: str | None) -> list[str]:
        """Ledger what this run left unread (the next run starts there), and alert once a day."""
        unfinished = {"unfinished": [[account or "", where or ""] for account, where in left]}
        fact = self._run_entry(INCOMPLETE, EntryKind.OUTAGE, now, region, unfinished)
        change_id = fact.change_id
        self.correlate.ledger.append([fact])
        return self._degraded(
            change_id,
            "incomplete",
            Severity.HIGH,
            "ChangeGuard degraded: the missed-change sweep ran out of time",
            f"The hourly reconciliation stopped at its deadline with {len(left)} account-region(s) not read"
            " to the end: write calls whose events never arrived there are not judged yet. The next run"
            " reads them first, from where this one left them; if this repeats, raise ReconcileReaders"
            " (see the README's sizing).",
            reasons,
            "recorded which account-regions were left; the next run starts with them",
            now,
            region,
        )

    def _report_unparsed(self, reasons: list[str], now: datetime, region: str | None) -> list[str]:
        """Alert once a day that records were skipped; the run's RECONCILED entry names them."""
        change_id = f"{PROGRESS}:{now.strftime('%Y-%m-%d')}"
        return self._degraded(
            change_id,
            "unparsed",
            Severity.MEDIUM,
            "ChangeGuard degraded: the missed-change sweep skipped CloudTrail records it could not parse",
            f"{len(reasons)} write call(s) in CloudTrail's event history could not be parsed as CloudTrail"
            " records and were not checked for a missed verdict. Look them up by EventId; the run's"
            " RECONCILED entry names them.",
            reasons,
            "named the skipped records in the run's RECONCILED entry; the sweep went on",
            now,
            region,
        )

    def _report_gaps(
        self, gaps: list[tuple[Pair, datetime, datetime]], now: datetime, region: str | None
    ) -> tuple[list[str], list[str]]:
        """Ledger the spans that left CloudTrail's event history unread, and alert once a day.

        The pair's mark then moves past the span: it is accounted for (as a gap), and each run
        after reads what CloudTrail still holds instead of reporting the same span again."""
        spans = [
            {
                "account": account or "",
                "region": where or "",
                "from": since.astimezone(UTC).isoformat(timespec="seconds"),
                "to": to.astimezone(UTC).isoformat(timespec="seconds"),
            }
            for (account, where), since, to in gaps
        ]
        reasons = [
            f"could not read the CloudTrail event history of account {s['account'] or 'its own'},"
            f" {s['region'] or 'its region'} from {s['from']} to {s['to']}: older than the 90 days"
            " LookupEvents keeps; write calls then are not reconciled"
            for s in spans
        ]
        fact = self._run_entry(GAP, EntryKind.OUTAGE, now, region, {"gaps": spans})
        self.correlate.ledger.append([fact])
        alert_ids = self._degraded(
            fact.change_id,
            "gap",
            Severity.HIGH,
            "ChangeGuard degraded: missed-change sweep could not cover a span of CloudTrail",
            f"{len(spans)} account-region(s) fell behind past the 90 days of CloudTrail's event history:"
            " write calls of the spans named were never checked for a missed verdict. Read them from the"
            " trail's S3 log files if the trail has them.",
            reasons,
            "recorded the unread spans as a gap; the sweep goes on from where CloudTrail still holds events",
            now,
            region,
        )
        return reasons, alert_ids

    def _degraded(
        self,
        change_id: str,
        what: str,
        severity: Severity,
        subject: str,
        summary: str,
        reasons: list[str],
        action: str,
        now: datetime,
        region: str | None,
    ) -> list[str]:
        """A ``degraded`` alert about this day's runs, written once a day (its id is the day's and ``what``)."""
        alert = Alert(
            alert_id=Alert.make_id(change_id, self.function, what),
            kind="degraded",
            function=self.function,
            severity=severity,
            verdict=None,
            subject=subject,
            summary=summary,
            change_id=change_id,
            event_time=now,
            region=region,
            reasons=tuple(reasons[:20]),
            actions=(action,),
        )
        return [alert.alert_id] if self.correlate.ledger.append([alert_entry(alert, now, now)]) else []

    def suite_prefixes_of(self, record: CloudTrailRecord) -> tuple[str, ...]:
        """The suite's role prefixes for ``record``'s account: the central one's, and its own when it
        is a member account (where the suite acts through its member roles)."""
        return self.suite_role_prefixes + self._member_prefixes.get(record.recipientAccountId or "", ())

    @staticmethod
    def change_of(record: CloudTrailRecord) -> Change:
        # LookupEvents answers for one account and region: the record carries both.
        return change_from_cloudtrail(record, record.recipientAccountId or "", record.awsRegion or "")


def _unparsed_body(pair: Pair, event: UnparsedTrailEvent) -> dict[str, str]:
    return {"account": pair[0] or "", "region": pair[1] or "", "event_id": event.event_id, "error": event.error}


def _pair_key(pair: Pair) -> str:
    """``<account>|<region>``, empty for the function's own account or region."""
    return f"{pair[0] or ''}|{pair[1] or ''}"


def _pairs_to_body(progress: Mapping[Pair, datetime]) -> dict[str, list[str]]:
    """Pairs grouped by time (most share their run's), so 1,500 of them fit one ledger item."""
    grouped: dict[str, list[str]] = {}
    for pair, at in progress.items():
        grouped.setdefault(at.astimezone(UTC).isoformat(timespec="seconds"), []).append(_pair_key(pair))
    return {at: sorted(keys) for at, keys in sorted(grouped.items())}


def _pairs_from_body(body: Mapping[str, Any], key: str = "complete_through") -> dict[Pair, datetime]:
    found: dict[Pair, datetime] = {}
    grouped = body.get(key)
    if not isinstance(grouped, dict):
        return found
    for at, keys in grouped.items():
        try:
            when = datetime.fromisoformat(at)
        except (TypeError, ValueError):
            continue  # not ours: the pair is read from the look-back's start, which is safe
        if when.tzinfo is None or not isinstance(keys, list):
            continue
        for key in keys:
            if isinstance(key, str) and key.count("|") == 1:
                account, region = key.split("|")
                found[(account or None, region or None)] = when
    return found


def _slices(start: datetime, until: datetime) -> Iterator[tuple[datetime, datetime | None]]:
    """From ``start`` on in ``SLICE``-long ranges, oldest first. The last one, reaching ``until``,
    is open (no ``EndTime``): the calls the history shows while the run reads are judged too, as
    they always were; the next run reads them again from its settle margin."""
    begin = start
    while begin + SLICE < until:
        yield begin, begin + SLICE
        begin += SLICE
    yield begin, None


class _Readers:
    """Reads the pairs' trails side by side, hands their records over one at a time.

    Each reader thread opens the acting scope of its own pair (the scope is a context variable:
    per thread). ``stop`` asks the readers to end early; a pair stopped, or whose records were
    handed over after the stop and not judged, is reported by ``unfinished``.
    """

    def __init__(
        self,
        service: ReconcileService,
        starts: Mapping[Pair, datetime],
        run_id: str,
        workers: int,
        expired: Callable[[], bool] = lambda: False,
        *,
        until: datetime,
        settled: datetime,
    ) -> None:
        self.service = service
        self.until = until
        self.settled = settled
        self.expired = expired
        self.starts = starts
        self.run_id = run_id
        self.workers = workers
        self.queue: queue.Queue[tuple[str, Pair, object]] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._unfinished: set[Pair] = set()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> _Readers:
        return self

    def __exit__(self, *exc: object) -> None:
        # Readers still blocked on a full queue (the judging ended early) give up, then are joined.
        self._stop.set()
        self._closing.set()
        if self._pool is not None:
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
            self._pool.shutdown(wait=True)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def left_unread(self, account: str | None, region: str | None) -> None:
        with self._lock:
            self._unfinished.add((account, region))

    def unfinished(self, order: list[Pair]) -> list[Pair]:
        with self._lock:
            return [pair for pair in order if pair in self._unfinished]

    def results(self, pairs: list[Pair]) -> Iterator[tuple[str, Pair, object]]:
        """("record" | "slice" | "refused" | "failed", pair, payload) as the readers produce them.

        "slice": every record of the pair up to ``payload`` (a time) has been handed over."""
        if not pairs:
            return
        self._pool = ThreadPoolExecutor(max_workers=min(self.workers, len(pairs)), thread_name_prefix="lookup")
        for pair in pairs:
            self._pool.submit(self._read, pair)
        remaining = len(pairs)
        while remaining:
            # The deadline is checked while waiting too: readers paging through calls that are not
            # judged hand nothing over, and must still stop in time.
            if not self.stopped and self.expired():
                self.stop()
            try:
                kind, pair, payload = self.queue.get(timeout=1.0)
            except queue.Empty:
                continue
            if kind in ("done", "stopped", "refused", "failed"):
                remaining -= 1
            if kind == "stopped":
                self.left_unread(*pair)
            if kind not in ("done", "stopped"):
                yield kind, pair, payload

    def _put(self, item: tuple[str, Pair, object]) -> bool:
        while True:
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._closing.is_set():
                    return False

    def _read(self, pair: Pair) -> None:
        service = self.service
        account, region = pair
        if self._stop.is_set():
            self._put(("stopped", pair, None))
            return
        try:
            with acting_in(service.scope, account, region, self.run_id):
                try:
                    previous: datetime | None = None
                    for begin, end in _slices(self.starts[pair], self.until):
                        if self._stop.is_set():
                            self._put(("stopped", pair, None))
                            return
                        for record in service.trail.write_events(begin, end):
                            if self._stop.is_set():
                                self._put(("stopped", pair, None))
                                return
                            if isinstance(record, UnparsedTrailEvent):
                                if not self._put(("unparsed", pair, record)):
                                    return
                                continue
                            # StartTime and EndTime are both inclusive: a call at the boundary
                            # was the previous slice's.
                            if previous is not None and record.eventTime <= previous:
                                continue
                            wanted = is_correlated_write(
                                record, service.event_sources, service.suite_prefixes_of(record)
                            )
                            if wanted and not self._put(("record", pair, record)):
                                return
                        # Read to the slice's end: complete through it, but never past the settle margin.
                        # (Nor before where its reading began: a pair first read marks no time it did not read.)
                        reached = max(self.starts[pair], min(end or self.until, self.settled))
                        if not self._put(("slice", pair, reached)):
                            return
                        previous = end
                except TrailAccessDeniedError as exc:
                    raise refused_in(service.scope, account, exc.code, "cloudtrail:LookupEvents") from exc
        except CrossAccountAccessError as exc:
            self._put(("refused", pair, exc))
            return
        except Exception as exc:  # noqa: BLE001 - handed to the judging thread, which raises it
            self._put(("failed", pair, exc))
            return
        self._put(("done", pair, None))
