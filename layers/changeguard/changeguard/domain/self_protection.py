"""Changes to ChangeGuard itself: critical alerts, whoever makes them (issue 8).

Attackers switch the controls off first. A call that disables or edits one of the suite's rules,
changes its functions or layer, changes its parameters (exemptions, enforcement mode) or alters its
ticket or ledger tables is judged like any change, and is also flagged as control tampering: a
critical alert whatever the verdict, even from an exempt pipeline role, even while the ticket source
is down.

Both halves are data:

* :data:`SUITE_ALTERING` - which calls alter a resource's configuration (data-plane writes such as
  a ticket ``PutItem`` are the suite's normal operation and are not listed);
* :class:`SuiteResources` - ARN patterns of the suite's resources, built from the names the
  template gives them (the stack name, the ``changeguard-<env>-`` names it sets explicitly, and the
  ``/changeguard/`` parameter path), passed to the functions as wiring.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict

from changeguard.domain.change import Change

#: Canonical actions (``domain.change.canonical_action``) that alter a resource, by service.
SUITE_ALTERING: Mapping[str, frozenset[str]] = {
    "events": frozenset(
        {"PutRule", "DeleteRule", "DisableRule", "EnableRule", "PutTargets", "RemoveTargets"}
    ),
    "lambda": frozenset(
        {"UpdateFunctionCode", "UpdateFunctionConfiguration", "DeleteFunction", "PutFunctionConcurrency",
         "DeleteFunctionConcurrency", "AddPermission", "RemovePermission", "PutFunctionEventInvokeConfig",
         "UpdateFunctionEventInvokeConfig", "DeleteFunctionEventInvokeConfig", "CreateAlias", "UpdateAlias",
         "DeleteAlias", "PublishVersion", "PutProvisionedConcurrencyConfig", "PutRuntimeManagementConfig",
         "PutFunctionRecursionConfig", "CreateFunctionUrlConfig", "UpdateFunctionUrlConfig",
         "DeleteFunctionUrlConfig", "PublishLayerVersion", "DeleteLayerVersion", "AddLayerVersionPermission",
         "RemoveLayerVersionPermission", "TagResource", "UntagResource"}
    ),
    "ssm": frozenset(
        {"PutParameter", "DeleteParameter", "DeleteParameters", "LabelParameterVersion",
         "UnlabelParameterVersion", "UpdateDocument", "DeleteDocument", "UpdateDocumentDefaultVersion"}
    ),
    "dynamodb": frozenset(
        {"UpdateTable", "DeleteTable", "UpdateContinuousBackups", "PutResourcePolicy", "DeleteResourcePolicy",
         "UpdateTimeToLive", "DisableKinesisStreamingDestination", "UpdateKinesisStreamingDestination",
         "EnableKinesisStreamingDestination", "UpdateTableReplicaAutoScaling", "UpdateContributorInsights",
         "DeleteBackup", "TagResource", "UntagResource"}
    ),
    "sns": frozenset(
        {"SetTopicAttributes", "DeleteTopic", "Subscribe", "Unsubscribe", "AddPermission", "RemovePermission",
         "PutDataProtectionPolicy", "SetSubscriptionAttributes"}
    ),
    "sqs": frozenset({"SetQueueAttributes", "DeleteQueue", "PurgeQueue", "AddPermission", "RemovePermission"}),
    "iam": frozenset(
        {"PutRolePolicy", "DeleteRolePolicy", "AttachRolePolicy", "DetachRolePolicy", "UpdateAssumeRolePolicy",
         "DeleteRole", "UpdateRole", "PutRolePermissionsBoundary", "DeleteRolePermissionsBoundary"}
    ),
    "cloudformation": frozenset(
        {"UpdateStack", "DeleteStack", "ExecuteChangeSet", "SetStackPolicy", "UpdateTerminationProtection",
         "ContinueUpdateRollback", "CancelUpdateStack"}
    ),
    "s3": frozenset(
        {"PutBucketPolicy", "DeleteBucketPolicy", "DeleteBucket", "PutBucketVersioning",
         "PutObjectLockConfiguration", "PutBucketLifecycle", "PutBucketLifecycleConfiguration",
         "DeleteBucketLifecycle", "PutBucketEncryption", "DeleteBucketEncryption", "PutBucketPublicAccessBlock",
         "DeleteBucketPublicAccessBlock", "PutBucketOwnershipControls", "PutBucketAcl"}
    ),
}  # fmt: skip

#: Where a named suite resource sits in an ARN (``{name}``: a name pattern such as ``mystack-*``).
NAMED_ARN_FORMATS: tuple[str, ...] = (
    "arn:*:lambda:*:*:function:{name}",
    "arn:*:lambda:*:*:layer:{name}",
    "arn:*:events:*:*:rule/{name}",
    "arn:*:dynamodb:*:*:table/{name}",
    "arn:*:sqs:*:*:{name}",
    "arn:*:sns:*:*:{name}",
    "arn:*:iam::*:role/{name}",
    "arn:*:ssm:*:*:document/{name}",
    "arn:*:cloudformation:*:*:stack/{name}",
)
#: S3 bucket names are lower case (CloudFormation lowers the stack name in generated ones).
BUCKET_ARN_FORMAT = "arn:*:s3:::{name}"


class SuiteResources(BaseModel):
    """The suite's own resources, as ARN patterns (``fnmatch``, case-sensitive)."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    patterns: tuple[str, ...]

    @classmethod
    def from_names(
        cls,
        *,
        name_prefixes: Iterable[str] = (),
        stack_name: str | None = None,
        parameter_root: str | None = "/changeguard/",
        role_path: str | None = "/changeguard/",
    ) -> SuiteResources:
        """Patterns of every resource named with one of ``name_prefixes`` (``<stack>-``, ...),
        the stack itself, the parameters under ``parameter_root`` and the roles under ``role_path``."""
        patterns: list[str] = []
        for prefix in (p.strip() for p in name_prefixes):
            if not prefix:
                continue
            patterns += [f.format(name=prefix + "*") for f in NAMED_ARN_FORMATS]
            patterns.append(BUCKET_ARN_FORMAT.format(name=prefix.lower() + "*"))
        if stack_name:
            patterns += [
                f"arn:*:cloudformation:*:*:stack/{stack_name}",
                f"arn:*:cloudformation:*:*:stack/{stack_name}/*",
            ]
        if parameter_root:
            patterns.append(f"arn:*:ssm:*:*:parameter/{parameter_root.strip('/')}/*")
        if role_path:
            patterns.append(f"arn:*:iam::*:role/{role_path.strip('/')}/*")
        return cls(patterns=tuple(dict.fromkeys(patterns)))

    def altered_by(self, change: Change) -> tuple[str, ...]:
        """The suite resources ``change`` alters (empty when it alters none)."""
        if change.action not in SUITE_ALTERING.get(change.service, frozenset()):
            return ()
        return tuple(arn for arn in change.resources if self.owns(arn))

    def owns(self, arn: str) -> bool:
        return any(fnmatchcase(arn, pattern) for pattern in self.patterns)
