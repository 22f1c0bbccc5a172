"""Static checks (issue 8): what ``make checkov`` and ``make audit`` rely on, kept honest.

``make test`` runs checkov on template.yaml (zero failed checks), cfn-lint and ``sam validate
--lint``, and pip-audit of the layer's locked requirements. Here: every checkov skip is justified
where it is declared, and the tools' environment is pinned.
"""

from __future__ import annotations

import re

import pytest
from changeguard_tools.audit import judge
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
