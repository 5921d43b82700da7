"""Bank transfers and micro-deposits (issue 21): the pure rules behind them."""

from __future__ import annotations

import pytest

from tests.unit.test_entitlement_rules import granted
from tests.unit.test_subscription_rules import CATALOG
from tollgate.domain.entitlements import AWAITING_TRANSFER, Access
from tollgate.domain.errors import InvalidRequest
from tollgate.domain.reconcile import DriftKind, compare_cash_balance
from tollgate.domain.subscriptions import bank_transfer_settings, collection_for
from tollgate.stripe.translate import bank_transfer_snapshot, invoice_snapshot


def test_a_bank_transfer_sends_the_invoice_due_in_30_days_unless_told() -> None:
    pro = CATALOG.plans["pro"]
    paid = collection_for(pro, method=None, days_until_due=None, payment_method="customer_balance")
    assert (paid.method, paid.days_until_due) == ("send_invoice", 30)
    sooner = collection_for(pro, method=None, days_until_due=7, payment_method="customer_balance")
    assert sooner.days_until_due == 7


@pytest.mark.parametrize(
    ("payment_method", "method", "param"),
    [
        ("cheque", None, "payment_method"),
        ("customer_balance", "charge_automatically", "collection_method"),
    ],
)
def test_a_bank_transfer_cannot_be_charged_and_other_methods_are_not_named(
    payment_method: str, method: str | None, param: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        collection_for(
            CATALOG.plans["pro"], method=method, days_until_due=None, payment_method=payment_method
        )
    assert refused.value.param == param


def test_the_transfer_type_follows_the_currency() -> None:
    settings = bank_transfer_settings("USD")
    assert settings["payment_method_types"] == ["customer_balance"]
    assert settings["payment_method_options"]["customer_balance"]["bank_transfer"] == {
        "type": "us_bank_transfer"
    }
    with pytest.raises(InvalidRequest):
        bank_transfer_settings("eur")


def test_awaiting_the_first_transfer_holds_even_an_active_subscription() -> None:
    assert granted("pro", "active", processing_access=AWAITING_TRANSFER).access is Access.DEFAULT
    assert granted("pro", "active").access is Access.FULL


def test_a_transfer_payment_is_read_from_its_instructions_then_kept_when_settled() -> None:
    waiting = bank_transfer_snapshot(
        {
            "id": "pi_1",
            "customer": "cus_1",
            "amount": 2900,
            "amount_received": 1000,
            "currency": "usd",
            "status": "requires_action",
            "payment_method_types": ["customer_balance"],
            "next_action": {
                "display_bank_transfer_instructions": {
                    "amount_remaining": 1900,
                    "reference": "REF1",
                    "hosted_instructions_url": "https://example.test/i",
                    "financial_addresses": [
                        {
                            "type": "aba",
                            "aba": {"bank_name": "B", "routing_number": "1", "account_number": "2"},
                        }
                    ],
                }
            },
        }
    )
    assert waiting is not None
    assert (waiting.amount_remaining, waiting.reference) == (1900, "REF1")
    assert waiting.account == {
        "bank_name": "B",
        "routing_number": "1",
        "account_number": "2",
        "account_holder_name": "",
    }
    paid = bank_transfer_snapshot(
        {
            "id": "pi_1",
            "amount": 2900,
            "status": "succeeded",
            "currency": "usd",
            "payment_method_types": ["customer_balance"],
        }
    )
    assert paid is not None and paid.amount_remaining == 0 and paid.reference is None
    assert bank_transfer_snapshot({"id": "pi_2", "payment_method_types": ["card"]}) is None


def test_an_invoice_says_it_is_paid_by_transfer() -> None:
    base = {"id": "in_1", "customer": "cus_1", "currency": "usd"}
    assert invoice_snapshot(
        {**base, "payment_settings": {"payment_method_types": ["customer_balance"]}}
    ).by_bank_transfer
    assert not invoice_snapshot(
        {**base, "payment_settings": {"payment_method_types": None}}
    ).by_bank_transfer


def test_cash_balances_differ_only_by_money_held() -> None:
    assert compare_cash_balance("org", local=None, stripe={}) is None
    assert compare_cash_balance("org", local={"usd": 0}, stripe={}) is None
    drift = compare_cash_balance("org", local={"usd": 500}, stripe={"usd": 700})
    assert drift is not None and drift.kind is DriftKind.CASH_BALANCE_DIFFERS
    assert (drift.local, drift.stripe) == ({"available": {"usd": 500}}, {"available": {"usd": 700}})
