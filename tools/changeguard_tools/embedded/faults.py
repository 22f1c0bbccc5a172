"""Faults at the HTTP layer of the embedded AWS: throttling, 5xx, and responses lost after a commit.

:class:`FaultInjector` is WSGI middleware in front of the whole embedded AWS (outside the CloudTrail
recorder). It answers chosen calls with the error the real service sends, shaped for the call's
protocol, so that botocore parses it as it parses AWS's and its retry handler really runs: the
``standard`` mode's throttling and transient checks, its backoff and its retry quota. A botocore
``Stubber`` sits above all that and proves nothing about retries; this does.

Two kinds of fault:

* **before the service** (``every_nth``, ``fail``): the call never reaches moto, so nothing changes
  and nothing is recorded in the trail, as with a request AWS throttles at its front door;
* **after the service** (``commit_then_drop``): moto carries the call out (the write commits and the
  trail records it), then the connection is dropped before the response goes back. The caller cannot
  tell whether the write happened, and its retry meets the write it already made: for a conditional
  write, ``ConditionalCheckFailedException`` or ``TransactionCanceledException``.

Usage (``EmbeddedAWS.faults`` is an injector already in place; ``reset()`` clears it)::

    aws.faults.every_nth(3, kinds=["throttle", "500"])            # every third call fails
    aws.faults.commit_then_drop(operation="TransactWriteItems")   # the next one commits, then drops
    aws.faults.fail(body_contains="changeguard-dev-tickets")      # a dependency down for good
    with fast_retries():                                           # botocore's backoff, 1000x shorter
        ...

Every injected fault is kept in :attr:`FaultInjector.injected`, for tests to assert on.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from changeguard_tools.embedded import wire
from changeguard_tools.embedded.cloudtrail import _read_body

__all__ = [
    "KINDS",
    "FaultInjector",
    "FaultRule",
    "Injected",
    "RequestView",
    "error_response",
    "fast_retries",
]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: The faults a rule can inject before the service: throttling, an internal error, unavailability,
#: and ``denied``: IAM refusing the call (403 ``AccessDenied``, which botocore does not retry), as AWS
#: answers an ``sts:AssumeRole`` the role's trust policy does not admit or of a role that does not exist;
#: ``conflict``: S3's 409 ``ConditionalRequestConflict`` (a conflicting conditional write in progress),
#: which S3 documents as retryable and botocore does not retry.
KINDS = ("throttle", "500", "503", "denied", "conflict")
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/")


@dataclass(frozen=True)
class RequestView:
    """What a rule's selector sees of a call: the service, the operation, the signer, the raw body."""

    signing_name: str
    service_name: str | None
    operation: str
    protocol: str
    access_key_id: str
    body: bytes
    #: The region the request was signed for (SigV4's credential scope), "" when unsigned.
    region: str = ""


@dataclass(frozen=True)
class Injected:
    """One fault the injector caused."""

    operation: str
    service: str
    kind: str
    rule: str


@dataclass
class FaultRule:
    """Which calls a fault applies to, and how often.

    A call matches when its service (signing name or botocore name) is in ``services``, its operation
    in ``operations``, its body contains ``body_contains``, and ``where`` accepts it (each ``None``:
    any). Of the matching calls, every ``every``-th gets a fault, the kinds taken in turn from
    ``kinds``; ``times`` bounds how many faults the rule injects in all (``None``: no bound).
    """

    name: str
    kinds: tuple[str, ...]
    every: int = 1
    after_service: bool = False
    times: int | None = None
    services: frozenset[str] | None = None
    operations: frozenset[str] | None = None
    body_contains: bytes | None = None
    where: Callable[[RequestView], bool] | None = None
    seen: int = 0
    injected: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def matches(self, call: RequestView) -> bool:
        if self.services is not None and not ({call.signing_name, call.service_name or ""} & self.services):
            return False
        if self.operations is not None and call.operation not in self.operations:
            return False
        if self.body_contains is not None and self.body_contains not in call.body:
            return False
        return self.where is None or bool(self.where(call))

    def take(self, call: RequestView) -> str | None:
        """The kind of fault this call gets from this rule, or ``None``; counts the call."""
        if not self.matches(call):
            return None
        with self._lock:
            if self.times is not None and self.injected >= self.times:
                return None
            self.seen += 1
            if self.seen % self.every:
                return None
            kind = self.kinds[self.injected % len(self.kinds)]
            self.injected += 1
            return kind

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.injected >= self.times


class FaultInjector:
    """WSGI middleware that injects faults into the calls of the app it wraps (see the module doc)."""

    def __init__(self, app: WSGIApp | None = None) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self.injected: list[Injected] = []

    # -- configuration ------------------------------------------------------------------------------
    def every_nth(
        self,
        n: int,
        kinds: Sequence[str] = ("throttle", "500"),
        *,
        services: Iterable[str] | None = None,
        operations: Iterable[str] | None = None,
        body_contains: str | None = None,
        where: Callable[[RequestView], bool] | None = None,
        times: int | None = None,
    ) -> FaultRule:
        """Every ``n``-th matching call fails before reaching the service, the kinds in turn."""
        if n < 1:
            raise ValueError("n must be at least 1")
        return self._add(
            FaultRule(
                name=f"every {n}",
                kinds=_kinds(kinds),
                every=n,
                times=times,
                services=_set(services),
                operations=_set(operations),
                body_contains=body_contains.encode() if body_contains else None,
                where=where,
            )
        )

    def fail(
        self,
        kind: str = "503",
        *,
        services: Iterable[str] | None = None,
        operations: Iterable[str] | None = None,
        body_contains: str | None = None,
        where: Callable[[RequestView], bool] | None = None,
        times: int | None = None,
    ) -> FaultRule:
        """Every matching call fails (``times`` of them, or all): a dependency that is down."""
        return self._add(
            FaultRule(
                name=f"fail {kind}",
                kinds=_kinds([kind]),
                times=times,
                services=_set(services),
                operations=_set(operations),
                body_contains=body_contains.encode() if body_contains else None,
                where=where,
            )
        )

    def commit_then_drop(
        self,
        operation: str,
        times: int = 1,
        *,
        services: Iterable[str] | None = None,
        body_contains: str | None = None,
        where: Callable[[RequestView], bool] | None = None,
    ) -> FaultRule:
        """The next ``times`` calls of ``operation`` are carried out, then their connection dropped.

        Only calls the service answered with success are dropped: a call that failed (its condition
        not met, say) changed nothing and gets its answer.
        """
        return self._add(
            FaultRule(
                name=f"commit then drop {operation}",
                kinds=("drop",),
                after_service=True,
                times=times,
                services=_set(services),
                operations=frozenset({operation}),
                body_contains=body_contains.encode() if body_contains else None,
                where=where,
            )
        )

    def remove(self, rule: FaultRule) -> None:
        """Stop injecting ``rule``'s faults (a dependency coming back)."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """No more faults, and forget the ones injected."""
        with self._lock:
            self._rules.clear()
            self.injected.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def count(self, kind: str | None = None, operation: str | None = None) -> int:
        """How many faults were injected (of ``kind``, into ``operation``)."""
        with self._lock:
            return sum(
                1
                for fault in self.injected
                if (kind is None or fault.kind == kind) and (operation is None or fault.operation == operation)
            )

    def _add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    # -- WSGI ---------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        app = self.app
        if app is None:
            raise RuntimeError("the fault injector wraps no application")
        rules = self.rules
        if not rules or str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
            return app(environ, start_response)
        body = _read_body(environ)
        call = wire.identify(environ, body)
        if call is None:
            return app(environ, start_response)
        scope = _CREDENTIAL_SCOPE.search(str(environ.get("HTTP_AUTHORIZATION", "")))
        view = RequestView(
            call.signing_name,
            call.service_name,
            call.operation,
            call.protocol,
            call.access_key_id,
            body,
            scope.group(1) if scope else "",
        )
        for rule in rules:
            if rule.after_service:
                continue
            kind = rule.take(view)
            if kind is not None:
                self._note(view, kind, rule)
                status, headers, content = error_response(kind, call.protocol, call.service_name or call.signing_name)
                start_response(status, headers)
                return [content]
        droppers = [rule for rule in rules if rule.after_service and rule.matches(view) and not rule.exhausted]
        if not droppers:
            return app(environ, start_response)
        return self._commit_then_drop(app, environ, start_response, view, droppers)

    def _commit_then_drop(
        self,
        app: WSGIApp,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        view: RequestView,
        droppers: list[FaultRule],
    ) -> Iterable[bytes]:
        captured: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            captured.append((status, headers))
            return lambda _data: None

        response = app(environ, capture)
        try:
            content = b"".join(response)
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()
        status, headers = captured[-1] if captured else ("500 INTERNAL SERVER ERROR", [])
        if int(status.split()[0]) < 400:
            for rule in droppers:
                if rule.take(view) is not None:
                    self._note(view, "drop", rule)
                    _drop(environ)
        start_response(status, headers)
        return [content]

    def _note(self, view: RequestView, kind: str, rule: FaultRule) -> None:
        with self._lock:
            self.injected.append(Injected(view.operation, view.service_name or view.signing_name, kind, rule.name))


def _drop(environ: dict[str, Any]) -> None:
    """Close the connection without answering: the caller sees it drop, as when a response is lost.

    werkzeug treats a ``ConnectionError`` from the application as a dropped connection (no response,
    no error log); shutting the socket down first makes sure the caller sees it at once.
    """
    connection = environ.get("werkzeug.socket")
    if isinstance(connection, socket.socket):
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)
    raise ConnectionResetError("ChangeGuard fault injection: response dropped after the call committed")


def _kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    found = tuple(kinds)
    unknown = [k for k in found if k not in KINDS]
    if not found or unknown:
        raise ValueError(f"fault kinds must be some of {KINDS}, got {list(found)}")
    return found


def _set(values: Iterable[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


# -- what AWS answers ---------------------------------------------------------------------------------

#: (status, error code, message) of each fault kind, per protocol family; botocore's standard retry
#: mode treats every one of them as retryable (throttling codes, or a 5xx status).
_THROTTLE: dict[str, tuple[int, str, str]] = {
    "json": (400, "ThrottlingException", "Rate exceeded"),
    "dynamodb": (
        400,
        "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
    ),
    "query": (400, "Throttling", "Rate exceeded"),
    "ec2": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "rest-json": (429, "TooManyRequestsException", "Rate exceeded"),
    "rest-xml": (503, "SlowDown", "Please reduce your request rate."),
    "smithy-rpc-v2-cbor": (400, "ThrottlingException", "Rate exceeded"),
}
_SERVER: dict[str, dict[str, tuple[str, str]]] = {
    "500": {
        "json": ("InternalFailure", "The request processing has failed because of an unknown error."),
        "dynamodb": ("InternalServerError", "Internal server error"),
        "query": ("InternalFailure", "The request processing has failed because of an unknown error."),
        "ec2": ("InternalError", "An internal error has occurred."),
        "rest-json": ("ServiceException", "The AWS Lambda service encountered an internal error."),
        "rest-xml": ("InternalError", "We encountered an internal error. Please try again."),
        "smithy-rpc-v2-cbor": ("InternalFailure", "The request processing has failed because of an unknown error."),
    },
    "503": {
        "json": ("ServiceUnavailable", "Service is unavailable."),
        "dynamodb": ("ServiceUnavailable", "Service is unavailable."),
        "query": ("ServiceUnavailable", "Service is unavailable."),
        "ec2": ("Unavailable", "The server is overloaded and can't handle the request."),
        "rest-json": ("ServiceUnavailableException", "Service is unavailable."),
        "rest-xml": ("ServiceUnavailable", "Reduce your request rate."),
        "smithy-rpc-v2-cbor": ("ServiceUnavailable", "Service is unavailable."),
    },
}
_REASONS = {
    400: "BAD REQUEST",
    403: "FORBIDDEN",
    409: "CONFLICT",
    429: "TOO MANY REQUESTS",
    500: "INTERNAL SERVER ERROR",
    503: "SERVICE UNAVAILABLE",
}


def error_response(kind: str, protocol: str, service: str) -> tuple[str, list[tuple[str, str]], bytes]:
    """The ``(status line, headers, body)`` AWS sends for a fault of ``kind`` on this protocol."""
    family = "dynamodb" if service in ("dynamodb", "dynamodbstreams") and protocol == "json" else protocol
    if kind == "throttle":
        status, code, message = _THROTTLE.get(family, (503, "ServiceUnavailable", "Service is unavailable."))
    elif kind == "conflict":  # S3: a conflicting conditional write is in progress (409, retry it)
        status, code = 409, "ConditionalRequestConflict" if family == "rest-xml" else "ConflictException"
        message = "A conflicting conditional operation is currently in progress against this resource. Try again."
    elif kind == "denied":
        status, code = 403, "AccessDeniedException" if family in ("json", "rest-json") else "AccessDenied"
        message = "User is not authorized to perform this operation (injected: the policy does not allow it)"
    else:
        status = int(kind)
        code, message = _SERVER[kind].get(family, ("ServiceUnavailable", "Service is unavailable."))
    request_id = str(uuid.uuid4())
    headers = [("x-amzn-RequestId", request_id)]
    if family in ("json", "dynamodb"):
        body = json.dumps({"__type": code, "message": message}).encode()
        headers += [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-ErrorType", code)]
    elif family == "rest-json":
        body = json.dumps({"message": message, "Type": "Service" if status >= 500 else "User"}).encode()
        headers += [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    elif family == "smithy-rpc-v2-cbor":
        body = _cbor_text_map({"__type": code, "message": message})
        headers += [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
    elif family == "ec2":
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
            f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
        headers += [("Content-Type", "text/xml")]
    elif family == "rest-xml":
        body = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers += [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    else:  # query protocols (SNS, STS, IAM, CloudFormation, ...)
        side = "Receiver" if status >= 500 else "Sender"
        body = (
            f"<ErrorResponse><Error><Type>{side}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers += [("Content-Type", "text/xml")]
    headers.append(("Content-Length", str(len(body))))
    return f"{status} {_REASONS.get(status, 'ERROR')}", headers, body


def _cbor_text_map(values: dict[str, str]) -> bytes:
    """A CBOR map of short text strings (RFC 8949), enough for an RPC v2 CBOR error body."""

    def head(major: int, length: int) -> bytes:
        if length < 24:
            return bytes([(major << 5) | length])
        if length < 256:
            return bytes([(major << 5) | 24, length])
        return bytes([(major << 5) | 25]) + length.to_bytes(2, "big")

    out = bytearray(head(5, len(values)))
    for key, value in values.items():
        for text in (key, value):
            data = text.encode()
            out += head(3, len(data)) + data
    return bytes(out)


# -- shorter sleeps, same retry logic ----------------------------------------------------------------


@contextlib.contextmanager
def fast_retries(scale: float = 0.001) -> Iterator[None]:
    """Scale every delay botocore's standard retry mode computes by ``scale`` (the logic is untouched).

    Patches ``botocore.retries.standard.ExponentialBackoff.delay_amount`` for the duration: which calls
    are retried, how many times, the retry quota and the backoff's growth all stay botocore's own.
    """
    from botocore.retries import standard

    original = standard.ExponentialBackoff.delay_amount

    def shorter(self: Any, context: Any) -> float:
        return float(original(self, context)) * scale

    standard.ExponentialBackoff.delay_amount = shorter  # type: ignore[method-assign]
    try:
        yield
    finally:
        standard.ExponentialBackoff.delay_amount = original  # type: ignore[method-assign]
