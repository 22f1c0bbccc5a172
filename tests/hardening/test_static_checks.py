"""Static checks (issue 8): what ``make checkov`` and ``make audit`` rely on, kept honest.

``make test`` runs checkov on template.yaml (zero failed checks), cfn-lint and ``sam validate
--lint``, and pip-audit of the layer's locked requirements. Here: every checkov skip is justified
where it is declared, and the tools' environment is pinned.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from changeguard_tools.audit import complete, judge, main, pins, project_json_lookup
from changeguard_tools.template import REPO_ROOT, Template

TEMPLATE = Template()


def _skips() -> list[tuple[str, dict[str, str]]]:
    out = []
    for logical_id, resource in TEMPLATE.resources.items():
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip") or []:
            out.append((logical_id, skip))
    return out


@pytest.mark.parametrize(("logical_id", "skip"), _skips(), ids=lambda v: v if isinstance(v, str) else v.get("id"))
def test_static_checks_every_checkov_skip_is_justified_inline(logical_id: str, skip: dict[str, str]) -> None:
    assert re.fullmatch(r"CKV2?_AWS_\d+", str(skip.get("id", ""))), skip
    assert len(str(skip.get("comment", "")).split()) >= 8, f"{logical_id}: skip {skip.get('id')} needs its reason"


def test_static_checks_checkov_and_pip_audit_are_pinned() -> None:
    lock = (REPO_ROOT / "requirements-checkov.lock").read_text()
    for tool in ("checkov", "pip-audit"):
        assert re.search(rf"^{tool}==\S+", lock, re.MULTILINE), f"{tool} is not pinned"
    makefile = (REPO_ROOT / "Makefile").read_text()
    test_target = next(line for line in makefile.splitlines() if line.startswith("test:"))
    for target in ("checkov", "audit", "validate", "unit"):
        assert target in test_target.split(), f"`make test` does not run {target}"


def test_static_checks_the_audit_fails_on_a_vulnerability_and_never_passes_silently() -> None:
    clean = {"dependencies": [{"name": "pydantic", "version": "2.0", "vulns": []}]}
    vulnerable = {"dependencies": [{"name": "x", "version": "1", "vulns": [{"id": "PYSEC-1", "fix_versions": ["2"]}]}]}
    unanswered = {"dependencies": [{"name": "x", "skip_reason": "Dependency not found on PyPI"}]}
    assert judge(clean, strict=True)[0] == 0
    assert judge(vulnerable, strict=False)[0] == 1
    status, lines = judge(unanswered, strict=False)
    assert status == 0 and any("not a clean audit" in line for line in lines)
    assert judge(unanswered, strict=True)[0] == 1


# -- the audit's second source: PyPI's project JSON, for registries without the per-release JSON ---------
PROJECTS: dict[str, dict[str, Any]] = {
    "pydantic": {"info": {"name": "pydantic", "version": "2.14.4"}, "vulnerabilities": []},
    "flawed": {
        "info": {"name": "flawed", "version": "1.0"},
        "vulnerabilities": [
            {"id": "PYSEC-2026-1", "aliases": ["CVE-2026-0001"], "fixed_in": ["1.1"], "withdrawn": None},
            {"id": "PYSEC-2025-9", "aliases": [], "fixed_in": [], "withdrawn": "2025-06-01T00:00:00Z"},
        ],
    },
    "moved-on": {"info": {"name": "moved-on", "version": "3.0"}, "vulnerabilities": []},
}


class _PyPI(BaseHTTPRequestHandler):
    """PyPI's JSON API as a mirror serves it: ``/pypi/<project>/json`` only, per-release URLs 404."""

    def do_GET(self) -> None:
        match = re.fullmatch(r"/pypi/([^/]+)/json", self.path)
        project = PROJECTS.get(match.group(1)) if match else None
        body = json.dumps(project).encode() if project else b'{"message": "Not Found"}'
        self.send_response(200 if project else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def pypi() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PyPI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _skipped(*names: str) -> dict[str, Any]:
    return {"dependencies": [{"name": n, "skip_reason": f"Dependency not found on PyPI: {n}"} for n in names]}


def test_static_checks_the_audit_answers_skipped_packages_from_the_project_json_of_their_latest_release(
    pypi: str,
) -> None:
    pinned = pins("# locked\npydantic==2.14.4 \\\n    --hash=sha256:00\nflawed==1.0\nmoved_on==2.0\ngone==1\n")
    assert pinned == {"pydantic": "2.14.4", "flawed": "1.0", "moved-on": "2.0", "gone": "1"}
    report = complete(_skipped("pydantic", "flawed", "moved-on", "gone"), pinned, project_json_lookup(pypi))
    status, lines = judge(report, strict=True)

    assert status == 1  # flawed 1.0 has a live advisory
    assert "VULNERABLE  flawed 1.0: PYSEC-2026-1 (fixed in 1.1)" in lines
    assert not any("PYSEC-2025-9" in line for line in lines)  # withdrawn
    assert any(line.startswith("audited     pydantic 2.14.4") for line in lines)
    # 2.0 is not moved-on's latest release: the project JSON says nothing about it. gone: 404.
    assert any(line.startswith("NOT AUDITED moved-on 2.0") for line in lines)
    assert any(line.startswith("NOT AUDITED gone 1") for line in lines)
    assert lines[-1] == "audit: 2 audited, 1 known vulnerabilities, 2 not audited"


def test_static_checks_the_audit_is_clean_only_when_every_package_was_answered(
    pypi: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHANGEGUARD_AUDIT_PYPI_URL", pypi)
    monkeypatch.setenv("CHANGEGUARD_AUDIT_STRICT", "1")
    report = tmp_path / "pip-audit.json"
    requirements = tmp_path / "requirements.txt"
    report.write_text(json.dumps(_skipped("pydantic")))
    requirements.write_text("pydantic==2.14.4\n")
    assert main([str(report), str(requirements)]) == 0
    assert "audit: 1 audited, 0 known vulnerabilities, 0 not audited" in capsys.readouterr().out

    monkeypatch.setenv("CHANGEGUARD_AUDIT_PYPI_URL", "http://127.0.0.1:9")  # nothing listens: no answer
    assert main([str(report), str(requirements)]) == 1
    assert "every dependency must be audited" in capsys.readouterr().out
