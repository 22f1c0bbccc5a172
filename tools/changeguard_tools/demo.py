"""``changeguard demo``: the scripted scenario, against a fresh embedded AWS, told as it happens."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import yaml

from changeguard_tools import fixtures
from changeguard_tools.embedded.server import EmbeddedAWS
from changeguard_tools.harness import Harness
from changeguard_tools.template import REPO_ROOT

EVENTS = REPO_ROOT / "events"
SCENARIO = EVENTS / "scenario"


def _describe(event: dict[str, Any]) -> str:
    detail = event.get("detail") or {}
    if "eventName" in detail:
        ident = detail.get("userIdentity") or {}
        who = ident.get("arn") or ident.get("invokedBy") or ident.get("type") or "?"
        service = str(detail.get("eventSource", "")).split(".")[0]
        return f"{service}:{detail['eventName']} by {who} at {detail.get('eventTime')}"
    return f"{event.get('detail-type')} from {event.get('source')} at {event.get('time')}"


def run_demo(out_dir: Path, out: TextIO | None = None) -> int:
    import sys

    out = out or sys.stdout
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "handlers.log"
    steps = yaml.safe_load((SCENARIO / "steps.yaml").read_text())["steps"]
    verdicts: Counter[str] = Counter()
    alerts_total = 0
    results: list[dict[str, Any]] = []
    with log_path.open("w") as log, EmbeddedAWS() as aws:
        harness = Harness(aws.endpoint_url, log_stream=log)
        harness.provision()
        fixtures.seed(harness, fixtures.load(SCENARIO / "fixtures.yaml"))
        out.write(f"ChangeGuard demo - embedded AWS at {aws.endpoint_url}, stack {harness.ctx.stack_name}\n")
        out.write(f"Handler logs: {log_path}\n\n")
        for number, step in enumerate(steps, 1):
            event = json.loads((EVENTS / step["event"]).read_text())
            result = harness.process(event)
            results.append({"step": step["title"], **result})
            out.write(f"[{number}] {step['title']}\n")
            out.write(f"    event    {_describe(event)}\n")
            out.write(f"    routed   {', '.join(result['routed_to']) or 'no rule matched'}\n")
            for outcome in result["outcomes"]:
                verdict = outcome["verdict"] or "-"
                if verdict not in ("NOT_A_CHANGE", "-"):
                    verdicts[verdict] += 1
                out.write(f"    {outcome['function']}: {verdict}; {'; '.join(outcome['actions']) or 'no action'}\n")
                for alert in outcome["alerts"]:
                    alerts_total += 1
                    out.write(f"    ALERT    [{alert['severity']}] {alert['subject']}\n")
                if not outcome["alerts"]:
                    out.write("    alerts   none\n")
            if result["error"]:
                out.write(f"    ERROR    {result['error']}\n")
            out.write("\n")
        (out_dir / "replay.json").write_text(json.dumps(results, indent=2, default=str))
    summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    out.write(f"Summary: {len(steps)} events, verdicts: {summary}; {alerts_total} alert(s) received by the subscriber.\n")
    failed = [r for r in results if r["error"]]
    return 1 if failed else 0
