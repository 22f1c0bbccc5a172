"""Lambda ``PutFunctionConcurrency`` refusing a reservation that leaves under 100 unreserved.

The PutFunctionConcurrency reference: "Lambda requires at least 100 concurrent executions to remain
unreserved"; the account's concurrency limit is 1000 by default (Lambda quotas), and a reservation
that would leave less fails with ``InvalidParameterValueException``. moto enforces that only when
``MOTO_LAMBDA_CONCURRENCY_QUOTA`` is set, and then counts a function named by ARN against itself.
The embedded AWS always enforces it, with the default limit (or that variable's value when set), so
code that puts a reservation back (a quarantine release) meets the refusal AWS gives it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from moto.awslambda.exceptions import InvalidParameterValueException
from moto.awslambda.models import LambdaBackend

from changeguard_tools.embedded.extensions import installer, wrap_method

__all__ = ["ACCOUNT_CONCURRENCY_LIMIT", "MINIMUM_UNRESERVED"]

ACCOUNT_CONCURRENCY_LIMIT = 1000  # Lambda quotas: concurrent executions, default
MINIMUM_UNRESERVED = 100  # PutFunctionConcurrency: what must stay unreserved


def _enforcing(original: Callable[..., Any]) -> Callable[..., Any]:
    def put_function_concurrency(self: Any, function_name: str, reserved_concurrency: Any) -> Any:
        limit = int(os.environ.get("MOTO_LAMBDA_CONCURRENCY_QUOTA") or ACCOUNT_CONCURRENCY_LIMIT)
        own = self.get_function(function_name).function_name
        others = sum(
            int(fn.reserved_concurrency)
            for fn in self.list_functions()
            if fn.reserved_concurrency and fn.function_name != own
        )
        if limit - others - int(reserved_concurrency) < MINIMUM_UNRESERVED:
            raise InvalidParameterValueException(
                "Specified ReservedConcurrentExecutions for function decreases account's"
                f" UnreservedConcurrentExecution below its minimum value of [{MINIMUM_UNRESERVED}]."
            )
        return original(self, function_name, reserved_concurrency)

    return put_function_concurrency


installer(lambda: wrap_method(LambdaBackend, "put_function_concurrency", _enforcing))
