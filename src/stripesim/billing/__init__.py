"""The billing engine: subscriptions, invoices, prorations, renewals, dunning and trials.

Routes in `resources/subscriptions.py`, `invoices.py`, `coupons.py` and `test_clocks.py` are thin;
the behaviour lives here so Checkout and the Portal share it. The package reads bottom-up:
`periods`, `amounts`, `prices`, `discounts` and `items` are the parts; `invoices` builds drafts and
totals; `collection` finalizes and charges them; `proration` credits and charges changes;
`create`, `update` and `lifecycle` are a subscription's requests; `preview` shows the next
invoice; `engine` runs what falls due as time passes.

Documented choices:
- a renewal (or trial-end) invoice is a draft for `finalize_delay_seconds` (Stripe: one hour),
  then finalized and charged;
- `invoice.upcoming` is sent `upcoming_days` (7) before a renewal;
- `customer.subscription.trial_will_end` is sent `trial_will_end_days` (3) before a trial ends;
- failed payments are retried `retry_days` (3, 5, 7) days after the previous attempt (Stripe's
  classic retry schedule: 4 attempts over about two weeks), then the subscription becomes
  `subscription_status_after_final_attempt` (canceled by default, as at Stripe);
- an `incomplete` subscription expires after 23 hours.
Amounts are integers in minor units; exact (Decimal) amounts are rounded half-up per line.
"""

from stripesim.billing.amounts import round_minor
from stripesim.billing.collection import (
    attempt_payment,
    finalize,
    fund_cash_balance,
    mark_paid,
    mark_uncollectible,
    read_payment_settings,
    retry_open_invoices,
    void_invoice,
)
from stripesim.billing.context import engine_ctx, settings
from stripesim.billing.create import create_subscription
from stripesim.billing.discounts import (
    coupon_amount_off,
    coupon_id,
    new_discounts,
    redeemable_promotion_code,
    tax_rate_objects,
)
from stripesim.billing.engine import install, shortest_interval_seconds, time_hook
from stripesim.billing.invoices import (
    add_invoice_item_line,
    compute_totals,
    line_invoice_item,
    new_invoice,
    new_invoice_item,
    pending_items,
    pricing_of,
)
from stripesim.billing.items import items_of
from stripesim.billing.lifecycle import cancel_subscription, pause_subscription, resume_subscription
from stripesim.billing.periods import DAY
from stripesim.billing.preview import preview_invoice
from stripesim.billing.prices import exact_amount, product_name
from stripesim.billing.update import update_subscription

__all__ = [
    "DAY",
    "add_invoice_item_line",
    "attempt_payment",
    "cancel_subscription",
    "compute_totals",
    "coupon_amount_off",
    "coupon_id",
    "create_subscription",
    "engine_ctx",
    "exact_amount",
    "finalize",
    "fund_cash_balance",
    "install",
    "items_of",
    "line_invoice_item",
    "mark_paid",
    "mark_uncollectible",
    "new_discounts",
    "new_invoice",
    "new_invoice_item",
    "pause_subscription",
    "pending_items",
    "preview_invoice",
    "pricing_of",
    "product_name",
    "read_payment_settings",
    "redeemable_promotion_code",
    "resume_subscription",
    "retry_open_invoices",
    "round_minor",
    "settings",
    "shortest_interval_seconds",
    "tax_rate_objects",
    "time_hook",
    "update_subscription",
    "void_invoice",
]
