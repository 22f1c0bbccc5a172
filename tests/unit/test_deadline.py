"""How the sweeps know their invocation is about to time out (issue 9)."""

from __future__ import annotations

from changeguard.domain.clock import deadline
from changeguard.handlers import time_left_of


def test_a_deadline_comes_within_the_margin_of_the_timeout_or_a_fifth_of_the_time_first_left():
    left = iter([900.0, 61.0, 59.0])
    expired = deadline(lambda: next(left), 60.0)  # the first reading sets the cut-off: min(60, 900 / 5)
    assert (expired(), expired()) == (False, True)
    short = iter([30.0, 6.5, 5.5])  # 30 s in all: the cut-off is 6 s, not 60
    expired = deadline(lambda: next(short), 60.0)
    assert (expired(), expired()) == (False, True)
    assert deadline(None, 60.0)() is False  # no context, no deadline


def test_time_left_is_read_from_lambdas_context_in_seconds():
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 42_500

    time_left = time_left_of(Context())
    assert time_left is not None and time_left() == 42.5
    assert time_left_of(object()) is None
