"""The conformance scenario: one run through the official SDK that touches every route the
simulator serves and makes it send every event type it knows, recording what it answered.

`test_conformance.py` judges the recording against Stripe's schemas and example objects.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import stripe

from stripesim.lists import render
from stripesim.state import Account, Simulator
from stripesim.testing import RunningSim, run_simulator

DAY = 86_400


@dataclass
class Exchange:
    method: str
    route: str
    status: int
    body: Any


@dataclass
class Recording:
    """What the scenario saw: every API answer and every event, and steps that broke."""

    exchanges: list[Exchange] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)


@contextlib.contextmanager
def recorded_run() -> Iterator[Recording]:
    """Serve a fresh simulator, run the scenario against it, and yield what it recorded."""
    recording = Recording()
    sim = Simulator(deliver_webhooks=False)

    def on_exchange(method: str, route: str, status: int, body: bytes) -> None:
        recording.exchanges.append(Exchange(method, route, status, orjson.loads(body)))

    def on_event(account: Account, event: dict[str, Any]) -> None:
        recording.events.append(render(event))

    sim.exchange_listeners.append(on_exchange)
    sim.event_listeners.append(on_event)
    with run_simulator(sim) as running:
        client = stripe.StripeClient(
            "sk_test_conformance", base_addresses={"api": running.url}, max_network_retries=0
        )
        world = World(client, running)
        for step in STEPS:
            try:
                step(world)
            except Exception as error:
                recording.broken.append(f"{step.__name__}: {type(error).__name__}: {error}")
        yield recording


@dataclass
class World:
    """The scenario's shared state: the client, the served simulator, what earlier steps made."""

    client: stripe.StripeClient
    running: RunningSim
    made: dict[str, Any] = field(default_factory=dict)

    @property
    def v1(self) -> Any:
        return self.client.v1

    def page(self, path: str, form: dict[str, str] | None = None) -> httpx.Response:
        """Use a hosted page as a buyer would (GET, or POST a form)."""
        url = path if path.startswith("http") else f"{self.running.url}{path}"
        if form is None:
            return httpx.get(url)
        return httpx.post(url, data=form, follow_redirects=False)

    def refused(self, call: Callable[[], Any]) -> stripe.StripeError:
        """Make a call Stripe answers with an error, and return that error."""
        try:
            call()
        except stripe.StripeError as error:
            return error
        raise AssertionError("the call was expected to fail")


Step = Callable[[World], None]
STEPS: list[Step] = []


def step(function: Step) -> Step:
    STEPS.append(function)
    return function


def _card(world: World, customer: str, token: str = "tok_visa") -> str:
    """Attach a card made from a test token to `customer` and make it the default."""
    pm = world.v1.payment_methods.create(params={"type": "card", "card": {"token": token}})
    world.v1.payment_methods.attach(pm.id, params={"customer": customer})
    world.v1.customers.update(
        customer, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    return str(pm.id)


# -- the catalog ----------------------------------------------------------------------------------


@step
def catalog(world: World) -> None:
    v1 = world.v1
    pro = v1.products.create(params={"name": "Pro", "metadata": {"tier": "pro"}})
    v1.products.retrieve(pro.id)
    v1.products.update(pro.id, params={"description": "The pro plan"})
    v1.products.list(params={"limit": 3})
    v1.products.search(params={"query": "metadata['tier']:'pro'"})
    bundled = v1.products.create(
        params={
            "name": "Team",
            "default_price_data": {
                "currency": "usd",
                "unit_amount": 9900,
                "recurring": {"interval": "month"},
            },
        }
    )
    monthly = v1.prices.create(
        params={
            "product": pro.id,
            "currency": "usd",
            "unit_amount": 2900,
            "recurring": {"interval": "month"},
            "lookup_key": "pro_monthly",
        }
    )
    tiered = v1.prices.create(
        params={
            "product": pro.id,
            "currency": "usd",
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": 5, "unit_amount": 1000}, {"up_to": "inf", "unit_amount": 800}],
            "recurring": {"interval": "month"},
            "expand": ["tiers"],
        }
    )
    one_time = v1.prices.create(params={"product": pro.id, "currency": "usd", "unit_amount": 5000})
    v1.prices.retrieve(monthly.id)
    v1.prices.update(monthly.id, params={"nickname": "Pro monthly"})
    v1.prices.list(params={"lookup_keys": ["pro_monthly"]})
    v1.prices.search(params={"query": "currency:'usd'"})
    doomed = v1.products.create(params={"name": "Discontinued"})
    v1.products.delete(doomed.id)
    world.made.update(
        product=pro.id,
        team_price=bundled.default_price,
        price=monthly.id,
        tiered=tiered.id,
        one_time=one_time.id,
    )


@step
def meters(world: World) -> None:
    v1 = world.v1
    meter = v1.billing.meters.create(
        params={
            "display_name": "API calls",
            "event_name": "api_call",
            "default_aggregation": {"formula": "sum"},
        }
    )
    v1.billing.meters.retrieve(meter.id)
    v1.billing.meters.update(meter.id, params={"display_name": "API requests"})
    v1.billing.meters.list()
    v1.billing.meters.deactivate(meter.id)
    v1.billing.meters.reactivate(meter.id)
    metered = v1.prices.create(
        params={
            "product": world.made["product"],
            "currency": "usd",
            "unit_amount_decimal": "0.5",
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    world.made.update(meter=meter.id, metered_price=metered.id)


# -- customers and cards --------------------------------------------------------------------------


@step
def customers(world: World) -> None:
    v1 = world.v1
    ada = v1.customers.create(
        params={
            "email": "ada@example.com",
            "name": "Ada",
            "address": {"country": "DE", "line1": "Hauptstr. 1"},
            "shipping": {"name": "Ada", "address": {"country": "DE", "city": "Berlin"}},
            "metadata": {"org": "o1"},
            "tax_id_data": [{"type": "eu_vat", "value": "DE123456789"}],
        }
    )
    v1.customers.retrieve(ada.id)
    v1.customers.update(ada.id, params={"phone": "+4930123456", "tax_exempt": "reverse"})
    v1.customers.update(ada.id, params={"tax_exempt": "none"})
    v1.customers.list(params={"email": "ada@example.com"})
    v1.customers.search(params={"query": "metadata['org']:'o1'"})
    gone = v1.customers.create(params={"email": "gone@example.com"})
    v1.customers.delete(gone.id)
    world.made["customer"] = ada.id


@step
def payment_methods(world: World) -> None:
    v1 = world.v1
    customer = world.made["customer"]
    pm = v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034},
            "billing_details": {"name": "Ada", "address": {"country": "DE"}},
        }
    )
    v1.payment_methods.attach(pm.id, params={"customer": customer})
    v1.payment_methods.retrieve(pm.id)
    v1.payment_methods.update(pm.id, params={"metadata": {"role": "main"}})
    v1.payment_methods.list(params={"customer": customer, "type": "card"})
    v1.customers.payment_methods.list(customer)
    v1.customers.payment_methods.retrieve(customer, pm.id)
    v1.customers.update(customer, params={"invoice_settings": {"default_payment_method": pm.id}})
    spare = v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_mastercard"}})
    v1.payment_methods.attach(spare.id, params={"customer": customer})
    v1.payment_methods.detach(spare.id)
    world.made["card"] = pm.id


@step
def setup_intents(world: World) -> None:
    v1 = world.v1
    customer = world.made["customer"]
    seti = v1.setup_intents.create(
        params={"customer": customer, "payment_method": "pm_card_visa", "confirm": True}
    )
    v1.setup_intents.retrieve(seti.id)
    v1.setup_intents.update(seti.id, params={"metadata": {"purpose": "save"}})
    v1.setup_intents.list(params={"customer": customer})
    later = v1.setup_intents.create(params={"customer": customer})
    v1.setup_intents.confirm(later.id, params={"payment_method": "pm_card_mastercard"})
    abandoned = v1.setup_intents.create(params={"customer": customer})
    v1.setup_intents.cancel(abandoned.id, params={"cancellation_reason": "abandoned"})
    challenged = v1.setup_intents.create(
        params={
            "customer": customer,
            "payment_method": "pm_card_authenticationRequiredOnSetup",
            "confirm": True,
        }
    )
    world.page(f"/3ds/{challenged.id}", {"action": "complete"})
    world.refused(
        lambda: v1.setup_intents.create(
            params={
                "customer": customer,
                "payment_method": "pm_card_chargeDeclined",
                "confirm": True,
            }
        )
    )


@step
def payment_intents(world: World) -> None:
    v1 = world.v1
    customer = world.made["customer"]
    paid = v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "customer": customer,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"order": "1"},
        }
    )
    v1.payment_intents.retrieve(paid.id)
    v1.payment_intents.list(params={"customer": customer})
    v1.payment_intents.search(params={"query": "status:'succeeded'"})
    held = v1.payment_intents.create(
        params={"amount": 3000, "currency": "usd", "customer": customer, "capture_method": "manual"}
    )
    v1.payment_intents.update(held.id, params={"description": "Held"})
    v1.payment_intents.confirm(held.id, params={"payment_method": "pm_card_visa"})
    v1.payment_intents.capture(held.id, params={"amount_to_capture": 2500})
    dropped = v1.payment_intents.create(params={"amount": 1000, "currency": "usd"})
    v1.payment_intents.cancel(dropped.id, params={"cancellation_reason": "abandoned"})
    world.refused(
        lambda: v1.payment_intents.create(
            params={
                "amount": 1000,
                "currency": "usd",
                "payment_method": "pm_card_chargeDeclined",
                "confirm": True,
            }
        )
    )
    challenged = v1.payment_intents.create(
        params={
            "amount": 1500,
            "currency": "usd",
            "payment_method": "pm_card_authenticationRequired",
            "confirm": True,
        }
    )
    world.page(f"/3ds/{challenged.id}", {"action": "complete"})
    authorized = v1.payment_intents.create(
        params={
            "amount": 1200,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
            "confirm": True,
        }
    )
    world.made.update(paid_intent=paid.id, authorized_charge=authorized.latest_charge)


@step
def charges_and_refunds(world: World) -> None:
    v1 = world.v1
    paid = v1.payment_intents.retrieve(world.made["paid_intent"])
    charge = str(paid.latest_charge)
    v1.charges.retrieve(charge)
    v1.charges.update(charge, params={"description": "First order"})
    v1.charges.list(params={"payment_intent": paid.id})
    v1.charges.search(params={"query": "amount>1000"})
    v1.charges.capture(world.made["authorized_charge"])
    refund = v1.refunds.create(params={"charge": charge, "amount": 500})
    v1.refunds.retrieve(refund.id)
    v1.refunds.update(refund.id, params={"metadata": {"reason": "goodwill"}})
    v1.refunds.list(params={"charge": charge})
    world.client.raw_request("get", f"/v1/charges/{charge}/refunds")
    world.refused(lambda: v1.refunds.cancel(refund.id))
    world.made["charge"] = charge


@step
def disputes(world: World) -> None:
    v1 = world.v1
    fought = v1.payment_intents.create(
        params={
            "amount": 4000,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    dispute = v1.disputes.list(params={"payment_intent": fought.id}).data[0]
    v1.disputes.retrieve(dispute.id)
    v1.disputes.update(dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}})
    accepted = v1.payment_intents.create(
        params={
            "amount": 4100,
            "currency": "usd",
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    lost = v1.disputes.list(params={"payment_intent": accepted.id}).data[0]
    v1.disputes.close(lost.id)
    v1.disputes.list()


# -- tax rates and coupons ------------------------------------------------------------------------


@step
def tax_rates_and_coupons(world: World) -> None:
    v1 = world.v1
    vat = v1.tax_rates.create(
        params={
            "display_name": "VAT",
            "percentage": 19,
            "inclusive": False,
            "country": "DE",
            "tax_type": "vat",
        }
    )
    v1.tax_rates.retrieve(vat.id)
    v1.tax_rates.update(vat.id, params={"description": "German VAT"})
    v1.tax_rates.list(params={"active": True})
    coupon = v1.coupons.create(params={"percent_off": 20, "duration": "once", "id": "SPRING"})
    v1.coupons.retrieve(coupon.id)
    v1.coupons.update(coupon.id, params={"name": "Spring sale"})
    v1.coupons.list()
    doomed = v1.coupons.create(
        params={
            "amount_off": 500,
            "currency": "usd",
            "duration": "repeating",
            "duration_in_months": 3,
        }
    )
    v1.coupons.delete(doomed.id)
    world.made.update(tax_rate=vat.id, coupon=coupon.id)


# -- subscriptions --------------------------------------------------------------------------------


@step
def subscriptions(world: World) -> None:
    v1 = world.v1
    customer = world.made["customer"]
    sub = v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": world.made["price"], "quantity": 2}],
            "default_tax_rates": [world.made["tax_rate"]],
            "discounts": [{"coupon": world.made["coupon"]}],
            "metadata": {"plan": "pro"},
        }
    )
    v1.subscriptions.retrieve(sub.id)
    v1.subscriptions.update(
        sub.id, params={"items": [{"id": sub["items"].data[0].id, "quantity": 3}]}
    )
    v1.subscriptions.list(params={"customer": customer})
    v1.subscriptions.search(params={"query": "metadata['plan']:'pro'"})
    extra = v1.subscription_items.create(
        params={"subscription": sub.id, "price": world.made["metered_price"]}
    )
    v1.subscription_items.retrieve(extra.id)
    v1.subscription_items.update(extra.id, params={"metadata": {"feature": "api"}})
    v1.subscription_items.list(params={"subscription": sub.id})
    v1.billing.meter_events.create(
        params={
            "event_name": "api_call",
            "payload": {"stripe_customer_id": customer, "value": "25"},
            "identifier": "call-1",
        }
    )
    v1.billing.meter_events.create(
        params={
            "event_name": "api_call",
            "payload": {"stripe_customer_id": customer, "value": "5"},
            "identifier": "call-2",
        }
    )
    v1.billing.meter_event_adjustments.create(
        params={"event_name": "api_call", "type": "cancel", "cancel": {"identifier": "call-2"}}
    )
    now = int(time.time())
    v1.billing.meters.event_summaries.list(
        world.made["meter"],
        params={
            "customer": customer,
            "start_time": now // 60 * 60 - 3600,
            "end_time": now // 60 * 60 + 60,
        },
    )
    v1.invoices.create_preview(params={"subscription": sub.id})
    v1.subscription_items.delete(extra.id)
    v1.subscriptions.pause(sub.id)
    v1.subscriptions.resume(sub.id, params={"billing_cycle_anchor": {"type": "now"}})
    v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    world.made["subscription"] = sub.id
    ended = v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": world.made["team_price"]}]}
    )
    v1.subscriptions.cancel(ended.id, params={"invoice_now": True, "prorate": True})


@step
def pending_update(world: World) -> None:
    v1 = world.v1
    customer = v1.customers.create(params={"email": "pending@example.com"}).id
    _card(world, customer)
    sub = v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": world.made["price"]}]}
    )
    _card(world, customer, "tok_chargeCustomerFail")
    waiting = v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": sub["items"].data[0].id, "quantity": 4}],
            "payment_behavior": "pending_if_incomplete",
            "proration_behavior": "always_invoice",
        },
    )
    # A working card pays the waiting invoice, and the change applies.
    _card(world, customer)
    v1.invoices.pay(str(waiting.latest_invoice))
    challenged = v1.customers.create(params={"email": "3ds@example.com"}).id
    _card(world, challenged, "tok_threeDSecure2Required")
    v1.subscriptions.create(
        params={"customer": challenged, "items": [{"price": world.made["price"]}]}
    )


# -- invoices -------------------------------------------------------------------------------------


@step
def invoices(world: World) -> None:
    v1 = world.v1
    # A customer of its own: credit from earlier steps would pay these invoices on finalizing.
    customer = v1.customers.create(params={"email": "billing@example.com"}).id
    draft = v1.invoices.create(
        params={"customer": customer, "collection_method": "send_invoice", "days_until_due": 14}
    )
    item = v1.invoice_items.create(
        params={
            "customer": customer,
            "invoice": draft.id,
            "amount": 1500,
            "currency": "usd",
            "description": "Setup",
        }
    )
    v1.invoice_items.retrieve(item.id)
    v1.invoice_items.update(item.id, params={"description": "Setup fee"})
    v1.invoice_items.list(params={"customer": customer})
    priced = v1.invoice_items.create(
        params={
            "customer": customer,
            "invoice": draft.id,
            "pricing": {"price": world.made["one_time"]},
        }
    )
    v1.invoice_items.delete(priced.id)
    v1.invoices.retrieve(draft.id)
    v1.invoices.update(draft.id, params={"description": "Onboarding"})
    v1.invoices.line_items.list(draft.id)
    v1.invoices.finalize_invoice(draft.id)
    v1.invoices.send_invoice(draft.id)
    v1.invoices.pay(draft.id, params={"paid_out_of_band": True})
    voided = v1.invoices.create(params={"customer": customer, "auto_advance": False})
    v1.invoice_items.create(
        params={"customer": customer, "invoice": voided.id, "amount": 700, "currency": "usd"}
    )
    v1.invoices.finalize_invoice(voided.id, params={"auto_advance": False})
    v1.invoices.void_invoice(voided.id)
    written_off = v1.invoices.create(params={"customer": customer, "auto_advance": False})
    v1.invoice_items.create(
        params={"customer": customer, "invoice": written_off.id, "amount": 900, "currency": "usd"}
    )
    v1.invoices.finalize_invoice(written_off.id, params={"auto_advance": False})
    v1.invoices.mark_uncollectible(written_off.id)
    scrapped = v1.invoices.create(params={"customer": customer})
    v1.invoices.delete(scrapped.id)
    v1.invoices.list(params={"customer": customer})
    v1.invoices.search(params={"query": "status:'paid'"})
    v1.invoice_items.create(params={"customer": customer, "amount": 300, "currency": "usd"})
    v1.invoices.create_preview(params={"customer": customer})
    world.made["paid_invoice"] = draft.id


# -- time: test clocks ----------------------------------------------------------------------------


@step
def test_clocks(world: World) -> None:
    v1 = world.v1
    start = int(time.time()) // DAY * DAY
    clock = v1.test_helpers.test_clocks.create(params={"frozen_time": start, "name": "Year one"})
    v1.test_helpers.test_clocks.retrieve(clock.id)
    v1.test_helpers.test_clocks.list()
    trialing = v1.customers.create(params={"email": "trial@example.com", "test_clock": clock.id}).id
    _card(world, trialing)
    v1.subscriptions.create(
        params={
            "customer": trialing,
            "items": [{"price": world.made["price"]}],
            "trial_period_days": 7,
        }
    )
    failing = v1.customers.create(params={"email": "fail@example.com", "test_clock": clock.id}).id
    _card(world, failing)
    v1.subscriptions.create(params={"customer": failing, "items": [{"price": world.made["price"]}]})
    _card(world, failing, "tok_chargeCustomerFail")
    invoiced = v1.customers.create(
        params={"email": "invoice@example.com", "test_clock": clock.id}
    ).id
    v1.subscriptions.create(
        params={
            "customer": invoiced,
            "items": [{"price": world.made["price"]}],
            "collection_method": "send_invoice",
            "days_until_due": 3,
        }
    )
    stuck = v1.customers.create(params={"email": "stuck@example.com", "test_clock": clock.id}).id
    _card(world, stuck, "tok_chargeCustomerFail")
    v1.subscriptions.create(
        params={
            "customer": stuck,
            "items": [{"price": world.made["price"]}],
            "payment_behavior": "default_incomplete",
        }
    )
    waiting = v1.customers.create(
        params={"email": "waiting@example.com", "test_clock": clock.id}
    ).id
    _card(world, waiting)
    sub = v1.subscriptions.create(
        params={"customer": waiting, "items": [{"price": world.made["price"]}]}
    )
    _card(world, waiting, "tok_chargeCustomerFail")
    v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": sub["items"].data[0].id, "quantity": 2}],
            "payment_behavior": "pending_if_incomplete",
            "proration_behavior": "always_invoice",
        },
    )
    debited = v1.customers.create(params={"email": "ach@example.com", "test_clock": clock.id}).id
    bank = v1.payment_methods.create(
        params={
            "type": "us_bank_account",
            "us_bank_account": {"account_number": "000123456789", "routing_number": "110000000"},
            "billing_details": {"name": "Jenny Rosen"},
        }
    )
    v1.payment_methods.attach(bank.id, params={"customer": debited})
    v1.subscriptions.create(
        params={
            "customer": debited,
            "items": [{"price": world.made["price"]}],
            "default_payment_method": bank.id,
        }
    )
    for days in (10, 20, 30, 40):
        v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": start + days * DAY})
    v1.test_helpers.test_clocks.delete(clock.id)


@step
def bank_transfers(world: World) -> None:
    """An invoice paid by bank transfer in two parts, the second one over-paying."""
    v1 = world.v1
    payer = v1.customers.create(params={"email": "transfer@example.com", "name": "Transfer"}).id
    v1.customers.funding_instructions.create(
        payer,
        params={
            "bank_transfer": {"type": "us_bank_transfer"},
            "currency": "usd",
            "funding_type": "bank_transfer",
        },
    )
    v1.subscriptions.create(
        params={
            "customer": payer,
            "items": [{"price": world.made["price"]}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "payment_settings": {"payment_method_types": ["customer_balance"]},
        }
    )
    world.client.v1.test_helpers.customers.fund_cash_balance(
        payer, params={"amount": 100, "currency": "usd", "reference": "PART"}
    )
    funded = world.client.v1.test_helpers.customers.fund_cash_balance(
        payer, params={"amount": 100_000, "currency": "usd"}
    )
    v1.customers.cash_balance.retrieve(payer)
    v1.customers.cash_balance_transactions.list(payer)
    v1.customers.cash_balance_transactions.retrieve(payer, funded.id)


@step
def microdeposits(world: World) -> None:
    """A bank debit and a bank setup that wait for micro-deposits, verified by amounts and by
    the descriptor code; the mandates they make."""
    v1 = world.v1
    payer = v1.customers.create(params={"email": "verify@example.com"}).id
    wanted = {"us_bank_account": {"verification_method": "microdeposits"}}
    accounts = []
    for _ in range(2):
        bank = v1.payment_methods.create(
            params={
                "type": "us_bank_account",
                "us_bank_account": {
                    "account_number": "000123456789",
                    "routing_number": "110000000",
                },
                "billing_details": {"name": "Jenny Rosen"},
            }
        )
        v1.payment_methods.attach(bank.id, params={"customer": payer})
        accounts.append(bank.id)
    intent = v1.payment_intents.create(
        params={
            "amount": 5_000,
            "currency": "usd",
            "customer": payer,
            "payment_method": accounts[0],
            "payment_method_options": wanted,
            "confirm": True,
        }
    )
    v1.payment_intents.verify_microdeposits(intent.id, params={"amounts": [32, 45]})
    setup = v1.setup_intents.create(
        params={
            "customer": payer,
            "payment_method": accounts[1],
            "payment_method_options": wanted,
            "confirm": True,
        }
    )
    verified = v1.setup_intents.verify_microdeposits(setup.id, params={"descriptor_code": "SM11AA"})
    v1.mandates.retrieve(str(verified.mandate))


# -- Checkout and the Billing Portal --------------------------------------------------------------


@step
def checkout(world: World) -> None:
    v1 = world.v1
    session = v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": world.made["price"], "quantity": 1}],
            "success_url": "https://example.com/ok?session={CHECKOUT_SESSION_ID}",
            "cancel_url": "https://example.com/cancel",
            "customer_email": "buyer@example.com",
            "locale": "de",
        }
    )
    v1.checkout.sessions.retrieve(session.id)
    v1.checkout.sessions.update(session.id, params={"metadata": {"campaign": "spring"}})
    v1.checkout.sessions.line_items.list(session.id)
    world.page(session.url or "")
    world.page(
        session.url or "",
        {
            "email": "buyer@example.com",
            "card_number": "4242424242424242",
            "card_expiry": "12 / 34",
            "card_cvc": "123",
        },
    )
    v1.checkout.sessions.list(params={"status": "complete"})
    payment = v1.checkout.sessions.create(
        params={
            "mode": "payment",
            "line_items": [{"price": world.made["one_time"], "quantity": 1}],
            "success_url": "https://example.com/ok",
        }
    )
    v1.checkout.sessions.expire(payment.id)


@step
def billing_portal(world: World) -> None:
    v1 = world.v1
    config = v1.billing_portal.configurations.create(
        params={
            "features": {
                "invoice_history": {"enabled": True},
                "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
                "payment_method_update": {"enabled": True},
            },
            "business_profile": {"headline": "Manage your plan"},
        }
    )
    v1.billing_portal.configurations.retrieve(config.id)
    v1.billing_portal.configurations.update(
        config.id, params={"default_return_url": "https://example.com"}
    )
    v1.billing_portal.configurations.list()
    session = v1.billing_portal.sessions.create(
        params={"customer": world.made["customer"], "return_url": "https://example.com/account"}
    )
    world.page(session.url)


# -- Connect, webhook endpoints, events -----------------------------------------------------------


@step
def connect(world: World) -> None:
    v1 = world.v1
    account = v1.accounts.create(
        params={
            "country": "US",
            "email": "seller@example.com",
            "capabilities": {"transfers": {"requested": True}},
        }
    )
    v1.accounts.retrieve(account.id)
    v1.accounts.retrieve_current()
    v1.accounts.update(account.id, params={"metadata": {"seller": "1"}})
    v1.accounts.list()
    v1.accounts.delete(account.id)


@step
def webhook_endpoints(world: World) -> None:
    v1 = world.v1
    endpoint = v1.webhook_endpoints.create(
        params={"url": "https://example.com/hooks", "enabled_events": ["customer.created"]}
    )
    v1.webhook_endpoints.retrieve(endpoint.id)
    v1.webhook_endpoints.update(endpoint.id, params={"description": "Customers"})
    v1.webhook_endpoints.list()
    v1.webhook_endpoints.delete(endpoint.id)


@step
def events(world: World) -> None:
    v1 = world.v1
    listed = v1.events.list(params={"type": "customer.created", "limit": 5})
    v1.events.retrieve(listed.data[0].id)


# -- the endpoints a billing app calls beyond the basics -------------------------------------------


@step
def tax_ids(world: World) -> None:
    v1 = world.v1
    customer = world.made["customer"]
    tax_id = v1.customers.tax_ids.create(
        customer, params={"type": "gb_vat", "value": "GB123456789"}
    )
    v1.customers.tax_ids.retrieve(customer, tax_id.id)
    v1.customers.tax_ids.list(customer)
    v1.customers.tax_ids.delete(customer, tax_id.id)


@step
def balances(world: World) -> None:
    v1 = world.v1
    customer = v1.customers.create(params={"email": "credit@example.com"}).id
    credit = v1.customers.balance_transactions.create(
        customer, params={"amount": -2500, "currency": "usd", "description": "Goodwill"}
    )
    v1.customers.balance_transactions.retrieve(customer, credit.id)
    v1.customers.balance_transactions.update(
        customer, credit.id, params={"metadata": {"ticket": "7"}}
    )
    v1.customers.balance_transactions.list(customer)
    v1.balance.retrieve()
    listed = v1.balance_transactions.list(params={"type": "charge", "limit": 3})
    v1.balance_transactions.retrieve(listed.data[0].id)


@step
def promotion_codes(world: World) -> None:
    v1 = world.v1
    promo = v1.promotion_codes.create(
        params={
            "promotion": {"type": "coupon", "coupon": world.made["coupon"]},
            "code": "WELCOME",
            "max_redemptions": 5,
        }
    )
    v1.promotion_codes.retrieve(promo.id)
    v1.promotion_codes.update(promo.id, params={"metadata": {"channel": "newsletter"}})
    v1.promotion_codes.list(params={"code": "WELCOME"})
    customer = v1.customers.create(params={"email": "promo@example.com"}).id
    _card(world, customer)
    v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": world.made["price"]}],
            "discounts": [{"promotion_code": promo.id}],
        }
    )
    v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": world.made["price"], "quantity": 1}],
            "success_url": "https://example.com/ok",
            "discounts": [{"promotion_code": promo.id}],
        }
    )


@step
def subscription_schedules(world: World) -> None:
    v1 = world.v1
    start = int(time.time()) // DAY * DAY
    clock = v1.test_helpers.test_clocks.create(params={"frozen_time": start})
    customer = v1.customers.create(
        params={"email": "migrate@example.com", "test_clock": clock.id}
    ).id
    _card(world, customer)
    migration = v1.subscription_schedules.create(
        params={
            "customer": customer,
            "start_date": "now",
            "end_behavior": "release",
            "phases": [
                {"items": [{"price": world.made["price"]}], "duration": {"interval": "month"}},
                {"items": [{"price": world.made["team_price"]}], "duration": {"interval": "month"}},
            ],
        }
    )
    v1.subscription_schedules.retrieve(migration.id)
    v1.subscription_schedules.update(migration.id, params={"metadata": {"migration": "2026"}})
    v1.subscription_schedules.list(params={"customer": customer})
    later = v1.subscription_schedules.create(
        params={
            "customer": customer,
            "start_date": start + 5 * DAY,
            "end_behavior": "cancel",
            "phases": [
                {"items": [{"price": world.made["price"]}], "duration": {"interval": "month"}}
            ],
        }
    )
    for days in (30, 62, 70):
        v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": start + days * DAY})
    v1.subscription_schedules.retrieve(later.id)
    kept = v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": world.made["price"]}]}
    )
    wrapped = v1.subscription_schedules.create(params={"from_subscription": kept.id})
    v1.subscription_schedules.release(wrapped.id)
    ended = v1.subscription_schedules.create(
        params={
            "customer": customer,
            "phases": [
                {"items": [{"price": world.made["price"]}], "duration": {"interval": "month"}}
            ],
        }
    )
    v1.subscription_schedules.cancel(ended.id)


@step
def credit_notes(world: World) -> None:
    v1 = world.v1
    customer = v1.customers.create(params={"email": "credited@example.com"}).id
    _card(world, customer)
    open_invoice = v1.invoices.create(
        params={"customer": customer, "collection_method": "send_invoice", "days_until_due": 30}
    )
    v1.invoice_items.create(
        params={"customer": customer, "invoice": open_invoice.id, "amount": 4000, "currency": "usd"}
    )
    open_invoice = v1.invoices.finalize_invoice(open_invoice.id)
    line = open_invoice.lines.data[0].id
    lines = [{"type": "invoice_line_item", "invoice_line_item": line, "amount": 1000}]
    v1.credit_notes.preview(params={"invoice": open_invoice.id, "lines": lines})
    v1.credit_notes.preview_lines.list(params={"invoice": open_invoice.id, "lines": lines})
    pre = v1.credit_notes.create(
        params={"invoice": open_invoice.id, "lines": lines, "reason": "order_change"}
    )
    v1.credit_notes.retrieve(pre.id)
    v1.credit_notes.update(pre.id, params={"memo": "Discount agreed on the phone"})
    v1.credit_notes.line_items.list(pre.id)
    v1.credit_notes.void_credit_note(pre.id)
    paid = v1.invoices.create(params={"customer": customer, "auto_advance": False})
    v1.invoice_items.create(
        params={"customer": customer, "invoice": paid.id, "amount": 3000, "currency": "usd"}
    )
    v1.invoices.finalize_invoice(paid.id, params={"auto_advance": False})
    v1.invoices.pay(paid.id)
    v1.credit_notes.create(params={"invoice": paid.id, "amount": 1000, "refund_amount": 1000})
    v1.credit_notes.create(params={"invoice": paid.id, "amount": 500, "credit_amount": 500})
    v1.credit_notes.list(params={"invoice": paid.id})


@step
def customer_sessions(world: World) -> None:
    world.v1.customer_sessions.create(
        params={
            "customer": world.made["customer"],
            "components": {"pricing_table": {"enabled": True}},
        }
    )
