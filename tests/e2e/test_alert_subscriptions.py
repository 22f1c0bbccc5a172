"""An SNS subscription with a filter policy receives exactly the alerts it asked for.

Against the embedded AWS (moto evaluates SNS filter policies on MessageAttributes): sample events
go through the template's rules to correlate_change, the ledger's stream to publish_alerts, and
the alert topic to SQS queues subscribed with the README's filter policies.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from changeguard.domain.alerts import Alert
from changeguard_tools import fixtures
from changeguard_tools.demo import load_scenario
from changeguard_tools.harness import FixedClock, Harness, quiet_stream
from sample_events import load_event


@pytest.fixture(autouse=True)
def _leave_no_stack(aws):
    """moto's state is per process: empty it afterwards too, so a later test (the demo) can create the
    same stack in its own embedded AWS."""
    yield
    aws.reset()


OTHER_ACCOUNT = "210987654321"
POLICIES = {
    "critical-only": {"severity": ["critical"]},
    "one-account": {"account": ["123456789012"]},
    "high-or-worse-no-ticket": {"severity": ["critical", "high"], "verdict": ["NO_TICKET", "UNKNOWN_TICKET"]},
    "all-but-correlation": {"function": [{"anything-but": ["correlate_change"]}]},
}
EVENTS = [
    "correlate_change/01-approved-run-instances.json",  # AUTHORIZED: no alert
    "correlate_change/02-console-no-ticket.json",  # NO_TICKET, high
    "correlate_change/03-unapproved-ticket.json",  # NOT_APPROVED, high
    "correlate_change/04-self-approved.json",  # SELF_APPROVED on IAM, critical
    "correlate_change/05-emergency-change.json",  # EMERGENCY, low
    "correlate_change/07-root-stop-logging.json",  # root stops CloudTrail: critical
]


def _matches(policy: dict[str, list[Any]], attributes: dict[str, str]) -> bool:
    """The subset of SNS filter-policy semantics these policies use (AND of keys, OR of values)."""
    for key, allowed in policy.items():
        value = attributes.get(key)
        if value is None:
            return False
        ok = False
        for rule in allowed:
            if isinstance(rule, dict) and "anything-but" in rule:
                ok = ok or value not in rule["anything-but"]
            else:
                ok = ok or value == rule
        if not ok:
            return False
    return True


def _queue(harness: Harness, name: str, policy: dict[str, Any] | None) -> str:
    sqs, sns = harness.admin_client("sqs"), harness.admin_client("sns")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"FilterPolicy": json.dumps(policy)} if policy else {}
    sns.subscribe(TopicArn=harness.ctx.refs["AlertsTopic"], Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return str(url)


def _received(harness: Harness, url: str) -> list[tuple[Alert, dict[str, str], str]]:
    sqs = harness.admin_client("sqs")
    out: list[tuple[Alert, dict[str, str], str]] = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return out
        for msg in msgs:
            envelope = json.loads(msg["Body"])
            body = json.loads(envelope["Message"])
            alert = Alert.from_chatbot(body) if "metadata" in body else Alert.model_validate(body)
            attrs = {k: v["Value"] for k, v in envelope.get("MessageAttributes", {}).items()}
            out.append((alert, attrs, envelope.get("Subject", "")))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])


@pytest.mark.parametrize("alert_format", ["standard", "chatbot"])
def test_each_subscription_receives_exactly_the_alerts_its_filter_policy_asks_for(aws, alert_format):
    harness = Harness(
        aws.endpoint_url,
        # One event comes from another account: only an organization's events reach the bus (and
        # issue 9: the correlator reads that account's tags with its member role).
        parameters={"AlertFormat": alert_format, "OrganizationId": "o-a1b2c3d4e5"},
        clock=FixedClock(datetime(2026, 11, 21, 18, 0, tzinfo=UTC)),
        log_stream=quiet_stream(),
    )
    harness.provision()
    seed, _ = load_scenario()
    seed.pop("now", None)
    fixtures.seed(harness, seed)
    everything = _queue(harness, "all-alerts", None)
    queues = {name: _queue(harness, name, policy) for name, policy in POLICIES.items()}

    events = [load_event(path) for path in EVENTS]
    other = load_event("correlate_change/02-console-no-ticket.json")  # the same change, in another account
    other["account"] = other["detail"]["recipientAccountId"] = OTHER_ACCOUNT
    other["detail"]["userIdentity"]["accountId"] = OTHER_ACCOUNT
    other["detail"]["eventID"] = "0b4a1f6e-3c2d-4e5f-8a9b-00000000aa02"
    events.append(other)
    events.append(load_event("correlate_change/07-root-stop-logging.json"))  # delivered twice: one alert
    for event in events:
        result = harness.process(event)
        assert result["error"] is None, result

    published = _received(harness, everything)
    ids = [a.alert_id for a, _, _ in published]
    assert len(ids) == len(set(ids)) == 6, ids  # 02, 03, 04, 05, 07 and 02 in the other account
    assert {a.account for a, _, _ in published} == {"123456789012", OTHER_ACCOUNT}
    for alert, attrs, subject in published:
        assert attrs["severity"] == alert.severity.value and attrs["account"] == alert.account
        assert attrs["dedupe_id"] == alert.alert_id and subject == alert.subject and len(subject) <= 100

    for name, policy in POLICIES.items():
        got = sorted(a.alert_id for a, _, _ in _received(harness, queues[name]))
        expected = sorted(a.alert_id for a, attrs, _ in published if _matches(policy, attrs))
        assert got == expected, name
        assert 0 < len(got) < len(published) or name == "all-but-correlation", name

    by_id = {a.alert_id: a for a, _, _ in published}
    critical = [a for a in by_id.values() if a.severity.value == "critical"]
    assert {a.verdict for a in critical} == {"NO_TICKET", "SELF_APPROVED"}  # root StopLogging, IAM self-approval
    assert any("StopLogging" in a.subject for a in critical)
    # Nothing in the policies' scope was missed or duplicated, and nobody filtered the rest.
    assert not any(_matches(POLICIES["all-but-correlation"], attrs) for _, attrs, _ in published)
