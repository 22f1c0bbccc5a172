"""What every handler shares: rejecting poison events without wasting Lambda's retries."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from changeguard.domain.errors import InvalidEventError

F = TypeVar("F", bound=Callable[..., Any])

FAILURE_QUEUE_ENV = "FAILURE_QUEUE_URL"
#: EventBridge delivers events of at most 256 KB; anything larger is a replay or a forgery (issue 8).
MAX_EVENT_BYTES = 256 * 1024
#: What fits in one SQS message, with room for the envelope and attributes.
_MAX_DEAD_LETTER_BYTES = 240 * 1024


def _dead_letter(event: Any, error: InvalidEventError, function: str) -> str | None:
    """Send a rejected event to the function's failure queue, as Lambda's on-failure destination would.

    Raising would make Lambda retry a poison event twice before giving up; retries cannot
    fix a malformed event, so it goes straight to the same queue the destination uses.
    """
    queue_url = os.environ.get(FAILURE_QUEUE_ENV)
    if not queue_url:
        return None
    from changeguard.adapters.clients import client

    def body_with(payload: Any) -> str:
        return json.dumps(
            {
                "requestContext": {"condition": "RejectedEvent", "functionName": function},
                "responseContext": {"errorType": type(error).__name__, "errorMessage": str(error)},
                "requestPayload": payload,
            },
            default=str,
        )

    body = body_with(event)
    if len(body.encode()) > _MAX_DEAD_LETTER_BYTES:  # SQS takes 256 KB: keep the start, say so
        text = json.dumps(event, default=str)
        body = body_with({"truncated": True, "bytes": len(text.encode()), "head": text[: 64 * 1024]})
    resp = client("sqs").send_message(
        QueueUrl=queue_url,
        MessageBody=body,
        MessageAttributes={
            "ErrorType": {"DataType": "String", "StringValue": type(error).__name__},
            "Function": {"DataType": "String", "StringValue": function},
        },
    )
    return str(resp.get("MessageId"))


def dead_letter(item: Any, error: InvalidEventError, function: str) -> str | None:
    """Dead-letter one rejected item that is not a whole event (a stream record of a batch), issue 8."""
    return _dead_letter(item, error, function)


def rejects_poison(function: str, max_bytes: int = MAX_EVENT_BYTES) -> Callable[[F], F]:
    """Turn ``InvalidEventError`` into a typed rejection result plus a dead-lettered event.

    An event larger than ``max_bytes`` (EventBridge's limit unless the trigger allows more) is
    rejected before the handler sees it: its fields would not fit a ledger item (issue 8).
    """

    def wrap(handler: F) -> F:
        @functools.wraps(handler)
        def inner(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                size = len(json.dumps(event, default=str).encode())
                if size > max_bytes:
                    raise InvalidEventError(f"event of {size} bytes: larger than its trigger delivers ({max_bytes})")
                return handler(event, context, *args, **kwargs)
            except InvalidEventError as exc:
                from aws_lambda_powertools import Logger

                Logger().warning("rejected event", extra={"error": str(exc), "function": function})
                message_id = _dead_letter(event, exc, function)
                return {
                    "function": function,
                    "rejected": True,
                    "error_type": type(exc).__name__,
                    "error": str(exc),
                    "dead_letter_message_id": message_id,
                }

        return inner  # type: ignore[return-value]

    return wrap


def _tracing_enabled() -> bool:
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "true").strip().lower() in ("1", "true", "yes")
    if disabled:
        return False
    import importlib.util

    return importlib.util.find_spec("aws_xray_sdk") is not None


def traced(handler: F) -> F:
    """Powertools Tracer around ``handler``, loaded only when tracing is enabled.

    The X-Ray SDK behind Tracer costs about 150 ms of import on a cold start, so it is imported
    on the first invocation and only if ``POWERTOOLS_TRACE_DISABLED`` is false (the template's
    ``EnableXRaySdk`` parameter). Lambda's active tracing still records every invocation without it.
    """
    chosen: list[Callable[..., Any]] = []

    @functools.wraps(handler)
    def inner(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        if not chosen:
            if _tracing_enabled():
                from aws_lambda_powertools import Tracer

                chosen.append(Tracer().capture_lambda_handler(handler))
            else:
                chosen.append(handler)
        return chosen[0](event, context, *args, **kwargs)

    return inner  # type: ignore[return-value]


def time_left_of(context: Any) -> Callable[[], float] | None:
    """Seconds until the invocation times out, read from Lambda's context (None without one)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    return lambda: float(remaining()) / 1000
