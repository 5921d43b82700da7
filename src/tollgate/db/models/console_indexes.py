"""The indexes behind the console's reads, over tables other modules define."""

from __future__ import annotations

from sqlalchemy import Index

from tollgate.db.models.operations import AppEvent, Notification
from tollgate.db.models.stripe_mirror import AuditLog, Charge, Customer, StripeEvent, Subscription

# The console's reads: a customer's timeline, the lists behind the overview (migration 0010).
Index("ix_audit_log_object_id_at", AuditLog.object_id, AuditLog.at)
Index("ix_app_events_customer_id_created_at", AppEvent.customer_id, AppEvent.created_at)
Index("ix_notifications_customer_id_created_at", Notification.customer_id, Notification.created_at)
Index("ix_customers_created_at_id", Customer.created_at, Customer.id)
Index("ix_customers_email", Customer.email)
Index("ix_subscriptions_status_plan", Subscription.status, Subscription.plan)
Index("ix_charges_created_at", Charge.created_at)
Index("ix_stripe_events_type_created", StripeEvent.type, StripeEvent.created)
# The overview's trials ending, churn this month and failed charges (migration 0017).
Index("ix_subscriptions_status_trial_end", Subscription.status, Subscription.trial_end)
Index(
    "ix_subscriptions_status_ended",
    Subscription.status,
    Subscription.ended_at,
    Subscription.canceled_at,
)
# Carrying currency, method and amount, the overview's fees and failed charges read the index
# alone (migration 0027).
Index(
    "ix_charges_status_created_at_amounts",
    Charge.status,
    Charge.created_at,
    Charge.currency,
    Charge.payment_method_type,
    Charge.amount,
)
