"""Python's cyclic garbage collector during a sandbox's initialisation (issue 9).

A cold start builds a few hundred thousand objects that live as long as the sandbox: boto3's
service models and clients, pydantic's validators, Powertools, our own modules. With the
collector on, every young-generation collection during the cold start walks all of them again,
for nothing: none is garbage. That is about a tenth of a cold start's CPU (``make bench``).

So every handler module calls :func:`hold` before its other imports, and its handler is
wrapped in :func:`released`. Releasing freezes what initialising built into the permanent
generation (``gc.freeze``) and turns the collector back on. Without the freeze, the first
collection after it would walk every one of those objects anyway, only later: the saving would
be moved to the second invocation, not made.

* An event-driven function releases when its first invocation ends: its first event still builds
  clients and validators that it keeps.
* A function a schedule invokes releases when its first invocation starts, whatever invoked it:
  its first invocation can be a job (the deployment guard's health sweep reads every account-region,
  dropping member clients as it goes), which makes far more garbage than a cold start, and that
  must be collected as it goes.

The freeze does not collect first: a full collection at the end of the first invocation would
spend most of what the hold saved. What initialisation left as cyclic garbage (a few hundred
objects, about 100 KB) is frozen with the rest and kept for the sandbox's life, and so is anything
frozen that becomes garbage later (a member-account client made by the first invocation and later
dropped from the 64-client cache): bounded, once per sandbox.

Only a process's first initialisation holds. A process that loads handler modules again (the
test harness, ``changeguard replay``) keeps its collector on after the first release, and
nothing frozen is ever unfrozen.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import Any, Literal, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class _State:
    held = False  # the collector is off because of hold()
    done = False  # this process has held once: later initialisations leave the collector alone


def hold() -> None:
    """Turn the collector off for this process's first initialisation (a no-op after that)."""
    if _State.done or not gc.isenabled():
        return
    _State.done = True
    _State.held = True
    gc.disable()


def release() -> None:
    """Freeze what initialising built and turn the collector back on, once."""
    if not _State.held:
        return
    _State.held = False
    gc.freeze()
    gc.enable()


def released(after: Literal["init", "first invocation"]) -> Callable[[F], F]:
    """Release the hold at the first invocation's start (``"init"``) or end, whatever it returns or raises."""

    def wrap(handler: F) -> F:
        @functools.wraps(handler)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if after == "init":
                release()
                return handler(*args, **kwargs)
            try:
                return handler(*args, **kwargs)
            finally:
                release()

        return inner  # type: ignore[return-value]

    return wrap
