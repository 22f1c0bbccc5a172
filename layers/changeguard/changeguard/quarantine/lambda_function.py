"""Lambda functions: reserved concurrency 0, which throttles every version and alias of the function.

The original reserved concurrency is saved, including "none" (the function used the account's
unreserved pool), and put back on release. AWS keeps at least 100 of the account's concurrency
unreserved (PutFunctionConcurrency: InvalidParameterValueException), so a reservation others took
while the function sat at 0 can make the saved one impossible to put back: the release then removes
the 0, so the function runs again, unreserved, and reports DRIFT saying so.

Asynchronous events that arrive meanwhile are retried for up to 6 hours and then dropped (or sent
to the function's on-failure destination): the alert says so.

Tags are read with ``ListTags``, never from ``GetFunction``: GetFunction returns them only to a
caller explicitly allowed ``lambda:ListTags`` and otherwise answers with ``TagsError`` and no
``Tags``, which would read as "no tags" and quarantine compliant functions. ``ListTags`` denied is
an error, so the function cannot be read and is left alone. It also spares the role
``lambda:GetFunction``, which hands out the function's environment and a code download URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from changeguard.domain.partition import partition_of
from changeguard.domain.quarantine import ReleaseResult, ResourceRef
from changeguard.quarantine.base import (
    QuarantineHandler,
    QuarantineSettings,
    ReleaseOutcome,
    ResourceState,
    error_code,
    register,
)

_FUNCTION_ARN = ":function:"


@register
class LambdaFunctionQuarantine(QuarantineHandler):
    type = "lambda:function"
    config_type = "AWS::Lambda::Function"
    event_source = "lambda.amazonaws.com"
    service = "lambda"
    describes = "set its reserved concurrency to 0 (every invocation is throttled)"
    notes = (
        "Asynchronous invocations (S3, SNS, EventBridge, ...) are retried for up to 6 hours and then dropped,"
        " or sent to the function's on-failure destination or dead-letter queue.",
        "Synchronous callers get a throttling error (429) until the function is released.",
    )
    permissions = (
        "lambda:ListTags",
        "lambda:GetFunctionConcurrency",
        "lambda:PutFunctionConcurrency",
        "lambda:DeleteFunctionConcurrency",
        "lambda:TagResource",
        "lambda:UntagResource",
    )
    id_paths = {
        "CreateFunction20150331": ("responseElements.functionArn", "requestParameters.functionName"),
        "TagResource20170331v2": ("requestParameters.resource",),
        "UntagResource20170331v2": ("requestParameters.resource",),
    }

    # -- naming -------------------------------------------------------------------------------
    def normalize_id(self, value: str) -> str | None:
        if value.startswith("arn:"):
            if not self.owns_arn(value):
                return None
            value = value.split(_FUNCTION_ARN, 1)[1].split(":", 1)[0]  # drop a version or alias
        return value if value and ":" not in value and "/" not in value else None

    def arn(self, resource_id: str, account: str, region: str) -> str:
        return f"arn:{partition_of(region)}:lambda:{region}:{account}:function:{resource_id}"

    def owns_arn(self, arn: str) -> bool:
        return arn.startswith("arn:aws") and ":lambda:" in arn and _FUNCTION_ARN in arn

    # -- state --------------------------------------------------------------------------------
    def read(self, ref: ResourceRef) -> ResourceState | None:
        from botocore.exceptions import ClientError

        api = self.api(ref)
        try:
            # Denied (no lambda:ListTags) or gone: a ClientError, so unreadable, never "untagged".
            tags = api.list_tags(Resource=ref.arn).get("Tags") or {}
            concurrency = api.get_function_concurrency(FunctionName=ref.arn).get("ReservedConcurrentExecutions")
        except ClientError:
            return None
        return ResourceState(
            ref=ref,
            name=ref.resource_id,  # the function's name: normalize_id keeps nothing else
            tags={str(k): str(v) for k, v in tags.items()},
            config={"reserved_concurrency": concurrency},
        )

    def snapshot(self, ref: ResourceRef, state: ResourceState, settings: QuarantineSettings) -> dict[str, Any]:
        return {"reserved_concurrency": state.config["reserved_concurrency"]}

    # -- quarantine ---------------------------------------------------------------------------
    def quarantine(
        self,
        ref: ResourceRef,
        state: ResourceState,
        settings: QuarantineSettings,
        saved: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        saved = saved if saved is not None else self.snapshot(ref, state, settings)
        if state.config["reserved_concurrency"] != 0:
            self.api(ref).put_function_concurrency(FunctionName=ref.arn, ReservedConcurrentExecutions=0)
        return saved

    # -- release ------------------------------------------------------------------------------
    def release(self, ref: ResourceRef, saved: dict[str, Any], *, dry_run: bool = False) -> ReleaseOutcome:
        state = self.read(ref)
        if state is None:
            return ReleaseOutcome(
                result=ReleaseResult.DRIFT, detail=f"function {ref.resource_id} can no longer be read"
            )
        current = state.config["reserved_concurrency"]
        original = saved.get("reserved_concurrency")
        if current == original:
            return ReleaseOutcome(result=ReleaseResult.NOOP, detail="the original reserved concurrency is in place")
        if current != 0:
            return ReleaseOutcome(
                result=ReleaseResult.DRIFT,
                detail=f"reserved concurrency changed to {current} while quarantined",
            )
        if not dry_run:
            if original is None:
                self.api(ref).delete_function_concurrency(FunctionName=ref.arn)
            elif not self._reserve(ref, original):
                # The capacity was reserved by others meanwhile: the function runs again, unreserved.
                self.api(ref).delete_function_concurrency(FunctionName=ref.arn)
                return ReleaseOutcome(
                    result=ReleaseResult.DRIFT,
                    detail=(
                        f"its reserved concurrency {original} could not be restored: AWS refused it"
                        f" (InvalidParameterValueException), as a reservation must leave at least 100 of the"
                        f" account's concurrency unreserved and other functions reserved it while this one was"
                        f" quarantined. The quarantine's reservation of 0 was removed, so the function runs"
                        f" again, unreserved, without its guaranteed {original}: reserve it again once capacity"
                        f" is free"
                    ),
                    calls=("reserved concurrency none (unreserved)",),
                )
        shown = "none (unreserved)" if original is None else str(original)
        return ReleaseOutcome(
            result=ReleaseResult.RESTORED,
            detail=f"reserved concurrency restored to {shown}",
            calls=(f"reserved concurrency {shown}",),
        )

    def _reserve(self, ref: ResourceRef, concurrency: int) -> bool:
        """Reserve ``concurrency``; False when AWS refuses it because it would leave under 100 of the
        account's concurrency unreserved (PutFunctionConcurrency: InvalidParameterValueException)."""
        from botocore.exceptions import ClientError

        try:
            self.api(ref).put_function_concurrency(FunctionName=ref.arn, ReservedConcurrentExecutions=concurrency)
        except ClientError as exc:
            if error_code(exc) == "InvalidParameterValueException":
                return False
            raise
        return True

    # -- tags ---------------------------------------------------------------------------------
    def set_tags(self, ref: ResourceRef, tags: Mapping[str, str]) -> None:
        self.api(ref).tag_resource(Resource=ref.arn, Tags=dict(tags))

    def remove_tags(self, ref: ResourceRef, keys: list[str]) -> None:
        if keys:
            self.api(ref).untag_resource(Resource=ref.arn, TagKeys=list(keys))
