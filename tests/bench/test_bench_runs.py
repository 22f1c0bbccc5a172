"""The benchmark keeps working: CI runs it at a tiny size; its figures are reported, not asserted."""

from __future__ import annotations

import json

from changeguard_tools import bench


def test_bench_produces_every_figure_at_small_size(tmp_path):
    out = tmp_path / "results.json"
    assert (
        bench.main(["--runs", "1", "--warm-runs", "3", "--replay-records", "1000", "--skip-build", "--out", str(out)])
        == 0
    )
    report = json.loads(out.read_text())
    correlator = report["functions"]["CorrelateChangeFunction"]
    for key in (
        "cold_median_ms",
        "floor_median_ms",
        "warm_median_ms",
        "warm_p99_ms",
        "api_calls_per_event",
        "peak_rss_mb",
    ):
        assert correlator[key] is not None, key
    assert correlator["errors"] == 0
    assert report["correlator_paths"]["authorized (ticket in request tags)"]["calls"] >= 1
    assert report["correlator_evaluation"]["events_per_s"] > 0
    replay = report["load_replay"]
    assert replay["lines"] == replay["records"] == 1000
    assert replay["errors"] == 0
    assert replay["exit_status"] == 0
    assert replay["reached_a_function"] == replay["expected_to_reach"]
    assert replay["by_rule"]["CorrelateChangeFunction.CloudTrailWriteCalls"] == replay["expected_to_reach"]
    assert replay["events_per_s"] > 0
    # Checked against the generator's own labels, record by record: the violations (about 5 %) are
    # judged violations, and nothing else is judged other than as labelled.
    assert replay["misaligned"] == 0
    assert 30 <= replay["violations_labelled"] <= 70
    assert replay["violations_judged_violations"] == replay["violations_labelled"]
    assert replay["unexpected"] == {}
    assert sum(replay["labelled"].values()) == 1000


def test_api_calls_are_counted_through_botocore_hooks():
    import boto3
    from moto import mock_aws

    with mock_aws(), bench.count_calls() as calls:
        client = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
        client.create_queue(QueueName="q")
        client.list_queues()
    assert calls == {"sqs:CreateQueue": 1, "sqs:ListQueues": 1}
