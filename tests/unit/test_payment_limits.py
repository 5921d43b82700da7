"""The card limit rule: which methods may pay an invoice of an amount (pure)."""

from __future__ import annotations

import pytest

from tollgate.domain.payment_limits import (
    PaymentMethodNotAllowed,
    PaymentPolicy,
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
    policy = PaymentPolicy(card_limits={"usd": 100_000})
    assert "card" in policy.methods_for(100_000, "usd")
    assert policy.methods_for(100_001, "usd") == ("us_bank_account", "customer_balance")
    assert "card" in policy.methods_for(10**9, "eur")  # no limit in that currency
    policy.check("us_bank_account", 500_000, "usd", "pro")
    with pytest.raises(PaymentMethodNotAllowed, match="at most 100000"):
        policy.check("card", 100_001, "usd", "pro")


def test_a_card_only_plan_above_its_limit_has_no_method_that_may_pay() -> None:
    policy = PaymentPolicy(("card",), {"usd": 30_000})
    assert policy.payable_by(30_000, "usd", "big") == ("card",)
    with pytest.raises(PaymentMethodNotAllowed, match="paid by card only") as refused:
        policy.payable_by(30_001, "usd", "big")
    assert refused.value.param == "plan"


def test_a_method_the_plan_does_not_accept_is_refused_whatever_the_amount() -> None:
    policy = PaymentPolicy(("us_bank_account",), {})
    assert not policy.is_open(100, "usd")
    with pytest.raises(PaymentMethodNotAllowed, match="not paid by card: pay by us_bank_account"):
        policy.check("card", 100, "usd", "pro")
