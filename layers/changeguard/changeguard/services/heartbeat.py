"""The heartbeat: send a canary through the whole path; alert once when one does not arrive (issue 8).

Each tick (a "Scheduled Event") first judges the path from the ledger (``domain.heartbeat.assess``):
a canary past its grace period that never arrived opens a heartbeat outage with one critical alert;
a canary arriving again closes it with a recovery alert. Then it sends this tick's canary: the
``SENT#<id>`` entry first (conditional: a redelivered tick writes nothing new), then the write call
CloudTrail records and EventBridge delivers to the correlator, which records ``ARRIVED#<id>``.
Alerts go through the ledger like every other alert (the outbox).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from changeguard.domain.alerts import Alert, alert_entry
from changeguard.domain.heartbeat import (
    ARRIVED,
    CANARY_DESCRIPTION,
    DOWN,
    HEARTBEAT_KEY,
    SENT,
    UP,
    Assessment,
    Finding,
    assess,
    canary_id,
)
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.domain.verdicts import Severity
from changeguard.models.scheduled import parse_scheduled
from changeguard.ports import Clock, Ledger, ParameterWriter
from changeguard.services.outcome import Outcome

REMEDIATION = (
    "Check that the CloudTrail trail is logging, that ChangeGuard's EventBridge rules are enabled and"
    " that correlate_change is not failing (its errors alarm and failure queue). The hourly"
    " reconciliation sweep judges the changes missed meanwhile once the path works again."
)


class HeartbeatService:
    """One tick: judge the last canaries, then send this tick's."""

    def __init__(
        self,
        *,
        function: str,
        ledger: Ledger,
        parameters: ParameterWriter,
        parameter_name: str,
        policy: Callable[[], Policy],
        clock: Clock,
    ) -> None:
        self.function = function
        self.ledger = ledger
        self.parameters = parameters
        self.parameter_name = parameter_name
        self.policy = policy
        self.clock = clock

    def handle(self, event: Mapping[str, Any]) -> Outcome:
        """Run on EventBridge's "Scheduled Event"; anything else is rejected."""
        parsed = parse_scheduled(event)
        return self.tick(parsed.time)

    def tick(self, at: datetime) -> Outcome:
        policy = self.policy()
        now = self.clock.now().astimezone(UTC)
        entries = self.ledger.entries_for(HEARTBEAT_KEY)
        grace = timedelta(minutes=policy.heartbeat_grace_minutes)
        assessment = assess(entries, now, grace)
        actions: list[str] = []
        alert_ids: list[str] = []
        if assessment.alerts:
            alert = self.alert(assessment, now, grace)
            marker = DOWN if assessment.finding is Finding.MISSING else UP
            fact = LedgerEntry(
                change_id=HEARTBEAT_KEY,
                entry=f"{marker}{assessment.outage:06d}",
                kind=EntryKind.HEARTBEAT,
                function=self.function,
                event_time=now,
                recorded_at=now,
                body={"finding": assessment.finding.value, "canary": assessment.canary},
            )
            item = alert_entry(alert, now, now, suffix=f"{assessment.outage:06d}")
            if self.ledger.append([fact, item]):
                actions.append(f"heartbeat outage #{assessment.outage} {'opened' if marker == DOWN else 'closed'}")
                alert_ids.append(alert.alert_id)
        canary = canary_id(at)
        sent = LedgerEntry(
            change_id=HEARTBEAT_KEY,
            entry=f"{SENT}{canary}",
            kind=EntryKind.HEARTBEAT,
            function=self.function,
            event_time=at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC),
            recorded_at=now,
            body={"canary": canary, "parameter": self.parameter_name},
        )
        new = self.ledger.append([sent])
        if new or not any(e.entry == f"{ARRIVED}{canary}" for e in entries):
            # A retry after a failed put sends again; a second copy only records ARRIVED once.
            self.parameters.put(self.parameter_name, canary, f"{CANARY_DESCRIPTION}{canary}")
            actions.append(f"sent canary {canary}")
        else:
            actions.append(f"canary {canary} already sent and arrived")
        return Outcome(
            function=self.function,
            change_id=HEARTBEAT_KEY,
            actions=actions,
            reasons=[describe(assessment, grace)],
            duplicate=not new,
            alert_ids=alert_ids,
        )

    def alert(self, assessment: Assessment, now: datetime, grace: timedelta) -> Alert:
        minutes = int(grace.total_seconds() // 60)
        last = assessment.last_arrival.isoformat() if assessment.last_arrival else "never"
        if assessment.finding is Finding.MISSING:
            return Alert(
                alert_id=Alert.make_id(HEARTBEAT_KEY, self.function, f"missing-{assessment.outage}"),
                kind="heartbeat-missing",
                function=self.function,
                severity=Severity.CRITICAL,
                subject="ChangeGuard heartbeat missing: changes may not be reaching the suite",
                summary=(
                    f"The heartbeat canary {assessment.canary} has not reached the change ledger {minutes} minutes"
                    f" after it was sent (last canary to arrive: {last}). Changes made meanwhile may not be judged."
                ),
                change_id=HEARTBEAT_KEY,
                event_time=now,
                reasons=(describe(assessment, grace),),
                actions=("opened a heartbeat outage", "keeps sending a canary every run"),
                remediation=REMEDIATION,
                details={"canary": assessment.canary, "last_arrival": last, "grace_minutes": minutes},
            )
        return Alert(
            alert_id=Alert.make_id(HEARTBEAT_KEY, self.function, f"recovered-{assessment.outage}"),
            kind="heartbeat-recovered",
            function=self.function,
            severity=Severity.INFO,
            subject="ChangeGuard heartbeat recovered: canaries reach the suite again",
            summary=(
                f"Heartbeat canaries reach the change ledger again (outage #{assessment.outage}). The hourly"
                " reconciliation sweep judges the changes missed during the outage."
            ),
            change_id=HEARTBEAT_KEY,
            event_time=now,
            actions=("closed the heartbeat outage",),
            details={"canary": assessment.canary, "last_arrival": last},
        )


def describe(assessment: Assessment, grace: timedelta) -> str:
    minutes = int(grace.total_seconds() // 60)
    return {
        Finding.WAITING: f"no canary is {minutes} minutes old yet",
        Finding.HEALTHY: f"canary {assessment.canary} arrived",
        Finding.MISSING: f"canary {assessment.canary} did not arrive within {minutes} minutes",
        Finding.STILL_MISSING: f"canary {assessment.canary} did not arrive either (outage #{assessment.outage})",
        Finding.RECOVERED: f"canary {assessment.canary} arrived: outage #{assessment.outage} is over",
    }[assessment.finding]
