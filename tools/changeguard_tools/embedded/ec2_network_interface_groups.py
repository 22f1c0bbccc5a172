"""EC2 network interface groups as AWS keeps them: replaced by ``ModifyNetworkInterfaceAttribute``, in order.

moto keeps an attached interface's groups as the set union of its own list and the instance's
groups, and takes any group for any interface. Three consequences differ from AWS:

* replacing the groups of an instance's primary interface left the old ones in place (and
  ``DescribeInstances`` kept listing them). In AWS the call replaces the interface's groups, and
  an instance's groups are those of its primary interface, so this patch makes the primary
  interface's new groups the instance's groups too;
* a secondary interface listed the instance's groups as well as its own. In AWS it has only its
  own, which matters once it is in another VPC than the instance (a multi-VPC attachment): the
  instance's groups could not even belong to it. Here only the primary interface lists them;
* a set has no order, so ``Groups`` came back in arbitrary order. Here they keep their order:
  the interface's own list first, then (primary interface only) the instance's groups it lacks,
  each once.

moto also accepted a group of another VPC. AWS refuses it (the groups of an interface must belong
to the interface's VPC) with ``InvalidGroup.NotFound`` "You have specified two resources that
belong to different networks." (as seen from ModifyNetworkInterfaceAttribute in
kubernetes-sigs/cluster-api-provider-aws#3943); so does this patch, before changing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models.elastic_network_interfaces import NetworkInterface, NetworkInterfaceBackend

from changeguard_tools.embedded.extensions import installer, wrap_method


def _replace_groups(original: Callable[..., Any]) -> Callable[..., Any]:
    def modify_network_interface_attribute(
        self: Any,
        eni_id: str,
        group_ids: list[str],
        source_dest_check: bool | None = None,
        description: str | None = None,
    ) -> None:
        eni = self.get_network_interface(eni_id)
        for group_id in group_ids or []:
            group = self.get_security_group_from_id(group_id)
            if group is not None and group.vpc_id != eni.vpc_id:
                raise EC2ClientError(
                    "InvalidGroup.NotFound", "You have specified two resources that belong to different networks."
                )
        original(self, eni_id, group_ids, source_dest_check, description)
        if not group_ids:
            return
        instance = getattr(eni, "instance", None)
        if instance is not None and _is_primary(eni):
            instance.security_groups = list(eni._group_set)

    return modify_network_interface_attribute


def _is_primary(eni: Any) -> bool:
    return getattr(eni, "device_index", None) == 0


def _ordered_group_set(self: Any) -> list[Any]:
    groups = list(self._group_set)
    instance = getattr(self, "instance", None)
    if instance is None or not instance.security_groups or not _is_primary(self):
        return groups
    for group in instance.security_groups:
        if group not in groups:
            groups.append(group)
    return groups


def _install_ordered_group_set() -> None:
    current = NetworkInterface.__dict__.get("group_set")
    if isinstance(current, property) and current.fget is _ordered_group_set:
        return
    NetworkInterface.group_set = property(_ordered_group_set)  # type: ignore[assignment,method-assign]


installer(lambda: wrap_method(NetworkInterfaceBackend, "modify_network_interface_attribute", _replace_groups))
installer(_install_ordered_group_set)
