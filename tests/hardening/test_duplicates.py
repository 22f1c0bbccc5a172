"""Duplicates: one event delivered N times (N = 1,000 at full size) gives one record, one alert, one action.

EventBridge and Lambda deliver at least once: the same event arrives again, concurrently, and under
a new envelope id (a redelivery, a replay, a second matching rule) carrying the same CloudTrail
``eventID``. Each delivery here runs on one of 16 threads, each thread with its own service instance
and its own boto3 clients signed as the function's role (as separate Lambda sandboxes would be),
against the embedded AWS, whose DynamoDB conditional writes are atomic as DynamoDB's are
(``changeguard_tools.embedded.dynamodb_atomic``; moto alone does not lock, and a race against it
would prove nothing).

"One mutating call" is counted in the embedded CloudTrail (``aws.trail``), which records every call
the functions make: for the correlator, its successful ledger writes; for the deployment guard, its
``StopDeployment`` calls. "One alert" is one SNS ``Publish`` and one message in the subscriber queue.
"""

from __future__ import annotations

from datetime import UTC, datetime

from changeguard.adapters.cloudwatch import CloudWatchReader
from changeguard.adapters.codedeploy import CodeDeployGuard
from changeguard.adapters.dynamodb import DynamoDBLedger
from changeguard.services.deployment_guard import DeploymentGuardService
from changeguard_tools import fixtures
from hardening.conftest import (
    FunctionClients,
    calls_by,
    concurrently,
    correlator_sandbox,
    ledger_entries,
    load_scenario_file,
    make_harness,
    published_alerts,
    reenveloped,
    scaled,
    trail_since,
)
from sample_events import load_event

DELIVERIES = scaled(1000)
NO_TICKET_EVENT = "correlate_change/02-console-no-ticket.json"  # s3:PutBucketPolicy by dave, no ticket
GUARD = "GuardDeploymentFunction"


def _deliveries(event: dict) -> list[dict]:
    """The same event N times: half under its own envelope id, half under fresh ones."""
    return [event if i % 2 == 0 else reenveloped(event) for i in range(DELIVERIES)]


def test_one_cloudtrail_event_delivered_1000_times_concurrently_gives_one_verdict_one_alert_one_ledger_write(aws):
    h = make_harness(aws, at=datetime(2026, 11, 21, 9, 45, tzinfo=UTC))
    event = load_event(NO_TICKET_EVENT)
    change_id = event["detail"]["eventID"]
    deliveries = _deliveries(event)
    assert len({d["id"] for d in deliveries}) > DELIVERIES // 2  # different envelopes, one eventID
    mark = len(aws.trail.records())

    outcomes = concurrently(deliveries, lambda service, e: service.handle(e), lambda: correlator_sandbox(h))

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert errors == []
    assert [o.verdict for o in outcomes] == ["NO_TICKET"] * DELIVERIES
    assert sum(not o.duplicate for o in outcomes) == 1
    assert sum(len(o.alert_ids) for o in outcomes) == 1
    entries = ledger_entries(h, change_id)
    assert [e.entry for e in entries] == ["ALERT#correlate_change#verdict", "VERDICT"]
    writes = calls_by(trail_since(aws, mark), "CorrelateChangeFunction", "PutItem", "TransactWriteItems")
    assert len(writes) == 1, [w["eventName"] for w in writes]

    h.pump_streams()
    received = h.drain_alerts()
    assert [(a.verdict, a.alert_id) for a in received] == [("NO_TICKET", f"{change_id}/correlate_change/verdict")]
    assert len(published_alerts(trail_since(aws, mark))) == 1
    h.pump_streams()  # the stream delivered again (it may): still one alert
    assert h.drain_alerts() == []


def test_one_alarm_delivered_1000_times_concurrently_stops_the_deployment_once_with_one_alert(aws):
    """The deployment guard (an acting function): one StopDeployment, however often the alarm arrives."""
    seed, _ = load_scenario_file("30-deployment.yaml")
    h = make_harness(aws, at=datetime(2026, 11, 24, 10, 4, 30, tzinfo=UTC))
    fixtures.seed(h, seed)
    h.put_parameter("enforcement-mode", "enforce")
    h.admin_client("cloudwatch").set_alarm_state(
        AlarmName="checkout-api-errors", StateValue="ALARM", StateReason="Threshold Crossed: 48.0 > 10.0"
    )
    deliveries = _deliveries(load_event("guard_deployment/alarm-state-change.json"))
    mark = len(aws.trail.records())

    def sandbox() -> DeploymentGuardService:
        clients = FunctionClients(h, GUARD)
        policy = clients.policy()
        assert h.clock is not None
        return DeploymentGuardService(
            function="guard_deployment",
            ledger=DynamoDBLedger(clients.wiring.ledger_table_name, clients("dynamodb")),
            codedeploy=CodeDeployGuard(clients("codedeploy")),
            cloudwatch=CloudWatchReader(clients("cloudwatch")),
            policy=lambda: policy,
            clock=h.clock,
        )

    outcomes = concurrently(deliveries, lambda service, e: service.handle(e), sandbox)

    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert errors == []
    # Every StopDeployment the guard sent, successful or not: a second one, even one CodeDeploy refuses
    # (DeploymentAlreadyCompletedException), would be a second mutating call.
    stops = [
        r
        for r in trail_since(aws, mark)
        if r["eventName"] == "StopDeployment" and GUARD in str(r["userIdentity"].get("arn", ""))
    ]
    assert [(s["requestParameters"]["deploymentId"], s.get("errorCode")) for s in stops] == [("d-CHK0000U1", None)]
    # The first delivery stops d-CHK0000U1; later ones find it already handled, or stopped with only its
    # rollback deployment in flight, which the guard never stops.
    acted = [(o.verdict, o.change_id) for o in outcomes if o.verdict == "STOPPED" and not o.duplicate]
    assert acted == [("STOPPED", "codedeploy:d-CHK0000U1")]
    assert {o.verdict for o in outcomes} <= {"STOPPED", "NO_ACTION"}, {o.verdict for o in outcomes}
    assert sum(len(o.alert_ids) for o in outcomes) == 1
    intents = [e.entry for e in ledger_entries(h, "codedeploy:d-CHK0000U1")]
    assert intents.count("STOP") == 1 and len([e for e in intents if e.startswith("STOP#")]) == 1

    h.pump_streams()
    received = h.drain_alerts()
    assert [a.kind for a in received] == ["stop"], [a.subject for a in received]
    assert len(published_alerts(trail_since(aws, mark))) == 1
