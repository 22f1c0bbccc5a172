"""The scheduled sweep: quarantine what is still untagged after its grace period, release what complies.

It visits every resource carrying ``changeguard:quarantine-after`` (oldest deadline first), so a
resource whose tag-change event never arrived (CloudTrail delivery is best effort) is still
released, and one that stayed untagged is quarantined. At most ``quarantine-max-resources``
quarantines per run: past that it stops quarantining, says so in one alert, and leaves the rest
for the next run. Releases are never capped: they only undo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from changeguard.domain.policy import Policy
from changeguard.domain.quarantine import Budget, ResourceRef, TagVerdict
from changeguard.domain.tags import QUARANTINE_AFTER, TagEventKind, format_time, parse_time
from changeguard.models.scheduled import parse_scheduled
from changeguard.ports import Clock
from changeguard.quarantine import Registry
from changeguard.services.outcome import Outcome
from changeguard.services.tag_enforcement import Enforcer, ResourceResult, Trigger, outcome_of

_NEVER = datetime.max.replace(tzinfo=UTC)


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
    ) -> None:
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
        run = f"sweep:{format_time(now)}"
        trigger = Trigger(key=run, kind=TagEventKind.SWEEP, event_time=now, source="scheduled sweep")
        budget = Budget(policy.quarantine_max_resources)
        marked = sorted(self.finder.marked(), key=lambda item: parse_time(item[1].get(QUARANTINE_AFTER)) or _NEVER)
        results: list[ResourceResult] = []
        extra: list[str] = []
        for arn, _tags in marked:
            handler = self.registry.for_arn(arn)
            ref = handler.ref_from_arn(arn, scheduled.account, scheduled.region) if handler else None
            if handler is None or ref is None:
                results.append(
                    ResourceResult(
                        _unknown(arn, scheduled.account, scheduled.region),
                        TagVerdict.SKIPPED,
                        reasons=["no quarantine is registered for it"],
                    )
                )
                continue
            results.append(self.enforcer.converge(handler, ref, policy=policy, now=now, trigger=trigger, budget=budget))
        alert_ids: list[str] = []
        if budget.hit:
            action, alert_ids = self.enforcer.cap_hit(budget, now=now, trigger=trigger, policy=policy)
            extra.append(action)
        if not marked:
            extra.append("no marked resources")
        outcome = outcome_of(self.function, run, results, extra)
        outcome.alert_ids += alert_ids
        # A sweep judges no single change: its result is what it did, not a verdict.
        return outcome.model_copy(update={"verdict": None})


def _unknown(arn: str, account: str, region: str) -> ResourceRef:
    return ResourceRef(type="unknown", resource_id=arn.rsplit("/", 1)[-1], arn=arn, account=account, region=region)
