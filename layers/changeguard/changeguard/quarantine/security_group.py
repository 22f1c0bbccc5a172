"""Security groups: revoke the inbound rules open to the world (0.0.0.0/0 or ::/0).

The revoked rules are saved exactly (protocol, ports, range and description, and each rule's ID
and tags, read with DescribeSecurityGroupRules) so release can authorize them again. A re-created
rule gets a new ``sgr-`` ID from AWS, which no call can keep: the release result records old and new
IDs. Rule tags are not put back: that would take ``ec2:CreateTags`` for keys other than the suite's
own, which its roles are never granted; the release result names each rule's lost tags instead.
States saved before IDs and tags were saved are released as before.

After revoking, the group is described again: a rule still open to the world (AWS answers a revoke
in a default VPC that matches no rule with success and ``UnknownIpPermissions``, so a rule changed
meanwhile is not revoked) fails the quarantine with :class:`QuarantineIncompleteError`.

Only inbound rules are touched: every group allows all outbound traffic by default, and revoking
that would cut the group's instances off from everything. Other rules
are never touched, so a round trip may change the order AWS lists rules in, never the rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from changeguard.domain.errors import QuarantineIncompleteError
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


def _bare(permissions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The permissions without their ranges' descriptions: what a revoke needs to match a rule."""
    out: list[dict[str, Any]] = []
    for perm in permissions:
        item = dict(perm)
        for field, cidr in (("IpRanges", "CidrIp"), ("Ipv6Ranges", "CidrIpv6")):
            if field in item:
                item[field] = [{cidr: r[cidr]} for r in item[field]]
        out.append(item)
    return out


def _as_lists(rules: Iterable[Rule]) -> list[list[str]]:
    return [list(r) for r in rules]


def _key(protocol: Any, from_port: Any, to_port: Any, family: str, source: Any) -> list[str]:
    """A rule's identity (what a revoke matches): DescribeSecurityGroupRules says -1 where
    DescribeSecurityGroups omits the ports of an all-protocols rule."""
    ports = ["", ""]
    if str(protocol) != "-1":
        ports = ["" if from_port is None else str(from_port), "" if to_port is None else str(to_port)]
    return [str(protocol), *ports, family, str(source)]


def _rule_key(rule: Mapping[str, Any]) -> list[str] | None:
    """The identity of a DescribeSecurityGroupRules (or Authorize...) rule open to the world, else None."""
    for field, family, world in (("CidrIpv4", "ipv4", WORLD_V4), ("CidrIpv6", "ipv6", WORLD_V6)):
        if rule.get(field) == world:
            return _key(rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort"), family, world)
    return None


def _world_keys(permissions: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """The identity of each IP-range rule of a (world-open) permission list, sorted."""
    return sorted(_key(*rule[:5]) for rule in rules_of(permissions) if rule[3] in ("ipv4", "ipv6"))


@register
class SecurityGroupQuarantine(Ec2Resource):
    type = "ec2:security-group"
    config_type = "AWS::EC2::SecurityGroup"
    arn_kind = "security-group"
    tag_spec_type = "security-group"
    id_prefix = "sg-"
    describes = "revoke its inbound rules open to 0.0.0.0/0 or ::/0"
    notes = ("Outbound rules and rules open to narrower ranges are left as they are.",)
    permissions = (
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSecurityGroupRules",
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
            group = next((g for g in groups if g.get("GroupId") == ref.resource_id), None)
            if group is None:
                return None
            # DescribeSecurityGroups lists rules without IDs or tags (an IpRange is CidrIp and Description
            # only), so they take DescribeSecurityGroupRules; only a world-open rule is ever saved with
            # them, so no other group costs that second call (issue 9 counts calls per event).
            rules = self._world_open_rules(ref) if world_open(group.get("IpPermissions", [])) else []
        except ClientError:
            return None
        return ResourceState(
            ref=ref,
            name=group.get("GroupName"),
            tags={t["Key"]: t.get("Value", "") for t in group.get("Tags", [])},
            config={"ingress": list(group.get("IpPermissions", [])), "rules": rules},
        )

    def _world_open_rules(self, ref: ResourceRef) -> list[dict[str, Any]]:
        """The group's inbound world-open rules with their IDs and tags (DescribeSecurityGroupRules)."""
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Filters": [{"Name": "group-id", "Values": [ref.resource_id]}]}
        while True:
            page = self.api(ref).describe_security_group_rules(**kwargs)
            for rule in page.get("SecurityGroupRules", []):
                key = _rule_key(rule)
                if key is not None and not rule.get("IsEgress") and rule.get("GroupId") == ref.resource_id:
                    tags = {t["Key"]: t.get("Value", "") for t in rule.get("Tags", [])}
                    found.append({"key": key, "id": rule.get("SecurityGroupRuleId"), "tags": tags})
            if not page.get("NextToken"):
                return found
            kwargs["NextToken"] = page["NextToken"]

    def snapshot(self, ref: ResourceRef, state: ResourceState, settings: QuarantineSettings) -> dict[str, Any]:
        ingress = state.config["ingress"]
        revoked = world_open(ingress)
        original = rules_of(ingress)
        gone = set(rules_of(revoked))
        return {
            "revoked": revoked,
            "original": _as_lists(original),
            "remaining": _as_lists(r for r in original if r not in gone),
            "rules": list(state.config.get("rules", [])),
        }

    # -- quarantine ---------------------------------------------------------------------------
    def quarantine(
        self,
        ref: ResourceRef,
        state: ResourceState,
        settings: QuarantineSettings,
        saved: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Revoke the world-open rules the group has now, whatever ``saved`` holds: a group opened again
        while quarantined (another port, a saved rule with another description, one half of a saved
        IPv4 and IPv6 rule) must be contained again, and revoking the saved rules instead would leave
        those open (or, in a non-default VPC, fail on the half no longer there). ``saved`` is returned
        unchanged: the release restores the first-saved rules, never those added meanwhile (the
        ``#recontained-`` entry records them, for restoring by hand)."""
        saved = saved if saved is not None else self.snapshot(ref, state, settings)
        opened = world_open(state.config["ingress"])
        if not opened:
            return saved  # the state was just read: nothing is open to the world
        # RevokeSecurityGroupIngress: "If the security group rule has a description, you do not need
        # to specify the description to revoke the rule"; the other values must match the rule exactly
        # (in a non-default VPC a value that matches no rule fails the whole call with
        # InvalidPermission.NotFound and revokes nothing). So the rules go as described now, without
        # their descriptions.
        self.api(ref).revoke_security_group_ingress(GroupId=ref.resource_id, IpPermissions=_bare(opened))
        after = self.read(ref)
        left = world_open(after.config["ingress"]) if after is not None else []
        if left:
            shown = ", ".join(f"{' '.join(r[:3])} from {r[4]}" for r in rules_of(left))
            raise QuarantineIncompleteError(
                f"{ref.resource_id} still has inbound rules open to the world after the revoke: {shown}"
            )
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
        saved_rules = {tuple(r["key"]): r for r in saved.get("rules") or []}
        created: dict[tuple[str, ...], str] = {}
        if not dry_run:
            answer = self.api(ref).authorize_security_group_ingress(GroupId=ref.resource_id, IpPermissions=revoked)
            for rule in (answer or {}).get("SecurityGroupRules", []):
                rule_key = _rule_key(rule)
                if rule_key is not None and rule.get("SecurityGroupRuleId"):
                    created[tuple(rule_key)] = str(rule["SecurityGroupRuleId"])
        shown: list[str] = []
        untagged: list[str] = []
        for key in _world_keys(revoked):
            line = f"{' '.join(key[:3])} from {key[4]}"
            old = saved_rules.get(tuple(key)) or {}
            new_id = created.get(tuple(key))
            if new_id:
                line += f" as {new_id}" + (f" (was {old['id']})" if old.get("id") else "")
            if old.get("tags"):
                tags = ", ".join(f"{k}={v}" for k, v in sorted(old["tags"].items()))
                untagged.append(f"{new_id or line}: {tags}")
            shown.append(line)
        detail = f"re-authorized {len(shown)} world-open inbound rule(s)"
        if "rules" in saved:
            detail += " under new rule IDs (AWS gives a re-created rule a new ID)"
        if untagged:
            # The suite may write only its own tag keys (changeguard:*), never an owner's.
            detail += f"; their tags were not put back, re-tag them by hand: {'; '.join(untagged)}"
        return ReleaseOutcome(
            result=ReleaseResult.RESTORED,
            detail=detail,
            calls=tuple(shown),
        )
