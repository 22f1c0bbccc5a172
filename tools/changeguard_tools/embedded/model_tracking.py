"""Stop moto from keeping every model object it ever creates.

moto's ``BaseModel.__new__`` appends each new instance to its class's ``instances_tracked`` list, for
the moto server's dashboard (``/moto-api/data.json``), and only a reset empties the lists. So every
object moto creates on the way through a request stays alive for good: the DynamoDB ``Item`` built
for a conditional put that is then refused, each stream record, each shard iterator, each SQS
message. Memory then grows with the number of requests, not with what AWS would store; a load replay
of 10,000 records kept hundreds of megabytes of them. AWS keeps nothing of the kind, ChangeGuard
never reads the dashboard's data, and the objects a backend does keep (tables, items, queues) are
held by the backend itself, so they are unaffected. The patch creates instances without tracking
them.
"""

from __future__ import annotations

from typing import Any

from moto.core.common_models import BaseModel

from changeguard_tools.embedded.extensions import installer, wrap_method

__all__ = ["patch"]


def _untracked(original: Any) -> Any:
    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        return object.__new__(cls)

    return __new__


@installer
def patch() -> None:
    """Applied by ``extensions.install()``; idempotent."""
    wrap_method(BaseModel, "__new__", _untracked)
