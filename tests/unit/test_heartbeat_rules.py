"""The heartbeat's watch on the rules that carry changes: the decisions, and the tick with in-memory fakes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from changeguard.domain.heartbeat import (
    RULES_KEY,
    PatternFinding,
    RuleFinding,
    RuleReading,
    WatchedRule,
    assess_rules,
    pattern_fingerprint,
)
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.services.heartbeat import HeartbeatService
from fakes import FakeClock, InMemoryLedger

FN = "arn:aws:lambda:us-east-1:123456789012:function:changeguard-prod-CorrelateChangeFunction-Q1W2E3R4T5Y6"
RULE = WatchedRule(label="CloudTrailWriteCalls", name="changeguard-prod-CorrelateChangeFunctionCloudTr-9XK2", target=FN)
NOW = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def fact(entry: str) -> LedgerEntry:
    return LedgerEntry(
        change_id="heartbeat:rules",
        entry=entry,
        kind=EntryKind.HEARTBEAT,
        function="send_heartbeat",
        event_time=NOW,
        recorded_at=NOW,
    )


def test_a_watched_rule_is_parsed_from_the_template_s_label_name_and_target():
    assert WatchedRule.parse(f"CloudTrailWriteCalls:{RULE.name}:{FN}") == RULE


@pytest.mark.parametrize(
    "text", ["", "CloudTrailWriteCalls", f"CloudTrailWriteCalls:{RULE.name}", f":{RULE.name}:{FN}"]
)
def test_a_malformed_watched_rule_is_refused(text):
    with pytest.raises(ValueError, match="<label>:<rule name>:<target ARN>"):
        WatchedRule.parse(text)


@pytest.mark.parametrize(
    ("state", "targets", "fault"),
    [
        ("ENABLED", (FN,), None),
        # Read-only management events included: write calls still match.
        ("ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS", (FN,), None),
        ("DISABLED", (FN,), "is DISABLED: EventBridge matches no event against it"),
        ("ENABLED", (), f"no longer targets {FN}"),
        ("ENABLED", (FN.replace("Correlate", "Other"),), f"no longer targets {FN}"),
        (None, (), "does not exist (deleted)"),
    ],
)
def test_a_rule_delivers_only_when_enabled_and_targeting_its_function(state, targets, fault):
    assert RuleReading(rule=RULE, state=state, targets=targets).fault == fault


def test_a_broken_rule_opens_one_outage_and_its_repair_closes_it():
    broken = RuleReading(rule=RULE, state="DISABLED", targets=(FN,))
    fixed = RuleReading(rule=RULE, state="ENABLED", targets=(FN,))
    [first] = assess_rules([broken], [])
    assert (first.finding, first.outage, first.entry) == (RuleFinding.BROKEN, 1, "DOWN#CloudTrailWriteCalls#000001")
    [again] = assess_rules([broken], [fact(first.entry)])
    assert (again.finding, again.alerts) == (RuleFinding.STILL_BROKEN, False)
    [repaired] = assess_rules([fixed], [fact(first.entry)])
    assert (repaired.finding, repaired.entry) == (RuleFinding.REPAIRED, "UP#CloudTrailWriteCalls#000001")
    closed = [fact(first.entry), fact(repaired.entry)]
    assert assess_rules([fixed], closed)[0].finding is RuleFinding.HEALTHY
    assert assess_rules([broken], closed)[0].entry == "DOWN#CloudTrailWriteCalls#000002"


def test_each_rule_s_outages_are_its_own():
    other = WatchedRule(label="CloudTrailWrite", name="other", target=FN)  # a label that prefixes another
    readings = [RuleReading(rule=other, state="DISABLED", targets=(FN,))]
    [judged] = assess_rules(readings, [fact("DOWN#CloudTrailWriteCalls#000001")])
    assert (judged.finding, judged.outage) == (RuleFinding.BROKEN, 1)


# -- the rule's pattern ---------------------------------------------------------------------------------
PATTERN = json.dumps({"source": ["aws.ec2", "aws.s3"], "detail-type": ["AWS API Call via CloudTrail"]})
NARROWED = json.dumps(
    {
        "source": ["aws.ec2", "aws.s3"],
        "detail-type": ["AWS API Call via CloudTrail"],
        "detail": {"userIdentity": {"arn": [{"anything-but": "arn:aws:iam::123456789012:user/mallory"}]}},
    }
)


class Rules:
    """What DescribeRule and ListTargetsByRule answer, set by the test."""

    def __init__(self) -> None:
        self.state: str | None = "ENABLED"
        self.pattern = PATTERN
        self.reads = 0

    def read(self, rule: WatchedRule) -> RuleReading:
        self.reads += 1
        return RuleReading(rule=rule, state=self.state, targets=(FN,), pattern=self.pattern)


class Parameters:
    def put(self, name: str, value: str, description: str) -> None:
        pass


def heartbeat(ledger: InMemoryLedger, rules: Rules) -> HeartbeatService:
    return HeartbeatService(
        function="send_heartbeat",
        ledger=ledger,
        parameters=Parameters(),
        parameter_name="/changeguard/heartbeat/prod",
        policy=lambda: Policy(heartbeat_grace_minutes=30),
        clock=FakeClock(NOW),
        rules=rules,
        watched=(RULE,),
    )


def pattern_alerts(ledger: InMemoryLedger) -> list[dict[str, Any]]:
    return [
        e.body["alert"]
        for e in ledger.entries_for(RULES_KEY)
        if e.entry.startswith("ALERT#send_heartbeat#heartbeat-rule-pattern-changed#")
    ]


def baselines(ledger: InMemoryLedger) -> list[tuple[str, str]]:
    return [(e.entry, e.body["fingerprint"]) for e in ledger.entries_for(RULES_KEY) if e.entry.startswith("PATTERN#")]


def test_the_fingerprint_is_of_the_canonical_pattern_not_of_its_spelling():
    respelled = json.dumps(json.loads(PATTERN), indent=2, sort_keys=True)
    assert pattern_fingerprint(respelled) == pattern_fingerprint(PATTERN)
    canonical = json.dumps(json.loads(PATTERN), sort_keys=True, separators=(",", ":"))
    assert pattern_fingerprint(PATTERN) == hashlib.sha256(canonical.encode()).hexdigest()
    assert pattern_fingerprint(NARROWED) != pattern_fingerprint(PATTERN)
    assert RuleReading(rule=RULE, state=None, pattern=PATTERN).fingerprint is None  # deleted: nothing to compare


def test_the_first_reading_of_a_pattern_is_its_baseline_and_alerts_nothing():
    ledger, rules = InMemoryLedger(), Rules()
    outcome = heartbeat(ledger, rules).tick(NOW)
    assert baselines(ledger) == [("PATTERN#CloudTrailWriteCalls#000001", pattern_fingerprint(PATTERN))]
    assert outcome.alert_ids == [] and pattern_alerts(ledger) == []
    assert f"recorded rule CloudTrailWriteCalls's pattern {pattern_fingerprint(PATTERN)[:12]} as its baseline" in (
        outcome.actions
    )
    again = heartbeat(ledger, rules).tick(NOW + timedelta(minutes=15))  # the same pattern: nothing
    assert again.alert_ids == [] and len(baselines(ledger)) == 1
    assert not any("pattern" in a for a in again.actions)


def test_a_changed_pattern_alerts_once_becomes_the_baseline_and_a_change_back_alerts_again():
    ledger, rules = InMemoryLedger(), Rules()
    heartbeat(ledger, rules).tick(NOW)
    rules.pattern = NARROWED
    changed = heartbeat(ledger, rules).tick(NOW + timedelta(minutes=15))
    [alert] = pattern_alerts(ledger)
    assert changed.alert_ids == [alert["alert_id"]]
    assert alert["severity"] == "high"
    assert alert["subject"] == "ChangeGuard rule CloudTrailWriteCalls pattern changed: match it to an approved change"
    assert alert["details"]["rule"] == RULE.name
    assert alert["details"]["previous_fingerprint"] == pattern_fingerprint(PATTERN)
    assert alert["details"]["fingerprint"] == pattern_fingerprint(NARROWED)
    assert alert["details"]["pattern"] == NARROWED
    assert "approved change" in alert["summary"] and "stack update" in alert["summary"]
    assert baselines(ledger)[-1] == ("PATTERN#CloudTrailWriteCalls#000002", pattern_fingerprint(NARROWED))
    # Lambda retries the tick (or EventBridge delivers it twice): the new baseline is found, nothing more.
    retried = heartbeat(ledger, rules).tick(NOW + timedelta(minutes=15))
    later = heartbeat(ledger, rules).tick(NOW + timedelta(minutes=30))
    assert retried.alert_ids == later.alert_ids == [] and len(pattern_alerts(ledger)) == 1
    rules.pattern = PATTERN  # put back
    back = heartbeat(ledger, rules).tick(NOW + timedelta(minutes=45))
    assert len(back.alert_ids) == 1 and len(pattern_alerts(ledger)) == 2
    assert baselines(ledger) == [
        ("PATTERN#CloudTrailWriteCalls#000001", pattern_fingerprint(PATTERN)),
        ("PATTERN#CloudTrailWriteCalls#000002", pattern_fingerprint(NARROWED)),
        ("PATTERN#CloudTrailWriteCalls#000003", pattern_fingerprint(PATTERN)),
    ]


def test_two_ticks_racing_on_one_change_alert_once():
    ledger, rules = InMemoryLedger(), Rules()
    heartbeat(ledger, rules).tick(NOW)
    rules.pattern = NARROWED
    service = heartbeat(ledger, rules)
    [seen] = service.watch_rules()[1]  # both ticks judged before either wrote
    first = ledger.append(service.pattern_entries(seen, service.pattern_alert(seen, NOW), NOW))
    second = ledger.append(service.pattern_entries(seen, service.pattern_alert(seen, NOW), NOW))
    assert (first, second) == (True, False)


def test_a_long_pattern_is_truncated_in_the_alert_and_kept_whole_in_the_ledger():
    ledger, rules = InMemoryLedger(), Rules()
    heartbeat(ledger, rules).tick(NOW)
    rules.pattern = json.dumps({"source": [f"aws.service{n}" for n in range(300)]})
    heartbeat(ledger, rules).tick(NOW + timedelta(minutes=15))
    [alert] = pattern_alerts(ledger)
    assert len(alert["details"]["pattern"]) == 1000 and alert["details"]["pattern"].endswith("...")
    [fact] = [e for e in ledger.entries_for(RULES_KEY) if e.entry == "PATTERN#CloudTrailWriteCalls#000002"]
    assert fact.body["pattern"] == rules.pattern


def test_a_deleted_rule_raises_its_outage_not_a_pattern_alert_and_keeps_its_baseline():
    ledger, rules = InMemoryLedger(), Rules()
    heartbeat(ledger, rules).tick(NOW)
    rules.state = None
    deleted = heartbeat(ledger, rules).tick(NOW + timedelta(minutes=15))
    [alert_id] = deleted.alert_ids
    assert "rule-broken" in alert_id and pattern_alerts(ledger) == []
    rules.state, rules.pattern = "ENABLED", NARROWED  # recreated, narrower: repaired, and the pattern alerts
    recreated = heartbeat(ledger, rules).tick(NOW + timedelta(minutes=30))
    assert sorted(a.split("/")[-1].rsplit("-", 1)[0] for a in recreated.alert_ids) == [
        "rule-pattern-CloudTrailWriteCalls",
        "rule-repaired-CloudTrailWriteCalls",
    ]


def test_a_tick_reads_the_outages_and_baselines_not_the_alerts_of_the_rules():
    ledger, rules = InMemoryLedger(), Rules()
    for minutes, pattern in enumerate([PATTERN, NARROWED] * 10):
        rules.pattern = pattern
        heartbeat(ledger, rules).tick(NOW + timedelta(minutes=15 * minutes))
    assert len(pattern_alerts(ledger)) == 19
    ledger.read = 0
    [seen] = heartbeat(ledger, rules).watch_rules()[1]
    assert seen.finding is PatternFinding.SAME
    assert ledger.read == 20  # the 20 baselines; none of the 19 alerts
