"""``changeguard demo``: the scripted scenario, against a fresh embedded AWS, told as it happens."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from changeguard_tools import fixtures
from changeguard_tools.embedded.server import EmbeddedAWS
from changeguard_tools.harness import FixedClock, Harness
from changeguard_tools.replay import wrap_record
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


def load_scenario(directory: Path = SCENARIO) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every ``NN-name.yaml`` in name order: fixtures merged, steps concatenated.

    A step is one of::

        {title: ..., event: <path under events/>}        # replay through the template's rules
        {title: ..., schedule: <FunctionLogicalId>}      # run a scheduled function now
        {title: ..., clock: <ISO time>}                  # move the scenario clock
        {title: ..., aws: {service: ec2, operation: create_tags, params: {...},
                           save: {instance_id: Instances.0.InstanceId}}}
                                                         # an operator's call; the embedded
                                                         # CloudTrail records it and EventBridge
                                                         # delivers it through the rules; `save`
                                                         # keeps response values for later steps
        {title: ..., parameters: {change-calendar-names: prod-window}}
                                                         # change tunable policy from here on

    Saved values replace ``${name}`` in later steps' event files and parameters, so an event can
    name a deployment or an instance an earlier step created.
    """
    merged: dict[str, Any] = {}
    steps: list[dict[str, Any]] = []
    for path in sorted(directory.glob("[0-9]*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for section, value in (doc.get("fixtures") or {}).items():
            if isinstance(value, list):
                merged.setdefault(section, []).extend(value)
            elif isinstance(value, dict):
                merged.setdefault(section, {}).update(value)
            else:
                merged[section] = value
        steps.extend(doc.get("steps") or [])
    return merged, steps


def _substitute(text: str, saved: dict[str, str]) -> str:
    for name, value in saved.items():
        text = text.replace("${" + name + "}", value)
    return text


def _dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def run_step(
    harness: Harness, aws: EmbeddedAWS, step: dict[str, Any], saved: dict[str, str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Carry out one step; returns (description, result) for each event it produced."""
    saved = {} if saved is None else saved
    if "event" in step:
        event = json.loads(_substitute((EVENTS / step["event"]).read_text(), saved))
        return [(_describe(event), harness.process(event))]
    if "parameters" in step:
        for name, value in step["parameters"].items():
            harness.put_parameter(str(name), _substitute(str(value), saved))
        return []
    if "schedule" in step:
        return [(f"schedule of {step['schedule']}", harness.run_schedule(step["schedule"]))]
    if "clock" in step:
        if harness.clock is None:
            raise ValueError("the scenario clock is not set")
        harness.clock.set(datetime.fromisoformat(str(step["clock"]).replace("Z", "+00:00")))
        harness.refresh_clock()
        return []
    if "aws" in step:
        call = step["aws"]
        before = len(aws.trail.records())
        client = harness.admin_client(call["service"])
        params = json.loads(_substitute(json.dumps(call.get("params") or {}), saved))
        response = getattr(client, call["operation"])(**params)
        for name, path in (call.get("save") or {}).items():
            saved[str(name)] = str(_dig(response, str(path)))
        produced = []
        for record in aws.trail.records()[before:]:
            event = wrap_record(record)
            produced.append((_describe(event), harness.process(event)))
        return produced
    raise ValueError(f"unknown step {step}")


def run_demo(out_dir: Path, out: TextIO | None = None) -> int:
    import sys

    out = out or sys.stdout
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "handlers.log"
    seed, steps = load_scenario()
    verdicts: Counter[str] = Counter()
    alerts_total = 0
    results: list[dict[str, Any]] = []
    start = datetime.fromisoformat(str(seed.pop("now", "2026-11-21T00:00:00Z")).replace("Z", "+00:00"))
    with log_path.open("w") as log, EmbeddedAWS() as aws:
        aws.reset()  # moto's state is per process: start from nothing even after other runs in it
        harness = Harness(aws.endpoint_url, log_stream=log, clock=FixedClock(start))
        harness.provision()
        fixtures.seed(harness, seed)
        out.write(f"ChangeGuard demo - embedded AWS at {aws.endpoint_url}, stack {harness.ctx.stack_name}\n")
        out.write(f"Handler logs: {log_path}\n\n")
        saved: dict[str, str] = {}
        for number, step in enumerate(steps, 1):
            out.write(f"[{number}] {step['title']}\n")
            for description, result in run_step(harness, aws, step, saved):
                results.append({"step": step["title"], **result})
                out.write(f"    event    {description}\n")
                out.write(f"    routed   {', '.join(result['routed_to']) or 'no rule matched'}\n")
                for outcome in result["outcomes"]:
                    verdict = outcome["verdict"] or "-"
                    duplicate = any("duplicate" in a for a in outcome["actions"])
                    if verdict not in ("NOT_A_CHANGE", "-") and not duplicate:
                        verdicts[verdict] += 1
                    actions = "; ".join(outcome["actions"]) or "no action"
                    out.write(f"    {outcome['function']}: {verdict}; {actions}\n")
                    for alert in outcome["alerts"]:
                        alerts_total += 1
                        out.write(f"    ALERT    [{alert['severity']}] {alert['subject']}\n")
                    if not outcome["alerts"]:
                        out.write("    alerts   none\n")
                if result["error"]:
                    out.write(f"    ERROR    {result['error']}\n")
            out.write("\n")
        (out_dir / "replay.json").write_text(json.dumps(results, indent=2, default=str))
        # issue 7: end with the scenario's KPI table and its evidence pack (the ledger lives in `aws`).
        from changeguard_tools.reports_cli import demo_evidence

        demo_evidence(harness, out_dir, out)
    summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    out.write(
        f"Summary: {len(steps)} steps, {len(results)} events; verdicts: {summary};"
        f" {alerts_total} alert(s) received by the subscriber.\n"
    )
    return 1 if any(r["error"] for r in results) else 0
