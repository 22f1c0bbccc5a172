"""EC2 network interface groups as AWS keeps them: replaced by ``ModifyNetworkInterfaceAttribute``, in order.

moto keeps an attached interface's groups as the set union of its own list and the instance's
groups. Two consequences differ from AWS:

* replacing the groups of an instance's primary interface left the old ones in place (and
  ``DescribeInstances`` kept listing them). In AWS the call replaces the interface's groups, and
  an instance's groups are those of its primary interface, so this patch makes the primary
  interface's new groups the instance's groups too (secondary interfaces keep moto's behaviour);
* a set has no order, so ``Groups`` came back in arbitrary order. Here they keep their order:
  the interface's own list first, then the instance's groups it lacks, each once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        original(self, eni_id, group_ids, source_dest_check, description)
        if not group_ids:
            return
        eni = self.get_network_interface(eni_id)
        instance = getattr(eni, "instance", None)
        if instance is not None and getattr(eni, "device_index", None) == 0:
            instance.security_groups = list(eni._group_set)

    return modify_network_interface_attribute


def _ordered_group_set(self: Any) -> list[Any]:
    groups = list(self._group_set)
    instance = getattr(self, "instance", None)
    for group in instance.security_groups if instance is not None and instance.security_groups else []:
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
