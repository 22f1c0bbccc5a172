"""Where resource ids sit in CloudTrail records, as data rather than code.

Each entry maps an event name (or ``*`` for every event of that source) to the
paths that hold an id, and the ARN template that turns the id into an ARN.
Paths are dotted keys; ``[]`` walks every element of a list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from changeguard.domain.partition import partition_of

# (path, arn template). ``{v}`` is the value, ``{region}`` and ``{account}`` come from the record,
# ``{partition}`` from the region (``domain.partition``).
PathSpec = tuple[str, str]

_EC2_INSTANCE = "arn:{partition}:ec2:{region}:{account}:instance/{v}"
_EC2_SG = "arn:{partition}:ec2:{region}:{account}:security-group/{v}"
_S3 = "arn:{partition}:s3:::{v}"
_IAM_USER = "arn:{partition}:iam::{account}:user/{v}"
_IAM_ROLE = "arn:{partition}:iam::{account}:role/{v}"
_IAM_GROUP = "arn:{partition}:iam::{account}:group/{v}"
_LAMBDA = "arn:{partition}:lambda:{region}:{account}:function:{v}"
_RDS = "arn:{partition}:rds:{region}:{account}:db:{v}"
_STACK = "arn:{partition}:cloudformation:{region}:{account}:stack/{v}"
_KMS = "arn:{partition}:kms:{region}:{account}:key/{v}"
_DDB = "arn:{partition}:dynamodb:{region}:{account}:table/{v}"
_AS_IS = "{v}"
# issue 8 (self-protection): rules, parameters, documents, layers, topics and queues.
_EVENTS_RULE = "arn:{partition}:events:{region}:{account}:rule/{v}"
_SSM_DOCUMENT = "arn:{partition}:ssm:{region}:{account}:document/{v}"
_LAMBDA_LAYER = "arn:{partition}:lambda:{region}:{account}:layer:{v}"
_SSM_PARAMETER = "ssm-parameter"  # names start with "/" or not: arn ...:parameter/name either way
_SQS_URL = "sqs-url"  # https://sqs.<region>.amazonaws.com/<account>/<name>
_SSM_PARAMETER_EVENTS = ("PutParameter", "DeleteParameter", "LabelParameterVersion", "UnlabelParameterVersion")
_SSM_DOCUMENT_EVENTS = ("CreateDocument", "UpdateDocument", "DeleteDocument", "UpdateDocumentDefaultVersion")

RESOURCE_PATHS: Mapping[str, Mapping[str, tuple[PathSpec, ...]]] = {
    "ec2.amazonaws.com": {
        "RunInstances": (("responseElements.instancesSet.items[].instanceId", _EC2_INSTANCE),),
        "CreateSecurityGroup": (("responseElements.groupId", _EC2_SG),),
        "CreateTags": (("requestParameters.resourcesSet.items[].resourceId", "ec2-id"),),
        "DeleteTags": (("requestParameters.resourcesSet.items[].resourceId", "ec2-id"),),
        "*": (
            ("requestParameters.instancesSet.items[].instanceId", _EC2_INSTANCE),
            ("requestParameters.instanceId", _EC2_INSTANCE),
            ("requestParameters.groupId", _EC2_SG),
            ("requestParameters.groupIdSet.items[].groupId", _EC2_SG),
        ),
    },
    "s3.amazonaws.com": {"*": (("requestParameters.bucketName", _S3),)},
    "iam.amazonaws.com": {
        "CreatePolicy": (("responseElements.policy.arn", _AS_IS),),
        "*": (
            ("requestParameters.userName", _IAM_USER),
            ("requestParameters.roleName", _IAM_ROLE),
            ("requestParameters.groupName", _IAM_GROUP),
            ("requestParameters.policyArn", _AS_IS),
        ),
    },
    "lambda.amazonaws.com": {
        "*": (
            ("responseElements.functionArn", _AS_IS),
            ("requestParameters.functionName", _LAMBDA),
            ("requestParameters.layerName", _LAMBDA_LAYER),
        ),
    },
    "rds.amazonaws.com": {
        "*": (
            ("responseElements.dBInstanceArn", _AS_IS),
            ("requestParameters.dBInstanceIdentifier", _RDS),
        ),
    },
    "cloudformation.amazonaws.com": {
        "*": (
            ("responseElements.stackId", _AS_IS),
            ("requestParameters.stackName", _STACK),
        ),
    },
    "kms.amazonaws.com": {
        "CreateKey": (("responseElements.keyMetadata.arn", _AS_IS),),
        "*": (("requestParameters.keyId", _KMS),),
    },
    "dynamodb.amazonaws.com": {
        "*": (
            ("responseElements.tableDescription.tableArn", _AS_IS),
            ("requestParameters.tableName", _DDB),
            ("requestParameters.resourceArn", _AS_IS),
        ),
    },
    "events.amazonaws.com": {
        "PutRule": (("responseElements.ruleArn", _AS_IS),),
        "*": (
            ("requestParameters.name", _EVENTS_RULE),
            ("requestParameters.rule", _EVENTS_RULE),
        ),
    },
    "ssm.amazonaws.com": {
        **{name: (("requestParameters.name", _SSM_PARAMETER),) for name in _SSM_PARAMETER_EVENTS},
        "DeleteParameters": (("requestParameters.names[]", _SSM_PARAMETER),),
        **{name: (("requestParameters.name", _SSM_DOCUMENT),) for name in _SSM_DOCUMENT_EVENTS},
    },
    "sns.amazonaws.com": {
        "CreateTopic": (("responseElements.topicArn", _AS_IS),),
        "*": (("requestParameters.topicArn", _AS_IS),),
    },
    "sqs.amazonaws.com": {"*": (("requestParameters.queueUrl", _SQS_URL),)},
}

# EC2 ids carry their type in their prefix; CreateTags/DeleteTags name any of them.
_EC2_PREFIXES: Mapping[str, str] = {
    "i-": "instance",
    "sg-": "security-group",
    "vol-": "volume",
    "vpc-": "vpc",
    "subnet-": "subnet",
    "ami-": "image",
    "snap-": "snapshot",
    "eni-": "network-interface",
    "igw-": "internet-gateway",
    "rtb-": "route-table",
    "nat-": "natgateway",
    "lt-": "launch-template",
}


def walk(document: Any, path: str) -> Iterator[Any]:
    """Yield every value at ``path`` in ``document`` (``[]`` fans out over lists)."""
    nodes: list[Any] = [document]
    for part in path.split("."):
        fan_out = part.endswith("[]")
        key = part[:-2] if fan_out else part
        next_nodes: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict) or key not in node:
                continue
            value = node[key]
            if fan_out:
                if isinstance(value, list):
                    next_nodes.extend(value)
            else:
                next_nodes.append(value)
        nodes = next_nodes
    yield from (n for n in nodes if n is not None)


def _ec2_arn(value: str, region: str, account: str) -> str | None:
    for prefix, kind in _EC2_PREFIXES.items():
        if value.startswith(prefix):
            return f"arn:{partition_of(region)}:ec2:{region}:{account}:{kind}/{value}"
    return None


_ARN = re.compile(r"^arn:aws[a-z-]*:")
_SQS_URL_RE = re.compile(r"^[a-z]+://(?P<host>[^/]+)/(?P<account>\d{12})/(?P<name>[^/?]+)")
# sqs.<region>.amazonaws.com, <region>.queue.amazonaws.com (legacy), and the other partitions'
# domains (amazonaws.com.cn, amazonaws.eu, c2s.ic.gov, ...): the region is the host's first label
# after "sqs.", whatever the domain.
_SQS_HOST_REGION = re.compile(r"^(?:sqs\.)?(?P<region>[a-z]{2,4}(?:-[a-z]+)+-\d{1,2})\.")


def _sqs_arn(url: str, region: str) -> str | None:
    """``https://sqs.us-east-1.amazonaws.com/123456789012/q`` -> ``arn:aws:sqs:us-east-1:123456789012:q``."""
    match = _SQS_URL_RE.match(url)
    if match is None:
        return None
    host = _SQS_HOST_REGION.match(match.group("host"))
    queue_region = host.group("region") if host else region
    return f"arn:{partition_of(queue_region)}:sqs:{queue_region}:{match.group('account')}:{match.group('name')}"


def resource_arns(
    event_source: str,
    event_name: str,
    record: Mapping[str, Any],
    region: str,
    account: str,
) -> list[str]:
    """ARNs the call touched: ``resources[]`` first, then the table's paths. Order kept, no duplicates."""
    found: dict[str, None] = {}
    for res in record.get("resources") or []:
        arn = res.get("ARN") if isinstance(res, dict) else None
        if isinstance(arn, str) and arn:
            found[arn] = None
    table = RESOURCE_PATHS.get(event_source, {})
    specs = table.get(event_name, ()) + table.get("*", ())
    for path, template in specs:
        for value in walk(record, path):
            if not isinstance(value, str) or not value:
                continue
            if _ARN.match(value):
                found[value] = None
            elif template == "ec2-id":
                arn = _ec2_arn(value, region, account)
                if arn:
                    found[arn] = None
            elif template == _SSM_PARAMETER:
                found[f"arn:{partition_of(region)}:ssm:{region}:{account}:parameter/{value.lstrip('/')}"] = None
            elif template == _SQS_URL:
                arn = _sqs_arn(value, region)
                if arn:
                    found[arn] = None
            else:
                found[template.format(v=value, region=region, account=account, partition=partition_of(region))] = None
    return list(found)


def resource_type_of(arn: str) -> str:
    """A short, stable resource type for an ARN, e.g. ``ec2:instance`` or ``s3:bucket``."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return "unknown"
    service, rest = parts[2], parts[5]
    if service == "s3":
        return "s3:bucket" if "/" not in rest else "s3:object"
    kind = re.split(r"[/:]", rest, maxsplit=1)[0]
    return f"{service}:{kind}" if kind else service
