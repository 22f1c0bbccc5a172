"""DynamoDB conditional writes that are atomic under concurrency, as they are in AWS.

moto's server handles each request in its own thread and moto's DynamoDB backend takes no lock, so
a condition check and the write it guards can interleave with another request's: two concurrent
``PutItem`` calls with ``attribute_not_exists(pk)`` can both succeed. The ledger and the Powertools
Idempotency utility rely on exactly one of them succeeding.

The patch runs every public method of ``DynamoDBBackend`` (writes, reads and table management: a
scan must not iterate a table another thread is writing to) and the operations moto implements in
its responses class (``BatchWriteItem``, ``BatchGetItem``, ``TransactGetItems``) under one
re-entrant lock. It patches classes, so it holds under ``mock_aws`` as well as in server mode.
DynamoDB calls are serialised; other services are unaffected.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.responses import DynamoHandler

# Imported first so that its journaled TransactWriteItems replaces moto's before the lock wraps it.
from changeguard_tools.embedded import dynamodb_transactions  # noqa: F401
from changeguard_tools.embedded.extensions import installer, is_wrapped, unwrap_method, wrap_method

__all__ = ["LOCK", "is_patched", "patch", "patched_methods", "unpatch"]

#: The one lock every DynamoDB operation runs under.
LOCK = threading.RLock()

#: Operations whose logic moto keeps in the responses class rather than the backend.
_RESPONSE_LEVEL_OPERATIONS = ("batch_write_item", "batch_get_item", "transact_get_items")


def patched_methods() -> Iterator[tuple[type, str]]:
    """The ``(class, method name)`` pairs the patch wraps."""
    for name, member in sorted(vars(DynamoDBBackend).items()):
        if not name.startswith("_") and callable(member) and not isinstance(member, staticmethod | classmethod):
            yield DynamoDBBackend, name
    for name in _RESPONSE_LEVEL_OPERATIONS:
        yield DynamoHandler, name


def _locked(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def run_locked(*args: Any, **kwargs: Any) -> Any:
        with LOCK:
            return original(*args, **kwargs)

    return run_locked


@installer
def patch() -> None:
    """Serialise DynamoDB operations (idempotent; applied by ``extensions.install()``)."""
    for owner, name in patched_methods():
        wrap_method(owner, name, _locked)


def unpatch() -> None:
    """Restore moto's unlocked methods (for tests that show the race)."""
    for owner, name in patched_methods():
        unwrap_method(owner, name)


def is_patched() -> bool:
    """Whether every method the patch covers is wrapped."""
    return all(is_wrapped(owner, name) for owner, name in patched_methods())
