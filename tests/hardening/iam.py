"""AWS API calls as the IAM requests they make, and the template's policies as what they allow.

Issue 8, least privilege. A call (``dynamodb.TransactWriteItems`` with its parameters) becomes the
IAM requests AWS authorizes for it: one ``(action, resource ARN)`` per item, as the Service
Authorization Reference describes. Most operations are ``<prefix>:<Operation>``; the exceptions are
data (the tables below), not code. A resource is ``None`` when the call's parameters do not name it
(``codedeploy:GetDeployment`` names a deployment id, authorized on its deployment group): such a
request is matched on its action alone.

The policies are a function's ``Policies:`` statements in template.yaml, resolved against the
harness's context, evaluated as IAM does for what these tests need: an explicit Deny wins, then an
Allow whose action and resource patterns match. Conditions only narrow an Allow, so they are kept
(for the scoping test) but not evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlparse

from changeguard_tools.embedded.cloudtrail import is_read_only

ACCOUNT = "123456789012"

#: IAM service prefixes that differ from the botocore service name.
IAM_PREFIXES: Mapping[str, str] = {
    "resourcegroupstaggingapi": "tag",
    "dynamodbstreams": "dynamodb",
}

#: Operations that need no IAM permission at all.
UNAUTHORIZED_OPERATIONS: frozenset[tuple[str, str]] = frozenset({("sts", "GetCallerIdentity")})

#: Operations whose IAM action is not named after them (Service Authorization Reference).
ACTION_NAMES: Mapping[str, Mapping[str, str]] = {
    "s3": {
        "ListObjects": "ListBucket",
        "ListObjectsV2": "ListBucket",
        "HeadBucket": "ListBucket",
        "ListObjectVersions": "ListBucketVersions",
        "HeadObject": "GetObject",
        "GetPublicAccessBlock": "GetBucketPublicAccessBlock",
        "PutPublicAccessBlock": "PutBucketPublicAccessBlock",
        "DeletePublicAccessBlock": "PutBucketPublicAccessBlock",
        "DeleteBucketTagging": "PutBucketTagging",
        "GetBucketVersioning": "GetBucketVersioning",
        "GetObjectLockConfiguration": "GetBucketObjectLockConfiguration",
        "PutObjectLockConfiguration": "PutBucketObjectLockConfiguration",
        "DeleteObjects": "DeleteObject",
    },
    "lambda": {"Invoke": "InvokeFunction", "InvokeAsync": "InvokeFunction"},
}

#: Actions IAM also checks for a call, on other resources (the services' permission references).
#: CodeDeploy's CreateDeployment reads the deployment configuration and registers or reads the
#: application revision it deploys ("CodeDeploy permissions reference", CreateDeployment).
DEPENDENT_ACTIONS: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("codedeploy", "CreateDeployment"): (
        "codedeploy:GetDeploymentConfig",
        "codedeploy:GetApplicationRevision",
        "codedeploy:RegisterApplicationRevision",
    ),
}

#: DynamoDB's multi-item calls: the IAM action of each kind of item.
_TRANSACT_WRITE = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}
_BATCH_WRITE = {"PutRequest": "PutItem", "DeleteRequest": "DeleteItem"}


@dataclass(frozen=True, order=True)
class IamRequest:
    """One authorization AWS makes for a call: an action on a resource (``None``: not named)."""

    action: str
    resource: str | None = None

    def __str__(self) -> str:
        return f"{self.action} on {self.resource or '(resource not named by the call)'}"


def iam_prefix(service: str) -> str:
    return IAM_PREFIXES.get(service, service)


def requests_for(
    service: str, operation: str, params: Mapping[str, Any], region: str | None, account: str = ACCOUNT
) -> list[IamRequest]:
    """The IAM requests one call of ``service``/``operation`` with ``params`` makes."""
    if (service, operation) in UNAUTHORIZED_OPERATIONS:
        return []
    region = region or "us-east-1"
    prefix = iam_prefix(service)
    if service == "dynamodb":
        return list(_dynamodb(operation, params, region, account))
    action = f"{prefix}:{ACTION_NAMES.get(service, {}).get(operation, operation)}"
    resources = _resources(service, operation, params, region, account)
    requests = [IamRequest(action, r) for r in resources] if resources else [IamRequest(action)]
    return requests + [IamRequest(dependent) for dependent in DEPENDENT_ACTIONS.get((service, operation), ())]


def _table_arn(name: str, region: str, account: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:dynamodb:{region}:{account}:table/{name}"


def _dynamodb(operation: str, params: Mapping[str, Any], region: str, account: str) -> Iterator[IamRequest]:
    if operation == "TransactWriteItems":
        for item in params.get("TransactItems", []):
            for kind, action in _TRANSACT_WRITE.items():
                if kind in item:
                    yield IamRequest(f"dynamodb:{action}", _table_arn(item[kind]["TableName"], region, account))
        return
    if operation == "TransactGetItems":
        for item in params.get("TransactItems", []):
            yield IamRequest("dynamodb:GetItem", _table_arn(item["Get"]["TableName"], region, account))
        return
    if operation in ("BatchWriteItem", "BatchGetItem"):
        for table in params.get("RequestItems", {}):
            yield IamRequest(f"dynamodb:{operation}", _table_arn(table, region, account))
        return
    if "StreamArn" in params:
        yield IamRequest(f"dynamodb:{operation}", str(params["StreamArn"]))
        return
    table = params.get("TableName")
    if not table:
        yield IamRequest(f"dynamodb:{operation}")
        return
    arn = _table_arn(str(table), region, account)
    if params.get("IndexName"):
        arn = f"{arn}/index/{params['IndexName']}"
    yield IamRequest(f"dynamodb:{operation}", arn)


def _queue_arn(url: str, region: str) -> str:
    parts = [p for p in urlparse(url).path.split("/") if p]
    account, name = (parts[-2], parts[-1]) if len(parts) >= 2 else (ACCOUNT, parts[-1])
    return f"arn:aws:sqs:{region}:{account}:{name}"


def _named(value: Any, make: Any) -> list[str]:
    if value is None:
        return []
    values = value if isinstance(value, list | tuple) else [value]
    return [str(v) if str(v).startswith("arn:") else make(str(v)) for v in values]


def _resources(service: str, operation: str, params: Mapping[str, Any], region: str, account: str) -> list[str]:
    base = f"{region}:{account}"
    if service == "sqs" and params.get("QueueUrl"):
        return [_queue_arn(str(params["QueueUrl"]), region)]
    if service == "sns":
        return [str(params[k]) for k in ("TopicArn", "TargetArn") if params.get(k)]
    if service == "s3" and params.get("Bucket"):
        bucket = str(params["Bucket"])
        if params.get("Key") is not None:
            return [f"arn:aws:s3:::{bucket}/{params['Key']}"]
        return [f"arn:aws:s3:::{bucket}"]
    if service == "ssm":
        if operation == "GetParametersByPath":
            return [f"arn:aws:ssm:{base}:parameter/{str(params['Path']).strip('/')}"]
        if operation == "GetCalendarState":
            return _named(params.get("CalendarNames"), lambda n: f"arn:aws:ssm:{base}:document/{n}")
        names = params.get("Names") or params.get("Name")
        return _named(names, lambda n: f"arn:aws:ssm:{base}:parameter/{n.lstrip('/')}")
    if service == "lambda" and params.get("FunctionName"):
        return _named(params["FunctionName"], lambda n: f"arn:aws:lambda:{base}:function:{n}")
    if service == "lambda" and params.get("Resource"):  # ListTags, TagResource, UntagResource: an ARN
        return [str(params["Resource"])]
    if service == "codedeploy":
        app = params.get("applicationName")
        if params.get("resourceArn") or params.get("ResourceArn"):
            return [str(params.get("resourceArn") or params.get("ResourceArn"))]
        if app and params.get("deploymentGroupName"):
            return [f"arn:aws:codedeploy:{base}:deploymentgroup:{app}/{params['deploymentGroupName']}"]
        if app and params.get("deploymentGroupNames"):
            return [f"arn:aws:codedeploy:{base}:deploymentgroup:{app}/{g}" for g in params["deploymentGroupNames"]]
        if params.get("deploymentConfigName"):
            return [f"arn:aws:codedeploy:{base}:deploymentconfig:{params['deploymentConfigName']}"]
        if app:
            return [f"arn:aws:codedeploy:{base}:application:{app}"]
        return []
    if service == "cloudwatch":
        if params.get("ResourceARN"):
            return [str(params["ResourceARN"])]
        return _named(
            params.get("AlarmNames") or params.get("AlarmName"), lambda n: f"arn:aws:cloudwatch:{base}:alarm:{n}"
        )
    if service == "events" and (params.get("Name") or params.get("Rule")):  # a rule on the default bus
        return _named(params.get("Name") or params.get("Rule"), lambda n: f"arn:aws:events:{base}:rule/{n}")
    if service == "cloudformation" and params.get("StackName"):
        name = str(params["StackName"])
        return [name if name.startswith("arn:") else f"arn:aws:cloudformation:{base}:stack/{name}/*"]
    if service == "codepipeline":
        name = params.get("pipelineName") or params.get("name")
        return [f"arn:aws:codepipeline:{base}:{name}"] if name else []
    if service == "secretsmanager" and params.get("SecretId"):
        return [str(params["SecretId"])]
    return []


# -- policies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One resolved IAM policy statement of a function's role."""

    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: Mapping[str, Any] | None = None

    def matches_action(self, action: str) -> bool:
        return any(_glob(pattern, ignore_case=True).fullmatch(action) for pattern in self.actions)

    def matches_resource(self, resource: str | None) -> bool:
        if resource is None:
            return True
        return any(_glob(pattern).fullmatch(resource) for pattern in self.resources)

    def matches(self, request: IamRequest) -> bool:
        return self.matches_action(request.action) and self.matches_resource(request.resource)


@cache
def _glob(pattern: str, ignore_case: bool = False) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters, ``?`` any one (nothing else is special)."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def statements_of(policies: Sequence[Any]) -> list[Statement]:
    """The statements of a function's resolved ``Policies:`` (inline ``Statement`` documents only).

    A SAM policy template or a managed policy name would hide its actions from this test, so it is
    rejected: write the statements out.
    """
    out: list[Statement] = []
    for index, policy in enumerate(policies):
        if not isinstance(policy, Mapping) or "Statement" not in policy:
            raise ValueError(f"policy #{index} is not an inline statement document: {policy!r}")
        raw = policy["Statement"]
        for n, st in enumerate(raw if isinstance(raw, list) else [raw]):
            if "NotAction" in st or "NotResource" in st:
                raise ValueError(f"statement {st.get('Sid', n)} uses NotAction/NotResource")
            out.append(
                Statement(
                    sid=str(st.get("Sid") or f"#{index}.{n}"),
                    effect=str(st.get("Effect", "Allow")),
                    actions=_as_tuple(st.get("Action")),
                    resources=_as_tuple(st.get("Resource")),
                    condition=st.get("Condition"),
                )
            )
    return out


def is_allowed(statements: Iterable[Statement], request: IamRequest) -> bool:
    """Whether the statements allow the request (an explicit Deny wins)."""
    statements = list(statements)
    for st in statements:
        if st.effect == "Deny" and st.matches_action(request.action):
            # A request whose resource is not named is denied only by a Deny on every resource.
            if request.resource is None and "*" in st.resources:
                return False
            if request.resource is not None and st.matches_resource(request.resource):
                return False
    return any(st.effect == "Allow" and st.matches(request) for st in statements)


def is_mutating(action: str) -> bool:
    """Whether an IAM action changes something (CloudTrail's read-only rule, on the action name)."""
    return not is_read_only(action.split(":", 1)[1])


#: Allowed actions the least-privilege drive (test_least_privilege.py) does not reach, because the
#: path needs state or a failure that other tests set up. Per function folder: action -> the path.
#: At the end of a complete, passing test session the call recorder lists the entries no test of
#: the suite reached (``callrecorder.unreached_listed``): each is a path that needs a test, or a
#: permission the role can drop.
REACHED_BY_OTHER_TESTS: Mapping[str, Mapping[str, str]] = {
    "correlate_change": {
        "sts:AssumeRole": "an event from a member account, with an OrganizationId (tests/org/test_cross_account.py)",
        "dynamodb:Query": "an outage of the ticket source opens one degraded alert (reads the outage's entries)",
        "cloudformation:DescribeStacks": "a change CloudFormation made, its ticket in the stack's tags",
        "iam:ListRoleTags": "an IAM role's change, its ticket in the role's tags (test_missed_events.py)",
        "iam:ListUserTags": "an IAM user's change, its ticket in the user's tags (test_missed_events.py)",
        "iam:ListPolicyTags": "a managed policy's change, its ticket in the policy's tags (test_missed_events.py)",
    },
    "publish_alerts": {
        "dynamodb:DeleteItem": "Powertools Idempotency deletes its record when the publish fails",
    },
    "follow_up_changes": {
        "ssm:GetCalendarState": (
            "a change judged while the change calendar was unreadable is judged again at its own time"
            " (tests/e2e/test_follow_up.py)"
        ),
        "tag:GetResources": "a change judged while its resource's tags were unreadable (tests/e2e/test_follow_up.py)",
        "cloudformation:DescribeStacks": "a CloudFormation change judged while its stack's tags were unreadable",
        "iam:ListRoleTags": "an IAM role's change judged while the role's tags were unreadable",
        "iam:ListUserTags": "an IAM user's change judged while the user's tags were unreadable",
        "iam:ListPolicyTags": "a managed policy's change judged while the policy's tags were unreadable",
        "sts:AssumeRole": "a member account's change judged while its tags were unreadable, with an OrganizationId",
    },
    "gate_change_window": {
        "sts:AssumeRole": "an event from a member account, with an OrganizationId (tests/org/test_cross_account.py)",
        "codepipeline:StopPipelineExecution": "a pipeline execution started while the calendar is closed",
        "cloudformation:DescribeChangeSet": "a change set executed while the calendar is closed",
        "cloudformation:CancelUpdateStack": "a stack update started while the calendar is closed",
    },
    "gate_lifecycle_hook": {
        "dynamodb:PutItem": "a lifecycle hook of a deployment that exists is recorded",
        "dynamodb:Query": "a lifecycle hook of a deployment that exists is recorded (its earlier entries)",
        "ssm:GetCalendarState": "a lifecycle hook of a deployment that exists reads the calendar",
        "codedeploy:PutLifecycleEventHookExecutionStatus": "a lifecycle hook of a deployment that exists is answered",
    },
    "guard_deployment": {
        "sts:AssumeRole": "an event from a member account, with an OrganizationId (tests/org/test_cross_account.py)",
    },
    "enforce_tags": {
        "sts:AssumeRole": "an event from a member account, with an OrganizationId (tests/org/test_cross_account.py)",
        "ec2:AuthorizeSecurityGroupIngress": "a quarantined security group is released when it is tagged",
        "s3:PutBucketPolicy": "a quarantined bucket is released when it is tagged (its policy put back)",
        "lambda:PutFunctionConcurrency": "a quarantined function is released when it is tagged",
        "iam:ListRoleTags": "a created IAM role is judged on its tags (test_missed_events.py)",
    },
    "sweep_quarantine": {
        "sts:AssumeRole": "an event from a member account, with an OrganizationId (tests/org/test_cross_account.py)",
        "ec2:RevokeSecurityGroupIngress": "a world-open security group is quarantined",
        # Releases are the sweep's when the tag event never arrived (enforce_tags releases on the
        # event): tests/e2e/test_quarantine_roundtrip.py, ...tag_event_went_missing.
        "ec2:AuthorizeSecurityGroupIngress": "a quarantined security group is released",
        "ec2:DeleteTags": "a released resource loses its quarantine marks",
        "s3:DeleteBucketPolicy": "a bucket that had no policy is released",
        "lambda:DeleteFunctionConcurrency": "a function that had no reserved concurrency is released",
        "lambda:UntagResource": "a released function loses its quarantine marks",
    },
    "reconcile_changes": {
        "sts:AssumeRole": "member accounts listed, with an OrganizationId (tests/org/test_reconcile_members.py)",
        "dynamodb:Query": "a write call of the sweep window is already judged",
        "cloudformation:DescribeStacks": "a missed change CloudFormation made, its ticket in the stack's tags",
        "iam:ListUserTags": "a missed change of an IAM user, its ticket in the user's tags (test_missed_events.py)",
        "iam:ListPolicyTags": "a missed change of a managed policy, its ticket in its tags (test_missed_events.py)",
    },
}
