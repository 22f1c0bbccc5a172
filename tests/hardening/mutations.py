"""Hypothesis strategies for bad input (issue 8): real-shaped events, broken the ways real ones break.

Most generated events start from one of the function's own sample events and apply a few
mutations, so they get past the envelope and reach the domain code:

* a field deleted (a required one, an optional one, a whole block);
* a value replaced by another type (``None``, numbers, huge numbers, booleans, lists, objects),
  by a string where an object was, by the same value as a JSON string (as some producers send
  ``requestParameters``), by a huge string, by a value taken from elsewhere in the samples (a
  date where an ARN belongs), or by a suite-role ARN;
* an unknown key added anywhere (AWS adds fields over time).

The rest is arbitrary JSON, with or without an envelope around it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

Path = tuple[str | int, ...]

LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
AWKWARD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "null",
        "true",
        "{}",
        "[]",
        "{not json",
        "not a date",
        "2026-13-45T99:99:99Z",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "arn:aws:",
        "arn:aws:iam::123456789012:role/changeguard/hardening",
        "arn:aws:iam::123456789012:root",
        "d-",
        "\u0000",
        "\ud7ff\ue000",
        "CHG-1001",
        "../../etc/passwd",
    ]
)


def paths_of(value: Any, prefix: Path = ()) -> list[Path]:
    """Every node below the root, as the keys and indices that lead to it."""
    out: list[Path] = []
    if isinstance(value, dict):
        for key, child in value.items():
            out.append((*prefix, key))
            out.extend(paths_of(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.append((*prefix, index))
            out.extend(paths_of(child, (*prefix, index)))
    return out


def containers_of(value: Any, prefix: Path = ()) -> list[Path]:
    """Every object node (the root included): where an unknown key can be added."""
    out: list[Path] = [prefix] if isinstance(value, dict) else []
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(containers_of(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.extend(containers_of(child, (*prefix, index)))
    return out


def _at(value: Any, path: Path) -> Any:
    for part in path:
        value = value[part]
    return value


def vocabulary(samples: Sequence[Any]) -> list[Any]:
    """Leaf values of the samples: plausible values in the wrong place."""
    leaves: list[Any] = []
    for sample in samples:
        for path in paths_of(sample):
            node = _at(sample, path)
            if not isinstance(node, dict | list) and node not in leaves:
                leaves.append(node)
    return leaves or [None]


def replacements(original: Any, vocab: list[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        LEAVES,
        AWKWARD_STRINGS,
        st.sampled_from(vocab),
        st.just(json.dumps(original)),  # a JSON string where the object (or value) was
        st.just(str(original)),
        st.just([original]),
        st.just({"value": original}),
        st.just({}),
        st.just([]),
        st.just("x" * 300_000),  # past EventBridge's 256 KB, as a replay file may be
        st.just(10**40),
        ANY_JSON,
    )


@st.composite
def mutated(draw: st.DrawFn, samples: Sequence[Any], vocab: list[Any]) -> Any:
    """One of ``samples`` with one to four mutations."""
    event = copy.deepcopy(draw(st.sampled_from(list(samples))))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        kind = draw(st.sampled_from(["delete", "replace", "replace", "add"]))
        paths = paths_of(event)
        if kind == "add" or not paths:
            containers = containers_of(event)
            if not containers:
                return draw(replacements(event, vocab))
            where = _at(event, draw(st.sampled_from(containers)))
            where[draw(st.text(min_size=1, max_size=12))] = draw(ANY_JSON)
            continue
        path = draw(st.sampled_from(paths))
        parent = _at(event, path[:-1])
        if kind == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(replacements(parent[path[-1]], vocab))
    return event


@st.composite
def arbitrary(draw: st.DrawFn, samples: Sequence[Any]) -> Any:
    """Arbitrary JSON; half the time inside a real envelope (the sample's source and detail-type)."""
    body = draw(ANY_JSON)
    envelopes = [s for s in samples if isinstance(s, dict) and "detail-type" in s]
    if envelopes and draw(st.booleans()):
        envelope = copy.deepcopy(draw(st.sampled_from(envelopes)))
        envelope["detail"] = body
        return envelope
    return body


def bad_events(samples: Sequence[Any]) -> st.SearchStrategy[Any]:
    """Mostly mutations of ``samples`` (about 6 in 7), the rest arbitrary JSON."""
    vocab = vocabulary(samples)
    return st.one_of(*([mutated(samples, vocab)] * 6), arbitrary(samples))
