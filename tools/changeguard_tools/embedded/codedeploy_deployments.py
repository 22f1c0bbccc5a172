"""CodeDeploy deployments that progress through their states, ``StopDeployment``, automatic rollback.

moto creates a deployment in status ``Created`` and leaves it there: it has no ``StopDeployment``,
returns ``rollbackInfo``, ``previousRevision`` and a group's ``alarmConfiguration`` empty, and
ids are UUIDs. The deployment guard needs a CodeDeploy that behaves as the API reference says, so
this module adds and replaces:

* **Ids and creation.** ``CreateDeployment`` (replaced) gives AWS-shaped ids (``d-`` and nine
  characters), stamps ``createTime`` from :func:`now`, records ``previousRevision`` (the revision
  of the group's last successful deployment at creation time) and starts the deployment at once:
  ``Created`` then ``InProgress``. It stays in progress until something moves it (below).
* **States.** ``Created`` -> ``InProgress`` -> ``Succeeded`` | ``Failed`` | ``Stopped``.
  ``startTime`` is set on entering ``InProgress``, ``completeTime`` on finishing.
  ``GetDeployment``, ``BatchGetDeployments``, ``ListDeployments`` (replaced: ``includeOnlyStatuses``,
  ``createTimeRange``, newest first) and ``GetDeploymentGroup`` (``lastSuccessfulDeployment``,
  ``lastAttemptedDeployment``) reflect them.
* **StopDeployment(deploymentId, autoRollbackEnabled)** (added). On a finished deployment it raises
  ``DeploymentAlreadyCompletedException``. Otherwise the deployment ends ``Stopped`` at once and
  the answer is ``status: Succeeded``. With ``autoRollbackEnabled`` a rollback deployment of the
  group's last successful revision is created: a new id, ``creator: codeDeployRollback`` (the
  ``DeploymentCreator`` value the API documents for "a rollback process created the
  deployment"), ``rollbackInfo.rollbackTriggeringDeploymentId`` naming the stopped deployment,
  whose own ``rollbackInfo.rollbackDeploymentId`` names the rollback. A group with no successful
  deployment has nothing to roll back to: the stop happens, the message says so. A rollback
  deployment runs for :data:`ROLLBACK_SECONDS` (on :func:`now`'s clock), then succeeds.
  The API also documents the answer ``Pending`` ("the stop operation is pending"): after
  :func:`answer_stops_pending` the deployment stays in progress, the answer is ``status: Pending``,
  and the stop (with its rollback) happens the given number of seconds later; a second
  ``StopDeployment`` meanwhile answers ``Pending`` again and schedules nothing new.
* **GetDeploymentGroup** (replaced) and **BatchGetDeploymentGroups** (added, up to 100 groups of
  one application) return the ``alarmConfiguration`` the group was created with.

Driving deployments from tests and fixtures
-------------------------------------------
Everything runs on one clock, :func:`now`: the system clock, or the one given to :func:`use_clock`
(the demo gives the scenario clock). Progression is deterministic and happens only when asked:

* :func:`create_deployment` seeds a deployment with an explicit id and, optionally, a timeline of
  ``(time, status)`` transitions. A deployment whose ``created`` time is still in the future does
  not exist yet (it appears when the clock reaches it), so a scenario can seed its whole story
  up front and let ``clock`` steps play it.
* :func:`advance` moves a deployment to a status now (and drops what its timeline still had).
* :func:`answer_stops_pending` makes ``StopDeployment`` answer ``Pending`` and stop later.
* :func:`state_change_event` is the "CodeDeploy Deployment State-change Notification" EventBridge
  would deliver for a deployment's current state.

Time only moves forward for deployments: setting the clock back does not undo a transition
already applied. Due transitions are applied whenever a CodeDeploy request reaches moto's backend (the responses
class's backend property is wrapped) or a helper is called. The state lives on moto's CodeDeploy
backend (per account and region), so the embedded AWS's reset clears it; the clock is reset too.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.codedeploy.models import CodeDeployBackend, DeploymentInfo, codedeploy_backends
from moto.codedeploy.responses import CodeDeployResponse, _deployment_group_info, _deployment_info
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult

from changeguard_tools.embedded.extensions import backend_state, installer, on_reset, operation

__all__ = [
    "FINISHED",
    "IN_FLIGHT",
    "ROLLBACK_SECONDS",
    "advance",
    "answer_stops_pending",
    "create_deployment",
    "get",
    "now",
    "state_change_event",
    "use_clock",
]

#: How long (seconds on :func:`now`'s clock) a rollback deployment runs before it succeeds.
ROLLBACK_SECONDS = 300
FINISHED = frozenset({"Succeeded", "Failed", "Stopped"})
IN_FLIGHT = frozenset({"Created", "Queued", "InProgress", "Baking", "Ready"})
_STATUSES = FINISHED | IN_FLIGHT
_ROLLBACK_CREATOR = "codeDeployRollback"
#: The API's ``DeploymentCreator`` values. Those EC2 Auto Scaling and the auto-update make
#: (:data:`_EC2_CREATORS`) exist for Server (EC2) applications only; seed them with the group's
#: current revision, which is what AWS deploys to the new or outdated instances.
_CREATORS = frozenset(
    {
        "user",
        "autoscaling",
        "codeDeployRollback",
        "CodeDeploy",
        "CodeDeployAutoUpdate",
        "CloudFormation",
        "CloudFormationRollback",
        "autoscalingTermination",
    }
)
_EC2_CREATORS = frozenset({"autoscaling", "autoscalingTermination", "CodeDeployAutoUpdate"})
_EVENT_STATES = {
    "InProgress": "START",
    "Succeeded": "SUCCESS",
    "Failed": "FAILURE",
    "Stopped": "STOP",
    "Ready": "READY",
}

_lock = threading.RLock()
_clock: Callable[[], datetime] | None = None
_PATCHED = "__changeguard_caught_up__"


def use_clock(clock: Callable[[], datetime] | None) -> None:
    """Run CodeDeploy on ``clock`` (``None``: the system clock). Reset restores the system clock."""
    global _clock
    _clock = clock


def now() -> datetime:
    """The embedded CodeDeploy's current time (UTC)."""
    value = _clock() if _clock is not None else datetime.now(UTC)
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


@on_reset
def _reset_clock() -> None:
    use_clock(None)


@dataclass
class _Progress:
    """What moto's ``DeploymentInfo`` does not keep: the timeline and the links between deployments."""

    pending: list[tuple[datetime, str]] = field(default_factory=list)
    previous_revision: dict[str, Any] | None = None
    rollback_info: dict[str, str] = field(default_factory=dict)
    #: A ``StopDeployment`` answered ``Pending``: the ``Stopped`` step in ``pending`` is that stop,
    #: with an automatic rollback when ``stop_rollback``.
    stop_pending: bool = False
    stop_rollback: bool = False


def _progress(backend: CodeDeployBackend) -> dict[str, _Progress]:
    progress: dict[str, _Progress] = backend_state(backend, "deployment_progress", dict)
    return progress


def _scheduled(backend: CodeDeployBackend) -> list[DeploymentInfo]:
    scheduled: list[DeploymentInfo] = backend_state(backend, "scheduled_deployments", list)
    return scheduled


def _backend(account_id: str, region: str) -> CodeDeployBackend:
    backend: CodeDeployBackend = codedeploy_backends[account_id][region]
    return backend


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _new_id() -> str:
    return "d-" + uuid.uuid4().hex[:9].upper()


def _set_status(deployment: DeploymentInfo, status: str, at: datetime) -> None:
    deployment.status = status
    if status != "Created" and deployment.start_time is None:
        deployment.start_time = at
    if status in FINISHED:
        deployment.complete_time = at


def _last_succeeded(backend: CodeDeployBackend, application: str, group: str, *, exclude: str = "") -> Any:
    done = [
        d
        for d in backend.deployments.values()
        if d.application_name == application
        and d.deployment_group_name == group
        and d.status == "Succeeded"
        and d.deployment_id != exclude
        and d.complete_time is not None
    ]
    return max(done, key=lambda d: _utc(d.complete_time), default=None)


def _register(backend: CodeDeployBackend, deployment: DeploymentInfo) -> None:
    """The deployment comes into existence: it is listed, and its previous revision is fixed."""
    last = _last_succeeded(backend, deployment.application_name, deployment.deployment_group_name)
    progress = _progress(backend).setdefault(deployment.deployment_id, _Progress())
    if last is not None and progress.previous_revision is None:
        progress.previous_revision = last.revision
    backend.deployments[deployment.deployment_id] = deployment
    group = backend.deployment_groups[deployment.application_name][deployment.deployment_group_name]
    if group.tags:
        backend.tagger.tag_resource(backend._arn(f"deployment:{deployment.deployment_id}"), group.tags)


def catch_up(backend: CodeDeployBackend) -> None:
    """Apply every creation and transition that is due, in time order."""
    with _lock:
        at_now = now()
        scheduled = _scheduled(backend)
        progress = _progress(backend)
        while True:
            due: list[tuple[datetime, int, Callable[[], None]]] = []
            for d in scheduled:
                if _utc(d.create_time) <= at_now:

                    def appear(d: DeploymentInfo = d) -> None:
                        scheduled.remove(d)
                        _register(backend, d)

                    due.append((_utc(d.create_time), 0, appear))
            for deployment_id, p in progress.items():
                found = backend.deployments.get(deployment_id)
                if found is not None and p.pending and p.pending[0][0] <= at_now:
                    when, status = p.pending[0]

                    def apply(
                        p: _Progress = p, d: DeploymentInfo = found, when: datetime = when, s: str = status
                    ) -> None:
                        p.pending.pop(0)
                        if d.status in FINISHED:
                            return
                        if s == "Stopped" and p.stop_pending:
                            _stop(backend, d, when, auto_rollback=p.stop_rollback)
                        else:
                            _set_status(d, s, when)

                    due.append((when, 1, apply))
            if not due:
                return
            min(due, key=lambda item: (item[0], item[1]))[2]()


def _create(
    backend: CodeDeployBackend,
    application: str,
    group_name: str,
    revision: dict[str, Any] | None,
    *,
    deployment_id: str | None = None,
    description: str | None = None,
    creator: str = "user",
    created: datetime | None = None,
    timeline: Iterable[tuple[datetime, str]] = (),
    deployment_config_name: str | None = None,
    extra: dict[str, Any] | None = None,
) -> DeploymentInfo:
    if not group_name:
        raise JsonRESTError("DeploymentGroupNameRequiredException", "Deployment group name is required.")
    group = backend.get_deployment_group(application, group_name)  # raises if either is missing
    deployment_id = deployment_id or _new_id()
    if deployment_id in backend.deployments or any(d.deployment_id == deployment_id for d in _scheduled(backend)):
        raise ValueError(f"deployment {deployment_id} already exists")
    if creator not in _CREATORS:
        raise ValueError(f"unknown deployment creator {creator!r} (DeploymentCreator: {sorted(_CREATORS)})")
    platform = backend.applications[application].compute_platform
    if creator in _EC2_CREATORS and platform != "Server":
        raise ValueError(f"creator {creator!r} deploys to EC2 instances, and {application} is a {platform} application")
    options = extra or {}
    deployment = DeploymentInfo(
        backend.applications[application],
        group,
        revision or {},
        deployment_config_name or group.deployment_config_name,
        description,
        options.get("ignore_application_stop_failures"),
        options.get("target_instances"),
        options.get("auto_rollback_configuration"),
        options.get("update_outdated_instances_only"),
        options.get("file_exists_behavior"),
        options.get("override_alarm_configuration"),
        creator,
    )
    deployment.deployment_id = deployment_id
    deployment.create_time = _utc(created) if created else now()
    steps = sorted(((_utc(at), status) for at, status in timeline), key=lambda step: step[0])
    for _, status in steps:
        if status not in _STATUSES:
            raise ValueError(f"unknown deployment status {status!r}")
    _progress(backend)[deployment_id] = _Progress(pending=steps)
    if deployment.create_time <= now():
        _register(backend, deployment)
    else:
        _scheduled(backend).append(deployment)
    catch_up(backend)
    return deployment


# --- the in-process helper API (tests, fixtures, the demo) -----------------------------------------


def create_deployment(
    application: str,
    deployment_group: str,
    revision: dict[str, Any] | None = None,
    *,
    deployment_id: str | None = None,
    description: str | None = None,
    creator: str = "user",
    created: datetime | None = None,
    timeline: Iterable[tuple[datetime, str]] = (),
    account_id: str = str(DEFAULT_ACCOUNT_ID),
    region: str = "us-east-1",
) -> str:
    """Seed a deployment (the application and group must exist) and return its id.

    ``created`` defaults to now; ``timeline`` lists later ``(time, status)`` transitions, e.g.
    ``[(t0, "InProgress"), (t0 + 10 min, "Succeeded")]``. Without a timeline it stays ``Created``.
    ``creator`` is a ``DeploymentCreator`` value: ``autoscaling`` seeds the deployment EC2 Auto
    Scaling makes at a scale-out.
    """
    with _lock:
        backend = _backend(account_id, region)
        catch_up(backend)
        return str(
            _create(
                backend,
                application,
                deployment_group,
                revision,
                deployment_id=deployment_id,
                description=description,
                creator=creator,
                created=created,
                timeline=timeline,
            ).deployment_id
        )


def advance(
    deployment_id: str,
    status: str,
    *,
    at: datetime | None = None,
    account_id: str = str(DEFAULT_ACCOUNT_ID),
    region: str = "us-east-1",
) -> None:
    """Move a deployment to ``status`` now (or ``at``); what its timeline still had is dropped."""
    if status not in _STATUSES:
        raise ValueError(f"unknown deployment status {status!r}")
    with _lock:
        backend = _backend(account_id, region)
        catch_up(backend)
        deployment = backend.get_deployment(deployment_id)
        if deployment.status in FINISHED:
            raise ValueError(f"deployment {deployment_id} already finished ({deployment.status})")
        _progress(backend).setdefault(deployment_id, _Progress()).pending.clear()
        _set_status(deployment, status, _utc(at) if at else now())


def get(deployment_id: str, *, account_id: str = str(DEFAULT_ACCOUNT_ID), region: str = "us-east-1") -> dict[str, Any]:
    """The deployment as ``GetDeployment`` shows it (for assertions)."""
    with _lock:
        backend = _backend(account_id, region)
        catch_up(backend)
        return deployment_info(backend, backend.get_deployment(deployment_id))


def state_change_event(
    deployment_id: str,
    state: str | None = None,
    *,
    account_id: str = str(DEFAULT_ACCOUNT_ID),
    region: str = "us-east-1",
    event_id: str | None = None,
) -> dict[str, Any]:
    """The "CodeDeploy Deployment State-change Notification" for the deployment's current state."""
    with _lock:
        backend = _backend(account_id, region)
        catch_up(backend)
        deployment = backend.get_deployment(deployment_id)
        state = state or _EVENT_STATES.get(deployment.status, "START")
        group = deployment.deployment_group
        app = deployment.application_name
        return {
            "version": "0",
            "id": event_id or str(uuid.uuid4()),
            "detail-type": "CodeDeploy Deployment State-change Notification",
            "source": "aws.codedeploy",
            "account": account_id,
            "time": now().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": region,
            "resources": [
                f"arn:aws:codedeploy:{region}:{account_id}:application:{app}",
                f"arn:aws:codedeploy:{region}:{account_id}:deploymentgroup:{app}/{group.deployment_group_name}",
            ],
            "detail": {
                "region": region,
                "deploymentId": deployment_id,
                "instanceGroupId": group.deployment_group_id,
                "deploymentGroup": group.deployment_group_name,
                "state": state,
                "application": app,
            },
        }


# --- what the API answers ------------------------------------------------------------------------


def _drop_empty(info: dict[str, Any]) -> dict[str, Any]:
    # AWS leaves absent members out; moto fills some with {} or "".
    return {k: v for k, v in info.items() if v not in ({}, None, "")}


def deployment_info(backend: CodeDeployBackend, deployment: DeploymentInfo) -> dict[str, Any]:
    info = _deployment_info(deployment)
    progress = _progress(backend).get(deployment.deployment_id) or _Progress()
    info.update(
        {
            "status": deployment.status,
            "createTime": deployment.create_time,
            "startTime": deployment.start_time,
            "completeTime": deployment.complete_time,
            "creator": deployment.creator,
            "previousRevision": progress.previous_revision or {},
            "rollbackInfo": dict(progress.rollback_info),
        }
    )
    if info.get("deploymentConfigName") == "None":
        info.pop("deploymentConfigName")
    return _drop_empty(info)


def _last_info(deployment: Any) -> dict[str, Any] | None:
    if deployment is None:
        return None
    return _drop_empty(
        {
            "deploymentId": deployment.deployment_id,
            "status": deployment.status,
            "endTime": deployment.complete_time,
            "createTime": deployment.create_time,
        }
    )


def _alarm_configuration(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    return {
        "enabled": bool(raw.enabled),
        "ignorePollAlarmFailure": bool(raw.ignore_poll_alarm_failure),
        "alarms": list(raw.alarms),
    }


@operation(CodeDeployResponse, "CreateDeployment", replace=True)
def create_deployment_operation(self: Any) -> ActionResult:
    backend = self.codedeploy_backend
    with _lock:
        at = now()
        deployment = _create(
            backend,
            self._get_param("applicationName"),
            self._get_param("deploymentGroupName"),
            self._get_param("revision"),
            description=self._get_param("description"),
            created=at,
            timeline=[(at, "InProgress")],
            deployment_config_name=self._get_param("deploymentConfigName"),
            extra={
                "ignore_application_stop_failures": self._get_bool_param("ignoreApplicationStopFailures"),
                "target_instances": self._get_param("targetInstances"),
                "auto_rollback_configuration": self._get_param("autoRollbackConfiguration"),
                "update_outdated_instances_only": self._get_bool_param("updateOutdatedInstancesOnly"),
                "file_exists_behavior": self._get_param("fileExistsBehavior"),
                "override_alarm_configuration": self._get_param("overrideAlarmConfiguration"),
            },
        )
    return ActionResult({"deploymentId": deployment.deployment_id})


@operation(CodeDeployResponse, "GetDeployment", replace=True)
def get_deployment_operation(self: Any) -> ActionResult:
    backend = self.codedeploy_backend
    deployment = backend.get_deployment(self._get_param("deploymentId"))
    return ActionResult({"deploymentInfo": deployment_info(backend, deployment)})


@operation(CodeDeployResponse, "ListDeployments", replace=True)
def list_deployments_operation(self: Any) -> ActionResult:
    """moto's filters, with ``createTimeRange`` compared as instants (moto mixes naive and aware times)."""
    backend = self.codedeploy_backend
    application = self._get_param("applicationName")
    group = self._get_param("deploymentGroupName")
    if application and not group:
        raise JsonRESTError(
            "DeploymentGroupNameRequiredException",
            "If applicationName is specified, then deploymentGroupName must be specified.",
        )
    if group and not application:
        raise JsonRESTError(
            "ApplicationNameRequiredException",
            "If deploymentGroupName is specified, applicationName must be specified.",
        )
    if application:
        backend.get_deployment_group(application, group)  # raises when either does not exist
    statuses = set(self._get_param("includeOnlyStatuses") or [])
    time_range = self._get_param("createTimeRange") or {}
    start = _instant(time_range.get("start"))
    end = _instant(time_range.get("end"))
    if start is not None and end is not None and start > end:
        raise JsonRESTError("InvalidTimeRangeException", "The start time must be earlier than the end time.")
    found = [
        d
        for d in backend.deployments.values()
        if (not application or (d.application_name == application and d.deployment_group_name == group))
        and (not statuses or d.status in statuses)
        and (start is None or _utc(d.create_time) >= start)
        and (end is None or _utc(d.create_time) <= end)
    ]
    found.sort(key=lambda d: _utc(d.create_time), reverse=True)  # newest first
    return ActionResult({"deployments": [d.deployment_id for d in found]})


def _instant(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


@operation(CodeDeployResponse, "BatchGetDeployments", replace=True)
def batch_get_deployments_operation(self: Any) -> ActionResult:
    backend = self.codedeploy_backend
    ids = self._get_param("deploymentIds") or []
    if len(ids) > 25:
        raise JsonRESTError("BatchLimitExceededException", "The maximum number of deployment IDs is 25.")
    found = backend.batch_get_deployments(ids)
    return ActionResult({"deploymentsInfo": [deployment_info(backend, d) for d in found]})


def deployment_group_info(backend: CodeDeployBackend, application: str, group: Any) -> dict[str, Any]:
    info = _deployment_group_info(group)
    ours = [
        d
        for d in backend.deployments.values()
        if d.application_name == application and d.deployment_group_name == group.deployment_group_name
    ]
    attempted = max(ours, key=lambda d: _utc(d.create_time), default=None)
    info.update(
        {
            "alarmConfiguration": _alarm_configuration(group.alarm_configuration),
            "lastSuccessfulDeployment": _last_info(_last_succeeded(backend, application, group.deployment_group_name)),
            "lastAttemptedDeployment": _last_info(attempted),
            "targetRevision": attempted.revision if attempted is not None else None,
        }
    )
    return _drop_empty(info)


@operation(CodeDeployResponse, "GetDeploymentGroup", replace=True)
def get_deployment_group_operation(self: Any) -> ActionResult:
    backend = self.codedeploy_backend
    application = self._get_param("applicationName")
    group = backend.get_deployment_group(application, self._get_param("deploymentGroupName"))
    return ActionResult({"deploymentGroupInfo": deployment_group_info(backend, application, group)})


@operation(CodeDeployResponse, "BatchGetDeploymentGroups")
def batch_get_deployment_groups_operation(self: Any) -> ActionResult:
    backend = self.codedeploy_backend
    application = self._get_param("applicationName")
    names = self._get_param("deploymentGroupNames") or []
    if not application:
        raise JsonRESTError(
            "ApplicationNameRequiredException", "The minimum number of required application names was not specified."
        )
    if not names:
        raise JsonRESTError("DeploymentGroupNameRequiredException", "The deployment group name was not specified.")
    if len(names) > 100:
        raise JsonRESTError("BatchLimitExceededException", "The maximum number of deployment groups is 100.")
    backend.get_application(application)  # ApplicationDoesNotExistException
    found = []
    missing = []
    for name in names:
        group = backend.deployment_groups.get(application, {}).get(name)
        if group is None:
            missing.append(name)
        else:
            found.append(deployment_group_info(backend, application, group))
    result: dict[str, Any] = {"deploymentGroupsInfo": found}
    if missing:
        result["errorMessage"] = f"Deployment groups not found: {', '.join(missing)}"
    return ActionResult(result)


@operation(CodeDeployResponse, "StopDeployment")
def stop_deployment_operation(self: Any) -> ActionResult:
    deployment_id = self._get_param("deploymentId")
    if not deployment_id:
        raise JsonRESTError("DeploymentIdRequiredException", "At least one deployment ID must be specified.")
    auto_rollback = self._get_param("autoRollbackEnabled") in (True, "true", "True")
    backend = self.codedeploy_backend
    with _lock:
        deployment = backend.get_deployment(deployment_id)
        if deployment.status in FINISHED:
            raise JsonRESTError(
                "DeploymentAlreadyCompletedException", f"The deployment {deployment_id} has already completed."
            )
        at = now()
        progress = _progress(backend).setdefault(deployment_id, _Progress())
        if progress.stop_pending:
            return ActionResult({"status": "Pending", "statusMessage": f"Stopping deployment {deployment_id}."})
        delay = _stop_delay(backend)
        if delay is not None:
            progress.pending = [(at + timedelta(seconds=delay), "Stopped")]
            progress.stop_pending, progress.stop_rollback = True, auto_rollback
            return ActionResult({"status": "Pending", "statusMessage": f"Stopping deployment {deployment_id}."})
        message = _stop(backend, deployment, at, auto_rollback=auto_rollback)
    return ActionResult({"status": "Succeeded", "statusMessage": message})


def _stop_delay(backend: CodeDeployBackend) -> float | None:
    delay: list[float] = backend_state(backend, "stop_pending_seconds", list)
    return delay[0] if delay else None


def answer_stops_pending(
    seconds: float | None, *, account_id: str = str(DEFAULT_ACCOUNT_ID), region: str = "us-east-1"
) -> None:
    """``StopDeployment`` answers ``Pending`` and the deployment stops ``seconds`` later (on :func:`now`'s
    clock); ``None``: it stops at once and answers ``Succeeded`` (the default). Reset restores the default."""
    with _lock:
        delay: list[float] = backend_state(_backend(account_id, region), "stop_pending_seconds", list)
        delay[:] = [] if seconds is None else [seconds]


def _stop(backend: CodeDeployBackend, deployment: DeploymentInfo, at: datetime, *, auto_rollback: bool) -> str:
    """The deployment ends ``Stopped`` at ``at``; with ``auto_rollback`` the group's last success is redeployed."""
    deployment_id = deployment.deployment_id
    progress = _progress(backend).setdefault(deployment_id, _Progress())
    progress.pending.clear()
    progress.stop_pending = False
    _set_status(deployment, "Stopped", at)
    message = f"Deployment {deployment_id} stopped."
    if auto_rollback:
        good = _last_succeeded(
            backend, deployment.application_name, deployment.deployment_group_name, exclude=deployment_id
        )
        if good is None:
            message += " No previous successful revision to roll back to: no rollback deployment was created."
        else:
            rollback = _create(
                backend,
                deployment.application_name,
                deployment.deployment_group_name,
                good.revision,
                creator=_ROLLBACK_CREATOR,
                created=at,
                timeline=[(at, "InProgress"), (at + timedelta(seconds=ROLLBACK_SECONDS), "Succeeded")],
            )
            progress.rollback_info = {
                "rollbackDeploymentId": rollback.deployment_id,
                "rollbackMessage": f"Stopped with automatic rollback; rollback deployment {rollback.deployment_id}.",
            }
            _progress(backend)[rollback.deployment_id].rollback_info = {
                "rollbackTriggeringDeploymentId": deployment_id,
                "rollbackMessage": f"Automatic rollback of stopped deployment {deployment_id}.",
            }
            message += f" Automatic rollback deployment {rollback.deployment_id} created."
    return message


@installer
def patch() -> None:
    """Bring due transitions up to date whenever a CodeDeploy request reaches the backend (idempotent)."""
    current = CodeDeployResponse.__dict__["codedeploy_backend"]
    if getattr(current.fget, _PATCHED, False):
        return
    original = current.fget

    def codedeploy_backend(self: Any) -> CodeDeployBackend:
        backend: CodeDeployBackend = original(self)
        catch_up(backend)
        return backend

    setattr(codedeploy_backend, _PATCHED, True)
    CodeDeployResponse.codedeploy_backend = property(codedeploy_backend)  # type: ignore[method-assign,assignment]
