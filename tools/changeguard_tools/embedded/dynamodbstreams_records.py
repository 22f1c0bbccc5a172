"""DynamoDB Streams ``GetRecords``, answered with the JSON moto's backend already holds.

moto 5.2 returns ``GetRecords`` as an ``ActionResult`` that its generic serializer walks against the
botocore shape, attribute value by attribute value, looking up aliases for every key. A stream record
of a ledger item (``NEW_IMAGE``, a few dozen attributes) then costs about 10 ms to serialise, far more
than anything else in a call, and the harness's event source mapping reads every record of the
ledger's stream. The records are kept in wire form already (``StreamRecord.to_json()``: DynamoDB JSON
attribute values, the sequence number as a string), so this serialises them with moto's own DynamoDB
JSON encoder, as moto's DynamoDB handler does for ``Query`` and ``Scan``. The backend call, its
iterators and its records are moto's. ``ApproximateCreationDateTime`` is epoch seconds "rounded down
to the closest second", as the API reference says (moto's serializer kept milliseconds).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from moto.core.utils import unix_time
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

from changeguard_tools.embedded.extensions import operation

__all__ = ["get_records"]

#: GetRecords' default and maximum ``Limit`` (API reference).
MAX_RECORDS = 1000


@operation(DynamoDBStreamsHandler, "GetRecords", replace=True)
def get_records(self: Any) -> str:
    """``{"NextShardIterator": ..., "Records": [...]}`` for the given iterator."""
    iterator = self._get_param("ShardIterator")
    limit = self._get_param("Limit")
    result = self.backend.get_records(iterator, MAX_RECORDS if limit is None else int(limit))
    records = [_whole_seconds(record) for record in result["Records"]]
    return str(dynamo_json_dump({**result, "Records": records}))


def _whole_seconds(record: dict[str, Any]) -> dict[str, Any]:
    stream = record.get("dynamodb") or {}
    created = stream.get("ApproximateCreationDateTime")
    if not isinstance(created, datetime):
        return record
    return {**record, "dynamodb": {**stream, "ApproximateCreationDateTime": math.floor(unix_time(created))}}
