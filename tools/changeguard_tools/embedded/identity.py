"""CloudTrail's ``userIdentity`` for the access key that signed a call.

The key is looked up the way moto's ``GetCallerIdentity`` does: temporary credentials of an assumed
role (STS backend), then an IAM user's access key (IAM backend), and otherwise the default user
moto reports for unknown keys, so tests that sign with ``testing``/``testing`` are user ``moto`` of
account 123456789012.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.iam.models import iam_backends

from changeguard_tools.embedded.sts_source_identity import (
    CREATED_ATTRIBUTE,
    SOURCE_IDENTITY_ATTRIBUTE,
    find_assumed_role,
)

__all__ = ["DEFAULT_USER_NAME", "account_for", "user_identity", "username_of"]

#: The user moto reports for access keys it did not issue.
DEFAULT_USER_NAME = "moto"
_DEFAULT_PRINCIPAL_ID = "AKIAIOSFODNN7EXAMPLE"


def account_for(access_key_id: str, moto_account_header: str | None = None) -> str:
    """The account a call is served in, chosen as moto chooses it.

    ``MOTO_ACCOUNT_ID`` in the environment wins, then the ``x-moto-account-id`` header, then the
    account that issued the access key, then moto's default account.
    """
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if moto_account_header:
        return moto_account_header
    for account_id, partitions in list(iam_backends.items()):
        for _, backend in list(partitions.items()):
            if access_key_id in backend.access_keys:
                return str(account_id)
    return str(DEFAULT_ACCOUNT_ID)


def user_identity(access_key_id: str, account_id: str) -> dict[str, Any]:
    """``userIdentity`` of a call signed with ``access_key_id`` and served in ``account_id``."""
    role = find_assumed_role(access_key_id)
    if role is not None:
        return _assumed_role_identity(role, access_key_id)
    user = _iam_user(access_key_id)
    if user is not None:
        return {
            "type": "IAMUser",
            "principalId": str(user.id),
            "arn": str(user.arn),
            "accountId": str(user.account_id),
            "accessKeyId": access_key_id,
            "userName": str(user.name),
        }
    return {
        "type": "IAMUser",
        "principalId": _DEFAULT_PRINCIPAL_ID,
        "arn": f"arn:aws:iam::{account_id}:user/{DEFAULT_USER_NAME}",
        "accountId": account_id,
        "accessKeyId": access_key_id,
        "userName": DEFAULT_USER_NAME,
    }


def username_of(identity: dict[str, Any]) -> str | None:
    """The ``Username`` LookupEvents shows: the user, the role session name, or ``root``."""
    kind = identity.get("type")
    if kind == "Root":
        return "root"
    if kind == "AssumedRole":
        return str(identity.get("arn", "")).rsplit("/", 1)[-1] or None
    name = identity.get("userName")
    return str(name) if name is not None else None


def _assumed_role_identity(role: Any, access_key_id: str) -> dict[str, Any]:
    role_arn = str(role.role_arn)
    account_id = str(role.account_id)
    role_name = role_arn.rsplit("/", 1)[-1]
    role_id = _role_id(role_arn, account_id)
    created = getattr(role, CREATED_ATTRIBUTE, None) or datetime.now(UTC)
    session_context: dict[str, Any] = {
        "sessionIssuer": {
            "type": "Role",
            "principalId": role_id,
            "arn": role_arn,
            "accountId": account_id,
            "userName": role_name,
        },
        "attributes": {
            "creationDate": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mfaAuthenticated": "false",
        },
    }
    source_identity = getattr(role, SOURCE_IDENTITY_ATTRIBUTE, None)
    if source_identity:
        session_context["sourceIdentity"] = source_identity
    return {
        "type": "AssumedRole",
        "principalId": f"{role_id}:{role.session_name}",
        "arn": str(role.arn),
        "accountId": account_id,
        "accessKeyId": access_key_id,
        "sessionContext": session_context,
    }


def _role_id(role_arn: str, account_id: str) -> str:
    for _, backend in list(iam_backends[account_id].items()) if account_id in iam_backends else []:
        for role in list(backend.roles.values()):
            if role.arn == role_arn:
                return str(role.id)
    # moto lets a session assume a role that does not exist; give it a stable id all the same.
    digest = hashlib.sha256(role_arn.encode()).hexdigest().upper()
    return "AROA" + digest[:17]


def _iam_user(access_key_id: str) -> Any | None:
    for _, partitions in list(iam_backends.items()):
        for _, backend in list(partitions.items()):
            key = backend.access_keys.get(access_key_id)
            user_name = getattr(key, "user_name", None)
            if user_name and user_name in backend.users:
                return backend.users[user_name]
    return None
