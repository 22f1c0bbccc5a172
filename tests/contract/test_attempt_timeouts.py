"""The services that ledger an intent before acting tell an attempt still running from one that
died by the function's Timeout in template.yaml. A timeout raised in the template and not in the
code would let a live attempt's intent be taken for a dead one's, and the action made twice."""

from __future__ import annotations

from datetime import timedelta

import pytest
from changeguard.services import calendar_gate, deployment_guard
from changeguard_tools.template import Template

TEMPLATE = Template()


def _timeout(logical_id: str) -> timedelta:
    own = TEMPLATE.resources[logical_id]["Properties"].get("Timeout")
    seconds = own if own is not None else TEMPLATE.raw["Globals"]["Function"]["Timeout"]
    return timedelta(seconds=int(seconds))


@pytest.mark.parametrize(
    ("logical_id", "attempt_timeout"),
    [
        ("GateChangeWindowFunction", calendar_gate.ATTEMPT_TIMEOUT),
        ("GuardDeploymentFunction", deployment_guard.ATTEMPT_TIMEOUT),
    ],
)
def test_an_attempt_is_presumed_alive_for_at_least_its_functions_timeout(
    logical_id: str, attempt_timeout: timedelta
) -> None:
    assert attempt_timeout >= _timeout(logical_id), f"{logical_id}'s Timeout outlives the code's ATTEMPT_TIMEOUT"
