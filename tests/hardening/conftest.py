"""Shared helpers for the hardening tests (issue 8).

Sizes: every property test states its count at full size and runs ``scaled(count)`` of it. The scale
comes from ``CHANGEGUARD_SOAK_SCALE``: ``0.1`` by default (the CI test command), ``1.0`` under
``make soak``. ``scaled`` is importable (``from hardening.conftest import scaled``) and also a fixture
of the same name.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from changeguard.adapters.dynamodb import DynamoDBLedger, DynamoDBTicketSource, item_to_entry
from changeguard.domain.ledger import LedgerEntry
from changeguard.domain.policy import Policy
from changeguard.settings import Wiring
from changeguard_tools.harness import REGION, FixedClock, Harness, quiet_stream
from changeguard_tools.patterns import compile_pattern

SCALE_ENV = "CHANGEGUARD_SOAK_SCALE"
DEFAULT_SCALE = 0.1


def soak_scale() -> float:
    """The run's scale factor: 0.1 in CI, 1.0 under ``make soak``."""
    raw = os.environ.get(SCALE_ENV, "")
    scale = float(raw) if raw.strip() else DEFAULT_SCALE
    if not 0 < scale <= 10:
        raise ValueError(f"{SCALE_ENV} must be in (0, 10], got {raw!r}")
    return scale


def scaled(n: int) -> int:
    """``n`` (the full size) times the run's scale factor, rounded up, at least 1."""
    return max(1, math.ceil(n * soak_scale()))


@pytest.fixture(name="scaled")
def _scaled_fixture() -> object:
    """The ``scaled`` helper, for tests that prefer a fixture to an import."""
    return scaled


# -- part A: duplicates, faults, missed events, self-protection ------------------------------------
# Imported by the tests as ``from hardening.conftest import ...`` (tests/ is on the path).

CORRELATE = "CorrelateChangeFunction"
#: What the suite's clients use (adapters/clients.py); threads below build theirs the same way.
SUITE_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=3, read_timeout=10)


def make_harness(aws: Any, at: datetime | None = None, **parameters: Any) -> Harness:
    """A provisioned stack in the embedded AWS, its clock fixed at ``at`` (default: now)."""
    from aws_lambda_powertools.utilities import parameters as powertools_parameters

    powertools_parameters.clear_caches()  # providers are rebuilt with the functions' environment
    h = Harness(
        aws.endpoint_url,
        clock=FixedClock(at or datetime.now(UTC)),
        log_stream=quiet_stream(),
        parameters=parameters,
    )
    h.provision()
    return h


def reenveloped(event: dict[str, Any]) -> dict[str, Any]:
    """The same event under a new EventBridge envelope id (a redelivery, a replay, a second rule)."""
    copy = json.loads(json.dumps(event))
    copy["id"] = str(uuid.uuid4())
    return copy


def ledger_table(h: Harness) -> str:
    return str(h.ctx.refs["ChangeLedgerTable"])


def ledger_entries(h: Harness, change_id: str) -> list[LedgerEntry]:
    """Every ledger entry of ``change_id``, by entry key."""
    pages = (
        h.admin_client("dynamodb")
        .get_paginator("query")
        .paginate(
            TableName=ledger_table(h),
            KeyConditionExpression="change_id = :c",
            ExpressionAttributeValues={":c": {"S": change_id}},
            ConsistentRead=True,
        )
    )
    return sorted((item_to_entry(i) for p in pages for i in p.get("Items", [])), key=lambda e: e.entry)


def all_ledger_entries(h: Harness) -> list[LedgerEntry]:
    pages = h.admin_client("dynamodb").get_paginator("scan").paginate(TableName=ledger_table(h), ConsistentRead=True)
    return [item_to_entry(i) for p in pages for i in p.get("Items", [])]


def function_session(h: Harness, logical_id: str) -> boto3.session.Session:
    """A boto3 session signed as the function's own role (its identity in the trail)."""
    env = h.function_environment(logical_id)
    return boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
        region_name=REGION,
    )


class FunctionClients:
    """Clients of one sandbox: the function's identity, the suite's retry settings, never shared."""

    def __init__(self, h: Harness, logical_id: str) -> None:
        self.session = function_session(h, logical_id)
        self.endpoint_url = h.endpoint_url
        self.wiring = Wiring.from_env({k: str(v) for k, v in h.functions[logical_id].environment.items()})

    def __call__(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url, config=SUITE_RETRIES)

    def policy(self) -> Policy:
        """The tunable policy, read as ``settings.load_policy`` reads it (one GetParametersByPath)."""
        pages = self("ssm").get_paginator("get_parameters_by_path").paginate(Path=self.wiring.parameter_path)
        return Policy.from_parameters({p["Name"]: p["Value"] for page in pages for p in page["Parameters"]})


def correlator_sandbox(h: Harness) -> Any:
    """A CorrelateService built as ``functions/correlate_change/app.py`` builds it, with its own clients."""
    from changeguard.adapters.tagging import AwsTagReader
    from changeguard.services.correlate import CorrelateService

    clients = FunctionClients(h, CORRELATE)
    wiring = clients.wiring
    assert wiring.ticket_table_name and h.clock is not None
    policy = clients.policy()
    ddb = clients("dynamodb")
    return CorrelateService(
        function="correlate_change",
        ledger=DynamoDBLedger(wiring.ledger_table_name, ddb),
        tickets=DynamoDBTicketSource(wiring.ticket_table_name, ddb),
        tags=AwsTagReader(clients("resourcegroupstaggingapi"), clients("cloudformation")),
        policy=lambda: policy,
        clock=h.clock,
        suite_role_prefixes=(wiring.suite_role_prefix,) if wiring.suite_role_prefix else (),
        **correlator_extras(wiring),
    )


def correlator_extras(wiring: Wiring) -> dict[str, Any]:
    """What app.build_service passes besides the adapters (kept in one place for the sandboxes)."""
    from changeguard import factory

    return {
        "suite": factory.suite_resources(wiring),
        "heartbeat_parameter": wiring.heartbeat_parameter_name,
        "correlated_sources": wiring.correlated_event_sources,
    }


def concurrently(
    deliveries: Sequence[Any], handle: Callable[[Any, Any], Any], sandbox: Callable[[], Any], workers: int = 16
) -> list[Any]:
    """Deliver every item on ``workers`` threads at once, each thread with its own sandbox.

    A barrier releases the threads together, so the first deliveries really race. Exceptions are
    returned in place of results (a failed delivery is a finding, not a crash of the test).
    """
    sandboxes = [sandbox() for _ in range(workers)]
    local = threading.local()
    counter = iter(range(workers))
    lock = threading.Lock()
    barrier = threading.Barrier(workers)

    def init() -> None:
        with lock:
            local.sandbox = sandboxes[next(counter)]
        barrier.wait()

    def run(item: Any) -> Any:
        try:
            return handle(local.sandbox, item)
        except Exception as exc:  # reported to the test, not raised
            return exc

    with ThreadPoolExecutor(max_workers=workers, initializer=init) as pool:
        return list(pool.map(run, deliveries))


def trail_since(aws: Any, mark: int) -> list[dict[str, Any]]:
    return aws.trail.records()[mark:]


def calls_by(records: Iterable[dict[str, Any]], role_fragment: str, *names: str) -> list[dict[str, Any]]:
    """Successful calls named ``names`` made by a role whose ARN contains ``role_fragment``."""
    return [
        r
        for r in records
        if r.get("eventName") in names
        and not r.get("errorCode")
        and role_fragment in str((r.get("userIdentity") or {}).get("arn", ""))
    ]


def rule_pattern(h: Harness, logical_id: str, rule: str) -> Any:
    return next(r.pattern for r in h.functions[logical_id].rules if r.name == rule)


def rule_matcher(h: Harness, logical_id: str, rule: str) -> Callable[[dict[str, Any]], bool]:
    return compile_pattern(rule_pattern(h, logical_id, rule))


def published_alerts(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """SNS Publish calls the trail recorded (the outbox publisher's, successful ones)."""
    return [r for r in records if r.get("eventName") == "Publish" and not r.get("errorCode")]


def load_scenario_file(name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The fixtures and steps of one scenario file (``events/scenario/<name>``) on its own."""
    import shutil
    import tempfile
    from pathlib import Path

    from changeguard_tools.demo import SCENARIO, load_scenario

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(SCENARIO / name, Path(tmp) / name)
        return load_scenario(Path(tmp))
