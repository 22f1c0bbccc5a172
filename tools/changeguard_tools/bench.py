"""``changeguard bench`` (``make bench``): cold starts, warm latency, API calls, memory, sizes, cost.

Figures are reported, not asserted: CI runs this at a small size only to keep it working.

* cold start - a fresh process imports the handler and processes its first sample event
  against the embedded AWS; median of ``--runs``, next to the floor measured in the same run,
  interleaved with it (a bare process that imports boto3 and creates the clients that path uses).
  Both are timed in wall-clock milliseconds and in the child's own CPU time (user + system,
  from ``os.wait4``), and the target - at most ``TARGET_RATIO`` times the floor (issue 9) - is
  judged on CPU time. Why: this machine is shared (two cores, other test runs in parallel), so a
  child's wall time also counts the time it waited for a core, and the embedded AWS answering it
  runs in this process; the child's CPU time is the work the cold start itself costs, which is
  what Lambda's cold start is made of (its CPU share scales with memory). Every child runs with
  byte-compiled modules, as the layer ships (``make build``): the bench compiles them in one
  unmeasured run per function into its own ``PYTHONPYCACHEPREFIX``, never into the source tree.
  ``--instructions`` adds an instruction count of one run of each, under
  ``valgrind --tool=callgrind`` (deterministic whatever the load; slow, so off by default);
* warm latency and throughput - in-process, against moto's in-memory AWS (``mock_aws``);
* AWS API calls per event - counted exactly with botocore's ``before-call`` event hook on
  every botocore session (Powertools' own sessions included);
* peak RSS of the cold process; artifact sizes from ``sam build``; cost per million events
  at 128 MB on arm64;
* the correlator's own evaluation (parse, normalize, judge) in events per second;
* a load replay of generated CloudTrail records through ``changeguard replay``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeguard_tools.template import REPO_ROOT

EVENTS = REPO_ROOT / "events"
LAYER_SOURCE = REPO_ROOT / "layers" / "changeguard"
ARM_GB_SECOND = 0.0000133334  # USD, Lambda arm64, first tier
REQUEST = 0.20 / 1_000_000  # USD per request
WRITE_UNIT = 0.625 / 1_000_000  # USD per DynamoDB on-demand write request unit
READ_UNIT = 0.125 / 1_000_000  # USD per DynamoDB on-demand read request unit

_COLD_CHILD = r"""
import time
c0 = time.process_time()
t0 = time.perf_counter()
import importlib.util, json, os, resource, sys
services = set()
if os.environ.get("CHANGEGUARD_BENCH_RECORD_SERVICES") == "1":  # the unmeasured run only
    import botocore.session
    original = botocore.session.Session.__init__
    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.register("before-call", lambda model, **_: services.add(model.service_model.service_name))
    botocore.session.Session.__init__ = init
app_path, event_path, handler_name = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("app", app_path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
t1 = time.perf_counter()
c1 = time.process_time()
event = json.load(open(event_path))
class Context:
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "bench")
    memory_limit_in_mb = 128
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    aws_request_id = "cold-start"
    def get_remaining_time_in_millis(self):
        return 30000
out = sys.stdout
sys.stdout = sys.stderr
result = getattr(module, handler_name)(event, Context())
t2 = time.perf_counter()
c2 = time.process_time()
def peak_rss_mb():
    # VmHWM is this process image's own high-water mark; ru_maxrss would carry over the
    # parent's from before fork+exec.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rejected = isinstance(result, dict) and bool(result.get("rejected"))
out.write(json.dumps({
    "import_ms": (t1 - t0) * 1000, "first_event_ms": (t2 - t1) * 1000,
    "import_cpu_ms": (c1 - c0) * 1000, "first_event_cpu_ms": (c2 - c1) * 1000,
    "rss_mb": peak_rss_mb(), "rejected": rejected, "services": sorted(services),
}))
out.flush()
sys.stderr.flush()
os._exit(0)  # as Lambda: the sandbox is frozen after the invocation, the interpreter never shuts down
"""

_FLOOR_CHILD_TEMPLATE = r"""
import json, os, sys, time
t0 = time.perf_counter()
import boto3
clients = [boto3.client(name) for name in sys.argv[1].split(",") if name]
{extra}
t1 = time.perf_counter()
sys.stdout.write(json.dumps({{"floor_ms": (t1 - t0) * 1000}}))
sys.stdout.flush()
os._exit(0)  # no interpreter shutdown, as in the cold child
"""
_FLOOR_CHILD = _FLOOR_CHILD_TEMPLATE.format(extra="")
# The floor plus the least any function of ours does with Powertools' Parser: import it and validate
# one EventBridge envelope (pydantic and its first validator). Reported next to the floor, so the
# report shows, from the same run, how much of the target the mandated Parser spends by itself.
_PARSER_FLOOR_CHILD = _FLOOR_CHILD_TEMPLATE.format(
    extra=r"""from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
parse(model=EventBridgeModel, event={
    "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718", "detail-type": "Scheduled Event",
    "source": "aws.events", "account": "123456789012", "time": "2026-11-21T00:00:00Z",
    "region": "us-east-1", "resources": [], "detail": {},
})"""
)

#: Issue 9: a cold start costs at most this many times the floor (judged on CPU time).
TARGET_RATIO = 1.3


@dataclass(frozen=True)
class ChildRun:
    """One child process: its wall time, its own CPU time (user + system) and what it printed."""

    wall_ms: float
    cpu_ms: float
    exit_code: int
    stdout: str
    stderr: str

    def report(self) -> dict[str, Any] | None:
        """The JSON line the child printed last, or ``None`` when it failed."""
        lines = self.stdout.strip().splitlines()
        if self.exit_code != 0 or not lines:
            return None
        try:
            found = json.loads(lines[-1])
        except ValueError:
            return None
        return found if isinstance(found, dict) else None


def run_child(args: list[str], env: dict[str, str], timeout: float = 120) -> ChildRun:
    """Run ``args`` to completion; CPU time is the child's own rusage (``os.wait4``), not this process's."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=err, text=True)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall_ms = (time.perf_counter() - started) * 1000
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        return ChildRun(
            wall_ms=wall_ms,
            cpu_ms=(usage.ru_utime + usage.ru_stime) * 1000,
            exit_code=proc.returncode,
            stdout=out.read(),
            stderr=err.read(),
        )


def callgrind_instructions(args: list[str], env: dict[str, str], timeout: float = 1800) -> int | None:
    """Instructions the child executes, counted by ``valgrind --tool=callgrind`` (``None`` without valgrind)."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        proc = subprocess.run(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={folder}/out", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    return int(found.group(1)) if proc.returncode == 0 and found else None


def judge_cold(
    colds: list[ChildRun], floors: list[ChildRun], parser_floors: list[ChildRun] | None = None
) -> dict[str, Any]:
    """Medians of the successful cold runs and of the floor, their ratios, and the verdict on CPU time.

    ``parser_floors`` (the floor plus Parser validating one envelope) are reported, never judged.
    """
    good = [run for run in colds if run.report() is not None]
    floor_ok = [run for run in floors if run.exit_code == 0]
    cold_wall, floor_wall = _median([r.wall_ms for r in good]), _median([r.wall_ms for r in floor_ok])
    # The ratios come from the medians as reported (0.1 ms), so the report agrees with itself.
    cold_wall, floor_wall = round(cold_wall, 1), round(floor_wall, 1)
    cold_cpu = round(_median([r.cpu_ms for r in good]), 1)
    floor_cpu = round(_median([r.cpu_ms for r in floor_ok]), 1)
    cpu_ratio = round(cold_cpu / floor_cpu, 2) if good and floor_cpu else None
    details = [d for d in (r.report() for r in good) if d is not None]
    rss = [d["rss_mb"] for d in details]
    return {
        "cold_runs": len(colds),
        "cold_errors": len(colds) - len(good),
        "cold_rejected": sum(1 for d in details if d.get("rejected")),
        "cold_median_ms": round(cold_wall, 1),
        "floor_median_ms": round(floor_wall, 1),
        "ratio_to_floor": round(cold_wall / floor_wall, 2) if good and floor_wall else None,
        "cold_cpu_median_ms": round(cold_cpu, 1),
        "floor_cpu_median_ms": round(floor_cpu, 1),
        "cpu_ratio_to_floor": cpu_ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": cpu_ratio is not None and cpu_ratio <= TARGET_RATIO,
        "import_median_ms": round(_median([d["import_ms"] for d in details]), 1),
        "first_event_median_ms": round(_median([d["first_event_ms"] for d in details]), 1),
        "import_cpu_median_ms": round(_median([d["import_cpu_ms"] for d in details]), 1),
        "first_event_cpu_median_ms": round(_median([d["first_event_cpu_ms"] for d in details]), 1),
        "peak_rss_mb": round(max(rss), 1) if rss else None,
        **_parser_floor(parser_floors or [], floor_cpu),
    }


def _parser_floor(runs: list[ChildRun], floor_cpu: float) -> dict[str, Any]:
    ok = [run for run in runs if run.exit_code == 0]
    if not ok:
        return {}
    cpu = round(_median([r.cpu_ms for r in ok]), 1)
    return {
        "parser_floor_cpu_median_ms": cpu,
        "parser_floor_cpu_ratio_to_floor": round(cpu / floor_cpu, 2) if floor_cpu else None,
    }


def first_sample(folder: str) -> Path | None:
    found = sorted((EVENTS / folder).glob("*.json"))
    return found[0] if found else None


def fresh_copy(event: Any, index: int) -> Any:
    """The same event with new ids, so each run takes the first-delivery path, not the duplicate one."""
    copy = json.loads(json.dumps(event))
    if isinstance(copy, dict):
        if "id" in copy:
            copy["id"] = str(uuid.uuid4())
        detail = copy.get("detail")
        if isinstance(detail, dict):
            for key in ("eventID", "deploymentId", "executionId"):
                if key in detail:
                    detail[key] = f"{detail[key]}-b{index}" if key != "eventID" else str(uuid.uuid4())
    return copy


@contextlib.contextmanager
def count_calls() -> Iterator[Counter[str]]:
    """Count every AWS API call made while inside, through botocore's ``before-call`` hook."""
    import botocore.session

    counter: Counter[str] = Counter()
    original = botocore.session.Session.__init__

    def hook(model: Any, **_: Any) -> None:
        counter[f"{model.service_model.service_name}:{model.name}"] += 1

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.register("before-call", hook)

    botocore.session.Session.__init__ = init  # type: ignore[method-assign]
    from changeguard.adapters import clients

    clients.reset()
    try:
        yield counter
    finally:
        botocore.session.Session.__init__ = original  # type: ignore[method-assign]
        clients.reset()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _provisioned(endpoint: str | None) -> Any:
    from changeguard_tools import fixtures
    from changeguard_tools.demo import load_scenario
    from changeguard_tools.harness import FixedClock, Harness

    seed, _ = load_scenario()
    start = seed.pop("now", "2026-11-21T00:00:00Z")
    from datetime import datetime

    clock = FixedClock(datetime.fromisoformat(str(start).replace("Z", "+00:00")))
    harness = Harness(endpoint, clock=clock, log_stream=open(os.devnull, "w"))  # noqa: SIM115
    harness.provision()
    fixtures.seed(harness, seed)
    return harness


def warm(runs: int, only: set[str] | None = None) -> dict[str, Any]:
    """Per function: warm latency, throughput and API calls per event, in-process against mock_aws."""
    from moto import mock_aws

    from changeguard_tools.embedded import install

    install()
    results: dict[str, Any] = {}
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    try:
        with mock_aws(), count_calls() as calls:
            harness = _provisioned(None)
            for logical_id, spec in harness.functions.items():
                sample = first_sample(spec.code_uri.name)
                if sample is None or (only and logical_id not in only):
                    continue
                event = json.loads(sample.read_text())
                harness.invoke(logical_id, fresh_copy(event, 0))  # warm-up (cold start, caches)
                calls.clear()
                harness.invoke(logical_id, fresh_copy(event, 1))
                per_event = dict(calls)
                latencies: list[float] = []
                errors = 0
                started = time.perf_counter()
                for i in range(runs):
                    t0 = time.perf_counter()
                    inv = harness.invoke(logical_id, fresh_copy(event, i + 2))
                    latencies.append((time.perf_counter() - t0) * 1000)
                    errors += bool(inv.error)
                elapsed = time.perf_counter() - started
                results[logical_id] = {
                    "sample": sample.name,
                    "warm_median_ms": round(_median(latencies), 3),
                    "warm_p99_ms": round(_p99(latencies), 3),
                    "throughput_per_s": round(runs / elapsed, 1) if elapsed else 0.0,
                    "api_calls_per_event": sum(per_event.values()),
                    "api_calls": per_event,
                    "errors": errors,
                }
            if not only or "CorrelateChangeFunction" in only:
                results["_paths"] = correlator_paths(harness, calls)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return results


def correlator_paths(harness: Any, calls: Counter[str]) -> dict[str, Any]:
    """API calls per event on the correlator's named paths (targets: authorized <= 2, alerting <= 4)."""
    paths = {
        "authorized (ticket in request tags)": "01-approved-run-instances.json",
        "alerting (no ticket)": "02-console-no-ticket.json",
        "alerting (unapproved ticket)": "03-unapproved-ticket.json",
        "exempt principal": "06-pipeline-exempt.json",
    }
    out: dict[str, Any] = {}
    for name, sample in paths.items():
        event = json.loads((EVENTS / "correlate_change" / sample).read_text())
        harness.invoke("CorrelateChangeFunction", fresh_copy(event, 0))
        calls.clear()
        harness.invoke("CorrelateChangeFunction", fresh_copy(event, 1))
        out[name] = {"calls": sum(calls.values()), "detail": dict(calls)}
    return out


def correlator_evaluation(events: int) -> dict[str, Any]:
    """The correlator's own evaluation: parse, normalize and judge, no AWS (events per second)."""
    from changeguard.domain.change import change_from_cloudtrail
    from changeguard.domain.policy import Policy
    from changeguard.domain.tickets import TicketLookup, TicketRef, TicketRefSource
    from changeguard.domain.verdicts import judge
    from changeguard.models.events import CloudTrailEvent

    samples = [json.loads(p.read_text()) for p in sorted((EVENTS / "correlate_change").glob("0*.json"))]
    policy = Policy()
    ref = TicketRef(ticket_id="CHG-1001", found_in=TicketRefSource.REQUEST_TAGS)
    lookup = TicketLookup(ticket=None)
    started = time.perf_counter()
    for i in range(events):
        event = CloudTrailEvent.model_validate(samples[i % len(samples)])
        change = change_from_cloudtrail(event.detail, event.account, event.region)
        judge(change, ref, lookup, policy)
    elapsed = time.perf_counter() - started
    return {"events": events, "events_per_s": round(events / elapsed, 1)}


def cold(
    runs: int, only: set[str] | None = None, instructions: bool = False, python: str = sys.executable
) -> dict[str, Any]:
    """Fresh-process cold starts against the embedded AWS, with the floor measured alongside.

    ``python`` runs the children: ``make bench`` gives it an interpreter of the runtime's version
    (``.venv-bench``, Python 3.12 with the layer's locked packages), since import costs differ
    between Python versions and the layer ships ``.pyc`` files for that one.
    """
    from changeguard_tools.embedded import EmbeddedAWS

    results: dict[str, Any] = {}
    with EmbeddedAWS() as aws, tempfile.TemporaryDirectory(prefix="changeguard-bench-pyc-") as pycache:
        harness = _provisioned(aws.endpoint_url)
        for logical_id, spec in harness.functions.items():
            sample = first_sample(spec.code_uri.name)
            if sample is None or (only and logical_id not in only):
                continue
            env = {**child_environment(pycache, python), **harness.function_environment(logical_id)}
            event = json.loads(sample.read_text())
            results[logical_id] = cold_start(spec.code_uri / "app.py", event, env, runs, instructions, python)
    return results


def child_environment(pycache: str, python: str = sys.executable) -> dict[str, str]:
    """The environment of a cold or floor child: byte-compiled modules, and sys.path as in Lambda.

    Children run with ``python -S``: a virtualenv's ``.pth`` files install the editable finders of
    ``changeguard`` and the tools, about 60 ms of imports at every start that Lambda never runs and
    that would inflate the floor and the cold start alike. ``PYTHONPATH`` gives the layer's source
    and ``python``'s installed packages instead, as ``/opt/python`` does in Lambda.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    paths = [str(LAYER_SOURCE), *child_site_packages(python)]
    env.update({"PYTHONPYCACHEPREFIX": pycache, "PYTHONPATH": os.pathsep.join(paths)})
    return env


def child_site_packages(python: str) -> list[str]:
    """Where ``python`` (a virtualenv's interpreter, typically) finds its installed packages."""
    if python == sys.executable:
        import site

        return list(site.getsitepackages())
    probe = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    # Without -S: a virtualenv sets its prefix in site.py (Python 3.12 and older).
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True)
    return [out.stdout.strip()]


def child_python_version(python: str) -> str:
    """``major.minor.micro`` of the interpreter the children run on."""
    if python == sys.executable:
        return ".".join(str(part) for part in sys.version_info[:3])
    probe = "import sys; print('.'.join(map(str, sys.version_info[:3])))"
    return subprocess.run([python, "-S", "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


def cold_start(
    app: Path,
    event: Any,
    env: dict[str, str],
    runs: int,
    instructions: bool = False,
    python: str = sys.executable,
) -> dict[str, Any]:
    """One function's cold starts, each followed by a floor run, after one unmeasured run.

    The floor creates the clients of the services the cold path called: the unmeasured run of the
    same child records them (botocore's ``before-call`` hook), first event included - a warm
    invocation would miss what only the first one does, such as reading the policy.
    """
    colds: list[ChildRun] = []
    floors: list[ChildRun] = []
    with tempfile.TemporaryDirectory() as folder:

        def cold_args(index: int) -> list[str]:
            path = Path(folder) / f"event-{index}.json"
            path.write_text(json.dumps(fresh_copy(event, index)))
            return [python, "-S", "-c", _COLD_CHILD, str(app), str(path), "lambda_handler"]

        # Unmeasured: records the services the path calls, compiles what it imports (the layer
        # ships .pyc files) and warms the page cache.
        found = run_child(cold_args(999), {**env, "CHANGEGUARD_BENCH_RECORD_SERVICES": "1"}).report()
        services = ",".join(found["services"]) if found else ""
        floor_args = [python, "-S", "-c", _FLOOR_CHILD, services]
        parser_args = [python, "-S", "-c", _PARSER_FLOOR_CHILD, services]
        run_child(floor_args, env)
        run_child(parser_args, env)
        parser_floors: list[ChildRun] = []
        for i in range(runs):
            colds.append(run_child(cold_args(1000 + i), env))
            floors.append(run_child(floor_args, env))
            parser_floors.append(run_child(parser_args, env))
        counted: dict[str, Any] = {}
        if instructions:
            cold_count = callgrind_instructions(cold_args(2000), env)
            floor_count = callgrind_instructions(floor_args, env)
            ratio = round(cold_count / floor_count, 2) if cold_count and floor_count else None
            counted = {
                "cold_instructions": cold_count,
                "floor_instructions": floor_count,
                "instruction_ratio_to_floor": ratio,
            }
    result = {**judge_cold(colds, floors, parser_floors), **counted, "floor_services": services}
    failed = next((run for run in colds if run.report() is None), None)
    if failed is not None:
        result["cold_error_tail"] = failed.stderr[-2000:]
    return result


def artifact_sizes(build: bool) -> dict[str, Any]:
    """Sizes of what ``sam build`` produced (unzipped bytes), per function and for the layer."""
    build_dir = REPO_ROOT / ".aws-sam" / "build"
    if build:
        sam = REPO_ROOT / ".venv-sam" / "bin" / "sam"
        env = {**os.environ, "PYENV_VERSION": "3.12.1:3.11.7", "SAM_CLI_TELEMETRY": "0"}
        subprocess.run([str(sam), "build"], cwd=REPO_ROOT, env=env, capture_output=True, check=False, timeout=900)
    if not build_dir.exists():
        return {"note": "no sam build output (.aws-sam/build); run without --skip-build"}
    sizes: dict[str, Any] = {}
    for artifact in sorted(p for p in build_dir.iterdir() if p.is_dir()):
        total = sum(f.stat().st_size for f in artifact.rglob("*") if f.is_file())
        sizes[artifact.name] = {"bytes": total, "mb": round(total / 1_048_576, 2)}
    return sizes


def cost_per_million(warm_ms: float, calls: dict[str, int]) -> dict[str, float]:
    """USD per million events at 128 MB on arm64, Lambda plus the DynamoDB requests of the path."""
    lambda_cost = 1_000_000 * (REQUEST + 0.125 * (warm_ms / 1000) * ARM_GB_SECOND)
    writes = sum(
        n
        for name, n in calls.items()
        if name.startswith("dynamodb:") and name.split(":")[1].startswith(("Put", "Transact", "Update", "Delete"))
    )
    reads = sum(
        n for name, n in calls.items() if name.startswith("dynamodb:") and name.split(":")[1] in ("Query", "GetItem")
    )
    ddb = 1_000_000 * (2 * writes * WRITE_UNIT + reads * READ_UNIT)
    return {
        "lambda_usd": round(lambda_cost, 3),
        "dynamodb_usd": round(ddb, 3),
        "total_usd": round(lambda_cost + ddb, 3),
    }


def load_replay(records: int) -> dict[str, Any]:
    """Generate CloudTrail records (mixed services and identities, 5 % violations) and replay them.

    ``changeguard replay`` runs in a child process, seeded with the generator's fixtures; its
    per-event lines are read as they come, next to the generator's labels (same order), so every
    record is checked against what it is: dropped at the bus or not, and the correlator's verdict
    for the labels that have one (violations must be judged ``NO_TICKET``). Nothing is kept per
    event on either side.
    """
    from changeguard_tools.loadgen import DROPPED_AT_THE_BUS, EXPECTED_VERDICT, FIXTURES, read_labels, write_records
    from changeguard_tools.replay import envelope_id

    with tempfile.TemporaryDirectory() as work:
        folder, fixtures_file, report_file = (
            Path(work) / "trail",
            Path(work) / "fixtures.json",
            Path(work) / "report.json",
        )
        folder.mkdir()
        fixtures_file.write_text(json.dumps(FIXTURES))
        total, expected_routed = write_records(folder, records)
        started = time.perf_counter()
        command = [sys.executable, "-m", "changeguard_tools.cli", "replay", "--json", "--quiet"]
        command += ["--fixtures", str(fixtures_file), "--report", str(report_file), str(folder)]
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        lines = errors = routed = misaligned = 0
        labelled: Counter[str] = Counter()
        as_expected: Counter[str] = Counter()
        unexpected: Counter[str] = Counter()
        labels = read_labels(folder)
        assert proc.stdout is not None
        for line in proc.stdout:
            obj = json.loads(line)
            lines += 1
            errors += obj["error"] is not None
            routed += bool(obj["routed_to"])
            event_id, label = next(labels, ("", "missing"))
            if obj["event_id"] != envelope_id(event_id):
                misaligned += 1
                continue
            labelled[label] += 1
            verdict = next((o["verdict"] for o in obj["outcomes"] if o["function"] == "CorrelateChangeFunction"), None)
            if label in DROPPED_AT_THE_BUS:
                ok = not obj["routed_to"]
                outcome = "reached a function" if not ok else ""
            else:
                ok = verdict == EXPECTED_VERDICT[label]
                outcome = f"judged {verdict}"
            if ok:
                as_expected[label] += 1
            else:
                unexpected[f"{label}: {outcome}"] += 1
        exit_status = proc.wait()
        elapsed = time.perf_counter() - started
        report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return {
        "records": total,
        "lines": lines,
        "errors": errors,
        "reached_a_function": routed,
        "expected_to_reach": expected_routed,
        "events_per_s": report.get("events_per_s", 0.0),
        "events_per_s_with_start_up": round(lines / elapsed, 1) if elapsed else 0.0,
        "events_per_cpu_s": report.get("events_per_cpu_s", 0.0),
        "by_rule": report.get("by_rule", {}),
        "verdicts": report.get("verdicts", {}),
        "alerts_by_severity": report.get("alerts_by_severity", {}),
        "error_samples": report.get("error_samples", []),
        "labelled": dict(labelled),
        "as_expected": dict(as_expected),
        "unexpected": dict(unexpected),
        "misaligned": misaligned,
        "violations_labelled": labelled["violation"],
        "violations_judged_violations": as_expected["violation"],
        "exit_status": exit_status,
        "peak_rss_mb": report.get("peak_rss_mb"),
    }


def run(
    runs: int,
    warm_runs: int,
    replay_records: int,
    build: bool,
    out: Path,
    only: set[str] | None = None,
    instructions: bool = False,
    python: str = sys.executable,
) -> dict[str, Any]:
    warm_results = warm(warm_runs, only)
    cold_results = cold(runs, only, instructions, python)
    report: dict[str, Any] = {
        "functions": {},
        "correlator_paths": warm_results.get("_paths", {}),
        "cold_python": child_python_version(python),
    }
    for fid, result in warm_results.items():
        if fid.startswith("_"):
            continue
        entry = {**result, **cold_results.get(fid, {})}
        entry["cost_per_million"] = cost_per_million(result["warm_median_ms"], result["api_calls"])
        report["functions"][fid] = entry
    report["correlator_evaluation"] = correlator_evaluation(max(2000, warm_runs * 20))
    report["artifacts"] = artifact_sizes(build)
    if replay_records:
        report["load_replay"] = load_replay(replay_records)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Cold start: median of each, floor = boto3 + the clients the path calls; target <= {TARGET_RATIO}x on CPU"
        f" (children on Python {report.get('cold_python', '?')})",
        "(+Parser: the floor plus Powertools' Parser validating one EventBridge envelope, as a ratio to the floor)",
        f"{'function':32} {'cold ms':>8} {'floor ms':>8} {'ratio':>6} {'cold CPU':>9} {'floor CPU':>9}"
        f" {'CPU ratio':>9} {'<=' + str(TARGET_RATIO) + 'x':>6} {'import CPU':>10} {'event CPU':>9} {'runs':>5}"
        f" {'+Parser':>8}",
    ]
    for fid, r in report["functions"].items():
        if "cpu_ratio_to_floor" not in r:
            continue
        verdict = "yes" if r["meets_target"] else "NO"
        runs = f"{r['cold_runs'] - r['cold_errors']}/{r['cold_runs']}"
        lines.append(
            f"{fid:32} {r['cold_median_ms']:>8} {r['floor_median_ms']:>8} {r['ratio_to_floor'] or 0:>6}"
            f" {r['cold_cpu_median_ms']:>9} {r['floor_cpu_median_ms']:>9} {r['cpu_ratio_to_floor'] or 0:>9}"
            f" {verdict:>6} {r['import_cpu_median_ms']:>10} {r['first_event_cpu_median_ms']:>9} {runs:>5}"
            f" {r.get('parser_floor_cpu_ratio_to_floor') or '-':>8}"
        )
        if r.get("instruction_ratio_to_floor") is not None:
            lines.append(
                f"{'':32} instructions: {r['cold_instructions']:,} vs floor {r['floor_instructions']:,}"
                f" = {r['instruction_ratio_to_floor']}x"
            )
    lines.append("")
    lines.append(
        f"{'function':32} {'warm p50':>9} {'warm p99':>9} {'ev/s':>8} {'calls':>5} {'RSS MB':>7} {'$/M ev':>7}",
    )
    for fid, r in report["functions"].items():
        lines.append(
            f"{fid:32} {r['warm_median_ms']:>9} {r['warm_p99_ms']:>9} {r['throughput_per_s']:>8}"
            f" {r['api_calls_per_event']:>5} {r.get('peak_rss_mb') or 0:>7} {r['cost_per_million']['total_usd']:>7}"
        )
    lines.append("")
    if report.get("correlator_paths"):
        lines.append("Correlator API calls per event (targets: authorized <= 2, alerting <= 4):")
    for name, path in report.get("correlator_paths", {}).items():
        lines.append(f"  {name:40} {path['calls']}  {path['detail']}")
    ev = report["correlator_evaluation"]
    lines.append(f"Correlator evaluation: {ev['events_per_s']} events/s over {ev['events']} events (target >= 500)")
    lines.append(
        "Artifacts (sam build, unzipped): "
        + ", ".join(f"{k} {v['mb']} MB" for k, v in report["artifacts"].items() if isinstance(v, dict))
    )
    if "load_replay" in report:
        lines.append(render_replay(report["load_replay"]))
    return "\n".join(lines)


def render_replay(lr: dict[str, Any]) -> str:
    """The load replay's figures, as ``make bench`` prints them."""
    lines = []
    if lr:
        lines.append(
            f"Load replay: {lr['lines']}/{lr['records']} records, {lr['errors']} errors, {lr['events_per_s']} events/s"
            f" ({lr['events_per_cpu_s']} per CPU second; {lr['events_per_s_with_start_up']} with start-up), peak RSS"
            f" {lr['peak_rss_mb']} MB; {lr['reached_a_function']} of {lr['lines']} reached a function (filtered at"
            f" the bus; {lr['expected_to_reach']} expected)"
        )
        for rule, count in lr["by_rule"].items():
            lines.append(f"  rule {rule}: {count} of {lr['lines']}")
        for verdict, count in lr["verdicts"].items():
            lines.append(f"  verdict {verdict}: {count}")
        lines.append(
            f"  violations (generator's labels): {lr['violations_judged_violations']} of {lr['violations_labelled']}"
            f" judged violations; records not as labelled: {sum(lr['unexpected'].values())} {lr['unexpected'] or ''}"
        )
        for sample in lr["error_samples"]:
            lines.append(f"  error: {sample}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="changeguard bench")
    parser.add_argument("--runs", type=int, default=10, help="cold starts per function (median)")
    parser.add_argument("--warm-runs", type=int, default=200, help="warm invocations per function")
    parser.add_argument("--replay-records", type=int, default=100_000)
    parser.add_argument("--skip-build", action="store_true", help="report sizes of an existing sam build")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results.json"))
    parser.add_argument("--replay-only", action="store_true", help="only the load replay (no cold/warm runs, no build)")
    parser.add_argument("--only", action="append", metavar="LOGICAL_ID", help="bench only these functions")
    parser.add_argument(
        "--child-python",
        default=sys.executable,
        help="interpreter of the cold and floor children (make bench: the runtime's Python, .venv-bench)",
    )
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions of one cold run under callgrind (slow)"
    )
    args = parser.parse_args(argv)
    if args.replay_only:
        replay_report = load_replay(args.replay_records)
        print(render_replay(replay_report))
        return 0 if replay_report["errors"] == 0 and replay_report["exit_status"] == 0 else 1
    only = set(args.only) if args.only else None
    report = run(
        args.runs,
        args.warm_runs,
        args.replay_records,
        not args.skip_build,
        Path(args.out),
        only,
        args.instructions,
        args.child_python,
    )
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
