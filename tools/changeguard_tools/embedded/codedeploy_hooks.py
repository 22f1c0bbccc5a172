"""CodeDeploy lifecycle-event hooks and ``PutLifecycleEventHookExecutionStatus``, which moto lacks.

During a Lambda or ECS deployment CodeDeploy invokes each hook function of the AppSpec ``hooks``
section with ``{"DeploymentId", "LifecycleEventHookExecutionId"}`` and waits (up to an hour) for the
function to report ``Succeeded`` or ``Failed`` with ``PutLifecycleEventHookExecutionStatus``. A
failed hook fails the deployment.

The embedded AWS runs no hooks by itself: a test or fixture opens one with :func:`start_hook` (what
CodeDeploy does before invoking the function) and reads the result with :func:`hook_status`. The
operation follows the API reference:

* the deployment must exist (``DeploymentDoesNotExistException``) and belong to a Lambda or ECS
  application (``UnsupportedActionForDeploymentTypeException``);
* the hook execution must be one of that deployment's (``InvalidLifecycleEventHookExecutionIdException``);
* only ``Succeeded`` and ``Failed`` may be reported (``InvalidLifecycleEventHookExecutionStatusException``),
  once (``LifecycleEventAlreadyCompletedException``);
* ``Failed`` fails a deployment still in progress (status ``Failed``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from moto.codedeploy.models import CodeDeployBackend, codedeploy_backends
from moto.codedeploy.responses import CodeDeployResponse
from moto.core.exceptions import JsonRESTError
from moto.core.utils import utcnow

from changeguard_tools.embedded.extensions import backend_state, operation

__all__ = ["HookExecution", "hook_status", "put_lifecycle_event_hook_execution_status", "start_hook"]

HOOK_PLATFORMS = ("Lambda", "ECS")
REPORTABLE = ("Succeeded", "Failed")
_FINISHED_DEPLOYMENT = ("Succeeded", "Failed", "Stopped")


@dataclass
class HookExecution:
    """One invocation of a hook function for one lifecycle event of one deployment."""

    deployment_id: str
    lifecycle_event: str
    status: str = "Pending"


def _hooks(backend: CodeDeployBackend) -> dict[str, HookExecution]:
    hooks: dict[str, HookExecution] = backend_state(backend, "lifecycle_hooks", dict)
    return hooks


def _error(code: str, message: str) -> JsonRESTError:
    return JsonRESTError(code, message)


def start_hook(account_id: str, region: str, deployment_id: str, lifecycle_event: str = "BeforeAllowTraffic") -> str:
    """Open a hook execution for ``deployment_id`` (as CodeDeploy does before invoking the hook)."""
    backend: CodeDeployBackend = codedeploy_backends[account_id][region]
    backend.get_deployment(deployment_id)  # DeploymentDoesNotExistException when unknown
    execution_id = "eyJkZXBsb3ltZW50SWQiOi" + uuid.uuid4().hex  # opaque, like AWS's
    _hooks(backend)[execution_id] = HookExecution(deployment_id, lifecycle_event, "InProgress")
    return execution_id


def hook_status(account_id: str, region: str, execution_id: str) -> str:
    """What the hook function reported (``InProgress`` until it reports)."""
    return _hooks(codedeploy_backends[account_id][region])[execution_id].status


def _fail(account_id: str, region: str, deployment: Any) -> None:
    """A failed hook fails the deployment: through the deployment state machine when it is installed."""
    try:
        from changeguard_tools.embedded import codedeploy_deployments
    except ImportError:  # the state machine is optional; plain moto deployments just change status
        deployment.status = "Failed"
        deployment.complete_time = utcnow()
        return
    codedeploy_deployments.advance(deployment.deployment_id, "Failed", account_id=account_id, region=region)


@operation(CodeDeployResponse, "PutLifecycleEventHookExecutionStatus")
def put_lifecycle_event_hook_execution_status(self: Any) -> str:
    """Record a hook function's verdict; ``Failed`` fails the deployment."""
    params = json.loads(self.body or "{}")
    deployment_id = params.get("deploymentId")
    execution_id = params.get("lifecycleEventHookExecutionId")
    status = params.get("status")
    if not deployment_id:
        raise _error("DeploymentIdRequiredException", "At least one deployment ID must be specified.")
    backend: CodeDeployBackend = self.codedeploy_backend
    deployment = backend.get_deployment(str(deployment_id))
    if deployment.application.compute_platform not in HOOK_PLATFORMS:
        raise _error(
            "UnsupportedActionForDeploymentTypeException",
            "This action is only supported for deployments on the AWS Lambda or Amazon ECS compute platforms.",
        )
    hook = _hooks(backend).get(str(execution_id or ""))
    if hook is None or hook.deployment_id != deployment_id:
        raise _error(
            "InvalidLifecycleEventHookExecutionIdException",
            f"The lifecycle event hook execution ID {execution_id} is not valid for deployment {deployment_id}.",
        )
    if status not in REPORTABLE:
        raise _error(
            "InvalidLifecycleEventHookExecutionStatusException",
            f"The status {status} is not valid: a hook function reports Succeeded or Failed.",
        )
    if hook.status in REPORTABLE:
        raise _error(
            "LifecycleEventAlreadyCompletedException",
            f"The lifecycle event {hook.lifecycle_event} of deployment {deployment_id} has already completed.",
        )
    hook.status = str(status)
    if status == "Failed" and deployment.status not in _FINISHED_DEPLOYMENT:
        _fail(self.current_account, self.region, deployment)
    return json.dumps({"lifecycleEventHookExecutionId": execution_id})
