"""What keeps a cold start short (issue 9): one boto3 session, models built on first use only.

The figures themselves are reported by ``make bench``, not asserted; these pin the mechanisms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from changeguard.adapters import clients
from changeguard.settings import load_policy


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
