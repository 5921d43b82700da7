"""The tables as SQLAlchemy Core handles, typed, for statements built outside the ORM."""

from __future__ import annotations

from sqlalchemy import Table, column, table

from tollgate.db.models import Base


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


API_KEYS = _table("api_keys")
# Stripe webhooks: the inbox, and the mirror its handlers keep.
STRIPE_EVENTS = _table("stripe_events")
CUSTOMERS = _table("customers")
SUBSCRIPTIONS = _table("subscriptions")
SUBSCRIPTION_ITEMS = _table("subscription_items")
INVOICES = _table("invoices")
INVOICE_PAYMENTS = _table("invoice_payments")
CHARGES = _table("charges")
BANK_TRANSFERS = _table("bank_transfers")
REFUNDS = _table("refunds")
DISPUTES = _table("disputes")
AUDIT_LOG = _table("audit_log")
PLAN_CHANGES = _table("plan_changes")
# Usage metering and entitlements.
CUSTOMER_CHANGES = _table("customer_changes")
USAGE_EVENTS = _table("usage_events")
# PostgreSQL only, no model (migration 0020): each usage event id once, across the partitions.
USAGE_EVENT_IDS = table("usage_event_ids", column("id"), column("occurred_at"))
USAGE_COUNTERS = _table("usage_counters")
USAGE_THRESHOLDS = _table("usage_thresholds")
USAGE_PENDING = _table("usage_pending")
# Usage controls: consume answers, reservations, voided events.
USAGE_CONSUMPTIONS = _table("usage_consumptions")
USAGE_RESERVATIONS = _table("usage_reservations")
USAGE_VOIDS = _table("usage_voids")
METER_ADJUSTMENTS = _table("meter_adjustments")
SPEND_CAPS = _table("spend_caps")
USAGE_ALERTS = _table("usage_alerts")
USAGE_ALERT_FIRINGS = _table("usage_alert_firings")
AUTO_TOPUPS = _table("auto_topups")
TOPUP_ATTEMPTS = _table("topup_attempts")
METER_OUTBOX = _table("meter_outbox")
# Notifications, app webhooks, job locks.
NOTIFICATIONS = _table("notifications")
APP_EVENTS = _table("app_events")
JOB_LOCKS = _table("job_locks")
# Reconciliation.
RECONCILIATION_RUNS = _table("reconciliation_runs")
RECONCILIATION_DRIFTS = _table("reconciliation_drifts")
# The credits ledger.
CREDIT_ACCOUNTS = _table("credit_accounts")
CREDIT_TRANSACTIONS = _table("credit_transactions")
CREDIT_ENTRIES = _table("credit_entries")
CREDIT_LOTS = _table("credit_lots")
# The operator console.
OPERATORS = _table("operators")
OPERATOR_SESSIONS = _table("operator_sessions")
SIGN_IN_ATTEMPTS = _table("sign_in_attempts")
# Pricing that changes (issue 20).
CATALOG_VERSIONS = _table("catalog_versions")
PLAN_VERSIONS = _table("plan_versions")
PLAN_MIGRATIONS = _table("plan_migrations")
PLAN_MIGRATION_CUSTOMERS = _table("plan_migration_customers")
CUSTOMER_OVERRIDES = _table("customer_overrides")
USAGE_GRANTS = _table("usage_grants")
USAGE_HOURLY = _table("usage_hourly")
DISCOUNTS = _table("discounts")
# Tax (issue 21).
TAX_RATES = _table("tax_rates")
CUSTOMER_TAX_IDS = _table("customer_tax_ids")
