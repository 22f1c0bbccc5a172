"""The load replay streams: its memory does not grow with its input, and it reports counters.

The in-memory AWS stores what DynamoDB would (every distinct change is a ledger item and a stream
record), so a replay of more *distinct* changes holds more AWS state, as the real table would. What
must not grow is the replay itself: the reader, the harness and the report. So the larger input here
repeats the same changes (duplicate deliveries, which AWS says happen): each still goes through the
rules, the real handlers and real AWS calls (conditional writes that the ledger refuses), but the AWS
stores nothing new, and any growth left is the replay's.

moto leaves a few kilobytes of reference cycles per request (werkzeug requests, parsers), which
Python's cyclic collector frees only when it next runs a full collection, whenever that is. The
measurement collects them after each input file, so that the peak is what the replay holds while it
works through one file, plus anything it keeps: what this test is about.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from changeguard_tools import fixtures
from changeguard_tools.embedded.server import in_process_aws
from changeguard_tools.harness import Harness
from changeguard_tools.loadgen import DROPPED_AT_THE_BUS, EXPECTED_VERDICT, FIXTURES, read_labels, write_records
from changeguard_tools.replay import Item, ReplayReport, envelope_id, read_items, replay

RECORDS = 50
#: What 9 x RECORDS more events may add to what the replay still holds at the end (the result lines
#: of those 450 events alone take about 300 KB, their events about 1 MB).
RETAINED_BOUND = 64 * 1024
#: ... and to the peak (it varies a little with when the collector runs within a file).
PEAK_BOUND = 128 * 1024


def _copies(source: Path, target: Path, copies: int) -> Path:
    target.mkdir()
    for n in range(copies):
        shutil.copy(source / "trail-00000.json", target / f"copy-{n:03d}.json")
    return target


def _collecting_per_file(items: Iterator[Item]) -> Iterator[Item]:
    """The items, with moto's cyclic garbage collected whenever a new file starts."""
    current = None
    for item in items:
        if item.source_file != current:
            current = item.source_file
            gc.collect()
        yield item


def _run(harness: Harness, folder: Path) -> tuple[ReplayReport, int, int]:
    """Replay ``folder``: the report, and the traced memory above the start (bytes) at the peak and
    still held at the end."""
    report = ReplayReport()
    gc.collect()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    for line, rules in replay(harness, _collecting_per_file(read_items([folder]))):
        report.add(line, rules)
    peak = tracemalloc.get_traced_memory()[1] - base
    gc.collect()
    return report, peak, tracemalloc.get_traced_memory()[0] - base


@pytest.fixture
def harness(monkeypatch):
    # pytest keeps every log record it captures: let its handlers capture nothing here.
    for handler in logging.getLogger().handlers:
        monkeypatch.setattr(handler, "level", logging.CRITICAL + 1)
    with in_process_aws():
        harness = Harness(None, log_stream=open("/dev/null", "w"))  # noqa: SIM115 - closed with the process
        harness.provision()
        fixtures.seed(harness, json.loads(json.dumps(FIXTURES)))
        yield harness


def test_peak_memory_of_ten_times_the_input_stays_within_a_small_bound(harness, tmp_path):
    write_records(tmp_path, RECORDS, per_file=RECORDS)
    first, *_ = _run(harness, tmp_path)  # every change judged once
    assert first.errors == 0, first.error_samples
    small, large = _copies(tmp_path, tmp_path / "small", 1), _copies(tmp_path, tmp_path / "large", 10)
    _run(harness, large)  # warm: clients, caches and CPython's method cache in their steady state

    tracemalloc.start()
    try:
        small_report, small_peak, small_held = _run(harness, small)
        large_report, large_peak, large_held = _run(harness, large)
    finally:
        tracemalloc.stop()

    # The work was done: every event routed, invoked and answered, ten times over.
    assert (small_report.arrived, large_report.arrived) == (RECORDS, 10 * RECORDS)
    assert small_report.reached_a_function > 0
    assert large_report.reached_a_function == 10 * small_report.reached_a_function
    assert large_report.invocations == {k: 10 * v for k, v in small_report.invocations.items()}
    assert large_report.errors == small_report.errors == 0
    assert large_held - small_held < RETAINED_BOUND, (small_held, large_held)
    assert large_peak - small_peak < PEAK_BOUND, (small_peak, large_peak)


def test_the_report_counts_what_arrived_reached_and_was_judged(harness, tmp_path):
    total, expected_routed = write_records(tmp_path, RECORDS, per_file=20)
    report, *_ = _run(harness, tmp_path)
    labels = list(read_labels(tmp_path))

    assert report.arrived == total == len(labels)
    assert report.reached_a_function == expected_routed
    assert report.by_rule["CorrelateChangeFunction.CloudTrailWriteCalls"] == expected_routed
    judged = sum(n for key, n in report.verdicts.items() if key.startswith("CorrelateChangeFunction: "))
    assert judged == expected_routed
    for label, verdict in EXPECTED_VERDICT.items():
        count = sum(1 for _, lab in labels if lab == label)
        assert report.verdicts.get(f"CorrelateChangeFunction: {verdict}", 0) == count, label
    assert report.errors == 0
    summary = report.to_json()
    assert summary["events"] == total and summary["events_per_s"] > 0
    assert json.loads(json.dumps(summary)) == summary


def test_each_labelled_record_is_judged_as_its_label_says(harness, tmp_path):
    """The 5 % violations (and everything else) against the generator's own labels, record by record."""
    write_records(tmp_path, 200, per_file=100)
    mismatches: list[str] = []
    violations = 0
    for (line, _), (event_id, label) in zip(
        replay(harness, read_items([tmp_path])), read_labels(tmp_path), strict=True
    ):
        assert line["event_id"] == envelope_id(event_id)
        verdict = next((o["verdict"] for o in line["outcomes"] if o["function"] == "CorrelateChangeFunction"), None)
        if label in DROPPED_AT_THE_BUS:
            if line["routed_to"]:
                mismatches.append(f"{event_id} {label} reached {line['routed_to']}")
        elif verdict != EXPECTED_VERDICT[label]:
            mismatches.append(f"{event_id} {label} judged {verdict}")
        violations += label == "violation" and verdict == "NO_TICKET"
    assert mismatches == []
    assert violations > 0
