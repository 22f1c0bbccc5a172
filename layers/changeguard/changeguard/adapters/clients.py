"""Lazy, cached boto3 clients: created on first use, reused while the Lambda is warm.

Nothing is created at import time, so tests and the replay harness can point the
environment (``AWS_ENDPOINT_URL``, credentials) anywhere before the first call, and
``reset()`` drops every cached client.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any, Protocol

_lock = threading.Lock()
_clients: dict[tuple[str, str | None, str], Any] = {}


@cache
def _config() -> Any:
    from botocore.config import Config

    # Standard retry mode: throttling and 5xx are retried with backoff; bounded timeouts so a
    # hung endpoint cannot eat the whole Lambda timeout.
    return Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=3,
        read_timeout=10,
        tcp_keepalive=True,
    )


@cache
def _session() -> Any:
    import boto3

    return boto3.session.Session()


def client(service: str, region: str | None = None, *, purpose: str = "shared") -> Any:
    """The shared client for ``service`` (and ``region``, for cross-region calls).

    ``purpose`` gives a caller a client of its own, and with it a retry quota of its own. botocore's
    standard mode keeps one quota per client: a retry costs units (14 after a 5xx, 5 after
    throttling), refunded only when the retry succeeds, and once the quota is spent the client stops
    retrying and fails at the first error. The ledger's conditional puts spend it on every duplicate
    delivery whose first attempt failed (the retry ends in ``ConditionalCheckFailed``, never refunded);
    a ticket read sharing that quota would then fail at its first throttle, and the change would be
    recorded UNVERIFIED with a degraded-mode alert because of duplicates on another table.
    """
    key = (service, region, purpose)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _session().client(service, region_name=region, config=_config())
            _clients[key] = found
    return found


class ActingClients(Protocol):
    """``adapters.accounts.AccountClients`` as the adapters use it (no import of it at start-up)."""

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any: ...


def acting_client(
    service: str, accounts: ActingClients | None, *, account: str | None = None, region: str | None = None
) -> Any:
    """The client for ``service`` where the function is acting (issue 9: the account and region of the
    event in scope, or the ``account``/``region`` given), else the shared one (in ``region``)."""
    if accounts is not None:
        return accounts.client(service, account=account, region=region)
    return client(service, region)


def reset() -> None:
    """Forget every client (tests, and the harness when it switches function identity)."""
    with _lock:
        _clients.clear()
    _session.cache_clear()
    _config.cache_clear()


def new_client(service: str, region: str | None, credentials: dict[str, str]) -> Any:
    """A client with other credentials (a member account's role session): not shared, not cached here."""
    return _session().client(service, region_name=region, config=_config(), **credentials)
