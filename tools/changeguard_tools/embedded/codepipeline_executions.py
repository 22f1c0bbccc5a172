"""CodePipeline executions that run until stopped, and ``StopPipelineExecution``, which moto lacks.

moto starts an execution and marks it ``Succeeded`` at once (it runs no actions). In AWS an execution
is ``InProgress`` until its stages finish, and that is the window in which ChangeGuard's change
gate stops it. So here a started execution stays ``InProgress`` until it is stopped, or until a test
or fixture finishes it with :func:`finish_execution`.

``StopPipelineExecution`` follows the API reference:

* ``abandon=true`` stops at once (``Stopped``); without it the execution is ``Stopping`` (it would
  wait for in-progress actions, of which the embedded AWS runs none) and stays so until stopped again
  with ``abandon`` or finished with :func:`finish_execution`.
* Stopping an execution that is no longer in progress raises ``PipelineExecutionNotStoppableException``;
  a second stop-and-wait of a ``Stopping`` execution raises ``DuplicatedStopRequestException``.
* ``reason`` (at most 200 characters) becomes the execution's ``statusSummary`` and, in
  ``ListPipelineExecutions``, its ``stopTrigger``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from moto.codepipeline.models import CodePipelineBackend, PipelineExecution, codepipeline_backends
from moto.codepipeline.responses import CodePipelineResponse
from moto.core.exceptions import JsonRESTError
from moto.core.utils import utcnow

from changeguard_tools.embedded.extensions import installer, operation, wrap_method

__all__ = ["IN_PROGRESS", "create_pipeline", "finish_execution", "patch", "stop_pipeline_execution"]

IN_PROGRESS = "InProgress"
STOPPING = "Stopping"
STOPPED = "Stopped"
REASON_MAX = 200
_STOP_REASON = "changeguard_stop_reason"


def _error(code: str, message: str) -> JsonRESTError:
    return JsonRESTError(code, message)


def _start_in_progress(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def start_pipeline_execution(self: CodePipelineBackend, *args: Any, **kwargs: Any) -> str:
        execution_id = str(original(self, *args, **kwargs))
        name = args[0] if args else kwargs["name"]
        execution = self.pipelines[name].executions[execution_id]
        execution.status = IN_PROGRESS
        return execution_id

    return start_pipeline_execution


def _with_stop_trigger(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def to_summary_dict(self: PipelineExecution) -> dict[str, Any]:
        body: dict[str, Any] = original(self)
        reason = getattr(self, _STOP_REASON, None)
        if reason is not None:
            body["stopTrigger"] = {"reason": reason}
        return body

    return to_summary_dict


@installer
def patch() -> None:
    """Started executions stay ``InProgress``; ``ListPipelineExecutions`` shows the stop trigger."""
    wrap_method(CodePipelineBackend, "start_pipeline_execution", _start_in_progress)
    wrap_method(PipelineExecution, "to_summary_dict", _with_stop_trigger)


def _execution(backend: CodePipelineBackend, pipeline: str, execution_id: str) -> PipelineExecution:
    found: PipelineExecution = backend.get_pipeline_execution(pipeline, execution_id)
    return found


@operation(CodePipelineResponse, "StopPipelineExecution")
def stop_pipeline_execution(self: Any) -> str:
    """``StopPipelineExecution(pipelineName, pipelineExecutionId, abandon, reason)``."""
    params = json.loads(self.body or "{}")
    pipeline = params.get("pipelineName")
    execution_id = params.get("pipelineExecutionId")
    if not pipeline or not execution_id:
        raise _error("ValidationException", "pipelineName and pipelineExecutionId are required.")
    reason = params.get("reason")
    if reason is not None and len(str(reason)) > REASON_MAX:
        raise _error("ValidationException", f"reason must be at most {REASON_MAX} characters.")
    abandon = bool(params.get("abandon", False))
    execution = _execution(self.codepipeline_backend, str(pipeline), str(execution_id))
    if execution.status == STOPPING and not abandon:
        raise _error(
            "DuplicatedStopRequestException",
            "The pipeline execution is already in a Stopping state. If you already chose to stop and wait,"
            " you cannot make that request again. You can choose to stop and abandon now.",
        )
    if execution.status not in (IN_PROGRESS, STOPPING):
        raise _error(
            "PipelineExecutionNotStoppableException",
            "Unable to stop the pipeline execution. The execution might already be in a Stopped state,"
            " or it might no longer be in progress.",
        )
    execution.status = STOPPED if abandon else STOPPING
    execution.status_summary = str(reason) if reason is not None else execution.status_summary
    execution.last_update_time = utcnow()
    setattr(execution, _STOP_REASON, str(reason or ""))
    return json.dumps({"pipelineExecutionId": execution.pipeline_execution_id})


def finish_execution(account_id: str, region: str, pipeline: str, execution_id: str, status: str = "Succeeded") -> None:
    """End an execution as its stages would (``Succeeded``, ``Failed`` or, after a stop, ``Stopped``)."""
    execution = _execution(codepipeline_backends[account_id][region], pipeline, execution_id)
    execution.status = status
    execution.last_update_time = utcnow()


_TRUST = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
    '"Principal":{"Service":"codepipeline.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
)


def create_pipeline(iam: Any, codepipeline: Any, name: str, application: str = "app", group: str = "prod") -> str:
    """A two-stage pipeline (S3 source, CodeDeploy deploy) and the role moto insists on; returns its name.

    For tests and fixtures: ``iam`` and ``codepipeline`` are boto3 clients of the embedded AWS.
    """
    role = iam.create_role(RoleName=f"{name}-pipeline-role"[:64], AssumeRolePolicyDocument=_TRUST)["Role"]["Arn"]
    codepipeline.create_pipeline(
        pipeline={
            "name": name,
            "roleArn": role,
            "artifactStore": {"type": "S3", "location": "changeguard-pipeline-artifacts"},
            "stages": [
                {
                    "name": "Source",
                    "actions": [
                        {
                            "name": "Source",
                            "actionTypeId": {"category": "Source", "owner": "AWS", "provider": "S3", "version": "1"},
                            "outputArtifacts": [{"name": "src"}],
                            "configuration": {"S3Bucket": "changeguard-sources", "S3ObjectKey": f"{name}.zip"},
                        }
                    ],
                },
                {
                    "name": "Deploy",
                    "actions": [
                        {
                            "name": "Deploy",
                            "actionTypeId": {
                                "category": "Deploy",
                                "owner": "AWS",
                                "provider": "CodeDeploy",
                                "version": "1",
                            },
                            "inputArtifacts": [{"name": "src"}],
                            "configuration": {"ApplicationName": application, "DeploymentGroupName": group},
                        }
                    ],
                },
            ],
        }
    )
    return name
