"""Lambda ``GetFunction`` without the function's tags, as AWS answers a caller not allowed ``lambda:ListTags``.

The GetFunction reference: Lambda returns ``Tags`` "only if you have explicit allow permissions for
lambda:ListTags"; otherwise the response carries ``TagsError`` (``ErrorCode``, ``Message``) and no
``Tags``. moto evaluates no IAM and always returns ``Tags``, which hid that roles granted
``lambda:GetFunction`` but not ``lambda:ListTags`` see every function as untagged in AWS.

The embedded AWS cannot tell which caller holds which permission either, so it answers every caller
as one without ``lambda:ListTags``: code that needs a function's tags calls ``ListTags``, which a
role without the permission sees fail. The rest of the response is moto's. The reference documents
``TagsError``'s fields, not their values: the code and message here are illustrative.
"""

from __future__ import annotations

import json
from typing import Any

from moto.awslambda.responses import LambdaResponse

from changeguard_tools.embedded.extensions import operation, original_operation

__all__ = ["TAGS_ERROR", "get_function"]

TAGS_ERROR = {
    "ErrorCode": "AccessDeniedException",
    "Message": "Tags are returned only to a caller explicitly allowed lambda:ListTags: call ListTags",
}


@operation(LambdaResponse, "GetFunction", replace=True)
def get_function(self: Any) -> Any:
    """moto's ``GetFunction``, with ``TagsError`` in place of ``Tags``."""
    original = original_operation(LambdaResponse, "GetFunction")
    assert original is not None  # moto implements GetFunction
    body = json.loads(original(self))
    body.pop("Tags", None)
    body["TagsError"] = dict(TAGS_ERROR)
    return json.dumps(body)
