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

Issue 9: ``LookupEvents`` answers for one account and region. The sweep reads its own account in its
own region and in each of ``regions`` (the other regions that forward events here, us-east-1 among
them for the global services' calls), then each of ``member_accounts`` the same way, through the
read role of ``member/member-account.yaml``. An account whose role cannot be assumed, or a region
whose trail refuses the lookup, is skipped, named in the outcome, and alerted once a day (as every
refused acting role is); the others are still reconciled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, timedelta
from typing import Any

from changeguard.domain.change import Change, change_from_cloudtrail
from changeguard.domain.errors import CrossAccountAccessError, TrailAccessDeniedError
from changeguard.domain.ledger import EntryKind
from changeguard.domain.policy import Policy
from changeguard.domain.reconcile import is_correlated_write
from changeguard.models.cloudtrail import CloudTrailRecord
from changeguard.models.scheduled import parse_scheduled
from changeguard.ports import ActingScope, Clock, LedgerKeys, TrailReader
from changeguard.services.acting import acting_in, not_acted_reason, report_denied
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
        scope: ActingScope | None = None,
        member_accounts: tuple[str, ...] = (),
        regions: tuple[str, ...] = (),
    ) -> None:
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
        scheduled = parse_scheduled(event)
        return self.run(scheduled.region)

    def run(self, home_region: str | None = None) -> Outcome:
        policy = self.policy()
        hours = policy.reconcile_lookback_hours
        now = self.clock.now()
        start = now.astimezone(UTC) - timedelta(hours=hours)
        run_id = f"reconcile:{start.isoformat(timespec='seconds')}"
        regions = tuple(dict.fromkeys(r for r in (home_region, *self.regions) if r)) or (None,)
        unread: list[str] = []
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

        # Its own account first, then each member's; in each, its own region first, then the others.
        # A refused role fails every region of its account at once (AccountClients remembers the
        # refusal); a region refused by policy (an SCP) leaves the account's other regions read.
        for account in (None, *self.member_accounts):
            for region in regions:
                try:
                    with acting_in(self.scope, account, region, run_id):
                        try:
                            for record in self.trail.write_events(start):
                                if not is_correlated_write(record, self.event_sources, self.suite_role_prefixes):
                                    continue
                                seen += 1
                                chunk.append(self.change_of(record))
                                if len(chunk) >= CHUNK:
                                    flush()
                        except TrailAccessDeniedError as exc:
                            raise self._refused(account, region, exc) from exc
                except CrossAccountAccessError as exc:
                    what = f"read the CloudTrail event history of {region or 'its region'}"
                    unread.append(not_acted_reason(exc, what))
                    alert_ids += report_denied(
                        self.correlate.ledger,
                        self.function,
                        exc,
                        what=what,
                        cause=run_id,
                        event_time=now,
                        now=now,
                        region=region,
                    )
        flush()
        self.last_missed = len(missed)
        summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or "none"
        actions = [f"judged {len(missed)} missed change(s) of {seen} write call(s) in the last {hours} h: {summary}"]
        if unread:
            actions.append(f"could not read {len(unread)} account-region(s); their missed changes are not judged")
        return Outcome(
            function=self.function,
            verdict=None,
            actions=actions,
            reasons=unread
            + missed[:MAX_LISTED]
            + ([f"... and {len(missed) - MAX_LISTED} more"] if len(missed) > MAX_LISTED else []),
            alert_ids=alert_ids,
        )

    def _refused(self, account: str | None, region: str | None, exc: TrailAccessDeniedError) -> CrossAccountAccessError:
        """A refused lookup, as the refusal of the acting role in that account (reported the same way)."""
        owner = account or (self.scope.current_account() if self.scope is not None else None) or "this account"
        role = None
        if account and self.scope is not None:
            role = self.scope.acted_as(account).get("role")
        return CrossAccountAccessError(owner, role, exc.code, action="cloudtrail:LookupEvents")

    @staticmethod
    def change_of(record: CloudTrailRecord) -> Change:
        # LookupEvents answers for one account and region: the record carries both.
        return change_from_cloudtrail(record, record.recipientAccountId or "", record.awsRegion or "")
