"""Disputes through stripesim's dispute test cards and webhooks: recorded with amount, reason and
evidence deadline; the operator emailed at once (over real SMTP) and reminded once 2 days before
the deadline by a job; the outcome recorded; a lost dispute's fee in the console's fee view."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from tests.e2e.conftest import World
from tests.integration import test_notifications_delivery as delivery
from tollgate.clock import FrozenClock
from tollgate.db.models import Dispute, Notification
from tollgate.services.console import payment_fees, summarize
from tollgate.services.dispute_reminders import remind_dispute_deadlines
from tollgate.services.outbox import deliver_emails

smtp = delivery.smtp  # a real SMTP server (aiosmtpd) that keeps what it receives
OPERATOR = "owner@saas.example"


def disputed_customer(world: World, customer_id: str, card: str) -> str:
    """A Pro subscriber whose first payment, by a dispute test card, is disputed at once."""
    stripe_id = str(world.create_customer(customer_id, name="Disputer")["stripe_customer_id"])
    method = world.stripe.v1.payment_methods.attach(card, params={"customer": stripe_id})
    world.stripe.v1.customers.update(
        stripe_id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    world.put_subscription(customer_id, plan="pro", interval="month", trial_days=0)
    world.settle()
    return stripe_id


def disputes(world: World) -> list[Any]:
    with world.db.transaction() as session:
        rows = session.scalars(sa.select(Dispute).order_by(Dispute.created_at)).all()
        session.expunge_all()
    return list(rows)


def notices(world: World, template: str) -> list[tuple[str, str]]:
    with world.db.transaction() as session:
        rows = session.execute(
            sa.select(Notification.customer_id, Notification.cause).where(
                Notification.template == template
            )
        ).all()
    return [(row.customer_id, row.cause) for row in rows]


def test_a_dispute_tells_the_operator_at_once_reminds_once_and_a_loss_costs_its_fee(
    make_world: Callable[..., World], smtp: Any
) -> None:
    world = make_world(TOLLGATE_SMTP_URL=delivery._smtp_url(smtp), TOLLGATE_OPERATOR_EMAIL=OPERATOR)
    disputed_customer(world, "disputer", "pm_card_createDispute")
    (dispute,) = disputes(world)
    assert (dispute.customer_id, dispute.amount, dispute.currency) == ("disputer", 2900, "usd")
    assert (dispute.reason, dispute.status) == ("fraudulent", "needs_response")
    assert dispute.evidence_due_by is not None
    assert dispute.evidence_due_by - dispute.created_at > timedelta(days=6)
    assert notices(world, "dispute_opened") == [("disputer", dispute.id)]

    app = world.container
    report = deliver_emails(db=app.db, settings=app.settings, catalog=app.catalog, clock=app.clock)
    assert report.sent >= 1
    told = [m for m in smtp.inbox.messages if "Dispute" in str(m["Subject"])]
    assert [str(m["To"]) for m in told] == [OPERATOR]
    assert "$29.00" in str(told[0]["Subject"]) and "fraudulent" in told[0].get_body().get_content()

    # The reminder job: nothing until 2 days before the deadline, then once however often.
    early = FrozenClock(dispute.evidence_due_by - timedelta(days=3))
    assert remind_dispute_deadlines(db=app.db, clock=early) == 0
    due = FrozenClock(dispute.evidence_due_by - timedelta(days=1))
    assert remind_dispute_deadlines(db=app.db, clock=due) == 1
    assert remind_dispute_deadlines(db=app.db, clock=due) == 1
    assert notices(world, "dispute_reminder") == [("disputer", dispute.id)]

    # Evidence Stripe's test mode loses on: the outcome recorded, the operator told, the fee.
    world.stripe.v1.disputes.update(
        dispute.id, params={"evidence": {"uncategorized_text": "losing_evidence"}}
    )
    world.settle()
    (closed,) = disputes(world)
    assert closed.status == "lost"
    assert notices(world, "dispute_closed") == [("disputer", f"{dispute.id}:closed")]
    assert remind_dispute_deadlines(db=app.db, clock=due) == 0  # closed: nothing to remind
    fees = payment_fees(db=app.db, clock=app.clock, settings=app.settings)
    (mine,) = [c for c in fees.customers if c.customer_id == "disputer"]
    assert mine.by_method["dispute"] == 1500
    assert mine.fees == mine.by_method["card"] + 1500
    assert fees.totals[0]["fees_dispute"] == 1500
    (overview,) = summarize(app).payment_fees
    assert (overview.amount, overview.currency) == (fees.totals[0]["fees"], "usd")


def test_dispute_test_cards_give_their_reason_and_an_inquiry_stays_a_warning(
    world: World,
) -> None:
    disputed_customer(world, "not-received", "pm_card_createDisputeProductNotReceived")
    disputed_customer(world, "inquirer", "pm_card_createDisputeInquiry")
    found = {d.customer_id: (d.reason, d.status) for d in disputes(world)}
    assert found == {
        "not-received": ("product_not_received", "needs_response"),
        "inquirer": ("fraudulent", "warning_needs_response"),
    }
    inquiry = next(d for d in disputes(world) if d.customer_id == "inquirer")
    world.stripe.v1.disputes.update(
        inquiry.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    world.settle()
    closed = next(d for d in disputes(world) if d.customer_id == "inquirer")
    assert closed.status == "warning_closed"


def access(world: World, customer_id: str) -> tuple[str, str]:
    answer = world.call("GET", f"/v1/customers/{customer_id}/entitlements")
    return answer["status"], answer["access"]


def test_with_reduce_an_open_dispute_reduces_access_until_it_is_won(
    make_world: Callable[..., World],
) -> None:
    world = make_world(TOLLGATE_DISPUTE_ACCESS="reduce")
    disputed_customer(world, "reduced-org", "pm_card_createDispute")
    assert access(world, "reduced-org") == ("active", "reduced")
    (dispute,) = disputes(world)
    world.stripe.v1.disputes.update(
        dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}}
    )
    world.settle()
    assert disputes(world)[0].status == "won"
    assert access(world, "reduced-org") == ("active", "full")


def test_by_default_a_dispute_keeps_access(world: World) -> None:
    disputed_customer(world, "kept-org", "pm_card_createDispute")
    assert access(world, "kept-org") == ("active", "full")
