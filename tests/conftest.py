"""Fixtures shared by every test folder.

* ``embedded_aws`` (session): one embedded AWS (moto's server on 127.0.0.1, in this process) for the
  whole test session. Starting one per test would be slower and gain nothing: ``aws`` resets it.
* ``aws`` (function): the same embedded AWS, emptied (moto's state, extension state, the trail),
  with the environment boto3 reads pointed at it, so code that builds its own clients (the suite's
  adapters) talks to it and can never reach real AWS. Fails the test if the CloudTrail recorder
  could not record a call the test made.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from changeguard_tools.embedded import EmbeddedAWS

# issue 8 (least privilege): record the AWS calls each function makes while the suite runs.
pytest_plugins = ["hardening.callrecorder"]


@pytest.fixture(scope="session")
def embedded_aws() -> Iterator[EmbeddedAWS]:
    """The session's embedded AWS, started once and stopped at the end."""
    with EmbeddedAWS() as embedded:
        yield embedded


@pytest.fixture
def aws(embedded_aws: EmbeddedAWS, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedAWS]:
    """The embedded AWS, reset, with boto3's environment pointing at it."""
    embedded_aws.reset()
    # Anything a developer's shell or ~/.aws could add would win over these or redirect a service
    # to real AWS, so it goes: profiles, config files, per-service endpoints, session tokens.
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL_") or name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_ENDPOINT_URL", embedded_aws.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(embedded_aws.max_attempts))
    yield embedded_aws
    assert not embedded_aws.errors, f"the CloudTrail recorder failed: {embedded_aws.errors!r}"
