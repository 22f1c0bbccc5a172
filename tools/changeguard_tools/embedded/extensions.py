"""Add the AWS operations moto lacks, and patch the behaviour it gets wrong.

How moto dispatches
-------------------
Every moto service has a responses class (``moto.ssm.responses.SimpleSystemManagerResponse``,
``moto.cloudtrail.responses.CloudTrailResponse``, ...). For each request, moto works out the
operation name (``X-Amz-Target`` for JSON protocols, ``Action`` for query protocols, the botocore
``requestUri`` templates for REST protocols), turns it into snake_case and calls the method of that
name on a fresh instance of the responses class. That is true both under ``mock_aws`` and in server
mode, so a method added to the class is a new operation in both. moto lists the class's methods with
``inspect.isfunction``, so the method must be a plain function, which :func:`add_operation` ensures.

Recipe: adding an operation
---------------------------
1. Check AWS's API reference for the operation: parameters, defaults, limits, errors, response.
2. Create a module in this package (``changeguard_tools/embedded/<service>_<topic>.py``). Every
   module of the package is imported by :func:`install`, so there is nothing to register by hand.
3. Write the handler as a method of the responses class and decorate it::

       from moto.ssm.responses import SimpleSystemManagerResponse

       from changeguard_tools.embedded.extensions import backend_state, operation

       @operation(SimpleSystemManagerResponse, "GetCalendarState")
       def get_calendar_state(self: Any) -> str:
           params = json.loads(self.body or "{}")
           calendars = backend_state(self.ssm_backend, "calendars", dict)
           ...
           return json.dumps({"State": "OPEN", "AtTime": ...})

   ``self`` is moto's responses instance: ``self.body``, ``self._get_param(name)``,
   ``self.current_account``, ``self.region`` and the service's backend property are available.
   Return the response body as a string (status 200), or a ``(status, headers, body)`` tuple.
   Raise moto's ``JsonRESTError(code, message)`` (JSON protocols) or ``RESTError`` (query/XML)
   for AWS errors; they are serialised like moto's own.
4. Keep state on the service's backend object with :func:`backend_state`. Backends are per account
   and region, as AWS's state is, and moto's reset discards them, so the state goes with them. For
   state that cannot live on a backend, register a cleaner with :func:`on_reset`.
5. Test it through the embedded AWS with a boto3 client (``tests/embedded/``). The CloudTrail
   recorder names and records the new operation like any other; nothing to add there.

For a REST-protocol service the request path must also be routed to the service by moto's
``urls.py``; most services route every path under their prefix, but check.

An operation moto already implements raises :class:`OperationConflictError` unless added with
``replace=True`` (for instance to add what moto's version lacks); :func:`original_operation` returns
moto's method so the replacement can delegate to it. The conflict check is what tells us that a moto
upgrade started implementing something we had added: drop the extension then.

Patching existing behaviour
---------------------------
:func:`wrap_method` replaces any method (of a backend or a responses class) by a wrapper built from
the original, reversibly (:func:`unwrap_method`). Patches that must be applied when the embedded AWS
starts are registered with :func:`installer`.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from moto.core.utils import camelcase_to_underscores

__all__ = [
    "ExtensionError",
    "OperationConflictError",
    "add_operation",
    "backend_state",
    "install",
    "installed",
    "installer",
    "is_wrapped",
    "on_reset",
    "operation",
    "original_operation",
    "remove_operation",
    "reset_state",
    "unwrap_method",
    "wrap_method",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Attribute set on every function this module puts on a class, naming what it replaced.
_MARK = "__changeguard_extension__"
_STATE_PREFIX = "_changeguard_"

_lock = threading.RLock()
#: Registered actions, keyed by who registered them, so that a module executed twice (a re-import
#: after a failed import) replaces its registrations instead of conflicting with itself.
_pending: dict[str, Callable[[], None]] = {}
_reset_hooks: list[Callable[[], None]] = []
_installed = False


class ExtensionError(Exception):
    """An extension cannot be applied as asked."""


class OperationConflictError(ExtensionError):
    """The responses class already has a method of that name (moto's, or another extension's)."""


@dataclass(frozen=True)
class _Mark:
    """What a function we put on a class stands for, and what it replaced."""

    owner: type
    name: str
    source: Callable[..., Any]
    original: Callable[..., Any] | None


def operation_method_name(operation_name: str) -> str:
    """The method name moto looks up for an operation (``GetCalendarState`` -> ``get_calendar_state``)."""
    return str(camelcase_to_underscores(operation_name))


def add_operation(responses_cls: type, operation_name: str, func: Callable[..., Any], *, replace: bool = False) -> None:
    """Give ``responses_cls`` the method moto will dispatch ``operation_name`` to.

    ``func`` is called as a method of the responses instance. Adding the same function twice is a
    no-op, so installing is idempotent.
    """
    name = operation_method_name(operation_name)
    with _lock:
        current = getattr(responses_cls, name, None)
        mark = _mark_of(current)
        if mark is not None and mark.owner is responses_cls and _same_function(mark.source, func):
            if mark.source is not func:  # the same extension, its module executed again
                setattr(responses_cls, name, _operation_method(responses_cls, name, func, mark.original))
            return
        if current is not None and not replace:
            owner = "another extension" if mark is not None else "moto"
            raise OperationConflictError(
                f"{responses_cls.__qualname__}.{name} already exists ({owner} implements "
                f"{operation_name}); pass replace=True to replace it on purpose"
            )
        original = mark.original if mark is not None else current
        setattr(responses_cls, name, _operation_method(responses_cls, name, func, original))


def _operation_method(
    responses_cls: type, name: str, func: Callable[..., Any], original: Callable[..., Any] | None
) -> Callable[..., Any]:
    @functools.wraps(func)
    def method(self: Any) -> Any:
        return func(self)

    setattr(method, _MARK, _Mark(responses_cls, name, func, original))
    method.__name__ = name
    method.__qualname__ = f"{responses_cls.__qualname__}.{name}"
    return method


def operation(responses_cls: type, operation_name: str, *, replace: bool = False) -> Callable[[F], F]:
    """Decorator form of :func:`add_operation`, applied when :func:`install` runs."""

    def decorate(func: F) -> F:
        key = f"{_function_key(func)} -> {responses_cls.__qualname__}.{operation_name}"
        _register(key, functools.partial(add_operation, responses_cls, operation_name, func, replace=replace))
        return func

    return decorate


def remove_operation(responses_cls: type, operation_name: str) -> None:
    """Undo :func:`add_operation` (restoring moto's method if it was replaced); for tests."""
    name = operation_method_name(operation_name)
    with _lock:
        mark = _mark_of(responses_cls.__dict__.get(name))
        if mark is None:
            return
        if mark.original is None or getattr(super(responses_cls, responses_cls), name, None) is mark.original:
            delattr(responses_cls, name)
        else:
            setattr(responses_cls, name, mark.original)


def original_operation(responses_cls: type, operation_name: str) -> Callable[..., Any] | None:
    """Moto's own method for an operation we replaced, or ``None`` when moto had none."""
    mark = _mark_of(getattr(responses_cls, operation_method_name(operation_name), None))
    return mark.original if mark is not None else None


def wrap_method(owner: type, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Replace ``owner.name`` by ``make_wrapper(original)``; a no-op when it is already wrapped."""
    with _lock:
        current = owner.__dict__.get(name)
        if current is None:
            raise ExtensionError(f"{owner.__qualname__} defines no method {name!r} to wrap")
        if _mark_of(current) is not None:
            return
        wrapper = make_wrapper(current)
        setattr(wrapper, _MARK, _Mark(owner, name, make_wrapper, current))
        setattr(owner, name, wrapper)


def unwrap_method(owner: type, name: str) -> None:
    """Undo :func:`wrap_method`; a no-op when the method is not wrapped."""
    with _lock:
        mark = _mark_of(owner.__dict__.get(name))
        if mark is not None and mark.original is not None:
            setattr(owner, name, mark.original)


def is_wrapped(owner: type, name: str) -> bool:
    """Whether ``owner.name`` is currently one of our wrappers."""
    return _mark_of(owner.__dict__.get(name)) is not None


def backend_state(backend: Any, key: str, factory: Callable[[], T]) -> T:
    """State an extension keeps on a moto backend (one per account and region).

    It lives in the backend's ``__dict__``, which moto's reset empties, so a reset clears it.
    """
    attr = _STATE_PREFIX + key
    with _lock:
        state: dict[str, Any] = backend.__dict__
        if attr not in state:
            state[attr] = factory()
        value: T = state[attr]
        return value


def on_reset(hook: Callable[[], None]) -> Callable[[], None]:
    """Register a cleaner for extension state that does not live on a backend."""
    with _lock:
        if hook not in _reset_hooks:
            _reset_hooks.append(hook)
    return hook


def reset_state() -> None:
    """Run every :func:`on_reset` hook (the embedded AWS calls this on reset)."""
    with _lock:
        hooks = list(_reset_hooks)
    for hook in hooks:
        hook()


def installer(action: Callable[[], None]) -> Callable[[], None]:
    """Register an idempotent patch to apply on :func:`install` (at once if already installed)."""
    _register(_function_key(action), action)
    return action


def _register(key: str, action: Callable[[], None]) -> None:
    with _lock:
        _pending[key] = action
        if _installed:
            action()


def install() -> None:
    """Import every module of this package and apply what they registered, exactly once.

    Safe to call from several threads and any number of times.
    """
    global _installed
    with _lock:
        if _installed:
            return
        package = __name__.rpartition(".")[0]
        package_path = importlib.import_module(package).__path__
        for module in sorted(info.name for info in pkgutil.iter_modules(package_path)):
            importlib.import_module(f"{package}.{module}")
        for action in list(_pending.values()):
            action()
        _installed = True


def installed() -> bool:
    """Whether :func:`install` has run."""
    return _installed


def _function_key(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def _same_function(first: Callable[..., Any], second: Callable[..., Any]) -> bool:
    return first is second or _function_key(first) == _function_key(second)


def _mark_of(func: object) -> _Mark | None:
    mark = getattr(func, _MARK, None)
    return mark if isinstance(mark, _Mark) else None
