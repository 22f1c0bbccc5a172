"""CloudWatch ``GetMetricData`` computed from the data points that were put, percentiles included.

moto answers ``GetMetricData`` for the five basic statistics only: a percentile (``p99``) comes back
as ``None``, a query with dimensions ignores the namespace, and metric math only echoes another
query's id. The deployment guard decides on "p99 latency above twice the baseline", so this module
replaces the operation (``replace=True``) with one that follows the CloudWatch documentation:

* **Which data.** A ``MetricStat`` query selects the data points of exactly its namespace, metric
  name and dimension set (each distinct set of dimensions is a separate metric), and of its
  ``Unit`` when one is given. ``StartTime`` is inclusive, ``EndTime`` exclusive.
* **Periods.** Values are aggregated per ``Period`` (1, 5, 10, 20 or 30 seconds, or a multiple of
  60), periods counted from ``StartTime``. A period without data has no data point.
* **Statistics.** ``SampleCount``, ``Sum``, ``Average``, ``Minimum``, ``Maximum`` and the
  percentiles ``pNN`` / ``pNN.NN``. Values put one by one (``Value``, or ``Values`` with
  ``Counts``) are all kept, so a percentile is exact: the nearest-rank value (the smallest value
  with at least NN % of the samples at or below it). A statistic set (``StatisticValues``) yields
  percentiles only when its ``Minimum`` equals its ``Maximum``, as the PutMetricData reference
  says; percentiles are not available when any value in the period is negative.
* **Metric math** (optional in AWS terms, small here): an ``Expression`` of +, -, *, / over the
  ids of other queries and numbers, evaluated per timestamp those queries share, e.g.
  ``100 * errors / requests``. Other functions are rejected with a ``ValidationError`` rather than
  answered wrongly.
* **Order.** ``ScanBy`` defaults to ``TimestampDescending``; ``ReturnData: false`` hides a query
  that an expression still uses.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.cloudwatch.exceptions import ValidationError
from moto.cloudwatch.models import MetricAggregatedDatum, MetricDatum
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult

from changeguard_tools.embedded.extensions import operation

__all__ = ["compute_statistic", "get_metric_data", "percentile"]

_BASIC = frozenset({"SampleCount", "Sum", "Average", "Minimum", "Maximum"})
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d{1,10})?|100)$")
_SHORT_PERIODS = frozenset({1, 5, 10, 20, 30})
_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``None`` for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def compute_statistic(stat: str, data: Sequence[Any]) -> float | None:
    """One statistic over one period's data points (moto ``MetricDatum``/``MetricAggregatedDatum``)."""
    singles = [float(d.value) for d in data if isinstance(d, MetricDatum)]
    sets = [d for d in data if isinstance(d, MetricAggregatedDatum)]
    count = len(singles) + sum(float(s.sample_count) for s in sets)
    if count == 0:
        return None
    if stat == "SampleCount":
        return count
    total = sum(singles) + sum(float(s.sum) for s in sets)
    if stat == "Sum":
        return total
    if stat == "Average":
        return total / count
    if stat == "Minimum":
        return min(singles + [float(s.min) for s in sets])
    if stat == "Maximum":
        return max(singles + [float(s.max) for s in sets])
    match = _PERCENTILE.match(stat)
    if match is None:
        raise ValidationError(f"The embedded AWS does not compute the statistic {stat!r}.")
    if any(float(s.min) != float(s.max) for s in sets):
        return None  # a statistic set with a spread has no percentiles
    samples = singles + [float(s.min) for s in sets for _ in range(int(float(s.sample_count)))]
    if any(v < 0 for v in samples):
        return None
    return percentile(samples, float(match.group(1)))


def _dimension_set(dimensions: Sequence[Any]) -> frozenset[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for d in dimensions:
        if isinstance(d, dict):
            out.add((str(d.get("Name")), str(d.get("Value"))))
        else:  # moto's Dimension
            out.add((str(d.name), str(d.value)))
    return frozenset(out)


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _period(query: dict[str, Any], stat: dict[str, Any] | None) -> int:
    raw = (stat or {}).get("Period", query.get("Period"))
    if raw is None:
        raise ValidationError(f"The parameter MetricDataQueries.{query.get('Id')}.Period is required.")
    period = int(raw)
    if period <= 0 or (period not in _SHORT_PERIODS and period % 60):
        raise ValidationError("The parameter Period must be 1, 5, 10, 20, 30, or a multiple of 60.")
    return period


def _series(
    query: dict[str, Any], data: Sequence[Any], start: datetime, end: datetime
) -> tuple[list[datetime], list[float]]:
    stat_spec = query["MetricStat"]
    metric = stat_spec["Metric"]
    stat = str(stat_spec["Stat"])
    if stat not in _BASIC and not _PERCENTILE.match(stat):
        raise ValidationError(f"The embedded AWS does not compute the statistic {stat!r}.")
    period = timedelta(seconds=_period(query, stat_spec))
    wanted_dims = _dimension_set(metric.get("Dimensions") or [])
    unit = stat_spec.get("Unit")
    selected = [
        d
        for d in data
        if d.namespace == metric.get("Namespace")
        and d.name == metric.get("MetricName")
        and _dimension_set(d.dimensions) == wanted_dims
        and (not unit or d.unit == unit)
    ]
    timestamps: list[datetime] = []
    values: list[float] = []
    bucket_start = start
    while bucket_start < end:
        bucket_end = bucket_start + period
        in_bucket = [d for d in selected if bucket_start <= _utc(d.timestamp) < min(bucket_end, end)]
        value = compute_statistic(stat, in_bucket) if in_bucket else None
        if value is not None:
            timestamps.append(bucket_start)
            values.append(value)
        bucket_start = bucket_end
    return timestamps, values


def _evaluate(node: ast.AST, series: dict[str, dict[datetime, float]], at: datetime) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, series, at)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.Name):
        return series[node.id][at]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand, series, at)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left, series, at), _evaluate(node.right, series, at))
    raise ValidationError("The embedded AWS evaluates metric math of + - * / over query ids and numbers only.")


def _expression(
    query: dict[str, Any], results: dict[str, tuple[list[datetime], list[float]]]
) -> tuple[list[datetime], list[float]]:
    text = str(query["Expression"])
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ValidationError(f"Invalid metric math expression {text!r}.") from exc
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    unknown = names - set(results)
    if unknown:
        raise ValidationError(f"Metric math expression {text!r} uses unknown ids {sorted(unknown)}.")
    series = {name: dict(zip(*results[name], strict=True)) for name in names}
    shared = sorted(set.intersection(*(set(s) for s in series.values()))) if series else []
    timestamps: list[datetime] = []
    values: list[float] = []
    for at in shared:
        try:
            value = _evaluate(tree, series, at)
        except ZeroDivisionError:
            continue  # CloudWatch drops the data point
        timestamps.append(at)
        values.append(value)
    return timestamps, values


@operation(CloudWatchResponse, "GetMetricData", replace=True)
def get_metric_data(self: Any) -> ActionResult:
    params = self._get_params()
    start = _utc(params["StartTime"])
    end = _utc(params["EndTime"])
    if end <= start:
        raise ValidationError("The parameter EndTime must be greater than StartTime.")
    queries = params.get("MetricDataQueries") or []
    if not queries:
        raise ValidationError("The parameter MetricDataQueries is required.")
    scan_by = params.get("ScanBy") or "TimestampDescending"
    data = self.cloudwatch_backend.get_all_metrics()
    computed: dict[str, tuple[list[datetime], list[float]]] = {}
    for query in queries:
        if "MetricStat" not in query and "Expression" not in query:
            raise ValidationError(f"The parameter MetricDataQueries.{query.get('Id')}.MetricStat is required.")
        if "MetricStat" in query:
            computed[query["Id"]] = _series(query, data, start, end)
    for query in queries:  # expressions may use any MetricStat query, returned or not
        if "Expression" in query:
            computed[query["Id"]] = _expression(query, computed)
    results = []
    for query in queries:
        if query.get("ReturnData", True) in (False, "false"):
            continue
        timestamps, values = computed[query["Id"]]
        if scan_by == "TimestampDescending":
            timestamps, values = timestamps[::-1], values[::-1]
        label = query.get("Label") or (
            query["MetricStat"]["Metric"]["MetricName"] if "MetricStat" in query else query["Id"]
        )
        results.append(
            {
                "Id": query["Id"],
                "Label": label,
                "Timestamps": timestamps,
                "Values": values,
                "StatusCode": "Complete",
            }
        )
    return ActionResult({"MetricDataResults": results, "Messages": []})
