"""Amazon EventBridge event-pattern matching, offline, as the EventBridge user guide documents it.

Why: replays and contract tests must say which deployed rules an event would trigger, and moto's
matcher gets arrays of objects and several operators wrong. This module follows the documented
content-filtering semantics: "Content filtering in Amazon EventBridge event patterns", "Comparison
operators for use in event patterns", "Arrays in Amazon EventBridge event patterns" and "Matching null
values and empty strings". Where those pages are silent, it follows aws/event-ruler, the open-source
engine behind EventBridge.

The rules, briefly:

* Fields in a pattern are ANDed. A field's value is a non-empty array of conditions, ORed.
* A condition on a field that is absent from the event never matches, except ``{"exists": false}``.
  A field whose value is an object is not a leaf: leaf conditions never match it, and for
  ``exists`` it counts as absent.
* An array in the event matches if any element matches. Through an array of objects, one element
  must satisfy the whole sub-pattern: Event Ruler's "array consistency". The exception is a
  sub-pattern made only of ``{"exists": false}``. It names nothing that exists in any element, so it
  matches only if no element has the field.
* ``$or`` (any level, nested) takes a list of at least two objects. The pattern is expanded into
  its alternatives, as Event Ruler does. A key that a later alternative or a later field repeats
  overrides the earlier one, as the user guide says of repeated keys.

Use :func:`compile_pattern` in hot loops. :func:`matches` is the simple entry point. It caches
compiled patterns, but it serialises a dict pattern on every call to find its cache entry.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Final

__all__ = ["InvalidPatternError", "Matcher", "compile_pattern", "matches", "validate"]

Matcher = Callable[[Mapping[str, Any]], bool]
"""A compiled pattern: call it with a JSON-decoded event to learn whether the pattern matches."""

_Test = Callable[[Any], bool]
"""A test of one leaf value (a string, number, boolean or None) from the event."""

_Path = tuple[str, ...]

_MISSING: Final = object()
"""Stands for a field that is absent from the event (None means JSON null)."""

_OR: Final = "$or"
_OPERATORS: Final = frozenset(
    {"prefix", "suffix", "equals-ignore-case", "wildcard", "anything-but", "numeric", "exists", "cidr"}
)
_MAX_ALTERNATIVES: Final = 10_000
"""Our own bound on how many alternatives ``$or`` may expand to. It guards against runaway patterns."""

_NUMERIC_LOWER: Final = frozenset({">", ">="})
_NUMERIC_UPPER: Final = frozenset({"<", "<="})


class InvalidPatternError(ValueError):
    """The event pattern is not one EventBridge would accept, so nothing can be said about matches."""


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def matches(pattern: Mapping[str, Any] | str, event: Mapping[str, Any]) -> bool:
    """Return whether ``event`` (JSON-decoded) matches the EventBridge ``pattern`` (dict or JSON text).

    Raises InvalidPatternError if the pattern is invalid, even when the event could never match it.
    """
    return compile_pattern(pattern)(event)


def validate(pattern: Mapping[str, Any] | str) -> None:
    """Raise InvalidPatternError, with a message naming the offending field, if the pattern is invalid."""
    compile_pattern(pattern)


def compile_pattern(pattern: Mapping[str, Any] | str) -> Matcher:
    """Compile a pattern once into a fast matcher for the replay loop. Results are cached by JSON text.

    The matcher takes a JSON-decoded event (dicts, lists, str, int, float, bool, None) and returns a bool.
    """
    if isinstance(pattern, str):
        return _compile_text(pattern)
    try:
        text = json.dumps(pattern, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidPatternError(f"pattern is not JSON-serialisable: {exc}") from exc
    return _compile_text(text)


@lru_cache(maxsize=1024)
def _compile_text(text: str) -> Matcher:
    """Parse and compile JSON pattern text. Cached, so each distinct rule is compiled once."""
    try:
        pattern = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidPatternError(f"pattern is not valid JSON: {exc}") from exc
    if not isinstance(pattern, dict):
        raise InvalidPatternError("pattern must be a JSON object")
    nodes = tuple(_build_node(flat) for flat in _expand(pattern, (), in_or=False))
    if len(nodes) == 1:
        return nodes[0].match_mapping

    def match_any(event: Mapping[str, Any]) -> bool:
        return any(node.match_mapping(event) for node in nodes)

    return match_any


# --------------------------------------------------------------------------------------------------
# Compiled form: a tree of nodes (objects) and leaves (condition arrays), free of $or
# --------------------------------------------------------------------------------------------------


class _Leaf:
    """A field's condition array without ``exists: false``. It needs at least one leaf value that passes."""

    __slots__ = ("_test",)

    positive = True

    def __init__(self, tests: tuple[_Test, ...]) -> None:
        if len(tests) == 1:
            self._test = tests[0]
        else:
            self._test = lambda v: any(test(v) for test in tests)

    def match(self, value: Any) -> bool:
        if isinstance(value, list):
            return any(self.match(element) for element in value)
        if value is _MISSING or isinstance(value, dict):
            return False
        return self._test(value)


class _Absent:
    """``{"exists": false}``: matches when the field holds no leaf value.

    Absent, an object, and an empty array all hold none.
    """

    __slots__ = ()

    positive = False

    def match(self, value: Any) -> bool:
        return not _has_leaf(value)


_ABSENT: Final = _Absent()


def _has_leaf(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_leaf(element) for element in value)
    return value is not _MISSING and not isinstance(value, dict)


class _Node:
    """One object level of a $or-free pattern. A key may hold both a leaf and a sub-object.

    That happens when ``$or`` merges ``"a": [...]`` with ``"a": {...}``, and can match an array
    that mixes values and objects.
    """

    __slots__ = ("_parts", "positive")

    def __init__(self, leaves: dict[str, _Leaf | _Absent], children: dict[str, _Node]) -> None:
        # Leaves first: they are cheap, and most events fail on "source" or "detail-type".
        parts: list[tuple[str, _Leaf | _Absent | _Node]] = [*leaves.items(), *children.items()]
        self._parts = tuple(parts)
        self.positive: bool = any(part.positive for _, part in parts)

    def match_mapping(self, event: Mapping[str, Any]) -> bool:
        # A plain loop: this is the hottest code in a replay, and all() over a generator is slower.
        for key, part in self._parts:
            if not part.match(event.get(key, _MISSING)):
                break
        else:
            return True
        return False

    def match(self, value: Any) -> bool:
        if isinstance(value, dict):
            return self.match_mapping(value)
        if isinstance(value, list):
            # Array consistency: one element must satisfy the whole sub-pattern. A sub-pattern of
            # nothing but `exists: false` needs the field missing from every element.
            if self.positive:
                return any(self.match(element) for element in value)
            return all(self.match(element) for element in value)
        # A scalar, null or absent value has no fields beneath it, so only absence holds here.
        return not self.positive


def _build_node(flat: dict[_Path, _Leaf | _Absent]) -> _Node:
    leaves: dict[str, _Leaf | _Absent] = {}
    grouped: dict[str, dict[_Path, _Leaf | _Absent]] = {}
    for path, leaf in flat.items():
        if len(path) == 1:
            leaves[path[0]] = leaf
        else:
            grouped.setdefault(path[0], {})[path[1:]] = leaf
    return _Node(leaves, {key: _build_node(sub) for key, sub in grouped.items()})


# --------------------------------------------------------------------------------------------------
# Parsing and validation: the pattern becomes alternatives, each a flat map of field path -> leaf
# --------------------------------------------------------------------------------------------------


def _expand(obj: dict[str, Any], prefix: _Path, *, in_or: bool) -> list[dict[_Path, _Leaf | _Absent]]:
    """Expand a pattern object into its $or-free alternatives. Later keys override earlier ones."""
    where = _where(prefix)
    if not obj:
        raise InvalidPatternError(f"empty object at {where}: an object in a pattern needs at least one field")
    alternatives: list[dict[_Path, _Leaf | _Absent]] = [{}]
    for key, value in obj.items():
        additions: list[dict[_Path, _Leaf | _Absent]]
        if key == _OR:
            additions = _expand_or(value, prefix)
        else:
            path = (*prefix, key)
            if in_or and key in _OPERATORS:
                raise InvalidPatternError(
                    f"{_where(path)}: {key!r} is an operator and cannot be a field name inside $or"
                )
            if isinstance(value, dict):
                additions = _expand(value, path, in_or=in_or)
            elif isinstance(value, list):
                additions = [{path: leaf} for leaf in _compile_leaf(value, path)]
            else:
                raise InvalidPatternError(
                    f"{_where(path)}: field values must be arrays of conditions (or objects), got {value!r}"
                )
        alternatives = [{**done, **extra} for done in alternatives for extra in additions]
        if len(alternatives) > _MAX_ALTERNATIVES:
            raise InvalidPatternError(f"{where}: $or expands to more than {_MAX_ALTERNATIVES} alternatives")
    return alternatives


def _expand_or(value: Any, prefix: _Path) -> list[dict[_Path, _Leaf | _Absent]]:
    where = _where((*prefix, _OR))
    if not isinstance(value, list) or len(value) < 2:
        raise InvalidPatternError(f"{where}: $or needs an array of at least two objects")
    branches: list[dict[_Path, _Leaf | _Absent]] = []
    for branch in value:
        if not isinstance(branch, dict):
            raise InvalidPatternError(f"{where}: every $or alternative must be an object, got {branch!r}")
        branches.extend(_expand(branch, prefix, in_or=True))
    return branches


def _compile_leaf(conditions: list[Any], path: _Path) -> list[_Leaf | _Absent]:
    """Compile a condition array into one or two alternatives: the positive tests, and `exists: false`."""
    where = _where(path)
    if not conditions:
        raise InvalidPatternError(f"{where}: empty arrays are not allowed")
    strings: set[str] = set()
    numbers: set[float] = set()
    literals: set[bool | None] = set()  # compared by identity: True, False, None
    tests: list[_Test] = []
    absent = False
    for condition in conditions:
        if isinstance(condition, str):
            strings.add(condition)
        elif isinstance(condition, bool) or condition is None:
            literals.add(condition)
        elif isinstance(condition, int | float):
            numbers.add(condition)
        elif isinstance(condition, dict):
            test = _compile_operator(condition, where)
            if test is None:
                absent = True
            else:
                tests.append(test)
        else:
            raise InvalidPatternError(
                f"{where}: a condition must be a string, number, boolean, null or operator object, got {condition!r}"
            )
    if strings or numbers or literals:
        tests.insert(0, _exact(frozenset(strings), frozenset(numbers), frozenset(literals)))
    alternatives: list[_Leaf | _Absent] = []
    if tests:
        alternatives.append(_Leaf(tuple(tests)))
    if absent:
        alternatives.append(_ABSENT)
    return alternatives


def _compile_operator(condition: dict[str, Any], where: str) -> _Test | None:
    """Compile one operator object. Returns None for ``{"exists": false}``, which is not a value test."""
    if len(condition) != 1:
        raise InvalidPatternError(f"{where}: an operator object needs exactly one key, got {condition!r}")
    ((op, arg),) = condition.items()
    if op == "exists":
        if not isinstance(arg, bool):
            raise InvalidPatternError(f"{where}: exists takes true or false, got {arg!r}")
        return _any_leaf if arg else None
    if op in {"prefix", "suffix"}:
        return _affix(op, arg, where)
    if op == "equals-ignore-case":
        target = _string(arg, op, where).lower()
        return lambda v: type(v) is str and v.lower() == target
    if op == "wildcard":
        regex = _wildcard(_string(arg, op, where), where)
        return lambda v: type(v) is str and regex.fullmatch(v) is not None
    if op == "anything-but":
        return _anything_but(arg, where)
    if op == "numeric":
        return _numeric(arg, where)
    if op == "cidr":
        return _cidr(arg, where)
    raise InvalidPatternError(f"{where}: unknown operator {op!r}")


def _any_leaf(_value: Any) -> bool:
    """``{"exists": true}``: any leaf value, null included, counts."""
    return True


def _exact(strings: frozenset[str], numbers: frozenset[float], literals: frozenset[bool | None]) -> _Test:
    """Exact match. Numbers compare by value (5 equals 5.0), never with strings or booleans."""

    def test(v: Any) -> bool:
        kind = type(v)
        if kind is str:
            return v in strings
        if kind is int or kind is float:
            return v in numbers
        # bool/None: `in` on a frozenset of True/False/None compares by hash and equality, and
        # no ints are stored there, so True cannot be confused with 1.
        return (kind is bool or v is None) and v in literals

    return test


def _affix(op: str, arg: Any, where: str) -> _Test:
    """prefix / suffix, optionally in their ``{"equals-ignore-case": ...}`` form."""
    if isinstance(arg, dict):
        if len(arg) != 1 or "equals-ignore-case" not in arg:
            raise InvalidPatternError(f"{where}: {op} takes a string or {{'equals-ignore-case': string}}")
        text = _string(arg["equals-ignore-case"], f"{op}/equals-ignore-case", where).lower()
        if op == "prefix":
            return lambda v: type(v) is str and v.lower().startswith(text)
        return lambda v: type(v) is str and v.lower().endswith(text)
    text = _string(arg, op, where)
    if op == "prefix":
        return lambda v: type(v) is str and v.startswith(text)
    return lambda v: type(v) is str and v.endswith(text)


def _anything_but(arg: Any, where: str) -> _Test:
    """anything-but: matches every value except those described. A missing field still never matches.

    A value of another type is never excluded: ``anything-but: 123`` matches the string "123".
    """
    if isinstance(arg, dict):
        return _anything_but_operator(arg, where)
    values = arg if isinstance(arg, list) else [arg]
    if not values:
        raise InvalidPatternError(f"{where}: anything-but needs at least one value")
    if all(type(v) is str for v in values):
        excluded_strings = frozenset(values)
        return lambda v: not (type(v) is str and v in excluded_strings)
    if all(type(v) in (int, float) for v in values):
        excluded_numbers = frozenset(values)
        return lambda v: not (type(v) in (int, float) and v in excluded_numbers)
    raise InvalidPatternError(
        f"{where}: anything-but takes a string, a number, or a list of only strings or only numbers"
    )


def _anything_but_operator(arg: dict[str, Any], where: str) -> _Test:
    if len(arg) != 1:
        raise InvalidPatternError(f"{where}: anything-but takes one nested operator, got {arg!r}")
    ((op, value),) = arg.items()
    if op in {"prefix", "suffix"}:
        # The user guide: anything-but works with a single prefix, not a list.
        text = _string(value, f"anything-but/{op}", where)
        if not text:
            raise InvalidPatternError(f"{where}: anything-but/{op} cannot be empty")
        if op == "prefix":
            return lambda v: not (type(v) is str and v.startswith(text))
        return lambda v: not (type(v) is str and v.endswith(text))
    if op == "equals-ignore-case":
        lowered = frozenset(s.lower() for s in _strings(value, f"anything-but/{op}", where))
        return lambda v: not (type(v) is str and v.lower() in lowered)
    if op == "wildcard":
        regexes = tuple(_wildcard(s, where) for s in _strings(value, f"anything-but/{op}", where))
        return lambda v: not (type(v) is str and any(r.fullmatch(v) for r in regexes))
    raise InvalidPatternError(f"{where}: anything-but does not support {op!r}")


def _numeric(arg: Any, where: str) -> _Test:
    """``numeric``: ``["=", n]``, ``[">"|">=", n]``, ``["<"|"<=", n]`` or ``[">"|">=", n, "<"|"<=", m]``."""
    shape = f"{where}: numeric takes ['=', n], ['<', n], ['>', n] or ['>', n, '<', m] (with >= and <= too)"
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise InvalidPatternError(f"{shape}, got {arg!r}")
    ops = arg[0::2]
    bounds = arg[1::2]
    if not all(isinstance(op, str) for op in ops) or not all(_is_number(b) for b in bounds):
        raise InvalidPatternError(f"{shape}, got {arg!r}")
    first = ops[0]
    if len(arg) == 2:
        (bound,) = bounds
        if first == "=":
            return lambda v: _is_number(v) and v == bound
        if first in _NUMERIC_LOWER | _NUMERIC_UPPER:
            return _range(first, bound, None, None)
        raise InvalidPatternError(f"{shape}, got {arg!r}")
    if first not in _NUMERIC_LOWER or ops[1] not in _NUMERIC_UPPER:
        raise InvalidPatternError(f"{shape}, got {arg!r}")
    low, high = bounds
    if low > high or (low == high and (first == ">" or ops[1] == "<")):
        raise InvalidPatternError(f"{where}: numeric range {arg!r} is empty")
    return _range(first, low, ops[1], high)


def _range(op1: str, bound1: float, op2: str | None, bound2: float | None) -> _Test:
    checks = [_COMPARE[op1](bound1)]
    if op2 is not None and bound2 is not None:
        checks.append(_COMPARE[op2](bound2))
    if len(checks) == 1:
        (only,) = checks
        return lambda v: _is_number(v) and only(v)
    low, high = checks
    return lambda v: _is_number(v) and low(v) and high(v)


_COMPARE: Final[dict[str, Callable[[float], Callable[[float], bool]]]] = {
    ">": lambda b: lambda v: v > b,
    ">=": lambda b: lambda v: v >= b,
    "<": lambda b: lambda v: v < b,
    "<=": lambda b: lambda v: v <= b,
}


def _is_number(value: Any) -> bool:
    """JSON numbers only: booleans are not numbers here, although Python says they are ints."""
    return type(value) in (int, float)


def _cidr(arg: Any, where: str) -> _Test:
    """``cidr``: the value is a string IPv4 or IPv6 address inside the block."""
    text = _string(arg, "cidr", where)
    if "/" not in text:
        raise InvalidPatternError(f"{where}: cidr needs a block such as '10.0.0.0/24', got {text!r}")
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise InvalidPatternError(f"{where}: cidr {text!r} is not a valid IP block") from exc

    def test(v: Any) -> bool:
        if type(v) is not str:
            return False
        address = _ip(v)
        # Checked explicitly: `in` across IP versions is not reliable.
        return address is not None and address.version == network.version and address in network

    return test


@lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _wildcard(text: str, where: str) -> re.Pattern[str]:
    """Translate a wildcard (``*`` = any run of characters, ``\\*`` = a literal star) to an anchored regex.

    As Event Ruler documents: ``\\\\`` is a literal backslash, a backslash before anything else is
    invalid, and consecutive wildcards are invalid.
    """
    parts: list[str] = []
    index = 0
    previous_star = False
    while index < len(text):
        char = text[index]
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if escaped not in ("*", "\\"):
                raise InvalidPatternError(f"{where}: wildcard {text!r}: a backslash may only escape * or \\")
            parts.append(re.escape(escaped))
            index += 2
            previous_star = False
            continue
        if char == "*":
            if previous_star:
                raise InvalidPatternError(f"{where}: wildcard {text!r} has consecutive wildcard characters")
            parts.append(".*")
            previous_star = True
        else:
            parts.append(re.escape(char))
            previous_star = False
        index += 1
    return re.compile("".join(parts), re.DOTALL)


def _string(value: Any, op: str, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidPatternError(f"{where}: {op} takes a string, got {value!r}")
    return value


def _strings(value: Any, op: str, where: str) -> list[str]:
    """A string or a non-empty list of strings, as anything-but's equals-ignore-case and wildcard take."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise InvalidPatternError(f"{where}: {op} needs at least one string")
    return [_string(v, op, where) for v in values]


def _where(path: _Path) -> str:
    return ".".join(path) if path else "the pattern root"
