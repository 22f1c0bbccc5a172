"""One summary of pydantic's findings for every rejection: where and what, never the input."""

from __future__ import annotations

import pytest
from changeguard.domain.errors import first_error
from pydantic import BaseModel, ConfigDict, ValidationError

SECRET = "hunter2-canary"


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: _Inner


def _error(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _Outer.model_validate(data)
    return caught.value


def test_names_the_count_and_the_first_location_and_message() -> None:
    summary = first_error(_error({"name": 1, "inner": {"port": "x"}}))
    assert summary == "2 error(s); first at 'name': Input should be a valid string"


def test_a_nested_location_is_dotted() -> None:
    assert first_error(_error({"name": "n", "inner": {"port": "x"}})).startswith("1 error(s); first at 'inner.port':")


def test_a_whole_input_rejected_at_the_root_says_so() -> None:
    assert (
        first_error(_error([SECRET]))
        == "1 error(s); first at '<root>': Input should be a valid dictionary or instance of _Outer"
    )


@pytest.mark.parametrize(
    "data",
    [
        {"name": [SECRET], "inner": {"port": 1}},
        {"name": "n", "inner": {"port": SECRET}},
        {"name": "n", "inner": {"port": 1}, "extra": SECRET},
        SECRET,
    ],
)
def test_never_quotes_the_input(data: object) -> None:
    exc = _error(data)
    assert SECRET in str(exc)  # pydantic's own text would leak it
    assert SECRET not in first_error(exc)


def test_an_unknown_field_is_named_by_its_key_not_its_value() -> None:
    # The key is the schema's business (the sender typed a field name); the value stays out.
    summary = first_error(_error({"name": "n", "inner": {"port": 1}, "pasword": SECRET}))
    assert summary == "1 error(s); first at 'pasword': Extra inputs are not permitted"
