"""The scheduled sweep: quarantine what is still untagged after its grace period, release what complies.

It visits every resource carrying ``changeguard:quarantine-after`` (oldest deadline first), so a
resource whose tag-change event never arrived (CloudTrail delivery is best effort) is still
released, and one that stayed untagged is quarantined. At most ``quarantine-max-resources``
quarantines per run: past that it stops quarantining, says so in one alert, and leaves the rest
for the next run. A run is one scheduled event, Lambda's retries of it included: a run that fails
(a resource it cannot contain, an account it cannot search) still fails, so the retries and the
failure destination see it, but its retries only finish what it could not, within the same cap.
Releases are never capped: they only undo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from changeguard.domain.errors import CrossAccountAccessError
from changeguard.domain.policy import Policy
from changeguard.domain.quarantine import ResourceRef, TagVerdict
from changeguard.domain.tags import QUARANTINE_AFTER, TagEventKind, format_time, parse_time
from changeguard.models.scheduled import parse_scheduled
from changeguard.ports import ActingScope, Clock
from changeguard.quarantine import Registry
from changeguard.services.acting import acting_in, refusal_of, report_refusal
from changeguard.services.outcome import Outcome
from changeguard.services.tag_enforcement import Enforcer, ResourceResult, Trigger, outcome_of

_NEVER = datetime.max.replace(tzinfo=UTC)
#: Account-regions searched for marks at once (one Tagging API query each, paginated).
FINDERS = 8


class MarkedResources(Protocol):
    def marked(self) -> list[tuple[str, dict[str, str]]]:
        """(ARN, tags) of every resource carrying ``changeguard:quarantine-after``."""
        ...


class QuarantineSweepService:
    def __init__(
        self,
        *,
        function: str,
        enforcer: Enforcer,
        registry: Registry,
        finder: MarkedResources,
        policy: Callable[[], Policy],
        clock: Clock,
        scope: ActingScope | None = None,
        member_accounts: tuple[str, ...] = (),
        regions: tuple[str, ...] = (),
    ) -> None:
        # issue 9: the member accounts whose marked resources it also sweeps (through the quarantine
        # role there), besides the function's own account; and the other regions it sweeps in each.
        # Marks are regional (a resource is marked where its event came from), and so is the
        # Tagging API that finds them: a region not swept is a region whose marks never come due.
        self.scope = scope
        self.member_accounts = tuple(a for a in member_accounts if a)
        self.regions = tuple(r for r in regions if r)
        self.function = function
        self.enforcer = enforcer
        self.registry = registry
        self.finder = finder
        self.policy = policy
        self.clock = clock

    def handle(self, event: Mapping[str, Any]) -> Outcome:
        scheduled = parse_scheduled(event)
        policy = self.policy()
        now = self.clock.now()
        # The run is the scheduled event, named by its ``time`` (the schedule's). Lambda runs a failed
        # asynchronous invocation "two more times" with the same event (1, then 2 minutes later), and
        # may deliver an event more than once without errors: so the cap counts per run, retries and
        # duplicates included, and a retry alerts nothing the run already alerted. Every failure still
        # raises (below): a retry finishes what the run could not, within the run's cap.
        run = f"sweep:{format_time(scheduled.time)}"
        trigger = Trigger(key=run, kind=TagEventKind.SWEEP, event_time=now, source="scheduled sweep")
        budget = self.enforcer.budget(policy.quarantine_max_resources, trigger)
        extra: list[str] = []
        alert_ids: list[str] = []
        found: list[tuple[str, str, str, dict[str, str]]] = []  # (account, region, ARN, tags)
        regions = tuple(dict.fromkeys((scheduled.region, *self.regions)))
        # Its own account (whatever account the schedule's envelope names) and each member's, in
        # each region: found several at a time (issue 9: hundreds of accounts), then handled in
        # deadline order below. A refused role is reported once per account.
        pairs = [(account, region) for account in (None, *self.member_accounts) for region in regions]

        def find(pair: tuple[str | None, str]) -> list[tuple[str, str, str, dict[str, str]]]:
            account, region = pair
            with acting_in(self.scope, account, region, run):
                owner = account or scheduled.account
                return [(owner, region, arn, tags) for arn, tags in self.finder.marked()]

        with ThreadPoolExecutor(max_workers=min(FINDERS, len(pairs)), thread_name_prefix="find-marks") as pool:
            futures = [pool.submit(find, pair) for pair in pairs]
        refused: dict[str, CrossAccountAccessError] = {}
        failures: list[BaseException] = []
        for (account, region), future in zip(pairs, futures, strict=True):
            try:
                found += future.result()
            except Exception as exc:  # noqa: BLE001 - one account-region must not cost the others their sweep
                denial = refusal_of(exc, self.scope, account, region)
                if denial is not None:  # the role, an SCP denying the region, a region not enabled
                    refused.setdefault(denial.account, denial)
                else:
                    failures.append(exc)
                    extra.append(f"could not search account {account or scheduled.account}, {region}: {exc}")
        for denial in refused.values():
            reason, ids = report_refusal(
                self.enforcer.ledger,
                self.function,
                denial,
                what="find marked resources",
                cause=run,
                now=now,
                region=scheduled.region,
            )
            extra.append(reason)
            alert_ids += ids
        marked = sorted(found, key=lambda item: parse_time(item[3].get(QUARANTINE_AFTER)) or _NEVER)
        results: list[ResourceResult] = []
        for account, region, arn, _tags in marked:
            handler = self.registry.for_arn(arn)
            # An S3 ARN names no account nor region: the resource is where it was found.
            ref = handler.ref_from_arn(arn, account, region) if handler else None
            if handler is None or ref is None:
                results.append(
                    ResourceResult(
                        _unknown(arn, account, region),
                        TagVerdict.SKIPPED,
                        reasons=["no quarantine is registered for it"],
                    )
                )
                continue
            try:
                results.append(
                    self.enforcer.converge(handler, ref, policy=policy, now=now, trigger=trigger, budget=budget)
                )
            except Exception as exc:  # noqa: BLE001 - the next resources are still handled
                failures.append(exc)
                results.append(
                    ResourceResult(ref, TagVerdict.SKIPPED, reasons=[f"failed: {exc}; the next run retries"])
                )
        if budget.hit:
            action, cap_ids = self.enforcer.cap_hit(budget, now=now, trigger=trigger, policy=policy)
            alert_ids += cap_ids
            extra.append(action)
        if not marked:
            extra.append("no marked resources")
        if failures:
            # What could be done is done and ledgered; the run still fails, so the retry, the failure
            # queue and the Errors alarm say that an account-region or a resource needs a look.
            raise failures[0]
        outcome = outcome_of(self.function, run, results, extra)
        outcome.alert_ids += alert_ids
        # A sweep judges no single change: its result is what it did, not a verdict.
        return outcome.model_copy(update={"verdict": None})


def _unknown(arn: str, account: str, region: str) -> ResourceRef:
    return ResourceRef(type="unknown", resource_id=arn.rsplit("/", 1)[-1], arn=arn, account=account, region=region)
