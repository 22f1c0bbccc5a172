"""Account-aware clients: the function's own credentials at home, its member-account role elsewhere.

The central functions judge events from every account of the organization, and must act (stop a
deployment, quarantine a resource, read tags) in the account the event came from, never in their
own. Member accounts hold the roles ``member/member-account.yaml`` creates under the suite's role
path; each acting function has one of them (``ACTING_ROLE_NAME``) and assumes it there:

* same account (or no account known): the function's own clients, unchanged - no STS call;
* another account: ``sts:AssumeRole`` on ``arn:<partition>:iam::<account>:role<path><name>``,
  session name ``<function>@<event or deployment that opened the session>``, the credentials cached
  per account while warm and renewed ``REFRESH_MARGIN`` seconds before they expire; clients built
  lazily per (account, service, region) from them, the ``MAX_CLIENTS`` used last kept (a client
  holds about 200 KB: a sweep over 500 accounts in three regions must not keep one per pair);
* a role that cannot be assumed (denied, missing, cross-account not configured) raises
  :class:`CrossAccountAccessError`, remembered for ``FAILURE_BACKOFF`` seconds so a sweep over many
  resources of that account makes one failed call, not one per resource.

Which account an adapter acts in comes from the ``acting_in`` scope the service opens for the
event (a context variable: per thread, nothing shared between concurrent invocations) or from an
explicit ``account=`` (quarantine handlers: the resource's own account).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from changeguard.adapters import clients
from changeguard.domain.errors import ConfigurationError, CrossAccountAccessError, InvalidEventError
from changeguard.domain.partition import is_region, parse_role_prefix

#: Renew the member credentials this many seconds before they expire (a call never starts on
#: credentials about to lapse mid-retry).
REFRESH_MARGIN = 300.0
#: After a failed AssumeRole, the same account fails at once for this long (no retry storm).
FAILURE_BACKOFF = 60.0
#: AssumeRole's DurationSeconds: the member roles' MaxSessionDuration.
SESSION_SECONDS = 3600
#: Member-account clients kept while warm, the least recently used dropped first. A botocore client
#: holds about 200 KB of its own; the sweeps visit every (account, region) pair of the organization,
#: 1,500 of them at 500 accounts in three regions, and would otherwise keep two or three clients per
#: pair (300 MB and more). A dropped client costs a few milliseconds to make again.
MAX_CLIENTS = 64


def _home_region() -> str | None:
    """The function's own region (Lambda sets ``AWS_REGION``)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


_ACCOUNT_ID = re.compile(r"^\d{12}$")
_NOT_IN_SESSION_NAME = re.compile(r"[^\w+=,.@-]")


@dataclass(frozen=True)
class ActingRole:
    """The role a function assumes in member accounts (``None`` name: a single-account deployment)."""

    own_account: str
    partition: str
    path: str
    name: str | None = None
    external_id: str | None = None

    @classmethod
    def from_wiring(cls, suite_role_prefix: str, name: str | None, external_id: str | None = None) -> ActingRole:
        """From ``SUITE_ROLE_PREFIX`` (``arn:<partition>:iam::<own account>:role<path>``) and the role name."""
        found = parse_role_prefix(suite_role_prefix or "")
        if found is None:
            raise ConfigurationError(
                "SUITE_ROLE_PREFIX must be arn:<partition>:iam::<account>:role/<path>/ to act in other accounts"
            )
        partition, own_account, path = found
        return cls(
            own_account=own_account,
            partition=partition,
            path=path,
            name=name or None,
            external_id=external_id or None,
        )

    def arn_in(self, account: str) -> str | None:
        return f"arn:{self.partition}:iam::{account}:role{self.path}{self.name}" if self.name else None


@dataclass(frozen=True)
class _Scope:
    account: str | None
    region: str | None
    reason: str


@dataclass(frozen=True)
class _Session:
    credentials: dict[str, str]
    renew_at: float
    session_name: str
    assumed_role_arn: str


_SCOPE: ContextVar[_Scope | None] = ContextVar("changeguard_acting_scope", default=None)


def session_name(function: str, reason: str) -> str:
    """``<function>@<reason>`` in AssumeRole's alphabet (``[\\w+=,.@-]``), at most 64 characters."""
    text = _NOT_IN_SESSION_NAME.sub("-", f"{function}@{reason}" if reason else function)
    return text[:64] if len(text) >= 2 else f"{text}--"[:2]


class AccountClients:
    """Clients for the account an event came from (see the module docstring)."""

    def __init__(
        self,
        *,
        function: str,
        role: ActingRole | None,
        sts: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.function = function
        self.role = role
        self._sts = sts
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._failures: dict[str, tuple[float, CrossAccountAccessError]] = {}
        self._assuming: dict[str, threading.Lock] = {}
        self._clients: OrderedDict[tuple[str, str, str | None], tuple[_Session, Any]] = OrderedDict()

    # -- the scope ----------------------------------------------------------------------------
    @contextmanager
    def acting_in(self, account: str | None, region: str | None, reason: str) -> Iterator[None]:
        """Calls made inside go to ``account`` (in ``region`` there); ``reason`` names the session."""
        token = _SCOPE.set(_Scope(account or None, region or None, reason))
        try:
            yield
        finally:
            _SCOPE.reset(token)

    def current_account(self) -> str | None:
        """The account the calls go to now (the function's own when no other is in scope)."""
        scope = _SCOPE.get()
        account = scope.account if scope else None
        return account or (self.role.own_account if self.role else None)

    def is_own(self, account: str | None) -> bool:
        return not account or self.role is None or account == self.role.own_account

    def acted_as(self, account: str | None) -> dict[str, str]:
        """Who acted in ``account``, for the ledger: the function's own role, or the member role session."""
        if not account or self.is_own(account):
            return {"account": account or (self.role.own_account if self.role else ""), "identity": "function role"}
        role_arn = self.role.arn_in(account) if self.role else None
        found = self._sessions.get(account)
        out = {"account": account, "role": role_arn or "none configured"}
        if found is not None:
            out["session"] = found.assumed_role_arn
        return out

    def refused(self, account: str | None) -> CrossAccountAccessError | None:
        """``account``'s refused role, while the refusal is remembered (``FAILURE_BACKOFF``)."""
        if not account or self.is_own(account):
            return None
        found = self._failures.get(account)
        return found[1] if found is not None and self._clock() < found[0] else None

    # -- clients ------------------------------------------------------------------------------
    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        """The client for ``service`` in ``account`` (else the scope's), ``region`` (else the scope's)."""
        scope = _SCOPE.get()
        target = account or (scope.account if scope else None)
        if not target or self.is_own(target):
            # The function's own account: its shared client, in the region the event came from when
            # that is another region of the account (its events are forwarded to this one): a
            # resource or deployment there is not found, nor acted on, through this region's client.
            # An explicit ``region`` (a quarantined resource's) is used as given, as before.
            if region is not None:
                return clients.client(service, region)
            where = scope.region if scope else None
            if where is None or not is_region(where) or where == _home_region():
                return clients.client(service)
            return clients.client(service, where)
        if not _ACCOUNT_ID.match(target):
            # Only events name accounts: one that is no account id is a malformed event, and is
            # never turned into a role ARN.
            raise InvalidEventError("the event names an account that is not a 12-digit AWS account id")
        where = region or (scope.region if scope else None)
        if where is not None and not is_region(where):
            raise InvalidEventError("the event names a region that is not an AWS region name")
        session = self._session(target, scope.reason if scope else "")
        key = (target, service, where)
        with self._lock:
            cached = self._clients.get(key)
            if cached is not None and cached[0] is session:
                self._clients.move_to_end(key)
                return cached[1]
            made = clients.new_client(service, where, session.credentials)
            self._clients[key] = (session, made)
            self._clients.move_to_end(key)
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
            return made

    def _kept(self, account: str) -> _Session | None:
        """The account's live session, or its remembered refusal raised; ``None``: assume the role.

        Called with ``_lock`` held."""
        now = self._clock()
        found = self._sessions.get(account)
        if found is not None and now < found.renew_at:
            return found
        failed = self._failures.get(account)
        if failed is not None and now < failed[0]:
            raise failed[1]
        return None

    def _session(self, account: str, reason: str) -> _Session:
        role_arn = self.role.arn_in(account) if self.role else None
        with self._lock:
            found = self._kept(account)
            if found is not None:
                return found
            if role_arn is None:
                error = CrossAccountAccessError(account, None, "NotConfigured", "cross-account acting is off")
                self._failures[account] = (self._clock() + FAILURE_BACKOFF, error)
                raise error
            gate = self._assuming.setdefault(account, threading.Lock())
        # One AssumeRole per account at a time, and none holding the lock every account shares: a
        # sweep's threads assume the roles of different accounts side by side, and a thread that
        # waited on another's call for the same account takes its session instead of a second one.
        with gate:
            with self._lock:
                found = self._kept(account)
            if found is not None:
                return found
            now = self._clock()
            try:
                session = self._assume(account, role_arn, session_name(self.function, reason), now)
            except CrossAccountAccessError as error:
                with self._lock:
                    self._failures[account] = (now + FAILURE_BACKOFF, error)
                raise
            with self._lock:
                self._sessions[account] = session
                self._failures.pop(account, None)
            return session

    def _assume(self, account: str, role_arn: str, name: str, now: float) -> _Session:
        from botocore.exceptions import BotoCoreError, ClientError

        sts = self._sts or clients.client("sts")
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": name, "DurationSeconds": SESSION_SECONDS}
        if self.role is not None and self.role.external_id:
            params["ExternalId"] = self.role.external_id
        try:
            resp = sts.assume_role(**params)
        except ClientError as exc:
            code = str((exc.response.get("Error") or {}).get("Code") or "ClientError")
            raise CrossAccountAccessError(account, role_arn, code) from exc
        except BotoCoreError as exc:  # endpoint unreachable after the retries
            raise CrossAccountAccessError(account, role_arn, type(exc).__name__) from exc
        creds = resp["Credentials"]
        expires = creds["Expiration"]
        expires_at = expires.timestamp() if hasattr(expires, "timestamp") else now + SESSION_SECONDS
        return _Session(
            credentials={
                "aws_access_key_id": creds["AccessKeyId"],
                "aws_secret_access_key": creds["SecretAccessKey"],
                "aws_session_token": creds["SessionToken"],
            },
            # Never later than the lifetime asked for: a clock skew cannot keep lapsed credentials.
            renew_at=min(expires_at, now + SESSION_SECONDS) - REFRESH_MARGIN,
            session_name=name,
            assumed_role_arn=str((resp.get("AssumedRoleUser") or {}).get("Arn") or ""),
        )

    def reset(self) -> None:
        """Forget every session and client (tests)."""
        with self._lock:
            self._sessions.clear()
            self._failures.clear()
            self._assuming.clear()
            self._clients.clear()
