"""The change-calendar gate end to end: template rules, handlers, embedded AWS, alerts.

Every trigger goes through ``Harness.process``, which routes by the template's own rules; every stop
is checked against the embedded AWS (the deployment really ends up stopped, with a rollback).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from changeguard.adapters.dynamodb import DynamoDBLedger
from changeguard.domain.ledger import EntryKind
from changeguard_tools import fixtures
from changeguard_tools.bench import count_calls
from changeguard_tools.embedded import (
    EmbeddedAWS,
    cloudformation_cancel,
    codedeploy_deployments,
    codedeploy_hooks,
    codepipeline_executions,
)
from changeguard_tools.embedded.faults import fast_retries
from changeguard_tools.harness import ACCOUNT, REGION, FixedClock, Harness, quiet_stream
from changeguard_tools.replay import wrap_record
from sample_events import load_event

GATE = "GateChangeWindowFunction"
HOOK = "GateLifecycleHookFunction"
NOW = datetime(2026, 11, 21, 9, 16, tzinfo=UTC)
CALENDAR = "changeguard-demo-window"
TEMPLATE_V1 = '{"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}'
TEMPLATE_V2 = '{"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}, "Topic": {"Type": "AWS::SNS::Topic"}}}'

SEED: dict[str, Any] = {
    "calendars": [
        {
            "name": CALENDAR,
            "type": "DEFAULT_CLOSED",
            "events": [
                {
                    "summary": "Weekly change window",
                    "start": "2026-11-07T02:00:00Z",
                    "end": "2026-11-07T06:00:00Z",
                    "rrule": "FREQ=WEEKLY;BYDAY=SA",
                }
            ],
        }
    ],
    "tickets": [
        {"id": "CHG-2001", "type": "emergency", "title": "INCIDENT-77: payments failing"},
        {
            "id": "CHG-1001",
            "type": "normal",
            "status": "approved",
            "title": "Launch payments workers",
            "window": {"start": "2026-11-21T00:00:00Z", "end": "2026-11-22T06:00:00Z"},
            "test_evidence": "https://ci.example.com/runs/1",
            "rollback_plan": "terminate the instances",
            "approvals": [
                {
                    "approver": "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Approver_1/bob@example.com",
                    "at": "2026-11-20T10:00:00Z",
                },
                {
                    "approver": "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Approver_1/carol@example.com",
                    "at": "2026-11-20T11:00:00Z",
                },
            ],
        },
    ],
}


def deployments(platform: str, *specs: dict[str, Any]) -> dict[str, Any]:
    return {
        "codedeploy": [
            {
                "application": "payments-api",
                "compute_platform": platform,
                "groups": [{"name": "payments-prod", "deployments": list(specs)}],
            }
        ]
    }


def deployment(
    deployment_id: str,
    created: str,
    *,
    done: str | None = None,
    description: str | None = None,
    creator: str = "user",
) -> dict[str, Any]:
    timeline = {"InProgress": created} | ({"Succeeded": done} if done else {})
    spec: dict[str, Any] = {
        "id": deployment_id,
        "revision": {"revisionType": "String", "string": {"content": f"payments-api {deployment_id}"}},
        "created": created,
        "timeline": timeline,
        "creator": creator,
    }
    if description:
        spec["description"] = description
    return spec


SERVER_DEPLOYMENTS = deployments(
    "Server",
    deployment("d-G00D00001", "2026-11-14T03:00:00Z", done="2026-11-14T03:20:00Z"),
    deployment("d-1NW1ND0W1", "2026-11-21T03:10:00Z"),
    deployment("d-4UTS1DE01", "2026-11-21T09:15:00Z"),
    deployment("d-EMERGNCY1", "2026-11-21T09:15:00Z", description="CHG-2001 hotfix for INCIDENT-77"),
)


@pytest.fixture
def harness(aws: EmbeddedAWS) -> Iterator[Harness]:
    """The stack provisioned, the weekly-window calendar enforced in enforce mode."""
    h = Harness(aws.endpoint_url, clock=FixedClock(NOW), log_stream=quiet_stream())
    h.provision()
    fixtures.seed(h, SEED)
    h.put_parameter("change-calendar-names", CALENDAR)
    h.put_parameter("enforcement-mode", "enforce")
    yield h
    codedeploy_deployments.use_clock(None)
    # moto's state is per process: leave none behind for tests that start their own embedded AWS (the
    # demo). Reset clears the recorder's errors too, so check them first, as the `aws` fixture would.
    assert not aws.errors, f"the CloudTrail recorder failed: {aws.errors!r}"
    aws.reset()


def gate_outcome(result: dict[str, Any]) -> dict[str, Any]:
    assert result["error"] is None, result["error"]
    assert GATE in result["routed_to"], result["routed_to"]
    found: dict[str, Any] = next(o for o in result["outcomes"] if o["function"] == GATE)
    return found


def get_deployment(h: Harness, deployment_id: str) -> dict[str, Any]:
    info: dict[str, Any] = h.admin_client("codedeploy").get_deployment(deploymentId=deployment_id)["deploymentInfo"]
    return info


# -- CodeDeploy ---------------------------------------------------------------------------------------
def test_a_deployment_started_outside_the_window_is_stopped_with_a_rollback(harness: Harness) -> None:
    fixtures.seed(harness, SERVER_DEPLOYMENTS)

    outcome = gate_outcome(harness.process(load_event("gate_change_window/01-codedeploy-start-outside-window.json")))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    stopped = get_deployment(harness, "d-4UTS1DE01")
    assert stopped["status"] == "Stopped"
    rollback_id = stopped["rollbackInfo"]["rollbackDeploymentId"]
    rollback = get_deployment(harness, rollback_id)
    assert rollback["creator"] == "codeDeployRollback"
    assert rollback["rollbackInfo"]["rollbackTriggeringDeploymentId"] == "d-4UTS1DE01"
    [alert] = outcome["alerts"]
    assert alert["subject"].startswith("Change window CLOSED: stopped deployment d-4UTS1DE01")
    assert alert["severity"] == "high" and alert["verdict"] == "OUTSIDE_CHANGE_WINDOW"

    # CodeDeploy's rollback starts while the calendar is still closed: it is never stopped.
    start = codedeploy_deployments.state_change_event(rollback_id, "START", account_id=ACCOUNT, region=REGION)
    again = gate_outcome(harness.process(start))
    assert again["verdict"] == "ROLLBACK"
    assert get_deployment(harness, rollback_id)["status"] == "InProgress"
    assert again["alerts"] == []


# The AWS calls of a stop, on a warm function: the change's partition read, the calendar, the deployment,
# the decision ledgered (a conditional PutItem) before StopDeployment, the partition read again for the
# hook's alert, then the result and the alert in one TransactWriteItems.
STOP_CALLS = {
    "dynamodb:Query": 2,
    "ssm:GetCalendarState": 1,
    "codedeploy:GetDeployment": 1,
    "dynamodb:PutItem": 1,
    "codedeploy:StopDeployment": 1,
    "dynamodb:TransactWriteItems": 1,
}


@pytest.mark.parametrize("result_write", ["made", "throttled"])
def test_a_stop_is_ledgered_before_it_is_made_and_a_retry_keeps_it_in_the_record(
    aws: EmbeddedAWS, harness: Harness, result_write: str
) -> None:
    """The write after StopDeployment (its result and the alert) can fail, and Lambda retries a minute
    later, to find the deployment Stopped: the ledger still says ChangeGuard decided to stop it, before
    it did, and the retry's result and alert say the earlier attempt most likely did. One stop, one alert."""
    fixtures.seed(harness, SERVER_DEPLOYMENTS)
    warm = codedeploy_deployments.state_change_event("d-1NW1ND0W1", "START", account_id=ACCOUNT, region=REGION)
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    with count_calls() as calls:
        assert harness.invoke(GATE, warm).error is None  # policy cached, clients made
        calls.clear()
        if result_write == "throttled":
            throttled = aws.faults.fail("throttle", operations=["TransactWriteItems"], body_contains='"ALERT#')
            with fast_retries():
                failed = harness.invoke(GATE, event).error or ""
            assert "when calling the TransactWriteItems operation (reached max retries" in failed, failed
            aws.faults.remove(throttled)
            assert get_deployment(harness, "d-4UTS1DE01")["status"] == "Stopped"
            assert harness.clock is not None
            harness.clock.set(NOW + timedelta(minutes=1))  # Lambda's first retry
            harness.refresh_clock()

        result = harness.invoke(GATE, event)

    assert result.error is None, result.error
    assert calls["codedeploy:StopDeployment"] == 1
    if result_write == "made":
        assert dict(calls) == STOP_CALLS
    assert get_deployment(harness, "d-4UTS1DE01")["status"] == "Stopped"
    table = DynamoDBLedger(harness.ctx.refs["ChangeLedgerTable"], harness.admin_client("dynamodb"))
    entries = table.entries_for("codedeploy:d-4UTS1DE01")
    [decision, done] = [e for e in entries if e.kind is EntryKind.CALENDAR]
    assert (decision.entry, done.entry) == ("CALENDAR", "CALENDAR#result")
    assert decision.body["decision"]["action"] == "stop_deployment" and decision.recorded_at == NOW
    [alert] = [e.body["alert"] for e in entries if e.kind is EntryKind.ALERT]
    assert alert["subject"].startswith("Change window CLOSED: stopped deployment d-4UTS1DE01")
    if result_write == "made":
        assert done.body["actions"][0].startswith("stopped deployment d-4UTS1DE01")
    else:
        assert "was Stopped when a retry came to stop it" in done.body["actions"][0]
        assert alert["actions"] == done.body["actions"]


def test_a_retry_that_finds_the_deployment_succeeded_meanwhile_says_nothing_was_stopped(
    aws: EmbeddedAWS, harness: Harness
) -> None:
    """The decision is ledgered, StopDeployment is throttled and the invocation fails; before Lambda's
    retry a minute later the deployment succeeds by itself (an all-at-once deployment takes seconds).
    A deployment StopDeployment stopped reads Stopped, never Succeeded: the retry's result and alert
    say the change went ahead outside the window, not that the gate stopped it, and a later delivery
    adds nothing."""
    fixtures.seed(
        harness,
        deployments(
            "Server",
            deployment("d-1NW1ND0W1", "2026-11-21T03:10:00Z"),
            deployment("d-4UTS1DE01", "2026-11-21T09:15:00Z", done="2026-11-21T09:16:30Z"),
        ),
    )
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    throttled = aws.faults.fail("throttle", operations=["StopDeployment"])
    with fast_retries():
        failed = harness.invoke(GATE, event).error or ""
    assert "when calling the StopDeployment operation (reached max retries" in failed, failed
    aws.faults.remove(throttled)
    assert harness.clock is not None
    harness.clock.set(NOW + timedelta(minutes=1))  # Lambda's first retry
    harness.refresh_clock()
    assert get_deployment(harness, "d-4UTS1DE01")["status"] == "Succeeded"

    with count_calls() as calls:
        result = harness.invoke(GATE, event)

    assert result.error is None, result.error
    assert calls["codedeploy:StopDeployment"] == 0
    table = DynamoDBLedger(harness.ctx.refs["ChangeLedgerTable"], harness.admin_client("dynamodb"))
    entries = table.entries_for("codedeploy:d-4UTS1DE01")
    [decision, done] = [e for e in entries if e.kind is EntryKind.CALENDAR]
    assert (decision.entry, done.entry) == ("CALENDAR", "CALENDAR#result")
    assert decision.body["intent"] is True and done.body["final_status"] == "Succeeded"
    assert done.verdict == "OUTSIDE_CHANGE_WINDOW" and done.body["decision"]["action"] == "alert"
    assert "went ahead outside the window" in done.body["actions"][0]
    [alert] = [e.body["alert"] for e in entries if e.kind is EntryKind.ALERT]
    # What happened first: SNS's 100 characters cut the label's end.
    assert alert["subject"].startswith(
        "Change window CLOSED: went ahead outside the window (Succeeded): deployment d-4UTS1DE01"
    )
    assert harness.invoke(GATE, event).result["duplicate"] is True  # a second retry writes nothing
    assert len(table.entries_for("codedeploy:d-4UTS1DE01")) == len(entries)


def test_a_deployment_whose_description_only_claims_to_be_the_guards_redeploy_is_stopped(harness: Harness) -> None:
    """Anyone allowed CreateDeployment writes the description: the ledger holds no mark for this one."""
    claim = "ChangeGuard rollback of d-G00D00001 (CHG-1001): regression inside the bake window"
    fixtures.seed(harness, deployments("Server", deployment("d-SP00F0001", "2026-11-21T09:15:00Z", description=claim)))
    start = codedeploy_deployments.state_change_event("d-SP00F0001", "START", account_id=ACCOUNT, region=REGION)

    outcome = gate_outcome(harness.process(start))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    assert get_deployment(harness, "d-SP00F0001")["status"] == "Stopped"
    assert len(outcome["alerts"]) == 1
    table = DynamoDBLedger(harness.ctx.refs["ChangeLedgerTable"], harness.admin_client("dynamodb"))
    [entry] = [e for e in table.entries_for("codedeploy:d-SP00F0001") if e.entry == "CALENDAR"]  # the decision
    assert any("claims it is ChangeGuard's rollback" in r for r in entry.body["decision"]["reasons"])


def test_a_scale_out_deployment_in_a_closed_window_goes_ahead_as_not_a_release(harness: Harness) -> None:
    """EC2 Auto Scaling's deployment of the current revision: stopping it would shut the new instance down."""
    fixtures.seed(
        harness, deployments("Server", deployment("d-SCALE0UT1", "2026-11-21T09:15:00Z", creator="autoscaling"))
    )
    start = codedeploy_deployments.state_change_event("d-SCALE0UT1", "START", account_id=ACCOUNT, region=REGION)

    outcome = gate_outcome(harness.process(start))

    assert outcome["verdict"] == "NOT_A_RELEASE"
    assert get_deployment(harness, "d-SCALE0UT1")["status"] == "InProgress"
    assert outcome["alerts"] == []
    table = DynamoDBLedger(harness.ctx.refs["ChangeLedgerTable"], harness.admin_client("dynamodb"))
    [entry] = [e for e in table.entries_for("codedeploy:d-SCALE0UT1") if e.kind is EntryKind.CALENDAR]
    assert entry.verdict == "NOT_A_RELEASE"
    assert "is not a release" in entry.body["summary"] and "creator autoscaling" in entry.body["summary"]
    reasons = entry.body["decision"]["reasons"]
    assert reasons[1].startswith("the change calendar was CLOSED at 2026-11-21T09:16")


def test_a_deployment_started_inside_the_window_goes_ahead(harness: Harness) -> None:
    fixtures.seed(harness, SERVER_DEPLOYMENTS)

    outcome = gate_outcome(harness.process(load_event("gate_change_window/02-codedeploy-start-in-window.json")))

    assert outcome["verdict"] == "IN_WINDOW"
    assert get_deployment(harness, "d-1NW1ND0W1")["status"] == "InProgress"
    assert outcome["alerts"] == []


def test_observe_mode_reports_what_it_would_have_stopped_and_stops_nothing(harness: Harness) -> None:
    fixtures.seed(harness, SERVER_DEPLOYMENTS)
    harness.put_parameter("enforcement-mode", "observe")

    outcome = gate_outcome(harness.process(load_event("gate_change_window/01-codedeploy-start-outside-window.json")))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    assert get_deployment(harness, "d-4UTS1DE01")["status"] == "InProgress"
    [alert] = outcome["alerts"]
    assert "would have stopped deployment d-4UTS1DE01" in alert["subject"]


def test_an_emergency_deployment_outside_the_window_goes_ahead_flagged(harness: Harness) -> None:
    fixtures.seed(harness, SERVER_DEPLOYMENTS)

    outcome = gate_outcome(harness.process(load_event("gate_change_window/03-codedeploy-start-emergency.json")))

    assert outcome["verdict"] == "EMERGENCY"
    assert get_deployment(harness, "d-EMERGNCY1")["status"] == "InProgress"
    [alert] = outcome["alerts"]
    assert alert["subject"].startswith(
        "Emergency change under CHG-2001 outside the change window: deployment d-EMERGNCY1"
    )
    assert any("retroactive approval due by 2026-11-22T09:40:00+00:00" in a for a in outcome["actions"])
    assert alert["verdict"] == "EMERGENCY"


def test_a_redelivered_start_stops_once_and_alerts_once(harness: Harness) -> None:
    fixtures.seed(harness, SERVER_DEPLOYMENTS)
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")

    first = gate_outcome(harness.process(event))
    second = gate_outcome(harness.process(event))

    assert len(first["alerts"]) == 1 and second["alerts"] == []
    assert any("duplicate" in a for a in second["actions"])


def test_an_unreadable_calendar_fails_closed_with_one_degraded_alert(harness: Harness) -> None:
    fixtures.seed(harness, SERVER_DEPLOYMENTS)
    harness.put_parameter("change-calendar-names", "no-such-calendar")

    first = harness.process(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))
    second = harness.process(load_event("gate_change_window/02-codedeploy-start-in-window.json"))

    assert gate_outcome(first)["verdict"] == "CALENDAR_UNKNOWN"
    assert get_deployment(harness, "d-4UTS1DE01")["status"] == "Stopped"
    assert get_deployment(harness, "d-1NW1ND0W1")["status"] == "Stopped"
    subjects = [a["subject"] for r in (first, second) for o in r["outcomes"] for a in o["alerts"]]
    assert sum("ChangeGuard degraded: change calendar" in s for s in subjects) == 1


def test_a_retry_after_the_outage_write_failed_still_raises_its_one_degraded_alert(
    aws: EmbeddedAWS, harness: Harness
) -> None:
    """The outage (OPEN#000001 and its `degraded` alert) is written after the decision and the stop's
    result: when that write is throttled, Lambda's retry finds the change decided and writes it then."""
    fixtures.seed(harness, SERVER_DEPLOYMENTS)
    harness.put_parameter("change-calendar-names", "no-such-calendar")
    event = load_event("gate_change_window/01-codedeploy-start-outside-window.json")
    throttled = aws.faults.fail("throttle", operations=["TransactWriteItems"], body_contains="OPEN#000001")
    with fast_retries():
        failed = harness.invoke(GATE, event).error or ""
    assert "TransactWriteItems" in failed, failed
    aws.faults.remove(throttled)
    assert harness.clock is not None
    harness.clock.set(NOW + timedelta(minutes=1))  # Lambda's first retry
    harness.refresh_clock()

    retried = harness.invoke(GATE, event)
    again = harness.invoke(GATE, event)

    assert retried.error is None and again.error is None, (retried.error, again.error)
    assert get_deployment(harness, "d-4UTS1DE01")["status"] == "Stopped"
    table = DynamoDBLedger(harness.ctx.refs["ChangeLedgerTable"], harness.admin_client("dynamodb"))
    outage = table.entries_for("outage:change-calendar")
    assert [e.entry for e in outage if e.kind is EntryKind.OUTAGE] == ["OPEN#000001"]
    degraded = [e for e in outage if e.kind is EntryKind.ALERT]
    assert len(degraded) == 1 and "cannot be read" in degraded[0].body["alert"]["subject"]
    assert retried.result["alert_ids"] == [degraded[0].body["alert"]["alert_id"]] and again.result["alert_ids"] == []


def test_a_calendar_outage_ends_with_one_recovered_alert(harness: Harness) -> None:
    """The first change to read the calendar again leaves the outage to the follow-up, which ends it
    with its `recovered` alert, once, however often it runs."""
    fixtures.seed(harness, SERVER_DEPLOYMENTS)
    harness.put_parameter("change-calendar-names", "no-such-calendar")
    harness.process(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))
    harness.put_parameter("change-calendar-names", CALENDAR)  # fixed
    harness.process(load_event("gate_change_window/02-codedeploy-start-in-window.json"))

    runs = [harness.run_schedule("FollowUpChangesFunction") for _ in range(2)]

    subjects = [a["subject"] for run in runs for o in run["outcomes"] for a in o["alerts"]]
    assert [s for s in subjects if s.startswith("ChangeGuard recovered")] == [
        "ChangeGuard recovered: change calendar answers again"
    ]
    table = DynamoDBLedger(harness.ctx.refs["ChangeLedgerTable"], harness.admin_client("dynamodb"))
    facts = [e.entry for e in table.entries_for("outage:change-calendar") if e.kind is EntryKind.OUTAGE]
    assert sorted(facts) == ["CLOSED#000001", "OPEN#000001"]


def test_an_unreadable_calendar_lets_deployments_through_when_fail_open(harness: Harness) -> None:
    fixtures.seed(harness, SERVER_DEPLOYMENTS)
    harness.put_parameter("change-calendar-names", "no-such-calendar")
    harness.put_parameter("calendar-fail-closed", "false")

    outcome = gate_outcome(harness.process(load_event("gate_change_window/01-codedeploy-start-outside-window.json")))

    assert outcome["verdict"] == "CALENDAR_UNKNOWN"
    assert get_deployment(harness, "d-4UTS1DE01")["status"] == "InProgress"


# -- CodePipeline -------------------------------------------------------------------------------------
def test_a_pipeline_started_outside_the_window_is_stopped(harness: Harness) -> None:
    cp = harness.admin_client("codepipeline")
    codepipeline_executions.create_pipeline(harness.admin_client("iam"), cp, "checkout-pipeline", "checkout-api")
    execution_id = cp.start_pipeline_execution(name="checkout-pipeline")["pipelineExecutionId"]
    event = load_event("gate_change_window/05-codepipeline-started.json")
    event["detail"]["execution-id"] = execution_id

    outcome = gate_outcome(harness.process(event))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    found = cp.get_pipeline_execution(pipelineName="checkout-pipeline", pipelineExecutionId=execution_id)
    assert found["pipelineExecution"]["status"] == "Stopped"
    assert "change calendar CLOSED" in found["pipelineExecution"]["statusSummary"]
    assert outcome["alerts"][0]["subject"].startswith(f"Change window CLOSED: stopped execution {execution_id}")


# -- CloudFormation (the embedded CloudTrail's own records, through the rule) --------------------------
def trail_event(aws: EmbeddedAWS, call: Any, name: str) -> dict[str, Any]:
    before = len(aws.trail.records())
    call()
    record = next(r for r in aws.trail.records()[before:] if r["eventName"] == name)
    return wrap_record(record)


def test_a_stack_update_in_progress_is_cancelled(aws: EmbeddedAWS, harness: Harness) -> None:
    cfn = harness.admin_client("cloudformation")
    cfn.create_stack(StackName="checkout-service", TemplateBody=TEMPLATE_V1)
    cloudformation_cancel.hold_updates(ACCOUNT, REGION, "checkout-service")
    event = trail_event(
        aws, lambda: cfn.update_stack(StackName="checkout-service", TemplateBody=TEMPLATE_V2), "UpdateStack"
    )

    outcome = gate_outcome(harness.process(event))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"  # the trail's eventTime is now: a Thursday, closed
    assert cfn.describe_stacks(StackName="checkout-service")["Stacks"][0]["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    assert outcome["alerts"][0]["subject"].startswith(
        "Change window CLOSED: cancelled UpdateStack of stack checkout-service"
    )


def test_a_late_update_stack_event_does_not_cancel_a_later_update(aws: EmbeddedAWS, harness: Harness) -> None:
    """An UpdateStack that finished fast, then another update 3 minutes later: the first call's event,
    processed late (CloudTrail and EventBridge lag, Lambda's retries), must not cancel the second."""
    cfn = harness.admin_client("cloudformation")
    cfn.create_stack(StackName="checkout-service", TemplateBody=TEMPLATE_V1)
    first = trail_event(
        aws, lambda: cfn.update_stack(StackName="checkout-service", TemplateBody=TEMPLATE_V2), "UpdateStack"
    )
    made = datetime.strptime(first["detail"]["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    first["detail"]["eventTime"] = (made - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cloudformation_cancel.hold_updates(ACCOUNT, REGION, "checkout-service")
    cfn.update_stack(StackName="checkout-service", TemplateBody=TEMPLATE_V1)  # the later update, in progress

    outcome = gate_outcome(harness.process(first))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    assert cfn.describe_stacks(StackName="checkout-service")["Stacks"][0]["StackStatus"] == "UPDATE_IN_PROGRESS"
    [alert] = outcome["alerts"]
    assert alert["subject"] == "Change window CLOSED: outside the window: UpdateStack of stack checkout-service"


def test_an_executed_change_set_still_updating_is_cancelled(aws: EmbeddedAWS, harness: Harness) -> None:
    cfn = harness.admin_client("cloudformation")
    cfn.create_stack(StackName="checkout-service", TemplateBody=TEMPLATE_V1)
    cfn.create_change_set(
        StackName="checkout-service", ChangeSetName="release-15", TemplateBody=TEMPLATE_V2, ChangeSetType="UPDATE"
    )  # AWS's default type; moto's is CREATE (a second stack of the same name, never "updated")

    def execute() -> None:
        cfn.execute_change_set(StackName="checkout-service", ChangeSetName="release-15")
        cloudformation_cancel.begin_update(ACCOUNT, REGION, "checkout-service")  # CloudFormation still applying it

    outcome = gate_outcome(harness.process(trail_event(aws, execute, "ExecuteChangeSet")))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    assert cfn.describe_stacks(StackName="checkout-service")["Stacks"][0]["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"


@pytest.mark.parametrize("operation", ["CreateStack", "DeleteStack"])
def test_stack_creations_and_deletions_are_alerted_with_the_next_opening(
    aws: EmbeddedAWS, harness: Harness, operation: str
) -> None:
    cfn = harness.admin_client("cloudformation")
    if operation == "DeleteStack":
        cfn.create_stack(StackName="legacy-reports", TemplateBody=TEMPLATE_V1)
        call = lambda: cfn.delete_stack(StackName="legacy-reports")
    else:
        call = lambda: cfn.create_stack(StackName="legacy-reports", TemplateBody=TEMPLATE_V1)

    outcome = gate_outcome(harness.process(trail_event(aws, call, operation)))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    [alert] = outcome["alerts"]
    assert alert["subject"] == f"Change window CLOSED: outside the window: {operation} of stack legacy-reports"


@pytest.mark.parametrize(
    "sample",
    [
        "06-cloudtrail-create-stack.json",
        "07-cloudtrail-update-stack.json",
        "08-cloudtrail-execute-change-set.json",
        "09-cloudtrail-delete-stack.json",
    ],
)
def test_every_stack_sample_reaches_the_gate_through_its_rule(harness: Harness, sample: str) -> None:
    outcome = gate_outcome(harness.process(load_event(f"gate_change_window/{sample}")))

    assert outcome["verdict"] == "OUTSIDE_CHANGE_WINDOW"  # the stacks do not exist here: alert only


# -- Calendar State Change ----------------------------------------------------------------------------
def test_window_openings_and_closings_are_announced_with_the_next_transition(harness: Harness) -> None:
    opened = gate_outcome(harness.process(load_event("gate_change_window/10-calendar-window-opened.json")))
    closed = gate_outcome(harness.process(load_event("gate_change_window/11-calendar-window-closed.json")))

    assert opened["verdict"] == "CALENDAR_OPEN" and closed["verdict"] == "CALENDAR_CLOSED"
    assert opened["alerts"][0]["subject"].endswith("opened; next transition 2026-11-21 06:00Z")
    assert closed["alerts"][0]["subject"].endswith("closed; next transition 2026-11-28 02:00Z")
    assert closed["alerts"][0]["severity"] == "info"


def test_a_member_accounts_calendar_of_the_same_name_is_not_the_enforced_window(harness: Harness) -> None:
    """A member's own calendar, named as the enforced one, forwarded to the central bus (the member
    stack's ForwardCalendarStateChangesRule): it is another calendar, and is not announced."""
    foreign = load_event("gate_change_window/10-calendar-window-opened.json")
    foreign["account"] = "210987654321"
    foreign["resources"] = [f"arn:aws:ssm:{REGION}:210987654321:document/{CALENDAR}"]

    ignored = gate_outcome(harness.process(foreign))
    opened = gate_outcome(harness.process(load_event("gate_change_window/10-calendar-window-opened.json")))

    assert ignored["verdict"] == "NOT_A_CHANGE" and ignored["alerts"] == []
    assert opened["verdict"] == "CALENDAR_OPEN" and len(opened["alerts"]) == 1


def test_a_window_opening_during_a_freeze_is_announced_as_still_closed(harness: Harness) -> None:
    """Two calendars enforced: the weekly window opens (Saturday 02:00Z) during a holiday freeze (a
    DEFAULT_OPEN calendar, CLOSED during its event). GetCalendarState over both answers CLOSED, and the
    announcement says changes are still CLOSED, until the freeze ends."""
    freeze = {"name": "holiday-freeze", "type": "DEFAULT_OPEN", "events": [{"summary": "Holiday freeze", "start": "2026-11-20T00:00:00Z", "end": "2026-11-23T00:00:00Z"}]}  # fmt: skip
    fixtures.seed(harness, {"calendars": [freeze]})
    harness.put_parameter("change-calendar-names", f"{CALENDAR},holiday-freeze")

    opened = gate_outcome(harness.process(load_event("gate_change_window/10-calendar-window-opened.json")))

    assert opened["verdict"] == "CALENDAR_CLOSED"
    [alert] = opened["alerts"]
    assert alert["subject"].startswith(f"Change window CLOSED: calendar {CALENDAR} opened; changes still CLOSED")
    assert "OPEN" not in alert["subject"]


# -- the lifecycle hook (invoked directly, as CodeDeploy does) -----------------------------------------
@pytest.mark.parametrize(("at", "status"), [(NOW, "Failed"), (datetime(2026, 11, 21, 3, 0, tzinfo=UTC), "Succeeded")])
def test_the_lifecycle_hook_fails_a_deployment_while_closed(harness: Harness, at: datetime, status: str) -> None:
    assert harness.clock is not None
    harness.clock.set(at)
    harness.refresh_clock()
    fixtures.seed(harness, deployments("Lambda", deployment("d-H00KGATE1", "2026-11-21T02:30:00Z")))
    execution_id = codedeploy_hooks.start_hook(ACCOUNT, REGION, "d-H00KGATE1", "BeforeAllowTraffic")

    result = harness.invoke(HOOK, {"DeploymentId": "d-H00KGATE1", "LifecycleEventHookExecutionId": execution_id})

    assert result.error is None, result.error
    assert codedeploy_hooks.hook_status(ACCOUNT, REGION, execution_id) == status
    expected = "Failed" if status == "Failed" else "InProgress"
    assert get_deployment(harness, "d-H00KGATE1")["status"] == expected


# Issue 9: the AWS calls one hook event makes, by path, counted as the bench counts them (botocore's
# before-call hook on every session), on a warm function: policy cached and clients made by a first
# invocation that names no deployment (dead-lettered). The deployment's ledger partition is read once
# per invocation, and once more just before an alert is written, for a START gate's alert written
# meanwhile (test_a_start_alert_written_while_the_hook_runs_is_seen_before_the_hook_alerts); the calendar
# outage's partition only when the calendar could not be read
# (test_an_unreadable_calendar_fails_closed_with_one_degraded_alert).
FIRST = {"codedeploy:GetDeployment": 1, "ssm:GetCalendarState": 1, "codedeploy:PutLifecycleEventHookExecutionStatus": 1}
RETRY = {"codedeploy:PutLifecycleEventHookExecutionStatus": 1, "dynamodb:PutItem": 1}  # the alert, at last


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # the decision (a conditional put), then the report
        ("first decision, in the window", FIRST | {"dynamodb:Query": 1, "dynamodb:PutItem": 1}),
        # the decision, the report, then the alert
        ("first decision, out of the window", FIRST | {"dynamodb:Query": 2, "dynamodb:PutItem": 2}),
        # the first attempt's report was throttled: report the recorded decision, then alert
        ("retry after the decision was recorded", RETRY | {"dynamodb:Query": 2}),
        # the first attempt's alert write was throttled: report again (refused), then alert
        ("retry after CodeDeploy was told", RETRY | {"dynamodb:Query": 2}),
    ],
)
def test_a_hook_event_reads_the_deployments_ledger_partition_once_and_again_before_alerting(
    aws: EmbeddedAWS, harness: Harness, path: str, expected: dict[str, int]
) -> None:
    assert harness.clock is not None
    if "in the window" in path:
        harness.clock.set(datetime(2026, 11, 21, 3, 0, tzinfo=UTC))
        harness.refresh_clock()
    fixtures.seed(harness, deployments("Lambda", deployment("d-H00KGATE1", "2026-11-21T02:30:00Z")))
    execution_id = codedeploy_hooks.start_hook(ACCOUNT, REGION, "d-H00KGATE1", "BeforeAllowTraffic")
    invocation = {"DeploymentId": "d-H00KGATE1", "LifecycleEventHookExecutionId": execution_id}
    with count_calls() as calls:
        assert harness.invoke(HOOK, {"DeploymentId": "d-N0SUCH001", "LifecycleEventHookExecutionId": "x"}).error
        if path.startswith("retry"):
            if "decision was recorded" in path:
                operation, only = "PutLifecycleEventHookExecutionStatus", None
            else:
                operation, only = "PutItem", '"ALERT#'  # the alert's write, not the decision's
            throttled = aws.faults.fail("throttle", operations=[operation], body_contains=only)
            with fast_retries():
                failed = harness.invoke(HOOK, invocation).error or ""
            assert f"when calling the {operation} operation (reached max retries" in failed, failed
            aws.faults.remove(throttled)
        calls.clear()

        result = harness.invoke(HOOK, invocation)

    assert result.error is None, result.error
    assert dict(calls) == expected
    expected_status = "Succeeded" if "in the window" in path else "Failed"
    assert codedeploy_hooks.hook_status(ACCOUNT, REGION, execution_id) == expected_status
    table = DynamoDBLedger(harness.ctx.refs["ChangeLedgerTable"], harness.admin_client("dynamodb"))
    entries = table.entries_for("codedeploy:d-H00KGATE1")
    assert [e.entry for e in entries if e.kind is EntryKind.CALENDAR] == [f"HOOK#{execution_id}"]
    assert sum(e.kind is EntryKind.ALERT for e in entries) == (0 if "in the window" in path else 1)


def test_a_malformed_hook_payload_is_dead_lettered(harness: Harness) -> None:
    result = harness.invoke(HOOK, {"DeploymentId": "d-H00KGATE1"})

    assert result.error is not None and "InvalidEventError" in result.error
    queue = harness.ctx.refs["GateLifecycleHookFailureQueue"]
    messages = harness.admin_client("sqs").receive_message(QueueUrl=queue).get("Messages", [])
    assert len(messages) == 1


# -- the correlator's verdict for manual changes --------------------------------------------------------
def test_the_correlator_judges_manual_changes_outside_the_window(harness: Harness) -> None:
    inside = load_event("correlate_change/01-approved-run-instances.json")  # 03:10Z, inside the window
    outside = load_event("correlate_change/01-approved-run-instances.json")
    outside["id"] = "c0ffee00-0000-4000-8000-000000000001"
    outside["time"] = outside["detail"]["eventTime"] = "2026-11-21T09:10:00Z"
    outside["detail"]["eventID"] = "0b4a1f6e-3c2d-4e5f-8a9b-0000000000f1"

    verdicts = {}
    for name, event in (("inside", inside), ("outside", outside)):
        result = harness.process(event)
        assert result["error"] is None, result["error"]
        verdicts[name] = next(o for o in result["outcomes"] if o["function"] == "CorrelateChangeFunction")

    assert verdicts["inside"]["verdict"] == "AUTHORIZED"
    assert verdicts["outside"]["verdict"] == "OUTSIDE_CHANGE_WINDOW"
    assert verdicts["outside"]["alerts"][0]["verdict"] == "OUTSIDE_CHANGE_WINDOW"


# -- least privilege: the template grants every call the gate's code makes --------------------------
def _granted(harness: Harness, logical_id: str) -> set[str]:
    actions: set[str] = set()
    for policy in harness.functions[logical_id].policies:
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            if statement.get("Effect") == "Allow":
                found = statement["Action"]
                actions |= {found} if isinstance(found, str) else set(found)
    return actions


def test_the_template_grants_every_call_the_gate_makes(
    aws: EmbeddedAWS, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from changeguard.adapters import clients

    calls: set[tuple[str, str]] = set()

    def record(model: Any, **_: Any) -> None:
        function = os.environ.get("CHANGEGUARD_FUNCTION", "")
        if function.startswith("gate_"):
            calls.add((function, f"{model.service_model.endpoint_prefix}:{model.name}"))

    # Every botocore session the suite's clients come from (the harness starts one per function) records.
    original = clients._session

    def recording_session() -> Any:
        session = original()
        if not getattr(session, "_gate_calls_recorded", False):
            session.events.register("before-call", record)
            session._gate_calls_recorded = True
        return session

    recording_session.cache_clear = original.cache_clear  # type: ignore[attr-defined]
    monkeypatch.setattr(clients, "_session", recording_session)
    try:
        fixtures.seed(harness, SERVER_DEPLOYMENTS)
        harness.process(load_event("gate_change_window/01-codedeploy-start-outside-window.json"))
        harness.process(load_event("gate_change_window/03-codedeploy-start-emergency.json"))
        harness.process(load_event("gate_change_window/11-calendar-window-closed.json"))
        cp = harness.admin_client("codepipeline")
        codepipeline_executions.create_pipeline(harness.admin_client("iam"), cp, "checkout-pipeline", "payments-api")
        pipeline_event = load_event("gate_change_window/05-codepipeline-started.json")
        pipeline_event["detail"]["execution-id"] = cp.start_pipeline_execution(name="checkout-pipeline")[
            "pipelineExecutionId"
        ]
        harness.process(pipeline_event)
        cfn = harness.admin_client("cloudformation")
        cfn.create_stack(StackName="checkout-service", TemplateBody=TEMPLATE_V1)
        cloudformation_cancel.hold_updates(ACCOUNT, REGION, "checkout-service")
        update = lambda: cfn.update_stack(StackName="checkout-service", TemplateBody=TEMPLATE_V2)
        harness.process(trail_event(aws, update, "UpdateStack"))
        execute = load_event("gate_change_window/08-cloudtrail-execute-change-set.json")
        execute["detail"]["requestParameters"] = {"changeSetName": "arn:aws:cloudformation:us-east-1:1:changeSet/x/0"}
        harness.process(execute)  # DescribeChangeSet finds nothing: rejected, after the call
        harness.put_parameter("change-calendar-names", "no-such-calendar")  # the outage path
        harness.process(load_event("gate_change_window/02-codedeploy-start-in-window.json"))
        fixtures.seed(harness, {"codedeploy": [{"application": "hooked", "compute_platform": "Lambda", "groups": [
            {"name": "prod", "deployments": [deployment("d-H00KGATE1", "2026-11-21T09:00:00Z")]}]}]})  # fmt: skip
        hook_id = codedeploy_hooks.start_hook(ACCOUNT, REGION, "d-H00KGATE1")
        harness.invoke(HOOK, {"DeploymentId": "d-H00KGATE1", "LifecycleEventHookExecutionId": hook_id})
        harness.invoke(HOOK, {"not": "a hook"})  # dead-lettered
    finally:
        original.cache_clear()  # no session keeps the recorder

    iam_action = {"dynamodb:TransactWriteItems": "dynamodb:PutItem"}
    logical = {"gate_change_window": GATE, "gate_lifecycle_hook": HOOK}
    missing = sorted(
        (function, action)
        for function, call in calls
        if (action := iam_action.get(call, call)) not in _granted(harness, logical[function])
    )
    assert {f for f, _ in calls} == set(logical)
    assert {c for _, c in calls} >= {
        "codedeploy:StopDeployment",
        "codepipeline:StopPipelineExecution",
        "cloudformation:CancelUpdateStack",
        "cloudformation:DescribeChangeSet",
        "ssm:GetCalendarState",
        "codedeploy:PutLifecycleEventHookExecutionStatus",
        "sqs:SendMessage",
    }
    assert missing == []
