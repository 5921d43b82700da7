"""JSON columns: written and read with orjson, and as the standard library did where it refuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tollgate.db.unit_of_work import json_text, json_value


@pytest.mark.parametrize(
    "value",
    [
        {"email": "ä@example.com", "items": [1, 2.5, None, True], "nested": {"k": "v"}},
        ["a", "b"],
        {"k\ud800": "v"},  # a lone surrogate: orjson refuses it, the standard library escapes it
        {"big": 2**70},  # past 64 bits
        {1: "one"},  # a key other than text becomes text
    ],
)
def test_a_value_reads_back_as_the_standard_library_reads_it(value: object) -> None:
    text = json_text(value)
    assert json_value(text) == json.loads(json.dumps(value))
    assert json_value(text.encode()) == json_value(text)  # PostgreSQL's driver hands bytes


def test_what_the_standard_library_refuses_is_still_refused() -> None:
    with pytest.raises(TypeError):
        json_text({"at": datetime(2026, 1, 1, tzinfo=UTC)})
    with pytest.raises(TypeError):
        json_text({"ids": {"a"}})


def test_text_the_standard_library_wrote_reads_back() -> None:
    for value in ({"k\ud800": "v"}, {"n": 2**70}, {"a": [1, {"b": None}]}):
        assert json_value(json.dumps(value)) == value
