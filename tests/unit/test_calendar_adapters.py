"""The gate's adapters against the embedded AWS: CodeDeploy, CodePipeline, CloudFormation, SSM calendars."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from changeguard.adapters.cloudformation import CloudFormationStacks
from changeguard.adapters.codedeploy import CodeDeployDeployments
from changeguard.adapters.codepipeline import CodePipelineExecutions
from changeguard.adapters.ssm import SsmChangeCalendar
from changeguard.domain.calendar import CalendarState
from changeguard_tools.embedded import (
    EmbeddedAWS,
    cloudformation_cancel,
    codedeploy_deployments,
    codedeploy_hooks,
    codepipeline_executions,
)

REGION = "us-east-1"
TEMPLATE = '{"Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}'
NEW_TEMPLATE = '{"Resources": {"Handle2": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}'
WINDOW = "\r\n".join(
    [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//test//EN",
        "X-CALENDAR-TYPE:DEFAULT_CLOSED",
        "BEGIN:VEVENT",
        "UID:w",
        "DTSTAMP:20260101T000000Z",
        "DTSTART:20261107T020000Z",
        "DTEND:20261107T060000Z",
        "RRULE:FREQ=WEEKLY;BYDAY=SA",
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
)


def codedeploy_group(aws: EmbeddedAWS, platform: str = "Server") -> Any:
    role = aws.client("iam").create_role(
        RoleName="codedeploy-service",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "codedeploy.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    cd = aws.client("codedeploy")
    cd.create_application(applicationName="checkout-api", computePlatform=platform)
    cd.create_deployment_group(applicationName="checkout-api", deploymentGroupName="prod", serviceRoleArn=role)
    return cd


def seed(deployment_id: str, *timeline: tuple[datetime, str], description: str | None = None) -> str:
    return codedeploy_deployments.create_deployment(
        "checkout-api",
        "prod",
        {
            "revisionType": "S3",
            "s3Location": {"bucket": "acme-builds", "key": f"{deployment_id}.zip", "bundleType": "zip"},
        },
        deployment_id=deployment_id,
        description=description,
        created=timeline[0][0] if timeline else None,
        timeline=timeline,
    )


# -- CodeDeploy ---------------------------------------------------------------------------------------
def test_a_deployment_is_read_and_stopped_with_a_rollback(aws: EmbeddedAWS) -> None:
    codedeploy_group(aws)
    t0 = datetime.now(UTC) - timedelta(hours=2)
    seed("d-G00D00001", (t0, "InProgress"), (t0 + timedelta(minutes=5), "Succeeded"))
    seed("d-4UTS1DE01", (t0 + timedelta(hours=1), "InProgress"), description="CHG-2001 release")
    adapter = CodeDeployDeployments(aws.client("codedeploy"))

    facts = adapter.get("d-4UTS1DE01")
    result = adapter.stop("d-4UTS1DE01")

    assert facts is not None and facts.status == "InProgress" and facts.description == "CHG-2001 release"
    assert not facts.target().rollback
    assert not result.already_completed
    stopped = aws.client("codedeploy").get_deployment(deploymentId="d-4UTS1DE01")["deploymentInfo"]
    assert stopped["status"] == "Stopped"
    rollback_id = stopped["rollbackInfo"]["rollbackDeploymentId"]
    rollback = adapter.get(rollback_id)
    assert rollback is not None and rollback.rollback_of == "d-4UTS1DE01"
    assert rollback.target().rollback


def test_stopping_a_finished_deployment_counts_as_done(aws: EmbeddedAWS) -> None:
    codedeploy_group(aws)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    seed("d-D0NE00001", (t0, "InProgress"), (t0 + timedelta(minutes=5), "Succeeded"))

    result = CodeDeployDeployments(aws.client("codedeploy")).stop("d-D0NE00001")

    assert result.already_completed
    assert "already completed" in result.describe()


def test_an_unknown_deployment_reads_as_none(aws: EmbeddedAWS) -> None:
    codedeploy_group(aws)

    assert CodeDeployDeployments(aws.client("codedeploy")).get("d-N0NE00001") is None


def test_a_hook_result_is_reported_once_and_failed_fails_the_deployment(aws: EmbeddedAWS) -> None:
    codedeploy_group(aws, platform="Lambda")
    seed("d-H00KGATE1", (datetime.now(UTC) - timedelta(minutes=1), "InProgress"))
    execution_id = codedeploy_hooks.start_hook(aws.account_id, REGION, "d-H00KGATE1", "BeforeAllowTraffic")
    adapter = CodeDeployDeployments(aws.client("codedeploy"))

    first = adapter.put_hook_status("d-H00KGATE1", execution_id, "Failed")
    again = adapter.put_hook_status("d-H00KGATE1", execution_id, "Failed")

    assert first and not again
    assert codedeploy_hooks.hook_status(aws.account_id, REGION, execution_id) == "Failed"
    assert adapter.get("d-H00KGATE1").status == "Failed"  # type: ignore[union-attr]


def test_hooks_are_for_lambda_and_ecs_deployments_only(aws: EmbeddedAWS) -> None:
    from botocore.exceptions import ClientError

    codedeploy_group(aws, platform="Server")
    seed("d-EC2000001", (datetime.now(UTC) - timedelta(minutes=1), "InProgress"))
    execution_id = codedeploy_hooks.start_hook(aws.account_id, REGION, "d-EC2000001")

    with pytest.raises(ClientError) as refused:
        CodeDeployDeployments(aws.client("codedeploy")).put_hook_status("d-EC2000001", execution_id, "Succeeded")

    assert refused.value.response["Error"]["Code"] == "UnsupportedActionForDeploymentTypeException"


# -- CodePipeline -------------------------------------------------------------------------------------
def test_a_pipeline_execution_is_read_and_abandoned_once(aws: EmbeddedAWS) -> None:
    cp = aws.client("codepipeline")
    codepipeline_executions.create_pipeline(aws.client("iam"), cp, "checkout-pipeline", "checkout-api", "prod")
    execution_id = cp.start_pipeline_execution(
        name="checkout-pipeline", variables=[{"name": "ChangeTicket", "value": "CHG-2001"}]
    )["pipelineExecutionId"]
    adapter = CodePipelineExecutions(cp)

    facts = adapter.get("checkout-pipeline", execution_id)
    first = adapter.stop("checkout-pipeline", execution_id, "ChangeGuard: closed " + "x" * 300)
    second = adapter.stop("checkout-pipeline", execution_id, "again")

    assert facts is not None and facts.status == "InProgress" and facts.variables == {"ChangeTicket": "CHG-2001"}
    assert "accepted" in first.describe() and not first.already_completed
    assert "nothing to stop" in second.describe() and second.already_completed
    assert adapter.get("checkout-pipeline", execution_id).status == "Stopped"  # type: ignore[union-attr]
    assert adapter.get("checkout-pipeline", "3f9b6c2a-1d4e-4a5b-9c8d-7e6f5a4b3c21") is None


# -- CloudFormation -----------------------------------------------------------------------------------
def test_a_stack_update_in_progress_is_cancelled_and_rolled_back(aws: EmbeddedAWS) -> None:
    cfn = aws.client("cloudformation")
    cfn.create_stack(
        StackName="checkout-service", TemplateBody=TEMPLATE, Tags=[{"Key": "ChangeTicket", "Value": "CHG-9"}]
    )
    cloudformation_cancel.hold_updates(aws.account_id, REGION, "checkout-service")
    cfn.update_stack(StackName="checkout-service", TemplateBody=NEW_TEMPLATE)
    adapter = CloudFormationStacks(cfn)

    facts = adapter.get("checkout-service")
    answer = adapter.cancel_update(facts.stack_id)  # type: ignore[union-attr]

    assert facts is not None and facts.status == "UPDATE_IN_PROGRESS" and facts.tags == {"ChangeTicket": "CHG-9"}
    assert facts.target(datetime.now(UTC)).in_progress
    assert "rolls back" in answer.describe() and not answer.already_completed
    assert adapter.get("checkout-service").status == "UPDATE_ROLLBACK_COMPLETE"  # type: ignore[union-attr]
    events = [e["ResourceStatus"] for e in cfn.describe_stack_events(StackName="checkout-service")["StackEvents"]]
    assert "UPDATE_ROLLBACK_COMPLETE" in events


def test_a_stack_says_when_its_update_started_and_with_which_change_set(aws: EmbeddedAWS) -> None:
    """DescribeStacks' LastUpdatedTime (only once updated) and ChangeSetId, which tell one update from a later one."""
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName="checkout-service", TemplateBody=TEMPLATE)
    adapter = CloudFormationStacks(cfn)
    created = adapter.get("checkout-service")
    cloudformation_cancel.hold_updates(aws.account_id, REGION, "checkout-service")
    before = datetime.now(UTC)
    cfn.update_stack(StackName="checkout-service", TemplateBody=NEW_TEMPLATE)
    updating = adapter.get("checkout-service")
    cloudformation_cancel.finish_update(aws.account_id, REGION, "checkout-service")
    finished = adapter.get("checkout-service")
    change_set = cfn.create_change_set(
        StackName="checkout-service", ChangeSetName="release-15", TemplateBody=TEMPLATE, ChangeSetType="UPDATE"
    )
    cfn.execute_change_set(StackName="checkout-service", ChangeSetName="release-15")
    executed = adapter.get("checkout-service")

    assert created is not None and created.last_updated is None and created.change_set_id is None
    assert updating is not None and updating.last_updated is not None and updating.last_updated >= before
    assert finished is not None and finished.last_updated == updating.last_updated  # when it started, not ended
    assert executed is not None and executed.change_set_id == change_set["Id"]
    assert executed.last_updated is not None and executed.last_updated > updating.last_updated


def test_cancelling_an_update_that_already_finished_is_reported_not_raised(aws: EmbeddedAWS) -> None:
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName="checkout-service", TemplateBody=TEMPLATE)
    cfn.update_stack(StackName="checkout-service", TemplateBody=NEW_TEMPLATE)

    answer = CloudFormationStacks(cfn).cancel_update("checkout-service")

    assert "finished before it could be cancelled (UPDATE_COMPLETE)" in answer.describe()
    assert answer.already_completed  # the gate must not say it cancelled anything


def test_a_missing_stack_reads_as_none_and_a_change_set_names_its_stack(aws: EmbeddedAWS) -> None:
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName="checkout-service", TemplateBody=TEMPLATE)
    change_set = cfn.create_change_set(
        StackName="checkout-service", ChangeSetName="release-15", TemplateBody=NEW_TEMPLATE
    )
    adapter = CloudFormationStacks(cfn)

    assert adapter.get("no-such-stack") is None
    assert adapter.stack_of_change_set(change_set["Id"]) == change_set["StackId"]
    assert adapter.stack_of_change_set("arn:aws:cloudformation:us-east-1:123456789012:changeSet/x/0") is None


# -- SSM Change Calendar ------------------------------------------------------------------------------
def test_the_calendar_reading_has_the_state_and_the_next_opening(aws: EmbeddedAWS) -> None:
    ssm = aws.client("ssm")
    ssm.create_document(Name="prod-window", Content=WINDOW, DocumentType="ChangeCalendar", DocumentFormat="TEXT")
    calendar = SsmChangeCalendar(("prod-window",), ssm)

    closed = calendar.reading_at(datetime(2026, 11, 21, 9, 15, tzinfo=UTC))
    opened = calendar.reading_at(datetime(2026, 11, 21, 3, 0, tzinfo=UTC))

    assert closed.state is CalendarState.CLOSED
    assert closed.next_opening == datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert opened.state is CalendarState.OPEN and opened.next_opening is None
    assert opened.next_transition == datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def test_a_missing_calendar_reads_as_unknown_never_an_error(aws: EmbeddedAWS) -> None:
    reading = SsmChangeCalendar(("no-such-calendar",), aws.client("ssm")).reading_at(datetime(2026, 11, 21, tzinfo=UTC))

    assert reading.state is CalendarState.UNKNOWN
    assert "InvalidDocument" in (reading.error or "")


def test_cached_states_expire_so_an_edited_calendar_takes_effect(aws: EmbeddedAWS) -> None:
    ssm = aws.client("ssm")
    ssm.create_document(Name="prod-window", Content=WINDOW, DocumentType="ChangeCalendar", DocumentFormat="TEXT")
    calendar = SsmChangeCalendar(("prod-window",), ssm, max_age_seconds=0)
    at = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
    assert calendar.reading_at(at).state is CalendarState.OPEN

    ssm.delete_document(Name="prod-window")

    assert calendar.reading_at(at).state is CalendarState.UNKNOWN
