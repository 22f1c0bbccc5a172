"""The heartbeat's watch on the rules that carry changes (domain.heartbeat): pure decisions, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from changeguard.domain.heartbeat import RuleFinding, RuleReading, WatchedRule, assess_rules
from changeguard.domain.ledger import EntryKind, LedgerEntry

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
