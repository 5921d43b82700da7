"""Refunds through Tollgate's API and stripesim: a charge or a paid invoice (by credit note), once
per Idempotency-Key, audited; a refund made in Stripe's dashboard lands in the mirror the same
way; bad requests get a 4xx and refund nothing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tests.e2e.conftest import World
from tollgate.db.models import AuditLog, Refund


def paying_customer(world: World, customer_id: str) -> tuple[str, str, str]:
    """A Pro subscriber who paid its first invoice by card: (Stripe customer, invoice, charge)."""
    stripe_id = str(world.create_customer(customer_id)["stripe_customer_id"])
    method = world.stripe.v1.payment_methods.attach("pm_card_visa", params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    world.put_subscription(customer_id, plan="pro", interval="month", trial_days=0)
    world.settle()
    (invoice,) = world.invoices(stripe_id)
    assert invoice.status == "paid"
    (charge,) = world.stripe.v1.charges.list(params={"customer": stripe_id}).data
    return stripe_id, str(invoice.id), str(charge.id)


def refund(world: World, customer_id: str, expect: int, key: str | None = None, **body: Any) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    return world.call(
        "POST", f"/v1/customers/{customer_id}/refunds", expect, json=body, headers=headers
    )


def refunded(world: World, charge_id: str) -> int:
    return int(world.stripe.v1.charges.retrieve(charge_id).amount_refunded)


def mirrored(world: World) -> dict[str, tuple[str | None, int, str | None]]:
    with world.db.transaction() as session:
        rows = session.scalars(sa.select(Refund)).all()
        return {row.id: (row.charge_id, row.amount, row.status) for row in rows}


def audited(world: World) -> list[tuple[str, str]]:
    with world.db.transaction() as session:
        rows = session.execute(
            sa.select(AuditLog.actor, AuditLog.object_id).where(AuditLog.action == "refund")
        ).all()
    return [(row.actor, row.object_id) for row in rows]


def test_a_refund_made_twice_with_one_key_refunds_once_and_is_audited(world: World) -> None:
    _, _, charge = paying_customer(world, "refund-org")
    body = {"charge": charge, "amount": {"amount": 500, "currency": "usd"}}
    first = refund(world, "refund-org", 201, key="refund-1", reason="requested_by_customer", **body)
    assert first["amount"] == {"amount": 500, "currency": "usd"}
    assert (first["charge"], first["reason"], first["status"]) == (
        charge,
        "requested_by_customer",
        "succeeded",
    )
    again = refund(world, "refund-org", 200, key="refund-1", reason="requested_by_customer", **body)
    assert again["id"] == first["id"]
    assert refunded(world, charge) == 500
    world.settle()
    assert mirrored(world) == {first["id"]: (charge, 500, "succeeded")}
    assert audited(world) == [("api:app", first["id"])]
    # Another key is another refund.
    second = refund(world, "refund-org", 201, key="refund-2", **body)
    assert second["id"] != first["id"]
    assert refunded(world, charge) == 1000


def test_a_paid_invoice_is_refunded_by_a_credit_note(world: World) -> None:
    _, invoice, charge = paying_customer(world, "note-org")
    made = refund(world, "note-org", 201, key="note-1", invoice=invoice)
    assert made["invoice"] == invoice and made["credit_note"].startswith("cn_")
    assert made["amount"] == {"amount": 2900, "currency": "usd"}
    assert refund(world, "note-org", 200, key="note-1", invoice=invoice)["id"] == made["id"]
    notes = world.stripe.v1.credit_notes.list(params={"invoice": invoice}).data
    assert [(note.id, note.total, note.type) for note in notes] == [
        (made["credit_note"], 2900, "post_payment")
    ]
    assert refunded(world, charge) == 2900
    world.settle()
    assert mirrored(world)[made["id"]] == (charge, 2900, "succeeded")
    # Nothing is left to refund: a clear 400, and nothing changes.
    left = refund(world, "note-org", 400, invoice=invoice)
    assert left["error"]["type"] == "invalid_request_error"
    assert refunded(world, charge) == 2900
    assert len(world.stripe.v1.refunds.list(params={"charge": charge}).data) == 1


def test_a_refund_made_in_stripes_dashboard_lands_the_same_way(world: World) -> None:
    _, _, charge = paying_customer(world, "dash-org")
    made = world.stripe.v1.refunds.create(params={"charge": charge, "amount": 700})
    world.settle()
    assert mirrored(world) == {str(made.id): (charge, 700, "succeeded")}


def test_bad_refunds_get_a_clear_4xx_and_refund_nothing(world: World) -> None:
    _, invoice, charge = paying_customer(world, "careful-org")
    _, other_invoice, other_charge = paying_customer(world, "other-org")
    usd = {"amount": 100, "currency": "usd"}
    cases: list[tuple[int, dict[str, Any], str]] = [
        (400, {"invoice": invoice, "charge": charge}, "invoice"),
        (400, {}, "invoice"),
        (400, {"charge": charge, "amount": {"amount": 0, "currency": "usd"}}, "amount"),
        (400, {"charge": charge, "amount": {"amount": 100, "currency": "eur"}}, "amount.currency"),
        (400, {"charge": charge, "amount": {"amount": 2901, "currency": "usd"}}, "amount"),
        (400, {"charge": charge, "amount": usd, "reason": "because"}, "reason"),
        (404, {"charge": other_charge}, "charge"),
        (404, {"invoice": other_invoice}, "invoice"),
        (404, {"charge": "ch_doesnotexist"}, "charge"),
    ]
    for status, body, param in cases:
        answer = refund(world, "careful-org", status, **body)
        assert answer["error"].get("param") == param, (body, answer)
    assert refund(world, "nobody", 404, charge=charge)["error"]["type"] == "not_found"
    assert refunded(world, charge) == 0 and refunded(world, other_charge) == 0
    assert audited(world) == []
