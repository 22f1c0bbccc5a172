"""CloudFormation ``CancelUpdateStack``, which moto lacks, and stack updates that take time.

moto applies ``UpdateStack`` at once (``UPDATE_COMPLETE``), while in AWS an update runs for minutes
in ``UPDATE_IN_PROGRESS``, the only status ``CancelUpdateStack`` accepts. A test or fixture makes a
stack's updates take time with :func:`hold_updates`: ``UpdateStack`` then leaves it in
``UPDATE_IN_PROGRESS`` (the new template not yet applied) until :func:`finish_update` applies it or
``CancelUpdateStack`` rolls it back. :func:`begin_update` puts a stack in ``UPDATE_IN_PROGRESS``
directly, as an update CloudFormation is still working on (from ``ExecuteChangeSet``, for instance).

``CancelUpdateStack(StackName, ClientRequestToken)`` follows the API reference: on a stack in
``UPDATE_IN_PROGRESS`` it rolls the update back (stack events ``UPDATE_ROLLBACK_IN_PROGRESS`` then
``UPDATE_ROLLBACK_COMPLETE``; the previous template stays); on any other status it raises
``ValidationError`` "CancelUpdateStack cannot be called from current stack status"; an unknown stack
raises ``ValidationError`` "Stack with id ... does not exist".

``DescribeStacks`` also answers what moto leaves out of a stack: ``LastUpdatedTime``, "the time the
stack was last updated", returned only once the stack has been updated (set when ``UpdateStack`` or
``ExecuteChangeSet`` starts an update, not when it completes), and ``ChangeSetId``, the change set
``ExecuteChangeSet`` updated it with.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from moto.cloudformation.exceptions import ValidationError
from moto.cloudformation.models import CloudFormationBackend, Stack, cloudformation_backends
from moto.cloudformation.responses import CloudFormationResponse
from moto.core.responses import EmptyResult
from moto.core.utils import utcnow

from changeguard_tools.embedded.extensions import backend_state, installer, operation, wrap_method

__all__ = ["begin_update", "cancel_update_stack", "finish_update", "hold_updates", "patch"]

UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"


def _held(backend: CloudFormationBackend) -> set[str]:
    held: set[str] = backend_state(backend, "held_updates", set)
    return held


def _pending(backend: CloudFormationBackend) -> dict[str, tuple[Any, ...]]:
    pending: dict[str, tuple[Any, ...]] = backend_state(backend, "pending_updates", dict)
    return pending


def _start(stack: Stack) -> None:
    stack._add_stack_event(UPDATE_IN_PROGRESS, resource_status_reason="User Initiated")
    stack.status = UPDATE_IN_PROGRESS


def _held_update(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def update_stack(self: CloudFormationBackend, *args: Any, **kwargs: Any) -> Stack:
        names = ("name", "template", "role_arn", "parameters", "tags")
        call = dict(zip(names, args, strict=False)) | kwargs
        stack: Stack = self.get_stack(call["name"])
        stack.last_updated_time = utcnow()  # the update starts now (DescribeStacks' LastUpdatedTime)
        if stack.stack_id not in _held(self):
            result: Stack = original(self, *args, **kwargs)
            return result
        _start(stack)
        _pending(self)[stack.stack_id] = tuple(call.get(n) for n in names)
        return stack

    return update_stack


def _dated_execution(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute_change_set(self: CloudFormationBackend, change_set_name: str, stack_name: str | None = None) -> None:
        found = self.change_sets.get(change_set_name) or next(
            (c for c in self.change_sets.values() if c.change_set_name == change_set_name), None
        )
        stack = self.stacks.get(found.stack_id) if found is not None else None
        # An update, unless the change set creates the stack (moto's ChangeSetType defaults to CREATE
        # where AWS's defaults to UPDATE: the stack's status tells).
        updating = stack is not None and stack.status != "REVIEW_IN_PROGRESS"
        started = utcnow()
        original(self, change_set_name, stack_name)
        if updating and stack is not None and found is not None:
            stack.last_updated_time = started
            stack.change_set_id = found.change_set_id

    return execute_change_set


@installer
def patch() -> None:
    """Let held stacks' updates stay in progress, and date every update (idempotent)."""
    wrap_method(CloudFormationBackend, "update_stack", _held_update)
    wrap_method(CloudFormationBackend, "execute_change_set", _dated_execution)


def _backend(account_id: str, region: str) -> CloudFormationBackend:
    backend: CloudFormationBackend = cloudformation_backends[account_id][region]
    return backend


def hold_updates(account_id: str, region: str, stack: str) -> None:
    """From now on, ``UpdateStack`` leaves ``stack`` in ``UPDATE_IN_PROGRESS`` until finished or cancelled."""
    backend = _backend(account_id, region)
    _held(backend).add(backend.get_stack(stack).stack_id)


def begin_update(account_id: str, region: str, stack: str) -> None:
    """Put ``stack`` in ``UPDATE_IN_PROGRESS``, as an update CloudFormation is still applying."""
    _start(_backend(account_id, region).get_stack(stack))


def finish_update(account_id: str, region: str, stack: str) -> None:
    """Complete an update held in progress, as CloudFormation would."""
    backend = _backend(account_id, region)
    found = backend.get_stack(stack)
    _held(backend).discard(found.stack_id)
    pending = _pending(backend).pop(found.stack_id, None)
    if pending is None:
        found._add_stack_event("UPDATE_COMPLETE")
        found.status = "UPDATE_COMPLETE"
        return
    name, template, role_arn, parameters, tags = pending
    started = getattr(found, "last_updated_time", None)
    backend.update_stack(name=name, template=template, role_arn=role_arn, parameters=parameters, tags=tags)
    found.last_updated_time = started or found.last_updated_time  # the update started when it was made


@operation(CloudFormationResponse, "CancelUpdateStack")
def cancel_update_stack(self: Any) -> EmptyResult:
    """``CancelUpdateStack``: roll back an update in progress."""
    name = self._get_param("StackName")
    if not name:
        raise ValidationError(message="1 validation error detected: Value null at 'stackName' must not be null")
    backend: CloudFormationBackend = self.cloudformation_backend
    stack = backend.get_stack(str(name))
    if stack.status != UPDATE_IN_PROGRESS:
        raise ValidationError(stack.stack_id, message="CancelUpdateStack cannot be called from current stack status")
    _pending(backend).pop(stack.stack_id, None)
    stack._add_stack_event("UPDATE_ROLLBACK_IN_PROGRESS", resource_status_reason="User Initiated")
    stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE")
    stack.status = "UPDATE_ROLLBACK_COMPLETE"
    return EmptyResult()
