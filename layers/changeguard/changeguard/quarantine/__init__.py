"""The quarantine registry: one class per resource type (see :mod:`.base` for what each declares).

Every module of this package is imported here, so a new type needs no registration by hand:
add ``<type>.py`` with one ``@register``-ed class (and a sample event under ``events/enforce_tags``).
Importing creates no AWS client.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from changeguard.quarantine.base import (
    REGISTRY,
    QuarantineHandler,
    QuarantineSettings,
    ReleaseOutcome,
    ResourceState,
    register,
)

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients

_SUPPORT = frozenset({"base", "ec2", "finder"})

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _SUPPORT:
        importlib.import_module(f"{__name__}.{_module}")


class Registry:
    """The registered classes, instantiated once (with injected clients when given)."""

    def __init__(self, clients: Mapping[str, Any] | None = None, accounts: AccountClients | None = None) -> None:
        clients = clients or {}
        self.handlers: dict[str, QuarantineHandler] = {
            name: cls(clients.get(cls.service), accounts) for name, cls in sorted(REGISTRY.items())
        }

    def get(self, type_name: str) -> QuarantineHandler | None:
        return self.handlers.get(type_name)

    def for_config_type(self, config_type: str) -> QuarantineHandler | None:
        return next((h for h in self.handlers.values() if h.config_type == config_type), None)

    def for_arn(self, arn: str) -> QuarantineHandler | None:
        return next((h for h in self.handlers.values() if h.owns_arn(arn)), None)

    def targets(
        self, event_source: str, event_name: str, record: Mapping[str, Any]
    ) -> list[tuple[QuarantineHandler, str]]:
        """(class, resource id) for every resource of a registered type the CloudTrail record names."""
        found: list[tuple[QuarantineHandler, str]] = []
        for handler in self.handlers.values():
            if handler.event_source == event_source:
                found += [(handler, rid) for rid in handler.ids_in(event_name, record)]
        return found

    def event_names(self) -> set[str]:
        return {name for h in self.handlers.values() for name in h.id_paths}

    def permissions(self) -> set[str]:
        return {p for h in self.handlers.values() for p in h.permissions}

    def release_permissions(self) -> set[str]:
        """What reading, tagging and releasing need: the event-driven function's share."""
        return {p for h in self.handlers.values() for p in h.permissions if p not in h.containment_only}


__all__ = [
    "REGISTRY",
    "QuarantineHandler",
    "QuarantineSettings",
    "Registry",
    "ReleaseOutcome",
    "ResourceState",
    "register",
]
