"""The normalized ``Change``: one infrastructure change, whatever reported it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from changeguard.domain.resources import resource_arns
from changeguard.models.cloudtrail import CloudTrailRecord


class _Own(BaseModel):
    """Our own models: strict about unknown fields, immutable once built."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


class ActorKind(StrEnum):
    IAM_USER = "iam_user"
    ASSUMED_ROLE = "assumed_role"
    ROOT = "root"
    FEDERATED = "federated"
    SSO = "sso"
    AWS_SERVICE = "aws_service"
    AWS_ACCOUNT = "aws_account"
    UNKNOWN = "unknown"


class Actor(_Own):
    """Who made a change, canonically."""

    arn: str | None = None
    kind: ActorKind = ActorKind.UNKNOWN
    account_id: str | None = None
    session_issuer_arn: str | None = None
    session_name: str | None = None
    source_identity: str | None = None
    invoked_by: str | None = None
    console: bool = False
    automation: bool = False
    user_name: str | None = None

    @property
    def pipeline_call(self) -> bool:
        """A call CloudFormation, CodeDeploy or CodePipeline made on someone's behalf (``invokedBy``).

        The change calendar gates those where they start (``gate_change_window``), not call by call.
        ``automation`` is only a description: a role session of a person running the CLI looks like it.
        """
        return (self.invoked_by or "") in _AUTOMATION_AGENTS

    @property
    def principal_arns(self) -> tuple[str, ...]:
        """Every ARN this actor can be matched by (the session and the role that issued it)."""
        return tuple(a for a in (self.arn, self.session_issuer_arn) if a)

    @property
    def display(self) -> str:
        if self.kind is ActorKind.ROOT:
            return f"root ({self.account_id})"
        name = self.user_name or self.session_name
        base = self.session_issuer_arn or self.arn or self.invoked_by or "unknown"
        return f"{name} via {base}" if name and self.kind is not ActorKind.IAM_USER else (self.arn or base)


class ChangeSource(StrEnum):
    CLOUDTRAIL = "cloudtrail"
    CONFIG = "config"


#: AWS Config namespaces (``AWS::<namespace>::<type>``) whose API is not ``<namespace>.amazonaws.com``
#: in CloudTrail. Any other namespace is its API's name in lower case (``AWS::EC2::Instance``: ec2).
#: A wrong entry makes a routed call's Config item a verdict of its own, without the actor (see
#: ``CorrelateService.judged_from_cloudtrail``). Each is the ``eventSource`` the EventBridge events
#: reference gives for the service's CloudTrail events (EFS: elasticfilesystem, Macie: macie2, ...).
_CONFIG_NAMESPACE_SOURCES = {
    "ElasticLoadBalancingV2": "elasticloadbalancing.amazonaws.com",
    "CloudWatch": "monitoring.amazonaws.com",
    "StepFunctions": "states.amazonaws.com",
    "Elasticsearch": "es.amazonaws.com",
    "OpenSearch": "es.amazonaws.com",
    "ApiGatewayV2": "apigateway.amazonaws.com",
    "MSK": "kafka.amazonaws.com",
    "WAFRegional": "waf-regional.amazonaws.com",
    "EFS": "elasticfilesystem.amazonaws.com",
    "KinesisFirehose": "firehose.amazonaws.com",
    "Cognito": "cognito-idp.amazonaws.com",  # user pools; identity pools below
    "EMR": "elasticmapreduce.amazonaws.com",
    "NetworkFirewall": "network-firewall.amazonaws.com",
    "KinesisAnalyticsV2": "kinesisanalytics.amazonaws.com",
    "Macie": "macie2.amazonaws.com",
    "EventSchemas": "schemas.amazonaws.com",
    "AmazonMQ": "mq.amazonaws.com",
    "ACMPCA": "acm-pca.amazonaws.com",
    "OpenSearchServerless": "aoss.amazonaws.com",
    "RedshiftServerless": "redshift-serverless.amazonaws.com",
}
#: Resource types whose API is not their namespace's.
_CONFIG_TYPE_SOURCES = {
    "AWS::Cognito::IdentityPool": "cognito-identity.amazonaws.com",
    "AWS::ECR::PublicRepository": "ecr-public.amazonaws.com",
}


#: Config resource types whose items record an evaluation or a node's inventory, not a change made to
#: the account: no API call causes them and they carry no ``relatedEvents``, so each would be judged
#: NO_TICKET. With all types recorded (Config's default), Config records every Config rule's result
#: per resource as ``AWS::Config::ResourceCompliance`` and per conformance pack as
#: ``AWS::Config::ConformancePackCompliance`` (developer guide, "Viewing Compliance History Timeline
#: for Resources", "Querying Compliance History for Conformance Packs"); Systems Manager's inventory
#: of a managed node and its patch and association compliance are recorded the same way. The
#: ConfigItemChanges rule drops them at the bus (template.yaml, member/member-account.yaml hold
#: the same list); the correlator drops them too.
NOT_CHANGE_RESOURCE_TYPES = frozenset(
    {
        "AWS::Config::ResourceCompliance",
        "AWS::Config::ConformancePackCompliance",
        "AWS::SSM::ManagedInstanceInventory",
        "AWS::SSM::PatchCompliance",
        "AWS::SSM::AssociationCompliance",
    }
)


#: ``configurationItemStatus`` of an item whose type the recorder does not record (Config API
#: reference, ConfigurationItem): "ResourceNotRecorded - the resource was discovered, but its
#: configuration was not recorded since the recorder doesn't record resources of this type", and
#: "ResourceDeletedNotRecorded - the resource was deleted, but ..." the same. Neither holds a
#: configuration nor ``relatedEvents``: not a change to judge, created or deleted alike.
NOT_RECORDED_STATUSES = frozenset({"ResourceNotRecorded", "ResourceDeletedNotRecorded"})


def config_event_source(resource_type: str | None) -> str | None:
    """The CloudTrail ``eventSource`` of the API that changes a Config resource type."""
    parts = (resource_type or "").split("::")
    if len(parts) != 3 or not parts[1]:
        return None
    found = _CONFIG_TYPE_SOURCES.get(resource_type or "")
    return found or _CONFIG_NAMESPACE_SOURCES.get(parts[1], f"{parts[1].lower()}.amazonaws.com")


class Change(_Own):
    """What changed, where, when and by whom. ``change_id`` is the CloudTrail ``eventID``."""

    change_id: str
    source: ChangeSource = ChangeSource.CLOUDTRAIL
    event_time: datetime
    account: str
    region: str
    service: str
    action: str
    event_name: str
    resources: tuple[str, ...] = ()
    actor: Actor = Field(default_factory=Actor)
    request_tags: dict[str, str] = Field(default_factory=dict)
    read_only: bool = False
    error_code: str | None = None
    user_agent: str | None = None
    related_event_ids: tuple[str, ...] = ()
    data_event: bool = False

    @property
    def is_change(self) -> bool:
        """A failed or read-only call changed nothing; a data event (an object read or written, a
        function invoked, a message sent) uses a resource but changes no configuration."""
        return not self.read_only and self.error_code is None and not self.data_event

    @property
    def day(self) -> str:
        return self.event_time.astimezone(UTC).strftime("%Y-%m-%d")


# Versioned Lambda API names (CreateFunction20150331, UpdateFunctionCode20150331v2).
_VERSION_SUFFIX = re.compile(r"\d{8}(v\d+)?$")

# Read-only prefixes for old records that predate the ``readOnly`` field.
_READ_PREFIXES = (
    "Get",
    "Describe",
    "List",
    "Head",
    "Lookup",
    "Search",
    "BatchGet",
    "Query",
    "Scan",
    "Select",
)
_SSO_ROLE = re.compile(r":role/(aws-reserved/sso\.amazonaws\.com/([^/]+/)?)?AWSReservedSSO_")
_AUTOMATION_AGENTS = (
    "cloudformation.amazonaws.com",
    "codedeploy.amazonaws.com",
    "codepipeline.amazonaws.com",
)


def canonical_action(event_name: str) -> str:
    """``UpdateFunctionCode20150331v2`` -> ``UpdateFunctionCode``."""
    return _VERSION_SUFFIX.sub("", event_name) or event_name


def is_read_only(record: CloudTrailRecord) -> bool:
    if record.readOnly is not None:
        return bool(record.readOnly)
    return canonical_action(record.eventName).startswith(_READ_PREFIXES)


#: ``eventCategory`` of the records that are not management events (CloudTrail record contents).
DATA_EVENT_CATEGORIES = ("Data", "NetworkActivity")


def is_data_event(record: CloudTrailRecord) -> bool:
    """A data or network-activity event: object-level use of a resource, not a configuration change.

    ``eventCategory`` is in every record since eventVersion 1.07, ``managementEvent`` since 1.06;
    a record without either (an older schema) is taken as a management event.
    """
    return record.managementEvent is False or record.eventCategory in DATA_EVENT_CATEGORIES


def federated_user_name(arn: str | None, principal_id: str | None) -> str | None:
    """The name of a GetFederationToken session: ``arn:aws:sts::<account>:federated-user/<name>``,
    principal id ``<account>:<name>``."""
    if arn and ":federated-user/" in arn:
        return arn.split(":federated-user/", 1)[1] or None
    if principal_id and ":" in principal_id:
        return principal_id.split(":", 1)[1] or None
    return None


def actor_from(record: CloudTrailRecord) -> Actor:
    """Canonical actor from ``userIdentity`` (every type CloudTrail documents)."""
    ui = record.userIdentity
    ctx = ui.sessionContext
    issuer = ctx.sessionIssuer if ctx else None
    raw_type = (ui.type or "").strip()
    console = bool(record.sessionCredentialFromConsole) or (
        (record.userAgent or "").lower().startswith(("signin.amazonaws.com", "console.amazonaws.com"))
        or "console.aws.amazon.com" in (record.userAgent or "").lower()
    )
    session_name: str | None = None
    if raw_type == "AssumedRole" and ui.arn and "/" in ui.arn:
        session_name = ui.arn.rsplit("/", 1)[1]
    issuer_arn = issuer.arn if issuer else None
    kind = {
        "IAMUser": ActorKind.IAM_USER,
        "AssumedRole": ActorKind.ASSUMED_ROLE,
        "Root": ActorKind.ROOT,
        "FederatedUser": ActorKind.FEDERATED,
        "AWSService": ActorKind.AWS_SERVICE,
        "AWSAccount": ActorKind.AWS_ACCOUNT,
        "IdentityCenterUser": ActorKind.SSO,
        "SAMLUser": ActorKind.FEDERATED,
        "WebIdentityUser": ActorKind.FEDERATED,
    }.get(raw_type, ActorKind.UNKNOWN)
    if kind is ActorKind.ASSUMED_ROLE and issuer_arn and _SSO_ROLE.search(issuer_arn):
        kind = ActorKind.SSO
    user_name = ui.userName
    if raw_type == "FederatedUser":
        # GetFederationToken: the session issuer is the IAM user that asked for the token (a broker),
        # not the person; the person is the name the token was issued for.
        user_name = federated_user_name(ui.arn, ui.principalId) or user_name
    if kind is ActorKind.SSO and session_name:
        user_name = session_name
    source_identity = ctx.sourceIdentity if ctx else None
    human = console or kind in (ActorKind.ROOT, ActorKind.SSO, ActorKind.FEDERATED) or bool(source_identity)
    if kind is ActorKind.IAM_USER:
        human = True
    automation = (
        kind is ActorKind.AWS_SERVICE
        or (ui.invokedBy or "") in _AUTOMATION_AGENTS
        or (kind is ActorKind.ASSUMED_ROLE and not human)
    )
    return Actor(
        arn=ui.arn,
        kind=kind,
        account_id=ui.accountId,
        session_issuer_arn=issuer_arn,
        session_name=session_name,
        source_identity=source_identity,
        invoked_by=ui.invokedBy,
        console=console,
        automation=automation and not console,
        user_name=user_name,
    )


def request_tags(parameters: dict[str, Any] | None, resource_type: str | None = None) -> dict[str, str]:
    """Tags a create/tag call carries, in every shape the common services use.

    An EC2 call can tag several resources, one tag specification each (``resourceType`` "instance",
    "volume", "network-interface", ...: the EC2 ``TagSpecification`` API): with ``resource_type``,
    only the specifications for that type (or naming none) count, so a launch's volume tags are never
    taken as its instance's. Without it every specification counts: a ticket id on any of them names
    the change the call belongs to, which is what the correlator asks.
    """
    if not parameters:
        return {}
    tags: dict[str, str] = {}

    def add_pairs(items: Any) -> None:
        if isinstance(items, dict) and "items" in items:
            items = items["items"]
        if isinstance(items, dict) and "Tag" in items:  # S3 TagSet
            items = items["Tag"]
            items = items if isinstance(items, list) else [items]
        if isinstance(items, dict):  # Lambda, SNS-style flat map
            for k, v in items.items():
                if isinstance(k, str) and isinstance(v, str | int | float):
                    tags[k] = str(v)
            return
        if isinstance(items, list):
            for item in items:
                if not isinstance(item, dict):
                    continue
                key = item.get("key", item.get("Key"))
                value = item.get("value", item.get("Value", ""))
                if isinstance(key, str):
                    tags[key] = "" if value is None else str(value)

    for spec in _items(parameters.get("tagSpecificationSet")) + _items(parameters.get("TagSpecifications")):
        if isinstance(spec, dict) and _for_type(spec, resource_type):
            add_pairs(spec.get("tags", spec.get("Tags")))
    for key in ("tags", "Tags", "tagSet", "tagList"):
        add_pairs(parameters.get(key))
    tagging = parameters.get("Tagging")
    if isinstance(tagging, dict):
        add_pairs(tagging.get("TagSet"))
    header = parameters.get("x-amz-tagging")  # S3 CreateBucket/PutObject: URL-encoded key=value&...
    if isinstance(header, str):
        from urllib.parse import parse_qsl

        tags.update(parse_qsl(header, keep_blank_values=True))
    return tags


def _for_type(spec: Mapping[str, Any], resource_type: str | None) -> bool:
    """Whether a tag specification tags ``resource_type`` (any type when None)."""
    named = spec.get("resourceType", spec.get("ResourceType"))
    return resource_type is None or not isinstance(named, str) or named == resource_type


def _items(value: Any) -> list[Any]:
    if isinstance(value, dict):
        value = value.get("items", [])
    return value if isinstance(value, list) else []


def synthetic_event_id(raw: dict[str, Any]) -> str:
    """A stable id for a record without ``eventID`` (some published samples): same record, same id."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"synthetic-{digest[:32]}"


def change_from_cloudtrail(record: CloudTrailRecord, account: str, region: str) -> Change:
    """Normalize a CloudTrail record; ``account``/``region`` fall back to the envelope's."""
    acct = record.recipientAccountId or record.userIdentity.accountId or account
    rgn = record.awsRegion or region
    raw = record.model_dump(mode="json", exclude_none=True)
    return Change(
        change_id=record.eventID or synthetic_event_id(raw),
        source=ChangeSource.CLOUDTRAIL,
        event_time=record.eventTime.astimezone(UTC)
        if record.eventTime.tzinfo
        else record.eventTime.replace(tzinfo=UTC),
        account=acct,
        region=rgn,
        service=record.eventSource.split(".", 1)[0],
        action=canonical_action(record.eventName),
        event_name=record.eventName,
        resources=tuple(resource_arns(record.eventSource, record.eventName, raw, rgn, acct)),
        actor=actor_from(record),
        request_tags=request_tags(record.requestParameters),
        read_only=is_read_only(record),
        error_code=record.errorCode,
        user_agent=record.userAgent,
        data_event=is_data_event(record),
    )
