"""CloudWatch: metric values for health checks (GetMetricData), and an alarm's current state and tags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from changeguard.adapters.clients import acting_client
from changeguard.domain.deployments import MetricQuery, TimeWindow

if TYPE_CHECKING:
    from changeguard.adapters.accounts import AccountClients


class CloudWatchReader:
    """Reads only: the guard decides, CodeDeploy acts."""

    def __init__(self, cloudwatch: Any | None = None, accounts: AccountClients | None = None) -> None:
        self._cloudwatch = cloudwatch
        # issue 9: without an injected client, calls go to the account the service is acting in.
        self._accounts = accounts

    @property
    def cloudwatch(self) -> Any:
        return self._cloudwatch or acting_client("cloudwatch", self._accounts)

    def metric_values(self, queries: Sequence[MetricQuery], window: TimeWindow) -> dict[str, list[float]]:
        """Per-period values of each query over ``window``, oldest first (one GetMetricData, paginated).

        The period is the whole window (rounded down to whole minutes, as GetMetricData wants), so
        each query normally has one value; the domain aggregates when CloudWatch splits it.
        """
        if not queries:
            return {}
        period = max(60, (window.seconds // 60) * 60)
        metric_queries = [
            {
                "Id": q.id,
                "MetricStat": {
                    "Metric": {
                        "Namespace": q.metric.namespace,
                        "MetricName": q.metric.name,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in sorted(q.metric.dimensions.items())],
                    },
                    "Period": period,
                    "Stat": q.stat,
                    **({"Unit": q.metric.unit} if q.metric.unit else {}),
                },
                "ReturnData": True,
            }
            for q in queries
        ]
        values: dict[str, list[float]] = {q.id: [] for q in queries}
        pages = self.cloudwatch.get_paginator("get_metric_data").paginate(
            MetricDataQueries=metric_queries,
            StartTime=window.start,
            EndTime=window.end,
            ScanBy="TimestampAscending",
        )
        for page in pages:
            for result in page.get("MetricDataResults", []):
                values.setdefault(result["Id"], []).extend(float(v) for v in result.get("Values", []))
        return values

    def alarm_state(self, alarm_name: str) -> str | None:
        """The alarm's state now (``ALARM``, ``OK``, ``INSUFFICIENT_DATA``), or None when it is gone."""
        resp = self.cloudwatch.describe_alarms(AlarmNames=[alarm_name], AlarmTypes=["MetricAlarm", "CompositeAlarm"])
        for alarm in [*resp.get("MetricAlarms", []), *resp.get("CompositeAlarms", [])]:
            if alarm.get("AlarmName") == alarm_name:
                return str(alarm.get("StateValue"))
        return None

    def alarm_tags(self, alarm_arn: str) -> dict[str, str]:
        """The alarm's tags (``ListTagsForResource``); empty when the alarm cannot be read."""
        from botocore.exceptions import ClientError

        try:
            tags = self.cloudwatch.list_tags_for_resource(ResourceARN=alarm_arn).get("Tags", [])
        except ClientError:
            return {}
        return {str(t["Key"]): str(t.get("Value", "")) for t in tags}
