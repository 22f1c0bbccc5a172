"""Security groups: revoke the inbound rules open to the world (0.0.0.0/0 or ::/0).

The revoked rules are saved exactly (protocol, ports, range and description) so release can
authorize them again. Only inbound rules are touched: every group allows all outbound traffic
by default, and revoking that would cut the group's instances off from everything. Other rules
are never touched, so a round trip may change the order AWS lists rules in, never the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from changeguard.domain.quarantine import ReleaseResult, ResourceRef
from changeguard.quarantine.base import (
    QuarantineSettings,
    ReleaseOutcome,
    ResourceState,
    register,
)
from changeguard.quarantine.ec2 import TAG_PATHS, Ec2Resource

WORLD_V4 = "0.0.0.0/0"
WORLD_V6 = "::/0"
_PORTS = ("IpProtocol", "FromPort", "ToPort")

Rule = tuple[str, ...]


def rules_of(permissions: Iterable[Mapping[str, Any]]) -> list[Rule]:
    """Every single rule of a permission list, as sortable tuples (AWS lists them in no set order)."""
    rules: list[Rule] = []
    for perm in permissions:
        head = tuple(str(perm.get(k, "")) for k in _PORTS)
        for r in perm.get("IpRanges", []):
            rules.append((*head, "ipv4", str(r.get("CidrIp")), str(r.get("Description", ""))))
        for r in perm.get("Ipv6Ranges", []):
            rules.append((*head, "ipv6", str(r.get("CidrIpv6")), str(r.get("Description", ""))))
        for r in perm.get("PrefixListIds", []):
            rules.append((*head, "prefix", str(r.get("PrefixListId")), str(r.get("Description", ""))))
        for r in perm.get("UserIdGroupPairs", []):
            rules.append((*head, "group", str(r.get("GroupId")), str(r.get("Description", ""))))
    return sorted(rules)


def world_open(permissions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The world-open part of each permission, exactly as AWS described it (for revoke and re-authorize)."""
    found: list[dict[str, Any]] = []
    for perm in permissions:
        v4 = [dict(r) for r in perm.get("IpRanges", []) if r.get("CidrIp") == WORLD_V4]
        v6 = [dict(r) for r in perm.get("Ipv6Ranges", []) if r.get("CidrIpv6") == WORLD_V6]
        if not (v4 or v6):
            continue
        item: dict[str, Any] = {k: perm[k] for k in _PORTS if k in perm}
        if v4:
            item["IpRanges"] = v4
        if v6:
            item["Ipv6Ranges"] = v6
        found.append(item)
    return found


def _as_lists(rules: Iterable[Rule]) -> list[list[str]]:
    return [list(r) for r in rules]


@register
class SecurityGroupQuarantine(Ec2Resource):
    type = "ec2:security-group"
    config_type = "AWS::EC2::SecurityGroup"
    arn_kind = "security-group"
    id_prefix = "sg-"
    describes = "revoke its inbound rules open to 0.0.0.0/0 or ::/0"
    notes = ("Outbound rules and rules open to narrower ranges are left as they are.",)
    permissions = (
        "ec2:DescribeSecurityGroups",
        "ec2:RevokeSecurityGroupIngress",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:CreateTags",
        "ec2:DeleteTags",
    )
    containment_only = ("ec2:RevokeSecurityGroupIngress",)
    id_paths = {
        "CreateSecurityGroup": ("responseElements.groupId",),
        "AuthorizeSecurityGroupIngress": ("requestParameters.groupId",),
        "CreateTags": TAG_PATHS,
        "DeleteTags": TAG_PATHS,
    }

    # -- state --------------------------------------------------------------------------------
    def read(self, ref: ResourceRef) -> ResourceState | None:
        from botocore.exceptions import ClientError

        try:
            groups = self.api(ref).describe_security_groups(GroupIds=[ref.resource_id])["SecurityGroups"]
        except ClientError:
            return None
        group = next((g for g in groups if g.get("GroupId") == ref.resource_id), None)
        if group is None:
            return None
        return ResourceState(
            ref=ref,
            name=group.get("GroupName"),
            tags={t["Key"]: t.get("Value", "") for t in group.get("Tags", [])},
            config={"ingress": list(group.get("IpPermissions", []))},
        )

    def snapshot(self, ref: ResourceRef, state: ResourceState, settings: QuarantineSettings) -> dict[str, Any]:
        ingress = state.config["ingress"]
        revoked = world_open(ingress)
        original = rules_of(ingress)
        gone = set(rules_of(revoked))
        return {
            "revoked": revoked,
            "original": _as_lists(original),
            "remaining": _as_lists(r for r in original if r not in gone),
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
        present = set(rules_of(state.config["ingress"]))
        still_open = [p for p in saved["revoked"] if set(rules_of([p])) & present]
        if still_open:
            self.api(ref).revoke_security_group_ingress(GroupId=ref.resource_id, IpPermissions=still_open)
        return saved

    # -- release ------------------------------------------------------------------------------
    def release(self, ref: ResourceRef, saved: dict[str, Any], *, dry_run: bool = False) -> ReleaseOutcome:
        state = self.read(ref)
        if state is None:
            return ReleaseOutcome(result=ReleaseResult.DRIFT, detail=f"group {ref.resource_id} can no longer be read")
        current = _as_lists(rules_of(state.config["ingress"]))
        revoked = list(saved.get("revoked") or [])
        if current == saved.get("original"):
            return ReleaseOutcome(result=ReleaseResult.NOOP, detail="the original inbound rules are in place")
        if current != saved.get("remaining"):
            return ReleaseOutcome(result=ReleaseResult.DRIFT, detail="inbound rules changed while quarantined")
        if not dry_run:
            self.api(ref).authorize_security_group_ingress(GroupId=ref.resource_id, IpPermissions=revoked)
        shown = [f"{' '.join(r[:3])} from {r[4]}" for r in rules_of(revoked)]
        return ReleaseOutcome(
            result=ReleaseResult.RESTORED,
            detail=f"re-authorized {len(shown)} world-open inbound rule(s)",
            calls=tuple(shown),
        )
