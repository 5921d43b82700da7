"""The card limit rule: which methods may pay an invoice of an amount (pure)."""

from __future__ import annotations

import pytest

from tollgate.domain.payment_limits import (
    PaymentMethodNotAllowed,
    allowed_methods,
    check_payment_method,
    parse_card_limits,
)


def test_limits_parse_per_currency_in_minor_units() -> None:
    assert parse_card_limits("") == {}
    assert parse_card_limits("usd:100000, EUR:90000") == {"usd": 100000, "eur": 90000}


@pytest.mark.parametrize("text", ["usd", "usd:-1", "usd:1.5", "dollars:100", "usd:1,usd:2"])
def test_a_bad_limit_is_refused_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="card limit"):
        parse_card_limits(text)


def test_a_card_pays_up_to_the_limit_and_only_bank_methods_above() -> None:
    limits = {"usd": 100_000}
    assert "card" in allowed_methods(100_000, "usd", limits)
    assert allowed_methods(100_001, "usd", limits) == ("us_bank_account", "customer_balance")
    assert "card" in allowed_methods(10**9, "eur", limits)  # no limit in that currency
    check_payment_method("us_bank_account", 500_000, "usd", limits)
    with pytest.raises(PaymentMethodNotAllowed, match="at most 100000"):
        check_payment_method("card", 100_001, "usd", limits)
