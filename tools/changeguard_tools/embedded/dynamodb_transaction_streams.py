"""Keep a table's stream when a ``TransactWriteItems`` is cancelled, as DynamoDB does.

moto backs up every table a transaction touches (a deep copy) and, when the transaction is
cancelled (a failed condition: a duplicate delivery to the append-only ledger), puts the *copy*
in the table's place. The copy carries a copy of the stream shard, so every shard iterator handed
out before (the harness's event source mapping, any reader of the stream) keeps reading the old
shard, which no later write reaches: every record after the first cancelled transaction is lost to
them, and with the ledger's stream the outbox stops delivering alerts.

In DynamoDB a cancelled transaction changes nothing, its stream included. This patch gives the
restored table the original shard back, trimmed of any records the cancelled transaction's writes
appended before it failed, so existing iterators keep working and no rolled-back write is streamed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from moto.dynamodb.responses import DynamoHandler

from changeguard_tools.embedded.dynamodb_atomic import LOCK
from changeguard_tools.embedded.extensions import installer, wrap_method


def _keep_streams(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def transact_write_items(self: Any) -> Any:
        with LOCK:  # the backend's lock (re-entrant): nothing else writes while we swap shards
            backend = self.dynamodb_backend
            names = {
                op.get("TableName")
                for item in (self.body or {}).get("TransactItems", [])
                if isinstance(item, dict)
                for op in item.values()
                if isinstance(op, dict)
            }
            before = {name: backend.tables.get(name) for name in names if name in backend.tables}
            try:
                return original(self)
            finally:
                for name, table in before.items():
                    restored = backend.tables.get(name)
                    shard = getattr(table, "stream_shard", None)
                    if restored is None or restored is table or shard is None:
                        continue
                    copy = getattr(restored, "stream_shard", None)
                    if copy is not None:
                        del shard.items[len(copy.items) :]
                    shard.table = restored
                    restored.stream_shard = shard

    return transact_write_items


@installer
def patch() -> None:
    """Applied by ``extensions.install()``; idempotent."""
    wrap_method(DynamoHandler, "transact_write_items", _keep_streams)
