"""HTTP for the ticket systems (Jira, ServiceNow): standard library only, bounded, fail-closed.

* Every socket operation (connect, each read) waits at most ``timeout`` seconds and a whole
  exchange at most ``deadline`` seconds, so a hung ticket system costs a bounded part of the
  Lambda's time; the change is then recorded UNVERIFIED and re-checked later.
* Redirects are not followed: urllib would resend the ``Authorization`` header to wherever
  the redirect points.
* Credentials come from Secrets Manager through Powertools Parameters (cached); a 401/403
  refetches the secret once, so a rotated secret is picked up without a cold start.
* Anything but 200 (JSON) and 404 raises ``TicketSourceUnavailableError``: a ticket that cannot
  be read is never treated as approved, nor as missing.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from changeguard.adapters.cache import CachedTicketSource
from changeguard.domain.errors import ConfigurationError, TicketSourceUnavailableError

if TYPE_CHECKING:
    from changeguard.settings import Wiring


DEFAULT_TIMEOUT = 2.0  # seconds per socket operation
DEFAULT_DEADLINE = 5.0  # seconds per request, connect and read together
MAX_BODY = 4 * 1024 * 1024
SECRET_MAX_AGE = 300
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# What the Lambda may log about a secret: never its value.
_AUTH_KINDS = ("username/password", "email/api_token", "token")

# Ticket ids end up in URLs and ServiceNow encoded queries (where ``^`` adds conditions, so an id
# like ``CHG1^ORnumberISNOTEMPTY`` would match someone else's approved ticket): letters, digits,
# ``-``, ``_`` and ``.`` only.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class HttpSourceOptions(BaseModel):
    """What every HTTP ticket source's ``TICKET_SOURCE_OPTIONS`` has; vendors add their fields."""

    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)

    timeout_seconds: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=DEFAULT_DEADLINE)


OptionsT = TypeVar("OptionsT", bound=HttpSourceOptions)


def is_safe_id(value: str) -> bool:
    return _SAFE_ID.fullmatch(value) is not None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


def authorization_header(secret: Mapping[str, Any]) -> str:
    """``Authorization`` from a secret: ``{"username","password"}`` or ``{"email","api_token"}``
    (Basic; Jira Cloud takes e-mail and API token), or ``{"token"}`` (Bearer: Jira Data
    Center personal access tokens, ServiceNow OAuth access tokens)."""
    token = secret.get("token")
    if isinstance(token, str) and token:
        return f"Bearer {token}"
    for user_key, pass_key in (("username", "password"), ("email", "api_token")):
        user, password = secret.get(user_key), secret.get(pass_key)
        if isinstance(user, str) and isinstance(password, str) and user and password:
            raw = f"{user}:{password}".encode()
            return "Basic " + base64.b64encode(raw).decode("ascii")
    raise ConfigurationError(f"the ticket secret holds none of {', '.join(_AUTH_KINDS)}")


class SecretCredentials:
    """The ``Authorization`` header from a Secrets Manager secret (JSON), cached for five minutes."""

    def __init__(self, secret_arn: str, provider: Any | None = None, max_age: int = SECRET_MAX_AGE) -> None:
        self.secret_arn = secret_arn
        self.max_age = max_age
        self._provider = provider

    @property
    def provider(self) -> Any:
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            from changeguard.adapters.clients import client

            self._provider = SecretsProvider(boto3_client=client("secretsmanager"))
        return self._provider

    def __call__(self, refresh: bool = False) -> str:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            value = self.provider.get(self.secret_arn, max_age=self.max_age, transform="json", force_fetch=refresh)
        except (GetParameterError, TransformParameterError, ClientError, BotoCoreError) as exc:
            # Unreadable credentials make the ticket system unreachable for us: UNVERIFIED, not a crash.
            raise TicketSourceUnavailableError(f"ticket credentials unavailable ({type(exc).__name__})") from exc
        if not isinstance(value, Mapping):
            raise TicketSourceUnavailableError("ticket credentials secret is not a JSON object")
        try:
            return authorization_header(value)
        except ConfigurationError as exc:
            raise TicketSourceUnavailableError(str(exc)) from exc


Auth = Callable[[bool], str | None]


def no_auth(refresh: bool = False) -> None:
    return None


def check_base_url(url: str | None, source: str) -> str:
    """An https base URL (plain http only on the loopback interface, for local servers)."""
    if not url:
        raise ConfigurationError(f"TICKET_BASE_URL is required for the {source} ticket source")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS):
        if not parts.hostname:
            raise ConfigurationError(f"TICKET_BASE_URL {url!r} has no host")
        return url.rstrip("/")
    raise ConfigurationError(
        f"TICKET_BASE_URL must be https (got {parts.scheme!r}): credentials travel with every call"
    )


class JsonHttpClient:
    """GET JSON from one ticket system; ``None`` for 404, ``TicketSourceUnavailableError`` otherwise."""

    def __init__(
        self,
        base_url: str,
        *,
        source: str,
        auth: Auth = no_auth,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.source = source
        self.auth = auth
        self.timeout = timeout
        self.deadline = deadline
        self._opener = urllib.request.build_opener(_NoRedirect())

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        query = ("?" + urllib.parse.urlencode(params)) if params else ""
        return f"{self.base_url}{path}{query}"

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any | None:
        status, body = self._exchange(self.url(path, params), refresh=False)
        if status in (401, 403):
            status, body = self._exchange(self.url(path, params), refresh=True)
        if status == 404:
            return None
        if status != 200:
            raise TicketSourceUnavailableError(f"{self.source} answered HTTP {status} for {path}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise TicketSourceUnavailableError(f"{self.source} answered with invalid JSON for {path}") from exc

    def _exchange(self, url: str, *, refresh: bool) -> tuple[int, bytes]:
        headers = {"Accept": "application/json", "User-Agent": "ChangeGuard"}
        authorization = self.auth(refresh)
        if authorization:
            headers["Authorization"] = authorization
        request = urllib.request.Request(url, headers=headers, method="GET")  # noqa: S310 - scheme checked
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                return int(resp.status), self._read(resp, started)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code), b""
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TicketSourceUnavailableError(f"{self.source} unreachable: {type(reason).__name__}") from exc

    def _read(self, resp: Any, started: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() - started > self.deadline:
                raise TicketSourceUnavailableError(f"{self.source} too slow: no answer within {self.deadline:g} s")
            chunk = resp.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_BODY:
                raise TicketSourceUnavailableError(f"{self.source} answer exceeds {MAX_BODY} bytes")
            chunks.append(chunk)


class HttpTicketSource(CachedTicketSource, Generic[OptionsT]):
    """A ticket system behind HTTPS (Jira, ServiceNow): options from ``TICKET_SOURCE_OPTIONS``,
    credentials from Secrets Manager, lookups cached, ids with anything but ticket-id characters
    never sent (they would end up in URLs and queries)."""

    label: ClassVar[str]
    options_model: type[OptionsT]

    def __init__(
        self,
        base_url: str,
        *,
        options: OptionsT | None = None,
        auth: Auth = no_auth,
        cache_seconds: float = 60.0,
    ) -> None:
        super().__init__(cache_seconds)
        self.options: OptionsT = options or self.options_model()
        self.http = JsonHttpClient(
            check_base_url(base_url, self.name), source=self.name, auth=auth, timeout=self.options.timeout_seconds
        )

    @classmethod
    def from_wiring(cls, wiring: Wiring) -> Self:
        try:
            options = cls.options_model.model_validate_json(wiring.ticket_source_options or "{}")
        except ValidationError as exc:
            raise ConfigurationError(f"TICKET_SOURCE_OPTIONS is not valid for {cls.label}: {exc}") from exc
        auth: Auth = SecretCredentials(wiring.ticket_secret_arn) if wiring.ticket_secret_arn else no_auth
        return cls(check_base_url(wiring.ticket_base_url, cls.name), options=options, auth=auth)

    def _accepts(self, ticket_id: str) -> bool:
        return is_safe_id(ticket_id)
