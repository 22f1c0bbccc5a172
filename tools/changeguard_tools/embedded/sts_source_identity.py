"""STS ``AssumeRole`` with ``SourceIdentity``, which moto accepts but drops.

AWS keeps the source identity with the session, returns it in the ``AssumeRole`` response, writes
it to CloudTrail as ``userIdentity.sessionContext.sourceIdentity`` and carries it through role
chains: a session that has one passes it on to the roles it assumes. The patch keeps it, and the
session's creation time, on moto's ``AssumedRole`` object, which lives in the STS backend, so a
reset clears it with the session.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from moto.sts.models import sts_backends
from moto.sts.responses import TokenResponse

from changeguard_tools.embedded.extensions import installer, wrap_method

__all__ = ["CREATED_ATTRIBUTE", "SOURCE_IDENTITY_ATTRIBUTE", "find_assumed_role", "patch"]

#: Attributes the patch sets on moto's ``AssumedRole`` objects.
SOURCE_IDENTITY_ATTRIBUTE = "changeguard_source_identity"
CREATED_ATTRIBUTE = "changeguard_created"


def find_assumed_role(access_key_id: str) -> Any | None:
    """moto's ``AssumedRole`` for temporary credentials, in whichever account it was assumed."""
    for _, account_backends in list(sts_backends.items()):
        for _, backend in list(account_backends.items()):
            for role in list(backend.assumed_roles):
                if role.access_key_id == access_key_id:
                    return role
    return None


def _keep_source_identity(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def assume_role(self: Any) -> Any:
        caller = find_assumed_role(self.get_access_key())
        inherited = getattr(caller, SOURCE_IDENTITY_ATTRIBUTE, None)
        result = original(self)
        role = result.result["Credentials"]
        source_identity = inherited or self._get_param("SourceIdentity")
        setattr(role, CREATED_ATTRIBUTE, datetime.now(UTC))
        setattr(role, SOURCE_IDENTITY_ATTRIBUTE, source_identity)
        if source_identity:
            result.result["SourceIdentity"] = source_identity
        return result

    return assume_role


@installer
def patch() -> None:
    """Make ``AssumeRole`` keep its ``SourceIdentity`` (idempotent)."""
    wrap_method(TokenResponse, "assume_role", _keep_source_identity)
