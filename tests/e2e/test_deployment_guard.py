"""The deployment guard end to end: template wiring, handler, embedded AWS, ledger and alerts.

The three alarm shapes arrive through the template's own wiring: the EventBridge rule
(``Harness.process``), the alarm topic's SNS subscription (``Harness.publish``) and the alarm's
Lambda action (``Harness.invoke``, allowed by the template's permission for
``lambda.alarms.cloudwatch.amazonaws.com``). Stops and rollbacks are checked in the embedded AWS.
The fixtures are the demo scenario's (events/scenario/30-deployment.yaml).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import pytest
import yaml
from changeguard.adapters.dynamodb import DynamoDBLedger
from changeguard.domain.deployments import REDEPLOY_MARKER
from changeguard.domain.ledger import EntryKind, LedgerEntry
from changeguard_tools import fixtures
from changeguard_tools.bench import count_calls
from changeguard_tools.embedded import EmbeddedAWS, codedeploy_deployments
from changeguard_tools.embedded.faults import fast_retries
from changeguard_tools.harness import FixedClock, Harness, quiet_stream
from changeguard_tools.template import REPO_ROOT, resolve
from sample_events import load_event

GUARD = "GuardDeploymentFunction"
SCENARIO = yaml.safe_load((REPO_ROOT / "events/scenario/30-deployment.yaml").read_text())["fixtures"]
ALARM_FIRED = datetime(2026, 11, 24, 10, 4, 30, tzinfo=UTC)
BAKE_ALARM = datetime(2026, 11, 24, 11, 20, 30, tzinfo=UTC)
V15 = {"revisionType": "String", "string": {"content": "checkout-api v15"}}
V41 = {"revisionType": "String", "string": {"content": "payments-api v41"}}


def build(aws: EmbeddedAWS, at: datetime) -> Harness:
    """The stack provisioned, the scenario's alarms, deployments and metrics seeded, enforce mode.

    The embedded CodeDeploy plays the deployments' timelines forward from ``at``.
    """
    h = Harness(aws.endpoint_url, clock=FixedClock(at), log_stream=quiet_stream())
    h.provision()
    fixtures.seed(h, SCENARIO)
    h.put_parameter("enforcement-mode", "enforce")
    return h


@pytest.fixture
def harness(aws: EmbeddedAWS) -> Iterator[Harness]:
    yield build(aws, ALARM_FIRED)
    codedeploy_deployments.use_clock(None)


@pytest.fixture
def morning(aws: EmbeddedAWS) -> Iterator[Harness]:
    """The same stack at 08:59, before the day's first deployment."""
    yield build(aws, datetime(2026, 11, 24, 8, 59, tzinfo=UTC))
    codedeploy_deployments.use_clock(None)


def at(h: Harness, when: datetime) -> None:
    h.clock.set(when)  # type: ignore[union-attr]
    h.refresh_clock()


def fire(h: Harness, alarm: str) -> None:
    h.admin_client("cloudwatch").set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="test")


def guard_outcome(result: dict[str, Any]) -> dict[str, Any]:
    assert result["error"] is None, result["error"]
    assert result["routed_to"] == [GUARD], result["routed_to"]
    found: dict[str, Any] = result["outcomes"][0]
    return found


def deployment(h: Harness, deployment_id: str) -> dict[str, Any]:
    info: dict[str, Any] = h.admin_client("codedeploy").get_deployment(deploymentId=deployment_id)["deploymentInfo"]
    return info


def ledger(h: Harness, change_id: str) -> dict[str, LedgerEntry]:
    table = DynamoDBLedger(h.ctx.refs["ChangeLedgerTable"], h.admin_client("dynamodb"))
    return {e.entry: e for e in table.entries_for(change_id)}


def codedeploy_calls(aws: EmbeddedAWS, name: str) -> list[dict[str, Any]]:
    return [r for r in aws.trail.records() if r["eventSource"] == "codedeploy.amazonaws.com" and r["eventName"] == name]


def assert_stopped_with_rollback(h: Harness) -> str:
    stopped = deployment(h, "d-CHK0000U1")
    assert stopped["status"] == "Stopped"
    rollback_id = str(stopped["rollbackInfo"]["rollbackDeploymentId"])
    rollback = deployment(h, rollback_id)
    assert rollback["rollbackInfo"]["rollbackTriggeringDeploymentId"] == "d-CHK0000U1"
    assert rollback["creator"] == "codeDeployRollback"
    assert rollback["revision"] == V15  # the last successful revision, d-CHK0000H1's
    assert rollback["status"] == "InProgress"
    return rollback_id


# -- the three alarm shapes, each through the template's wiring ---------------------------------------
def test_the_eventbridge_rule_delivers_the_alarm_and_the_deployment_is_stopped_with_rollback(harness, aws):
    fire(harness, "checkout-api-errors")

    outcome = guard_outcome(harness.process(load_event("guard_deployment/alarm-state-change.json")))

    assert outcome["verdict"] == "STOPPED"
    rollback_id = assert_stopped_with_rollback(harness)
    assert any(rollback_id in a for a in outcome["actions"])
    [alert] = outcome["alerts"]
    assert alert["subject"] == "Stopping deployment d-CHK0000U1 (checkout/checkout-prod): alarm checkout-api-errors"
    assert alert["severity"] == "high" and alert["verdict"] == "FAILED_CHANGE"
    entries = ledger(harness, "codedeploy:d-CHK0000U1")
    # The intent is the decision; the result, written after StopDeployment answered, is the fact.
    stop = entries["STOP"]
    assert stop.kind is EntryKind.DEPLOYMENT and stop.ticket_id == "CHG-2002" and stop.verdict == "STOP"
    # The health criteria were evaluated when the alarm fired: their values are the evidence.
    evidence = stop.body["evidence"]
    assert evidence["metric.error_rate_percent"] == pytest.approx(4.8)
    assert evidence["metric.latency_p99"] == 400.0 and evidence["metric.latency_p99_baseline"] == 130.0
    assert entries[f"STOP#{rollback_id}"].kind is EntryKind.ROLLBACK
    assert entries[f"STOP#{rollback_id}"].verdict == "FAILED_CHANGE"


def test_the_alarm_topics_sns_subscription_delivers_the_alarm(harness):
    assert "AlarmTopic" in harness.functions[GUARD].topics  # the template's SNS event
    fire(harness, "checkout-api-errors")
    record = load_event("guard_deployment/alarm-sns.json")["Records"][0]["Sns"]

    outcome = guard_outcome(harness.publish("AlarmTopic", record["Message"], record["Subject"]))

    assert outcome["verdict"] == "STOPPED"
    assert_stopped_with_rollback(harness)
    assert len(outcome["alerts"]) == 1


def alarm_action_permission(h: Harness) -> dict[str, Any]:
    """The template's resource policy that lets an alarm's Lambda action invoke the guard."""
    for spec in h.template.resources.values():
        if spec.get("Type") != "AWS::Lambda::Permission":
            continue
        props = resolve(spec["Properties"], h.ctx)
        if (
            props["Principal"] == "lambda.alarms.cloudwatch.amazonaws.com"
            and props["FunctionName"] == h.ctx.attrs[(GUARD, "Arn")]
        ):
            return dict(props)
    raise AssertionError("no AWS::Lambda::Permission lets CloudWatch alarms invoke the guard")


def test_the_alarms_lambda_action_invokes_the_guard_as_the_template_allows(harness):
    payload = load_event("guard_deployment/alarm-lambda-action.json")
    permission = alarm_action_permission(harness)
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["SourceAccount"] == payload["accountId"]
    assert fnmatchcase(payload["alarmArn"], permission["SourceArn"])
    fire(harness, "checkout-api-errors")

    invocation = harness.invoke(GUARD, payload)

    assert invocation.error is None, invocation.error
    assert invocation.result["verdict"] == "STOPPED"
    assert_stopped_with_rollback(harness)
    harness.pump_streams()
    [alert] = harness.drain_alerts()
    assert alert.kind == "stop" and alert.body["details"]["deployment_id"] == "d-CHK0000U1"


def test_all_three_shapes_of_one_alarm_give_one_stop_and_one_alert(harness, aws):
    fire(harness, "checkout-api-errors")
    sns = load_event("guard_deployment/alarm-sns.json")["Records"][0]["Sns"]

    results = [
        harness.process(load_event("guard_deployment/alarm-state-change.json")),
        harness.publish("AlarmTopic", sns["Message"], sns["Subject"]),
        harness.process(load_event("guard_deployment/alarm-state-change.json")),  # EventBridge redelivers
    ]
    action = harness.invoke(GUARD, load_event("guard_deployment/alarm-lambda-action.json"))
    harness.pump_streams()
    late_alerts = harness.drain_alerts()

    assert action.error is None and all(r["error"] is None for r in results)
    stops = codedeploy_calls(aws, "StopDeployment")
    assert [s["requestParameters"]["deploymentId"] for s in stops] == ["d-CHK0000U1"]
    assert "errorCode" not in stops[0]
    assert sum(len(o["alerts"]) for r in results for o in r["outcomes"]) + len(late_alerts) == 1
    rollback_id = assert_stopped_with_rollback(harness)
    assert any(f"left {rollback_id} alone" in a for a in results[1]["outcomes"][0]["actions"])


def test_a_pending_stop_is_recorded_as_pending_and_a_redelivered_alarm_does_not_stop_again(harness, aws):
    """StopDeployment answers Pending (the API's "the stop operation is pending"): the deployment is still
    in progress, with no rollback yet, when EventBridge redelivers the alarm."""
    codedeploy_deployments.answer_stops_pending(60)
    fire(harness, "checkout-api-errors")
    event = load_event("guard_deployment/alarm-state-change.json")

    outcome = guard_outcome(harness.process(event))

    assert outcome["verdict"] == "STOPPED"
    assert deployment(harness, "d-CHK0000U1")["status"] == "InProgress"
    result = ledger(harness, "codedeploy:d-CHK0000U1")["STOP#pending"]
    assert result.kind is EntryKind.STOP and result.verdict == "FAILED_CHANGE"
    assert result.body["stop_status"] == "Pending" and result.body["rollback_deployment_id"] is None
    again = guard_outcome(harness.process(event))  # still in flight: the stop is found done, not repeated
    assert again["alerts"] == [] and any(a.startswith("duplicate: d-CHK0000U1") for a in again["actions"])
    assert len(codedeploy_calls(aws, "StopDeployment")) == 1
    at(harness, ALARM_FIRED + timedelta(seconds=61))  # CodeDeploy carries the stop out, then rolls back
    assert_stopped_with_rollback(harness)


def test_the_guard_acts_with_its_own_role(harness, aws):
    fire(harness, "checkout-api-errors")
    harness.process(load_event("guard_deployment/alarm-state-change.json"))
    [stop] = codedeploy_calls(aws, "StopDeployment")
    issuer = stop["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"]
    assert issuer == harness.stack.function_roles[GUARD]  # type: ignore[union-attr]
    assert ":role/changeguard/" in issuer


# -- the four deployment states, through the rule ---------------------------------------------------------
@pytest.mark.parametrize(
    ("sample", "deployment_id", "state", "verdict", "when"),
    [
        ("deployment-start.json", "d-CHK0000H1", "START", None, datetime(2026, 11, 24, 9, 0, 30, tzinfo=UTC)),
        ("deployment-success.json", "d-CHK0000H1", "SUCCESS", None, datetime(2026, 11, 24, 9, 12, 30, tzinfo=UTC)),
        ("deployment-stop.json", "d-CHK0000U1", "STOP", "FAILED_CHANGE", datetime(2026, 11, 24, 10, 4, 31, tzinfo=UTC)),
        (
            "deployment-failure.json",
            "d-CHK0000F1",
            "FAILURE",
            "FAILED_CHANGE",
            datetime(2026, 11, 24, 13, 41, 9, tzinfo=UTC),
        ),
    ],
)
def test_each_deployment_state_is_recorded(morning, sample, deployment_id, state, verdict, when):
    harness = morning
    codedeploy_deployments.create_deployment(
        "checkout",
        "checkout-prod",
        V15,
        deployment_id="d-CHK0000F1",
        description="checkout-api v17 (CHG-2004)",
        created=datetime(2026, 11, 24, 13, 30, tzinfo=UTC),
        timeline=[
            (datetime(2026, 11, 24, 13, 30, tzinfo=UTC), "InProgress"),
            (datetime(2026, 11, 24, 13, 41, tzinfo=UTC), "Failed"),
        ],
    )
    at(harness, when)
    if state == "STOP":  # someone stopped it (CodeDeploy then sends STOP)
        harness.admin_client("codedeploy").stop_deployment(deploymentId="d-CHK0000U1", autoRollbackEnabled=True)

    result = harness.process(load_event(f"guard_deployment/{sample}"))

    assert result["error"] is None, result["error"]
    assert GUARD in result["routed_to"]
    outcome = next(o for o in result["outcomes"] if o["function"] == GUARD)
    assert outcome["verdict"] == "RECORDED"
    entry = ledger(harness, f"codedeploy:{deployment_id}")[f"DEPLOYMENT#{state}"]
    assert entry.verdict == verdict
    assert entry.body["deployment_id"] == deployment_id and entry.body["state"] == state
    assert (
        entry.body["status"]
        == {"START": "InProgress", "SUCCESS": "Succeeded", "STOP": "Stopped", "FAILURE": "Failed"}[state]
    )
    assert entry.ticket_id is not None and entry.ticket_id.startswith("CHG-")
    assert entry.body["rolled_back"] is (state == "STOP")


# -- the bake window ----------------------------------------------------------------------------------------
def test_a_regression_in_the_bake_window_redeploys_the_previous_revision(harness, aws):
    at(harness, BAKE_ALARM)
    assert deployment(harness, "d-PAY0000B1")["status"] == "Succeeded"
    fire(harness, "payments-api-latency-p99")

    outcome = guard_outcome(harness.process(load_event("guard_deployment/alarm-state-change-bake.json")))

    assert outcome["verdict"] == "ROLLED_BACK"
    [create] = codedeploy_calls(aws, "CreateDeployment")
    [new_id] = [
        d
        for d in harness.admin_client("codedeploy").list_deployments(
            applicationName="payments", deploymentGroupName="payments-prod", includeOnlyStatuses=["InProgress"]
        )["deployments"]
    ]
    redeploy = deployment(harness, new_id)
    assert redeploy["revision"] == V41
    assert redeploy["description"].startswith(
        f"{REDEPLOY_MARKER}d-PAY0000B1 (CHG-2003)"
    )  # ticket from the group's tags
    assert create["userIdentity"]["sessionContext"]["sessionIssuer"]["arn"] == harness.stack.function_roles[GUARD]  # type: ignore[union-attr]
    entries = ledger(harness, "codedeploy:d-PAY0000B1")
    assert entries["ROLLBACK"].verdict == "FAILED_CHANGE" and entries["ROLLBACK"].ticket_id == "CHG-2003"
    assert entries[f"ROLLBACK#{new_id}"].body["redeploy_id"] == new_id
    # The change-calendar gate reads the suite's rollback mark under the redeploy's bare id.
    assert [e.kind for e in ledger(harness, new_id).values()] == [EntryKind.ROLLBACK]
    [alert] = outcome["alerts"]
    assert alert["subject"] == "Rolling back d-PAY0000B1 (payments/payments-prod): regression in the bake window"

    again = guard_outcome(harness.process(load_event("guard_deployment/alarm-state-change-bake.json")))
    assert len(codedeploy_calls(aws, "CreateDeployment")) == 1
    assert again["alerts"] == []


# -- observe mode, the cap, the sweep ---------------------------------------------------------------------------
def test_observe_mode_reports_would_have_stopped_and_makes_no_codedeploy_change(harness, aws):
    harness.put_parameter("enforcement-mode", "observe")
    fire(harness, "checkout-api-errors")

    outcome = guard_outcome(harness.process(load_event("guard_deployment/alarm-state-change.json")))

    assert outcome["verdict"] == "WOULD_STOP"
    assert deployment(harness, "d-CHK0000U1")["status"] == "InProgress"
    role = harness.stack.function_roles[GUARD]  # type: ignore[union-attr]
    mutating = [
        r
        for r in aws.trail.records()
        if r["eventSource"] in ("codedeploy.amazonaws.com", "monitoring.amazonaws.com")
        and r.get("userIdentity", {}).get("sessionContext", {}).get("sessionIssuer", {}).get("arn") == role
    ]
    assert mutating == []
    [alert] = outcome["alerts"]
    assert alert["subject"].startswith("Would have stopped deployment d-CHK0000U1")


CAP_APP = {
    "codedeploy": [
        {
            "application": "orders",
            "groups": [
                {
                    "name": group,
                    "deployments": [
                        {
                            "id": deployment_id,
                            "revision": {"revisionType": "String", "string": {"content": "orders v9"}},
                            "description": "orders v9 (CHG-2100)",
                            "created": "2026-11-24T10:00:00Z",
                            "timeline": {"InProgress": "2026-11-24T10:00:00Z"},
                        }
                    ],
                }
                for group, deployment_id in (("orders-eu", "d-ORD0000E1"), ("orders-us", "d-ORD0000U1"))
            ],
        }
    ]
}


def test_the_stop_cap_stops_acting_and_alerts(harness, aws):
    fixtures.seed(harness, CAP_APP)
    harness.put_parameter("max-stops-per-app-hour", "1")
    cloudwatch = harness.admin_client("cloudwatch")
    cloudwatch.tag_resource(
        ResourceARN="arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-api-errors",
        Tags=[{"Key": "changeguard:deployment-group", "Value": "orders/orders-eu,orders/orders-us"}],
    )
    fire(harness, "checkout-api-errors")

    result = harness.process(load_event("guard_deployment/alarm-state-change.json"))

    assert result["error"] is None, result["error"]
    statuses = {d: deployment(harness, d)["status"] for d in ("d-ORD0000E1", "d-ORD0000U1")}
    assert sorted(statuses.values()) == ["InProgress", "Stopped"]
    subjects = sorted(a["subject"] for a in result["outcomes"][0]["alerts"])
    assert any(s.startswith("Stop cap reached for orders") for s in subjects)
    severities = {a["severity"] for a in result["outcomes"][0]["alerts"]}
    assert "critical" in severities
    assert len(codedeploy_calls(aws, "StopDeployment")) == 1


def server_deployment(
    deployment_id: str, content: str, created: str, done: str | None = None, **spec: Any
) -> dict[str, Any]:
    timeline = {"InProgress": created} | ({"Succeeded": done} if done else {})
    revision = {"revisionType": "String", "string": {"content": content}}
    return {"id": deployment_id, "revision": revision, "created": created, "timeline": timeline, **spec}


# EC2 Auto Scaling's deployments of the group's current revision to the instances it launches.
SCALE_OUT_APP = {
    "codedeploy": [
        {
            "application": "orders",
            "compute_platform": "Server",
            "groups": [
                {
                    "name": "orders-eu",
                    "deployments": [
                        server_deployment("d-ORDASG0E1", "orders v9", "2026-11-24T10:02:00Z", creator="autoscaling")
                    ],
                },
                {
                    "name": "orders-us",
                    "deployments": [
                        server_deployment(
                            "d-ORD0000U1", "orders v10", "2026-11-24T10:00:00Z", description="orders v10 (CHG-2101)"
                        )
                    ],
                },
            ],
        }
    ]
}


def test_a_scale_out_in_flight_is_never_stopped_and_takes_no_stop_cap_slot(harness, aws):
    fixtures.seed(harness, SCALE_OUT_APP)
    harness.put_parameter("max-stops-per-app-hour", "1")
    harness.admin_client("cloudwatch").tag_resource(
        ResourceARN="arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-api-errors",
        Tags=[{"Key": "changeguard:deployment-group", "Value": "orders/orders-eu,orders/orders-us"}],
    )
    fire(harness, "checkout-api-errors")

    result = harness.process(load_event("guard_deployment/alarm-state-change.json"))

    outcome = guard_outcome(result)
    assert deployment(harness, "d-ORDASG0E1")["status"] == "InProgress"
    assert deployment(harness, "d-ORD0000U1")["status"] == "Stopped"  # the cap's one slot went to the release
    stops = codedeploy_calls(aws, "StopDeployment")
    assert [s["requestParameters"]["deploymentId"] for s in stops] == ["d-ORD0000U1"]
    assert [a["subject"] for a in outcome["alerts"]] == [
        "Stopping deployment d-ORD0000U1 (orders/orders-us): alarm checkout-api-errors"
    ]
    assert any("left d-ORDASG0E1 alone: never stops it: not a release" in a for a in outcome["actions"])
    assert ledger(harness, "codedeploy:d-ORDASG0E1") == {}
    assert list(ledger(harness, "guard:stops:123456789012:us-east-1:orders")) == ["SLOT#000001"]


INVENTORY_APP = {
    "codedeploy": [
        {
            "application": "inventory",
            "compute_platform": "Server",
            "groups": [
                {
                    "name": "inventory-prod",
                    "deployments": [
                        server_deployment(
                            "d-INV0000G0", "inventory v1", "2026-11-23T14:00:00Z", "2026-11-23T14:08:00Z"
                        ),
                        server_deployment(
                            "d-INV0000B1",
                            "inventory v2",
                            "2026-11-24T11:00:00Z",
                            "2026-11-24T11:09:00Z",
                            description="inventory v2 (CHG-2104)",
                        ),
                        # A scale-out after the release: the release's own revision, on a new instance.
                        server_deployment(
                            "d-INVASG0S1",
                            "inventory v2",
                            "2026-11-24T11:12:00Z",
                            "2026-11-24T11:16:00Z",
                            creator="autoscaling",
                        ),
                    ],
                }
            ],
        }
    ]
}


def test_a_scale_out_inside_the_bake_window_is_not_taken_for_the_latest_release(harness, aws):
    fixtures.seed(harness, INVENTORY_APP)
    harness.admin_client("cloudwatch").tag_resource(
        ResourceARN="arn:aws:cloudwatch:us-east-1:123456789012:alarm:payments-api-latency-p99",
        Tags=[{"Key": "changeguard:deployment-group", "Value": "inventory/inventory-prod"}],
    )
    at(harness, BAKE_ALARM)
    assert deployment(harness, "d-INVASG0S1")["status"] == "Succeeded"
    fire(harness, "payments-api-latency-p99")

    guard_outcome(harness.process(load_event("guard_deployment/alarm-state-change-bake.json")))

    [new_id] = harness.admin_client("codedeploy").list_deployments(
        applicationName="inventory", deploymentGroupName="inventory-prod", includeOnlyStatuses=["InProgress"]
    )["deployments"]
    redeploy = deployment(harness, new_id)
    assert redeploy["revision"] == {"revisionType": "String", "string": {"content": "inventory v1"}}
    assert redeploy["description"].startswith(f"{REDEPLOY_MARKER}d-INV0000B1 (CHG-2104)")
    assert ledger(harness, "codedeploy:d-INV0000B1")["ROLLBACK"].verdict == "FAILED_CHANGE"
    assert ledger(harness, "codedeploy:d-INVASG0S1") == {}


def test_a_group_tag_naming_a_group_that_does_not_exist_still_stops_the_one_that_does(harness):
    """ListDeployments refuses an unknown group: a typo in the alarm's tag must not fail the alarm."""
    harness.admin_client("cloudwatch").tag_resource(
        ResourceARN="arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-api-errors",
        Tags=[{"Key": "changeguard:deployment-group", "Value": "checkout/checkout-prod,checkout/checkout-prd"}],
    )
    fire(harness, "checkout-api-errors")

    outcome = guard_outcome(harness.process(load_event("guard_deployment/alarm-state-change.json")))

    assert outcome["verdict"] == "STOPPED"
    assert_stopped_with_rollback(harness)
    inv = harness.invoke(GUARD, load_event("guard_deployment/alarm-state-change.json"))
    assert inv.error is None, inv.error
    assert (
        "checkout/checkout-prd: no such deployment group here (the alarm's changeguard:deployment-group tag names it)"
        in inv.result["reasons"]
    )


def test_the_health_sweep_judges_each_deployment_once_after_the_delay(morning, aws):
    harness = morning
    at(harness, datetime(2026, 11, 24, 9, 4, tzinfo=UTC))
    early = guard_outcome(harness.run_schedule(GUARD))
    assert early["verdict"] is None  # started at 09:00, checked from 09:05

    at(harness, datetime(2026, 11, 24, 9, 6, tzinfo=UTC))
    healthy = guard_outcome(harness.run_schedule(GUARD))
    assert healthy["verdict"] == "HEALTHY"
    assert ledger(harness, "codedeploy:d-CHK0000H1")["HEALTH"].body["healthy"] is True

    at(harness, datetime(2026, 11, 24, 10, 5, 30, tzinfo=UTC))
    unhealthy = guard_outcome(harness.run_schedule(GUARD))
    assert unhealthy["verdict"] == "STOPPED"
    assert_stopped_with_rollback(harness)
    [alert] = unhealthy["alerts"]
    assert alert["subject"].endswith("health check 5 min after start")
    health = ledger(harness, "codedeploy:d-CHK0000U1")["HEALTH"]
    assert health.body["values"]["error_rate_percent"] == pytest.approx(4.8)

    at(harness, datetime(2026, 11, 24, 10, 6, 30, tzinfo=UTC))
    later = guard_outcome(harness.run_schedule(GUARD))
    assert later["verdict"] is None and len(codedeploy_calls(aws, "StopDeployment")) == 1


def test_a_stop_the_health_check_ledgered_but_could_not_make_is_made_by_the_retry(morning, aws):
    """HEALTH and the STOP intent are one append; StopDeployment is then throttled past botocore's
    retries and the run fails. Lambda's retry of the same scheduled event finds HEALTH, and must
    still make the stop, from the decision recorded, without judging the metrics again."""
    at(morning, datetime(2026, 11, 24, 10, 5, 30, tzinfo=UTC))
    sweep = morning.scheduled_event(GUARD)
    with count_calls() as calls:
        throttled = aws.faults.fail("throttle", operations=["StopDeployment"])
        with fast_retries():
            failed = morning.invoke(GUARD, sweep).error or ""
        aws.faults.remove(throttled)
        assert "StopDeployment operation (reached max retries" in failed, failed
        assert {"HEALTH", "STOP"} <= set(ledger(morning, "codedeploy:d-CHK0000U1"))
        assert deployment(morning, "d-CHK0000U1")["status"] == "InProgress"
        checked = calls["cloudwatch:GetMetricData"]
        calls.clear()

        at(morning, datetime(2026, 11, 24, 10, 6, 40, tzinfo=UTC))  # Lambda's first retry, a minute after
        retried = guard_outcome(morning.run_schedule(GUARD, event=sweep))
        at(morning, datetime(2026, 11, 24, 10, 7, 30, tzinfo=UTC))
        later = guard_outcome(morning.run_schedule(GUARD))

    assert checked > 0 and retried["verdict"] == "STOPPED"
    assert_stopped_with_rollback(morning)
    [alert] = retried["alerts"]
    assert alert["subject"].endswith("health check 5 min after start")
    assert any(k.startswith("STOP#d-") for k in ledger(morning, "codedeploy:d-CHK0000U1"))
    assert later["verdict"] is None  # done: nothing more
    assert calls["codedeploy:StopDeployment"] == 1 and len(codedeploy_calls(aws, "StopDeployment")) == 1
    assert calls["cloudwatch:GetMetricData"] == 0  # the check's recorded verdict, not a second check


def test_a_health_check_after_the_alarm_decided_is_ledgered_and_the_sweep_is_done(harness):
    harness.put_parameter("enforcement-mode", "observe")
    fire(harness, "checkout-api-errors")  # 10:04:30, before the 10:05 health check
    assert guard_outcome(harness.process(load_event("guard_deployment/alarm-state-change.json")))["verdict"] == (
        "WOULD_STOP"
    )

    at(harness, datetime(2026, 11, 24, 10, 5, 30, tzinfo=UTC))
    checked = guard_outcome(harness.run_schedule(GUARD))

    assert checked["verdict"] == "WOULD_STOP" and checked["alerts"] == []  # the alarm's decision, alerted once
    health = ledger(harness, "codedeploy:d-CHK0000U1")["HEALTH"]
    assert health.verdict == "UNHEALTHY" and health.body["values"]["error_rate_percent"] == pytest.approx(4.8)
    at(harness, datetime(2026, 11, 24, 10, 6, 30, tzinfo=UTC))
    assert guard_outcome(harness.run_schedule(GUARD))["verdict"] is None  # still in flight, not checked again


def test_a_zero_delay_is_checked_by_the_first_sweep_with_a_whole_minute_of_metrics(morning):
    criteria = json.loads(SCENARIO["parameters"]["health-criteria"])
    criteria["checkout/checkout-prod"]["delay_minutes"] = 0
    morning.put_parameter("health-criteria", json.dumps(criteria))

    at(morning, datetime(2026, 11, 24, 10, 0, 30, tzinfo=UTC))
    early = guard_outcome(morning.run_schedule(GUARD))
    assert early["verdict"] is None and "HEALTH" not in ledger(morning, "codedeploy:d-CHK0000U1")

    at(morning, datetime(2026, 11, 24, 10, 1, 30, tzinfo=UTC))
    checked = guard_outcome(morning.run_schedule(GUARD))
    assert checked["verdict"] == "STOPPED"
    assert_stopped_with_rollback(morning)
    health = ledger(morning, "codedeploy:d-CHK0000U1")["HEALTH"]
    assert health.body["evaluated"] is True and health.body["values"]["error_rate_percent"] == pytest.approx(4.8)


def test_the_demo_scenario_alert_names_deployment_group_application_reason_and_values(harness):
    fire(harness, "checkout-api-errors")
    harness.process(load_event("guard_deployment/alarm-state-change.json"))
    alert = json.loads(json.dumps(ledger(harness, "codedeploy:d-CHK0000U1")["ALERT#guard_deployment#stop"].body))[
        "alert"
    ]
    details = alert["details"]
    assert (details["deployment_id"], details["deployment_group"], details["application"]) == (
        "d-CHK0000U1",
        "checkout-prod",
        "checkout",
    )
    assert details["reason"].startswith("alarm checkout-api-errors is in ALARM")
    assert details["alarm.threshold"] == 10.0 and details["alarm.recent_datapoints"] == "48"
    assert details["metric.error_rate_percent"] == pytest.approx(4.8)
    assert alert["ticket_id"] == "CHG-2002"
