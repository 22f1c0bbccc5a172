"""``make audit``: judge pip-audit's JSON report of the layer's locked requirements (issue 8).

pip-audit asks a vulnerability service about each pinned version (PyPI's per-release JSON,
``/pypi/<name>/<version>/json``). A known vulnerability fails the audit.

Some registries (this project's development machines' mirror among them) do not serve the
per-release JSON, only the project's: ``/pypi/<name>/json``. PyPI documents that endpoint's
``vulnerabilities`` as those of the project's *latest* release, so for a package pip-audit could
not answer for, the audit asks that endpoint, and counts the answer only when the pinned version
is the latest release (withdrawn advisories are ignored, as pip-audit ignores them). Any other
package was *not audited*: that is reported loudly, and fails too when ``CHANGEGUARD_AUDIT_STRICT=1``
(set it where the service is reachable, so a silent "not audited" can never pass for "clean").

Usage: ``python -m changeguard_tools.audit build/hardening/pip-audit.json [requirements.txt]``
(the requirements give the pinned versions of the packages pip-audit skipped; the PyPI base URL
is ``$CHANGEGUARD_AUDIT_PYPI_URL``, default ``https://pypi.org``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

STRICT_ENV = "CHANGEGUARD_AUDIT_STRICT"
PYPI_ENV = "CHANGEGUARD_AUDIT_PYPI_URL"
DEFAULT_PYPI = "https://pypi.org"

#: ``(name, pinned version)`` -> that version's vulnerabilities, or ``None`` when no answer holds.
Lookup = Callable[[str, str], "list[dict[str, Any]] | None"]


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
        if dep.get("audited_by"):
            lines.append(f"audited     {name} {version}: {dep['audited_by']}")
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


def pins(requirements: str) -> dict[str, str]:
    """``name==version`` lines of a locked requirements file, by normalized name."""
    found: dict[str, str] = {}
    for line in requirements.splitlines():
        match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#\\]+)", line)
        if match:
            found[_normalized(match.group(1))] = match.group(2)
    return found


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_json_lookup(base: str = DEFAULT_PYPI, timeout: float = 15) -> Lookup:
    """Ask PyPI's project JSON; an answer counts only for the project's latest release."""

    def lookup(name: str, version: str) -> list[dict[str, Any]] | None:
        url = f"{base.rstrip('/')}/pypi/{_normalized(name)}/json"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - https, or a test's server
                project = json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return None
        info = project.get("info") if isinstance(project, dict) else None
        vulns = project.get("vulnerabilities") if isinstance(project, dict) else None
        if not isinstance(info, dict) or info.get("version") != version or not isinstance(vulns, list):
            return None
        return [
            {"id": v.get("id"), "fix_versions": list(v.get("fixed_in") or []), "aliases": list(v.get("aliases") or [])}
            for v in vulns
            if isinstance(v, dict) and not v.get("withdrawn")
        ]

    return lookup


def complete(report: dict[str, Any], pinned: dict[str, str], lookup: Lookup) -> dict[str, Any]:
    """The report, with each package pip-audit skipped answered by ``lookup`` where it can be."""
    out: list[dict[str, Any]] = []
    for dep in report.get("dependencies", []):
        name = str(dep.get("name") or "")
        version = dep.get("version") or pinned.get(_normalized(name))
        if not dep.get("skip_reason") or not version:
            out.append(dep)
            continue
        vulns = lookup(name, str(version))
        if vulns is None:
            out.append({**dep, "version": version})
            continue
        out.append(
            {
                "name": name,
                "version": version,
                "vulns": vulns,
                "audited_by": "PyPI project JSON (the pinned version is the latest release)",
            }
        )
    return {**report, "dependencies": out}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    report = json.loads(Path(args[0]).read_text())
    if len(args) == 2:
        lookup = project_json_lookup(os.environ.get(PYPI_ENV) or DEFAULT_PYPI)
        report = complete(report, pins(Path(args[1]).read_text()), lookup)
    status, lines = judge(report, strict=os.environ.get(STRICT_ENV) == "1")
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
