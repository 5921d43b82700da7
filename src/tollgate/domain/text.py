"""Text Tollgate can store: the one rule every input passes before it reaches a database.

JSON can carry two things some of Tollgate's stores cannot keep. A lone UTF-16 surrogate
(`"\\ud800"`) is not a Unicode character: no UTF-8 encoder writes it, so SQLite's driver, Stripe's
SDK and every JSON encoder after it fail on it. NUL (`\\u0000`) is a character, but PostgreSQL's
text refuses it. Both are refused on every database, so an app sees one behaviour whichever
database Tollgate runs on, and a value accepted once can always be read back and sent to Stripe.
Whole numbers are kept in 64-bit columns on both databases: one past that range is refused too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tollgate.domain.errors import InvalidRequest

NUL = "\x00"
INT64 = range(-(2**63), 2**63)


def text_problem(text: str) -> str | None:
    """Return why `text` cannot be stored, or None when it can."""
    if NUL in text:
        return "contains a NUL character (\\u0000)"
    if text.isascii():  # constant time in CPython; nearly every id and name
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate (not a Unicode character)"
    return None


def check_text(text: str, param: str | None) -> str:
    """Return `text`, or raise InvalidRequest naming `param` when it cannot be stored."""
    problem = text_problem(text)
    if problem is not None:
        name = param or "the request"
        raise InvalidRequest(f"{name} {problem}", param=param)
    return text


def first_unstorable(value: Any, where: str = "") -> str | None:
    """Say where the first unstorable text or number in a JSON-like value is (keys too), or None.

    The answer names the place (`metadata.plan`), never the text itself, so it can be sent back.
    """
    if isinstance(value, str):
        problem = text_problem(value)
        return f"{where or 'a value'} {problem}" if problem else None
    if isinstance(value, int) and not isinstance(value, bool) and value not in INT64:
        return f"{where or 'a value'} is out of range (a whole number of at most 19 digits)"
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and (problem := text_problem(key)) is not None:
                return f"a key in {where or 'the body'} {problem}"
            found = first_unstorable(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = first_unstorable(item, f"{where}[{index}]")
            if found:
                return found
    return None
