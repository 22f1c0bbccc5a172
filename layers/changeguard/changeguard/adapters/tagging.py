"""Current tags of resources (Resource Groups Tagging API) and of CloudFormation stacks.

Tags are read in the account the event came from (``adapters.accounts``: the read-tags role in a
member account) and cached for a short while per (account, ARN): a warm container must not keep a
resource's tags frozen, nor answer for one account with another's.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from changeguard.adapters.cache import TtlCache
from changeguard.adapters.clients import acting_client
from changeguard.domain.errors import CrossAccountAccessError

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients

#: How long a resource's tags are reused: about one invocation, never a container's lifetime.
TAGS_MAX_AGE_SECONDS = 60.0
#: IAM roles, users and customer managed policies: the Tagging API does not cover IAM users and
#: roles (an ARN it does not know is left out of its answer, as if untagged), so IAM is asked.
_IAM_TAGGED = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(?P<kind>role|user|policy)/(?P<path>.+)$")
_IAM_LISTS = {
    "role": ("list_role_tags", "RoleName"),
    "user": ("list_user_tags", "UserName"),
    "policy": ("list_policy_tags", "PolicyArn"),
}


class AwsTagReader:
    def __init__(
        self,
        tagging: Any | None = None,
        cloudformation: Any | None = None,
        accounts: AccountClients | None = None,
        max_age: float = TAGS_MAX_AGE_SECONDS,
    ) -> None:
        self._tagging = tagging
        self._cfn = cloudformation
        self._accounts = accounts
        self._cache = TtlCache(max_age)
        #: The last account whose tags could not be read for want of its role (the services report it).
        self.denied: CrossAccountAccessError | None = None

    def _key(self, name: str) -> str:
        account = self._accounts.current_account() if self._accounts else None
        return f"{account or '-'}|{name}"

    def tags_of(self, arn: str) -> dict[str, str] | None:
        """The resource's current tags; ``{}`` when it has none or no longer exists, None when they
        could not be read (refused, throttled past the retries): not the same as "no ticket tag"."""
        key = self._key(arn)
        hit, value = self._cache.get(key)
        if hit:
            return value  # type: ignore[no-any-return]
        from botocore.exceptions import ClientError

        iam = _IAM_TAGGED.match(arn)
        try:
            if iam is not None:
                found = self._iam_tags(arn, iam["kind"], iam["path"])
                if found is None:
                    return None
                tags = found
            else:
                tagging = self._tagging or acting_client("resourcegroupstaggingapi", self._accounts)
                resp = tagging.get_resources(ResourceARNList=[arn])
                tags = {}
                for mapping in resp.get("ResourceTagMappingList", []):
                    if mapping.get("ResourceARN") == arn:
                        tags = {t["Key"]: t.get("Value", "") for t in mapping.get("Tags", [])}
        except CrossAccountAccessError as exc:
            self.denied = exc
            return None
        except ClientError:
            return None
        self._cache.put(key, tags)
        return tags

    def _iam_tags(self, arn: str, kind: str, path: str) -> dict[str, str] | None:
        """An IAM role's, user's or policy's tags (``ListRoleTags``, ...); ``{}`` once it is deleted.

        A role or user is named by the last part of its path (an event's ARN may lack the path)."""
        from botocore.exceptions import ClientError

        operation, parameter = _IAM_LISTS[kind]
        iam = acting_client("iam", self._accounts)
        value = arn if kind == "policy" else path.rsplit("/", 1)[-1]
        try:
            pages = iam.get_paginator(operation).paginate(**{parameter: value})
            return {t["Key"]: t.get("Value", "") for page in pages for t in page.get("Tags", [])}
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
                return {}  # deleted since: nothing to read, as the Tagging API answers for it
            raise

    def stack_tags(self, stack: str) -> dict[str, str] | None:
        """The stack's tags; ``{}`` for a stack that does not exist, None when they could not be read."""
        key = self._key(f"stack:{stack}")
        hit, value = self._cache.get(key)
        if hit:
            return value  # type: ignore[no-any-return]
        from botocore.exceptions import ClientError

        try:
            cfn = self._cfn or acting_client("cloudformation", self._accounts)
            stacks = cfn.describe_stacks(StackName=stack).get("Stacks", [])
        except CrossAccountAccessError as exc:
            self.denied = exc
            return None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ValidationError":
                return None
            # DescribeStacks' one parameter is the stack: ValidationError is "no such stack" (deleted
            # since, by name), which is nothing to read, not a failure to read it.
            stacks = []
        tags = {t["Key"]: t.get("Value", "") for t in (stacks[0].get("Tags", []) if stacks else [])}
        self._cache.put(key, tags)
        return tags
