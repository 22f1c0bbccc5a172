"""The embedded CodeDeploy: deployments that progress, StopDeployment with automatic rollback, alarm configuration."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from changeguard.adapters.codedeploy import CodeDeployGuard
from changeguard_tools.embedded import EmbeddedAWS, codedeploy_deployments

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
REV = {"v14": {"revisionType": "String", "string": {"content": "v14"}}}
REV["v15"] = {"revisionType": "String", "string": {"content": "v15"}}
REV["v16"] = {"revisionType": "String", "string": {"content": "v16"}}


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def clock(aws: EmbeddedAWS) -> Iterator[Clock]:
    clock = Clock(T0)
    codedeploy_deployments.use_clock(clock.now)
    yield clock
    codedeploy_deployments.use_clock(None)


@pytest.fixture
def cd(aws: EmbeddedAWS, clock: Clock) -> Any:
    client = aws.client("codedeploy")
    client.create_application(applicationName="checkout", computePlatform="Lambda")
    client.create_deployment_group(
        applicationName="checkout",
        deploymentGroupName="prod",
        serviceRoleArn="arn:aws:iam::123456789012:role/codedeploy",
        alarmConfiguration={"enabled": True, "alarms": [{"name": "checkout-errors"}, {"name": "checkout-p99"}]},
        tags=[{"Key": "ChangeTicket", "Value": "CHG-2001"}],
    )
    return client


def create(cd: Any, version: str, **kw: Any) -> str:
    return str(
        cd.create_deployment(applicationName="checkout", deploymentGroupName="prod", revision=REV[version], **kw)[
            "deploymentId"
        ]
    )


def info(cd: Any, deployment_id: str) -> dict[str, Any]:
    return dict(cd.get_deployment(deploymentId=deployment_id)["deploymentInfo"])


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_create_deployment_starts_at_once_with_an_aws_shaped_id(cd, clock):
    deployment_id = create(cd, "v16", description="checkout v16 (CHG-2002)")
    assert re.fullmatch(r"d-[A-Z0-9]{9}", deployment_id)
    got = info(cd, deployment_id)
    assert got["status"] == "InProgress"
    assert got["createTime"] == T0 and got["startTime"] == T0
    assert "completeTime" not in got and "rollbackInfo" not in got
    assert got["creator"] == "user" and got["description"] == "checkout v16 (CHG-2002)"


def test_previous_revision_is_the_groups_last_successful_one(cd, clock):
    first = create(cd, "v15")
    assert "previousRevision" not in info(cd, first)
    codedeploy_deployments.advance(first, "Succeeded")
    second = create(cd, "v16")
    assert info(cd, second)["previousRevision"] == REV["v15"]


def test_seeded_timelines_play_on_the_clock_and_appear_when_created(cd, clock):
    seeded = codedeploy_deployments.create_deployment(
        "checkout",
        "prod",
        REV["v16"],
        deployment_id="d-CHK0000H1",
        created=T0 + timedelta(minutes=5),
        timeline=[(T0 + timedelta(minutes=5), "InProgress"), (T0 + timedelta(minutes=15), "Succeeded")],
    )
    assert seeded == "d-CHK0000H1"
    with pytest.raises(ClientError) as missing:
        info(cd, seeded)
    assert code(missing) == "DeploymentDoesNotExistException"
    assert cd.list_deployments(applicationName="checkout", deploymentGroupName="prod")["deployments"] == []
    clock.at = T0 + timedelta(minutes=6)
    assert info(cd, seeded)["status"] == "InProgress"
    clock.at = T0 + timedelta(minutes=20)
    got = info(cd, seeded)
    assert got["status"] == "Succeeded"
    assert got["startTime"] == T0 + timedelta(minutes=5) and got["completeTime"] == T0 + timedelta(minutes=15)


def test_a_seeded_deployment_carries_an_aws_creator_and_ec2_creators_need_a_server_application(cd, clock):
    cd.create_application(applicationName="inventory", computePlatform="Server")
    cd.create_deployment_group(
        applicationName="inventory",
        deploymentGroupName="prod",
        serviceRoleArn="arn:aws:iam::123456789012:role/codedeploy",
        autoScalingGroups=["inventory-asg"],
    )
    scale_out = codedeploy_deployments.create_deployment("inventory", "prod", REV["v16"], creator="autoscaling")
    assert info(cd, scale_out)["creator"] == "autoscaling"
    with pytest.raises(ValueError, match="unknown deployment creator 'AutoScaling'"):
        codedeploy_deployments.create_deployment("inventory", "prod", REV["v16"], creator="AutoScaling")
    with pytest.raises(ValueError, match="deploys to EC2 instances"):
        codedeploy_deployments.create_deployment("checkout", "prod", REV["v16"], creator="CodeDeployAutoUpdate")


def test_stop_with_auto_rollback_creates_the_linked_rollback_deployment(cd, clock):
    good = create(cd, "v15")
    codedeploy_deployments.advance(good, "Succeeded")
    bad = create(cd, "v16")
    clock.at = T0 + timedelta(minutes=4)
    answer = cd.stop_deployment(deploymentId=bad, autoRollbackEnabled=True)
    assert answer["status"] == "Succeeded"
    stopped = info(cd, bad)
    assert stopped["status"] == "Stopped" and stopped["completeTime"] == T0 + timedelta(minutes=4)
    rollback_id = stopped["rollbackInfo"]["rollbackDeploymentId"]
    assert rollback_id in answer["statusMessage"]
    rollback = cd.batch_get_deployments(deploymentIds=[rollback_id])["deploymentsInfo"][0]
    assert rollback["rollbackInfo"]["rollbackTriggeringDeploymentId"] == bad
    assert rollback["creator"] == "codeDeployRollback"
    assert rollback["revision"] == REV["v15"]
    assert rollback["status"] == "InProgress"
    in_flight = cd.list_deployments(
        applicationName="checkout", deploymentGroupName="prod", includeOnlyStatuses=["InProgress"]
    )["deployments"]
    assert in_flight == [rollback_id]
    clock.at += timedelta(seconds=codedeploy_deployments.ROLLBACK_SECONDS)
    assert info(cd, rollback_id)["status"] == "Succeeded"


def test_a_stop_can_answer_pending_and_happen_later_with_its_rollback(cd, clock):
    good = create(cd, "v15")
    codedeploy_deployments.advance(good, "Succeeded")
    bad = create(cd, "v16")
    codedeploy_deployments.answer_stops_pending(60)
    answer = cd.stop_deployment(deploymentId=bad, autoRollbackEnabled=True)
    assert answer["status"] == "Pending"
    assert info(cd, bad)["status"] == "InProgress" and "rollbackInfo" not in info(cd, bad)
    assert cd.stop_deployment(deploymentId=bad, autoRollbackEnabled=True)["status"] == "Pending"  # nothing new
    clock.at += timedelta(seconds=60)
    stopped = info(cd, bad)
    assert stopped["status"] == "Stopped" and stopped["completeTime"] == T0 + timedelta(seconds=60)
    (rollback,) = cd.list_deployments(
        applicationName="checkout", deploymentGroupName="prod", includeOnlyStatuses=["InProgress"]
    )["deployments"]
    assert stopped["rollbackInfo"]["rollbackDeploymentId"] == rollback
    assert info(cd, rollback)["revision"] == REV["v15"]
    codedeploy_deployments.answer_stops_pending(None)
    other = create(cd, "v16")
    assert cd.stop_deployment(deploymentId=other, autoRollbackEnabled=False)["status"] == "Succeeded"


def test_a_finished_deployment_cannot_be_stopped(cd, clock):
    deployment_id = create(cd, "v16")
    codedeploy_deployments.advance(deployment_id, "Succeeded")
    with pytest.raises(ClientError) as done:
        cd.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=True)
    assert code(done) == "DeploymentAlreadyCompletedException"
    assert info(cd, deployment_id)["status"] == "Succeeded"


def test_stop_without_rollback_or_without_a_good_revision_creates_no_rollback(cd, clock):
    first = create(cd, "v16")
    answer = cd.stop_deployment(deploymentId=first, autoRollbackEnabled=True)
    assert "No previous successful revision" in answer["statusMessage"]
    assert "rollbackInfo" not in info(cd, first)
    good = create(cd, "v15")
    codedeploy_deployments.advance(good, "Succeeded")
    plain = create(cd, "v16")
    cd.stop_deployment(deploymentId=plain, autoRollbackEnabled=False)
    assert "rollbackInfo" not in info(cd, plain)
    assert len(cd.list_deployments(applicationName="checkout", deploymentGroupName="prod")["deployments"]) == 3


def test_stop_errors_follow_the_api_reference(cd):
    with pytest.raises(ClientError) as unknown:
        cd.stop_deployment(deploymentId="d-NOTHERE00")
    assert code(unknown) == "DeploymentDoesNotExistException"
    with pytest.raises(ClientError) as required:
        cd.stop_deployment(deploymentId="")
    assert code(required) in ("DeploymentIdRequiredException", "ValidationException")


def test_the_group_shows_its_alarm_configuration_and_last_deployments(cd, clock):
    first = create(cd, "v15")
    codedeploy_deployments.advance(first, "Succeeded")
    clock.at = T0 + timedelta(minutes=1)
    second = create(cd, "v16")
    group = cd.get_deployment_group(applicationName="checkout", deploymentGroupName="prod")["deploymentGroupInfo"]
    assert group["alarmConfiguration"]["alarms"] == [{"name": "checkout-errors"}, {"name": "checkout-p99"}]
    assert group["lastSuccessfulDeployment"]["deploymentId"] == first
    assert group["lastAttemptedDeployment"]["deploymentId"] == second
    batch = cd.batch_get_deployment_groups(applicationName="checkout", deploymentGroupNames=["prod", "nope"])
    assert [g["deploymentGroupName"] for g in batch["deploymentGroupsInfo"]] == ["prod"]
    assert "nope" in batch["errorMessage"]


def test_list_deployments_filters_by_status_and_create_time(cd, clock):
    old = create(cd, "v14")
    codedeploy_deployments.advance(old, "Succeeded")
    clock.at = T0 + timedelta(hours=2)
    new = create(cd, "v16")
    listed = cd.list_deployments(
        applicationName="checkout", deploymentGroupName="prod", createTimeRange={"start": T0 + timedelta(hours=1)}
    )["deployments"]
    assert listed == [new]
    done = cd.list_deployments(
        applicationName="checkout", deploymentGroupName="prod", includeOnlyStatuses=["Succeeded"]
    )["deployments"]
    assert done == [old]
    with pytest.raises(ClientError) as half:
        cd.list_deployments(applicationName="checkout")
    assert code(half) == "DeploymentGroupNameRequiredException"


def test_advance_and_state_change_events(cd, clock):
    deployment_id = create(cd, "v16")
    event = codedeploy_deployments.state_change_event(deployment_id)
    assert event["detail-type"] == "CodeDeploy Deployment State-change Notification"
    assert event["detail"] | {"instanceGroupId": "-"} == {
        "region": "us-east-1",
        "deploymentId": deployment_id,
        "instanceGroupId": "-",
        "deploymentGroup": "prod",
        "state": "START",
        "application": "checkout",
    }
    codedeploy_deployments.advance(deployment_id, "Failed")
    assert codedeploy_deployments.state_change_event(deployment_id)["detail"]["state"] == "FAILURE"
    with pytest.raises(ValueError, match="already finished"):
        codedeploy_deployments.advance(deployment_id, "Succeeded")


def test_stop_deployment_is_recorded_in_the_trail(aws, cd, clock):
    deployment_id = create(cd, "v16")
    cd.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=True)
    records = [r for r in aws.trail.records() if r["eventName"] == "StopDeployment"]
    assert len(records) == 1
    assert records[0]["requestParameters"]["deploymentId"] == deployment_id


# -- the guard's adapter against it ----------------------------------------------------------------------
def test_the_guard_adapter_finds_reads_stops_and_redeploys(cd, clock):
    adapter = CodeDeployGuard(cd)
    good = create(cd, "v15")
    codedeploy_deployments.advance(good, "Succeeded")
    bad = create(cd, "v16", description="checkout v16 (CHG-2002)")
    (group,) = adapter.groups_watching("checkout-p99")
    assert (group.application, group.group, group.alarms_enabled) == ("checkout", "prod", True)
    assert adapter.groups_watching("unrelated") == []
    (in_flight,) = adapter.list_in_flight("checkout", "prod") or []
    assert in_flight.deployment_id == bad and in_flight.previous_revision == REV["v15"]
    # A group or application this account and region do not have: None, not an error (the health
    # sweep asks every account-region it visits), and not an empty group either.
    assert adapter.list_in_flight("inventory", "prod") is None
    assert adapter.list_in_flight("checkout", "canary") is None
    assert in_flight.start_time == T0 and in_flight.start_time.tzinfo is not None
    result = adapter.stop(bad)
    assert not result.already_completed
    stopped = adapter.get_deployment(bad)
    assert stopped is not None and stopped.status == "Stopped" and stopped.rollback_deployment_id
    assert adapter.stop(bad).already_completed  # stopping a finished deployment counts as done
    rollback = adapter.get_deployment(stopped.rollback_deployment_id)
    assert rollback is not None and rollback.rolled_back_from == bad and rollback.creator == "codeDeployRollback"
    recent = {d.deployment_id for d in adapter.list_recent("checkout", "prod", T0 - timedelta(minutes=1))}
    assert recent == {good, bad, stopped.rollback_deployment_id}
    new = adapter.redeploy("checkout", "prod", REV["v15"], "ChangeGuard rollback of x")
    assert adapter.get_deployment(new).revision == REV["v15"]  # type: ignore[union-attr]
    assert adapter.get_deployment("d-NOTHERE00") is None
    group_arn = "arn:aws:codedeploy:us-east-1:123456789012:deploymentgroup:checkout/prod"
    assert adapter.tags_of(group_arn) == {"ChangeTicket": "CHG-2001"}
