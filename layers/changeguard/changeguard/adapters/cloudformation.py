"""CloudFormation: read a stack, find a change set's stack, cancel a stack update in progress."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from changeguard.adapters.clients import acting_client
from changeguard.domain.calendar import StackFacts, StopAnswer

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients

UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"


class CloudFormationStacks:
    def __init__(self, cloudformation: Any | None = None, accounts: AccountClients | None = None) -> None:
        self._cfn = cloudformation
        # issue 9: without an injected client, calls go to the account the service is acting in.
        self._accounts = accounts

    @property
    def cloudformation(self) -> Any:
        return self._cfn or acting_client("cloudformation", self._accounts)

    def get(self, stack: str) -> StackFacts | None:
        """The stack as it is now (``DescribeStacks`` by name or id), or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            stacks = self.cloudformation.describe_stacks(StackName=stack).get("Stacks", [])
        except ClientError as exc:
            # DescribeStacks answers ValidationError for a stack that does not exist.
            if exc.response.get("Error", {}).get("Code") == "ValidationError":
                return None
            raise
        if not stacks:
            return None
        found = stacks[0]
        return StackFacts(
            stack_id=str(found.get("StackId") or stack),
            name=str(found.get("StackName") or stack),
            status=str(found.get("StackStatus") or "UNKNOWN"),
            tags={str(t["Key"]): str(t.get("Value", "")) for t in found.get("Tags") or []},
            last_updated=found.get("LastUpdatedTime"),
            change_set_id=found.get("ChangeSetId"),
        )

    def stack_of_change_set(self, change_set: str, stack: str | None = None) -> str | None:
        """The stack a change set belongs to (``DescribeChangeSet``), for an ``ExecuteChangeSet`` by ARN."""
        from botocore.exceptions import ClientError

        args = {"ChangeSetName": change_set} | ({"StackName": stack} if stack else {})
        try:
            found = self.cloudformation.describe_change_set(**args)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("ValidationError", "ChangeSetNotFound"):
                return None
            raise
        return str(found.get("StackId") or found.get("StackName") or "") or None

    def cancel_update(self, stack: str) -> StopAnswer:
        """``CancelUpdateStack``; an update that finished meanwhile counts as nothing to cancel."""
        from botocore.exceptions import ClientError

        try:
            self.cloudformation.cancel_update_stack(StackName=stack)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ValidationError":
                raise
            # The update may have finished between our read and the cancel: read again, do not guess.
            now = self.get(stack)
            if now is not None and now.status == UPDATE_IN_PROGRESS:
                raise
            return StopAnswer(
                text=f"the update finished before it could be cancelled ({now.status if now else 'stack gone'})",
                already_completed=True,
            )
        return StopAnswer(text="CancelUpdateStack accepted: the update rolls back")
