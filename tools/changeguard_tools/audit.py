"""``make audit``: judge pip-audit's JSON report of the layer's locked requirements (issue 8).

pip-audit asks a vulnerability service about each pinned version. A known vulnerability fails the
audit. A package the service could not answer for (no network, or a registry mirror without
PyPI's per-release JSON API, as on this project's development machines) was *not audited*: that is
reported loudly, and fails too when ``CHANGEGUARD_AUDIT_STRICT=1`` (set it where the service is
reachable, so a silent "not audited" can never pass for "clean").

Usage: ``python -m changeguard_tools.audit build/hardening/pip-audit.json``
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

STRICT_ENV = "CHANGEGUARD_AUDIT_STRICT"


def judge(report: dict[str, Any], strict: bool) -> tuple[int, list[str]]:
    """Exit status and the lines to print for a pip-audit JSON report."""
    lines: list[str] = []
    vulnerable = skipped = audited = 0
    for dep in report.get("dependencies", []):
        name, version = dep.get("name"), dep.get("version")
        if dep.get("skip_reason"):
            skipped += 1
            lines.append(f"NOT AUDITED {name} {version or ''}: {dep['skip_reason']}")
            continue
        audited += 1
        for vuln in dep.get("vulns", []):
            vulnerable += 1
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            lines.append(f"VULNERABLE  {name} {version}: {vuln.get('id')} (fixed in {fixes})")
    lines.append(f"audit: {audited} audited, {vulnerable} known vulnerabilities, {skipped} not audited")
    if vulnerable:
        return 1, lines
    if skipped and strict:
        lines.append(f"{STRICT_ENV}=1: every dependency must be audited")
        return 1, lines
    if skipped:
        lines.append(f"WARNING: the vulnerability service did not answer for {skipped} package(s); not a clean audit")
    return 0, lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    report = json.loads(Path(args[0]).read_text())
    status, lines = judge(report, strict=os.environ.get(STRICT_ENV) == "1")
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
