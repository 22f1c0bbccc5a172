"""The reconciliation sweep: judge every write call the live path missed (issue 8).

CloudTrail, Config and CodeDeploy deliver to EventBridge best effort: rarely, an event never
arrives. Every hour this sweep reads CloudTrail's durable record (``LookupEvents``) of the last
``reconcile_lookback_hours`` (default 24), keeps the write calls the correlator's rule would have
passed (``domain.reconcile``), and sends each one missing from the ledger through the same
correlation path (``CorrelateService.evaluate``). Already-judged calls are skipped with one
``BatchGetItem`` per hundred; the ledger's conditional put makes a race with a late live delivery
a no-op. A second run writes nothing new.

``LookupEvents`` holds management events only: data events (object- and item-level calls) that a
trail sends to EventBridge are not reconciled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, timedelta
from typing import Any

from changeguard.domain.change import Change, change_from_cloudtrail
from changeguard.domain.ledger import EntryKind
from changeguard.domain.policy import Policy
from changeguard.domain.reconcile import is_correlated_write
from changeguard.models.cloudtrail import CloudTrailRecord
from changeguard.models.scheduled import parse_scheduled
from changeguard.ports import Clock, LedgerKeys, TrailReader
from changeguard.services.correlate import CorrelateService
from changeguard.services.outcome import Outcome

CHUNK = 100  # write calls checked against the ledger at a time
MAX_LISTED = 50  # missed changes named in the outcome (the rest are counted)


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
    ) -> None:
        self.function = function
        self.correlate = correlate
        self.trail = trail
        self.keys = keys
        self.policy = policy
        self.clock = clock
        self.event_sources = frozenset(event_sources)
        self.suite_role_prefixes = suite_role_prefixes
        self.last_missed = 0

    @property
    def clock(self) -> Clock:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        # One clock for the sweep and the verdicts it records (the harness replaces it to fix time).
        self._clock = clock
        self.correlate.clock = clock

    def handle(self, event: Mapping[str, Any]) -> Outcome:
        """Run on EventBridge's "Scheduled Event"; anything else is rejected."""
        parse_scheduled(event)
        return self.run()

    def run(self) -> Outcome:
        policy = self.policy()
        hours = policy.reconcile_lookback_hours
        start = self.clock.now().astimezone(UTC) - timedelta(hours=hours)
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

        for record in self.trail.write_events(start):
            if not is_correlated_write(record, self.event_sources, self.suite_role_prefixes):
                continue
            seen += 1
            chunk.append(self.change_of(record))
            if len(chunk) >= CHUNK:
                flush()
        flush()
        self.last_missed = len(missed)
        summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "none"
        return Outcome(
            function=self.function,
            verdict=None,
            actions=[f"judged {len(missed)} missed change(s) of {seen} write call(s) in the last {hours} h: {summary}"],
            reasons=missed[:MAX_LISTED]
            + ([f"... and {len(missed) - MAX_LISTED} more"] if len(missed) > MAX_LISTED else []),
            alert_ids=alert_ids,
        )

    @staticmethod
    def change_of(record: CloudTrailRecord) -> Change:
        # LookupEvents answers for one account and region: the record carries both.
        return change_from_cloudtrail(record, record.recipientAccountId or "", record.awsRegion or "")
