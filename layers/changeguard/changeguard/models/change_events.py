"""Deployment and change-window events: CodeDeploy, CodePipeline, SSM Change Calendar, CodeDeploy hooks.

AWS owns every one of these payloads, so unknown fields are ignored, never rejected.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from changeguard.models.cloudtrail import OptionalRegion
from changeguard.models.envelope import Envelope

CODEDEPLOY_STATE_CHANGE = "CodeDeploy Deployment State-change Notification"
PIPELINE_EXECUTION_STATE_CHANGE = "CodePipeline Pipeline Execution State Change"
CALENDAR_STATE_CHANGE = "Calendar State Change"


class _AwsOwned(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore", populate_by_name=True)


class CodeDeployStateChangeDetail(_AwsOwned):
    deploymentId: str = Field(min_length=1)
    state: str
    application: str | None = None
    deploymentGroup: str | None = None
    instanceGroupId: str | None = None
    region: OptionalRegion = None


class CodeDeployStateChangeEvent(Envelope):
    """ "CodeDeploy Deployment State-change Notification" (START, SUCCESS, FAILURE, STOP, READY)."""

    detail: CodeDeployStateChangeDetail  # type: ignore[assignment]


class ExecutionTrigger(_AwsOwned):
    trigger_type: str | None = Field(default=None, alias="trigger-type")
    trigger_detail: str | None = Field(default=None, alias="trigger-detail")


class PipelineExecutionStateChangeDetail(_AwsOwned):
    pipeline: str = Field(min_length=1)
    execution_id: str = Field(alias="execution-id", min_length=1)
    state: str
    version: float | None = None
    execution_trigger: ExecutionTrigger | None = Field(default=None, alias="execution-trigger")
    #: 1 for the execution's start; each retry of a failed stage (RESUMED) counts one more.
    attempt: float | None = Field(default=None, alias="pipeline-execution-attempt")


class PipelineExecutionStateChangeEvent(Envelope):
    """ "CodePipeline Pipeline Execution State Change" (STARTED, RESUMED, SUCCEEDED, FAILED, STOPPED, ...).

    RESUMED: a failed stage was retried (``RetryStageExecution``), and the execution runs again.
    """

    detail: PipelineExecutionStateChangeDetail  # type: ignore[assignment]


class CalendarStateChangeDetail(_AwsOwned):
    state: str
    atTime: datetime | None = None
    nextTransitionTime: datetime | None = None


class CalendarStateChangeEvent(Envelope):
    """SSM "Calendar State Change": ``resources`` holds the calendar's document ARN.

    ``detail.atTime`` is when the state changed; it can differ from the envelope ``time``.
    """

    detail: CalendarStateChangeDetail  # type: ignore[assignment]


class LifecycleHookInvocation(_AwsOwned):
    """What CodeDeploy sends a lifecycle-hook function (AppSpec ``hooks``), invoked directly."""

    DeploymentId: str = Field(min_length=1)
    LifecycleEventHookExecutionId: str = Field(min_length=1)
