"""Replaying events: reading files, directories, CloudTrail log documents and bare records, and
running each event through the harness.

A contract scripts rely on: one result per input event, in input order, never a traceback.
Everything streams: files are read one at a time, each event's result is handed on as soon as it is
known, and :class:`ReplayReport` keeps counters, never events, so memory follows the largest file,
not the whole input.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

DEFAULT_ACCOUNT = "123456789012"
_NAMESPACE = uuid.UUID("6f1c2b0e-8a53-4c4e-9a0e-3f1f6c3a1d55")
DETAIL_TYPES = {
    "AwsApiCall": "AWS API Call via CloudTrail",
    "AwsConsoleSignIn": "AWS Console Sign In via CloudTrail",
    "AwsServiceEvent": "AWS Service Event via CloudTrail",
    "AwsConsoleAction": "AWS Console Action via CloudTrail",
}


@dataclass
class Item:
    """One input: an event to process, or the reason the input is not one."""

    source_file: str
    event: dict[str, Any] | None = None
    error: str | None = None


def is_eventbridge_event(value: Any) -> bool:
    return isinstance(value, Mapping) and "detail-type" in value and "source" in value and "detail" in value


def is_cloudtrail_record(value: Any) -> bool:
    return isinstance(value, Mapping) and "eventSource" in value and "eventName" in value


def envelope_id(event_id: str) -> str:
    """The envelope id a replay gives the CloudTrail record with this ``eventID``."""
    return str(uuid.uuid5(_NAMESPACE, event_id))


def wrap_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope EventBridge gives a CloudTrail record (deterministic id from ``eventID``)."""
    event_source = str(record.get("eventSource", ""))
    identity = record.get("userIdentity") if isinstance(record.get("userIdentity"), Mapping) else {}
    account = record.get("recipientAccountId") or (identity or {}).get("accountId") or DEFAULT_ACCOUNT
    event_id = str(record.get("eventID") or json.dumps(record, sort_keys=True, default=str))
    return {
        "version": "0",
        "id": envelope_id(event_id),
        "detail-type": DETAIL_TYPES.get(str(record.get("eventType", "AwsApiCall")), "AWS API Call via CloudTrail"),
        "source": "aws." + event_source.split(".", 1)[0] if event_source else "aws.unknown",
        "account": str(account),
        "time": str(record.get("eventTime", "1970-01-01T00:00:00Z")),
        "region": str(record.get("awsRegion", "us-east-1")),
        "resources": [],
        "detail": dict(record),
    }


def _items_of(document: Any, source_file: str) -> Iterator[Item]:
    if isinstance(document, Mapping) and isinstance(document.get("Records"), list):
        document = document["Records"]
    values: Iterable[Any] = document if isinstance(document, list) else [document]
    for value in values:
        if is_eventbridge_event(value):
            yield Item(source_file, event=dict(value))
        elif is_cloudtrail_record(value):
            yield Item(source_file, event=wrap_record(value))
        else:
            kind = type(value).__name__
            yield Item(source_file, error=f"not an EventBridge event or CloudTrail record ({kind})")


#: What a folder is searched for. CloudTrail delivers its log files to S3 as ``.json.gz``, "a JSON
#: text file in compressed gzip format" (CloudTrail user guide, "CloudTrail log file name format"),
#: so a folder synced from the trail bucket holds those; hand-written samples are ``.json``.
INPUT_SUFFIXES = (".json", ".json.gz")
#: Digest files (``<account>_CloudTrail-Digest_<region>_...json.gz`` under ``CloudTrail-Digest/``,
#: user guide "CloudTrail digest file structure") sit in the same bucket and hold hashes of log
#: files, not events: a folder's walk skips them rather than report each as "not an event".
_DIGEST_MARK = "_CloudTrail-Digest_"
_GZIP_MAGIC = b"\x1f\x8b"


def _is_input(path: Path) -> bool:
    return path.name.endswith(INPUT_SUFFIXES) and _DIGEST_MARK not in path.name


def files_of(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Each path given, and each input file below a folder given, in name order.

    A folder with no input file below it is yielded itself, so that reading it says so rather than
    replaying nothing in silence.
    """
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if _is_input(p) and p.is_file())
            yield from found or [path]
        else:
            yield path


def _read(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by its content, whatever its name)."""
    with path.open("rb") as raw:
        if raw.read(2) != _GZIP_MAGIC:
            raw.seek(0)
            return raw.read()
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw) as unzipped:
            return unzipped.read()


def read_items(paths: Iterable[str | Path]) -> Iterator[Item]:
    """Every input event, in name order, one file in memory at a time."""
    for path in files_of(paths):
        name = str(path)
        if path.is_dir():
            yield Item(name, error=f"no {' or '.join(INPUT_SUFFIXES)} file in this folder: nothing to replay")
            continue
        try:
            text = _read(path).decode("utf-8")
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:  # EOFError: a truncated .gz
            yield Item(name, error=f"cannot read: {exc}")
            continue
        try:
            document = json.loads(text)
        except ValueError as exc:
            yield Item(name, error=f"not JSON: {exc}")
            continue
        yield from _items_of(document, name)


def _failed(item: Item, error: str) -> dict[str, Any]:
    event = item.event or {}
    return {
        "source_file": item.source_file,
        "event_id": event.get("id"),
        "detail_type": event.get("detail-type"),
        "routed_to": [],
        "outcomes": [],
        "error": error,
    }


def replay(harness: Any, items: Iterable[Item]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """Each input's result line (README "replay") and the rules its event matched, one at a time."""
    for item in items:
        if item.event is None:
            yield _failed(item, item.error or "not an event"), []
            continue
        try:
            rules = harness.matching_rules(item.event)
            line = {"source_file": item.source_file, **harness.process(item.event)}
        except Exception as exc:  # noqa: BLE001 - one line per event, whatever happens
            yield _failed(item, f"{type(exc).__name__}: {exc}"), []
            continue
        yield line, rules


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (Linux ``VmHWM``), in MB; ``None`` where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


#: How many error messages a report keeps (the count is always exact).
ERROR_SAMPLES = 5


@dataclass
class ReplayReport:
    """Counters of a replay; its size does not depend on how many events went through."""

    arrived: int = 0
    not_events: int = 0
    reached_a_function: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    invocations: Counter[str] = field(default_factory=Counter)
    verdicts: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    cpu_started: float = field(default_factory=time.process_time)
    elapsed_s: float = 0.0
    cpu_s: float = 0.0

    def add(self, line: Mapping[str, Any], rules: Iterable[str]) -> None:
        """Count one result line (and the rules its event matched)."""
        self.arrived += 1
        self.not_events += line.get("event_id") is None and line.get("detail_type") is None
        self.reached_a_function += bool(line["routed_to"])
        self.by_rule.update(rules)
        for outcome in line["outcomes"]:
            self.invocations[outcome["function"]] += 1
            self.verdicts[f"{outcome['function']}: {outcome['verdict'] or '-'}"] += 1
            self.alerts.update(alert["severity"] for alert in outcome["alerts"])
        if line.get("error"):
            self.errors += 1
            if len(self.error_samples) < ERROR_SAMPLES:
                self.error_samples.append(str(line["error"]))
        self.elapsed_s = time.perf_counter() - self.started
        self.cpu_s = time.process_time() - self.cpu_started

    @property
    def events_per_s(self) -> float:
        return round(self.arrived / self.elapsed_s, 1) if self.elapsed_s else 0.0

    @property
    def events_per_cpu_s(self) -> float:
        """Throughput per second of this process's CPU time: what a shared machine's load does not skew."""
        return round(self.arrived / self.cpu_s, 1) if self.cpu_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.arrived,
            "not_events": self.not_events,
            "reached_a_function": self.reached_a_function,
            "by_rule": dict(sorted(self.by_rule.items())),
            "invocations": dict(sorted(self.invocations.items())),
            "verdicts": dict(sorted(self.verdicts.items())),
            "alerts_by_severity": dict(sorted(self.alerts.items())),
            "errors": self.errors,
            "error_samples": list(self.error_samples),
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": self.events_per_s,
            "cpu_s": round(self.cpu_s, 3),
            "events_per_cpu_s": self.events_per_cpu_s,
            "peak_rss_mb": peak_rss_mb(),
        }

    def write_text(self, out: TextIO) -> None:
        out.write(
            f"replayed {self.arrived} event(s) in {self.elapsed_s:.1f} s ({self.events_per_s} events/s,"
            f" {self.events_per_cpu_s} per CPU second, peak RSS {peak_rss_mb()} MB);"
            f" {self.reached_a_function} of {self.arrived} reached a function, {self.errors} error(s)\n"
        )
        for rule, count in sorted(self.by_rule.items()):
            out.write(f"  rule {rule}: {count} of {self.arrived}\n")
        for verdict, count in sorted(self.verdicts.items()):
            out.write(f"  verdict {verdict}: {count}\n")
        for severity, count in sorted(self.alerts.items()):
            out.write(f"  alerts {severity}: {count}\n")
        for sample in self.error_samples:
            out.write(f"  error: {sample}\n")
