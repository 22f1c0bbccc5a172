"""pytest plugin: every AWS call each ChangeGuard function makes while the test suite runs (issue 8).

Recording
---------
Every botocore session created in the test process gets a ``before-parameter-build`` hook (the
event that carries the call's own parameters), so clients of the suite's adapters, of Powertools'
Parameters and Idempotency utilities, and of anything else are all seen. A call belongs to a
function when its Python stack passes through ``functions/<folder>/`` (the handler, or code the
handler called), or through the runtime package while ``CHANGEGUARD_FUNCTION`` names the function
(a service driven directly by a test). Calls of tests, the harness and the embedded AWS belong to
no function and are not recorded.

Each call is kept as the IAM requests it makes (:func:`iam.requests_for`).

At the end of the session
-------------------------
Each process (every xdist worker) writes what it saw to a folder of its session's own (sessions may
run side by side in one work tree). The controlling process merges them into
``build/hardening/aws-calls.json`` and checks every
recorded action against the template: an action a function called that its role does not allow
fails the session. After a complete passing run it also lists the entries of
``iam.REACHED_BY_OTHER_TESTS`` that no test reached (a warning section: each is a path that needs a
test, or a permission the role can drop) (``tests/hardening/test_least_privilege.py`` is the named, deterministic proof;
this check covers whatever other tests made the functions do).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from changeguard_tools.template import REPO_ROOT, Template
from hardening.iam import REACHED_BY_OTHER_TESTS, IamRequest, Statement, is_allowed, requests_for

FUNCTIONS_DIR = str(REPO_ROOT / "functions") + os.sep
LAYER_DIR = str(REPO_ROOT / "layers" / "changeguard" / "changeguard") + os.sep
OUT_DIR = REPO_ROOT / "build" / "hardening"
MERGED = OUT_DIR / "aws-calls.json"
RUN_DIR_ENV = "CHANGEGUARD_CALLS_DIR"
MAX_RESOURCE = 2048  # IAM's longest ARN


@dataclass(frozen=True, order=True)
class Call:
    """One API call of one function (its folder name), as the IAM requests it makes."""

    function: str
    service: str
    operation: str
    requests: tuple[IamRequest, ...]


def function_of_stack(start: Any) -> str | None:
    """The function folder on the call's stack, or the active function for runtime-package code."""
    frame = start
    in_layer = False
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(FUNCTIONS_DIR):
            return filename[len(FUNCTIONS_DIR) :].split(os.sep, 1)[0]
        if filename.startswith(LAYER_DIR):
            in_layer = True
        frame = frame.f_back
    return os.environ.get("CHANGEGUARD_FUNCTION") if in_layer else None


class CallRecorder:
    """Counts calls per function; :meth:`scope` collects the calls made inside a ``with`` block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[Call] = Counter()
        self._scopes: list[Counter[Call]] = []
        self._installed = False

    def hook(self, params: Any, model: Any, context: Any = None, **_: Any) -> None:
        function = function_of_stack(sys._getframe(1))
        if function is None:
            return
        service = str(model.service_model.service_name)
        region = (context or {}).get("client_region")
        try:
            requests = tuple(requests_for(service, str(model.name), params or {}, region))
        except (KeyError, TypeError, AttributeError):  # parameters botocore will reject anyway
            requests = tuple(requests_for(service, str(model.name), {}, region))
        # Bounded: resources come from event values, and a property test sends huge ones by the
        # thousand; nothing longer than an ARN can be is kept whole (the session holds every call).
        requests = tuple(
            IamRequest(
                r.action, r.resource[:MAX_RESOURCE] if r.resource and len(r.resource) > MAX_RESOURCE else r.resource
            )
            for r in requests
        )
        call = Call(function, service, str(model.name), requests)
        with self._lock:
            self.calls[call] += 1
            for scope in self._scopes:
                scope[call] += 1

    @contextlib.contextmanager
    def scope(self) -> Iterator[Counter[Call]]:
        collected: Counter[Call] = Counter()
        with self._lock:
            self._scopes.append(collected)
        try:
            yield collected
        finally:
            with self._lock:
                self._scopes.remove(collected)

    def install(self) -> None:
        """Give every botocore session created from now on the hook (idempotent).

        Sessions created before are not hooked: a test that installs it late (when the plugin is not
        registered) must drop the cached ones (:func:`install_fresh`).
        """
        if self._installed:
            return
        import botocore.session

        original = botocore.session.Session.__init__
        recorder = self

        def init(session: Any, *args: Any, **kwargs: Any) -> None:
            original(session, *args, **kwargs)
            session.register("before-parameter-build", recorder.hook)

        botocore.session.Session.__init__ = init  # type: ignore[method-assign]
        self._installed = True


RECORDER = CallRecorder()


def install_fresh() -> None:
    """Install the hook and drop the clients and sessions cached before it (the suite's, Powertools')."""
    from aws_lambda_powertools.utilities.parameters import base as parameters
    from changeguard.adapters import clients

    if not RECORDER._installed:
        RECORDER.install()
        clients.reset()
        parameters.DEFAULT_PROVIDERS.clear()


def calls_as_json(calls: Counter[Call]) -> list[dict[str, Any]]:
    return [
        {
            "function": c.function,
            "service": c.service,
            "operation": c.operation,
            "requests": [[r.action, r.resource] for r in c.requests],
            "count": n,
        }
        for c, n in sorted(calls.items())
    ]


def calls_from_json(rows: list[dict[str, Any]]) -> Counter[Call]:
    out: Counter[Call] = Counter()
    for row in rows:
        requests = tuple(IamRequest(a, r) for a, r in row["requests"])
        out[Call(row["function"], row["service"], row["operation"], requests)] += int(row["count"])
    return out


def action_statements(template: Template) -> dict[str, list[Statement]]:
    """Per function folder, its statements with actions only (resources and If branches unresolved).

    Both branches of an ``Fn::If`` count: another test may have run with the condition true.
    """
    out: dict[str, list[Statement]] = {}
    for logical_id, resource in template.resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        folder = Path(str(props.get("CodeUri", ""))).name
        statements: list[Statement] = []
        for policy in props.get("Policies", []):
            raw = policy.get("Statement", []) if isinstance(policy, dict) else []
            for st in _branches(raw):
                actions = st.get("Action")
                statements.append(
                    Statement(
                        sid=str(st.get("Sid", logical_id)),
                        effect=str(st.get("Effect", "Allow")),
                        actions=tuple(actions) if isinstance(actions, list) else (str(actions),),
                        resources=("*",),
                    )
                )
        out[folder] = statements
    return out


def _branches(raw: Any) -> Iterator[dict[str, Any]]:
    for st in raw if isinstance(raw, list) else [raw]:
        if isinstance(st, dict) and "Fn::If" in st:
            yield from _branches([b for b in st["Fn::If"][1:] if isinstance(b, dict) and "Ref" not in b])
        elif isinstance(st, dict) and "Effect" in st:
            yield st


def unallowed_actions(calls: Counter[Call], template: Template) -> list[str]:
    """Calls whose action the function's role allows on no resource (the session-wide check)."""
    statements = action_statements(template)
    problems: set[str] = set()
    for call in calls:
        if call.function not in statements:
            continue
        for request in call.requests:
            allowed = any(
                st.effect == "Allow" and st.matches_action(request.action) for st in statements[call.function]
            )
            if not allowed or not is_allowed(statements[call.function], IamRequest(request.action)):
                problems.add(f"{call.function}: {request.action} ({call.service}.{call.operation})")
    return sorted(problems)


def unreached_listed(calls: Counter[Call]) -> list[str]:
    """Entries of ``REACHED_BY_OTHER_TESTS`` that no test of the session reached."""
    made = {(c.function, r.action.lower()) for c in calls for r in c.requests}
    return sorted(
        f"{folder}: {action} is listed as reached by other tests ({why}), but no test made the call"
        for folder, actions in REACHED_BY_OTHER_TESTS.items()
        for action, why in actions.items()
        if (folder, action.lower()) not in made
    )


def _whole_suite(config: pytest.Config) -> bool:
    """Whether the session ran every test (no selection), so "never called" means never called."""
    option = config.option
    if getattr(option, "keyword", "") or getattr(option, "lf", False):
        return False
    if getattr(option, "markexpr", "") not in ("", "not slow"):  # `make unit` leaves out sam builds only
        return False
    if getattr(option, "deselect", None) or getattr(option, "ignore", None):
        return False
    testpaths = [str(REPO_ROOT / p) for p in config.getini("testpaths")]
    args = [str(Path(a).resolve()) for a in config.args]
    return not args or sorted(args) == sorted(testpaths) or args == [str(REPO_ROOT)]


# -- pytest hooks -------------------------------------------------------------------------------


def _worker_id(config: pytest.Config) -> str | None:
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else None


def _run_dir() -> Path:
    return Path(os.environ[RUN_DIR_ENV])


def pytest_configure(config: pytest.Config) -> None:
    RECORDER.install()
    if _worker_id(config) is None:
        # One folder per session: several sessions may run in one work tree at once. xdist workers
        # are started after this and inherit the environment.
        os.environ[RUN_DIR_ENV] = str(OUT_DIR / f"run-{os.getpid()}")
        shutil.rmtree(_run_dir(), ignore_errors=True)
        _run_dir().mkdir(parents=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    worker = _worker_id(session.config)
    run_dir = _run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"aws-calls-{worker or 'main'}.json").write_text(json.dumps(calls_as_json(RECORDER.calls), indent=1))
    if worker is not None:
        return
    merged: Counter[Call] = Counter()
    for path in sorted(run_dir.glob("aws-calls-*.json")):
        merged.update(calls_from_json(json.loads(path.read_text())))
    shutil.rmtree(run_dir, ignore_errors=True)
    MERGED.write_text(json.dumps(calls_as_json(merged), indent=1))
    problems = unallowed_actions(merged, Template())
    if _whole_suite(session.config) and session.exitstatus == pytest.ExitCode.OK:
        # Reported, not (yet) failing: each is an allowed action no test reached, so either a path
        # that needs a test or a permission the role can drop.
        session.config.stash[_UNREACHED] = unreached_listed(merged)
    session.config.stash[_PROBLEMS] = problems
    if problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_PROBLEMS = pytest.StashKey[list[str]]()
_UNREACHED = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    unreached = config.stash.get(_UNREACHED, [])
    if unreached:
        terminalreporter.section("least privilege (whole test session): allowed, listed, but never called", yellow=True)
        for line in unreached:
            terminalreporter.line(line)
    problems = config.stash.get(_PROBLEMS, [])
    if problems:
        terminalreporter.section("least privilege (whole test session): roles versus the calls made", red=True)
        for line in problems:
            terminalreporter.line(line)
        terminalreporter.line(f"(every call recorded: {MERGED.relative_to(REPO_ROOT)})")
