"""The embedded GetMetricData: statistics and percentiles computed from the data points that were put."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from changeguard.adapters.cloudwatch import CloudWatchReader
from changeguard.domain.deployments import MetricQuery, MetricSpec, TimeWindow
from changeguard_tools.embedded import EmbeddedAWS
from changeguard_tools.embedded.cloudwatch_metric_data import percentile

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
DIMS = [{"Name": "FunctionName", "Value": "checkout-api"}]


@pytest.fixture
def cw(aws: EmbeddedAWS) -> Any:
    return aws.client("cloudwatch")


def put(
    cw: Any, name: str, minutes: int, *, dims: list[dict[str, str]] = DIMS, namespace: str = "AWS/Lambda", **datum: Any
) -> None:
    cw.put_metric_data(
        Namespace=namespace,
        MetricData=[
            {"MetricName": name, "Dimensions": dims, "Timestamp": T0 + timedelta(minutes=m), **datum}
            for m in range(minutes)
        ],
    )


def query(
    qid: str, name: str, stat: str, period: int = 300, *, dims: list[dict[str, str]] = DIMS, **extra: Any
) -> dict[str, Any]:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {"Namespace": "AWS/Lambda", "MetricName": name, "Dimensions": dims},
            "Period": period,
            "Stat": stat,
        },
        **extra,
    }


def values(cw: Any, *queries: dict[str, Any], minutes: int = 5, **kw: Any) -> dict[str, list[float]]:
    resp = cw.get_metric_data(
        MetricDataQueries=list(queries), StartTime=T0, EndTime=T0 + timedelta(minutes=minutes), **kw
    )
    return {r["Id"]: r["Values"] for r in resp["MetricDataResults"]}


def test_percentiles_are_exact_nearest_rank_over_every_value_put(cw):
    # 100 samples a minute: 60 x 95 ms, 30 x 110, 9 x 130, 1 x 240; 500 in five minutes.
    put(cw, "Duration", 5, Values=[95, 110, 130, 240], Counts=[60, 30, 9, 1], Unit="Milliseconds")
    got = values(
        cw,
        query("p50", "Duration", "p50"),
        query("p90", "Duration", "p90"),
        query("p99", "Duration", "p99"),
        query("p999", "Duration", "p99.9"),
        query("max", "Duration", "Maximum"),
    )
    assert got == {"p50": [95.0], "p90": [110.0], "p99": [130.0], "p999": [240.0], "max": [240.0]}


def test_the_five_basic_statistics_per_period(cw):
    put(cw, "Errors", 5, Values=[1, 3], Unit="Count")
    got = values(
        cw,
        query("sum", "Errors", "Sum", 60),
        query("avg", "Errors", "Average", 300),
        query("n", "Errors", "SampleCount", 300),
        query("min", "Errors", "Minimum", 300),
        ScanBy="TimestampAscending",
    )
    assert got == {"sum": [4.0] * 5, "avg": [2.0], "n": [10.0], "min": [1.0]}


def test_only_the_exact_metric_is_selected(cw):
    put(cw, "Errors", 5, Value=5)
    put(cw, "Errors", 5, Value=100, dims=[*DIMS, {"Name": "Resource", "Value": "checkout-api:live"}])
    put(cw, "Errors", 5, Value=1000, namespace="Custom/Other")
    put(cw, "Errors", 5, Value=7, dims=[{"Name": "FunctionName", "Value": "payments-api"}])
    assert values(cw, query("e", "Errors", "Sum")) == {"e": [25.0]}


def test_periods_without_data_have_no_data_point_and_end_time_is_exclusive(cw):
    put(cw, "Invocations", 2, Value=10)  # 09:00 and 09:01
    resp = cw.get_metric_data(
        MetricDataQueries=[query("i", "Invocations", "Sum", 60)],
        StartTime=T0,
        EndTime=T0 + timedelta(minutes=1),
        ScanBy="TimestampAscending",
    )
    assert resp["MetricDataResults"][0]["Values"] == [10.0]
    got = cw.get_metric_data(
        MetricDataQueries=[query("i", "Invocations", "Sum", 60)], StartTime=T0, EndTime=T0 + timedelta(minutes=4)
    )
    result = got["MetricDataResults"][0]
    assert result["Values"] == [10.0, 10.0]  # newest first by default
    assert result["Timestamps"][0] > result["Timestamps"][1]
    assert result["StatusCode"] == "Complete"


def test_statistic_sets_give_percentiles_only_without_spread(cw):
    put(cw, "Latency", 1, StatisticValues={"SampleCount": 4, "Sum": 400, "Minimum": 100, "Maximum": 100})
    assert values(cw, query("p", "Latency", "p99"), query("s", "Latency", "Sum")) == {"p": [100.0], "s": [400.0]}
    put(cw, "Spread", 1, StatisticValues={"SampleCount": 4, "Sum": 400, "Minimum": 50, "Maximum": 150})
    assert values(cw, query("p", "Spread", "p99"), query("a", "Spread", "Average")) == {"p": [], "a": [100.0]}


def test_negative_values_have_no_percentiles(cw):
    put(cw, "Delta", 1, Values=[-1, 5])
    assert values(cw, query("p", "Delta", "p50"), query("min", "Delta", "Minimum")) == {"p": [], "min": [-1.0]}


def test_metric_math_over_other_queries(cw):
    put(cw, "Errors", 5, Value=48)
    put(cw, "Invocations", 5, Value=1000)
    got = values(
        cw,
        query("errors", "Errors", "Sum", 300, ReturnData=False),
        query("requests", "Invocations", "Sum", 300, ReturnData=False),
        {"Id": "rate", "Expression": "100 * errors / requests", "Label": "error rate %"},
    )
    assert got == {"rate": [pytest.approx(4.8)]}


@pytest.mark.parametrize(
    ("queries", "start_offset"),
    [
        ([query("x", "Errors", "Sum", 45)], 0),  # not a valid period
        ([query("x", "Errors", "TM(10%:90%)")], 0),  # not computed here: an error, never a wrong value
        ([{"Id": "x", "Expression": "SUM(METRICS())"}], 0),
        ([query("x", "Errors", "Sum")], 10),  # EndTime before StartTime
    ],
)
def test_what_cannot_be_answered_is_a_validation_error(cw, queries, start_offset):
    with pytest.raises(ClientError) as err:
        cw.get_metric_data(
            MetricDataQueries=queries, StartTime=T0 + timedelta(minutes=start_offset), EndTime=T0 + timedelta(minutes=5)
        )
    assert err.value.response["Error"]["Code"] == "ValidationError"


def test_nearest_rank_helper():
    assert percentile([], 99) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([float(i) for i in range(1, 101)], 99.5) == 100.0
    assert math.isclose(percentile([1.0, 2.0], 50) or 0, 1.0)


# -- the guard's adapter against it ------------------------------------------------------------------------
def test_the_reader_fetches_one_value_per_query_over_the_window(aws, cw):
    put(cw, "Duration", 10, Values=[95, 110, 130, 240], Counts=[60, 30, 9, 1])
    put(cw, "Errors", 10, Value=2)
    spec = MetricSpec(namespace="AWS/Lambda", name="Duration", dimensions={"FunctionName": "checkout-api"})
    errors = MetricSpec(namespace="AWS/Lambda", name="Errors", dimensions={"FunctionName": "checkout-api"})
    window = TimeWindow(start=T0 + timedelta(minutes=5), end=T0 + timedelta(minutes=10))
    got = CloudWatchReader(cw).metric_values(
        [MetricQuery(id="latency", metric=spec, stat="p99"), MetricQuery(id="errors", metric=errors, stat="Sum")],
        window,
    )
    assert got == {"latency": [130.0], "errors": [10.0]}


def test_the_reader_reads_alarm_state_and_tags(cw):
    cw.put_metric_alarm(
        AlarmName="checkout-api-errors",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=10,
        ComparisonOperator="GreaterThanThreshold",
        Tags=[{"Key": "changeguard:deployment-group", "Value": "checkout/prod"}],
    )
    reader = CloudWatchReader(cw)
    cw.set_alarm_state(AlarmName="checkout-api-errors", StateValue="ALARM", StateReason="test")
    assert reader.alarm_state("checkout-api-errors") == "ALARM"
    assert reader.alarm_state("gone") is None
    arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-api-errors"
    assert reader.alarm_tags(arn) == {"changeguard:deployment-group": "checkout/prod"}
