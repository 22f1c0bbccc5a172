"""Create, in an AWS endpoint, the data resources template.yaml declares.

The embedded AWS cannot run CloudFormation with Lambda, so the harness creates the
stateful resources (tables, topic, queues, parameters, calendars, keys, roles) from the
template's own properties. Functions get an IAM role at the template's ``RolePath`` so
their calls carry the identity they would have in AWS, and each function's ``EventBridgeRule``
events become the rule SAM generates (logical id ``<Function><Event>``, the function its target),
so that what reads or changes the suite's rules (the heartbeat, self-protection) meets real ones.
The harness still routes events by the template's patterns itself: nothing is delivered by them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from changeguard_tools.template import Context, Template, UnresolvedError, resolve

ClientFactory = Callable[[str], Any]
SUBSCRIBER_QUEUE = "changeguard-alert-subscriber"


@dataclass
class Stack:
    """What was created: logical id -> physical id, plus attributes and the function roles."""

    ctx: Context
    created: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    function_roles: dict[str, str] = field(default_factory=dict)
    subscriber_queue_url: str | None = None


def _trust(service: str) -> str:
    return (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"'
        + service
        + '"},"Action":"sts:AssumeRole"}]}'
    )


def _name(ctx: Context, logical_id: str) -> str:
    return f"{ctx.stack_name}-{logical_id}"[:64]


def _table(clients: ClientFactory, ctx: Context, logical_id: str, props: dict[str, Any]) -> None:
    name = props.get("TableName") or _name(ctx, logical_id)
    args: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    stream = props.get("StreamSpecification")
    if stream:
        args["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    ddb = clients("dynamodb")
    desc = ddb.create_table(**args)["TableDescription"]
    ctx.refs[logical_id] = name
    ctx.attrs[(logical_id, "Arn")] = desc["TableArn"]
    if desc.get("LatestStreamArn"):
        ctx.attrs[(logical_id, "StreamArn")] = desc["LatestStreamArn"]


def _topic(clients: ClientFactory, ctx: Context, logical_id: str, props: dict[str, Any]) -> None:
    name = props.get("TopicName") or _name(ctx, logical_id)
    arn = clients("sns").create_topic(Name=name)["TopicArn"]
    ctx.refs[logical_id] = arn
    ctx.attrs[(logical_id, "TopicArn")] = arn
    ctx.attrs[(logical_id, "TopicName")] = name


def _queue(clients: ClientFactory, ctx: Context, logical_id: str, props: dict[str, Any]) -> None:
    name = props.get("QueueName") or _name(ctx, logical_id)
    sqs = clients("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    ctx.refs[logical_id] = url
    ctx.attrs[(logical_id, "Arn")] = arn
    ctx.attrs[(logical_id, "QueueName")] = name
    ctx.attrs[(logical_id, "QueueUrl")] = url


def _parameter(clients: ClientFactory, ctx: Context, logical_id: str, props: dict[str, Any]) -> None:
    name = props.get("Name") or f"/{ctx.stack_name}/{logical_id}"
    clients("ssm").put_parameter(Name=name, Value=str(props["Value"]), Type=props.get("Type", "String"), Overwrite=True)
    ctx.refs[logical_id] = name


def _key(clients: ClientFactory, ctx: Context, logical_id: str, props: dict[str, Any]) -> None:
    meta = clients("kms").create_key(Description=str(props.get("Description", logical_id)))["KeyMetadata"]
    ctx.refs[logical_id] = meta["KeyId"]
    ctx.attrs[(logical_id, "Arn")] = meta["Arn"]
    ctx.attrs[(logical_id, "KeyId")] = meta["KeyId"]


def _role(clients: ClientFactory, ctx: Context, logical_id: str, props: dict[str, Any]) -> None:
    name = props.get("RoleName") or _name(ctx, logical_id)
    role = clients("iam").create_role(
        RoleName=name,
        Path=props.get("Path", "/"),
        AssumeRolePolicyDocument=_trust("lambda.amazonaws.com"),
    )["Role"]
    ctx.refs[logical_id] = name
    ctx.attrs[(logical_id, "Arn")] = role["Arn"]
    ctx.attrs[(logical_id, "RoleId")] = role["RoleId"]


def _document(clients: ClientFactory, ctx: Context, logical_id: str, props: dict[str, Any]) -> None:
    name = props.get("Name") or _name(ctx, logical_id)
    content = props["Content"]
    clients("ssm").create_document(
        Name=name,
        Content=content if isinstance(content, str) else __import__("json").dumps(content),
        DocumentType=props.get("DocumentType", "Command"),
        DocumentFormat=props.get("DocumentFormat", "JSON"),
    )
    ctx.refs[logical_id] = name


def _bucket(clients: ClientFactory, ctx: Context, logical_id: str, props: dict[str, Any]) -> None:
    """An S3 bucket (issue 7: the evidence bucket), versioned and object-locked as the template says."""
    name = props.get("BucketName") or _name(ctx, logical_id).lower()
    s3 = clients("s3")
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=bool(props.get("ObjectLockEnabled")))
    if (props.get("VersioningConfiguration") or {}).get("Status") == "Enabled":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    ctx.refs[logical_id] = name
    ctx.attrs[(logical_id, "Arn")] = f"arn:aws:s3:::{name}"
    ctx.attrs[(logical_id, "DomainName")] = f"{name}.s3.amazonaws.com"


_CREATORS: dict[str, Callable[[ClientFactory, Context, str, dict[str, Any]], None]] = {
    "AWS::DynamoDB::Table": _table,
    "AWS::SNS::Topic": _topic,
    "AWS::SQS::Queue": _queue,
    "AWS::SSM::Parameter": _parameter,
    "AWS::SSM::Document": _document,
    "AWS::KMS::Key": _key,
    "AWS::IAM::Role": _role,
    "AWS::S3::Bucket": _bucket,
}


def _rules(template: Template, ctx: Context, clients: ClientFactory) -> None:
    """Each function's ``EventBridgeRule`` events as the rules SAM generates, targeting the function.

    SAM names the generated ``AWS::Events::Rule`` ``<FunctionLogicalId><EventName>`` and its target
    ``<that>LambdaTarget``; CloudFormation names the rule ``<stack>-<logical id>-<suffix>`` (the suffix
    left out here). ``Ref`` is the rule's name on the default bus, ``GetAtt .Arn`` its ARN.
    """
    events = clients("events")
    for function in template.functions(ctx).values():  # the patterns resolved once, as the harness routes by
        for rule in function.rules:
            rule_id = f"{rule.function}{rule.name}"
            name = f"{ctx.stack_name}-{rule_id}"[:64]
            arn = events.put_rule(Name=name, EventPattern=json.dumps(rule.pattern), State="ENABLED")["RuleArn"]
            target = ctx.attrs[(rule.function, "Arn")]
            events.put_targets(Rule=name, Targets=[{"Id": f"{rule_id}LambdaTarget", "Arn": target}])
            ctx.refs[rule_id] = name
            ctx.attrs[(rule_id, "Arn")] = arn


def provision(template: Template, ctx: Context, clients: ClientFactory, *, subscriber: bool = True) -> Stack:
    """Create every supported resource whose Condition holds, in dependency order."""
    stack = Stack(ctx=ctx)
    pending = {
        logical_id: spec
        for logical_id, spec in template.resources.items()
        if "Condition" not in spec or ctx.conditions.get(spec["Condition"], False)
    }
    for logical_id, spec in list(pending.items()):
        if spec.get("Type") not in _CREATORS:
            stack.skipped[logical_id] = spec.get("Type", "?")
            pending.pop(logical_id)
    while pending:
        progressed = False
        for logical_id, spec in list(pending.items()):
            try:
                props = resolve(spec.get("Properties", {}), ctx)
            except UnresolvedError:
                continue
            _CREATORS[spec["Type"]](clients, ctx, logical_id, props)
            stack.created.append(logical_id)
            pending.pop(logical_id)
            progressed = True
        if not progressed:
            raise UnresolvedError(f"cannot resolve properties of {sorted(pending)}")
    role_path = str(template.raw.get("Globals", {}).get("Function", {}).get("RolePath", "/"))
    iam = clients("iam")
    for logical_id in template.function_ids():
        name = f"{ctx.stack_name}-{logical_id}Role"[:64]
        arn = iam.create_role(RoleName=name, Path=role_path, AssumeRolePolicyDocument=_trust("lambda.amazonaws.com"))[
            "Role"
        ]["Arn"]
        stack.function_roles[logical_id] = arn
        ctx.attrs[(logical_id, "Arn")] = (
            f"arn:aws:lambda:{ctx.region}:{ctx.account}:function:{ctx.stack_name}-{logical_id}"
        )
        ctx.refs[logical_id] = f"{ctx.stack_name}-{logical_id}"
    _rules(template, ctx, clients)
    if subscriber and "AlertsTopic" in ctx.refs:
        sqs = clients("sqs")
        url = sqs.create_queue(QueueName=SUBSCRIBER_QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        clients("sns").subscribe(TopicArn=ctx.refs["AlertsTopic"], Protocol="sqs", Endpoint=arn)
        stack.subscriber_queue_url = url
    return stack
