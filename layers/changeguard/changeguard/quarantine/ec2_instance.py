"""EC2 instances: every network interface moves to its VPC's isolation group (no ingress, no egress).

The original groups are saved per network interface, with the VPC of each. An isolation group is
the suite's own (``changeguard-isolation-<vpc>``, tagged ``changeguard:managed=true``), one per VPC,
created on first use and reused. Each interface gets the one of its own VPC: with a multi-VPC
attachment, a secondary interface can be in another VPC than the instance, and AWS refuses a group
of another VPC on an interface. A security-group swap does not cut connections the instance already
has open (they are tracked): the alert says so, and AWS's ``AWSSupport-ContainEC2Instance`` runbook
cuts them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from changeguard.domain.quarantine import ReleaseResult, ResourceRef
from changeguard.domain.tags import MANAGED
from changeguard.quarantine.base import (
    QuarantineSettings,
    ReleaseOutcome,
    ResourceState,
    error_code,
    register,
)
from changeguard.quarantine.ec2 import TAG_PATHS, Ec2Resource

ISOLATION_PREFIX = "changeguard-isolation-"
_GONE_STATES = frozenset({"shutting-down", "terminated"})


def isolation_group_name(vpc_id: str) -> str:
    return f"{ISOLATION_PREFIX}{vpc_id}"


@register
class Ec2InstanceQuarantine(Ec2Resource):
    type = "ec2:instance"
    config_type = "AWS::EC2::Instance"
    arn_kind = "instance"
    tag_spec_type = "instance"
    id_prefix = "i-"
    describes = "replace the security groups of every network interface with its VPC's isolation group"
    notes = (
        "Connections already open stay open until they close (security groups track them);"
        " run AWSSupport-ContainEC2Instance to cut them.",
    )
    permissions = (
        "ec2:DescribeInstances",
        "ec2:DescribeSecurityGroups",
        "ec2:CreateSecurityGroup",
        "ec2:RevokeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:CreateTags",
        "ec2:DeleteTags",
    )
    containment_only = (
        "ec2:CreateSecurityGroup",
        "ec2:RevokeSecurityGroupEgress",
        "ec2:RevokeSecurityGroupIngress",
    )
    id_paths = {
        "RunInstances": ("responseElements.instancesSet.items[].instanceId",),
        "CreateTags": TAG_PATHS,
        "DeleteTags": TAG_PATHS,
    }

    # -- state --------------------------------------------------------------------------------
    def read(self, ref: ResourceRef) -> ResourceState | None:
        from botocore.exceptions import ClientError

        try:
            reservations = self.api(ref).describe_instances(InstanceIds=[ref.resource_id])["Reservations"]
        except ClientError:
            return None
        instances = [i for r in reservations for i in r.get("Instances", []) if i.get("InstanceId") == ref.resource_id]
        if not instances or instances[0].get("State", {}).get("Name") in _GONE_STATES:
            return None
        instance = instances[0]
        tags = {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])}
        return ResourceState(
            ref=ref,
            # No name: an instance has only its Name tag, which its owner may set to anything, and a name
            # starting changeguard- marks the suite's own resources (never quarantined, nor released).
            # The suite launches no instance; its own carry changeguard:managed=true, a key the README's
            # SCP keeps from anyone but the security roles.
            name=None,
            tags=tags,
            config={
                "vpc_id": instance.get("VpcId"),
                "interfaces": _interfaces(instance),
                "interface_vpcs": _interface_vpcs(instance),
            },
        )

    def snapshot(self, ref: ResourceRef, state: ResourceState, settings: QuarantineSettings) -> dict[str, Any]:
        """The groups and the VPC of each interface. ``vpc_id`` and ``isolation_group_name`` are the
        instance's (its primary interface's), as saved states have always had them."""
        vpc_id = str(state.config["vpc_id"])
        return {
            "vpc_id": vpc_id,
            "interfaces": dict(state.config["interfaces"]),
            "interface_vpcs": dict(state.config["interface_vpcs"]),
            "isolation_group_name": isolation_group_name(vpc_id),
        }

    # -- quarantine ---------------------------------------------------------------------------
    def quarantine(
        self,
        ref: ResourceRef,
        state: ResourceState,
        settings: QuarantineSettings,
        saved: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        saved = saved if saved is not None else self.snapshot(ref, state, settings)
        # Each interface's VPC as read now, not from ``saved``: an attached interface never changes VPC,
        # and a saved state written before interfaces' VPCs were saved has only the instance's.
        vpcs: dict[str, str] = state.config["interface_vpcs"]
        isolation: dict[str, str] = {}
        ec2 = self.api(ref)
        for eni, groups in state.config["interfaces"].items():
            vpc_id = vpcs[eni]
            if vpc_id not in isolation:
                isolation[vpc_id] = self.isolation_group(ref, vpc_id)
            if groups != [isolation[vpc_id]]:
                ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[isolation[vpc_id]])
        return saved

    def isolation_group(self, ref: ResourceRef, vpc_id: str) -> str:
        """The VPC's isolation group id: found or created, and without a single rule."""
        from botocore.exceptions import ClientError

        ec2 = self.api(ref)
        group = self.find_isolation_group(ref, vpc_id)
        if group is None:
            name = isolation_group_name(vpc_id)
            try:
                ec2.create_security_group(
                    GroupName=name,
                    Description="ChangeGuard quarantine: no ingress, no egress",
                    VpcId=vpc_id,
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": MANAGED, "Value": "true"}]}],
                )
            except ClientError as exc:
                if error_code(exc) != "InvalidGroup.Duplicate":  # a concurrent run created it first
                    raise
            group = self.find_isolation_group(ref, vpc_id)
            if group is None:
                raise RuntimeError(f"isolation group {name} was created but cannot be found")
        # A new group allows all egress; someone may have added rules to ours since. Take them out.
        if group.get("IpPermissionsEgress"):
            ec2.revoke_security_group_egress(GroupId=group["GroupId"], IpPermissions=group["IpPermissionsEgress"])
        if group.get("IpPermissions"):
            ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
        return str(group["GroupId"])

    def find_isolation_group(self, ref: ResourceRef, vpc_id: str) -> dict[str, Any] | None:
        groups = self.api(ref).describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [isolation_group_name(vpc_id)]},
                {"Name": "vpc-id", "Values": [vpc_id]},
            ]
        )["SecurityGroups"]
        return dict(groups[0]) if groups else None

    # -- release ------------------------------------------------------------------------------
    def release(self, ref: ResourceRef, saved: dict[str, Any], *, dry_run: bool = False) -> ReleaseOutcome:
        state = self.read(ref)
        if state is None:
            return ReleaseOutcome(result=ReleaseResult.DRIFT, detail=f"{ref.resource_id} can no longer be read")
        original: dict[str, list[str]] = {k: list(v) for k, v in dict(saved.get("interfaces") or {}).items()}
        current: dict[str, list[str]] = state.config["interfaces"]
        if set(current) != set(original):
            return ReleaseOutcome(
                result=ReleaseResult.DRIFT,
                detail=f"network interfaces changed: {sorted(original)} then, {sorted(current)} now",
            )
        if all(sorted(current[e]) == sorted(original[e]) for e in original):
            return ReleaseOutcome(result=ReleaseResult.NOOP, detail="the original security groups are in place")
        # Each interface is either isolated, by its own VPC's isolation group (restore it), or already
        # back as it was (a release that was interrupted half-way); anything else is someone else's change.
        vpcs = _saved_vpcs(saved, state)
        isolation: dict[str, str | None] = {}
        isolated: list[str] = []
        changed: list[str] = []
        for eni in original:
            if sorted(current[eni]) == sorted(original[eni]):
                continue
            vpc_id = vpcs[eni]
            if vpc_id not in isolation:
                group = self.find_isolation_group(ref, vpc_id)
                isolation[vpc_id] = str(group["GroupId"]) if group else None
            if isolation[vpc_id] is not None and current[eni] == [isolation[vpc_id]]:
                isolated.append(eni)
            else:
                changed.append(eni)
        if changed:
            return ReleaseOutcome(
                result=ReleaseResult.DRIFT,
                detail=f"security groups of {', '.join(changed)} changed while quarantined",
            )
        calls = []
        for eni in isolated:
            groups = original[eni]
            calls.append(f"{eni}: {', '.join(groups)}")
            if not dry_run:
                self.api(ref).modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=groups)
        return ReleaseOutcome(
            result=ReleaseResult.RESTORED,
            detail="original security groups restored",
            calls=tuple(calls),
        )


def _interfaces(instance: Mapping[str, Any]) -> dict[str, list[str]]:
    """Group ids per network interface, primary first."""
    return {n["NetworkInterfaceId"]: [g["GroupId"] for g in n.get("Groups", [])] for n in _sorted_interfaces(instance)}


def _interface_vpcs(instance: Mapping[str, Any]) -> dict[str, str]:
    """The VPC of each network interface, primary first (the instance's where an interface names none)."""
    return {n["NetworkInterfaceId"]: str(n.get("VpcId") or instance.get("VpcId")) for n in _sorted_interfaces(instance)}


def _sorted_interfaces(instance: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return sorted(
        instance.get("NetworkInterfaces", []),
        key=lambda n: int((n.get("Attachment") or {}).get("DeviceIndex", 0)),
    )


def _saved_vpcs(saved: Mapping[str, Any], state: ResourceState) -> dict[str, str]:
    """The VPC of each saved interface: as saved; for a saved state written before interfaces' VPCs
    were saved, the interface's VPC now (it cannot have changed while attached), else the instance's."""
    recorded = dict(saved.get("interface_vpcs") or {})
    now: dict[str, str] = state.config["interface_vpcs"]
    return {
        eni: str(recorded.get(eni) or now.get(eni) or saved.get("vpc_id"))
        for eni in dict(saved.get("interfaces") or {})
    }
