"""The Resource Groups Tagging API without IAM users and roles, as AWS documents it.

"The GetResources operation does not currently support IAM users and roles" (the Tagging API's
supported-services list): an IAM user's or role's ARN is left out of its answers, whether asked by
ARN or found by tag, as if the resource had no tags. moto answers for them, which hid that a
ticket in a role's tag was never found through the Tagging API; IAM's own ``List*Tags`` read them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from moto.resourcegroupstaggingapi.models import ResourceGroupsTaggingAPIBackend

from changeguard_tools.embedded.extensions import installer, wrap_method

__all__ = ["UNSUPPORTED"]

#: ARNs the Tagging API does not answer for.
UNSUPPORTED = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/")


def _without_iam_users_and_roles(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_resources(self: Any, *args: Any, **kwargs: Any) -> Any:
        token, found = original(self, *args, **kwargs)
        return token, [r for r in found if not UNSUPPORTED.match(str(getattr(r, "arn", "")))]

    return get_resources


installer(lambda: wrap_method(ResourceGroupsTaggingAPIBackend, "get_resources", _without_iam_users_and_roles))
