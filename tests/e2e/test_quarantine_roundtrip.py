"""Tag enforcement and quarantine against the embedded AWS, wired as template.yaml wires it.

Every call goes through the embedded AWS, whose CloudTrail hands each one to the template's rules
(as EventBridge would); the functions run with their own roles, so the trail tells exactly which
calls each function made. Per resource type, a quarantine -> release round trip leaves the
resource's describe output as it was before.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aws_lambda_powertools.utilities import parameters
from changeguard.adapters.dynamodb import item_to_entry
from changeguard.domain.policy import Policy
from changeguard.domain.quarantine import ReleaseResult
from changeguard.quarantine import QuarantineSettings, Registry
from changeguard.quarantine.security_group import world_open
from changeguard_tools.embedded import EmbeddedAWS
from changeguard_tools.harness import FixedClock, Harness, quiet_stream
from changeguard_tools.replay import wrap_record

ENFORCE, SWEEP = "EnforceTagsFunction", "SweepQuarantineFunction"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ACCOUNT, REGION = "123456789012", "us-east-1"
REQUIRED = {"ChangeTicket": "CHG-1001", "Environment": "prod", "Owner": "payments"}
SUITE_PREFIX = f"arn:aws:iam::{ACCOUNT}:role/changeguard/"


# -- the world ---------------------------------------------------------------------------------------


class World:
    """A provisioned stack in the embedded AWS, with the scenario clock and the trail at hand."""

    def __init__(self, aws: EmbeddedAWS, mode: str = "enforce", **tunables: str) -> None:
        parameters.clear_caches()
        self.aws = aws
        self.clock = FixedClock(T0)
        self.h = Harness(aws.endpoint_url, clock=self.clock, log_stream=quiet_stream())
        self.h.provision()
        self.h.put_parameter("enforcement-mode", mode)
        for name, value in tunables.items():
            self.h.put_parameter(name.replace("_", "-"), value)
        self.ec2 = self.h.admin_client("ec2")
        self.s3 = self.h.admin_client("s3")
        self.lam = self.h.admin_client("lambda")
        self.vpc = self.ec2.describe_vpcs()["Vpcs"][0]["VpcId"]

    def call(self, make: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]]]:
        """Make an operator's call and deliver what CloudTrail recorded for it through the rules."""
        before = len(self.aws.trail.records())
        response = make()
        results = [self.h.process(wrap_record(r)) for r in self.aws.trail.records()[before:]]
        for result in results:
            mine_failed(result)
        return response, results

    def at(self, moment: datetime) -> None:
        self.clock.set(moment)
        self.h.refresh_clock()

    def sweep(self) -> dict[str, Any]:
        result = self.h.run_schedule(SWEEP)
        mine_failed(result)
        return result

    def mode(self, mode: str) -> None:
        self.h.put_parameter("enforcement-mode", mode)

    def role(self, function: str) -> str:
        assert self.h.stack is not None
        return self.h.stack.function_roles[function]

    def calls_by(self, function: str, since: int = 0) -> list[dict[str, Any]]:
        """Every call the function made (as its role), from the trail."""
        role = self.role(function)
        return [
            r
            for r in self.aws.trail.records()[since:]
            if ((r.get("userIdentity") or {}).get("sessionContext") or {}).get("sessionIssuer", {}).get("arn") == role
        ]

    def mutations_by(self, function: str, since: int = 0) -> list[str]:
        """Calls that changed something other than the suite's own ledger."""
        return [
            f"{r['eventSource'].split('.')[0]}:{r['eventName']}"
            for r in self.calls_by(function, since)
            if not r.get("readOnly") and r["eventSource"] != "dynamodb.amazonaws.com"
        ]

    def ledger(self, change_id: str) -> list[Any]:
        items = self.h.admin_client("dynamodb").query(
            TableName=self.h.ctx.refs["ChangeLedgerTable"],
            KeyConditionExpression="change_id = :c",
            ExpressionAttributeValues={":c": {"S": change_id}},
        )["Items"]
        return sorted((item_to_entry(i) for i in items), key=lambda e: e.entry)

    def web_group(self, name: str = "orders-web", tags: dict[str, str] | None = None, vpc: str | None = None) -> str:
        spec = [
            {"ResourceType": "security-group", "Tags": [{"Key": k, "Value": v} for k, v in (tags or REQUIRED).items()]}
        ]
        return str(
            self.ec2.create_security_group(
                GroupName=name, Description=name, VpcId=vpc or self.vpc, TagSpecifications=spec
            )["GroupId"]
        )


def mine_failed(result: dict[str, Any]) -> None:
    """Fail on an error of the tag-enforcement functions (other functions' rules see these calls too)."""
    errors = [e for e in (result["error"] or "").split("; ") if e.startswith((ENFORCE, SWEEP, "PublishAlerts"))]
    assert not errors, errors


def outcome(results: list[dict[str, Any]], function: str = ENFORCE) -> dict[str, Any]:
    found = [o for r in results for o in r["outcomes"] if o["function"] == function]
    assert len(found) == 1, found
    return found[0]


def alerts(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for o in result["outcomes"] for a in o["alerts"]]


def flow_tags_stripped(value: Any) -> Any:
    """The describe output without the tags the flow changes on purpose: the suite's own
    bookkeeping (``changeguard:*``, gone on release) and the required tags the operator adds."""

    def keep(key: str) -> bool:
        return key not in REQUIRED and not key.startswith("changeguard:")

    if isinstance(value, list):
        return [flow_tags_stripped(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in ("Tags", "tags", "TagSet") and isinstance(item, list):
            out[key] = [t for t in item if keep(t["Key"])]
        elif key in ("Tags", "tags") and isinstance(item, dict):
            out[key] = {k: v for k, v in item.items() if keep(k)}
        else:
            out[key] = flow_tags_stripped(item)
    return out


# -- one kit per resource type: create it untagged, describe it, tag it --------------------------------


@dataclass
class Kit:
    type: str
    create: Callable[[World], str]  # -> resource id; the create call goes through the rules
    describe: Callable[[World, str], Any]  # the resource's describe output, without the required tags
    quarantined: Callable[[World, str], bool]
    tag: Callable[[World, str, dict[str, str]], Any]
    arn: Callable[[str], str]


def _instance_create(w: World) -> str:
    web, app = w.web_group("orders-web"), w.web_group("orders-app")
    (resp, results) = w.call(
        lambda: w.ec2.run_instances(
            ImageId="ami-0abcdef1234567890",
            MinCount=1,
            MaxCount=1,
            SecurityGroupIds=[web, app],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "orders-debug"}]}],
        )
    )
    assert outcome(results)["verdict"] == "NON_COMPLIANT"
    return str(resp["Instances"][0]["InstanceId"])


def _instance_describe(w: World, instance_id: str) -> Any:
    return w.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]


def _instance_quarantined(w: World, instance_id: str) -> bool:
    instance = w.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    names = {g["GroupName"] for n in instance["NetworkInterfaces"] for g in n["Groups"]}
    return names == {f"changeguard-isolation-{w.vpc}"}


def _bucket_create(w: World) -> str:
    bucket = "acme-scratch-exports"
    _, results = w.call(lambda: w.s3.create_bucket(Bucket=bucket))
    assert outcome(results)["verdict"] == "NON_COMPLIANT"
    # Its original state: a public-read policy and a partial Block Public Access (ChangeGuard's own
    # calls and these go through the rules too; neither changes the mark).
    w.call(
        lambda: w.s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": False,
                "RestrictPublicBuckets": False,
            },
        )
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    w.call(lambda: w.s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy)))
    w.call(lambda: w.s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "Name", "Value": "exports"}]}))
    return bucket


def _bucket_describe(w: World, bucket: str) -> Any:
    from botocore.exceptions import ClientError

    def get(fn: Callable[[], dict[str, Any]], key: str) -> Any:
        try:
            return fn()[key]
        except ClientError as exc:
            return exc.response["Error"]["Code"]

    return {
        "policy": get(lambda: w.s3.get_bucket_policy(Bucket=bucket), "Policy"),
        "public_access_block": get(
            lambda: w.s3.get_public_access_block(Bucket=bucket), "PublicAccessBlockConfiguration"
        ),
        "tags": get(lambda: w.s3.get_bucket_tagging(Bucket=bucket), "TagSet"),
        "acl": get(lambda: w.s3.get_bucket_acl(Bucket=bucket), "Grants"),
    }


def _bucket_quarantined(w: World, bucket: str) -> bool:
    policy = json.loads(w.s3.get_bucket_policy(Bucket=bucket)["Policy"])
    pab = w.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    return policy["Statement"][0]["Effect"] == "Deny" and all(pab.values())


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def handler(event, context):\n    return 'ok'\n")
    return buffer.getvalue()


def _function_create(w: World) -> str:
    role = w.h.admin_client("iam").create_role(RoleName="orders-report", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    _, results = w.call(
        lambda: w.lam.create_function(
            FunctionName="orders-report",
            Runtime="python3.12",
            Role=role,
            Handler="app.handler",
            Code={"ZipFile": _zip()},
            Tags={"ChangeTicket": "TBD", "Environment": "prod"},
        )
    )
    assert outcome(results)["verdict"] == "NON_COMPLIANT"
    w.call(lambda: w.lam.put_function_concurrency(FunctionName="orders-report", ReservedConcurrentExecutions=5))
    return "orders-report"


def _function_describe(w: World, name: str) -> Any:
    function = w.lam.get_function(FunctionName=name)
    function.pop("ResponseMetadata")
    function.pop("Code", None)  # a presigned download URL, new on every call
    concurrency = w.lam.get_function_concurrency(FunctionName=name)
    concurrency.pop("ResponseMetadata")
    # GetFunction returns no Tags to a caller without lambda:ListTags (the embedded AWS: any caller).
    tags = w.lam.list_tags(Resource=function["Configuration"]["FunctionArn"])["Tags"]
    return {"function": function, "concurrency": concurrency, "tags": tags}


def _function_quarantined(w: World, name: str) -> bool:
    return w.lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") == 0


def _group_create(w: World) -> str:
    resp, results = w.call(
        lambda: w.ec2.create_security_group(GroupName="orders-debug-ssh", Description="debug", VpcId=w.vpc)
    )
    assert outcome(results)["verdict"] == "NON_COMPLIANT"
    group = str(resp["GroupId"])
    w.call(
        lambda: w.ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "ssh from anywhere"}, {"CidrIp": "10.0.0.0/8"}],
                    "Ipv6Ranges": [{"CidrIpv6": "::/0"}],
                },
                {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
                {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "10.1.0.0/16"}]},
            ],
        )
    )
    return group


def _sorted_permissions(permissions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # AWS documents no order for rules or ranges (moto appends a re-authorized range at the end).
    def key(p: dict[str, Any]) -> str:
        return json.dumps(p, sort_keys=True)

    out = []
    for p in permissions:
        p = dict(p)
        for field in ("IpRanges", "Ipv6Ranges", "UserIdGroupPairs", "PrefixListIds"):
            p[field] = sorted(p.get(field, []), key=key)
        out.append(p)
    return sorted(out, key=key)


def _group_describe(w: World, group: str) -> Any:
    [g] = w.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    g["IpPermissions"] = _sorted_permissions(g["IpPermissions"])
    g["IpPermissionsEgress"] = _sorted_permissions(g["IpPermissionsEgress"])
    return g


def _group_quarantined(w: World, group: str) -> bool:
    [g] = w.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    ranges = [r["CidrIp"] for p in g["IpPermissions"] for r in p.get("IpRanges", [])]
    ranges += [r["CidrIpv6"] for p in g["IpPermissions"] for r in p.get("Ipv6Ranges", [])]
    return sorted(ranges) == ["10.0.0.0/8", "10.1.0.0/16"]


def _ec2_tag(w: World, resource_id: str, tags: dict[str, str]) -> Any:
    return w.ec2.create_tags(Resources=[resource_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def _bucket_tag(w: World, bucket: str, tags: dict[str, str]) -> Any:
    current = {t["Key"]: t["Value"] for t in w.s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    merged = {**current, **tags}
    return w.s3.put_bucket_tagging(
        Bucket=bucket, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in merged.items()]}
    )


KITS = {
    "ec2:instance": Kit(
        "ec2:instance",
        _instance_create,
        _instance_describe,
        _instance_quarantined,
        _ec2_tag,
        lambda i: f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{i}",
    ),
    "s3:bucket": Kit(
        "s3:bucket", _bucket_create, _bucket_describe, _bucket_quarantined, _bucket_tag, lambda b: f"arn:aws:s3:::{b}"
    ),
    "lambda:function": Kit(
        "lambda:function",
        _function_create,
        _function_describe,
        _function_quarantined,
        lambda w, n, tags: w.lam.tag_resource(Resource=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{n}", Tags=tags),
        lambda n: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{n}",
    ),
    "ec2:security-group": Kit(
        "ec2:security-group",
        _group_create,
        _group_describe,
        _group_quarantined,
        _ec2_tag,
        lambda g: f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{g}",
    ),
}


# -- the round trip, per type -------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", sorted(KITS))
def test_mark_quarantine_release_leaves_the_describe_output_as_it_was(aws, type_name):
    kit = KITS[type_name]
    w = World(aws)
    resource_id = kit.create(w)
    before = flow_tags_stripped(kit.describe(w, resource_id))
    change_id = f"resource:{kit.arn(resource_id)}"
    assert [e.entry for e in w.ledger(change_id) if e.kind.value == "MARK"] == ["MARK#2026-11-26T09:00:00Z"]

    w.at(T0 + timedelta(hours=24, minutes=15))
    swept = w.sweep()
    assert [a["subject"] for a in alerts(swept)] == [f"Quarantined untagged {type_name} {resource_id}"]
    assert kit.quarantined(w, resource_id)
    # The saved state is in the ledger, and the resource's tag points at it.
    [quarantine] = [e for e in w.ledger(change_id) if e.entry == "QUARANTINE#2026-11-26T09:00:00Z"]
    assert quarantine.body["saved"]
    registry = Registry({"ec2": w.ec2, "s3": w.s3, "lambda": w.lam})
    handler = registry.get(type_name)
    assert handler is not None
    ref = handler.ref(resource_id, ACCOUNT, REGION)
    state = handler.read(ref)
    assert state is not None
    assert state.tags["changeguard:quarantine-ref"] == f"{change_id}@QUARANTINE@2026-11-26T09:00:00Z"

    _, results = w.call(lambda: kit.tag(w, resource_id, REQUIRED))
    released = outcome(results)
    assert released["verdict"] == "COMPLIANT"
    assert any(a.startswith(f"released {type_name} {resource_id}: RESTORED") for a in released["actions"])
    after = kit.describe(w, resource_id)
    assert flow_tags_stripped(after) == before
    assert "changeguard:" not in json.dumps(after, default=str)  # the suite's bookkeeping is gone
    assert [e.body["result"] for e in w.ledger(change_id) if e.entry.startswith("RELEASE#")] == ["RESTORED"]


@pytest.mark.parametrize("type_name", sorted(KITS))
def test_each_class_restores_exactly_what_it_saved(aws, type_name):
    """The class alone: read, quarantine, release; the full describe output (tags too) is as before."""
    kit = KITS[type_name]
    w = World(aws, mode="observe")  # the functions stay out of it
    resource_id = kit.create(w)
    before = kit.describe(w, resource_id)
    handler = Registry({"ec2": w.ec2, "s3": w.s3, "lambda": w.lam}).get(type_name)
    assert handler is not None
    ref = handler.ref(resource_id, ACCOUNT, REGION)
    settings = QuarantineSettings(suite_role_prefix=SUITE_PREFIX)
    state = handler.read(ref)
    assert state is not None
    saved = json.loads(json.dumps(handler.quarantine(ref, state, settings)))  # as the ledger stores it
    assert kit.quarantined(w, resource_id) and kit.describe(w, resource_id) != before
    mark = len(aws.trail.records())
    again = handler.read(ref)
    assert again is not None
    handler.quarantine(ref, again, settings, saved)  # quarantining twice changes nothing more
    assert [r["eventName"] for r in aws.trail.records()[mark:] if not r.get("readOnly")] == []
    result = handler.release(ref, saved)
    assert result.result is ReleaseResult.RESTORED
    assert kit.describe(w, resource_id) == before
    assert handler.release(ref, saved).result is ReleaseResult.NOOP  # a second release: nothing to do


def test_a_function_with_no_reserved_concurrency_gets_none_back(aws):
    w = World(aws)
    role = w.h.admin_client("iam").create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    w.call(
        lambda: w.lam.create_function(
            FunctionName="ingest", Runtime="python3.12", Role=role, Handler="app.handler", Code={"ZipFile": _zip()}
        )
    )
    before = flow_tags_stripped(_function_describe(w, "ingest"))
    assert "ReservedConcurrentExecutions" not in before["concurrency"]
    w.at(T0 + timedelta(hours=25))
    swept = w.sweep()
    [alert] = alerts(swept)
    assert alert["subject"] == "Quarantined untagged lambda:function ingest"
    assert _function_quarantined(w, "ingest")
    w.call(lambda: w.lam.tag_resource(Resource=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ingest", Tags=REQUIRED))
    assert flow_tags_stripped(_function_describe(w, "ingest")) == before


# -- DRIFT ------------------------------------------------------------------------------------------


def test_groups_changed_while_quarantined_are_reported_as_drift_and_kept(aws):
    w = World(aws)
    instance_id = _instance_create(w)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    other = w.web_group("someone-elses")
    eni = w.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["NetworkInterfaces"][0]
    w.ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[other])
    tampered = _instance_describe(w, instance_id)
    since = len(aws.trail.records())

    _, results = w.call(lambda: _ec2_tag(w, instance_id, REQUIRED))
    result = outcome(results)
    assert any(a.startswith(f"DRIFT on ec2:instance {instance_id}") for a in result["actions"])
    assert [a["severity"] for a in result["alerts"]] == ["high"]
    assert result["alerts"][0]["subject"].startswith(f"DRIFT: ec2:instance {instance_id} changed while quarantined")
    after = _instance_describe(w, instance_id)
    assert flow_tags_stripped(after) == flow_tags_stripped(tampered)  # ChangeGuard removed only its own tags
    assert w.mutations_by(ENFORCE, since) == ["ec2:DeleteTags"]
    [release] = [
        e for e in w.ledger(f"resource:{KITS['ec2:instance'].arn(instance_id)}") if e.entry.startswith("RELEASE#")
    ]
    assert release.verdict == "DRIFT"


def _inbound_rules(w: World, group: str) -> dict[str, dict[str, Any]]:
    """The group's inbound rules by source and port, with their IDs and tags (DescribeSecurityGroupRules)."""
    rules = w.ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])
    return {
        f"{r.get('CidrIpv4') or r.get('CidrIpv6')}:{r['FromPort']}": r
        for r in rules["SecurityGroupRules"]
        if not r["IsEgress"]
    }


def test_a_groups_rule_ids_and_tags_are_saved_and_the_release_names_the_new_ids_and_the_lost_tags(aws):
    """A re-created rule gets a new sgr- ID (no call keeps one) and the suite may not write its owner's
    tag keys: the saved state holds each revoked rule's ID and tags, and the release says which new
    rule replaced which and which tags to put back by hand."""
    w = World(aws)
    group = _group_create(w)
    w.ec2.create_tags(
        Resources=[_inbound_rules(w, group)["0.0.0.0/0:443"]["SecurityGroupRuleId"]],
        Tags=[{"Key": "Owner", "Value": "web-team"}],
    )
    before = _inbound_rules(w, group)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    assert _group_quarantined(w, group)
    arn = KITS["ec2:security-group"].arn(group)
    # The intent entry holds the saved state; ``#contained`` records that the calls succeeded.
    [quarantine] = [e for e in w.ledger(f"resource:{arn}") if e.entry.startswith("QUARANTINE#") and "saved" in e.body]
    saved = {tuple(r["key"]): r for r in quarantine.body["saved"]["rules"]}
    assert saved[("tcp", "443", "443", "ipv4", "0.0.0.0/0")] == {
        "key": ["tcp", "443", "443", "ipv4", "0.0.0.0/0"],
        "id": before["0.0.0.0/0:443"]["SecurityGroupRuleId"],
        "tags": {"Owner": "web-team"},
    }
    assert saved[("tcp", "22", "22", "ipv6", "::/0")]["tags"] == {}

    w.call(lambda: _ec2_tag(w, group, REQUIRED))
    after = _inbound_rules(w, group)
    [release] = [e for e in w.ledger(f"resource:{arn}") if e.entry.startswith("RELEASE#")]
    assert release.verdict == "RESTORED"
    new_id, old_id = after["0.0.0.0/0:443"]["SecurityGroupRuleId"], before["0.0.0.0/0:443"]["SecurityGroupRuleId"]
    assert f"tcp 443 443 from 0.0.0.0/0 as {new_id} (was {old_id})" in release.body["calls"]
    assert f"re-tag them by hand: {new_id}: Owner=web-team" in release.body["detail"]
    assert after["10.0.0.0/8:22"]["SecurityGroupRuleId"] == before["10.0.0.0/8:22"]["SecurityGroupRuleId"]


def test_a_group_state_saved_before_rule_ids_and_tags_still_releases(aws):
    from changeguard.quarantine.security_group import SecurityGroupQuarantine

    ec2 = aws.client("ec2")
    group = ec2.create_security_group(GroupName="orders-api", Description="api")["GroupId"]
    https = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[https])
    handler = SecurityGroupQuarantine(api=ec2)
    ref = handler.ref(group, ACCOUNT, REGION)
    state = handler.read(ref)
    assert state is not None
    saved = handler.quarantine(ref, state, QuarantineSettings())
    old_format = {k: v for k, v in saved.items() if k != "rules"}
    released = handler.release(ref, old_format)
    assert released.result is ReleaseResult.RESTORED
    assert released.detail == "re-authorized 1 world-open inbound rule(s)"
    [g] = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert [r["CidrIp"] for p in g["IpPermissions"] for r in p["IpRanges"]] == ["0.0.0.0/0"]


def _recording(client: Any) -> list[str]:
    """The names of the AWS calls the client makes from now on (botocore's ``before-call`` hook)."""
    made: list[str] = []
    client.meta.events.register("before-call.ec2", lambda model, **_: made.append(model.name))
    return made


@pytest.mark.parametrize(
    ("permissions", "open_to_world"),
    [
        pytest.param([], False, id="no-inbound-rules"),
        pytest.param(
            [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "10.0.0.0/8"}]}],
            False,
            id="narrow-range",
        ),
        pytest.param(
            [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
            True,
            id="ipv4-world",
        ),
        pytest.param(
            [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}],
            True,
            id="ipv6-world",
        ),
    ],
)
def test_a_groups_rules_are_described_only_when_it_has_a_world_open_rule(aws, permissions, open_to_world):
    """Only a world-open rule is saved with its ID and tags, so only a group with one costs the second
    call (issue 9 counts AWS calls per event: every tag event and sweep reads the group)."""
    from changeguard.quarantine.security_group import SecurityGroupQuarantine

    ec2 = aws.client("ec2")
    group = ec2.create_security_group(GroupName="orders-api", Description="api")["GroupId"]
    if permissions:
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=permissions)
    handler = SecurityGroupQuarantine(api=ec2)
    made = _recording(ec2)
    state = handler.read(handler.ref(group, ACCOUNT, REGION))
    assert state is not None
    if open_to_world:
        assert made == ["DescribeSecurityGroups", "DescribeSecurityGroupRules"]
        assert [r["id"] for r in state.config["rules"]] == [
            r["SecurityGroupRuleId"]
            for r in ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group]}])[
                "SecurityGroupRules"
            ]
            if not r["IsEgress"]
        ]
    else:
        assert made == ["DescribeSecurityGroups"]
        assert state.config["rules"] == []


def test_a_world_open_group_round_trip_describes_its_rules_once_and_names_their_tags_on_release(aws):
    """Quarantine and release of a world-open group: the rules' IDs and tags are read once, before the
    revoke (the checks after the revoke and before the re-authorize see no world-open rule), and the
    release re-authorizes the rules and names the tags to put back."""
    from changeguard.quarantine.security_group import SecurityGroupQuarantine

    ec2 = aws.client("ec2")
    group = ec2.create_security_group(GroupName="orders-api", Description="api")["GroupId"]
    https = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    rule = ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[https],
        TagSpecifications=[{"ResourceType": "security-group-rule", "Tags": [{"Key": "Owner", "Value": "web-team"}]}],
    )["SecurityGroupRules"][0]["SecurityGroupRuleId"]
    handler = SecurityGroupQuarantine(api=ec2)
    ref = handler.ref(group, ACCOUNT, REGION)
    made = _recording(ec2)
    state = handler.read(ref)
    assert state is not None
    saved = json.loads(json.dumps(handler.quarantine(ref, state, QuarantineSettings())))
    assert saved["rules"] == [
        {"key": ["tcp", "443", "443", "ipv4", "0.0.0.0/0"], "id": rule, "tags": {"Owner": "web-team"}}
    ]
    released = handler.release(ref, saved)
    assert made.count("DescribeSecurityGroupRules") == 1
    assert made.index("DescribeSecurityGroupRules") < made.index("RevokeSecurityGroupIngress")
    assert released.result is ReleaseResult.RESTORED
    [g] = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert [(p["FromPort"], r["CidrIp"]) for p in g["IpPermissions"] for r in p["IpRanges"]] == [(443, "0.0.0.0/0")]
    assert "re-tag them by hand" in released.detail and "Owner=web-team" in released.detail
    assert f"(was {rule})" in released.calls[0]


def test_a_rule_left_open_by_the_revoke_fails_the_quarantine(aws):
    """AWS answers a revoke that matches no rule (in a default VPC) with success and UnknownIpPermissions,
    so a rule changed between the read and the revoke stays open: the group is described again after
    the revoke, and a world-open rule still there fails the quarantine instead of reporting it done."""
    from changeguard.domain.errors import QuarantineIncompleteError
    from changeguard.quarantine.security_group import SecurityGroupQuarantine

    ec2 = aws.client("ec2")
    group = ec2.create_security_group(GroupName="orders-api", Description="api")["GroupId"]
    https = {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[https])

    class Racing:
        """The owner opens SSH to the world between the suite's read and its revoke."""

        def __getattr__(self, name: str) -> Any:
            return getattr(ec2, name)

        def revoke_security_group_ingress(self, **kwargs: Any) -> Any:
            ssh = {**https, "FromPort": 22, "ToPort": 22}
            ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[ssh])
            return ec2.revoke_security_group_ingress(**kwargs)

    handler = SecurityGroupQuarantine(api=Racing())
    ref = handler.ref(group, ACCOUNT, REGION)
    state = handler.read(ref)
    assert state is not None
    with pytest.raises(QuarantineIncompleteError, match=r"tcp 22 22 from 0\.0\.0\.0/0"):
        handler.quarantine(ref, state, QuarantineSettings())


def test_a_bucket_policy_removed_while_quarantined_is_drift_and_stays_removed(aws):
    w = World(aws)
    bucket = _bucket_create(w)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    w.s3.delete_bucket_policy(Bucket=bucket)
    since = len(aws.trail.records())
    _, results = w.call(lambda: _bucket_tag(w, bucket, REQUIRED))
    assert any(a.startswith(f"DRIFT on s3:bucket {bucket}") for a in outcome(results)["actions"])
    assert _bucket_describe(w, bucket)["policy"] == "NoSuchBucketPolicy"
    assert all(w.s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert w.mutations_by(ENFORCE, since) == ["s3:PutBucketTagging"]  # its own tags only


def test_an_interface_attached_while_quarantined_is_ledgered_contained_and_given_its_groups_back(aws):
    w = World(aws)
    instance_id = _instance_create(w)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    [before] = _instance_describe(w, instance_id)[0]["Instances"]
    isolation = before["NetworkInterfaces"][0]["Groups"][0]["GroupId"]
    app = w.web_group("orders-batch")
    eni = w.ec2.create_network_interface(SubnetId=before["SubnetId"], Groups=[app])["NetworkInterface"]
    w.ec2.attach_network_interface(NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=instance_id, DeviceIndex=1)
    w.at(T0 + timedelta(hours=26))
    swept = w.sweep()
    assert any(a["subject"].startswith(f"DRIFT: ec2:instance {instance_id} changed while") for a in alerts(swept))

    def groups() -> dict[str, list[str]]:
        [instance] = _instance_describe(w, instance_id)[0]["Instances"]
        return {n["NetworkInterfaceId"]: [g["GroupId"] for g in n["Groups"]] for n in instance["NetworkInterfaces"]}

    assert groups()[eni["NetworkInterfaceId"]] == [isolation]  # contained too ...
    change_id = f"resource:{KITS['ec2:instance'].arn(instance_id)}"

    def recontained() -> list[Any]:
        return [e for e in w.ledger(change_id) if e.entry.startswith("QUARANTINE#") and "#recontained-" in e.entry]

    [fact] = recontained()  # ... once its groups were ledgered
    assert fact.body["overwritten"]["interfaces"][eni["NetworkInterfaceId"]] == [app]
    w.at(T0 + timedelta(hours=27))
    w.sweep()
    assert len(recontained()) == 1  # contained as before: nothing new to record
    w.call(lambda: _ec2_tag(w, instance_id, REQUIRED))
    [release] = [e for e in w.ledger(change_id) if e.entry.startswith("RELEASE#")]
    assert release.body["result"] == "RESTORED"
    restored = groups()
    assert restored[eni["NetworkInterfaceId"]] == [app]
    assert restored[before["NetworkInterfaces"][0]["NetworkInterfaceId"]] != [isolation]


def test_a_bucket_policy_put_while_quarantined_is_ledgered_before_it_is_contained_again(aws):
    w = World(aws)
    bucket = _bucket_create(w)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    owner = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "OwnerNewPolicy",
                    "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                }
            ],
        }
    )
    w.s3.put_bucket_policy(Bucket=bucket, Policy=owner)
    w.at(T0 + timedelta(hours=26))
    w.sweep()
    assert "OwnerNewPolicy" not in w.s3.get_bucket_policy(Bucket=bucket)["Policy"]  # contained again ...
    change_id = f"resource:{KITS['s3:bucket'].arn(bucket)}"
    [fact] = [e for e in w.ledger(change_id) if e.entry.startswith("QUARANTINE#") and "#recontained-" in e.entry]
    assert json.loads(fact.body["overwritten"]["policy"]) == json.loads(owner)  # ... and the owner's policy is kept


@pytest.mark.parametrize(
    "reopened",
    [
        pytest.param({"FromPort": 3389, "ToPort": 3389, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}, id="another-port"),
        pytest.param(
            {"FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "temp"}]},
            id="a-saved-rule-with-another-description",
        ),
        pytest.param({"FromPort": 22, "ToPort": 22, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, id="half-a-saved-rule"),
    ],
)
def test_a_group_opened_to_the_world_while_quarantined_is_contained_again_and_released_as_first_saved(aws, reopened):
    """Re-containment revokes the world-open rules the group has now, not the ones saved: a rule on
    another port, a saved rule with another description (a revoke needs none) and one half of a saved
    IPv4 and IPv6 rule (whose other half is gone, so revoking the saved rule would fail) are all closed.
    The release still puts back exactly the first-saved rules; the ones added meanwhile are in the
    ``#recontained-`` entry, for restoring by hand."""
    w = World(aws)
    group = _group_create(w)
    before = flow_tags_stripped(_group_describe(w, group))
    w.at(T0 + timedelta(hours=24, minutes=15))
    w.sweep()
    assert _group_quarantined(w, group)
    w.call(
        lambda: w.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{"IpProtocol": "tcp", **reopened}])
    )
    assert not _group_quarantined(w, group)

    w.at(T0 + timedelta(hours=24, minutes=30))
    swept = w.sweep()
    assert [a["subject"] for a in alerts(swept)] == [
        f"DRIFT: ec2:security-group {group} changed while quarantined; contained again"
    ]
    assert _group_quarantined(w, group)  # closed again, as the alert says
    change_id = f"resource:{KITS['ec2:security-group'].arn(group)}"
    [fact] = [e for e in w.ledger(change_id) if e.entry.startswith("QUARANTINE#") and "#recontained-" in e.entry]
    assert world_open(fact.body["overwritten"]["ingress"]) == [{"IpProtocol": "tcp", **reopened}]
    w.at(T0 + timedelta(hours=24, minutes=45))
    assert alerts(w.sweep()) == [] and _group_quarantined(w, group)  # nothing new: contained as before

    _, results = w.call(lambda: _ec2_tag(w, group, REQUIRED))
    assert any(a.startswith(f"released ec2:security-group {group}: RESTORED") for a in outcome(results)["actions"])
    assert flow_tags_stripped(_group_describe(w, group)) == before  # the first-saved rules, and only those


# -- observe mode makes no change ---------------------------------------------------------------------


def test_observe_mode_marks_nothing_and_makes_no_mutating_call(aws):
    w = World(aws, mode="observe")
    aws.record_read_only = True  # the reads are recorded too: it did look
    since = len(aws.trail.records())
    instance_id = _instance_create(w)
    reads = [r["eventName"] for r in w.calls_by(ENFORCE, since) if r.get("readOnly")]
    assert "DescribeInstances" in reads
    assert w.mutations_by(ENFORCE, since) == []
    ledger_writes = [
        r for r in w.calls_by(ENFORCE, since) if r["eventSource"] == "dynamodb.amazonaws.com" and not r["readOnly"]
    ]
    assert ledger_writes and all(
        (r["requestParameters"].get("tableName") or r["requestParameters"]["transactItems"][0]["put"]["tableName"])
        == w.h.ctx.refs["ChangeLedgerTable"]
        for r in ledger_writes
    )
    tags = w.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["Tags"]
    assert not any(t["Key"].startswith("changeguard:") for t in tags)


def test_observe_mode_reports_would_quarantine_and_would_release_with_zero_mutating_calls(aws):
    w = World(aws)
    instance_id = _instance_create(w)  # marked while enforcing
    w.mode("observe")
    w.at(T0 + timedelta(hours=25))
    since = len(aws.trail.records())
    swept = w.sweep()
    assert swept["outcomes"][0]["actions"] == [f"would quarantine ec2:instance {instance_id}"]
    assert [a["subject"] for a in alerts(swept)] == [f"Would quarantine untagged ec2:instance {instance_id}"]
    assert w.sweep()["outcomes"][0]["alerts"] == []  # reported once per episode, not every run
    assert not _instance_quarantined(w, instance_id)
    assert w.mutations_by(SWEEP, since) == []

    w.mode("enforce")
    w.sweep()
    assert _instance_quarantined(w, instance_id)
    w.mode("observe")
    w.ec2.create_tags(Resources=[instance_id], Tags=[{"Key": k, "Value": v} for k, v in REQUIRED.items()])
    since = len(aws.trail.records())
    would = w.sweep()
    assert would["outcomes"][0]["actions"] == [f"would release ec2:instance {instance_id}: RESTORED"]
    assert _instance_quarantined(w, instance_id)
    assert w.mutations_by(SWEEP, since) == []


# -- exemptions, the suite's own, the unreadable -----------------------------------------------------------


def test_the_exempt_tag_is_honoured(aws):
    w = World(aws)
    web = w.web_group()
    since = len(aws.trail.records())
    _, results = w.call(
        lambda: w.ec2.run_instances(
            ImageId="ami-0abcdef1234567890",
            MinCount=1,
            MaxCount=1,
            SecurityGroupIds=[web],
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "changeguard:exempt", "Value": "load test"}]}
            ],
        )
    )
    assert outcome(results)["verdict"] == "EXEMPT"
    assert w.mutations_by(ENFORCE, since) == []


def test_a_launch_with_the_required_tags_on_its_volumes_only_marks_the_instance(aws):
    w = World(aws)
    web = w.web_group()
    tags = [{"Key": k, "Value": v} for k, v in REQUIRED.items()]
    resp, results = w.call(
        lambda: w.ec2.run_instances(
            ImageId="ami-0abcdef1234567890",
            MinCount=1,
            MaxCount=1,
            SecurityGroupIds=[web],
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "orders-debug"}]},
                {"ResourceType": "volume", "Tags": tags},
            ],
        )
    )
    instance_id = resp["Instances"][0]["InstanceId"]
    assert outcome(results)["verdict"] == "NON_COMPLIANT"
    change_id = f"resource:arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"
    assert [e.entry for e in w.ledger(change_id) if e.kind.value == "MARK"] == ["MARK#2026-11-26T09:00:00Z"]


def test_an_instance_named_like_the_suites_own_is_still_marked(aws):
    """Its Name tag is the owner's to set: changeguard-... there must not exempt it from enforcement."""
    w = World(aws)
    web = w.web_group()
    resp, results = w.call(
        lambda: w.ec2.run_instances(
            ImageId="ami-0abcdef1234567890",
            MinCount=1,
            MaxCount=1,
            SecurityGroupIds=[web],
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "changeguard-worker"}]}],
        )
    )
    instance_id = resp["Instances"][0]["InstanceId"]
    assert outcome(results)["verdict"] == "NON_COMPLIANT"
    change_id = f"resource:arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"
    assert [e.entry for e in w.ledger(change_id) if e.kind.value == "MARK"] == ["MARK#2026-11-26T09:00:00Z"]


def test_exempt_principals_are_honoured(aws):
    w = World(aws, exempt_principal_arns=f"arn:aws:iam::{ACCOUNT}:user/mo*")  # the embedded AWS's operator
    since = len(aws.trail.records())
    _, results = w.call(lambda: w.ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1))
    result = outcome(results)
    assert result["verdict"] == "EXEMPT" and result["alerts"] == []
    assert w.mutations_by(ENFORCE, since) == []


def test_the_suites_own_calls_never_reach_it(aws):
    w = World(aws)
    instance_id = _instance_create(w)  # ChangeGuard tagged it: a CreateTags by its own role
    [own] = [r for r in w.calls_by(ENFORCE) if r["eventName"] == "CreateTags"]
    assert instance_id in own["requestParameters"]["resources"]
    assert w.h.route(wrap_record(own)) == []  # no rule matches: no loop


def test_the_isolation_group_is_the_suites_own_and_never_quarantined(aws):
    w = World(aws)
    _instance_create(w)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    [isolation] = w.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"changeguard-isolation-{w.vpc}"]}]
    )["SecurityGroups"]
    assert isolation["IpPermissions"] == [] and isolation["IpPermissionsEgress"] == []
    assert {"Key": "changeguard:managed", "Value": "true"} in isolation["Tags"]
    # Someone removes a tag from it: ChangeGuard looks, and leaves its own group alone.
    since = len(aws.trail.records())
    _, results = w.call(lambda: w.ec2.delete_tags(Resources=[isolation["GroupId"]], Tags=[{"Key": "Name"}]))
    assert outcome(results)["verdict"] == "SKIPPED"
    assert w.mutations_by(ENFORCE, since) == []


def test_a_resource_it_cannot_read_is_left_alone(aws):
    w = World(aws)
    event = json.loads(json.dumps(wrap_record({
        "eventVersion": "1.09", "eventTime": "2026-11-25T09:00:00Z", "eventSource": "ec2.amazonaws.com",
        "eventName": "RunInstances", "awsRegion": REGION, "eventID": "gone-1", "recipientAccountId": ACCOUNT,
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/dave", "accountId": ACCOUNT},
        "responseElements": {"instancesSet": {"items": [{"instanceId": "i-0000000000000dead"}]}},
    })))  # fmt: skip
    result = w.h.process(event)
    assert outcome([result])["verdict"] == "SKIPPED"
    assert w.mutations_by(ENFORCE) == []


# -- the cap, idempotency ------------------------------------------------------------------------------------


def test_the_cap_stops_the_run_and_alerts_and_the_next_run_goes_on(aws):
    w = World(aws, quarantine_max_resources="2")
    web = w.web_group()
    resp, _ = w.call(
        lambda: w.ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=3, MaxCount=3, SecurityGroupIds=[web])
    )
    ids = [i["InstanceId"] for i in resp["Instances"]]
    w.at(T0 + timedelta(hours=25))
    swept = w.sweep()
    subjects = [a["subject"] for a in alerts(swept)]
    assert sum(s.startswith("Quarantined untagged") for s in subjects) == 2
    assert any(s.startswith("Quarantine cap hit: 1 resource(s) left unquarantined") for s in subjects)
    assert sum(_instance_quarantined(w, i) for i in ids) == 2
    w.at(T0 + timedelta(hours=25, minutes=15))
    w.sweep()
    assert all(_instance_quarantined(w, i) for i in ids)


def test_a_sweep_run_delivered_again_shares_its_cap_and_alerts_it_once(aws):
    """Lambda retries a failed sweep (and may deliver any event twice) with the same scheduled event:
    the run is that event, so the second delivery counts what the first quarantined (its ``TAKEN#``
    entries) and quarantines nothing past the cap, nor alerts the cap again. The next run goes on."""
    w = World(aws, quarantine_max_resources="2")
    web = w.web_group()
    resp, _ = w.call(
        lambda: w.ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=3, MaxCount=3, SecurityGroupIds=[web])
    )
    ids = [i["InstanceId"] for i in resp["Instances"]]
    w.at(T0 + timedelta(hours=25))
    event = w.h.scheduled_event(SWEEP)
    for delay in (0, 1):
        w.at(T0 + timedelta(hours=25, minutes=delay))
        assert w.h.invoke(SWEEP, event).error is None
        assert sum(_instance_quarantined(w, i) for i in ids) == 2, f"after {delay} min"
    cap = [e for e in w.ledger("quarantine-cap:sweep_quarantine") if e.kind.value == "QUARANTINE"]
    assert sorted(e.entry.split("#")[0] for e in cap) == ["CAP", "TAKEN", "TAKEN"]
    assert len([e for e in w.ledger("quarantine-cap:sweep_quarantine") if e.kind.value == "ALERT"]) == 1
    w.at(T0 + timedelta(hours=25, minutes=15))
    w.sweep()
    assert all(_instance_quarantined(w, i) for i in ids)


def test_quarantining_twice_is_one_set_of_changes(aws):
    w = World(aws)
    instance_id = _instance_create(w)
    w.at(T0 + timedelta(hours=25))
    since = len(aws.trail.records())
    w.sweep()
    first = w.mutations_by(SWEEP, since)
    assert first.count("ec2:ModifyNetworkInterfaceAttribute") == 1 and "ec2:CreateSecurityGroup" in first
    since = len(aws.trail.records())
    again = w.sweep()
    assert w.mutations_by(SWEEP, since) == [] and alerts(again) == []
    # The same CloudTrail event delivered twice changes nothing either.
    record = next(r for r in aws.trail.records() if r["eventName"] == "RunInstances")
    since = len(aws.trail.records())
    w.h.process(wrap_record(record))
    assert w.mutations_by(ENFORCE, since) == [] and _instance_quarantined(w, instance_id)


def test_the_isolation_group_is_reused_across_instances(aws):
    w = World(aws)
    first, second = _instance_create(w), _instance_create_plain(w)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    groups = w.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"changeguard-isolation-{w.vpc}"]}]
    )
    assert len(groups["SecurityGroups"]) == 1
    assert _instance_quarantined(w, first) and _instance_quarantined(w, second)


def _instance_create_plain(w: World) -> str:
    resp, _ = w.call(lambda: w.ec2.run_instances(ImageId="ami-0abcdef1234567890", MinCount=1, MaxCount=1))
    return str(resp["Instances"][0]["InstanceId"])


# -- an instance in two VPCs (a multi-VPC attachment) ---------------------------------------------------


def _second_vpc_interface(w: World, instance_id: str) -> tuple[str, str]:
    """Attach an interface whose subnet is in a second VPC (same account and zone); (its id, that VPC)."""
    [instance] = _instance_describe(w, instance_id)[0]["Instances"]
    vpc = w.ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = w.ec2.create_subnet(
        VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone=instance["Placement"]["AvailabilityZone"]
    )["Subnet"]["SubnetId"]
    db = w.web_group("orders-db", vpc=vpc)
    eni = w.ec2.create_network_interface(SubnetId=subnet, Groups=[db])["NetworkInterface"]["NetworkInterfaceId"]
    w.ec2.attach_network_interface(NetworkInterfaceId=eni, InstanceId=instance_id, DeviceIndex=1)
    return eni, vpc


def _interface_groups(w: World, instance_id: str) -> dict[str, list[str]]:
    """Group names per interface."""
    [instance] = _instance_describe(w, instance_id)[0]["Instances"]
    return {n["NetworkInterfaceId"]: [g["GroupName"] for g in n["Groups"]] for n in instance["NetworkInterfaces"]}


def test_an_instance_in_two_vpcs_gets_each_vpcs_isolation_group_and_its_groups_back(aws):
    """Each interface gets the isolation group of its own VPC (AWS refuses another VPC's group), the
    saved state says which VPC each interface is in, and the release puts every group back."""
    w = World(aws)
    instance_id = _instance_create(w)
    eni, vpc = _second_vpc_interface(w, instance_id)
    primary = next(e for e in _interface_groups(w, instance_id) if e != eni)
    before = flow_tags_stripped(_instance_describe(w, instance_id))

    w.at(T0 + timedelta(hours=25))
    swept = w.sweep()
    assert [a["subject"] for a in alerts(swept)] == [f"Quarantined untagged ec2:instance {instance_id}"]
    assert _interface_groups(w, instance_id) == {
        primary: [f"changeguard-isolation-{w.vpc}"],
        eni: [f"changeguard-isolation-{vpc}"],
    }
    change_id = f"resource:{KITS['ec2:instance'].arn(instance_id)}"
    [quarantine] = [e for e in w.ledger(change_id) if e.entry.startswith("QUARANTINE#") and "saved" in e.body]
    assert quarantine.body["saved"]["interface_vpcs"] == {primary: w.vpc, eni: vpc}

    _, results = w.call(lambda: _ec2_tag(w, instance_id, REQUIRED))
    assert any(a.startswith(f"released ec2:instance {instance_id}: RESTORED") for a in outcome(results)["actions"])
    assert flow_tags_stripped(_instance_describe(w, instance_id)) == before


def _quarantined_in_the_old_format(w: World, instance_id: str) -> tuple[Any, Any, dict[str, Any]]:
    """The class, the ref and the saved state as the code before per-interface VPCs wrote it."""
    handler = Registry({"ec2": w.ec2}).get("ec2:instance")
    assert handler is not None
    ref = handler.ref(instance_id, ACCOUNT, REGION)
    state = handler.read(ref)
    assert state is not None
    [instance] = _instance_describe(w, instance_id)[0]["Instances"]
    saved = {
        "vpc_id": instance["VpcId"],
        "interfaces": {
            n["NetworkInterfaceId"]: [g["GroupId"] for g in n["Groups"]] for n in instance["NetworkInterfaces"]
        },
        "isolation_group_name": f"changeguard-isolation-{instance['VpcId']}",
    }
    return handler, ref, saved


def test_a_saved_state_of_the_old_format_still_releases(aws):
    w = World(aws, mode="observe")  # the functions stay out of it
    instance_id = _instance_create(w)
    before = _instance_describe(w, instance_id)
    handler, ref, saved = _quarantined_in_the_old_format(w, instance_id)
    state = handler.read(ref)
    handler.quarantine(ref, state, QuarantineSettings(suite_role_prefix=SUITE_PREFIX), saved)
    assert _instance_quarantined(w, instance_id)
    assert handler.release(ref, saved).result is ReleaseResult.RESTORED
    assert _instance_describe(w, instance_id) == before


def test_an_old_format_state_of_a_half_isolated_two_vpc_instance_converges_and_releases(aws):
    """The code before isolated the primary interface, then failed on the one in another VPC, every run.
    Its saved state (one VPC for all) is what the ledger holds: the next run finishes the quarantine
    with it, and the release tells each interface's isolation group by the interface's own VPC."""
    w = World(aws, mode="observe")
    instance_id = _instance_create(w)
    eni, vpc = _second_vpc_interface(w, instance_id)
    before = _instance_describe(w, instance_id)
    handler, ref, saved = _quarantined_in_the_old_format(w, instance_id)
    primary = next(e for e in saved["interfaces"] if e != eni)
    w.ec2.modify_network_interface_attribute(
        NetworkInterfaceId=primary, Groups=[handler.isolation_group(ref, saved["vpc_id"])]
    )  # as far as the code before got
    handler.quarantine(ref, handler.read(ref), QuarantineSettings(suite_role_prefix=SUITE_PREFIX), saved)
    assert _interface_groups(w, instance_id) == {
        primary: [f"changeguard-isolation-{w.vpc}"],
        eni: [f"changeguard-isolation-{vpc}"],
    }
    assert handler.release(ref, saved).result is ReleaseResult.RESTORED
    assert _instance_describe(w, instance_id) == before


def test_the_lambda_alert_says_what_happens_to_async_events(aws):
    w = World(aws)
    _function_create(w)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    entries = w.ledger(f"resource:arn:aws:lambda:{REGION}:{ACCOUNT}:function:orders-report")
    [alert] = [e for e in entries if e.entry.startswith("ALERT#sweep_quarantine#quarantine#")]
    assert "retried for up to 6 hours and then dropped" in alert.body["alert"]["summary"]


def test_function_tags_are_read_with_list_tags_so_tagged_functions_are_left_alone(aws):
    """GetFunction returns no Tags to a caller without lambda:ListTags (the embedded AWS answers every
    caller so): the functions read tags with ListTags, as their roles allow. A fully tagged function
    that loses an unrelated tag stays compliant and the sweep leaves it alone; one missing a required
    tag is quarantined, and released when that one tag is added."""
    w = World(aws)
    role = w.h.admin_client("iam").create_role(RoleName="fns", AssumeRolePolicyDocument="{}")["Role"]["Arn"]

    def create(name: str, tags: dict[str, str]) -> str:
        w.call(
            lambda: w.lam.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": _zip()},
                Tags=tags,
            )
        )
        w.call(lambda: w.lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5))
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"

    tagged = create("billing", {**REQUIRED, "CostCenter": "cc-7"})
    _, results = w.call(lambda: w.lam.untag_resource(Resource=tagged, TagKeys=["CostCenter"]))
    assert outcome(results)["verdict"] == "COMPLIANT"
    missing = create("ingest", {"ChangeTicket": "CHG-1001", "Environment": "prod"})

    w.at(T0 + timedelta(hours=25))
    swept = w.sweep()
    assert [a["subject"] for a in alerts(swept)] == ["Quarantined untagged lambda:function ingest"]
    assert not _function_quarantined(w, "billing") and _function_quarantined(w, "ingest")
    assert "changeguard:quarantine-after" not in w.lam.list_tags(Resource=tagged)["Tags"]

    _, results = w.call(lambda: w.lam.tag_resource(Resource=missing, Tags={"Owner": "payments"}))
    released = outcome(results)
    assert released["verdict"] == "COMPLIANT"
    assert any(a.startswith("released lambda:function ingest: RESTORED") for a in released["actions"])
    assert w.lam.get_function_concurrency(FunctionName="ingest")["ReservedConcurrentExecutions"] == 5


def test_a_reservation_taken_by_others_while_quarantined_is_drift_and_the_function_runs_again(aws):
    """AWS keeps at least 100 of the account's 1000 concurrent executions unreserved. While the function
    sits at 0, another reserves that capacity: putting the saved reservation back is refused. The release
    removes the 0 (the function runs again, unreserved) and reports DRIFT saying what is missing and why,
    once; the next sweep does not fail on it."""
    w = World(aws)
    role = w.h.admin_client("iam").create_role(RoleName="fns", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    for name in ("ingest", "hog"):
        w.call(
            lambda name=name: w.lam.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role,
                Handler="app.handler",
                Code={"ZipFile": _zip()},
                Tags={"ChangeTicket": "CHG-1001", "Environment": "prod"} if name == "ingest" else REQUIRED,
            )
        )
    w.call(lambda: w.lam.put_function_concurrency(FunctionName="ingest", ReservedConcurrentExecutions=500))
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    assert _function_quarantined(w, "ingest")
    w.call(lambda: w.lam.put_function_concurrency(FunctionName="hog", ReservedConcurrentExecutions=450))

    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ingest"
    _, results = w.call(lambda: w.lam.tag_resource(Resource=arn, Tags={"Owner": "payments"}))
    released = outcome(results)
    assert released["verdict"] == "COMPLIANT"
    assert any(a.startswith("DRIFT on lambda:function ingest") for a in released["actions"])
    assert "ReservedConcurrentExecutions" not in w.lam.get_function_concurrency(FunctionName="ingest")
    entries = w.ledger(f"resource:{arn}")
    [alert] = [e for e in entries if e.entry.startswith("ALERT#") and e.body["alert"]["subject"].startswith("DRIFT")]
    summary = alert.body["alert"]["summary"]
    assert "reserved concurrency 500 could not be restored" in summary and "unreserved" in summary
    w.at(T0 + timedelta(hours=27))
    mine_failed(w.sweep())


def test_policy_defaults_match_the_template(aws):
    w = World(aws)
    defaults = w.h.template.parameter_defaults()
    assert float(defaults["QuarantineGraceHours"]) == Policy().quarantine_grace_hours
    assert int(defaults["QuarantineMaxResources"]) == Policy().quarantine_max_resources


def test_every_bucket_call_names_the_expected_owner(aws):
    """A bucket of the same name in another account is never touched: S3 checks ExpectedBucketOwner."""
    aws.record_read_only = True
    w = World(aws)
    bucket = _bucket_create(w)
    w.at(T0 + timedelta(hours=25))
    w.sweep()
    w.call(lambda: _bucket_tag(w, bucket, REQUIRED))
    calls = [r for f in (ENFORCE, SWEEP) for r in w.calls_by(f) if r["eventSource"] == "s3.amazonaws.com"]
    names = {r["eventName"] for r in calls}
    assert {
        "GetBucketPolicy",
        "PutBucketPolicy",
        "GetPublicAccessBlock",
        "PutPublicAccessBlock",
        "PutBucketTagging",
    } <= names
    assert all(r["requestParameters"].get("ExpectedBucketOwner") == ACCOUNT for r in calls)


def test_the_demo_scenario_isolates_the_untagged_instance_and_gives_its_groups_back(aws):
    """events/scenario/40-quarantine.yaml, step by step, through the demo's own step runner."""
    import yaml
    from changeguard_tools import fixtures
    from changeguard_tools.demo import SCENARIO, run_step

    doc = yaml.safe_load((SCENARIO / "40-quarantine.yaml").read_text())
    w = World(aws, mode="observe")
    fixtures.seed(w.h, doc.get("fixtures") or {})
    saved: dict[str, str] = {}
    by_title: dict[str, list[dict[str, Any]]] = {}
    for step in doc["steps"]:
        results = [result for _, result in run_step(w.h, aws, step, saved)]
        for result in results:
            mine_failed(result)
        by_title[step["title"]] = results

    def said(prefix: str, function: str = ENFORCE) -> dict[str, Any]:
        [results] = [r for t, r in by_title.items() if t.startswith(prefix)]
        return outcome(results, function)

    instance = saved["instance_id"]
    assert said("An engineer launches")["actions"] == [
        f"marked ec2:instance {instance}: quarantine after 2026-11-26T09:00:00Z"
    ]
    assert said("The quarantine sweep isolates", SWEEP)["actions"][0].startswith(f"quarantined ec2:instance {instance}")
    assert said("The sweep runs again", SWEEP)["actions"] == []
    released = said("The engineer tags it")
    assert released["actions"][0].startswith(f"released ec2:instance {instance}: RESTORED")
    assert said("A load-test instance")["verdict"] == "EXEMPT"
    groups = w.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["SecurityGroups"]
    assert [g["GroupId"] for g in groups] == [saved["web_sg"]]
    # The scenario hands the next one the demo's start: observe mode, at the start time.
    assert w.clock.now() == datetime(2026, 11, 21, tzinfo=UTC)


# -- the tag event that never arrived: the sweep releases ---------------------------------------------------


def test_the_sweep_releases_what_was_tagged_while_its_tag_event_went_missing(aws):
    """CloudTrail delivers best effort: a resource tagged while quarantined whose tag event never reached
    ``enforce_tags`` is released by the next sweep, and each comes back exactly as it was: the world-open
    rules re-authorized, the bucket without a policy again (it had none), the function without reserved
    concurrency again (it had none), and the suite's marks gone."""
    w = World(aws)
    group = _group_create(w)  # world-open ingress, ipv4 and ipv6, next to a narrower rule
    bucket = "acme-unowned-scratch"
    _, results = w.call(lambda: w.s3.create_bucket(Bucket=bucket))
    assert outcome(results)["verdict"] == "NON_COMPLIANT"
    role = w.h.admin_client("iam").create_role(RoleName="ingest", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    _, results = w.call(
        lambda: w.lam.create_function(
            FunctionName="ingest", Runtime="python3.12", Role=role, Handler="app.handler", Code={"ZipFile": _zip()}
        )
    )
    assert outcome(results)["verdict"] == "NON_COMPLIANT"
    before = {
        "group": flow_tags_stripped(_group_describe(w, group)),
        "bucket": flow_tags_stripped(_bucket_describe(w, bucket)),
        "function": flow_tags_stripped(_function_describe(w, "ingest")),
    }
    assert before["bucket"]["policy"] == "NoSuchBucketPolicy"
    assert "ReservedConcurrentExecutions" not in before["function"]["concurrency"]

    w.at(T0 + timedelta(hours=25))
    w.sweep()
    assert _group_quarantined(w, group) and _bucket_quarantined(w, bucket) and _function_quarantined(w, "ingest")

    # Tagged by their owners; the calls are made, their events never delivered.
    _ec2_tag(w, group, REQUIRED)
    _bucket_tag(w, bucket, REQUIRED)  # PutBucketTagging replaces the set: the owner keeps what is there
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:ingest"
    w.lam.tag_resource(Resource=function_arn, Tags=REQUIRED)
    assert _group_quarantined(w, group) and _bucket_quarantined(w, bucket) and _function_quarantined(w, "ingest")

    w.at(T0 + timedelta(hours=25, minutes=15))
    since = len(aws.trail.records())
    swept = w.sweep()

    actions = swept["outcomes"][0]["actions"]
    for short in (f"ec2:security-group {group}", f"s3:bucket {bucket}", "lambda:function ingest"):
        assert any(a.startswith(f"released {short}: RESTORED") for a in actions), actions
    assert sorted(w.mutations_by(SWEEP, since)) == sorted(
        [
            "ec2:AuthorizeSecurityGroupIngress",  # the revoked world-open rules, exactly as they were
            "ec2:DeleteTags",
            "s3:DeletePublicAccessBlock",  # it had none
            "s3:DeleteBucketPolicy",  # it had none
            "s3:PutBucketTagging",  # the owner's tags stay, the suite's go
            "lambda:DeleteFunctionConcurrency20171031",  # it had none (CloudTrail's versioned names)
            "lambda:UntagResource20170331v2",
        ]
    )
    assert flow_tags_stripped(_group_describe(w, group)) == before["group"]
    assert flow_tags_stripped(_bucket_describe(w, bucket)) == before["bucket"]
    assert flow_tags_stripped(_function_describe(w, "ingest")) == before["function"]
    for described in (_group_describe(w, group), _bucket_describe(w, bucket), _function_describe(w, "ingest")):
        assert "changeguard:" not in json.dumps(described, default=str)  # the marks are gone
    for arn in (f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/{group}", f"arn:aws:s3:::{bucket}", function_arn):
        assert [e.body["result"] for e in w.ledger(f"resource:{arn}") if e.entry.startswith("RELEASE#")] == ["RESTORED"]
    # The roles may tag and untag with the suite's own keys only (template.yaml, Mark* statements):
    # every tag call the functions made names its keys, and each is one of those.
    tag_calls = [
        r
        for r in w.calls_by(SWEEP) + w.calls_by(ENFORCE)
        if r["eventName"] in ("CreateTags", "DeleteTags", "TagResource20170331v2", "UntagResource20170331v2")
    ]
    assert {r["eventName"] for r in tag_calls} == {
        "CreateTags",
        "DeleteTags",
        "TagResource20170331v2",
        "UntagResource20170331v2",
    }
    for r in tag_calls:
        keys = _tag_keys(r["requestParameters"])
        assert keys and all(k.startswith("changeguard:") for k in keys), (r["eventName"], keys)
    since = len(aws.trail.records())
    assert w.sweep()["outcomes"][0]["actions"] == ["no marked resources"]  # nothing left to do
    assert w.mutations_by(SWEEP, since) == []


def _tag_keys(params: dict[str, Any]) -> list[str]:
    """The tag keys a recorded EC2 or Lambda tag call named."""
    tags = params.get("tags")
    if isinstance(tags, dict):
        return list(tags)
    if isinstance(tags, list):
        return [t["key"] for t in tags]
    return list(params.get("tagKeys") or [])
