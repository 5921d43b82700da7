"""How the billing page words a discount and a grandfathered plan version (issue 20)."""

from __future__ import annotations

from datetime import UTC, datetime

from tollgate.domain.discount_words import discount_terms, version_words


def test_a_discount_says_what_it_takes_off_and_for_how_long() -> None:
    def terms(**given: object) -> str:
        base: dict[str, object] = {
            "percent_off": None,
            "amount_off": None,
            "currency": None,
            "duration": "once",
            "duration_in_months": None,
            "end": None,
        }
        return discount_terms(**{**base, **given})  # type: ignore[arg-type]

    assert terms(percent_off=20, duration="forever") == "20 % off, forever"
    assert terms(percent_off=12.5) == "12.5 % off the next invoice"
    assert (
        terms(
            amount_off=900,
            currency="eur",
            duration="repeating",
            duration_in_months=3,
            end=datetime(2027, 3, 1, tzinfo=UTC),
        )
        == "€9.00 off each invoice for 3 months, until Mar 1, 2027"
    )
    assert terms(amount_off=500, currency="jpy", duration="repeating", duration_in_months=1) == (
        "¥500 off each invoice for 1 month"
    )


def test_a_version_is_named_once_a_plan_has_had_more_than_one() -> None:
    assert version_words(version=1, newest=1) is None
    assert version_words(version=1, newest=2) == "v1 — price kept until you move"
    assert version_words(version=2, newest=2) == "v2"
    assert version_words(version=None, newest=2) is None
