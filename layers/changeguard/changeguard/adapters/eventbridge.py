"""EventBridge rules as the heartbeat reads them: state, pattern and targets of the rules that carry changes."""

from __future__ import annotations

from typing import Any

from changeguard.adapters.clients import client
from changeguard.domain.heartbeat import RuleReading, WatchedRule


class EventBridgeRules:
    """``DescribeRule`` and ``ListTargetsByRule`` of one rule on the default bus."""

    def __init__(self, events: Any | None = None) -> None:
        self._events = events

    def read(self, rule: WatchedRule) -> RuleReading:
        """The rule's state, pattern and targets; a rule that no longer exists reads as state None.

        Both calls raise ``ResourceNotFoundException`` for a rule that does not exist (a rule deleted
        between the two calls reads as deleted too). Any other error (throttling past the retries,
        access denied) escapes: the tick fails, and the function's errors alarm says so.
        """
        events = self._events or client("events")
        missing = events.exceptions.ResourceNotFoundException
        try:
            described = events.describe_rule(Name=rule.name)
            state = str(described["State"])
            # DescribeRule returns EventPattern as a JSON string, absent for a rule with a schedule only.
            pattern = described.get("EventPattern")
            targets: list[str] = []
            kwargs: dict[str, Any] = {"Rule": rule.name}
            while True:
                page = events.list_targets_by_rule(**kwargs)
                targets.extend(str(t["Arn"]) for t in page.get("Targets", []))
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        except missing:
            return RuleReading(rule=rule, state=None)
        return RuleReading(rule=rule, state=state, targets=tuple(targets), pattern=pattern)
