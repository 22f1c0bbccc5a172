"""CodeDeploy: read a deployment, stop it with automatic rollback, report a lifecycle hook's result."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime  # issue 5
from typing import TYPE_CHECKING, Any

from changeguard.adapters.clients import acting_client
from changeguard.domain.calendar import DeploymentFacts
from changeguard.domain.deployments import IN_FLIGHT, Deployment, DeploymentGroup  # issue 5

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients


@dataclass  # not frozen: the services' protocols declare plain (writable) attributes
class StopResult:
    """What ``StopDeployment`` answered: ``Pending``/``Succeeded``, or that it had already completed."""

    status: str
    message: str | None = None
    already_completed: bool = False

    def describe(self) -> str:
        if self.already_completed:
            return "already completed: nothing to stop"
        return f"StopDeployment {self.status}" + (f" ({self.message})" if self.message else "")


class CodeDeployDeployments:
    """Deployments as the gate sees them. Stopping a finished deployment counts as done."""

    def __init__(self, codedeploy: Any | None = None, accounts: AccountClients | None = None) -> None:
        self._codedeploy = codedeploy
        # issue 9: without an injected client, calls go to the account the service is acting in.
        self._accounts = accounts

    @property
    def codedeploy(self) -> Any:
        return self._codedeploy or acting_client("codedeploy", self._accounts)

    def get(self, deployment_id: str) -> DeploymentFacts | None:
        """The deployment as it is now (``GetDeployment``), or None when it does not exist."""
        cd = self.codedeploy
        try:
            info = cd.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        except cd.exceptions.DeploymentDoesNotExistException:
            return None
        rollback = info.get("rollbackInfo") or {}
        return DeploymentFacts(
            deployment_id=deployment_id,
            status=str(info.get("status") or "Unknown"),
            application=info.get("applicationName"),
            deployment_group=info.get("deploymentGroupName"),
            compute_platform=info.get("computePlatform"),
            creator=info.get("creator"),
            description=info.get("description"),
            rollback_of=rollback.get("rollbackTriggeringDeploymentId") or None,
        )

    def stop(self, deployment_id: str, *, auto_rollback: bool = True) -> StopResult:
        """``StopDeployment``; on a deployment that already finished, report it as done."""
        cd = self.codedeploy
        try:
            resp = cd.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=auto_rollback)
        except cd.exceptions.DeploymentAlreadyCompletedException:
            return StopResult(status="AlreadyCompleted", already_completed=True)
        # ``status`` is optional in the API reference: a missing one is not known to be Pending.
        return StopResult(status=str(resp.get("status") or "Unknown"), message=resp.get("statusMessage"))

    def put_hook_status(self, deployment_id: str, execution_id: str, status: str) -> bool:
        """Report a lifecycle hook's result; False when it was already reported (a redelivery)."""
        cd = self.codedeploy
        try:
            cd.put_lifecycle_event_hook_execution_status(
                deploymentId=deployment_id, lifecycleEventHookExecutionId=execution_id, status=status
            )
        except cd.exceptions.LifecycleEventAlreadyCompletedException:
            return False
        return True


# -- deployment guard (issue 5) -------------------------------------------------------------------
# The guard reads more of CodeDeploy than the gate does; it reuses ``stop`` (and ``StopResult``).

_BATCH_DEPLOYMENTS = 25  # BatchGetDeployments limit
_BATCH_GROUPS = 100  # BatchGetDeploymentGroups limit


def _utc(value: Any) -> Any:
    return value.astimezone(UTC) if isinstance(value, datetime) else None


def deployment_from_info(info: dict[str, Any]) -> Deployment:
    """A ``deploymentInfo`` (GetDeployment/BatchGetDeployments) as the domain's :class:`Deployment`."""
    rollback = info.get("rollbackInfo") or {}
    return Deployment(
        deployment_id=str(info["deploymentId"]),
        application=str(info.get("applicationName") or ""),
        group=str(info.get("deploymentGroupName") or ""),
        status=str(info.get("status") or "Unknown"),
        creator=info.get("creator"),
        description=info.get("description"),
        revision=dict(info.get("revision") or {}),
        previous_revision=dict(info["previousRevision"]) if info.get("previousRevision") else None,
        create_time=_utc(info.get("createTime")),
        start_time=_utc(info.get("startTime")),
        complete_time=_utc(info.get("completeTime")),
        rollback_deployment_id=rollback.get("rollbackDeploymentId") or None,
        rolled_back_from=rollback.get("rollbackTriggeringDeploymentId") or None,
        compute_platform=info.get("computePlatform"),
    )


def group_from_info(info: dict[str, Any]) -> DeploymentGroup:
    alarms = info.get("alarmConfiguration") or {}
    return DeploymentGroup(
        application=str(info.get("applicationName") or ""),
        group=str(info.get("deploymentGroupName") or ""),
        alarms=tuple(str(a["name"]) for a in alarms.get("alarms") or [] if a.get("name")),
        alarms_enabled=bool(alarms.get("enabled")),
    )


class CodeDeployGuard(CodeDeployDeployments):
    """CodeDeploy as the deployment guard uses it: find, read, stop, redeploy."""

    def get_deployment(self, deployment_id: str) -> Deployment | None:
        """The deployment now (``GetDeployment``), or None when it does not exist."""
        cd = self.codedeploy
        try:
            info = cd.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        except cd.exceptions.DeploymentDoesNotExistException:
            return None
        return deployment_from_info(info)

    def _deployments(self, ids: list[str]) -> list[Deployment]:
        found: list[Deployment] = []
        for start in range(0, len(ids), _BATCH_DEPLOYMENTS):
            resp = self.codedeploy.batch_get_deployments(deploymentIds=ids[start : start + _BATCH_DEPLOYMENTS])
            found.extend(deployment_from_info(i) for i in resp.get("deploymentsInfo", []))
        return found

    def _list(self, application: str, group: str, **filters: Any) -> list[Deployment] | None:
        """The group's deployments matching ``filters``; ``None`` when the application or the group
        does not exist in this account and region (``ListDeployments`` answers
        ``ApplicationDoesNotExistException`` or the group's there): the health sweep asks every
        account-region it visits for every group with criteria, and an alarm's tag may name a group
        that does not exist."""
        cd = self.codedeploy
        try:
            pages = cd.get_paginator("list_deployments").paginate(
                applicationName=application, deploymentGroupName=group, **filters
            )
            ids = [i for page in pages for i in page.get("deployments", [])]
        except (cd.exceptions.ApplicationDoesNotExistException, cd.exceptions.DeploymentGroupDoesNotExistException):
            return None
        return self._deployments(ids)

    def list_in_flight(self, application: str, group: str) -> list[Deployment] | None:
        """The group's deployments that have not finished (Created, Queued, InProgress, Baking, Ready)."""
        return self._list(application, group, includeOnlyStatuses=sorted(IN_FLIGHT))

    def list_recent(self, application: str, group: str, since: datetime) -> list[Deployment] | None:
        """The group's deployments created since ``since``, whatever their status."""
        return self._list(application, group, createTimeRange={"start": since})

    def groups_watching(self, alarm_name: str) -> list[DeploymentGroup]:
        """Every deployment group whose alarm configuration lists ``alarm_name`` (enabled or not)."""
        cd = self.codedeploy
        watching: list[DeploymentGroup] = []
        for apps in cd.get_paginator("list_applications").paginate():
            for application in apps.get("applications", []):
                names = [
                    n
                    for page in cd.get_paginator("list_deployment_groups").paginate(applicationName=application)
                    for n in page.get("deploymentGroups", [])
                ]
                for start in range(0, len(names), _BATCH_GROUPS):
                    resp = cd.batch_get_deployment_groups(
                        applicationName=application, deploymentGroupNames=names[start : start + _BATCH_GROUPS]
                    )
                    for info in resp.get("deploymentGroupsInfo", []):
                        group = group_from_info(info)
                        if alarm_name in group.alarms:
                            watching.append(group)
        return watching

    def tags_of(self, arn: str) -> dict[str, str]:
        """Tags of an application or deployment group (empty when it cannot be read)."""
        from botocore.exceptions import ClientError

        try:
            tags = self.codedeploy.list_tags_for_resource(ResourceArn=arn).get("Tags", [])
        except ClientError:
            return {}
        return {str(t["Key"]): str(t.get("Value", "")) for t in tags}

    def redeploy(self, application: str, group: str, revision: dict[str, Any], description: str) -> str:
        """``CreateDeployment`` of ``revision`` (the last known good one); the new deployment's id."""
        resp = self.codedeploy.create_deployment(
            applicationName=application, deploymentGroupName=group, revision=revision, description=description
        )
        return str(resp["deploymentId"])
