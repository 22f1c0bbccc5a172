"""``TransactWriteItems`` as DynamoDB runs it: all conditions checked, then all writes or none.

moto implements the all-or-nothing rule by deep-copying every table a transaction touches before it
starts (items, indexes and the stream shard with every record it ever held) and putting the copy in
the table's place when the transaction is cancelled. Two things follow, both unlike DynamoDB:

* the cost of one transaction grows with the table: on the append-only ledger, where every judged
  change is a transaction, a load replay slows down quadratically (at 10,000 changes each
  transaction copied tens of megabytes);
* a cancelled transaction (a duplicate delivery to the ledger) swaps in a table whose stream shard is
  a copy, so every shard iterator handed out before (the event source mapping of ``publish_alerts``)
  reads a shard no later write reaches, and the outbox stops delivering alerts.

This replacement follows the API reference: the request is rejected as a whole for a validation
error (``ValidationException``: two operations on one item, more than 100 actions) and cancelled as a
whole (``TransactionCanceledException`` with one ``CancellationReasons`` entry per action, in order)
when any condition fails; only then are the writes applied. A write that still fails while being
applied (an update expression that does not fit the item) is undone from a journal of the items it
touched, and the stream records the transaction appended are removed, so nothing of a cancelled
transaction is visible or streamed and the table object (with its stream shard) is never replaced.

It replaces moto's ``DynamoDBBackend.transact_write_items``; :mod:`.dynamodb_atomic` imports this
module first, so its lock wraps this implementation like every other backend method.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table

from changeguard_tools.embedded.extensions import installer

__all__ = ["MOTO_TRANSACT_WRITE_ITEMS", "is_patched", "patch", "transact_write_items"]

_OPERATIONS = frozenset({"ConditionCheck", "Put", "Delete", "Update"})
_Reason = tuple[str, str, dict[str, Any] | None] | tuple[None, None, None]

#: moto's own implementation (deep copies of the tables), kept for reference and for tests.
MOTO_TRANSACT_WRITE_ITEMS: Callable[..., Any] = DynamoDBBackend.__dict__["transact_write_items"]


class _ConditionFailed(Exception):
    """An action's condition does not hold; ``old_item`` is returned with ``ALL_OLD``."""

    def __init__(self, old_item: dict[str, Any] | None) -> None:
        super().__init__("The conditional request failed")
        self.old_item = old_item


@dataclass
class _Action:
    kind: str
    op: dict[str, Any]
    table: Table
    key: dict[str, Any]


@dataclass
class _Undo:
    """What one applied write replaced: enough to put the item back exactly."""

    table: Table
    hash_key: DynamoType
    range_key: DynamoType | None
    previous: Item | None
    had_hash_key: bool


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """Check every action's condition, then apply every write, or apply none."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    actions: list[_Action | None] = []
    reasons: list[_Reason] = []
    targets: set[tuple[str, str]] = set()
    for entry in transact_items:
        if len(entry) > 1:
            raise TransactWriteSingleOpException
        kind, op = next(iter(entry.items()))
        try:
            actions.append(_checked(self, kind, op, targets))
            reasons.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            raise
        except _ConditionFailed as exc:
            actions.append(None)
            reasons.append(("ConditionalCheckFailed", ConditionalCheckFailed().message, exc.old_item))
        except Exception as exc:  # noqa: BLE001 - moto reports any other failure as the action's reason
            actions.append(None)
            reasons.append((type(exc).__name__, str(exc), None))
    if any(code is not None for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    _apply(self, [a for a in actions if a is not None], reasons)


def _checked(backend: DynamoDBBackend, kind: str, op: dict[str, Any], targets: set[tuple[str, str]]) -> _Action:
    """The action, once its condition holds on the table as it is now (no write yet)."""
    if kind not in _OPERATIONS:
        raise ValueError("Unsupported transaction operation")
    table = backend.get_table(op["TableName"])
    if kind == "Put":
        attrs = op["Item"]
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
    else:
        key = op["Key"]
    target = (str(table.name), str(dict(sorted(key.items()))))
    if target in targets:
        raise MultipleTransactionsException()
    targets.add(target)
    condition = op.get("ConditionExpression")
    if condition is not None:
        current = backend.get_item(table.name, key)
        check = get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        )
        if not check.expr(current):
            old = None
            if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                old = current.to_json()["Attributes"]
            raise _ConditionFailed(old)
    return _Action(kind, op, table, key)


def _apply(backend: DynamoDBBackend, actions: list[_Action], reasons: list[_Reason]) -> None:
    """Apply the writes in order; undo them all if one fails."""
    journal: list[_Undo] = []
    shards = {
        id(a.table): (a.table.stream_shard, len(a.table.stream_shard.items)) for a in actions if a.table.stream_shard
    }
    # ``index`` counts every action (condition checks included): it places the failure's reason.
    for index, action in enumerate(actions):
        if action.kind == "ConditionCheck":
            continue
        table, op = action.table, action.op
        hash_key, range_key = backend.get_keys_value(table, action.key)
        had_hash_key = hash_key in table.items  # before get_item: moto's lookup adds an empty bucket
        previous = table.get_item(hash_key, range_key)
        journal.append(_Undo(table, hash_key, range_key, copy.deepcopy(previous), had_hash_key))
        try:
            if action.kind == "Put":
                backend.put_item(table.name, op["Item"])
            elif action.kind == "Delete":
                backend.delete_item(table.name, action.key)
            else:
                backend.update_item(
                    table.name,
                    action.key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=op.get("ExpressionAttributeNames"),
                    expression_attribute_values=op.get("ExpressionAttributeValues"),
                )
        except Exception as exc:
            _undo(journal, shards.values())
            if isinstance(exc, MultipleTransactionsException | MockValidationException):
                raise
            failed: list[_Reason] = [(None, None, None)] * len(reasons)
            failed[index] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(failed) from exc


def _undo(journal: list[_Undo], shards: Any) -> None:
    for undo in reversed(journal):
        items: Any = undo.table.items
        if undo.range_key is not None:
            bucket = items.get(undo.hash_key)
            if undo.previous is not None:
                items.setdefault(undo.hash_key, {})[undo.range_key] = undo.previous
            elif bucket is not None:
                bucket.pop(undo.range_key, None)
                if not bucket and not undo.had_hash_key:
                    del items[undo.hash_key]
        elif undo.previous is not None:
            items[undo.hash_key] = undo.previous
        else:
            items.pop(undo.hash_key, None)
    for shard, length in shards:
        del shard.items[length:]


def is_patched() -> bool:
    """Whether the backend runs this implementation (under :mod:`.dynamodb_atomic`'s lock or not)."""
    current = DynamoDBBackend.__dict__["transact_write_items"]
    return current is transact_write_items or getattr(current, "__wrapped__", None) is transact_write_items


@installer
def patch() -> None:
    """Applied by ``extensions.install()`` before :mod:`.dynamodb_atomic` wraps the backend; idempotent."""
    if DynamoDBBackend.__dict__["transact_write_items"] is MOTO_TRANSACT_WRITE_ITEMS:
        DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
