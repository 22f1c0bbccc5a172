"""The heartbeat: send a canary through the whole path; alert once when one does not arrive (issue 8).

Each tick (a "Scheduled Event") first judges the path from the ledger (``domain.heartbeat.assess``):
a canary past its grace period that never arrived opens a heartbeat outage with one critical alert;
a canary arriving again closes it with a recovery alert. Then it sends this tick's canary: the
``SENT#<id>`` entry first (conditional: a redelivered tick writes nothing new), then the write call
CloudTrail records and EventBridge delivers to the correlator, which records ``ARRIVED#<id>``.
Last it reads the rules that carry changes (``domain.heartbeat.assess_rules``), which the canary
never takes: a rule disabled, deleted or stripped of its function's target opens an outage of its
own with one critical alert, and its repair closes it with a recovery alert. It also fingerprints each
rule's pattern (``domain.heartbeat.assess_patterns``): the first reading becomes the rule's baseline,
and a different one later raises one high alert and becomes the new baseline.
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
    RULES_KEY,
    SENT,
    UP,
    Assessment,
    Finding,
    PatternAssessment,
    PatternFinding,
    RuleAssessment,
    RuleFinding,
    WatchedRule,
    assess,
    assess_patterns,
    assess_rules,
    canary_id,
)
from changeguard.domain.ledger import KEY_END, EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.domain.verdicts import Severity
from changeguard.models.scheduled import parse_scheduled
from changeguard.ports import Clock, Ledger, ParameterWriter, RuleReader
from changeguard.services.outcome import Outcome

REMEDIATION = (
    "Check that the CloudTrail trail is logging, that ChangeGuard's EventBridge rules are enabled and"
    " that correlate_change is not failing (its errors alarm and failure queue). The hourly"
    " reconciliation sweep judges the changes missed meanwhile once the path works again."
)

RULE_REMEDIATION = (
    "Redeploy the ChangeGuard stack (or enable the rule and put its target back) and find who changed it:"
    " CloudTrail records DisableRule, RemoveTargets, PutRule and DeleteRule (events.amazonaws.com). The"
    " hourly reconciliation sweep judges the CloudTrail write calls missed meanwhile."
)

PATTERN_REMEDIATION = (
    "Match the change to an approved change: a ChangeGuard stack update, or the PutRule call CloudTrail"
    " recorded for this rule (events.amazonaws.com). If none explains it, redeploy the stack to restore the"
    " template's pattern and treat it as control tampering; the hourly reconciliation sweep judges the"
    " CloudTrail write calls the changed pattern no longer matched."
)
#: How much of a changed pattern an alert shows (the ledger's PATTERN# fact keeps all of it).
PATTERN_SHOWN = 1000


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
        rules: RuleReader | None = None,
        watched: tuple[WatchedRule, ...] = (),
    ) -> None:
        self.function = function
        self.rules = rules
        self.watched = watched
        self.ledger = ledger
        self.parameters = parameters
        self.parameter_name = parameter_name
        self.policy = policy
        self.clock = clock

    def handle(self, event: Mapping[str, Any]) -> Outcome:
        """Run on EventBridge's "Scheduled Event"; anything else is rejected."""
        parsed = parse_scheduled(event, now=self.clock.now())  # a tick's time is its canary's id
        return self.tick(parsed.time)

    def tick(self, at: datetime) -> Outcome:
        policy = self.policy()
        now = self.clock.now().astimezone(UTC)
        grace = timedelta(minutes=policy.heartbeat_grace_minutes)
        canary = canary_id(at)
        entries = self.recent_entries(now, grace, canary)
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
        reasons = [describe(assessment, grace)]
        judged_rules, patterns = self.watch_rules()
        for judged in judged_rules:
            reasons.append(describe_rule(judged))
            if not judged.alerts:
                continue
            alert = self.rule_alert(judged, now)
            if self.ledger.append(self.rule_entries(judged, alert, now)):
                opened = judged.finding is RuleFinding.BROKEN
                actions.append(
                    f"rule {judged.reading.rule.label} outage #{judged.outage} {'opened' if opened else 'closed'}"
                )
                alert_ids.append(alert.alert_id)
        for seen in patterns:
            if seen.alerts:
                reasons.append(describe_pattern(seen))
            if not seen.records:
                continue
            pattern_alert = self.pattern_alert(seen, now) if seen.alerts else None
            if self.ledger.append(self.pattern_entries(seen, pattern_alert, now)):
                label = seen.reading.rule.label
                if pattern_alert is None:
                    actions.append(
                        f"recorded rule {label}'s pattern {_short(seen.reading.fingerprint)} as its baseline"
                    )
                else:
                    actions.append(f"rule {label} pattern changed: baseline #{seen.number} recorded")
                    alert_ids.append(pattern_alert.alert_id)
        return Outcome(
            function=self.function,
            change_id=HEARTBEAT_KEY,
            actions=actions,
            reasons=reasons,
            duplicate=not new,
            alert_ids=alert_ids,
        )

    def recent_entries(self, now: datetime, grace: timedelta, canary: str) -> list[LedgerEntry]:
        """What :func:`assess` and the resend check need of the heartbeat's partition, by key range.

        The partition grows by about 190 entries a day (a SENT and an ARRIVED every 15 minutes), for
        ever: it is never read whole. Canary ids are their tick's time, so keys sort by time. Read:
        the newest canaries sent before the grace period began (the one due, and one more in case
        the newest falls in the same second), every canary sent and arrived since the one due (or
        since this tick's, the earlier), the newest arrival when none of those arrived, and the
        outages (``DOWN#``/``UP#``: two entries per outage).
        """
        due = self.ledger.entries_between(
            HEARTBEAT_KEY, SENT, f"{SENT}{canary_id(now - grace)}", newest_first=True, limit=2
        )
        since = min([canary, *(e.entry[len(SENT) :] for e in due)])
        sent = self.ledger.entries_between(HEARTBEAT_KEY, f"{SENT}{since}", f"{SENT}{KEY_END}")
        arrived = self.ledger.entries_between(HEARTBEAT_KEY, f"{ARRIVED}{since}", f"{ARRIVED}{KEY_END}")
        if not arrived:  # for the alert's "last canary to arrive"
            arrived = self.ledger.entries_between(
                HEARTBEAT_KEY, ARRIVED, f"{ARRIVED}{KEY_END}", newest_first=True, limit=1
            )
        outages = [
            *self.ledger.entries_between(HEARTBEAT_KEY, DOWN, f"{DOWN}{KEY_END}"),
            *self.ledger.entries_between(HEARTBEAT_KEY, UP, f"{UP}{KEY_END}"),
        ]
        return [*due, *sent, *arrived, *outages]

    def watch_rules(self) -> tuple[list[RuleAssessment], list[PatternAssessment]]:
        """Each watched rule read from EventBridge, judged against its outages and its pattern baseline.

        One ledger query: the key range from ``DOWN#`` to ``UP#`` holds the outages and the ``PATTERN#``
        baselines (D < P < U) and leaves out the ``ALERT#`` entries (A < D), whose bodies are the bulk
        of the partition.
        """
        if not self.watched or self.rules is None:
            return [], []
        readings = [self.rules.read(rule) for rule in self.watched]
        recorded = self.ledger.entries_between(RULES_KEY, DOWN, f"{UP}{KEY_END}")
        return assess_rules(readings, recorded), assess_patterns(readings, recorded)

    def pattern_entries(self, seen: PatternAssessment, alert: Alert | None, now: datetime) -> list[LedgerEntry]:
        """The new baseline, and its alert when it replaces one, written together: a retried tick finds
        the baseline (the same fingerprint) and writes nothing; a racing tick's conditional put fails."""
        reading = seen.reading
        body = {
            "finding": seen.finding.value,
            "rule": reading.rule.name,
            "fingerprint": reading.fingerprint,
            "previous": seen.previous,
            "pattern": reading.pattern,
        }
        return self.rules_fact(seen.entry, body, alert, now)

    def pattern_alert(self, seen: PatternAssessment, now: datetime) -> Alert:
        rule = seen.reading.rule
        pattern = seen.reading.pattern if seen.reading.pattern is not None else "none (no event pattern)"
        if len(pattern) > PATTERN_SHOWN:
            pattern = pattern[: PATTERN_SHOWN - 3] + "..."
        return Alert(
            alert_id=Alert.make_id(RULES_KEY, self.function, f"rule-pattern-{rule.label}-{seen.number}"),
            kind="heartbeat-rule-pattern-changed",
            function=self.function,
            severity=Severity.HIGH,
            subject=f"ChangeGuard rule {rule.label} pattern changed: match it to an approved change",
            summary=(
                f"The event pattern of the EventBridge rule {rule.name} changed (fingerprint"
                f" {_short(seen.previous)} to {_short(seen.reading.fingerprint)}). The rule is still read as"
                f" enabled and targeting {rule.function}, but it may no longer match every change it carried: a"
                " narrowed pattern stops changes being judged without any other check failing. A change to"
                " the suite's own rules must be matched to an approved change. A legitimate stack update"
                " that changes the pattern raises this alert too, once, by design: the new pattern is now"
                " the baseline, and a change back alerts again."
            ),
            change_id=RULES_KEY,
            event_time=now,
            reasons=(describe_pattern(seen),),
            actions=("recorded the new pattern as the rule's baseline", "compares the pattern again every run"),
            remediation=PATTERN_REMEDIATION,
            details={
                "rule": rule.name,
                "label": rule.label,
                "target": rule.target,
                "baseline": seen.number,
                "previous_fingerprint": seen.previous,
                "fingerprint": seen.reading.fingerprint,
                "pattern": pattern,
            },
        )

    def rule_entries(self, judged: RuleAssessment, alert: Alert, now: datetime) -> list[LedgerEntry]:
        """The DOWN/UP fact and its alert, written together: a second tick finds the fact and writes nothing."""
        rule = judged.reading.rule
        body = {
            "finding": judged.finding.value,
            "rule": rule.name,
            "target": rule.target,
            "state": judged.reading.state,
            "targets": list(judged.reading.targets),
            "fault": judged.reading.fault,
        }
        return self.rules_fact(judged.entry, body, alert, now)

    def rules_fact(self, entry: str, body: dict[str, Any], alert: Alert | None, now: datetime) -> list[LedgerEntry]:
        """A fact of the rules partition (``<KIND>#<label>#<n>``) with its alert, if any, to write together."""
        fact = LedgerEntry(
            change_id=RULES_KEY,
            entry=entry,
            kind=EntryKind.HEARTBEAT,
            function=self.function,
            event_time=now,
            recorded_at=now,
            body=body,
        )
        if alert is None:
            return [fact]
        suffix = entry.split("#", 1)[1]  # <label>#<n>, as the fact's key
        return [fact, alert_entry(alert, now, now, suffix=suffix)]

    def rule_alert(self, judged: RuleAssessment, now: datetime) -> Alert:
        rule = judged.reading.rule
        details = {"rule": rule.name, "label": rule.label, "target": rule.target, "outage": judged.outage}
        if judged.finding is RuleFinding.BROKEN:
            return Alert(
                alert_id=Alert.make_id(RULES_KEY, self.function, f"rule-broken-{rule.label}-{judged.outage}"),
                kind="heartbeat-rule-broken",
                function=self.function,
                severity=Severity.CRITICAL,
                subject=f"ChangeGuard rule {rule.label} broken: its changes no longer reach the suite",
                summary=(
                    f"The EventBridge rule {rule.name} {judged.reading.fault}, so the changes it carries no"
                    f" longer reach {rule.function}. The heartbeat canary takes a rule of its own and cannot show"
                    " this. Changes made meanwhile are not judged as they happen."
                ),
                change_id=RULES_KEY,
                event_time=now,
                reasons=(describe_rule(judged),),
                actions=("opened a rule outage", "reads the rule again every run"),
                remediation=RULE_REMEDIATION,
                details={
                    **details,
                    "state": judged.reading.state or "deleted",
                    "targets": ", ".join(judged.reading.targets) or "none",
                },
            )
        return Alert(
            alert_id=Alert.make_id(RULES_KEY, self.function, f"rule-repaired-{rule.label}-{judged.outage}"),
            kind="heartbeat-rule-repaired",
            function=self.function,
            severity=Severity.INFO,
            subject=f"ChangeGuard rule {rule.label} repaired: its changes reach the suite again",
            summary=(
                f"The EventBridge rule {rule.name} is enabled and targets {rule.function} again (outage"
                f" #{judged.outage}). The hourly reconciliation sweep judges the CloudTrail write calls"
                " missed during the outage."
            ),
            change_id=RULES_KEY,
            event_time=now,
            actions=("closed the rule outage",),
            details=details,
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


def _short(fingerprint: str | None) -> str:
    return fingerprint[:12] if fingerprint else "none"


def describe_pattern(seen: PatternAssessment) -> str:
    rule = seen.reading.rule
    return {
        PatternFinding.FIRST: f"rule {rule.label}'s pattern {_short(seen.reading.fingerprint)} is its first",
        PatternFinding.SAME: f"rule {rule.label}'s pattern is unchanged",
        PatternFinding.CHANGED: (
            f"rule {rule.label} ({rule.name}) pattern changed from {_short(seen.previous)}"
            f" to {_short(seen.reading.fingerprint)}"
        ),
        PatternFinding.UNREAD: f"rule {rule.label} is deleted: no pattern to compare",
    }[seen.finding]


def describe_rule(judged: RuleAssessment) -> str:
    rule = judged.reading.rule
    fault = judged.reading.fault
    return {
        RuleFinding.HEALTHY: f"rule {rule.label} is enabled and targets its function",
        RuleFinding.BROKEN: f"rule {rule.label} ({rule.name}) {fault}",
        RuleFinding.STILL_BROKEN: f"rule {rule.label} ({rule.name}) {fault} (outage #{judged.outage})",
        RuleFinding.REPAIRED: f"rule {rule.label} delivers again: outage #{judged.outage} is over",
    }[judged.finding]


def describe(assessment: Assessment, grace: timedelta) -> str:
    minutes = int(grace.total_seconds() // 60)
    return {
        Finding.WAITING: f"no canary is {minutes} minutes old yet",
        Finding.HEALTHY: f"canary {assessment.canary} arrived",
        Finding.MISSING: f"canary {assessment.canary} did not arrive within {minutes} minutes",
        Finding.STILL_MISSING: f"canary {assessment.canary} did not arrive either (outage #{assessment.outage})",
        Finding.RECOVERED: f"canary {assessment.canary} arrived: outage #{assessment.outage} is over",
    }[assessment.finding]
