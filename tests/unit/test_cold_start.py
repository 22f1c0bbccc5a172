"""What keeps a cold start short (issue 9): one boto3 session, models built on first use only.

The figures themselves are reported by ``make bench``, not asserted; these pin the mechanisms.
"""

from __future__ import annotations

import ast
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from changeguard.adapters import clients
from changeguard.settings import load_policy
from changeguard_tools.template import Template

_TEMPLATE = Template()
_FUNCTIONS = _TEMPLATE.functions(_TEMPLATE.context())


def test_the_policy_is_read_through_the_shared_ssm_client(aws):
    from aws_lambda_powertools.utilities.parameters.constants import DEFAULT_PROVIDERS

    aws.client("ssm").put_parameter(Name="/changeguard/test/enforcement-mode", Value="enforce", Type="String")
    clients.reset()
    DEFAULT_PROVIDERS.clear()
    try:
        policy = load_policy("/changeguard/test/")
        # Powertools' provider would otherwise build a second boto3 session of its own.
        assert DEFAULT_PROVIDERS["ssm"].client is clients.client("ssm")
        assert policy.enforcement_mode.value == "enforce"
    finally:
        DEFAULT_PROVIDERS.clear()
        clients.reset()


_PROBE = r"""
import json, sys
import changeguard.ports
from changeguard.domain.ledger import LedgerEntry
print(json.dumps({
    "calendar_imported": "changeguard.domain.calendar" in sys.modules,
    "alerts_imported": "changeguard.domain.alerts" in sys.modules,
    "ledger_entry_built": LedgerEntry.__pydantic_complete__,
}))
"""


def test_importing_the_ports_and_a_model_builds_nothing():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    found = json.loads(out.stdout)
    assert found == {"calendar_imported": False, "alerts_imported": False, "ledger_entry_built": False}


def test_a_deferred_model_still_validates_and_forbids_unknown_fields():
    import pytest
    from changeguard.domain.tickets import TicketRef, TicketRefSource
    from pydantic import ValidationError

    ref = TicketRef.model_validate({"ticket_id": "CHG-1001", "found_in": TicketRefSource.REQUEST_TAGS})
    assert ref.ticket_id == "CHG-1001"
    with pytest.raises(ValidationError):
        TicketRef.model_validate({"ticket_id": "CHG-1001", "found_in": "request_tags", "extra": 1})


# -- the collector during initialisation (changeguard.coldstart) ---------------------------------------


@pytest.fixture
def first_initialisation(monkeypatch):
    """This process as a fresh sandbox: no hold yet, collector on; its collector state restored after."""
    from changeguard import coldstart

    was_enabled = gc.isenabled()
    monkeypatch.setattr(coldstart._State, "held", False)
    monkeypatch.setattr(coldstart._State, "done", False)
    gc.enable()
    yield coldstart
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_an_event_driven_handler_keeps_the_collector_off_through_its_first_invocation(first_initialisation):
    coldstart = first_initialisation
    seen: list[bool] = []

    @coldstart.released(after="first invocation")
    def handler(event, context):
        seen.append(gc.isenabled())
        return "done"

    coldstart.hold()
    assert not gc.isenabled()
    assert handler({}, None) == "done"
    assert seen == [False]
    # Released: on again, with what initialising built frozen, so no collection walks it again.
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0
    handler({}, None)
    assert seen == [False, True]


def test_a_first_invocation_that_raises_still_releases_the_collector(first_initialisation):
    coldstart = first_initialisation

    @coldstart.released(after="first invocation")
    def handler(event, context):
        raise RuntimeError("boom")

    coldstart.hold()
    with pytest.raises(RuntimeError):
        handler({}, None)
    assert gc.isenabled()


def test_a_scheduled_job_runs_with_the_collector_on(first_initialisation):
    coldstart = first_initialisation
    seen: list[bool] = []

    @coldstart.released(after="init")
    def handler(event, context):
        seen.append(gc.isenabled())

    coldstart.hold()
    handler({}, None)
    assert seen == [True]
    assert gc.get_freeze_count() > 0


def test_only_a_process_s_first_initialisation_holds(first_initialisation):
    coldstart = first_initialisation
    coldstart.hold()
    coldstart.release()
    coldstart.hold()  # a handler module loaded again in the same process (the harness, replay)
    assert gc.isenabled()


def test_a_collector_someone_else_turned_off_stays_off(first_initialisation):
    coldstart = first_initialisation
    gc.disable()
    coldstart.hold()
    coldstart.release()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0


def _app_statements(path: Path) -> list[ast.stmt]:
    body = ast.parse(path.read_text()).body
    return [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]


@pytest.mark.parametrize("spec", list(_FUNCTIONS.values()), ids=list(_FUNCTIONS))
def test_every_handler_holds_the_collector_before_its_imports_and_releases_it(spec):
    statements = _app_statements(spec.code_uri / "app.py")
    # After ``from __future__``: import coldstart, hold, and only then everything else.
    assert ast.unparse(statements[1]) == "from changeguard import coldstart"
    assert ast.unparse(statements[2]) == "coldstart.hold()"
    handler = next(s for s in statements if isinstance(s, ast.FunctionDef) and s.name == "lambda_handler")
    released = [ast.unparse(d) for d in handler.decorator_list if "coldstart.released" in ast.unparse(d)]
    # A function a schedule invokes can have a job as its first invocation (the guard's health sweep over
    # every account-region drops member clients as it goes): it collects from the start.
    expected = "init" if spec.schedules else "first invocation"
    assert released == [f"coldstart.released(after={expected!r})"]


_PROBE_APP = r"""
import gc, json, sys
sys.path.insert(0, sys.argv[2])
import importlib.util
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
during_init = gc.isenabled()
class Context:
    function_name, memory_limit_in_mb, aws_request_id = "probe", 128, "cold-start"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:probe"
try:  # no wiring: the first invocation fails, as one with a broken deploy would
    module.lambda_handler({}, Context())
    raised = None
except Exception as exc:
    raised = type(exc).__name__
print(json.dumps({"during_init": during_init, "after": gc.isenabled(), "frozen": gc.get_freeze_count() > 0,
                  "raised": raised}))
"""


def test_a_fresh_process_holds_while_the_correlator_initialises_and_releases_after_its_first_invocation():
    app = _FUNCTIONS["CorrelateChangeFunction"].code_uri / "app.py"
    layer = app.parents[2] / "layers" / "changeguard"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.endswith("_TABLE_NAME")}
    env["AWS_DEFAULT_REGION"] = "us-east-1"
    out = subprocess.run(
        [sys.executable, "-c", _PROBE_APP, str(app), str(layer)], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"during_init": False, "after": True, "frozen": True, "raised": "ConfigurationError"}
