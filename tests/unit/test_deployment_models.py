"""What reaches the deployment guard: the three alarm shapes and CodeDeploy state changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from changeguard.domain.errors import InvalidEventError
from changeguard.models.deployments import (
    AlarmActionPayload,
    AlarmSnsEvent,
    AlarmStateChangeEvent,
    DeploymentStateChangeEvent,
    DirectInvocation,
)
from changeguard.services.deployment_guard import alarm_signals
from changeguard_tools.patterns import matches
from changeguard_tools.template import Template
from pydantic import ValidationError
from sample_events import load_event

FIRED = datetime(2026, 11, 24, 10, 4, 10, 191000, tzinfo=UTC)


def _rules() -> dict[str, dict]:
    template = Template()
    ctx = template.context()
    for logical_id in template.resources:
        ctx.refs.setdefault(logical_id, f"{logical_id}-physical")
    spec = template.functions(ctx)["GuardDeploymentFunction"]
    return {r.name: r.pattern for r in spec.rules}


RULES = _rules()


def test_the_three_shapes_of_one_alarm_give_the_same_signal():
    eventbridge = alarm_signals(load_event("guard_deployment/alarm-state-change.json"))
    action = alarm_signals(load_event("guard_deployment/alarm-lambda-action.json"))
    sns = alarm_signals(load_event("guard_deployment/alarm-sns.json"))
    shapes = [eventbridge[0], action[0], sns[0]]
    assert [s.shape for s in shapes] == ["eventbridge", "lambda-action", "sns"]
    for signal in shapes:
        assert signal.alarm_name == "checkout-api-errors"
        assert signal.alarm_arn == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-api-errors"
        assert signal.state == "ALARM" and signal.previous_state == "OK"
        assert signal.changed_at == FIRED
        assert (signal.account, signal.region) == ("123456789012", "us-east-1")
        assert signal.evidence()["alarm.threshold"] == 10.0
    assert eventbridge[0].evidence()["alarm.recent_datapoints"] == "48"


def test_the_sns_region_comes_from_the_alarm_arn_not_the_display_name():
    event = load_event("guard_deployment/alarm-sns.json")
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    assert message["Region"] == "US East (N. Virginia)"
    assert alarm_signals(event)[0].region == "us-east-1"


def test_unknown_fields_are_ignored_in_aws_payloads():
    event = load_event("guard_deployment/alarm-lambda-action.json")
    event["alarmData"]["newField"] = {"added": "by AWS"}
    event["alarmData"]["state"]["actionsSuppressedBy"] = "WaitPeriod"
    assert AlarmActionPayload.model_validate(event).alarmData.state.value == "ALARM"


def test_direct_invocation_model_accepts_both_non_rule_samples_and_rejects_others():
    DirectInvocation.model_validate(load_event("guard_deployment/alarm-lambda-action.json"))
    DirectInvocation.model_validate(load_event("guard_deployment/alarm-sns.json"))
    not_an_alarm = load_event("guard_deployment/alarm-sns.json")
    not_an_alarm["Records"][0]["Sns"]["Message"] = '{"hello": "world"}'
    with pytest.raises(ValidationError):
        AlarmSnsEvent.model_validate(not_an_alarm)
    with pytest.raises(ValidationError):
        DirectInvocation.model_validate({"source": "aws.cloudwatch"})


@pytest.mark.parametrize(
    "broken",
    [
        {"Records": [{"Sns": {"MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": "not json"}}]},
        {"Records": []},
        {"alarmData": {}},
        {"detail-type": "CloudWatch Alarm State Change", "detail": {}},
    ],
)
def test_malformed_alarms_are_typed_rejections(broken):
    with pytest.raises(InvalidEventError):
        alarm_signals(broken)


@pytest.mark.parametrize("name", ["", "x" * 256])
def test_an_alarm_name_cloudwatch_would_refuse_is_a_typed_rejection_in_every_shape(name):
    """CloudWatch alarm names are 1 to 255 characters: anything else was raised by botocore's parameter
    validation halfway through handling the event (DescribeAlarms), not rejected as bad input."""
    eventbridge = load_event("guard_deployment/alarm-state-change.json")
    eventbridge["detail"]["alarmName"] = name
    action = load_event("guard_deployment/alarm-lambda-action.json")
    action["alarmData"]["alarmName"] = name
    sns = load_event("guard_deployment/alarm-sns.json")
    message = json.loads(sns["Records"][0]["Sns"]["Message"])
    sns["Records"][0]["Sns"]["Message"] = json.dumps({**message, "AlarmName": name})
    for event in (eventbridge, action, sns):
        with pytest.raises(InvalidEventError):
            alarm_signals(event)


@pytest.mark.parametrize(
    ("sample", "state"),
    [
        ("deployment-start.json", "START"),
        ("deployment-success.json", "SUCCESS"),
        ("deployment-failure.json", "FAILURE"),
        ("deployment-stop.json", "STOP"),
    ],
)
def test_the_four_deployment_states_parse_and_match_the_templates_rule(sample, state):
    event = load_event(f"guard_deployment/{sample}")
    parsed = DeploymentStateChangeEvent.model_validate(event)
    assert parsed.detail.state == state
    assert parsed.detail.deploymentId.startswith("d-")
    assert matches(RULES["DeploymentStateChanges"], event)


def test_ready_and_other_sources_do_not_reach_the_guard():
    event = load_event("guard_deployment/deployment-start.json")
    event["detail"]["state"] = "READY"
    assert not matches(RULES["DeploymentStateChanges"], event)


def test_only_alarm_transitions_to_alarm_match_and_replays_are_excluded():
    event = load_event("guard_deployment/alarm-state-change.json")
    assert AlarmStateChangeEvent.model_validate(event).detail.alarmName == "checkout-api-errors"
    assert matches(RULES["AlarmStateChanges"], event)
    event["detail"]["state"]["value"] = "OK"
    assert not matches(RULES["AlarmStateChanges"], event)
    replayed = load_event("guard_deployment/alarm-state-change.json")
    replayed["replay-name"] = "backfill-2026-11"
    assert not matches(RULES["AlarmStateChanges"], replayed)
