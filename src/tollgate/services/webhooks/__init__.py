"""Stripe webhooks: the intake of deliveries, the inbox of stored events, the handlers.

`intake` takes deliveries as they arrive, `inbox` stores and applies events exactly once
(deliveries, stored events, events Tollgate builds), `handlers` keep the mirror of Stripe's
objects through a `context`, and `notices` queue what an event tells the customer and the app.
"""

from tollgate.services.webhooks.context import NeedsFetch, UnknownStripeObject
from tollgate.services.webhooks.inbox import (
    Delivery,
    ProcessMode,
    ProcessResult,
    StoredEvent,
    Watermark,
    WebhookProcessingFailed,
    apply_built_events,
    apply_stripe_answer,
    apply_stripe_deliveries,
    describe_error,
    due_stripe_events,
    list_stripe_events,
    mirrored_watermark,
    process_stripe_event,
    replay_stripe_event,
    verify_stripe_delivery,
)
from tollgate.services.webhooks.intake import WebhookIntake

__all__ = [
    "Delivery",
    "NeedsFetch",
    "ProcessMode",
    "ProcessResult",
    "StoredEvent",
    "UnknownStripeObject",
    "Watermark",
    "WebhookIntake",
    "WebhookProcessingFailed",
    "apply_built_events",
    "apply_stripe_answer",
    "apply_stripe_deliveries",
    "describe_error",
    "due_stripe_events",
    "list_stripe_events",
    "mirrored_watermark",
    "process_stripe_event",
    "replay_stripe_event",
    "verify_stripe_delivery",
]
